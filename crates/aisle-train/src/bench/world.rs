//! The worlds `aisle bench search` serves: a generated catalog of the size measured, and a
//! model briefly trained on it.

use std::time::Instant;

use aisle_core::stats::fmt_n;
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::Dataset;
use aisle_model::Model;

use crate::error::Result;
use crate::trainer::{PersonalizeConfig, TrainConfig, Trainer};

/// A synthetic world of `products` products with its default splits, and a personalized TB-HNS
/// model trained on it for `steps` steps: its weights shape the vectors, so the ANN is measured
/// on embedding-like data, not on random vectors. `say` gets a line after each part.
pub fn serving_world(
    products: usize,
    seed: u64,
    steps: u64,
    say: &mut dyn FnMut(&str),
) -> Result<(Dataset, Model)> {
    let t = Instant::now();
    let cfg = SynthConfig {
        products,
        users: 2000,
        // Enough sessions for queries and histories; the catalog size is what is measured.
        sessions: 20_000.max(products / 10),
        seed,
        taxonomy: TaxonomySource::BuiltIn,
    };
    cfg.validate()?;
    let mut ds = synth::generate(&cfg)?.dataset;
    aisle_core::adapters::add_default_splits(&mut ds, seed)?;
    say(&format!(
        "[{}] world: {} products, {} interactions in {:.1} s",
        fmt_n(products),
        fmt_n(ds.catalog.len()),
        fmt_n(ds.interactions.len()),
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    let model = {
        let split = ds.split_named(None)?;
        let cfg = TrainConfig {
            steps,
            personalize: Some(PersonalizeConfig::default()),
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(cfg, &ds, split)?;
        for _ in 0..steps {
            trainer.train_step()?;
        }
        trainer.model.clone()
    };
    say(&format!(
        "[{}] trained {steps} steps in {:.1} s",
        fmt_n(products),
        t.elapsed().as_secs_f64()
    ));
    Ok((ds, model))
}
