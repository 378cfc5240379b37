//! Whole training runs on a small synthetic world: determinism, thread independence, resume,
//! the training log, and refusal of bad checkpoints.

use std::path::Path;

use aisle_core::synth;
use aisle_core::Dataset;
use aisle_model::TwoTower;
use aisle_train::optim::SparseKind;
use aisle_train::run::{RunOptions, BEST_FILE, CHECKPOINT_FILE, LOG_FILE, MODEL_FILE};
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{run, Keep, SamplerSpec, Silent, TrainConfig, TrainError, Trainer};

fn world() -> Dataset {
    synth::small_dataset(600, 60, 600, 5).expect("world")
}

fn config(sampler: &str, steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig {
        sampler: SamplerSpec::parse(sampler).expect("sampler"),
        negatives: 3,
        batch_size: 32,
        steps,
        log_every: 5,
        eval_every: 10,
        eval_queries: 200,
        ..TrainConfig::default()
    };
    cfg.model.featurizer.buckets_log2 = 14;
    cfg.model.tower.dim = 16;
    cfg
}

fn train_steps(cfg: &TrainConfig, ds: &Dataset) -> TwoTower {
    let split = ds.default_split().expect("split");
    let mut t = Trainer::new(cfg.clone(), ds, split).expect("trainer");
    for _ in 0..cfg.steps {
        t.train_step().expect("step");
    }
    t.model.towers
}

fn run_in(dir: &Path, cfg: TrainConfig, ds: &Dataset, resume: bool) -> aisle_train::Result<()> {
    let split = ds.default_split().expect("split");
    let opts = RunOptions {
        out_dir: dir.to_path_buf(),
        resume: resume.then(|| dir.join(CHECKPOINT_FILE)),
    };
    run(cfg, ds, split, &opts, &mut Silent).map(|_| ())
}

fn load_towers(path: &Path) -> TwoTower {
    aisle_model::artifact::load(path).expect("model").0.towers
}

#[test]
fn same_seed_same_model_and_another_seed_another() {
    let ds = world();
    for sampler in ["taxonomy", "mix:0.5*taxonomy+0.5*random", "in-batch"] {
        let cfg = config(sampler, 12);
        let a = train_steps(&cfg, &ds);
        let b = train_steps(&cfg, &ds);
        assert!(a == b, "{sampler}: two runs with one seed differ");
        let mut other = cfg.clone();
        other.seed = 7;
        assert!(
            train_steps(&other, &ds) != a,
            "{sampler}: the seed changes nothing"
        );
    }
}

#[test]
fn thread_count_does_not_change_the_model() {
    let ds = world();
    let cfg = config("ance:refresh=5,top=20", 12);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    };
    let one = pool(1).install(|| train_steps(&cfg, &ds));
    let three = pool(3).install(|| train_steps(&cfg, &ds));
    assert!(one == three);
}

#[test]
fn resumed_run_ends_with_the_uninterrupted_model() {
    let ds = world();
    for (sampler, optimizer, personalized) in [
        ("taxonomy", SparseKind::RowAdagrad, false),
        ("ance:refresh=10,top=20", SparseKind::Adam, false),
        ("taxonomy", SparseKind::RowAdagrad, true),
    ] {
        let root = tempfile::tempdir().expect("tmp");
        let (whole, parts) = (root.path().join("whole"), root.path().join("parts"));
        let mut cfg = config(sampler, 40);
        cfg.optim.sparse = optimizer;
        if personalized {
            cfg.personalize = Some(PersonalizeConfig {
                history: 8,
                refresh: 10,
                ..PersonalizeConfig::default()
            });
        }
        cfg.checkpoint_every = 20;
        run_in(&whole, cfg.clone(), &ds, false).expect("uninterrupted");
        let mut first = cfg.clone();
        first.steps = 20;
        run_in(&parts, first, &ds, false).expect("first half");
        // What a run killed after its checkpoint at 20 would have logged on: a step past it,
        // and a line cut short. The resumed run logs step 25 again, so both must go.
        {
            use std::io::Write as _;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(parts.join(LOG_FILE))
                .expect("log");
            write!(
                log,
                "{{\"event\":\"step\",\"step\":25,\"loss\":9.9}}\n{{\"event\":\"st"
            )
            .expect("append");
        }
        run_in(&parts, cfg, &ds, true).expect("resumed");
        assert!(
            load_towers(&whole.join(MODEL_FILE)) == load_towers(&parts.join(MODEL_FILE)),
            "{sampler}: resumed model differs"
        );
        let personal = |dir: &Path| {
            aisle_model::artifact::load(&dir.join(MODEL_FILE))
                .expect("model")
                .0
                .personal
        };
        assert_eq!(personal(&whole), personal(&parts));
        assert_eq!(personal(&whole).is_some(), personalized);
        // The resumed log continues the first one: one start line per part, steps 5..=40.
        let log = std::fs::read_to_string(parts.join(LOG_FILE)).expect("log");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let starts = lines.iter().filter(|l| l["event"] == "start").count();
        assert_eq!(starts, 2);
        let steps: Vec<u64> = lines
            .iter()
            .filter(|l| l["event"] == "step")
            .map(|l| l["step"].as_u64().expect("step"))
            .collect();
        assert_eq!(steps, (1..=8).map(|i| i * 5).collect::<Vec<_>>());
    }
}

#[test]
fn the_log_records_loss_timing_and_rising_validation_recall() {
    let ds = world();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config("taxonomy", 60);
    let split = ds.default_split().expect("split");
    let opts = RunOptions {
        out_dir: dir.path().to_path_buf(),
        resume: None,
    };
    let summary = run(cfg, &ds, split, &opts, &mut Silent).expect("run");
    let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).expect("log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["event"], "start");
    assert_eq!(lines.last().expect("end")["event"], "end");
    let step = lines
        .iter()
        .find(|l| l["event"] == "step")
        .expect("a step line");
    for field in [
        "loss",
        "pairs_per_s",
        "sample_ms",
        "forward_ms",
        "backward_ms",
        "refresh_ms",
        "wall_s",
    ] {
        assert!(step[field].is_number(), "step line lacks {field}");
    }
    let evals: Vec<f64> = lines
        .iter()
        .filter(|l| l["event"] == "eval")
        .map(|l| l["recall_at_10"].as_f64().expect("recall"))
        .collect();
    assert_eq!(evals.len(), 7, "steps 0, 10, ..., 60");
    assert!(
        evals[6] > evals[0] + 0.02,
        "validation Recall@10 did not rise: {evals:?}"
    );
    assert_eq!(summary.final_recall_at_10, Some(evals[6]));
    assert!(summary.pairs_per_s > 0.0);
    // The model file loads and carries how it was made.
    let (_, meta) = aisle_model::artifact::load_trained(&summary.model).expect("model");
    assert_eq!(meta.steps, 60);
    assert_eq!(meta.dataset, ds.name);
    assert_eq!(meta.dataset_digest, ds.digest());
    assert_eq!(meta.meta_version, aisle_model::META_VERSION);
}

#[test]
fn corrupt_or_mismatched_checkpoints_are_refused() {
    let ds = world();
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config("taxonomy", 10);
    cfg.checkpoint_every = 10;
    run_in(dir.path(), cfg.clone(), &ds, false).expect("run");
    let ckpt = dir.path().join(CHECKPOINT_FILE);

    let mut other = cfg.clone();
    other.steps = 20;
    other.negatives = 5;
    match run_in(dir.path(), other, &ds, true) {
        Err(TrainError::Resume { why, .. }) => assert!(why.contains("configuration"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    let mut bytes = std::fs::read(&ckpt).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5A;
    std::fs::write(&ckpt, &bytes).expect("write");
    let mut more = cfg;
    more.steps = 20;
    match run_in(dir.path(), more, &ds, true) {
        Err(TrainError::Resume { why, .. }) => assert!(why.contains("checksum"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_personalized_tower_learns_deterministically() {
    let ds = world();
    let split = ds.default_split().expect("split");
    let mut cfg = config("taxonomy", 60);
    cfg.personalize = Some(PersonalizeConfig {
        history: 10,
        refresh: 20,
        ..PersonalizeConfig::default()
    });
    let mut t = Trainer::new(cfg.clone(), &ds, split).expect("trainer");
    let before = t.model.personal.clone().expect("a personalizer");
    for _ in 0..cfg.steps {
        t.train_step().expect("step");
    }
    let after = t.model.personal.clone().expect("a personalizer");
    assert_ne!(before, after, "the personalizer's parameters never moved");
    // Same seed, same personalized model, whatever the thread count.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool")
        .install(|| {
            let mut t = Trainer::new(cfg.clone(), &ds, split).expect("trainer");
            for _ in 0..cfg.steps {
                t.train_step().expect("step");
            }
            (t.model.towers, t.model.personal)
        });
    assert!(one.0 == t.model.towers && one.1 == t.model.personal);
}

/// Customers without any feature (no segment, no column) leave the personalized tower
/// history-only, bit for bit: the same towers and personalizer with the features on or off, and
/// no feature table in the file. With features, the table trains and the towers differ.
#[test]
fn without_customer_features_the_tower_is_history_only_bit_for_bit() {
    let mut ds = world();
    let train = |ds: &Dataset, demographics: bool| {
        let split = ds.default_split().expect("split");
        let mut cfg = config("taxonomy", 30);
        cfg.personalize = Some(PersonalizeConfig {
            history: 10,
            refresh: 10,
            demographics,
            ..PersonalizeConfig::default()
        });
        let mut t = Trainer::new(cfg.clone(), ds, split).expect("trainer");
        for _ in 0..cfg.steps {
            t.train_step().expect("step");
        }
        t.model
    };
    // The synthetic customers have a segment, an age band and a region.
    let with = train(&ds, true);
    let table = with
        .personal
        .as_ref()
        .and_then(|p| p.demographics.as_ref())
        .expect("a feature table");
    assert!(
        table.table.iter().any(|&x| x != 0.0),
        "the table never moved"
    );
    assert_ne!(with.towers, train(&ds, false).towers);

    let mut bare = aisle_core::Users::new();
    for (_, u) in ds.users.iter() {
        bare.push(aisle_core::User {
            id: u.id.clone(),
            segment: None,
            demographics: Vec::new(),
        })
        .expect("unique ids");
    }
    ds.users = bare;
    let on = train(&ds, true);
    let off = train(&ds, false);
    assert!(on
        .personal
        .as_ref()
        .is_some_and(|p| p.demographics.is_none()));
    assert!(on.towers == off.towers, "towers differ");
    assert_eq!(on.personal, off.personal);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.aisle");
    aisle_model::artifact::save(&on, &serde_json::json!({}), &path).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    assert!(!bytes.windows(14).any(|w| w == b"\"demographics\""));
}

/// `keep = best` saves the model of the best validation measurement (the earliest of equals),
/// `keep = last` the last; `patience` stops a run that has not beaten its best for that many
/// measurements, and the log says which step was kept.
#[test]
fn keep_best_saves_the_peak_and_patience_stops_after_it() {
    let ds = world();
    let split = ds.default_split().expect("split");
    let steps = 200;
    let mut cfg = config("taxonomy", steps);
    cfg.eval_every = 10;
    let root = tempfile::tempdir().expect("tmp");
    let trained = |cfg: &TrainConfig, name: &str| {
        let opts = RunOptions {
            out_dir: root.path().join(name),
            resume: None,
        };
        run(cfg.clone(), &ds, split, &opts, &mut Silent).expect("run")
    };
    let mut last_cfg = cfg.clone();
    last_cfg.keep = Keep::Last;
    let last = trained(&last_cfg, "last");
    let (peak_step, peak) =
        last.recall_curve.iter().fold(
            (0, f64::MIN),
            |b, &(s, _, r)| if r > b.1 { (s, r) } else { b },
        );
    println!(
        "curve {:?}; peak {peak} at step {peak_step}",
        last.recall_curve
    );
    assert!(
        peak_step < steps && peak > last.final_recall_at_10.expect("measured"),
        "this world's validation curve no longer peaks before the end: the test shows nothing"
    );
    assert_eq!(last.kept_step, steps);
    assert!(load_towers(&last.model) == train_steps(&last_cfg, &ds));

    let best = trained(&cfg, "best");
    assert_eq!(
        (best.kept_step, best.kept_recall_at_10),
        (peak_step, Some(peak))
    );
    let mut at_peak = cfg.clone();
    at_peak.steps = peak_step;
    assert!(
        load_towers(&best.model) == train_steps(&at_peak, &ds),
        "not the peak's model"
    );
    let (_, meta) = aisle_model::artifact::load_trained(&best.model).expect("model");
    assert_eq!(meta.kept.step, peak_step);
    assert_eq!(meta.validation_recall_at_10, Some(peak));
    let log = std::fs::read_to_string(best.log.clone()).expect("log");
    assert!(
        log.contains(&format!("\"kept\":\"best\",\"kept_step\":{peak_step}")),
        "{log}"
    );
    assert!(
        !root.path().join("best").join(BEST_FILE).exists(),
        "best.aisle left behind"
    );

    // Patience 3: the first measurement 3 measurements (30 steps) past the running best.
    let mut running = (0, f64::MIN);
    let mut stop = None;
    for &(s, _, r) in &last.recall_curve {
        if r > running.1 {
            running = (s, r);
        } else if s - running.0 >= 30 {
            stop = Some((s, running.0));
            break;
        }
    }
    let (stop_step, best_then) = stop.expect("the curve has a 30-step plateau");
    let mut patient = cfg.clone();
    patient.patience = 3;
    let stopped = trained(&patient, "patience");
    assert!(stopped.stopped_early);
    assert_eq!((stopped.steps, stopped.kept_step), (stop_step, best_then));
    let mut at_best = cfg.clone();
    at_best.steps = best_then;
    assert!(load_towers(&stopped.model) == train_steps(&at_best, &ds));
}
