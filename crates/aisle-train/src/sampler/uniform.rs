//! Uniform random negatives over the whole catalog.

use aisle_core::rng::Rng;
use aisle_core::ProductId;

use super::{draw_with, SampleCtx, SampleStats, Sampler};
use crate::data::Pair;

/// Negatives drawn uniformly from the catalog (positives rejected).
#[derive(Clone, Debug, Default)]
pub struct UniformSampler;

impl Sampler for UniformSampler {
    fn name(&self) -> String {
        "random".into()
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        let n = ctx.data.products();
        draw_with(ctx, pair, k, rng, out, |rng| {
            Some(ProductId(rng.index(n) as u32))
        })
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
        let s = UniformSampler;
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
}
