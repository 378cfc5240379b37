//! Negative samplers: one trait, one implementation per strategy.
//!
//! The trainer calls [`Sampler::prepare`] once before every step (ANCE re-indexes there), then
//! [`Sampler::sample`] once per pair of the batch, in parallel, each call with its own random
//! stream derived from the seed, the step and the pair's position, so that sampling is
//! deterministic whatever the thread count. A sampler promises:
//!
//! * exactly `k` negatives per call (it falls back to uniform draws when its own pool runs dry);
//! * never a positive: no product relevant to the pair's normalised query (false-negative
//!   control), and it reports how many candidates that rule removed;
//! * the same output for the same seed, step and pair.
//!
//! Strategies compose: [`Mixture`] and [`Curriculum`] are samplers of samplers.

mod ance;
mod bm25;
mod mixture;
mod pool;
mod popularity;
mod spec;
mod taxonomy;
mod uniform;

pub use ance::{AnceIndex, AnceSampler};
pub use bm25::Bm25Sampler;
pub use mixture::{Curriculum, Mixture};
pub use pool::NegativePool;
pub use popularity::PopularitySampler;
pub use spec::{build, SamplerSpec};
pub use taxonomy::{TaxonomySampler, TaxonomyWeights};
pub use uniform::UniformSampler;

use aisle_core::rng::Rng;
use aisle_core::{Dataset, ProductId};
use aisle_model::Model;

use crate::data::{Pair, TrainData};
use crate::error::Result;

/// What a sampler may read.
pub struct SampleCtx<'a> {
    pub data: &'a TrainData,
    pub dataset: &'a Dataset,
    /// The step being sampled for (0-based).
    pub step: u64,
}

/// What one call drew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleStats {
    /// Candidates rejected because they are positives of the query.
    pub removed_positives: u32,
    /// Negatives that came from the fallback: at random from the sampler's easy pool.
    pub fallbacks: u32,
}

impl std::ops::AddAssign for SampleStats {
    fn add_assign(&mut self, o: SampleStats) {
        self.removed_positives += o.removed_positives;
        self.fallbacks += o.fallbacks;
    }
}

/// A negative sampling strategy. See the module documentation for the contract.
pub trait Sampler: Send + Sync {
    /// A short name for logs and reports.
    fn name(&self) -> String;

    /// Called once before the sampling of `step`; returns milliseconds spent refreshing (ANCE).
    fn prepare(&mut self, _step: u64, _model: &Model, _ctx: &SampleCtx) -> Result<f64> {
        Ok(0.0)
    }

    /// Facts worth logging once, after the sampler is built (e.g. positives removed up front).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Appends exactly `k` negatives for `pair` to `out`.
    fn sample(
        &self,
        ctx: &SampleCtx,
        pair: &Pair,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<ProductId>,
    ) -> SampleStats;
}

/// How many draws a sampler tries before it falls back to its easy pool.
pub(crate) const MAX_TRIES: usize = 32;

/// Appends non-positive negatives drawn by `draw` (uniform over the catalog, or a sampler's own
/// easy pool, e.g. TB-HNS's products with a training interaction) until `out` holds `target`
/// items. If the catalog has no non-positive product at all, the last draws repeat whatever was
/// drawn (counted as fallbacks).
pub(crate) fn fill_from<D>(
    ctx: &SampleCtx,
    pair: &Pair,
    target: usize,
    rng: &mut Rng,
    out: &mut Vec<ProductId>,
    stats: &mut SampleStats,
    mut draw: D,
) where
    D: FnMut(&mut Rng) -> ProductId,
{
    let n = ctx.data.products();
    while out.len() < target {
        stats.fallbacks += 1;
        let mut chosen = None;
        for _ in 0..MAX_TRIES {
            let p = draw(rng);
            if ctx.data.is_positive(pair.query, p) {
                stats.removed_positives += 1;
            } else {
                chosen = Some(p);
                break;
            }
        }
        match chosen {
            Some(p) => out.push(p),
            // Every draw was a positive: the query covers (nearly) the whole catalog. Scan for a
            // non-positive; if there is none, any product will do (the loss masks nothing here).
            None => out.push(
                (0..n as u32)
                    .map(ProductId)
                    .find(|&p| !ctx.data.is_positive(pair.query, p))
                    .unwrap_or(pair.product),
            ),
        }
    }
}

/// Draws from `pool(rng)` until `k` negatives are found, rejecting positives; tops up uniformly.
pub(crate) fn draw_with<F>(
    ctx: &SampleCtx,
    pair: &Pair,
    k: usize,
    rng: &mut Rng,
    out: &mut Vec<ProductId>,
    pool: F,
) -> SampleStats
where
    F: FnMut(&mut Rng) -> Option<ProductId>,
{
    let n = ctx.data.products();
    draw_with_fallback(ctx, pair, k, rng, out, pool, |rng| {
        ProductId(rng.index(n) as u32)
    })
}

/// [`draw_with`], topping up from `fallback(rng)` instead of the whole catalog.
pub(crate) fn draw_with_fallback<F, D>(
    ctx: &SampleCtx,
    pair: &Pair,
    k: usize,
    rng: &mut Rng,
    out: &mut Vec<ProductId>,
    mut pool: F,
    fallback: D,
) -> SampleStats
where
    F: FnMut(&mut Rng) -> Option<ProductId>,
    D: FnMut(&mut Rng) -> ProductId,
{
    let mut stats = SampleStats::default();
    let target = out.len() + k;
    let mut tries = 0;
    while out.len() < target && tries < MAX_TRIES * k.max(1) {
        tries += 1;
        let Some(p) = pool(rng) else { break };
        if ctx.data.is_positive(pair.query, p) {
            stats.removed_positives += 1;
            continue;
        }
        out.push(p);
    }
    fill_from(ctx, pair, target, rng, out, &mut stats, fallback);
    stats
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small world for sampler tests: two departments, leaves with products, one query.
    use aisle_core::{Catalog, Dataset, Interaction, Kind, Product, ProductId, TaxonomyBuilder};
    use aisle_model::{FeaturizerConfig, Model, ModelConfig, TowerConfig};

    use crate::data::TrainData;

    /// el > tv > {oled (p0..p3), qled (p4..p7)}, el > audio > hp (p8..p11), home > sofa (p12..p15).
    /// Queries: "oled tv" -> p0 and p1 (both positives), "sofa" -> p12.
    pub fn world() -> (Dataset, TrainData, Model) {
        let mut b = TaxonomyBuilder::new();
        b.add_node("el", "electronics", None, None);
        b.add_node("tv", "tv", Some("el"), None);
        b.add_node("oled", "oled", Some("tv"), None);
        b.add_node("qled", "qled", Some("tv"), None);
        b.add_node("audio", "audio", Some("el"), None);
        b.add_node("hp", "headphones", Some("audio"), None);
        b.add_node("home", "home", None, None);
        b.add_node("sofa", "sofa", Some("home"), None);
        let t = b.build().expect("tree");
        let leaves = ["oled", "qled", "hp", "sofa"];
        let mut ds = Dataset::new("t", t);
        let mut catalog = Catalog::new();
        for i in 0..16 {
            let cat = ds.taxonomy.node(leaves[i / 4]).expect("leaf");
            catalog
                .push(Product {
                    id: format!("p{i}"),
                    title: format!("{} item {i}", leaves[i / 4]),
                    description: String::new(),
                    brand: String::new(),
                    price: None,
                    attributes: vec![],
                    category: cat,
                })
                .expect("unique");
        }
        ds.catalog = catalog;
        let u = ds.users.get_or_insert("u");
        for (q, p) in [("oled tv", 0), ("oled tv", 1), ("sofa", 12)] {
            let query = Some(ds.queries.intern(q));
            ds.interactions.push(Interaction {
                user: u,
                product: ProductId(p),
                kind: Kind::Click,
                time: 0,
                session: None,
                query,
                price: None,
            });
        }
        let split = aisle_core::Split {
            name: "all".into(),
            description: String::new(),
            seed: 0,
            train: vec![0, 1, 2],
            validation: vec![],
            test: vec![],
            cold_start: vec![false; 16],
        };
        let model = Model::new(ModelConfig {
            featurizer: FeaturizerConfig {
                buckets_log2: 10,
                ..Default::default()
            },
            tower: TowerConfig {
                dim: 8,
                ..Default::default()
            },
            ..Default::default()
        });
        let data = TrainData::build(&ds, &split, &model);
        (ds, data, model)
    }
}
