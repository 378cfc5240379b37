//! Uniform random negatives over the whole catalog, or over the products with a training
//! interaction (`random:pool=interacted`, the population positives come from: see
//! [`NegativePool`]).

use aisle_core::rng::Rng;
use aisle_core::ProductId;

use super::pool::admitted_ids;
use super::{draw_with, NegativePool, SampleCtx, SampleStats, Sampler};
use crate::data::{Pair, TrainData};

/// Negatives drawn uniformly from the catalog or from a pool of it (positives rejected).
#[derive(Clone, Debug, Default)]
pub struct UniformSampler {
    /// The pool's products; `None` for the whole catalog.
    pool: Option<(NegativePool, Vec<ProductId>)>,
}

impl UniformSampler {
    /// Uniform over the products `pool` admits (every product for [`NegativePool::Catalog`]).
    /// A pool that admits no product (no training interaction at all) falls back to the catalog.
    pub fn new(data: &TrainData, pool: NegativePool) -> Self {
        UniformSampler {
            pool: admitted_ids(pool, &data.popularity).map(|ids| (pool, ids)),
        }
    }
}

impl Sampler for UniformSampler {
    fn name(&self) -> String {
        match &self.pool {
            None => "random".into(),
            Some((pool, ids)) => format!("random(pool={pool}, {} products)", ids.len()),
        }
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        match &self.pool {
            None => {
                let n = ctx.data.products();
                draw_with(ctx, pair, k, rng, out, |rng| {
                    Some(ProductId(rng.index(n) as u32))
                })
            }
            Some((_, ids)) => draw_with(ctx, pair, k, rng, out, |rng| rng.choose(ids).copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testing::world;

    #[test]
    fn never_positive_and_exactly_k() {
        let (ds, data, _) = world();
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        let s = UniformSampler::default();
        let mut rng = Rng::new(1);
        let mut removed = 0;
        for pair in &data.pairs {
            for _ in 0..50 {
                let mut out = Vec::new();
                removed += s
                    .sample(&ctx, pair, 4, &mut rng, &mut out)
                    .removed_positives;
                assert_eq!(out.len(), 4);
                assert!(out.iter().all(|&p| !data.is_positive(pair.query, p)));
            }
        }
        assert!(
            removed > 0,
            "the positives of `oled tv` are 2 of 16 products: some draws hit them"
        );
    }

    #[test]
    fn the_interacted_pool_draws_only_products_with_a_training_interaction() {
        let (ds, mut data, _) = world();
        // p0, p1 (oled tv's positives) and p12 (sofa's) are bought; give p5 and p9 a purchase.
        data.popularity[5] += 1;
        data.popularity[9] += 2;
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        let s = UniformSampler::new(&data, NegativePool::Interacted);
        assert_eq!(s.name(), "random(pool=interacted, 5 products)");
        let mut rng = Rng::new(3);
        let mut seen = std::collections::BTreeSet::new();
        let pair = data.pairs[0];
        for _ in 0..200 {
            let mut out = Vec::new();
            let stats = s.sample(&ctx, &pair, 3, &mut rng, &mut out);
            assert_eq!(out.len(), 3);
            assert_eq!(stats.fallbacks, 0);
            seen.extend(out.iter().map(|p| p.0));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![5, 9, 12],
            "the pool minus oled tv's positives"
        );
        // The catalog pool is the sampler it always was.
        assert_eq!(
            UniformSampler::new(&data, NegativePool::Catalog).name(),
            "random"
        );
    }
}
