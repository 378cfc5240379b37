//! A whole training run: the loop around [`Trainer::train_step`] with its training log,
//! validation, checkpoints, `--resume`, and the model artifact at the end.
//!
//! The run writes into one folder:
//!
//! ```text
//! model.aisle        the trained model (aisle_model::artifact), written at the end
//! train_log.jsonl    one JSON object a line: `start`, `step` (every log_every steps), `eval`,
//!                    `checkpoint`, `end` (see LogLine)
//! checkpoint.aisle   the latest checkpoint, when checkpoint_every > 0
//! best.aisle         the best model on validation so far, while the run goes on (keep best);
//!                    it becomes model.aisle at the end when it beats the last, and is removed
//! ```
//!
//! With `keep = best` (the default) the saved model is the one whose validation Recall@10 was
//! highest: on a grocery set TB-HNS peaked at 0.367 at step 750 and ended at 0.339 at step
//! 2,000 (issue 20). `patience` stops a run that has not beaten its best for that many
//! measurements. The best is written to `best.aisle` when found rather than held in memory
//! (no second copy of the towers), and a resumed run reads it back.
//!
//! Wall seconds in the log count training only (sampling, forward, backward, refresh); the time
//! spent measuring validation Recall@10 and writing checkpoints is logged apart, so that a
//! convergence plot against wall seconds shows what training cost.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use aisle_core::io::slug;
use aisle_core::stats::{fmt_n, gib, peak_rss_bytes};
use aisle_core::{Dataset, Split};
use aisle_model::artifact::save_trained;
use aisle_model::meta::{Kept, ModelMeta};

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::trainer::{Keep, StepStats, TrainConfig, Trainer};

/// File names inside a run folder.
pub const MODEL_FILE: &str = "model.aisle";
pub const LOG_FILE: &str = "train_log.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.aisle";
pub const BEST_FILE: &str = "best.aisle";

/// Where a run writes and whether it continues an earlier one.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    /// Continue from this checkpoint (made with the same configuration, dataset and split).
    pub resume: Option<PathBuf>,
}

/// One line of the training log.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogLine {
    Start {
        dataset: String,
        split: String,
        sampler: String,
        pairs: usize,
        queries: usize,
        products: usize,
        resumed_from: Option<u64>,
        notes: Vec<String>,
        config: Box<TrainConfig>,
    },
    /// Means over the steps since the previous `step` line.
    Step {
        step: u64,
        loss: f64,
        accuracy: f64,
        pairs_per_s: f64,
        sample_ms: f64,
        forward_ms: f64,
        backward_ms: f64,
        refresh_ms: f64,
        removed_positives: u64,
        fallbacks: u64,
        masked_in_batch: u64,
        touched_rows: f64,
        /// Training seconds since the start of this process's part of the run.
        wall_s: f64,
    },
    Eval {
        step: u64,
        recall_at_10: f64,
        queries: usize,
        wall_s: f64,
        eval_s: f64,
    },
    Checkpoint {
        step: u64,
        path: PathBuf,
        write_s: f64,
    },
    /// A new best validation Recall@10 (keep best), written to `best.aisle`.
    Best { step: u64, recall_at_10: f64 },
    /// `patience` measurements without a new best: the run stops here.
    EarlyStop {
        step: u64,
        best_step: u64,
        best_recall_at_10: f64,
    },
    End {
        steps: u64,
        wall_s: f64,
        pairs_per_s: f64,
        sample_share: f64,
        refresh_s: f64,
        final_recall_at_10: Option<f64>,
        /// Which model `model` holds: "best" or "last", its step and validation Recall@10.
        kept: String,
        kept_step: u64,
        kept_recall_at_10: Option<f64>,
        model: PathBuf,
    },
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub sampler: String,
    pub steps: u64,
    /// Steps run by this process (fewer than `steps` after a resume).
    pub steps_run: u64,
    pub train_wall_s: f64,
    pub pairs_per_s: f64,
    /// Share of training time spent drawing negatives.
    pub sample_share: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub sample_s: f64,
    pub refresh_s: f64,
    /// (step, training seconds, validation Recall@10) at every measurement.
    pub recall_curve: Vec<(u64, f64, f64)>,
    /// Validation Recall@10 at the last measurement.
    pub final_recall_at_10: Option<f64>,
    /// The step of the saved model, and its validation Recall@10 (the best, with keep best).
    pub kept_step: u64,
    pub kept_recall_at_10: Option<f64>,
    /// True when `patience` stopped the run before `steps`.
    pub stopped_early: bool,
    /// Sampled negatives used by this process's steps (steps x batch x k).
    pub negatives: u64,
    /// Candidates the false-negative rule rejected (products the query led to, drawn as its
    /// negatives); each rejected candidate was drawn again.
    pub removed_positives: u64,
    /// Negatives drawn at random from the sampler's easy pool (the catalog, or the products with
    /// training interactions: TB-HNS's default pool) because its own candidates could not give `k`.
    pub fallbacks: u64,
    pub model: PathBuf,
    pub log: PathBuf,
}

/// Called after every step and every evaluation (progress bars, the CLI's messages).
pub trait Observer {
    fn started(&mut self, _first_step: u64, _total_steps: u64, _sampler: &str) {}
    fn stepped(&mut self, _stats: &StepStats) {}
    fn evaluated(&mut self, _step: u64, _recall_at_10: f64) {}
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// What a progress display shows while a run goes (`aisle train`'s bar): the loss as an
/// exponential mean over the steps, which keeps it readable where one step's is noise, and the
/// last validation Recall@10.
#[derive(Clone, Debug, Default)]
pub struct RunningFigures {
    loss: f64,
    recall: Option<f64>,
}

impl RunningFigures {
    /// Takes a step's figures; true every 10 steps, when the message is worth redrawing.
    pub fn stepped(&mut self, s: &StepStats) -> bool {
        self.loss = if s.step == 0 || self.loss == 0.0 {
            s.loss
        } else {
            0.95 * self.loss + 0.05 * s.loss
        };
        s.step.is_multiple_of(10)
    }

    /// Takes a validation measurement.
    pub fn evaluated(&mut self, recall_at_10: f64) {
        self.recall = Some(recall_at_10);
    }

    /// `loss 0.1234  val R@10 0.5678` (the recall once measured).
    pub fn message(&self) -> String {
        let r = self
            .recall
            .map(|r| format!("  val R@10 {r:.4}"))
            .unwrap_or_default();
        format!("loss {:.4}{r}", self.loss)
    }
}

/// Above this share of random fallbacks, a run's summary warns that the sampler's negatives
/// were not the hard ones asked for ([`RunSummary::fallback_warning`]).
pub const FALLBACK_WARN_PCT: f64 = 10.0;

impl RunSummary {
    /// What `aisle train` prints of a finished run, a figure a line: the sampler, the steps,
    /// the time and its split, what the false-negative rule and the sampler's fallback did, the
    /// validation curve and the model kept, and where the model and the log are (absolute).
    pub fn render(&self) -> String {
        let mut out = format!("sampler              {}\n", self.sampler);
        out += &format!(
            "steps                {} ({} in this run)\n",
            fmt_n(self.steps as usize),
            fmt_n(self.steps_run as usize)
        );
        out += &format!(
            "training time        {:.1} s ({:.0} pairs/s; sampling {:.1}%, refresh {:.1} s)\n",
            self.train_wall_s,
            self.pairs_per_s,
            100.0 * self.sample_share,
            self.refresh_s
        );
        out += &self.sampling_lines();
        if !self.recall_curve.is_empty() {
            let curve: Vec<String> = self
                .recall_curve
                .iter()
                .map(|(step, _, r)| format!("{step}:{r:.4}"))
                .collect();
            out += &format!("validation R@10      {}\n", curve.join("  "));
            out += &format!(
                "kept                 step {} ({}, val R@10 {}){}\n",
                fmt_n(self.kept_step as usize),
                if self.kept_step < self.steps {
                    "the best on validation"
                } else {
                    "the last step"
                },
                self.kept_recall_at_10
                    .map_or("not measured".into(), |r| format!("{r:.4}")),
                if self.stopped_early {
                    format!("; stopped early at step {}", fmt_n(self.steps as usize))
                } else {
                    String::new()
                }
            );
        }
        out += &format!("model                {}\n", absolute(&self.model).display());
        out += &format!("log                  {}\n", absolute(&self.log).display());
        out
    }

    /// The lines that close `aisle train`: the whole run's seconds and their parts (loading,
    /// training, the re-ranking head when fitted), and the process's peak memory.
    pub fn closing(&self, total_s: f64, load_s: f64, head_s: Option<f64>) -> String {
        let mut out = format!(
            "total                {total_s:.1} s (loading {load_s:.1} s, training {:.1} s{})\n",
            self.train_wall_s,
            head_s.map_or(String::new(), |h| format!(", re-ranking head {h:.1} s"))
        );
        if let Some(p) = peak_rss_bytes() {
            out += &format!("peak memory          {:.2} GiB\n", gib(p));
        }
        out
    }

    /// What the false-negative rule and the sampler's fallback did, in words: a count alone
    /// ("1,013,527 removed") said nothing of whether the sampler still drew enough hard
    /// negatives.
    fn sampling_lines(&self) -> String {
        let drawn = self.negatives + self.removed_positives;
        let mut out = format!(
            "false negatives      {} of {} candidates drawn ({:.1}%) were products the query led \
             to, rejected and drawn again\n",
            fmt_n(self.removed_positives as usize),
            fmt_n(drawn as usize),
            pct(self.removed_positives, drawn)
        );
        if self.negatives > 0 {
            out += &format!(
                "random fallbacks     {} of {} negatives ({:.1}%) drawn at random from the \
                 sampler's easy pool because its own candidates ran out\n",
                fmt_n(self.fallbacks as usize),
                fmt_n(self.negatives as usize),
                self.fallback_pct()
            );
        }
        out
    }

    /// Share of the sampled negatives that were random fallbacks, in percent.
    pub fn fallback_pct(&self) -> f64 {
        pct(self.fallbacks, self.negatives)
    }

    /// A warning when more than [`FALLBACK_WARN_PCT`] of the negatives were random fallbacks:
    /// the sampler could not give the hard negatives asked for.
    pub fn fallback_warning(&self) -> Option<String> {
        let share = self.fallback_pct();
        (self.negatives > 0 && share > FALLBACK_WARN_PCT).then(|| {
            format!(
                "warning: the {} sampler could not fill its hard negatives for {share:.1}% of the \
                 slots (more than {FALLBACK_WARN_PCT}%): those were random, easy negatives (see \
                 docs/training.md#negative-samplers)",
                self.sampler
            )
        })
    }
}

/// `100 a / b`, 0 when `b` is.
fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// `path` made absolute against the working directory (left as is if that cannot be read).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Where `aisle train` writes a run when not told: `out/train/DATASET-SAMPLER` under the
/// working directory.
pub fn default_out_dir(ds: &Dataset, cfg: &TrainConfig) -> PathBuf {
    PathBuf::from("out/train").join(format!(
        "{}-{}",
        slug(&ds.name),
        slug(&cfg.sampler.to_string())
    ))
}

/// The line that opens a run: the dataset and split, the personalized tower and what it
/// reads of the customers, the sampler and the run's sizes.
pub fn describe(cfg: &TrainConfig, ds: &Dataset, split: &Split) -> String {
    format!(
        "training on {} (split `{}`: {}), {}sampler {}, k = {}, batch {}, dim {}, {} steps, seed {}",
        ds.name,
        split.name,
        split.description,
        cfg.personalize.as_ref().map_or(String::new(), |p| format!(
            "personalized (the last {} interactions{}), ",
            p.history,
            customer_features(ds, p.demographics)
        )),
        cfg.sampler,
        cfg.k(),
        cfg.batch_size,
        cfg.model.tower.dim,
        cfg.steps,
        cfg.seed
    )
}

/// What the personalized tower reads of the customers besides their history, for the run's
/// first line: their feature fields, or why none.
pub(crate) fn customer_features(ds: &Dataset, wanted: bool) -> String {
    if !wanted {
        return ", history only (--no-demographics)".into();
    }
    let mut fields: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for (_, u) in ds.users.iter() {
        if u.segment.is_some() {
            fields.insert("segment");
        }
        for (k, v) in &u.demographics {
            if !v.trim().is_empty() {
                fields.insert(k.as_str());
            }
        }
    }
    if fields.is_empty() {
        ", history only: the customers have no features".into()
    } else {
        format!(
            " and the customer features {}",
            fields.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// Where `aisle serve` keeps the model it trains for a dataset when given none:
/// `out/serve/DATASET/model.aisle` under the working directory.
pub fn default_serve_model(ds: &Dataset) -> PathBuf {
    PathBuf::from("out/serve")
        .join(slug(&ds.name))
        .join(MODEL_FILE)
}

/// The default model at `path` ([`default_serve_model`]), ready to serve `ds`: the file as it
/// is when it was trained on this dataset's data, else trained now into `path`'s folder
/// ([`default_model_config`]: personalized TB-HNS for `steps` steps, `observer` following the
/// run). The default model follows the dataset: one trained on other data (an older
/// generator, changed files), or written by an older aisle whose metadata this one cannot
/// read, is trained again rather than refused. `say` gets why it trains and what it got.
pub fn ensure_default_model(
    path: &Path,
    ds: &Dataset,
    steps: u64,
    observer: &mut dyn Observer,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    if path.exists() {
        match aisle_search::model_file::read(path) {
            Ok((_, made)) => {
                match aisle_search::model_file::other_dataset(path, &made, ds, "served") {
                    None => return Ok(path.to_path_buf()),
                    Some(why) => say(&format!("{why}: training the default model again")),
                }
            }
            Err(e) => say(&format!(
                "{}: training the default model again",
                aisle_core::error::with_sources(&e)
            )),
        }
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let split = ds.split_named(None)?;
    let cfg = default_model_config(steps)?;
    say(&format!(
        "training a personalized TB-HNS model for {} on {} ({} steps) first",
        path.display(),
        ds.name,
        cfg.steps
    ));
    let options = RunOptions {
        out_dir: dir,
        resume: None,
    };
    let summary = run(cfg, ds, split, &options, observer)?;
    say(&format!(
        "trained in {:.1} s; kept step {}, validation R@10 {}; wrote {}",
        summary.train_wall_s,
        summary.kept_step,
        summary
            .kept_recall_at_10
            .map_or("not measured".into(), |r| format!("{r:.3}")),
        summary.model.display()
    ));
    Ok(summary.model)
}

struct Log {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Log {
    fn open(path: &Path, append: bool) -> Result<Log> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Log {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    /// Opens the log of a run resumed from its checkpoint at `step`, for appending, after cutting
    /// it back to what the run had logged by that step: the lines a killed run wrote after its
    /// last checkpoint are logged again by the resumed one, so they go (as does a line cut short
    /// by the kill). The cut log is written through a temporary file and renamed into place.
    fn resume(path: &Path, step: u64) -> Result<Log> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrainError::io(path, e)),
        };
        let kept = log_up_to(&text, step);
        if kept.len() != text.len() {
            aisle_core::io::write_atomic(path, |w| w.write_all(kept.as_bytes()))
                .map_err(|e| TrainError::io(path, e))?;
        }
        Log::open(path, true)
    }

    fn write(&mut self, line: &LogLine) -> Result<()> {
        let io = |e| TrainError::io(&self.path, e);
        let text = serde_json::to_string(line).map_err(|e| io(e.into()))?;
        writeln!(self.out, "{text}").map_err(io)?;
        // Flushed at every line: a run that is killed keeps its log up to the last line.
        self.out.flush().map_err(io)
    }
}

/// The lines of a training log up to the first one past `step` (a `step`, `eval` or
/// `checkpoint` line of a later step, an `end` line of more steps) or the first that is not a
/// whole JSON line.
fn log_up_to(text: &str, step: u64) -> &str {
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim_end()) else {
            break;
        };
        if !line.ends_with('\n') {
            break;
        }
        let at = v
            .get("step")
            .or_else(|| v.get("steps"))
            .and_then(|s| s.as_u64());
        if at.is_some_and(|at| at > step) {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

/// Sums of step statistics over a logging interval.
#[derive(Default)]
struct Interval {
    steps: u64,
    loss: f64,
    accuracy: f64,
    sample_ms: f64,
    forward_ms: f64,
    backward_ms: f64,
    refresh_ms: f64,
    removed: u64,
    fallbacks: u64,
    masked: u64,
    touched: f64,
}

impl Interval {
    fn add(&mut self, s: &StepStats) {
        self.steps += 1;
        self.loss += s.loss;
        self.accuracy += s.accuracy;
        self.sample_ms += s.sample_ms;
        self.forward_ms += s.forward_ms;
        self.backward_ms += s.backward_ms;
        self.refresh_ms += s.refresh_ms;
        self.removed += s.removed_positives as u64;
        self.fallbacks += s.fallbacks as u64;
        self.masked += s.masked_in_batch as u64;
        self.touched += s.touched_rows as f64;
    }

    fn line(&self, step: u64, batch: usize, wall_s: f64) -> LogLine {
        let n = self.steps.max(1) as f64;
        let ms = self.sample_ms + self.forward_ms + self.backward_ms + self.refresh_ms;
        LogLine::Step {
            step,
            loss: self.loss / n,
            accuracy: self.accuracy / n,
            pairs_per_s: if ms > 0.0 {
                self.steps as f64 * batch as f64 / (ms / 1e3)
            } else {
                0.0
            },
            sample_ms: self.sample_ms / n,
            forward_ms: self.forward_ms / n,
            backward_ms: self.backward_ms / n,
            refresh_ms: self.refresh_ms / n,
            removed_positives: self.removed,
            fallbacks: self.fallbacks,
            masked_in_batch: self.masked,
            touched_rows: self.touched / n,
            wall_s,
        }
    }
}

/// Measures validation Recall@10, logs it and adds it to `curve`; `None` without validation
/// queries.
fn measure(
    trainer: &Trainer,
    log: &mut Log,
    observer: &mut dyn Observer,
    curve: &mut Vec<(u64, f64, f64)>,
    wall_s: f64,
) -> Result<Option<f64>> {
    let t = Instant::now();
    let r = trainer.validate()?;
    if let Some(r) = r {
        log.write(&LogLine::Eval {
            step: trainer.step,
            recall_at_10: r,
            queries: trainer.validation_set().len(),
            wall_s,
            eval_s: t.elapsed().as_secs_f64(),
        })?;
        observer.evaluated(trainer.step, r);
        curve.push((trainer.step, wall_s, r));
    }
    Ok(r)
}

/// What `best.aisle` records beside the model: the step it was measured at, so that a resumed
/// run never keeps a snapshot of another step.
#[derive(Serialize, Deserialize)]
struct BestMeta {
    best_step: u64,
    best_recall_at_10: f64,
}

/// Where a run keeps the model of its best validation measurement (`Trainer::best_validation`).
struct Best {
    path: PathBuf,
    write: bool,
}

impl Best {
    /// A fresh run drops a `best.aisle` of an earlier run in the folder. A resumed one keeps
    /// it: the checkpoint says which measurement was best, and a `best.aisle` written after the
    /// checkpoint by a killed run is written again when the resumed run gets there.
    fn open(dir: &Path, keep: Keep, resumed: bool) -> Result<Best> {
        let path = dir.join(BEST_FILE);
        if !resumed {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        }
        Ok(Best {
            path,
            write: keep == Keep::Best,
        })
    }

    /// Takes a measurement at `trainer.step`; a new best (strictly higher) is logged and, with
    /// keep best, its model written to `best.aisle`.
    fn offer(&self, trainer: &mut Trainer, recall: f64, log: &mut Log) -> Result<()> {
        if trainer.best_validation.is_some_and(|(_, r)| recall <= r) {
            return Ok(());
        }
        let step = trainer.step;
        trainer.best_validation = Some((step, recall));
        if self.write {
            let meta = BestMeta {
                best_step: step,
                best_recall_at_10: recall,
            };
            let json = serde_json::to_value(meta).map_err(|e| TrainError::Config(e.to_string()))?;
            aisle_model::artifact::save(&trainer.model, &json, &self.path)?;
        }
        log.write(&LogLine::Best {
            step,
            recall_at_10: recall,
        })
    }

    /// The model of the best measurement at `step`, read back from `best.aisle`.
    fn load(&self, step: u64) -> Result<aisle_model::Model> {
        let (model, meta) = aisle_model::artifact::load(&self.path)?;
        match serde_json::from_value::<BestMeta>(meta).map(|m| m.best_step) {
            Ok(s) if s == step => Ok(model),
            other => Err(TrainError::Config(format!(
                "{} holds the model of step {:?}, the run's best was step {step}: train again without --resume",
                self.path.display(),
                other.ok()
            ))),
        }
    }
}

/// The configuration of the model `aisle serve` trains when its default model is missing: the
/// default sampler (TB-HNS) with the personalized head, for `steps` steps. Validated, so that a
/// bad step count is refused before anything is announced or written.
pub fn default_model_config(steps: u64) -> Result<TrainConfig> {
    let cfg = TrainConfig {
        steps,
        personalize: Some(crate::trainer::PersonalizeConfig::default()),
        ..TrainConfig::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Trains `cfg` on `split` of `ds`, writing the log, checkpoints and the model into
/// `opts.out_dir`. Returns what the run measured.
pub fn run(
    cfg: TrainConfig,
    ds: &Dataset,
    split: &Split,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut trainer = Trainer::new(cfg, ds, split)?;
    if let Some(ckpt) = &opts.resume {
        checkpoint::restore(&mut trainer, ckpt)?;
    }
    let resumed_from = opts.resume.as_ref().map(|_| trainer.step);
    let cfg = trainer.cfg.clone();
    let log_path = dir.join(LOG_FILE);
    let mut log = match resumed_from {
        Some(step) => Log::resume(&log_path, step)?,
        None => Log::open(&log_path, false)?,
    };
    let sampler = trainer.sampler_name();
    log.write(&LogLine::Start {
        dataset: ds.name.clone(),
        split: split.name.clone(),
        sampler: sampler.clone(),
        pairs: trainer.data.pairs.len(),
        queries: trainer.data.queries.len(),
        products: ds.catalog.len(),
        resumed_from,
        notes: trainer.sampler_notes(),
        config: Box::new(cfg.clone()),
    })?;
    observer.started(trainer.step, cfg.steps, &sampler);

    let first_step = trainer.step;
    let mut wall_s = 0.0;
    let mut totals = Interval::default();
    let mut interval = Interval::default();
    let mut curve: Vec<(u64, f64, f64)> = Vec::new();
    let best = Best::open(dir, cfg.keep, resumed_from.is_some())?;
    let mut stopped_early = false;
    if first_step == 0 && cfg.eval_every > 0 {
        if let Some(r) = measure(&trainer, &mut log, observer, &mut curve, 0.0)? {
            best.offer(&mut trainer, r, &mut log)?;
        }
    }
    while trainer.step < cfg.steps {
        let stats = trainer.train_step()?;
        wall_s += (stats.sample_ms + stats.forward_ms + stats.backward_ms + stats.refresh_ms) / 1e3;
        totals.add(&stats);
        interval.add(&stats);
        observer.stepped(&stats);
        let step = trainer.step;
        if cfg.log_every > 0 && step.is_multiple_of(cfg.log_every) {
            log.write(&interval.line(step, cfg.batch_size, wall_s))?;
            interval = Interval::default();
        }
        if cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every) && step < cfg.steps {
            if let Some(r) = measure(&trainer, &mut log, observer, &mut curve, wall_s)? {
                best.offer(&mut trainer, r, &mut log)?;
            }
            if let Some((best_step, best_r)) = trainer.best_validation {
                if cfg.patience > 0 && step - best_step >= cfg.patience * cfg.eval_every {
                    log.write(&LogLine::EarlyStop {
                        step,
                        best_step,
                        best_recall_at_10: best_r,
                    })?;
                    stopped_early = true;
                    break;
                }
            }
        }
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) {
            let t = Instant::now();
            let path = dir.join(CHECKPOINT_FILE);
            checkpoint::save(&trainer, &path)?;
            log.write(&LogLine::Checkpoint {
                step,
                path,
                write_s: t.elapsed().as_secs_f64(),
            })?;
        }
    }
    if interval.steps > 0 {
        log.write(&interval.line(trainer.step, cfg.batch_size, wall_s))?;
    }
    // An early stop has just measured this step.
    if !stopped_early {
        if let Some(r) = measure(&trainer, &mut log, observer, &mut curve, wall_s)? {
            best.offer(&mut trainer, r, &mut log)?;
        }
    }

    let last_recall = curve.last().map(|c| c.2);
    // The best model when it beats the last one (strictly), else the last.
    let kept_best = match (cfg.keep, trainer.best_validation) {
        (Keep::Best, Some((step, r))) if step < trainer.step => Some((step, r)),
        _ => None,
    };
    let (kept_step, kept_recall) = match kept_best {
        Some((step, r)) => (step, Some(r)),
        None => (trainer.step, last_recall),
    };
    let kept = if kept_best.is_some() { "best" } else { "last" };
    let model_path = dir.join(MODEL_FILE);
    let meta = ModelMeta {
        meta_version: aisle_model::META_VERSION,
        dataset: ds.name.clone(),
        dataset_digest: ds.digest(),
        split: split.name.clone(),
        sampler: sampler.to_string(),
        steps: trainer.step,
        seed: cfg.seed,
        batch_size: cfg.batch_size,
        negatives: cfg.k(),
        validation_recall_at_10: kept_recall,
        kept: Kept {
            policy: cfg.keep.to_string(),
            model: kept.into(),
            step: kept_step,
        },
        last_validation_recall_at_10: last_recall,
        personalize: cfg.personalize.clone(),
        aisle_version: env!("CARGO_PKG_VERSION").into(),
    };
    match kept_best {
        Some((step, _)) => save_trained(&best.load(step)?, &meta, &model_path)?,
        None => save_trained(&trainer.model, &meta, &model_path)?,
    }
    // Kept while a checkpoint can resume the run (with more steps, say); else removed.
    if best.write && cfg.checkpoint_every == 0 && best.path.exists() {
        std::fs::remove_file(&best.path).map_err(|e| TrainError::io(&best.path, e))?;
    }
    let steps_run = trainer.step - first_step;
    let pairs_per_s = if wall_s > 0.0 {
        steps_run as f64 * cfg.batch_size as f64 / wall_s
    } else {
        0.0
    };
    let total_ms = wall_s * 1e3;
    let sample_share = if total_ms > 0.0 {
        totals.sample_ms / total_ms
    } else {
        0.0
    };
    log.write(&LogLine::End {
        steps: trainer.step,
        wall_s,
        pairs_per_s,
        sample_share,
        refresh_s: totals.refresh_ms / 1e3,
        final_recall_at_10: last_recall,
        kept: kept.into(),
        kept_step,
        kept_recall_at_10: kept_recall,
        model: model_path.clone(),
    })?;
    Ok(RunSummary {
        sampler,
        steps: trainer.step,
        steps_run,
        train_wall_s: wall_s,
        pairs_per_s,
        sample_share,
        forward_s: totals.forward_ms / 1e3,
        backward_s: totals.backward_ms / 1e3,
        sample_s: totals.sample_ms / 1e3,
        refresh_s: totals.refresh_ms / 1e3,
        recall_curve: curve,
        final_recall_at_10: last_recall,
        kept_step,
        kept_recall_at_10: kept_recall,
        stopped_early,
        negatives: steps_run * cfg.batch_size as u64 * cfg.k() as u64,
        removed_positives: totals.removed,
        fallbacks: totals.fallbacks,
        model: model_path,
        log: log_path,
    })
}
