//! TB-HNS: taxonomy-based hard negatives (Jinadu et al., IEEE BigData 2025).
//!
//! For a pair whose positive product sits under category `c`, negatives come from three pools:
//!
//! * same leaf: other products under `c`;
//! * siblings: products under `c`'s parent but not under `c`;
//! * cousins: products under `c`'s grandparent but not under `c`'s parent.
//!
//! A pool is picked with probability proportional to its level weight (empty pools are skipped),
//! then a product within it, by the [`NegativePool`] rule: uniformly among the products that have a
//! training interaction (the default), uniformly among all (`pool=catalog`, the paper's rule), or
//! in proportion to training interactions (`pool=popularity`). Products are kept sorted by the
//! pre-order rank of their category with a running sum of their weights, so every pool is one or
//! two contiguous ranges found by binary search: sampling costs O(log N) and no per-node lists are
//! stored.
//!
//! Why not the whole catalog by default: on Instacart 72.7% of the products are never bought in
//! training, so about two thirds of uniform same-leaf negatives are such products. They are never
//! anyone's positive, so the tower learns that titles like theirs are wrong answers, and a product
//! that is new to the catalog (cold start) can no longer be found: test Recall@10 on cold-start
//! products was 0.000-0.002 against 0.027 for ranking the aisle at random. Drawing negatives from
//! the same population as the positives removes that signal (docs/training.md#cold-start).

use serde::{Deserialize, Serialize};

use aisle_core::rng::Rng;
use aisle_core::{Dataset, NodeId, ProductId};

use super::{draw_with_fallback, NegativePool, SampleCtx, SampleStats, Sampler};
use crate::data::Pair;

/// Relative weights of the three pools, and which products they hold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaxonomyWeights {
    pub leaf: f64,
    pub sibling: f64,
    pub cousin: f64,
    pub pool: NegativePool,
}

impl Default for TaxonomyWeights {
    fn default() -> Self {
        TaxonomyWeights {
            leaf: 1.0,
            sibling: 1.0,
            cousin: 0.5,
            pool: NegativePool::default(),
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
    /// `weight_sum[i]` = the pool weights of `order[..i]` summed (length `order.len() + 1`).
    weight_sum: Vec<u64>,
}

/// A pool: `outer` minus `inner` (both index ranges into `order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pool {
    outer: (usize, usize),
    inner: (usize, usize),
}

impl Pool {
    /// The summed weight of the pool's products.
    fn weight(&self, sum: &[u64]) -> u64 {
        (sum[self.outer.1] - sum[self.outer.0]) - (sum[self.inner.1] - sum[self.inner.0])
    }

    /// An index into `order`, drawn in proportion to the products' weights (never one of weight
    /// zero). The pool's weight must be positive.
    fn pick(&self, sum: &[u64], rng: &mut Rng) -> usize {
        let mut u = sum[self.outer.0] + rng.below(self.weight(sum));
        if u >= sum[self.inner.0] {
            u += sum[self.inner.1] - sum[self.inner.0];
        }
        // The product whose weight interval [sum[i], sum[i + 1]) holds u.
        sum.partition_point(|&x| x <= u) - 1
    }
}

impl TaxonomySampler {
    /// `interactions[p]` is product `p`'s number of training interactions
    /// ([`TrainData::popularity`](crate::data::TrainData)); it decides the pools' contents under
    /// `weights.pool`.
    pub fn new(ds: &Dataset, weights: TaxonomyWeights, interactions: &[u32]) -> Self {
        let t = &ds.taxonomy;
        let mut order: Vec<ProductId> = ds.catalog.iter().map(|(id, _)| id).collect();
        order.sort_by_key(|&p| (t.pre_range(ds.catalog.get(p).category).start, p));
        let ranks = order
            .iter()
            .map(|&p| t.pre_range(ds.catalog.get(p).category).start)
            .collect();
        let mut weight_sum = Vec::with_capacity(order.len() + 1);
        let mut acc = 0u64;
        weight_sum.push(acc);
        for p in &order {
            acc += weights
                .pool
                .weight(interactions.get(p.index()).copied().unwrap_or(0));
            weight_sum.push(acc);
        }
        TaxonomySampler {
            weights,
            order,
            ranks,
            weight_sum,
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
            (p.weight(&self.weight_sum) > 0).then_some(p)
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
            "taxonomy(leaf={},sibling={},cousin={},pool={})",
            w.leaf, w.sibling, w.cousin, w.pool
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
        // When the levels run dry, the easy negatives come from the same pool rule over the
        // whole catalog (under `pool=interacted`, never a product without interactions), or
        // uniformly when no product has any weight.
        let everything = Pool {
            outer: (0, self.order.len()),
            inner: (0, 0),
        };
        let n = ctx.data.products();
        // `pool=catalog` keeps the uniform fallback draw for draw, as before pools existed.
        let weighted =
            self.weights.pool != NegativePool::Catalog && everything.weight(&self.weight_sum) > 0;
        let fallback = |rng: &mut Rng| {
            if weighted {
                self.order[everything.pick(&self.weight_sum, rng)]
            } else {
                ProductId(rng.index(n) as u32)
            }
        };
        if acc <= 0.0 {
            return draw_with_fallback(ctx, pair, k, rng, out, |_| None, fallback);
        }
        draw_with_fallback(
            ctx,
            pair,
            k,
            rng,
            out,
            |rng| {
                let level = rng.weighted_index(&cum);
                pools[level].map(|p| self.order[p.pick(&self.weight_sum, rng)])
            },
            fallback,
        )
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
        draws_with(weights, pair_index, &[])
    }

    /// As `draws`, with extra training interactions per product (`(product, count)`).
    fn draws_with(
        weights: TaxonomyWeights,
        pair_index: usize,
        extra: &[(usize, u32)],
    ) -> (Dataset, Vec<(ProductId, ProductId)>, SampleStats) {
        let (ds, mut data, _) = world();
        for &(p, n) in extra {
            data.popularity[p] += n;
        }
        let s = TaxonomySampler::new(&ds, weights, &data.popularity);
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
            pool: NegativePool::Catalog,
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
            pool: NegativePool::Catalog,
        };
        let (ds, all, _) = draws(w, 0);
        for (pos, neg) in &all {
            assert_eq!(relation(&ds, *pos, *neg), 1, "sibling leaf (qled)");
        }
        let w = TaxonomyWeights {
            leaf: 0.0,
            sibling: 0.0,
            cousin: 1.0,
            pool: NegativePool::Catalog,
        };
        let (ds, all, _) = draws(w, 0);
        for (pos, neg) in &all {
            assert_eq!(relation(&ds, *pos, *neg), 2, "cousin (headphones)");
        }
    }

    #[test]
    fn mixed_weights_reach_every_level() {
        let w = TaxonomyWeights {
            pool: NegativePool::Catalog,
            ..TaxonomyWeights::default()
        };
        let (ds, all, _) = draws(w, 0);
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
            pool: NegativePool::Catalog,
        };
        let (_, all, stats) = draws(w, 2);
        // home has only the sofa leaf: no sibling pool, so draws fall back to uniform.
        assert_eq!(stats.fallbacks as usize, all.len());
    }

    #[test]
    fn the_default_pool_draws_only_products_with_training_interactions() {
        // Bought in training: p0, p1 (positives of "oled tv"), p12, and the extra p2, p5, p9.
        let extra = [(2, 1), (5, 3), (9, 1)];
        let (_, all, stats) = draws_with(TaxonomyWeights::default(), 0, &extra);
        let mut seen = std::collections::BTreeSet::new();
        for (_, neg) in &all {
            seen.insert(neg.0);
        }
        // One per level: same leaf p2, sibling p5, cousin p9; never p3, p4, p6, p7, p8 ...
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![2, 5, 9]);
        assert_eq!(stats.fallbacks, 0);
        // The paper's pool reaches the never-bought products of the same pools.
        let catalog = TaxonomyWeights {
            pool: NegativePool::Catalog,
            ..TaxonomyWeights::default()
        };
        let (_, all, _) = draws_with(catalog, 0, &extra);
        assert!(all.iter().any(|(_, n)| [3, 4, 6, 7, 8].contains(&n.0)));
    }

    #[test]
    fn the_popularity_pool_draws_in_proportion_to_interactions() {
        let w = TaxonomyWeights {
            leaf: 1.0,
            sibling: 0.0,
            cousin: 0.0,
            pool: NegativePool::Popularity,
        };
        let (_, all, _) = draws_with(w, 0, &[(2, 1), (3, 9)]);
        let p3 = all.iter().filter(|(_, n)| n.0 == 3).count();
        let p2 = all.iter().filter(|(_, n)| n.0 == 2).count();
        assert_eq!(p2 + p3, all.len());
        // 300 draws at 9 : 1.
        assert!((240..=296).contains(&p3), "p3 drawn {p3} of {}", all.len());
    }

    #[test]
    fn a_pool_whose_products_were_never_bought_is_empty() {
        // The default pool: qled (p4..p7) was never bought, so the sibling level is empty and
        // every draw falls back, as for a leaf without siblings.
        let w = TaxonomyWeights {
            leaf: 0.0,
            sibling: 1.0,
            cousin: 0.0,
            ..TaxonomyWeights::default()
        };
        let (_, all, stats) = draws(w, 0);
        assert_eq!(stats.fallbacks as usize, all.len());
        // The fallback keeps the pool's rule: p12 is the one bought product that is not a
        // positive of "oled tv"; the paper's pool falls back to the whole catalog.
        assert!(all.iter().all(|(_, n)| n.0 == 12), "{all:?}");
        let catalog = TaxonomyWeights {
            pool: NegativePool::Catalog,
            ..w
        };
        let (ds, all, _) = draws_with(catalog, 0, &[]);
        assert!(all.iter().any(|(_, n)| n.0 != 12));
        // (The qled pool itself is not empty under the catalog rule.)
        assert!(all.iter().all(|(p, n)| relation(&ds, *p, *n) == 1));
    }

    #[test]
    fn pools_parse_and_print() {
        for p in [
            NegativePool::Interacted,
            NegativePool::Catalog,
            NegativePool::Popularity,
        ] {
            assert_eq!(p.to_string().parse::<NegativePool>(), Ok(p));
        }
        assert!("all".parse::<NegativePool>().is_err());
    }
}
