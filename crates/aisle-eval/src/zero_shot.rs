//! The pretrained neural baseline: all-MiniLM-L6-v2, zero-shot (no training on the retailer's
//! data), exact inner-product search over its unit-length product vectors.

use std::path::Path;
use std::time::Instant;

use aisle_core::{Dataset, ProductId};
use aisle_search::vector::{ExactIndex, VectorIndex};
use aisle_transformer::MiniLm;

use crate::error::Result;
use crate::rankers::{Case, Ranker};

/// Row name of the zero-shot baseline.
pub const MINILM: &str = "pretrained MiniLM (zero-shot)";

/// Texts per forward pass.
const BATCH: usize = 64;

/// What a product is, for a model that reads text: its title, then its category path (the
/// text the fine-tuning reads too).
pub use aisle_train::transformer::product_text;

/// all-MiniLM-L6-v2 over a catalog.
pub struct MiniLmRanker {
    name: String,
    encoder: MiniLm,
    index: ExactIndex,
    /// Seconds spent encoding the catalog.
    pub encode_s: f64,
}

impl MiniLmRanker {
    /// Loads the model in `dir` and encodes every product of `ds`.
    pub fn new(ds: &Dataset, dir: &Path) -> Result<MiniLmRanker> {
        Self::with_name(ds, dir, MINILM.into())
    }

    /// The same, for a row named `name` (a fine-tuned model folder).
    pub fn with_name(ds: &Dataset, dir: &Path, name: String) -> Result<MiniLmRanker> {
        let encoder = MiniLm::load(dir)?;
        let start = Instant::now();
        let texts: Vec<String> = ds
            .catalog
            .iter()
            .map(|(_, p)| product_text(ds, p))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows: Vec<f32> = encoder
            .encode(&refs, BATCH)?
            .into_iter()
            .flatten()
            .collect();
        let ids = ds.catalog.iter().map(|(id, _)| id).collect();
        let index = ExactIndex::with_ids(encoder.dim(), rows, ids)?;
        Ok(MiniLmRanker {
            name,
            encoder,
            index,
            encode_s: start.elapsed().as_secs_f64(),
        })
    }
}

impl Ranker for MiniLmRanker {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        // Distinct texts once: evaluation sets repeat queries.
        let mut distinct: Vec<&str> = cases.iter().map(|c| c.text).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let vectors = self.encoder.encode(&distinct, BATCH)?;
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let hits = self.index.search_many(&flat, depth)?;
        Ok(cases
            .iter()
            .map(|c| {
                let i = distinct.binary_search(&c.text).unwrap_or(0);
                hits.get(i)
                    .map(|h| h.iter().map(|x| x.0).collect())
                    .unwrap_or_default()
            })
            .collect())
    }
}
