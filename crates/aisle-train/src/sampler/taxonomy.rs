//! TB-HNS: taxonomy-based hard negatives (Jinadu et al., IEEE BigData 2025).
//!
//! For a pair whose positive product sits under category `c`, negatives come from three pools:
//!
//! * same leaf: other products under `c`;
//! * siblings: products under `c`'s parent but not under `c`;
//! * cousins: products under `c`'s grandparent but not under `c`'s parent.
//!
//! A pool is picked with probability proportional to its level weight (empty pools are skipped),
//! then a product uniformly within it. Products are kept sorted by the pre-order rank of their
//! category, so every pool is one or two contiguous ranges found by binary search: sampling costs
//! O(log N) and no per-node lists are stored.

use serde::{Deserialize, Serialize};

use aisle_core::rng::Rng;
use aisle_core::{Dataset, NodeId, ProductId};

use super::{draw_with, SampleCtx, SampleStats, Sampler};
use crate::data::Pair;

/// Relative weights of the three pools.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaxonomyWeights {
    pub leaf: f64,
    pub sibling: f64,
    pub cousin: f64,
}

impl Default for TaxonomyWeights {
    fn default() -> Self {
        TaxonomyWeights {
            leaf: 1.0,
            sibling: 1.0,
            cousin: 0.5,
        }
    }
}

/// The TB-HNS sampler.
#[derive(Clone, Debug)]
pub struct TaxonomySampler {
    weights: TaxonomyWeights,
    /// Products ordered by the pre-order rank of their category.
    order: Vec<ProductId>,
    /// `ranks[i]` = pre-order rank of `order[i]`'s category (sorted).
    ranks: Vec<u32>,
}

/// A pool: `outer` minus `inner` (both index ranges into `order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pool {
    outer: (usize, usize),
    inner: (usize, usize),
}

impl Pool {
    fn len(&self) -> usize {
        (self.outer.1 - self.outer.0) - (self.inner.1 - self.inner.0)
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let i = self.outer.0 + rng.index(self.len());
        if i >= self.inner.0 {
            i + (self.inner.1 - self.inner.0)
        } else {
            i
        }
    }
}

impl TaxonomySampler {
    pub fn new(ds: &Dataset, weights: TaxonomyWeights) -> Self {
        let t = &ds.taxonomy;
        let mut order: Vec<ProductId> = ds.catalog.iter().map(|(id, _)| id).collect();
        order.sort_by_key(|&p| (t.pre_range(ds.catalog.get(p).category).start, p));
        let ranks = order
            .iter()
            .map(|&p| t.pre_range(ds.catalog.get(p).category).start)
            .collect();
        TaxonomySampler {
            weights,
            order,
            ranks,
        }
    }

    /// Index range of products under `n`.
    fn range(&self, ds: &Dataset, n: NodeId) -> (usize, usize) {
        let r = ds.taxonomy.pre_range(n);
        (
            self.ranks.partition_point(|&x| x < r.start),
            self.ranks.partition_point(|&x| x < r.end),
        )
    }

    /// The leaf, sibling and cousin pools of a category.
    fn pools(&self, ds: &Dataset, c: NodeId) -> [Option<Pool>; 3] {
        let t = &ds.taxonomy;
        let leaf = self.range(ds, c);
        let empty = (leaf.0, leaf.0);
        let parent = t.parent(c);
        let grand = parent.and_then(|p| t.parent(p));
        let pr = parent.map(|p| self.range(ds, p));
        let gr = grand.map(|g| self.range(ds, g));
        let mk = |outer: (usize, usize), inner: (usize, usize)| {
            let p = Pool { outer, inner };
            (p.len() > 0).then_some(p)
        };
        [
            mk(leaf, empty),
            pr.and_then(|pr| mk(pr, leaf)),
            match (gr, pr) {
                (Some(gr), Some(pr)) => mk(gr, pr),
                _ => None,
            },
        ]
    }
}

impl Sampler for TaxonomySampler {
    fn name(&self) -> String {
        let w = self.weights;
        format!(
            "taxonomy(leaf={},sibling={},cousin={})",
            w.leaf, w.sibling, w.cousin
        )
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        let ds = ctx.dataset;
        let c = ds.catalog.get(pair.product).category;
        let pools = self.pools(ds, c);
        let w = [self.weights.leaf, self.weights.sibling, self.weights.cousin];
        let mut cum = [0.0f64; 3];
        let mut acc = 0.0;
        for i in 0..3 {
            if pools[i].is_some() {
                acc += w[i].max(0.0);
            }
            cum[i] = acc;
        }
        if acc <= 0.0 {
            return draw_with(ctx, pair, k, rng, out, |_| None);
        }
        draw_with(ctx, pair, k, rng, out, |rng| {
            let level = rng.weighted_index(&cum);
            pools[level].map(|p| self.order[p.pick(rng)])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testing::world;

    fn relation(ds: &Dataset, a: ProductId, b: ProductId) -> usize {
        let t = &ds.taxonomy;
        let (ca, cb) = (ds.catalog.get(a).category, ds.catalog.get(b).category);
        t.depth(ca) - t.depth(t.lca(ca, cb))
    }

    fn draws(
        weights: TaxonomyWeights,
        pair_index: usize,
    ) -> (Dataset, Vec<(ProductId, ProductId)>, SampleStats) {
        let (ds, data, _) = world();
        let s = TaxonomySampler::new(&ds, weights);
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        let pair = data.pairs[pair_index];
        let mut rng = Rng::new(4);
        let mut all = Vec::new();
        let mut stats = SampleStats::default();
        for _ in 0..100 {
            let mut out = Vec::new();
            stats += s.sample(&ctx, &pair, 3, &mut rng, &mut out);
            assert_eq!(out.len(), 3);
            for p in out {
                assert!(!data.is_positive(pair.query, p), "never a positive");
                all.push((pair.product, p));
            }
        }
        (ds, all, stats)
    }

    #[test]
    fn leaf_only_gives_same_leaf_non_positives() {
        let w = TaxonomyWeights {
            leaf: 1.0,
            sibling: 0.0,
            cousin: 0.0,
        };
        let (ds, all, stats) = draws(w, 0);
        for (pos, neg) in &all {
            assert_eq!(relation(&ds, *pos, *neg), 0, "same leaf");
        }
        // p0 and p1 are both positives of "oled tv": the leaf pool has 4 products, 2 usable.
        assert!(stats.removed_positives > 0);
        assert_eq!(stats.fallbacks, 0);
    }

    #[test]
    fn siblings_and_cousins_are_in_their_relation() {
        let w = TaxonomyWeights {
            leaf: 0.0,
            sibling: 1.0,
            cousin: 0.0,
        };
        let (ds, all, _) = draws(w, 0);
        for (pos, neg) in &all {
            assert_eq!(relation(&ds, *pos, *neg), 1, "sibling leaf (qled)");
        }
        let w = TaxonomyWeights {
            leaf: 0.0,
            sibling: 0.0,
            cousin: 1.0,
        };
        let (ds, all, _) = draws(w, 0);
        for (pos, neg) in &all {
            assert_eq!(relation(&ds, *pos, *neg), 2, "cousin (headphones)");
        }
    }

    #[test]
    fn mixed_weights_reach_every_level() {
        let (ds, all, _) = draws(TaxonomyWeights::default(), 0);
        let mut seen = [0; 3];
        for (pos, neg) in &all {
            seen[relation(&ds, *pos, *neg)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 0), "{seen:?}");
        // Weights 1 : 1 : 0.5.
        assert!(seen[2] < seen[1], "{seen:?}");
    }

    #[test]
    fn top_level_leaf_uses_the_pools_it_has() {
        // "sofa" sits under home (depth 2): its cousin pool is everything outside home.
        let w = TaxonomyWeights {
            leaf: 0.0,
            sibling: 1.0,
            cousin: 0.0,
        };
        let (_, all, stats) = draws(w, 2);
        // home has only the sofa leaf: no sibling pool, so draws fall back to uniform.
        assert_eq!(stats.fallbacks as usize, all.len());
    }
}
