//! An experiment end to end on a small synthetic world: rows trained under one budget and two
//! seeds, choices made on validation, the simulated A/B test, and the report files.

use std::collections::BTreeMap;
use std::sync::Arc;

use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_eval::experiment::{self, DenseRow, ExperimentConfig, Inputs, RowKind};
use aisle_search::Mode;
use aisle_train::{SamplerSpec, TrainConfig};

fn row(name: &str, sampler: &str, taxonomy: bool) -> DenseRow {
    DenseRow {
        name: name.into(),
        sampler: SamplerSpec::parse(sampler).expect("sampler"),
        taxonomy,
    }
}

#[test]
fn an_experiment_trains_evaluates_simulates_and_reports() {
    let world = synth::generate(&SynthConfig {
        products: 600,
        users: 80,
        sessions: 1_500,
        seed: 11,
        taxonomy: TaxonomySource::BuiltIn,
    })
    .expect("world");
    let mut ds = world.dataset;
    aisle_core::adapters::add_default_splits(&mut ds, 11).expect("splits");
    let ds = Arc::new(ds);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut train = TrainConfig {
        negatives: 2,
        batch_size: 32,
        steps: 40,
        log_every: 10,
        eval_every: 20,
        eval_queries: 100,
        ..TrainConfig::default()
    };
    train.model.featurizer.buckets_log2 = 14;
    train.model.tower.dim = 16;
    let cfg = ExperimentConfig {
        train,
        seeds: vec![1, 2],
        rows: vec![
            row("in-batch negatives", "in-batch", false),
            row("ANCE", "ance:refresh=20,index=exact", false),
            row("TB-HNS mix", "taxonomy", true),
        ],
        personalized: true,
        minilm_tune: Some(aisle_train::transformer::TuneConfig {
            steps: 4,
            batch_size: 8,
            lr: 1e-3,
            ..Default::default()
        }),
        history_boosts: vec![0.0, 0.5, 2.0],
        history_term_window: 1000,
        rerank: true,
        hybrid: Mode::parse("weighted:0.8").expect("mode"),
        resamples: 50,
        rounds: 100,
        seed: 3,
        runs_dir: dir.path().join("runs"),
    };
    // A tiny random BERT stands in for all-MiniLM-L6-v2: the zero-shot and fine-tuned rows.
    let minilm_dir = dir.path().join("tiny-bert");
    std::fs::create_dir_all(&minilm_dir).expect("dir");
    let mut words: Vec<String> = ds
        .catalog
        .iter()
        .flat_map(|(_, p)| {
            aisle_transformer::product_text(p, &ds.taxonomy)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    words.sort();
    words.dedup();
    aisle_transformer::tiny::write_model_folder(&minilm_dir, &words).expect("tiny model");
    let mut absent = BTreeMap::new();
    absent.insert("another row".to_owned(), "not here".to_owned());
    let mut lines = Vec::new();
    let exp = experiment::run(
        Inputs {
            ds: Arc::clone(&ds),
            splits: vec!["event".into()],
            truth: Some(&world.truth),
            command: "aisle experiment --test".into(),
            quick: true,
            absent,
            minilm: Some(minilm_dir.clone()),
        },
        &cfg,
        &mut |l| lines.push(l.to_owned()),
    )
    .expect("experiment");
    assert!(lines.iter().any(|l| l.contains("trained ANCE (seed 2)")));
    let p = &exp.protocols[0];
    // 3 dense rows + the personalized row + the same without the customers' features (the
    // synthetic customers have a segment), two seeds each.
    assert_eq!(p.runs.len(), 10);
    assert!(p.runs.iter().all(|r| r.steps == 40 && !r.curve.is_empty()));
    assert_eq!(p.best_taxonomy.as_deref(), Some("TB-HNS mix"));
    let best_dense = p.best_dense.clone().expect("best dense");
    let names: Vec<&str> = p.report.rows.iter().map(|r| r.system.as_str()).collect();
    for want in [
        experiment::BM25,
        experiment::POPULARITY,
        experiment::MEMORISATION,
        experiment::REPURCHASE,
        "in-batch negatives",
        "ANCE",
        "TB-HNS mix",
        "TB-HNS mix + personalization",
        "TB-HNS mix + personalization, history only",
    ] {
        assert!(names.contains(&want), "no row {want} in {names:?}");
    }
    // The history term's beta is the validation argmax of the candidates (ties: the smaller),
    // and its row is there exactly when a beta above 0 won.
    let choice = p.history_choice.as_ref().expect("a history choice");
    let tried: Vec<f32> = choice.candidates.iter().map(|c| c.0).collect();
    assert_eq!(tried, vec![0.0, 0.5, 2.0]);
    assert!(choice.validation_queries > 0);
    let best = choice
        .candidates
        .iter()
        .map(|c| c.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let first_best = choice.candidates.iter().find(|c| c.1 == best).expect("max");
    assert_eq!(choice.chosen, first_best.0, "{:?}", choice.candidates);
    let history_rows: Vec<&&str> = names
        .iter()
        .filter(|n| n.contains("history term"))
        .collect();
    if choice.chosen > 0.0 {
        let want = format!(
            "TB-HNS mix + personalization + history term x{}",
            choice.chosen
        );
        assert_eq!(history_rows, vec![&want.as_str()]);
    } else {
        assert!(history_rows.is_empty(), "{history_rows:?}");
    }
    let hybrid = format!("{best_dense} + BM25 (weighted:0.8)");
    assert!(names.contains(&hybrid.as_str()), "{names:?}");
    // Every trained row reports both seeds; the best dense row is the validation maximum.
    let info = |n: &str| p.rows.iter().find(|r| r.name == n).expect("row info");
    for r in p.report.rows.iter().filter(|r| {
        matches!(
            info(&r.system).kind,
            RowKind::Dense | RowKind::Personalized | RowKind::Hybrid
        )
    }) {
        assert_eq!(r.seeds.len(), 2, "{}", r.system);
    }
    // The learned re-ranking row: one head per seed, fitted on validation, every variant
    // measured on held-out folds, and the row in the test table with both seeds.
    let rerank = p.rerank.as_ref().expect("a re-ranking fit");
    assert_eq!(
        rerank.row,
        "TB-HNS mix + personalization + learned re-ranking"
    );
    assert_eq!(rerank.fits.len(), 2);
    for (_, f) in &rerank.fits {
        assert_eq!(f.held_out.len(), aisle_eval::rerank::VARIANTS.len());
        assert!(f.validation_queries > 0);
        assert!(f.head.weights.iter().all(|w| w.is_finite()));
        assert!((0.0..=1.0).contains(&f.candidate_recall));
    }
    assert!(names.contains(&rerank.row.as_str()), "{names:?}");
    assert_eq!(info(&rerank.row).kind, RowKind::Personalized);
    // MiniLM zero-shot, and fine-tuned with in-batch negatives and with the best TB-HNS row.
    let tuned: Vec<&str> = p.fine_tuned.iter().map(|f| f.row.as_str()).collect();
    assert_eq!(
        tuned,
        vec![
            "MiniLM fine-tuned, in-batch",
            "MiniLM fine-tuned, TB-HNS mix"
        ]
    );
    for f in &p.fine_tuned {
        assert_eq!(f.summary.steps, 4);
        assert_eq!(info(&f.row).kind, RowKind::FineTuned);
        assert!(names.contains(&f.row.as_str()), "{names:?}");
    }
    assert_eq!(p.fine_tuned[0].negatives, 0);
    assert_eq!(p.fine_tuned[1].negatives, 1);
    assert!(names.contains(&aisle_eval::zero_shot::MINILM));
    // The personalized tower fitted over pretrained MiniLM's vectors: right after MiniLM, with
    // its validation figure.
    let zero_shot = names
        .iter()
        .position(|n| *n == aisle_eval::zero_shot::MINILM);
    let personal = "pretrained MiniLM, personalized tower";
    assert_eq!(
        names.iter().position(|n| *n == personal),
        zero_shot.map(|i| i + 1),
        "{names:?}"
    );
    assert!(info(personal).validation_recall_at_10.is_some());
    let best_val = info(&best_dense).validation_recall_at_10.expect("val");
    for r in p.rows.iter().filter(|r| r.kind == RowKind::Dense) {
        assert!(r.validation_recall_at_10.expect("val") <= best_val + 1e-12);
    }
    // Every trained row: 3 dense, 2 personalized.
    assert_eq!(p.reach_ance.len(), 5);
    assert!(p
        .reach_ance
        .iter()
        .any(|r| r.row == "ANCE" && r.step.is_some()));
    // The simulated A/B test: control BM25, treatments the best dense and the personalized row.
    let ab = p.simulated_ab.as_ref().expect("simulated A/B");
    assert_eq!(ab.control, experiment::BM25);
    assert_eq!(ab.arms.len(), 3);
    assert!(ab.sessions > 50);
    assert!(ab.arms[0].conversion_lift.is_none());
    assert_eq!(ab.arms[0].seeds, 1);
    assert_eq!(ab.arms[1].seeds, 2);
    for a in &ab.arms[1..] {
        let lift = a.conversion_lift.expect("lift");
        let direct = a.conversion.mean - ab.arms[0].conversion.mean;
        assert!((lift.mean - direct).abs() < 1e-9);
    }
    // The files.
    let written = aisle_eval::report::write(&exp, &dir.path().join("report")).expect("report");
    let md = std::fs::read_to_string(&written.report).expect("report.md");
    assert!(md.contains("aisle experiment --test"));
    assert!(md.contains("Simulated A/B test"));
    assert!(md.contains("another row: not here"));
    assert!(md.contains("### Fine-tuning MiniLM"));
    assert!(md.contains("Where TB-HNS stands"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&written.results).expect("results")).expect("json");
    assert_eq!(json["schema"], experiment::SCHEMA);
    assert_eq!(
        json["protocols"][0]["runs"].as_array().map(Vec::len),
        Some(10)
    );
    // recall, two convergence plots, cost: PNG and SVG each, all linked from the report.
    assert_eq!(written.plots.len(), 8);
    for f in &written.plots {
        assert!(
            std::fs::metadata(f).expect("plot").len() > 1000,
            "{}",
            f.display()
        );
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(md.contains(name), "{name} not linked");
    }
    assert!(!std::fs::read_dir(dir.path().join("report"))
        .expect("dir")
        .flatten()
        .any(|e| e.path().to_string_lossy().ends_with(".tmp")));
}

#[test]
fn clashing_row_names_and_bad_history_weights_are_refused_before_any_training() {
    let ds = Arc::new(synth::small_dataset(200, 20, 200, 1).expect("world"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (["BM25", "x"], vec![], "clash"),
        (["a+b", "a b"], vec![], "clash"),
        (["a", "b"], vec![0.0, -1.0], "not a finite number"),
        (["a", "b"], vec![f32::NAN], "not a finite number"),
    ];
    for (names, boosts, want) in cases {
        let cfg = ExperimentConfig {
            train: TrainConfig::default(),
            seeds: vec![1],
            rows: names.iter().map(|n| row(n, "random", false)).collect(),
            personalized: false,
            minilm_tune: None,
            history_boosts: boosts,
            history_term_window: 50,
            rerank: true,
            hybrid: Mode::parse("rrf").expect("mode"),
            resamples: 10,
            rounds: 10,
            seed: 1,
            runs_dir: dir.path().to_path_buf(),
        };
        let inputs = Inputs {
            ds: Arc::clone(&ds),
            splits: vec!["event".into()],
            truth: None,
            command: String::new(),
            quick: true,
            absent: BTreeMap::new(),
            minilm: None,
        };
        let err = experiment::run(inputs, &cfg, &mut |_| {}).expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
        assert!(!dir.path().join("event").exists(), "something was trained");
    }
}
