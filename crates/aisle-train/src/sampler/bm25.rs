//! BM25 hard negatives (DPR-style): top lexical matches of the query that are not positives.

use aisle_core::rng::Rng;
use aisle_core::ProductId;
use aisle_search::lexical::{Bm25Index, FieldBoosts};

use super::{draw_with, SampleCtx, SampleStats, Sampler};
use crate::data::{Pair, TrainData};
use crate::error::Result;

/// Negatives drawn uniformly from each query's BM25 top `depth`, positives removed. The lists
/// are computed once, when the sampler is built (BM25 does not change during training).
pub struct Bm25Sampler {
    depth: usize,
    lists: Vec<Vec<ProductId>>,
    removed_at_build: u64,
}

impl Bm25Sampler {
    pub fn new(ds: &aisle_core::Dataset, data: &TrainData, depth: usize) -> Result<Self> {
        let index = Bm25Index::build(&ds.catalog, &ds.taxonomy, &FieldBoosts::default())?;
        let texts: Vec<&str> = data.queries.iter().map(String::as_str).collect();
        let hits = index.search_many(&texts, depth)?;
        let mut removed = 0u64;
        let lists = hits
            .into_iter()
            .enumerate()
            .map(|(q, hits)| {
                hits.into_iter()
                    .map(|(p, _)| p)
                    .filter(|&p| {
                        let pos = data.is_positive(q as u32, p);
                        removed += u64::from(pos);
                        !pos
                    })
                    .collect()
            })
            .collect();
        Ok(Bm25Sampler {
            depth,
            lists,
            removed_at_build: removed,
        })
    }

    /// Positives removed from the BM25 lists when they were built.
    pub fn removed_at_build(&self) -> u64 {
        self.removed_at_build
    }

    /// The non-positive BM25 top list of training query `q`.
    pub fn list(&self, q: u32) -> &[ProductId] {
        &self.lists[q as usize]
    }
}

impl Sampler for Bm25Sampler {
    fn name(&self) -> String {
        format!("bm25(top={})", self.depth)
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "bm25: {} positives removed from the top-{} lists of {} queries",
            self.removed_at_build,
            self.depth,
            self.lists.len()
        )]
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        let list = &self.lists[pair.query as usize];
        draw_with(ctx, pair, k, rng, out, |rng| rng.choose(list).copied())
    }
}
