//! Samplers of samplers: a weighted mixture, and a curriculum that moves from one sampler to
//! another over training (e.g. uniform first, then taxonomy, as Etsy reported).

use aisle_core::rng::{cumulative, Rng};
use aisle_core::ProductId;
use aisle_model::Model;

use super::{SampleCtx, SampleStats, Sampler};
use crate::data::Pair;
use crate::error::Result;

/// Each negative comes from component `i` with probability `weight_i / sum(weights)`.
pub struct Mixture {
    parts: Vec<(f64, Box<dyn Sampler>)>,
    cumulative: Vec<f64>,
}

impl Mixture {
    pub fn new(parts: Vec<(f64, Box<dyn Sampler>)>) -> Self {
        let cumulative = cumulative(parts.iter().map(|(w, _)| *w));
        Mixture { parts, cumulative }
    }
}

impl Sampler for Mixture {
    fn name(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(w, s)| format!("{w}*{}", s.name()))
            .collect();
        format!("mix({})", parts.join(","))
    }

    fn prepare(&mut self, step: u64, model: &Model, ctx: &SampleCtx) -> Result<f64> {
        let mut ms = 0.0;
        for (_, s) in &mut self.parts {
            ms += s.prepare(step, model, ctx)?;
        }
        Ok(ms)
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        let mut stats = SampleStats::default();
        // Count negatives per component first, so each component is called once.
        let mut counts = vec![0usize; self.parts.len()];
        for _ in 0..k {
            counts[rng.weighted_index(&self.cumulative)] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 {
                stats += self.parts[i].1.sample(ctx, pair, c, rng, out);
            }
        }
        stats
    }
}

/// Draws from `from` before `start`, from `to` after `end`, and in between from `to` with a
/// probability that grows linearly from 0 to 1.
pub struct Curriculum {
    from: Box<dyn Sampler>,
    to: Box<dyn Sampler>,
    start: u64,
    end: u64,
}

impl Curriculum {
    pub fn new(from: Box<dyn Sampler>, to: Box<dyn Sampler>, start: u64, end: u64) -> Self {
        Curriculum {
            from,
            to,
            start,
            end: end.max(start),
        }
    }

    /// Probability of drawing from `to` at `step`.
    pub fn share_of_second(&self, step: u64) -> f64 {
        if step < self.start {
            0.0
        } else if step >= self.end {
            1.0
        } else {
            (step - self.start) as f64 / (self.end - self.start) as f64
        }
    }
}

impl Sampler for Curriculum {
    fn name(&self) -> String {
        format!(
            "curriculum({}->{}@{}..{})",
            self.from.name(),
            self.to.name(),
            self.start,
            self.end
        )
    }

    fn prepare(&mut self, step: u64, model: &Model, ctx: &SampleCtx) -> Result<f64> {
        // Only prepare a sampler that can be drawn from now (ANCE refreshes cost seconds).
        let share = self.share_of_second(step);
        let mut ms = 0.0;
        if share < 1.0 {
            ms += self.from.prepare(step, model, ctx)?;
        }
        if share > 0.0 {
            ms += self.to.prepare(step, model, ctx)?;
        }
        Ok(ms)
    }

    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats {
        let share = self.share_of_second(ctx.step);
        let second = (0..k).filter(|_| rng.chance(share)).count();
        let mut stats = SampleStats::default();
        if k - second > 0 {
            stats += self.from.sample(ctx, pair, k - second, rng, out);
        }
        if second > 0 {
            stats += self.to.sample(ctx, pair, second, rng, out);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testing::world;
    use crate::sampler::{NegativePool, TaxonomySampler, TaxonomyWeights, UniformSampler};

    #[test]
    fn mixture_keeps_the_contract() {
        let (ds, data, _) = world();
        let leaf = TaxonomyWeights {
            leaf: 1.0,
            sibling: 0.0,
            cousin: 0.0,
            pool: NegativePool::Catalog,
        };
        let m = Mixture::new(vec![
            (1.0, Box::new(UniformSampler::default())),
            (
                1.0,
                Box::new(TaxonomySampler::new(&ds, leaf, &data.popularity)),
            ),
        ]);
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 0,
        };
        let mut rng = Rng::new(8);
        for pair in &data.pairs {
            let mut out = Vec::new();
            m.sample(&ctx, pair, 6, &mut rng, &mut out);
            assert_eq!(out.len(), 6);
            assert!(out.iter().all(|&p| !data.is_positive(pair.query, p)));
        }
        assert!(m.name().starts_with("mix("));
    }

    #[test]
    fn curriculum_moves_from_first_to_second() {
        let (ds, data, _) = world();
        let leaf = TaxonomyWeights {
            leaf: 1.0,
            sibling: 0.0,
            cousin: 0.0,
            pool: NegativePool::Catalog,
        };
        let c = Curriculum::new(
            Box::new(UniformSampler::default()),
            Box::new(TaxonomySampler::new(&ds, leaf, &data.popularity)),
            10,
            20,
        );
        assert_eq!(c.share_of_second(0), 0.0);
        assert_eq!(c.share_of_second(15), 0.5);
        assert_eq!(c.share_of_second(25), 1.0);
        // After the ramp every negative is a same-leaf one.
        let ctx = SampleCtx {
            data: &data,
            dataset: &ds,
            step: 30,
        };
        let pair = data.pairs[0];
        let mut rng = Rng::new(1);
        let mut out = Vec::new();
        c.sample(&ctx, &pair, 20, &mut rng, &mut out);
        let leaf_of = |p: ProductId| ds.catalog.get(p).category;
        assert!(out.iter().all(|&p| leaf_of(p) == leaf_of(pair.product)));
    }
}
