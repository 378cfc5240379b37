//! A personalized tower fitted over an encoder's fixed vectors (`aisle_train::personal_fit`).

use aisle_core::synth::small_dataset;
use aisle_core::Histories;
use aisle_model::{Encoder, Model, ModelConfig};
use aisle_train::eval::{recall_of_vectors, ValidationSet};
use aisle_train::personal_fit::{fit_personalizer, PersonalFitConfig};
use aisle_train::SamplerSpec;

fn small_model() -> Model {
    let mut cfg = ModelConfig::default();
    cfg.featurizer.buckets_log2 = 12;
    cfg.tower.dim = 16;
    Model::new(cfg)
}

fn config() -> PersonalFitConfig {
    PersonalFitConfig {
        steps: 30,
        batch_size: 32,
        eval_every: 10,
        eval_queries: 200,
        ..PersonalFitConfig::default()
    }
}

#[test]
fn the_kept_tower_is_the_one_measured_and_a_rerun_is_identical() {
    let ds = small_dataset(300, 40, 400, 3).expect("world");
    let split = ds.split("event").expect("event split");
    let model = small_model();
    let mut lines = Vec::new();
    let fit = fit_personalizer(&ds, split, &model, &config(), &mut |l| {
        lines.push(l.to_owned())
    })
    .expect("fit");
    assert!(fit.pairs >= 2);
    assert!(lines[0].starts_with("encoding 300 products"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("step 30/30")),
        "{lines:?}"
    );
    assert!(fit.kept_step <= 30 && fit.kept_step.is_multiple_of(10));
    assert!(fit.tower.fits(Encoder::dim(&model)));

    // The figure reported is the kept tower's, measured again from scratch.
    let cfg = config();
    let set = ValidationSet::new(&ds, &split.validation, cfg.eval_queries, cfg.seed);
    let refs: Vec<&str> = set.texts.iter().map(String::as_str).collect();
    let queries = model.encode_queries(&refs).expect("queries");
    let items = Encoder::encode_catalog(&model, &ds.catalog, &ds.taxonomy).expect("items");
    let histories = Histories::from_split(&ds, split);
    let ctx = (&ds, &histories, cfg.personalize.history);
    let d = Encoder::dim(&model);
    let again = recall_of_vectors(
        d,
        items.clone(),
        queries.clone(),
        &set,
        10,
        Some((&fit.tower, ctx)),
    )
    .expect("recall");
    assert_eq!(again, fit.validation_personalized);
    let plain = recall_of_vectors(d, items, queries, &set, 10, None).expect("plain");
    assert_eq!(plain, fit.validation_plain);

    // Seeded: the same run gives the same tower, bit for bit.
    let rerun = fit_personalizer(&ds, split, &model, &config(), &mut |_| {}).expect("rerun");
    assert_eq!(rerun.tower.to_flat(), fit.tower.to_flat());
}

#[test]
fn what_cannot_fit_is_refused_with_the_reason() {
    let ds = small_dataset(200, 20, 200, 5).expect("world");
    let split = ds.split("event").expect("event split");
    let model = small_model();
    let bad = [
        (
            PersonalFitConfig {
                steps: 0,
                ..config()
            },
            "steps >= 1",
        ),
        (
            PersonalFitConfig {
                sampler: SamplerSpec::parse("ance").expect("spec"),
                ..config()
            },
            "ANCE",
        ),
    ];
    for (cfg, says) in bad {
        let e = fit_personalizer(&ds, split, &model, &cfg, &mut |_| {}).expect_err(says);
        assert!(e.to_string().contains(says), "{e}");
    }
}
