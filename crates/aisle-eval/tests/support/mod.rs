//! What aisle-eval's evaluation tests share (`mod support;`): the small synthetic world they rank
//! and a small personalized model trained on it.
#![allow(dead_code)]

use aisle_core::{synth, Dataset};
use aisle_model::Model;
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{SamplerSpec, TrainConfig, Trainer};

/// 500 products, 50 customers, 800 sessions (seed 3).
pub fn world() -> Dataset {
    synth::small_dataset(500, 50, 800, 3).expect("world")
}

/// A personalized model (16 dimensions, 2^14 buckets, histories of 10) after `steps` steps of the
/// taxonomy sampler on `ds`'s default split; `demographics`: whether it reads customer features.
pub fn personal_model(ds: &Dataset, steps: u64, demographics: bool) -> Model {
    let split = ds.default_split().expect("split");
    let mut cfg = TrainConfig {
        sampler: SamplerSpec::parse("taxonomy").expect("sampler"),
        batch_size: 32,
        steps,
        personalize: Some(PersonalizeConfig {
            history: 10,
            refresh: 10,
            demographics,
            ..PersonalizeConfig::default()
        }),
        ..TrainConfig::default()
    };
    cfg.model.featurizer.buckets_log2 = 14;
    cfg.model.tower.dim = 16;
    let mut t = Trainer::new(cfg, ds, split).expect("trainer");
    for _ in 0..steps {
        t.train_step().expect("step");
    }
    t.model
}
