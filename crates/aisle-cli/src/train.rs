//! `aisle train`, `aisle encode` and `aisle bench train`: their flags and the progress bar; the
//! work is aisle-train's (the run, its summary, the bench), aisle-eval's (the re-ranking head)
//! and aisle-search's (vectors out).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use aisle_core::io::WriteVectorsError;
use aisle_core::{Dataset, Split};
use aisle_model::personal::HISTORY_WINDOW;
use aisle_search::export::{export, Texts};
use aisle_search::rerank::{HeadFile, HEAD_FILE};
use aisle_search::SearchError;
use aisle_train::run::{RunOptions, CHECKPOINT_FILE};
use aisle_train::{Observer, Overrides, RunningFigures, StepStats, TrainConfig};

use crate::DataOpts;

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
    /// A TOML file of training settings (see docs/training.md); the flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub train: Overrides,
    /// Output folder for model.aisle, train_log.jsonl and checkpoints
    /// [default: out/train/DATASET-SAMPLER].
    #[arg(long)]
    pub out: Option<PathBuf>,
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

impl TrainArgs {
    /// The configuration: the defaults, then the `--config` file, then the flags.
    fn config(&self) -> Result<TrainConfig> {
        let base = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => TrainConfig::default(),
        };
        Ok(base.overridden(&self.train)?)
    }
}

/// A training run's progress bar on stderr (hidden when quiet), with the loss and validation
/// Recall@10 of [`RunningFigures`].
pub(crate) struct Bar {
    bar: ProgressBar,
    figures: RunningFigures,
}

impl Observer for Bar {
    fn started(&mut self, first: u64, total: u64, _sampler: &str) {
        self.bar.set_length(total);
        self.bar.set_position(first);
        self.bar.reset_eta();
    }

    fn stepped(&mut self, s: &StepStats) {
        self.bar.inc(1);
        if self.figures.stepped(s) {
            self.bar.set_message(self.figures.message());
        }
    }

    fn evaluated(&mut self, _step: u64, r: f64) {
        self.figures.evaluated(r);
        self.bar.set_message(self.figures.message());
    }
}

impl Bar {
    pub(crate) fn new(quiet: bool) -> Result<Bar> {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
                .context("progress bar template")?,
        );
        Ok(Bar {
            bar,
            figures: RunningFigures::default(),
        })
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `aisle train` with an n-gram tower (`main` sends `--tower minilm` to `train_minilm`).
pub fn train(args: TrainArgs) -> Result<()> {
    let cfg = args.config()?;
    let start = Instant::now();
    let ds = args.data.load(&args.dataset)?;
    let split = ds.split_named(args.split.as_deref())?;
    let load_s = start.elapsed().as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| aisle_train::run::default_out_dir(&ds, &cfg));
    if args.out.is_none() {
        crate::out_dir::announce_default("run folder", &out, "--out");
    }
    let resume = args
        .resume
        .as_ref()
        .map(|p| p.clone().unwrap_or_else(|| out.join(CHECKPOINT_FILE)));
    eprintln!("{}", aisle_train::run::describe(&cfg, &ds, split));
    for note in &ds.notes {
        eprintln!("note: {note}");
    }
    let history = cfg
        .personalize
        .as_ref()
        .map_or(HISTORY_WINDOW, |p| p.history);
    let mut bar = Bar::new(args.quiet)?;
    let options = RunOptions {
        out_dir: out.clone(),
        resume,
    };
    let summary = aisle_train::run(cfg, &ds, split, &options, &mut bar)?;
    bar.finish();
    print!("{}", summary.render());
    if let Some(warning) = summary.fallback_warning() {
        eprintln!("{warning}");
    }
    let mut head_s = None;
    if args.rerank {
        let (split, ds) = (split.clone(), Arc::new(ds));
        let head = out.join(HEAD_FILE);
        head_s = Some(fit_head(
            &ds,
            &split,
            &summary.model,
            history,
            &head,
            args.quiet,
        )?);
    } else if let Some(removed) = HeadFile::remove_stale(&out)? {
        println!("{removed}");
    }
    let total_s = start.elapsed().as_secs_f64();
    print!("{}", summary.closing(total_s, load_s, head_s));
    Ok(())
}

/// Fits the re-ranking head `aisle serve` ranks the model at `model` with, into `out`
/// ([`aisle_eval::rerank::fit_for_serving`]); prints what it got, and its progress on stderr
/// unless `quiet`. Returns its seconds.
pub(crate) fn fit_head(
    ds: &Arc<Dataset>,
    split: &Split,
    model: &Path,
    history: usize,
    out: &Path,
    quiet: bool,
) -> Result<f64> {
    let head = aisle_eval::rerank::fit_for_serving(ds, split, model, history, out, &mut |l| {
        if !quiet {
            eprintln!("  {l}");
        }
    })?;
    print!("{}", head.render());
    Ok(head.seconds)
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
    let (ds, queries);
    let texts = match (&args.dataset, &args.queries) {
        (Some(name), None) => {
            ds = args.data.load(name)?;
            Texts::Catalog(&ds)
        }
        (None, Some(path)) => {
            queries = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Texts::Queries(&queries)
        }
        _ => bail!("say what to encode: --dataset NAME (its catalog) or --queries FILE"),
    };
    match export(model.as_ref(), texts, &args.out) {
        Ok(exported) => println!("{}", exported.line()),
        Err(SearchError::Vectors(WriteVectorsError::UnknownExtension(path))) => {
            bail!("--out {}: use a .npy or .jsonl file name", path.display())
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(made) = made.trained_on() {
        eprintln!("({made})");
    }
    Ok(())
}
