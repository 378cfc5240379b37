//! Negatives drawn in proportion to training popularity (add-one smoothed).

use aisle_core::rng::{cumulative, Rng};
use aisle_core::ProductId;

use super::{draw_with, SampleCtx, SampleStats, Sampler};
use crate::data::{Pair, TrainData};

/// Popular products are drawn more often: they are the negatives a popularity-biased model most
/// needs to push down. Weight of product p = (training interactions of p + 1)^alpha.
#[derive(Clone, Debug)]
pub struct PopularitySampler {
    cumulative: Vec<f64>,
    alpha: f64,
}

impl PopularitySampler {
    pub fn new(data: &TrainData, alpha: f64) -> Self {
        PopularitySampler {
            cumulative: cumulative(
                data.popularity
                    .iter()
                    .map(|&c| (c as f64 + 1.0).powf(alpha)),
            ),
            alpha,
        }
    }
}

impl Sampler for PopularitySampler {
    fn name(&self) -> String {
        format!("popularity(alpha={})", self.alpha)
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        draw_with(ctx, pair, k, rng, out, |rng| {
            Some(ProductId(rng.weighted_index(&self.cumulative) as u32))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testing::world;

    #[test]
    fn prefers_popular_products_and_skips_positives() {
        let (ds, mut data, _) = world();
        data.popularity[5] = 1000;
        let s = PopularitySampler::new(&data, 1.0);
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        let mut rng = Rng::new(2);
        let mut hits = 0;
        let pair = data.pairs[0];
        for _ in 0..200 {
            let mut out = Vec::new();
            s.sample(&ctx, &pair, 1, &mut rng, &mut out);
            assert!(!data.is_positive(pair.query, out[0]));
            hits += usize::from(out[0] == ProductId(5));
        }
        assert!(hits > 150, "{hits}");
    }
}
