//! Fine-tuning a transformer tower with aisle's samplers, on a tiny BERT written to a temporary
//! model folder (random weights, a word-level tokenizer over the world's words), so that the
//! test needs no downloaded files.

use std::path::Path;

use aisle_core::synth;
use aisle_train::transformer::{fine_tune, TuneConfig};
use aisle_train::SamplerSpec;
use aisle_transformer::product_text;
use aisle_transformer::MiniLm;

fn tiny_model_folder(dir: &Path, words: &[String]) {
    aisle_transformer::tiny::write_model_folder(dir, words).expect("tiny model");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn fine_tuning_with_tb_hns_lowers_the_loss_and_writes_a_loadable_model() {
    let ds = synth::small_dataset(300, 30, 400, 7).expect("world");
    let split = ds.split("event").expect("event split").clone();
    let mut words: Vec<String> = Vec::new();
    let mut add = |text: &str| {
        for w in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            words.push(w.to_lowercase());
        }
    };
    for (_, p) in ds.catalog.iter() {
        add(&product_text(p, &ds.taxonomy));
    }
    for q in 0..ds.queries.len() {
        add(ds.queries.text(aisle_core::QueryId(q as u32)));
    }
    words.sort();
    words.dedup();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).expect("base");
    tiny_model_folder(&base, &words);
    let out = dir.path().join("tuned");
    let cfg = TuneConfig {
        steps: 60,
        batch_size: 16,
        negatives: 2,
        lr: 2e-3,
        seed: 3,
        ..TuneConfig::default()
    };
    let mut lines = Vec::new();
    let summary = fine_tune(&base, &ds, &split, &cfg, &out, &mut |l| {
        lines.push(l.to_owned())
    })
    .expect("tune");
    assert_eq!(summary.steps, 60);
    assert!(summary.pairs >= 60 * 2 && summary.pairs <= 60 * 16);
    assert!(!lines.is_empty());
    // The loss is logged every 3 steps: the last five against the first five.
    let mean = |l: &[(u64, f32)]| l.iter().map(|x| x.1).sum::<f32>() / l.len() as f32;
    let n = summary.losses.len();
    let (first, last) = (mean(&summary.losses[..5]), mean(&summary.losses[n - 5..]));
    eprintln!("loss {first:.3} -> {last:.3}");
    assert!(
        last < 0.8 * first,
        "loss {first} -> {last}: {:?}",
        summary.losses
    );

    // The folder loads as a model on its own, and differs from the base.
    let tuned = MiniLm::load(&out).expect("load tuned");
    let before = MiniLm::load(&base).expect("load base");
    let text = product_text(ds.catalog.iter().next().expect("a product").1, &ds.taxonomy);
    let a = tuned.encode(&[&text], 8).expect("encode");
    let b = before.encode(&[&text], 8).expect("encode");
    assert_eq!(a[0].len(), aisle_transformer::tiny::DIM);
    assert!(cosine(&a[0], &b[0]) < 0.9999, "the weights did not change");
    // Nothing temporary is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ance_and_degenerate_budgets_are_refused() {
    let ds = synth::small_dataset(100, 10, 100, 1).expect("world");
    let split = ds.split("event").expect("event split").clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).expect("base");
    tiny_model_folder(&base, &["a".into()]);
    for (cfg, want) in [
        (
            TuneConfig {
                sampler: SamplerSpec::parse("ance").expect("spec"),
                ..TuneConfig::default()
            },
            "ANCE",
        ),
        (
            TuneConfig {
                steps: 0,
                ..TuneConfig::default()
            },
            "steps >= 1",
        ),
    ] {
        let err = fine_tune(&base, &ds, &split, &cfg, &dir.path().join("x"), &mut |_| {})
            .expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
        assert!(!dir.path().join("x").exists());
    }
}
