//! The pretrained neural baseline: all-MiniLM-L6-v2, zero-shot (no training on the retailer's
//! data), and the fine-tuned MiniLM rows: a [`DenseRanker`] over MiniLM as its
//! [`Encoder`](aisle_model::Encoder), exact inner-product search over its unit-length product
//! vectors. The same Searcher serves it (`aisle serve --model FOLDER`).

use std::path::Path;
use std::time::Instant;

use aisle_core::{Dataset, Histories, ProductId};
use aisle_search::{IndexChoice, Mode};
use aisle_transformer::MiniLm;

use crate::error::Result;
use crate::rankers::{Case, DenseOptions, DenseRanker, HistoryRule, Ranker};

/// Row name of the zero-shot baseline.
pub const MINILM: &str = "pretrained MiniLM (zero-shot)";

/// all-MiniLM-L6-v2 over a catalog.
pub struct MiniLmRanker {
    ranker: DenseRanker,
    /// Seconds spent loading the model and encoding the catalog.
    pub encode_s: f64,
}

impl MiniLmRanker {
    /// Loads the model in `dir` and encodes every product of `ds`.
    pub fn new(ds: &std::sync::Arc<Dataset>, dir: &Path) -> Result<MiniLmRanker> {
        Self::with_name(ds, dir, MINILM.into())
    }

    /// The same, for a row named `name` (a fine-tuned model folder).
    pub fn with_name(
        ds: &std::sync::Arc<Dataset>,
        dir: &Path,
        name: String,
    ) -> Result<MiniLmRanker> {
        let start = Instant::now();
        let encoder = MiniLm::load(dir)?;
        // No personalized tower and no history term: histories would not be read, and none
        // makes the ranker the same for every protocol (it is built once for all of them).
        let options = DenseOptions {
            history: 0,
            history_rule: HistoryRule::Hidden,
            mode: Mode::Dense,
            history_boost: 0.0,
            bm25: Default::default(),
        };
        let ranker = DenseRanker::over(
            name,
            encoder,
            ds,
            Histories::default(),
            &options,
            IndexChoice::Exact,
        )?;
        Ok(MiniLmRanker {
            ranker,
            encode_s: start.elapsed().as_secs_f64(),
        })
    }
}

impl Ranker for MiniLmRanker {
    fn name(&self) -> String {
        self.ranker.name()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        self.ranker.rank(cases, depth)
    }
}
