//! The paper's evaluation in one run: every baseline and every negative sampler trained under the
//! same budget and seeds, evaluated on the same test queries, with what each training cost.
//!
//! For each protocol (split) of a dataset, [`run`]:
//!
//! 1. trains one two-tower model per dense row and seed, all with the same steps, batch size,
//!    negatives per pair and validation schedule ([`ExperimentConfig`]);
//! 2. picks, on *validation* Recall@10 (never on test), the best TB-HNS variant, which also
//!    trains the personalized row, and the best dense row, which the hybrid row fuses with BM25;
//! 3. evaluates baselines and models on the test queries ([`evaluate_groups`]: a model row is the
//!    mean over its seeds), with segments and replayed outcomes;
//! 4. keeps each run's convergence curve and time split, and the seconds each row took to reach
//!    ANCE's best validation Recall@10.
//!
//! The result ([`Experiment`]) serialises to `results.json` (schema [`SCHEMA`], documented in
//! docs/experiments.md); [`crate::report`] writes it out with its plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use aisle_core::{Dataset, Split};
use aisle_search::Mode;
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{RunOptions, RunSummary, SamplerSpec, Silent, TrainConfig};

use crate::error::{EvalError, Result};
use crate::evaluate::{evaluate_groups, EvalConfig, Group, Member, Part, Report};
use crate::online::SimulatedAb;
use crate::rankers::{
    Bm25Ranker, DenseOptions, DenseRanker, HistoryRule, MemorisationRanker, PopularityRanker,
    Ranker, RepurchaseRanker,
};

/// Version of the `results.json` layout.
pub const SCHEMA: &str = "aisle.experiment/1";

/// Names of the baseline rows.
pub const BM25: &str = "BM25";
pub const POPULARITY: &str = "popularity";
pub const MEMORISATION: &str = "query memorisation";
pub const REPURCHASE: &str = "per-user re-purchase";
/// Start of the fine-tuned MiniLM rows' names.
pub const MINILM_TUNED: &str = "MiniLM fine-tuned,";
/// TB-HNS mix drawing its negatives among every product, bought or not (the paper's rule).
pub const CATALOG_POOL_ROW: &str = "TB-HNS mix, catalog pool";
/// Appended to the personalized row's name for its tower trained without customer features.
pub const HISTORY_ONLY: &str = ", history only";
/// Appended to the re-ranking row's name for its heads reading training interactions only.
pub const WITHOUT_VALIDATION: &str = ", histories without validation";

/// Test queries whose customer has a validation interaction before the query's cut-off: those
/// whose history the one history rule ([`HistoryRule::BeforeCutOff`]) lengthens.
pub fn validation_precedes_test(ds: &Dataset, split: &Split) -> usize {
    let mut first: std::collections::HashMap<aisle_core::UserId, i64> = Default::default();
    for q in &split.validation {
        for &i in &q.events {
            let e = &ds.interactions[i as usize];
            let t = first.entry(e.user).or_insert(e.time);
            *t = (*t).min(e.time);
        }
    }
    split
        .test
        .iter()
        .filter(|q| {
            q.user
                .and_then(|u| first.get(&u))
                .is_some_and(|&t| t < q.before)
        })
        .count()
}

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Needs no training: BM25, popularity, memorisation, re-purchase.
    Baseline,
    /// A bi-encoder trained with one negative sampler.
    Dense,
    /// The personalized query tower (with the best TB-HNS sampler).
    Personalized,
    /// A trained model fused with BM25.
    Hybrid,
    /// A pretrained model used as it is (MiniLM).
    ZeroShot,
    /// A pretrained transformer fine-tuned on the training pairs (MiniLM with a sampler).
    FineTuned,
}

/// One dense row to train: a name and a negative sampler.
#[derive(Clone, Debug)]
pub struct DenseRow {
    pub name: String,
    pub sampler: SamplerSpec,
    /// A TB-HNS variant: competes for "best TB-HNS", which trains the personalized row.
    pub taxonomy: bool,
}

/// Whether a sampler draws any TB-HNS negatives (alone, in a mixture or a curriculum).
pub fn uses_taxonomy(spec: &SamplerSpec) -> bool {
    match spec {
        SamplerSpec::Taxonomy(_) => true,
        SamplerSpec::Mix { parts } => parts.iter().any(|(w, s)| *w > 0.0 && uses_taxonomy(s)),
        SamplerSpec::Curriculum { from, to, .. } => uses_taxonomy(from) || uses_taxonomy(to),
        _ => false,
    }
}

impl DenseRow {
    fn new(name: &str, sampler: &str, taxonomy: bool) -> Result<DenseRow> {
        Ok(DenseRow {
            name: name.to_owned(),
            sampler: SamplerSpec::parse(sampler)?,
            taxonomy,
        })
    }

    /// The paper's rows: in-batch only, random, BM25 and ANCE negatives, and TB-HNS with each
    /// pool alone (same leaf, siblings, cousins) and mixed, drawn among products with training
    /// interactions (aisle's default), and the mix drawn from every product (the paper's rule).
    pub fn standard() -> Result<Vec<DenseRow>> {
        Ok(vec![
            DenseRow::new("in-batch negatives", "in-batch", false)?,
            DenseRow::new("random negatives", "random", false)?,
            DenseRow::new("BM25 negatives", "bm25", false)?,
            DenseRow::new("ANCE", "ance", false)?,
            DenseRow::new(
                "TB-HNS same leaf",
                "taxonomy:leaf=1,sibling=0,cousin=0",
                true,
            )?,
            DenseRow::new(
                "TB-HNS siblings",
                "taxonomy:leaf=0,sibling=1,cousin=0",
                true,
            )?,
            DenseRow::new("TB-HNS cousins", "taxonomy:leaf=0,sibling=0,cousin=1", true)?,
            DenseRow::new("TB-HNS mix", "taxonomy:leaf=1,sibling=1,cousin=0.5", true)?,
            DenseRow::new(
                CATALOG_POOL_ROW,
                "taxonomy:leaf=1,sibling=1,cousin=0.5,pool=catalog",
                true,
            )?,
            DenseRow::new("TB-HNS mix + random", "mix:0.5*taxonomy+0.5*random", true)?,
        ])
    }
}

/// How an experiment trains and evaluates.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentConfig {
    /// The training settings every dense row shares (its sampler, seed and personalization are
    /// set per row).
    pub train: TrainConfig,
    /// One training run per row and seed.
    pub seeds: Vec<u64>,
    #[serde(skip)]
    pub rows: Vec<DenseRow>,
    /// Train the personalized row when the test queries name customers.
    pub personalized: bool,
    /// Fine-tune MiniLM (when its files are given) on the first seed, twice: with in-batch
    /// negatives only (sentence-transformers' usual recipe) and with the best TB-HNS variant.
    /// `None`: no such rows. Its sampler is set per row.
    pub minilm_tune: Option<aisle_train::transformer::TuneConfig>,
    /// Candidate `beta`s of the history-term row, one chosen per protocol on validation
    /// Recall@10 (empty: no such row; a choice of 0 leaves the row out).
    pub history_boosts: Vec<f32>,
    /// Earlier interactions the history-term row reads (the tower trains on fewer; the term is
    /// best with all of them, see docs/evaluation.md).
    pub history_term_window: usize,
    /// Add the personalized row's models with the learned re-ranking head, fitted per seed on
    /// the validation queries ([`crate::rerank`]).
    pub rerank: bool,
    /// How the hybrid row fuses the best dense model with BM25.
    #[serde(serialize_with = "display")]
    pub hybrid: Mode,
    pub resamples: usize,
    /// Sign flips of the paired test.
    pub rounds: usize,
    /// Seed of the splits, the bootstrap and the paired test.
    pub seed: u64,
    /// Where the training runs are written (one folder per protocol, row and seed).
    #[serde(skip)]
    pub runs_dir: PathBuf,
}

fn display<S: serde::Serializer>(m: &Mode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(m)
}

/// One training run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub row: String,
    pub seed: u64,
    pub sampler: String,
    pub steps: u64,
    /// Training seconds (sampling, forward, backward, refresh), validation excluded.
    pub train_s: f64,
    pub pairs_per_s: f64,
    pub sample_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    /// ANCE re-indexing, or the personalized tower's catalog re-encodings.
    pub refresh_s: f64,
    /// Validation Recall@10 at each measurement.
    pub curve: Vec<CurvePoint>,
    pub final_validation_recall_at_10: Option<f64>,
    pub model: PathBuf,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    /// Training seconds up to this step.
    pub train_s: f64,
    pub recall_at_10: f64,
}

impl Run {
    fn of(row: &str, seed: u64, s: &RunSummary) -> Run {
        Run {
            row: row.to_owned(),
            seed,
            sampler: s.sampler.clone(),
            steps: s.steps,
            train_s: s.train_wall_s,
            pairs_per_s: s.pairs_per_s,
            sample_s: s.sample_s,
            forward_s: s.forward_s,
            backward_s: s.backward_s,
            refresh_s: s.refresh_s,
            curve: s
                .recall_curve
                .iter()
                .map(|&(step, train_s, recall_at_10)| CurvePoint {
                    step,
                    train_s,
                    recall_at_10,
                })
                .collect(),
            final_validation_recall_at_10: s.final_recall_at_10,
            model: s.model.clone(),
        }
    }
}

/// What one row of a protocol is, beside its metrics (in [`Report::rows`], same name).
#[derive(Clone, Debug, Serialize)]
pub struct RowInfo {
    pub name: String,
    pub kind: RowKind,
    /// The sampler spec (dense and personalized rows).
    pub sampler: Option<String>,
    /// Mean over seeds of the final validation Recall@10 (trained rows).
    pub validation_recall_at_10: Option<f64>,
    /// Mean over seeds of the training seconds, and the time split.
    pub train_s: Option<f64>,
    pub cost: Option<Cost>,
}

/// Mean training seconds by part, over a row's seeds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cost {
    pub sample_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub refresh_s: f64,
}

/// When a row's seed-averaged validation curve first reached a target.
#[derive(Clone, Debug, Serialize)]
pub struct Reach {
    pub row: String,
    pub target: f64,
    /// `None`: never within the budget.
    pub step: Option<u64>,
    pub train_s: Option<f64>,
}

/// One protocol (split) of the experiment.
#[derive(Clone, Debug, Serialize)]
pub struct Protocol {
    pub split: String,
    pub description: String,
    pub rows: Vec<RowInfo>,
    /// Test-set metrics of every row (baselines, models, hybrid).
    pub report: Report,
    pub runs: Vec<Run>,
    /// Chosen on validation Recall@10.
    pub best_taxonomy: Option<String>,
    pub best_dense: Option<String>,
    /// Seconds each trained row took to reach ANCE's best (seed-averaged) validation Recall@10.
    pub reach_ance: Vec<Reach>,
    /// The simulated A/B test, on the synthetic world only.
    pub simulated_ab: Option<SimulatedAb>,
    /// How the history term's `beta` was chosen (with a personalized row and candidates).
    pub history_choice: Option<HistoryChoice>,
    /// The learned re-ranking head of the personalized row's models, fitted per seed.
    pub rerank: Option<RerankChoice>,
    /// BM25's field boosts, chosen on validation; the BM25 row and hybrid fusion use them.
    pub bm25: crate::rankers::Bm25Choice,
    /// The fine-tuned MiniLM rows' runs.
    pub fine_tuned: Vec<FineTuned>,
}

/// One fine-tuned transformer row.
#[derive(Clone, Debug, Serialize)]
pub struct FineTuned {
    pub row: String,
    pub sampler: String,
    pub seed: u64,
    pub batch_size: usize,
    pub negatives: usize,
    pub lr: f64,
    pub summary: aisle_train::transformer::TuneSummary,
}

/// The history term's `beta`, chosen on validation Recall@10 of the personalized row's models
/// (the mean over seeds) reading `window` earlier interactions.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryChoice {
    pub window: usize,
    /// `(beta, validation Recall@10)` of every candidate, in the order tried.
    pub candidates: Vec<(f32, f64)>,
    /// The best candidate (the smallest among ties); 0 means no history-term row.
    pub chosen: f32,
    pub validation_queries: usize,
}

/// The re-ranking head fitted on the validation queries for each seed's personalized model.
#[derive(Clone, Debug, Serialize)]
pub struct RerankChoice {
    /// The row that ranks with it.
    pub row: String,
    /// `(seed, fit)`, in the order of the personalized row's runs.
    pub fits: Vec<(u64, crate::rerank::HeadFit)>,
    /// Seconds to build the signals and fit every seed's head (with the held-out variants).
    pub fit_s: f64,
}

impl RerankChoice {
    /// The held-out validation Recall@10 of each variant, the mean over seeds.
    pub fn held_out(&self) -> Vec<(String, f64)> {
        let n = self.fits.len().max(1) as f64;
        let mut out: Vec<(String, f64)> = Vec::new();
        for (_, f) in &self.fits {
            for (i, (name, r)) in f.held_out.iter().enumerate() {
                match out.get_mut(i) {
                    Some(o) => o.1 += r / n,
                    None => out.push((name.clone(), r / n)),
                }
            }
        }
        out
    }

    /// Each feature's weight, the mean over seeds.
    pub fn mean_weights(&self) -> Vec<(&'static str, f32)> {
        let n = self.fits.len().max(1) as f32;
        let mut w = [0f32; aisle_search::rerank::FEATURES];
        for (_, f) in &self.fits {
            for (m, x) in w.iter_mut().zip(f.head.weights) {
                *m += x / n;
            }
        }
        aisle_search::rerank::Reranker { weights: w }.named()
    }
}

/// Everything an experiment measured (`results.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Experiment {
    pub schema: &'static str,
    pub dataset: String,
    /// The command line that made it.
    pub command: String,
    pub aisle_version: &'static str,
    /// Unix seconds at the start.
    pub started: u64,
    pub wall_s: f64,
    pub threads: usize,
    pub quick: bool,
    pub config: ExperimentConfig,
    pub protocols: Vec<Protocol>,
    /// Rows that were not run, with the reason.
    pub absent: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

/// What the caller supplies beyond the configuration.
pub struct Inputs<'a> {
    pub ds: Arc<Dataset>,
    /// Protocols to run, by split name.
    pub splits: Vec<String>,
    /// The synthetic world's truth, for the simulated A/B test.
    pub truth: Option<&'a aisle_core::synth::GroundTruth>,
    pub command: String,
    pub quick: bool,
    /// Rows that cannot be run here, with the reason (e.g. MiniLM without its files).
    pub absent: BTreeMap<String, String>,
    /// The all-MiniLM-L6-v2 folder, for the zero-shot row.
    pub minilm: Option<PathBuf>,
}

/// Runs the experiment. `progress` receives one line per step of the work.
pub fn run(
    inputs: Inputs,
    cfg: &ExperimentConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Experiment> {
    let start = Instant::now();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if cfg.seeds.is_empty() {
        return Err(EvalError::Empty(
            "an experiment needs at least one seed".into(),
        ));
    }
    if let Some(b) = cfg
        .history_boosts
        .iter()
        .find(|b| !b.is_finite() || **b < 0.0)
    {
        return Err(EvalError::Ranker(format!(
            "history-term candidate {b} is not a finite number >= 0"
        )));
    }
    let mut slugs: BTreeMap<String, &str> = [BM25, POPULARITY, MEMORISATION, REPURCHASE]
        .iter()
        .map(|n| (slug(n), *n))
        .collect();
    for row in &cfg.rows {
        if let Some(other) = slugs.insert(slug(&row.name), &row.name) {
            return Err(EvalError::Ranker(format!(
                "row names `{}` and `{other}` clash (they name the same row or folder)",
                row.name
            )));
        }
    }
    let ds = &inputs.ds;
    // The zero-shot model reads the catalog once for every protocol.
    let minilm = match &inputs.minilm {
        Some(dir) => {
            let r = crate::zero_shot::MiniLmRanker::new(ds, dir)?;
            progress(&format!(
                "encoded {} products with all-MiniLM-L6-v2 in {:.1} s",
                ds.catalog.len(),
                r.encode_s
            ));
            Some(r)
        }
        None => None,
    };
    let mut protocols = Vec::new();
    for name in &inputs.splits {
        let split = ds.split(name).ok_or_else(|| {
            EvalError::Empty(format!("dataset `{}` has no split `{name}`", ds.name))
        })?;
        protocols.push(protocol(
            ds,
            split,
            cfg,
            inputs.truth,
            minilm.as_ref().zip(inputs.minilm.as_deref()),
            progress,
        )?);
    }
    let mut notes = vec![format!(
        "every dense row trained for {} steps of {} pairs, {} sampled negatives per pair (0 for in-batch), seeds {:?}",
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.train.negatives,
        cfg.seeds
    )];
    notes.extend(ds.notes.iter().cloned());
    Ok(Experiment {
        schema: SCHEMA,
        dataset: ds.name.clone(),
        command: inputs.command,
        aisle_version: env!("CARGO_PKG_VERSION"),
        started,
        wall_s: start.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
        quick: inputs.quick,
        config: cfg.clone(),
        protocols,
        absent: inputs.absent,
        notes,
    })
}

pub use aisle_core::io::slug;

/// A row's trained models, one per seed.
struct Trained {
    name: String,
    kind: RowKind,
    sampler: SamplerSpec,
    runs: Vec<Run>,
    history: usize,
}

impl Trained {
    fn validation(&self) -> Option<f64> {
        mean(
            self.runs
                .iter()
                .filter_map(|r| r.final_validation_recall_at_10),
        )
    }

    fn info(&self) -> RowInfo {
        let n = self.runs.len().max(1) as f64;
        let sum = |f: fn(&Run) -> f64| self.runs.iter().map(f).sum::<f64>() / n;
        RowInfo {
            name: self.name.clone(),
            kind: self.kind,
            sampler: Some(self.sampler.to_string()),
            validation_recall_at_10: self.validation(),
            train_s: Some(sum(|r| r.train_s)),
            cost: Some(Cost {
                sample_s: sum(|r| r.sample_s),
                forward_s: sum(|r| r.forward_s),
                backward_s: sum(|r| r.backward_s),
                refresh_s: sum(|r| r.refresh_s),
            }),
        }
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A row to train.
struct Job<'a> {
    name: &'a str,
    kind: RowKind,
    sampler: &'a SamplerSpec,
    personalize: Option<PersonalizeConfig>,
}

fn train_row(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    job: Job,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained> {
    let Job {
        name,
        kind,
        sampler,
        personalize,
    } = job;
    let mut runs = Vec::new();
    let history = personalize
        .as_ref()
        .map_or(aisle_model::personal::HISTORY_WINDOW, |p| p.history);
    for &seed in &cfg.seeds {
        let mut train = cfg.train.clone();
        train.sampler = sampler.clone();
        train.seed = seed;
        train.model.tower.seed = seed;
        train.personalize = personalize.clone();
        train.checkpoint_every = 0;
        let out_dir = run_dir(&cfg.runs_dir, &split.name, name, seed);
        let t = Instant::now();
        let summary = aisle_train::run(
            train,
            ds,
            split,
            &RunOptions {
                out_dir,
                resume: None,
            },
            &mut Silent,
        )?;
        progress(&format!(
            "  trained {name} (seed {seed}): validation R@10 {}, {:.1} s training, {:.1} s with validation",
            summary
                .final_recall_at_10
                .map_or("-".into(), |r| format!("{r:.4}")),
            summary.train_wall_s,
            t.elapsed().as_secs_f64()
        ));
        runs.push(Run::of(name, seed, &summary));
    }
    Ok(Trained {
        name: name.to_owned(),
        kind,
        sampler: sampler.clone(),
        runs,
        history,
    })
}

/// `DIR/SPLIT/ROW/seed-N`.
pub fn run_dir(dir: &Path, split: &str, row: &str, seed: u64) -> PathBuf {
    dir.join(slug(split))
        .join(slug(row))
        .join(format!("seed-{seed}"))
}

/// The row with the best validation Recall@10 among `rows` (ties: the first).
fn best_of<'a>(rows: impl Iterator<Item = &'a Trained>) -> Option<&'a Trained> {
    let mut best: Option<(&Trained, f64)> = None;
    for r in rows {
        let v = r.validation().unwrap_or(f64::NEG_INFINITY);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((r, v));
        }
    }
    best.map(|b| b.0)
}

/// The seed-averaged validation curve of a row: (step, mean training seconds, mean recall) at
/// the steps every seed measured.
pub fn mean_curve(runs: &[&Run]) -> Vec<CurvePoint> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .curve
        .iter()
        .filter_map(|p| {
            let at: Vec<&CurvePoint> = runs
                .iter()
                .filter_map(|r| r.curve.iter().find(|c| c.step == p.step))
                .collect();
            (at.len() == runs.len()).then(|| CurvePoint {
                step: p.step,
                train_s: at.iter().map(|c| c.train_s).sum::<f64>() / at.len() as f64,
                recall_at_10: at.iter().map(|c| c.recall_at_10).sum::<f64>() / at.len() as f64,
            })
        })
        .collect()
}

fn protocol(
    ds: &Arc<Dataset>,
    split: &Split,
    cfg: &ExperimentConfig,
    truth: Option<&aisle_core::synth::GroundTruth>,
    minilm: Option<(&crate::zero_shot::MiniLmRanker, &Path)>,
    progress: &mut dyn FnMut(&str),
) -> Result<Protocol> {
    let (minilm, minilm_dir) = match minilm {
        Some((m, dir)) => (Some(m), Some(dir)),
        None => (None, None),
    };
    progress(&format!(
        "protocol `{}`: {} training interactions, {} validation and {} test queries",
        split.name,
        split.train.len(),
        split.validation.len(),
        split.test.len()
    ));
    // 0. The strongest BM25 on this protocol's validation queries: the BM25 row, BM25 negatives
    // and hybrid fusion all use its field boosts.
    let (bm25, bm25_choice) = Bm25Ranker::tuned(ds, split)?;
    progress(&format!("  {}", bm25_choice.note()));
    let mut tuned_cfg = cfg.clone();
    tuned_cfg.train.bm25 = bm25_choice.chosen;
    if let Some(t) = tuned_cfg.minilm_tune.as_mut() {
        t.bm25 = bm25_choice.chosen;
    }
    let cfg = &tuned_cfg;
    // 1. Dense rows, every seed.
    let mut trained: Vec<Trained> = Vec::new();
    for row in &cfg.rows {
        let job = Job {
            name: &row.name,
            kind: RowKind::Dense,
            sampler: &row.sampler,
            personalize: None,
        };
        trained.push(train_row(ds, split, cfg, job, progress)?);
    }
    // 2. Choices on validation.
    let best_taxonomy = best_of(
        trained
            .iter()
            .filter(|t| cfg.rows.iter().any(|r| r.name == t.name && r.taxonomy)),
    )
    .map(|t| (t.name.clone(), t.sampler.clone()));
    let best_dense = best_of(trained.iter()).map(|t| t.name.clone());
    let with_users = split
        .test
        .iter()
        .chain(&split.validation)
        .any(|q| q.user.is_some());
    let mut personalized_name = None;
    if let (true, true, Some((tax_name, sampler))) =
        (cfg.personalized, with_users, best_taxonomy.as_ref())
    {
        let name = format!("{tax_name} + personalization");
        let p = cfg.train.personalize.clone().unwrap_or_default();
        let job = Job {
            name: &name,
            kind: RowKind::Personalized,
            sampler,
            personalize: Some(p.clone()),
        };
        trained.push(train_row(ds, split, cfg, job, progress)?);
        personalized_name = Some(name.clone());
        // Where customers have features (segment, age band), the same tower reading their
        // history only: what the features add, on cold-start customers above all.
        if p.demographics && aisle_model::demographics::Demographics::any(&ds.users) {
            let name = format!("{name}{HISTORY_ONLY}");
            let job = Job {
                name: &name,
                kind: RowKind::Personalized,
                sampler,
                personalize: Some(PersonalizeConfig {
                    demographics: false,
                    ..p
                }),
            };
            trained.push(train_row(ds, split, cfg, job, progress)?);
        }
    }

    // MiniLM fine-tuned, in-batch and with the best TB-HNS variant (one seed: it is slow on CPU).
    let mut fine_tuned: Vec<FineTuned> = Vec::new();
    if let (Some(tune), Some(dir)) = (&cfg.minilm_tune, minilm_dir) {
        let mut jobs = vec![(format!("{MINILM_TUNED} in-batch"), SamplerSpec::InBatch)];
        match &best_taxonomy {
            // A mixture with ANCE re-indexes with the n-gram model: not for a transformer.
            Some((tax_name, sampler)) if sampler.ance_refresh().is_some() => progress(&format!(
                "  not fine-tuning MiniLM with {tax_name}: its sampler includes ANCE"
            )),
            Some((tax_name, sampler)) => {
                jobs.push((format!("{MINILM_TUNED} {tax_name}"), sampler.clone()))
            }
            None => {}
        }
        let seed = cfg.seeds.first().copied().unwrap_or(42);
        for (name, sampler) in jobs {
            let tc = aisle_train::transformer::TuneConfig {
                sampler,
                seed,
                ..tune.clone()
            };
            let out = run_dir(&cfg.runs_dir, &split.name, &name, seed).join("model");
            progress(&format!(
                "  fine-tuning {name}: {} steps of {} pairs, {} negatives per pair",
                tc.steps, tc.batch_size, tc.negatives
            ));
            let summary =
                aisle_train::transformer::fine_tune(dir, ds, split, &tc, &out, &mut |l| {
                    progress(l)
                })?;
            progress(&format!(
                "  fine-tuned {name} in {:.1} s ({:.1} pairs/s)",
                summary.train_s, summary.pairs_per_s
            ));
            let negatives = if tc.sampler.is_in_batch() {
                0
            } else {
                tc.negatives
            };
            fine_tuned.push(FineTuned {
                row: name,
                sampler: tc.sampler.to_string(),
                seed,
                batch_size: tc.batch_size,
                negatives,
                lr: tc.lr,
                summary,
            });
        }
    }

    // 3. Rankers.
    let pop = PopularityRanker::new(ds, split);
    let memo = MemorisationRanker::new(ds, split);
    let repurchase = with_users.then(|| RepurchaseRanker::new(ds, split));
    // Dense rows: (row name, trained row, search options). Their rankers are built one at a time
    // when evaluated (each holds a model of hundreds of MB) and dropped after.
    let mut dense: Vec<(String, &Trained, DenseOptions)> = Vec::new();
    let plain = |t: &Trained| DenseOptions {
        history: t.history,
        history_rule: Default::default(),
        mode: Mode::Dense,
        history_boost: 0.0,
        bm25: bm25_choice.chosen,
    };
    for t in &trained {
        dense.push((t.name.clone(), t, plain(t)));
    }
    let mut hybrid_name = None;
    if let Some(best) = best_dense
        .as_ref()
        .and_then(|b| trained.iter().find(|t| &t.name == b))
    {
        let name = format!("{} + BM25 ({})", best.name, cfg.hybrid);
        let options = DenseOptions {
            mode: cfg.hybrid,
            ..plain(best)
        };
        dense.push((name.clone(), best, options));
        hybrid_name = Some(name);
    }
    let mut history_name = None;
    let mut history_choice = None;
    let personalized = personalized_name
        .as_ref()
        .and_then(|p| trained.iter().find(|t| &t.name == p));
    if let (Some(t), false) = (personalized, cfg.history_boosts.is_empty()) {
        let t0 = Instant::now();
        let choice = choose_history_boost(ds, split, cfg, t, progress)?;
        progress(&format!(
            "  history term: beta {} chosen on validation Recall@10 ({}) in {:.1} s",
            choice.chosen,
            choice
                .candidates
                .iter()
                .map(|(b, r)| format!("{b}: {r:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            t0.elapsed().as_secs_f64()
        ));
        if choice.chosen > 0.0 {
            let name = format!("{} + history term x{}", t.name, choice.chosen);
            let options = DenseOptions {
                history_boost: choice.chosen,
                history: cfg.history_term_window,
                ..plain(t)
            };
            dense.push((name.clone(), t, options));
            history_name = Some(name);
        }
        history_choice = Some(choice);
    }
    let mut rerank: Option<(RerankChoice, Arc<aisle_search::Signals>)> = None;
    if let (Some(t), true) = (personalized, cfg.rerank) {
        let t0 = Instant::now();
        let signals = Arc::new(crate::rerank::split_signals(ds, split));
        let mut fits = Vec::with_capacity(t.runs.len());
        for run in &t.runs {
            let mut ranker = load_ranker(
                format!("{} (seed {})", t.name, run.seed),
                &run.model,
                ds,
                split,
                &DenseOptions {
                    history: cfg.history_term_window,
                    ..plain(t)
                },
            )?;
            let opts = crate::rerank::HeadFitOptions {
                seed: cfg.seed,
                ..Default::default()
            };
            let fit = crate::rerank::fit_head(
                ds,
                split,
                &mut ranker,
                &signals,
                &opts,
                &mut |l: &str| progress(&format!("  seed {}: {l}", run.seed)),
            )?;
            fits.push((run.seed, fit));
        }
        let choice = RerankChoice {
            row: format!("{} + learned re-ranking", t.name),
            fits,
            fit_s: t0.elapsed().as_secs_f64(),
        };
        progress(&format!(
            "  learned re-ranking: held-out validation Recall@10 {} in {:.1} s",
            choice
                .held_out()
                .iter()
                .map(|(v, r)| format!("{v}: {r:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            choice.fit_s
        ));
        rerank = Some((choice, signals));
    }
    let members = |name: &str, t: &Trained, options: DenseOptions| -> Vec<Member> {
        t.runs
            .iter()
            .map(|r| {
                let row = format!("{name} (seed {})", r.seed);
                let path = r.model.clone();
                let ds = Arc::clone(ds);
                Member::Lazy(Box::new(move || -> Result<Box<dyn Ranker>> {
                    Ok(Box::new(load_ranker(
                        row.clone(),
                        &path,
                        &ds,
                        split,
                        &options,
                    )?))
                }))
            })
            .collect()
    };
    let mut groups: Vec<Group> = vec![
        Group {
            name: BM25.into(),
            members: vec![Member::Ready(&bm25)],
        },
        Group {
            name: POPULARITY.into(),
            members: vec![Member::Ready(&pop)],
        },
        Group {
            name: MEMORISATION.into(),
            members: vec![Member::Ready(&memo)],
        },
    ];
    if let Some(r) = &repurchase {
        groups.push(Group {
            name: REPURCHASE.into(),
            members: vec![Member::Ready(r)],
        });
    }
    if let Some(m) = minilm {
        groups.push(Group {
            name: crate::zero_shot::MINILM.into(),
            members: vec![Member::Ready(m)],
        });
    }
    for f in &fine_tuned {
        let (name, path) = (f.row.clone(), f.summary.model.clone());
        let ds = Arc::clone(ds);
        groups.push(Group {
            name: f.row.clone(),
            members: vec![Member::Lazy(Box::new(
                move || -> Result<Box<dyn Ranker>> {
                    Ok(Box::new(crate::zero_shot::MiniLmRanker::with_name(
                        &ds,
                        &path,
                        name.clone(),
                    )?))
                },
            ))],
        });
    }
    for (name, t, options) in &dense {
        groups.push(Group {
            name: name.clone(),
            members: members(name, t, *options),
        });
    }
    let mut without_validation_name = None;
    if let (Some((choice, signals)), Some(t)) = (&rerank, personalized) {
        // Each seed's model with the head fitted for it, reading histories by `options`.
        let heads = |name: &str, options: DenseOptions| -> Vec<Member> {
            t.runs
                .iter()
                .zip(&choice.fits)
                .map(|(r, (_, fit))| {
                    let row = format!("{name} (seed {})", r.seed);
                    let path = r.model.clone();
                    let ds = Arc::clone(ds);
                    let signals = Arc::clone(signals);
                    let head = fit.head.clone();
                    Member::Lazy(Box::new(move || -> Result<Box<dyn Ranker>> {
                        let mut ranker = load_ranker(row.clone(), &path, &ds, split, &options)?;
                        ranker.set_reranking(Arc::clone(&signals), Some(head.clone()))?;
                        Ok(Box::new(ranker))
                    }))
                })
                .collect()
        };
        let options = DenseOptions {
            history: cfg.history_term_window,
            ..plain(t)
        };
        groups.push(Group {
            name: choice.row.clone(),
            members: heads(&choice.row, options),
        });
        // The same heads reading training interactions only: what the one history rule adds
        // where validation interactions come before test queries (leave-last-order-out).
        if validation_precedes_test(ds, split) > 0 {
            let name = format!("{}{WITHOUT_VALIDATION}", choice.row);
            let options = DenseOptions {
                history_rule: HistoryRule::TrainingOnly,
                ..options
            };
            groups.push(Group {
                members: heads(&name, options),
                name: name.clone(),
            });
            without_validation_name = Some(name);
        }
    }
    let eval_cfg = EvalConfig {
        part: Part::Test,
        resamples: cfg.resamples,
        rounds: cfg.rounds,
        seed: cfg.seed,
        reference: best_taxonomy.as_ref().map(|b| b.0.clone()),
        ..EvalConfig::default()
    };
    let t = Instant::now();
    let report = evaluate_groups(ds, split, &groups, &eval_cfg)?;
    let n_rows = groups.len();
    drop(groups);
    progress(&format!(
        "  built and evaluated {} rows on {} test queries in {:.1} s",
        n_rows,
        report.queries,
        t.elapsed().as_secs_f64()
    ));

    // 4. The simulated A/B test (synthetic world): BM25 against the best dense row and the
    // personalized row.
    let simulated_ab = match truth {
        Some(truth) => {
            let mut arms = vec![crate::online::ArmSpec {
                name: BM25.into(),
                rankers: vec![Member::Ready(&bm25)],
            }];
            for name in [best_dense.as_ref(), personalized_name.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some((_, t, options)) = dense.iter().find(|(n, _, _)| n == name) {
                    arms.push(crate::online::ArmSpec {
                        name: name.clone(),
                        rankers: members(name, t, *options),
                    });
                }
            }
            let t = Instant::now();
            let ab = crate::online::simulate_ab(
                ds,
                split,
                truth,
                &arms,
                cfg.seed,
                cfg.resamples,
                cfg.rounds,
            )?;
            progress(&format!(
                "  simulated A/B over {} test sessions in {:.1} s",
                ab.sessions,
                t.elapsed().as_secs_f64()
            ));
            Some(ab)
        }
        None => None,
    };

    // 5. Rows, runs, reach.
    let mut rows: Vec<RowInfo> = [BM25, POPULARITY, MEMORISATION]
        .iter()
        .map(|n| baseline_info(n))
        .collect();
    if repurchase.is_some() {
        rows.push(baseline_info(REPURCHASE));
    }
    if minilm.is_some() {
        rows.push(RowInfo {
            kind: RowKind::ZeroShot,
            ..baseline_info(crate::zero_shot::MINILM)
        });
    }
    for f in &fine_tuned {
        rows.push(RowInfo {
            name: f.row.clone(),
            kind: RowKind::FineTuned,
            sampler: Some(f.sampler.clone()),
            validation_recall_at_10: None,
            train_s: Some(f.summary.train_s),
            cost: None,
        });
    }
    for t in &trained {
        rows.push(t.info());
    }
    for (name, of) in [
        (hybrid_name, best_dense.as_ref()),
        (history_name, personalized_name.as_ref()),
        (
            rerank.as_ref().map(|r| r.0.row.clone()),
            personalized_name.as_ref(),
        ),
        (without_validation_name, personalized_name.as_ref()),
    ] {
        let (Some(name), Some(of)) = (name, of) else {
            continue;
        };
        if let Some(t) = trained.iter().find(|t| &t.name == of) {
            // No training of its own: it reuses `of`'s models.
            rows.push(RowInfo {
                name,
                kind: if t.kind == RowKind::Personalized {
                    RowKind::Personalized
                } else {
                    RowKind::Hybrid
                },
                sampler: Some(t.sampler.to_string()),
                validation_recall_at_10: None,
                train_s: None,
                cost: None,
            });
        }
    }
    let runs: Vec<Run> = trained
        .iter()
        .flat_map(|t| t.runs.iter().cloned())
        .collect();
    let reach_ance = reach(&trained);
    Ok(Protocol {
        split: split.name.clone(),
        description: split.description.clone(),
        rows,
        report,
        runs,
        best_taxonomy: best_taxonomy.map(|b| b.0),
        best_dense,
        reach_ance,
        simulated_ab,
        history_choice,
        rerank: rerank.map(|r| r.0),
        bm25: bm25_choice,
        fine_tuned,
    })
}

/// A trained run's model, loaded from `path`, ranking as `options` say.
fn load_ranker(
    name: String,
    path: &Path,
    ds: &Arc<Dataset>,
    split: &Split,
    options: &DenseOptions,
) -> Result<DenseRanker> {
    let (model, _) = aisle_model::artifact::load(path)?;
    DenseRanker::with_options(name, model, ds, split, options)
}

/// Tries every candidate `beta` of the history term on the validation queries, with each seed's
/// model of the personalized row `t` built once (beta is a query-time weight), and keeps the
/// best by seed-averaged Recall@10; ties go to the smaller beta.
fn choose_history_boost(
    ds: &Arc<Dataset>,
    split: &Split,
    cfg: &ExperimentConfig,
    t: &Trained,
    progress: &mut dyn FnMut(&str),
) -> Result<HistoryChoice> {
    let max = cfg.history_boosts.iter().copied().fold(0f32, f32::max);
    let start = Instant::now();
    let total = t.runs.len() * cfg.history_boosts.len();
    let mut done = 0usize;
    let eval_cfg = EvalConfig {
        part: Part::Validation,
        ks: vec![10],
        resamples: 0,
        rounds: 0,
        seed: cfg.seed,
        reference: None,
    };
    let mut sums = vec![0f64; cfg.history_boosts.len()];
    let mut queries = 0;
    for run in &t.runs {
        // Built with the largest candidate so that histories are loaded even for a plain model.
        let mut ranker = load_ranker(
            format!("{} (seed {})", t.name, run.seed),
            &run.model,
            ds,
            split,
            &DenseOptions {
                history: cfg.history_term_window,
                history_rule: Default::default(),
                mode: Mode::Dense,
                history_boost: max,
                bm25: aisle_search::FieldBoosts::default(),
            },
        )?;
        for (sum, &beta) in sums.iter_mut().zip(&cfg.history_boosts) {
            ranker.set_history_boost(beta)?;
            let groups = [Group {
                name: format!("beta {beta}"),
                members: vec![Member::Ready(&ranker)],
            }];
            let report = evaluate_groups(ds, split, &groups, &eval_cfg)?;
            queries = report.queries;
            *sum += report
                .rows
                .first()
                .and_then(|r| r.micro.get("recall@10"))
                .map_or(0.0, |e| e.mean);
            done += 1;
            if done < total {
                let elapsed = start.elapsed().as_secs_f64();
                progress(&format!(
                    "  history term: {done}/{total} validation runs (seed {}, beta {beta}) in \
                     {elapsed:.0} s, about {:.0} s left",
                    run.seed,
                    elapsed * (total - done) as f64 / done as f64
                ));
            }
        }
    }
    let n = t.runs.len().max(1) as f64;
    let candidates: Vec<(f32, f64)> = cfg
        .history_boosts
        .iter()
        .zip(&sums)
        .map(|(&b, &s)| (b, s / n))
        .collect();
    Ok(HistoryChoice {
        window: cfg.history_term_window,
        chosen: pick_boost(&candidates),
        candidates,
        validation_queries: queries,
    })
}

/// The `beta` with the best validation score; among ties, the smallest (0 without candidates).
fn pick_boost(candidates: &[(f32, f64)]) -> f32 {
    let mut chosen: Option<(f32, f64)> = None;
    for &(b, r) in candidates {
        chosen = match chosen {
            Some((cb, cr)) if r < cr || (r == cr && cb <= b) => Some((cb, cr)),
            _ => Some((b, r)),
        };
    }
    chosen.map_or(0.0, |c| c.0)
}

fn baseline_info(name: &str) -> RowInfo {
    RowInfo {
        name: name.to_owned(),
        kind: RowKind::Baseline,
        sampler: None,
        validation_recall_at_10: None,
        train_s: None,
        cost: None,
    }
}

/// Training seconds for each row to reach ANCE's best seed-averaged validation Recall@10.
fn reach(trained: &[Trained]) -> Vec<Reach> {
    let curve = |t: &Trained| mean_curve(&t.runs.iter().collect::<Vec<_>>());
    let Some(ance) = trained
        .iter()
        .find(|t| matches!(t.sampler, SamplerSpec::Ance { .. }) && t.kind == RowKind::Dense)
    else {
        return Vec::new();
    };
    let target = curve(ance)
        .iter()
        .map(|p| p.recall_at_10)
        .fold(f64::NEG_INFINITY, f64::max);
    if !target.is_finite() {
        return Vec::new();
    }
    trained
        .iter()
        .map(|t| {
            let hit = curve(t).into_iter().find(|p| p.recall_at_10 >= target);
            Reach {
                row: t.name.clone(),
                target,
                step: hit.map(|p| p.step),
                train_s: hit.map(|p| p.train_s),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_weight_is_the_validation_argmax_and_ties_go_to_the_smaller() {
        assert_eq!(pick_boost(&[(2.0, 0.70), (0.5, 0.71), (1.0, 0.69)]), 0.5);
        assert_eq!(pick_boost(&[(4.0, 0.70), (1.0, 0.70), (2.0, 0.70)]), 1.0);
        assert_eq!(pick_boost(&[(0.25, 0.90), (0.0, 0.90)]), 0.0);
        assert_eq!(pick_boost(&[]), 0.0);
    }

    fn run_with(curve: &[(u64, f64, f64)]) -> Run {
        Run {
            row: "r".into(),
            seed: 0,
            sampler: "random".into(),
            steps: 0,
            train_s: 0.0,
            pairs_per_s: 0.0,
            sample_s: 0.0,
            forward_s: 0.0,
            backward_s: 0.0,
            refresh_s: 0.0,
            curve: curve
                .iter()
                .map(|&(step, train_s, recall_at_10)| CurvePoint {
                    step,
                    train_s,
                    recall_at_10,
                })
                .collect(),
            final_validation_recall_at_10: curve.last().map(|c| c.2),
            model: PathBuf::new(),
        }
    }

    #[test]
    fn mean_curve_keeps_steps_every_seed_measured() {
        let a = run_with(&[(0, 0.0, 0.1), (100, 2.0, 0.3), (200, 4.0, 0.5)]);
        let b = run_with(&[(0, 0.0, 0.3), (100, 4.0, 0.5)]);
        let m = mean_curve(&[&a, &b]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].step, 100);
        assert!((m[1].train_s - 3.0).abs() < 1e-12);
        assert!((m[1].recall_at_10 - 0.4).abs() < 1e-12);
        assert!(mean_curve(&[]).is_empty());
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("TB-HNS mix + random"), "tb-hns-mix-random");
        assert_eq!(slug("  BM25 (weighted:0.8) "), "bm25-weighted-0-8");
        assert_eq!(
            run_dir(Path::new("/r"), "event", "ANCE", 3),
            PathBuf::from("/r/event/ance/seed-3")
        );
    }

    #[test]
    fn taxonomy_rows_are_told_from_the_parsed_spec() {
        let spec = |s: &str| SamplerSpec::parse(s).expect("spec");
        assert!(uses_taxonomy(&spec("tbhns")));
        assert!(uses_taxonomy(&spec("mix: 0.5 * random + 0.5 * tb-hns")));
        assert!(uses_taxonomy(&spec("curriculum:random->taxonomy@1..2")));
        assert!(!uses_taxonomy(&spec("mix:1*random+0*taxonomy")));
        assert!(!uses_taxonomy(&spec("ance")));
    }

    #[test]
    fn the_standard_rows_parse() {
        let rows = DenseRow::standard().expect("rows");
        assert!(rows.iter().any(|r| r.taxonomy));
        assert!(rows
            .iter()
            .any(|r| matches!(r.sampler, SamplerSpec::Ance { .. })));
    }
}
