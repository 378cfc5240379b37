//! `aisle train`, `aisle encode` and `aisle bench train`: argument parsing and printing around
//! aisle-train and aisle-model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use aisle_core::io::{slug, write_vectors, VectorsWritten, WriteVectorsError};
use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, Split};
use aisle_eval::rankers::DenseOptions;
use aisle_eval::rerank::{HeadFitOptions, HeadJob};
use aisle_model::personal::Fusion;
use aisle_search::Signals;
use aisle_train::bench::BenchFigures;
use aisle_train::optim::SparseKind;
use aisle_train::run::{RunOptions, CHECKPOINT_FILE};
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{Observer, SamplerSpec, StepStats, TrainConfig};

use crate::DataOpts;

/// Training settings that the command line may override (over `--config`, over the defaults).
#[derive(Args, Clone, Default)]
pub struct TrainOverrides {
    /// A TOML file of training settings (see docs/training.md); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Negative sampler: in-batch, random, popularity, bm25, ance, taxonomy, mix:..., curriculum:...
    /// (see docs/training.md) [default: taxonomy]
    #[arg(long)]
    pub sampler: Option<String>,
    /// Sampled negatives per pair [default: 4].
    #[arg(long)]
    pub negatives: Option<usize>,
    /// Training steps [default: 2000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Pairs per step [default: 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Embedding dimension [default: 128].
    #[arg(long)]
    pub dim: Option<usize>,
    /// log2 of the hashed feature buckets [default: 20].
    #[arg(long)]
    pub buckets_log2: Option<u8>,
    /// Seed of the model and the training order [default: 42].
    #[arg(long)]
    pub train_seed: Option<u64>,
    /// Train the personalized query tower too: each query read with the customer's earlier
    /// interactions (the last 50, or --history).
    #[arg(long)]
    pub personalized: bool,
    /// Earlier interactions the personalized tower reads [default: 50].
    #[arg(long)]
    pub history: Option<usize>,
    /// How the personalized tower joins history and query: gated or concat [default: gated].
    #[arg(long)]
    pub fusion: Option<Fusion>,
    /// The personalized tower reads the customers' history only, not their features (segment
    /// and the other `users` columns, which it reads by default where the data has them).
    #[arg(long)]
    pub no_demographics: bool,
    /// Optimiser of the embedding table: row-adagrad (one accumulator per row) or adam (lazy,
    /// per element) [default: row-adagrad].
    #[arg(long, value_parser = parse_sparse)]
    pub optimizer: Option<SparseKind>,
}

/// What the false-negative rule and the sampler's fallback did, in words: a count alone
/// ("1,013,527 removed") said nothing of whether the sampler still drew enough hard negatives.
fn sampling_lines(s: &aisle_train::RunSummary) -> (String, Option<String>) {
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    let drawn = s.negatives + s.removed_positives;
    let mut out = format!(
        "false negatives      {} of {} candidates drawn ({:.1}%) were products the query led to, \
         rejected and drawn again\n",
        fmt_n(s.removed_positives as usize),
        fmt_n(drawn as usize),
        pct(s.removed_positives, drawn)
    );
    if s.negatives > 0 {
        let share = pct(s.fallbacks, s.negatives);
        out.push_str(&format!(
            "random fallbacks     {} of {} negatives ({share:.1}%) drawn at random from the \
             sampler's easy pool because its own candidates ran out\n",
            fmt_n(s.fallbacks as usize),
            fmt_n(s.negatives as usize)
        ));
        if share > FALLBACK_WARN_PCT {
            return (
                out,
                Some(format!(
                    "warning: the {} sampler could not fill its hard negatives for {share:.1}% of \
                 the slots (more than {FALLBACK_WARN_PCT}%): those were random, easy negatives \
                 (see docs/training.md#negative-samplers)",
                    s.sampler
                )),
            );
        }
    }
    (out, None)
}

/// Above this share of random fallbacks, `aisle train` warns that the sampler's negatives were
/// not the hard ones asked for.
const FALLBACK_WARN_PCT: f64 = 10.0;

fn parse_keep(s: &str) -> Result<aisle_train::Keep, String> {
    match s {
        "best" => Ok(aisle_train::Keep::Best),
        "last" => Ok(aisle_train::Keep::Last),
        _ => Err(format!("`{s}`: expected best or last")),
    }
}

fn parse_sparse(s: &str) -> Result<SparseKind, String> {
    match s {
        "adam" => Ok(SparseKind::Adam),
        "row-adagrad" | "row_adagrad" | "adagrad" => Ok(SparseKind::RowAdagrad),
        _ => Err(format!("`{s}`: expected adam or row-adagrad")),
    }
}

impl TrainOverrides {
    /// The configuration: defaults, then the TOML file, then the flags.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<TrainConfig>(&text).with_context(|| {
                    format!("{}: not a valid training configuration", path.display())
                })?
            }
            None => TrainConfig::default(),
        };
        if let Some(s) = &self.sampler {
            cfg.sampler = SamplerSpec::parse(s).with_context(|| format!("--sampler {s}"))?;
        }
        if let Some(k) = self.negatives {
            cfg.negatives = k;
        }
        if let Some(n) = self.steps {
            cfg.steps = n;
        }
        if let Some(b) = self.batch_size {
            cfg.batch_size = b;
        }
        if let Some(d) = self.dim {
            cfg.model.tower.dim = d;
        }
        if let Some(b) = self.buckets_log2 {
            cfg.model.featurizer.buckets_log2 = b;
        }
        if self.personalized && cfg.personalize.is_none() {
            cfg.personalize = Some(PersonalizeConfig::default());
        }
        if self.history.is_some() || self.fusion.is_some() || self.no_demographics {
            let Some(p) = cfg.personalize.as_mut() else {
                anyhow::bail!("--history, --fusion and --no-demographics need --personalized");
            };
            if self.no_demographics {
                p.demographics = false;
            }
            if let Some(n) = self.history {
                p.history = n;
            }
            if let Some(f) = self.fusion {
                p.fusion = f;
            }
        }
        if let Some(o) = self.optimizer {
            cfg.optim.sparse = o;
        }
        if let Some(s) = self.train_seed {
            cfg.seed = s;
            cfg.model.tower.seed = s;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// A dataset name (bestbuy_xbox, instacart, synthetic, ...) or a folder in the generic format.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataOpts,
    /// The split to train on [default: the dataset's first, its default protocol].
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub train: TrainOverrides,
    /// Output folder for model.aisle, train_log.jsonl and checkpoints
    /// [default: out/train/DATASET-SAMPLER].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Steps between training-log lines [default: 50].
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Steps between validation Recall@10 measurements; 0 measures only at the end [default: 250].
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Steps between checkpoints (0 = none) [default: 0].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// The model to save: `best`, the one with the highest validation Recall@10 among the
    /// measurements (every --eval-every steps and at the end), or `last` [default: best].
    #[arg(long, value_parser = parse_keep)]
    pub keep: Option<aisle_train::Keep>,
    /// Stop after this many validation measurements in a row without a new best (0 = never)
    /// [default: 0].
    #[arg(long)]
    pub patience: Option<u64>,
    /// Continue the run in --out from its checkpoint (or from this checkpoint file).
    //
    // `Option<Option<_>>`: absent, given alone, or given a file (clap's path parser refuses an
    // empty value, so a default-missing "" made the documented bare `--resume` exit 2). A plain
    // comment, so that it stays out of `--help`.
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT")]
    pub resume: Option<Option<PathBuf>>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The tower to train: `ngram`, aisle's hashed n-gram two-tower; or `minilm`, which
    /// fine-tunes all-MiniLM-L6-v2 with the same samplers (100 steps of 16 pairs, 1 negative per
    /// pair, unless --steps, --batch-size, --negatives say otherwise; docs/transformer.md).
    #[arg(long, value_enum, default_value_t = Tower::Ngram)]
    pub tower: Tower,
    /// The MiniLM folder `--tower minilm` starts from [default: $AISLE_MINILM_DIR, else
    /// out/models/all-minilm-l6-v2].
    #[arg(long)]
    pub minilm_model: Option<PathBuf>,
    /// Also fit the learned re-ranking head (customer purchase counts, recency, neighbours,
    /// query-text signals over the towers' candidates) on the split's validation queries and
    /// write it beside the model (file or MiniLM folder) as rerank.json, which `aisle serve`
    /// then uses (docs/training.md).
    #[arg(long)]
    pub rerank: bool,
}

/// What `aisle train` trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tower {
    Ngram,
    Minilm,
}

/// The split named `name`, or the dataset's default.
pub(crate) struct Bar {
    bar: ProgressBar,
    loss: f64,
    recall: Option<f64>,
}

impl Observer for Bar {
    fn started(&mut self, first: u64, total: u64, _sampler: &str) {
        self.bar.set_length(total);
        self.bar.set_position(first);
        self.bar.reset_eta();
    }

    fn stepped(&mut self, s: &StepStats) {
        // An exponential mean keeps the shown loss readable.
        self.loss = if s.step == 0 || self.loss == 0.0 {
            s.loss
        } else {
            0.95 * self.loss + 0.05 * s.loss
        };
        self.bar.inc(1);
        if s.step.is_multiple_of(10) {
            self.message();
        }
    }

    fn evaluated(&mut self, _step: u64, r: f64) {
        self.recall = Some(r);
        self.message();
    }
}

impl Bar {
    /// A progress bar over `steps` training steps (hidden when `quiet`).
    pub(crate) fn new(steps: u64, quiet: bool) -> Result<Bar> {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(steps)
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
                .context("progress bar template")?,
        );
        Ok(Bar {
            bar,
            loss: 0.0,
            recall: None,
        })
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn message(&self) {
        let r = self
            .recall
            .map(|r| format!("  val R@10 {r:.4}"))
            .unwrap_or_default();
        self.bar.set_message(format!("loss {:.4}{r}", self.loss));
    }
}

/// `aisle train` with an n-gram tower (`main` sends `--tower minilm` to `train_minilm`).
pub fn train(args: TrainArgs) -> Result<()> {
    anyhow::ensure!(
        args.tower != Tower::Minilm,
        "--tower minilm is trained by train_minilm::train_minilm"
    );
    let mut cfg = args.train.config()?;
    if let Some(n) = args.log_every {
        cfg.log_every = n;
    }
    if let Some(n) = args.eval_every {
        cfg.eval_every = n;
    }
    if let Some(n) = args.checkpoint_every {
        cfg.checkpoint_every = n;
    }
    if let Some(k) = args.keep {
        cfg.keep = k;
    }
    if let Some(n) = args.patience {
        cfg.patience = n;
    }
    cfg.validate()?;
    let start = std::time::Instant::now();
    let ds = args.data.load(&args.dataset)?;
    let split = ds.split_named(args.split.as_deref())?;
    let load_s = start.elapsed().as_secs_f64();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("out/train").join(format!(
            "{}-{}",
            slug(&ds.name),
            slug(&cfg.sampler.to_string())
        ))
    });
    if args.out.is_none() {
        crate::out_dir::announce_default("run folder", &out, "--out");
    }
    let resume = args
        .resume
        .as_ref()
        .map(|p| p.clone().unwrap_or_else(|| out.join(CHECKPOINT_FILE)));
    eprintln!(
        "training on {} (split `{}`: {}), {}sampler {}, k = {}, batch {}, dim {}, {} steps, seed {}",
        ds.name,
        split.name,
        split.description,
        cfg.personalize.as_ref().map_or(String::new(), |p| format!(
            "personalized (the last {} interactions{}), ",
            p.history,
            customer_features(&ds, p.demographics)
        )),
        cfg.sampler,
        cfg.k(),
        cfg.batch_size,
        cfg.model.tower.dim,
        cfg.steps,
        cfg.seed
    );
    for note in &ds.notes {
        eprintln!("note: {note}");
    }
    let mut observer = Bar::new(cfg.steps, args.quiet)?;
    let summary = aisle_train::run(
        cfg,
        &ds,
        split,
        &RunOptions {
            out_dir: out.clone(),
            resume,
        },
        &mut observer,
    )?;
    observer.finish();
    println!("sampler              {}", summary.sampler);
    println!(
        "steps                {} ({} in this run)",
        fmt_n(summary.steps as usize),
        fmt_n(summary.steps_run as usize)
    );
    println!(
        "training time        {:.1} s ({:.0} pairs/s; sampling {:.1}%, refresh {:.1} s)",
        summary.train_wall_s,
        summary.pairs_per_s,
        100.0 * summary.sample_share,
        summary.refresh_s
    );
    let (lines, warning) = sampling_lines(&summary);
    print!("{lines}");
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    if !summary.recall_curve.is_empty() {
        let curve: Vec<String> = summary
            .recall_curve
            .iter()
            .map(|(step, _, r)| format!("{step}:{r:.4}"))
            .collect();
        println!("validation R@10      {}", curve.join("  "));
        println!(
            "kept                 step {} ({}, val R@10 {}){}",
            fmt_n(summary.kept_step as usize),
            if summary.kept_step < summary.steps {
                "the best on validation"
            } else {
                "the last step"
            },
            summary
                .kept_recall_at_10
                .map_or("not measured".into(), |r| format!("{r:.4}")),
            if summary.stopped_early {
                format!("; stopped early at step {}", fmt_n(summary.steps as usize))
            } else {
                String::new()
            }
        );
    }
    println!(
        "model                {}",
        crate::out_dir::absolute(&summary.model).display()
    );
    println!(
        "log                  {}",
        crate::out_dir::absolute(&summary.log).display()
    );
    let head = out.join(aisle_search::rerank::HEAD_FILE);
    let mut head_s = None;
    if args.rerank {
        let t = std::time::Instant::now();
        let history = args
            .train
            .config()?
            .personalize
            .map_or(aisle_model::personal::HISTORY_WINDOW, |p| p.history);
        let split = split.clone();
        fit_head(
            &Arc::new(ds),
            &split,
            &summary.model,
            history,
            &head,
            args.quiet,
        )?;
        head_s = Some(t.elapsed().as_secs_f64());
    } else if head.exists() {
        // A head fitted for the model this run replaced would be served with the new one.
        std::fs::remove_file(&head)
            .with_context(|| format!("removing the stale {}", head.display()))?;
        println!(
            "removed              {} (fitted for the previous model; --rerank fits a new one)",
            head.display()
        );
    }
    println!(
        "total                {:.1} s (loading {load_s:.1} s, training {:.1} s{})",
        start.elapsed().as_secs_f64(),
        summary.train_wall_s,
        head_s.map_or(String::new(), |h| format!(", re-ranking head {h:.1} s"))
    );
    if let Some(p) = crate::peak_rss_bytes() {
        println!(
            "peak memory          {:.2} GiB",
            p as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Earlier interactions the towers read while the head is fitted and served: the one constant
/// that serving reads too.
pub(crate) use aisle_search::served::HEAD_TOWER_HISTORY;

/// Fits the re-ranking head for the model at `model` on `split`'s validation queries (one fit,
/// on at most [`aisle_eval::rerank::HEAD_FIT_QUERIES`] of them; the ablation is
/// `aisle experiment`'s) with [`aisle_eval::rerank::fit_head`], which writes it to `out`; prints
/// what it got, and its progress to stderr unless `quiet`. A plain model's towers read
/// `history` earlier interactions meanwhile, a personalized one's [`HEAD_TOWER_HISTORY`].
pub(crate) fn fit_head(
    ds: &Arc<Dataset>,
    split: &Split,
    model: &Path,
    history: usize,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let t = std::time::Instant::now();
    let signals = Arc::new(Signals::of_training(ds, split));
    let job = HeadJob {
        model,
        name: "model".into(),
        options: DenseOptions {
            history,
            history_rule: Default::default(),
            mode: aisle_search::Mode::Dense,
            history_boost: 0.0,
            bm25: aisle_search::FieldBoosts::default(),
        },
        personalized_history: Some(HEAD_TOWER_HISTORY),
        fit: HeadFitOptions {
            seed: split.seed,
            ablation: false,
            ..Default::default()
        },
        save: Some(out),
    };
    let fit = aisle_eval::rerank::fit_head(ds, split, &signals, &job, &mut |l| {
        if !quiet {
            eprintln!("  {l}");
        }
    })?;
    let sample = if fit.validation_queries < fit.sampled_from {
        format!(" (a seeded sample of {})", fmt_n(fit.sampled_from))
    } else {
        String::new()
    };
    println!(
        "re-ranking head      fitted on {} validation queries{sample} in {:.1} s",
        fmt_n(fit.validation_queries),
        t.elapsed().as_secs_f64()
    );
    println!(
        "  validation R@10    {:.4} with the head (in-sample: fitted on the same queries; \
         `aisle experiment` measures it on held-out folds, with the ablation)",
        fit.in_sample_recall_at_10
    );
    println!(
        "  candidate recall   {:.4} of the relevant validation products are among the head's candidates",
        fit.candidate_recall
    );
    let weights: Vec<String> = fit
        .head
        .named()
        .iter()
        .map(|(n, w)| format!("{n} {w:.2}"))
        .collect();
    println!("  weights            {}", weights.join(", "));
    println!("re-ranking head      {}", out.display());
    Ok(())
}

#[derive(Args)]
pub struct EncodeArgs {
    /// A model file written by `aisle train` (model.aisle), or a MiniLM model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Embed this dataset's catalog.
    #[arg(long, conflicts_with = "queries")]
    pub dataset: Option<String>,
    #[command(flatten)]
    pub data: DataOpts,
    /// Embed the queries of this text file, one a line.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Output: FILE.npy (float32 rows, with FILE.ids.txt beside it) or FILE.jsonl.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn encode(args: EncodeArgs) -> Result<()> {
    let (model, made) = aisle_search::model_file::read(&args.model)?;
    let d = model.dim();
    let (ids, vectors) = match (&args.dataset, &args.queries) {
        (Some(name), None) => {
            let ds = args.data.load(name)?;
            let ids: Vec<String> = ds.catalog.iter().map(|(_, p)| p.id.clone()).collect();
            (ids, model.encode_catalog(&ds.catalog, &ds.taxonomy)?)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let queries: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
            let v = model.encode_queries(&texts)?;
            (queries, v)
        }
        _ => bail!("say what to encode: --dataset NAME (its catalog) or --queries FILE"),
    };
    let n = fmt_n(ids.len());
    let wrote = match write_vectors(&args.out, &ids, &vectors, d) {
        Ok(VectorsWritten {
            path,
            ids_path: Some(ids_path),
        }) => format!(
            "wrote {n} x {d} float32 to {} and their ids to {}",
            path.display(),
            ids_path.display()
        ),
        Ok(VectorsWritten { path, .. }) => {
            format!("wrote {n} vectors of {d} to {}", path.display())
        }
        Err(WriteVectorsError::UnknownExtension(path)) => {
            bail!("--out {}: use a .npy or .jsonl file name", path.display())
        }
        Err(e) => return Err(e.into()),
    };
    println!("{wrote}");
    if let (Some((ds, _)), Some(sampler)) = (made.dataset(), made.sampler()) {
        eprintln!("(model trained on {ds}, sampler {sampler})");
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Datasets to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "instacart,bestbuy_xbox")]
    pub datasets: Vec<String>,
    #[command(flatten)]
    pub data: DataOpts,
    /// Samplers to measure, each with its k, as SAMPLER/K, separated by spaces.
    #[arg(
        long,
        value_delimiter = ' ',
        default_value = "in-batch/0 taxonomy/4 random/4 bm25/4 ance:refresh=200/4 ance:refresh=200,index=exact/4"
    )]
    pub runs: Vec<String>,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Timed steps per run.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// log2 of the hashed feature buckets.
    #[arg(long, default_value_t = 20)]
    pub buckets_log2: u8,
    /// Optimiser of the embedding table: row-adagrad or adam.
    #[arg(long, value_parser = parse_sparse, default_value = "row-adagrad")]
    pub optimizer: SparseKind,
}

pub fn bench_train(args: BenchTrainArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!(
        "aisle bench train: batch {}, dim {}, 2^{} buckets, {:?} embedding optimiser, {} warm-up + {} timed steps per run, {threads} threads",
        args.batch_size, args.dim, args.buckets_log2, args.optimizer, args.warmup, args.steps
    );
    println!("goals: >= 50,000 pairs/s in-batch (k = 0); >= 15,000 pairs/s with k = 4 taxonomy negatives; sampling < 5% of step time; peak < 2 GiB");
    println!();
    println!(
        "{:<14} {:<38} {:>2} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>11} {:>7} {:>7}",
        "dataset",
        "sampler",
        "k",
        "pairs/s",
        "step ms",
        "sample",
        "forward",
        "backward",
        "sample%",
        "refresh ms",
        "q ids",
        "p ids"
    );
    let mut all: Vec<(String, BenchFigures)> = Vec::new();
    for name in &args.datasets {
        let ds = args.data.load(name)?;
        let split = ds.split_named(None)?;
        for run in &args.runs {
            let (spec, k) = run
                .rsplit_once('/')
                .with_context(|| format!("--runs {run}: expected SAMPLER/K"))?;
            let k: usize = k
                .parse()
                .with_context(|| format!("--runs {run}: K must be a whole number"))?;
            let mut cfg = TrainConfig {
                sampler: SamplerSpec::parse(spec)?,
                negatives: k,
                batch_size: args.batch_size,
                ..TrainConfig::default()
            };
            cfg.model.tower.dim = args.dim;
            cfg.model.featurizer.buckets_log2 = args.buckets_log2;
            cfg.optim.sparse = args.optimizer;
            let f = aisle_train::bench::bench(cfg, &ds, split, args.warmup, args.steps)?;
            let refresh = match f.refresh_every {
                Some(r) => format!("{:.0} /{r}", f.refresh_ms),
                None => "-".into(),
            };
            println!(
                "{:<14} {:<38} {:>2} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6.1}% {:>11} {:>7.1} {:>7.1}",
                ds.name,
                f.sampler,
                f.negatives,
                f.pairs_per_s,
                f.step_ms,
                f.sample_ms,
                f.forward_ms,
                f.backward_ms,
                100.0 * f.sample_share,
                refresh,
                f.query_ids,
                f.product_ids
            );
            all.push((ds.name.clone(), f));
        }
    }
    println!();
    match crate::peak_rss_bytes() {
        Some(p) => println!(
            "peak memory {:.2} GiB (whole process: every run above, the datasets and the 2^{} x {} table with its optimiser state)",
            p as f64 / (1u64 << 30) as f64,
            args.buckets_log2,
            args.dim
        ),
        None => println!("peak memory unknown (no /proc/self/status)"),
    }
    println!("refresh ms /R: milliseconds of one ANCE re-encode and re-index, done every R steps; pairs/s counts it at that interval");
    println!("step ms = sample + forward + backward per step (refresh apart); sample% = sampling's share of it; q ids / p ids: mean hashed features per text");
    Ok(())
}

/// What the personalized tower reads of the customers besides their history, for the run's
/// first line: their feature fields, or why none.
fn customer_features(ds: &aisle_core::Dataset, wanted: bool) -> String {
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
