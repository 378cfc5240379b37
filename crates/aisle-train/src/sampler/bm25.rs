//! BM25 hard negatives (DPR-style): top lexical matches of the query that are not positives,
//! among the whole catalog or among the products with a training interaction
//! (`bm25:pool=interacted`, see [`NegativePool`]).

use aisle_core::rng::Rng;
use aisle_core::ProductId;
use aisle_search::lexical::{Bm25Index, FieldBoosts};

use super::pool::admitted;
use super::{draw_with, NegativePool, SampleCtx, SampleStats, Sampler};
use crate::data::{Pair, TrainData};
use crate::error::Result;

/// Negatives drawn uniformly from each query's BM25 top `depth` among the pool's products,
/// positives removed. The lists are computed once, when the sampler is built (BM25 does not
/// change during training).
pub struct Bm25Sampler {
    depth: usize,
    pool: NegativePool,
    /// How deep each query was searched, and how many products the pool admits (for the notes).
    search_depth: usize,
    admitted: usize,
    lists: Vec<Vec<ProductId>>,
    removed_at_build: u64,
}

impl Bm25Sampler {
    /// Each training query's `depth` best BM25 matches that `pool` admits. For a pool smaller
    /// than the catalog the search goes deeper in proportion (capped at 16x), so that a list
    /// still holds about `depth` admitted products.
    pub fn new(
        ds: &aisle_core::Dataset,
        data: &TrainData,
        depth: usize,
        boosts: &FieldBoosts,
        pool: NegativePool,
    ) -> Result<Self> {
        let index = Bm25Index::build(&ds.catalog, &ds.taxonomy, boosts)?;
        let texts: Vec<&str> = data.queries.iter().map(String::as_str).collect();
        let keep = admitted(pool, &data.popularity);
        let n_admitted = keep
            .as_ref()
            .map_or(ds.catalog.len(), |k| k.iter().filter(|&&k| k).count());
        let search_depth = match &keep {
            None => depth,
            Some(keep) => depth * keep.len().div_ceil(n_admitted.max(1)).clamp(1, 16),
        };
        let hits = index.search_many(&texts, search_depth)?;
        let mut removed = 0u64;
        let lists = hits
            .into_iter()
            .enumerate()
            .map(|(q, hits)| {
                hits.into_iter()
                    .map(|(p, _)| p)
                    .filter(|&p| {
                        keep.as_ref()
                            .is_none_or(|k| k.get(p.index()).copied().unwrap_or(false))
                    })
                    .filter(|&p| {
                        let pos = data.is_positive(q as u32, p);
                        removed += u64::from(pos);
                        !pos
                    })
                    .take(depth)
                    .collect()
            })
            .collect();
        Ok(Bm25Sampler {
            depth,
            pool,
            search_depth,
            admitted: n_admitted,
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
        match self.pool {
            NegativePool::Catalog => format!("bm25(top={})", self.depth),
            pool => format!("bm25(top={},pool={pool})", self.depth),
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "bm25: {} positives removed from the top-{} lists of {} queries",
            self.removed_at_build,
            self.depth,
            self.lists.len()
        )];
        if self.pool != NegativePool::Catalog {
            notes.push(format!(
                "bm25: lists kept among the {} products of the {} pool, each query searched to \
                 depth {}",
                self.admitted, self.pool, self.search_depth
            ));
        }
        notes
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testing::world;

    #[test]
    fn negatives_are_lexical_matches_that_are_not_positives() {
        let (ds, data, _) = world();
        let s = Bm25Sampler::new(
            &ds,
            &data,
            6,
            &FieldBoosts::default(),
            NegativePool::Catalog,
        )
        .expect("bm25 lists");
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        // "oled tv" has positives p0 and p1; the other oled items (p2, p3) match it best, then
        // the qled TVs through the shared "tv" path name; headphones and sofas never match.
        let pair = data.pairs[0];
        let list = s.list(pair.query);
        assert!(!list.is_empty());
        assert!(list.iter().all(|&p| !data.is_positive(pair.query, p)));
        assert_eq!(
            s.removed_at_build(),
            2 + 1,
            "p0, p1 from `oled tv`, p12 from `sofa`"
        );
        let top2: Vec<ProductId> = list.iter().take(2).copied().collect();
        assert!(
            top2.contains(&ProductId(2)) && top2.contains(&ProductId(3)),
            "{top2:?}"
        );
        assert!(list.iter().all(|p| p.0 < 8), "only TVs match: {list:?}");
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let mut out = Vec::new();
            let stats = s.sample(&ctx, &pair, 3, &mut rng, &mut out);
            assert_eq!(out.len(), 3);
            assert_eq!(stats.fallbacks, 0);
            assert!(out.iter().all(|p| list.contains(p)));
        }
    }

    #[test]
    fn the_interacted_pool_keeps_only_matches_with_a_training_interaction() {
        let (ds, mut data, _) = world();
        // Bought: p0, p1 (oled tv's positives), p12 (sofa's); add p5 (a qled TV) and p9
        // (headphones, which never match `oled tv`).
        data.popularity[5] += 1;
        data.popularity[9] += 1;
        let s = Bm25Sampler::new(
            &ds,
            &data,
            6,
            &FieldBoosts::default(),
            NegativePool::Interacted,
        )
        .expect("bm25 lists");
        assert_eq!(s.list(data.pairs[0].query), &[ProductId(5)]);
        assert_eq!(s.name(), "bm25(top=6,pool=interacted)");
        // 5 of 16 products are bought: searched 6 x ceil(16 / 5) = 24 deep.
        assert_eq!(
            s.notes()[1],
            "bm25: lists kept among the 5 products of the interacted pool, each query searched \
             to depth 24"
        );
    }
}
