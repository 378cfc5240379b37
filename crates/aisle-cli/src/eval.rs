//! `aisle eval`: baselines and trained models on a split's test (or validation) queries.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use aisle_eval::evaluate::{Progress, ProgressLog};
use aisle_eval::plan::{ModelSpec, Plan, PlanOptions};
use aisle_eval::{EvalConfig, Part};
use aisle_search::served::Vectors;
use aisle_search::{IndexChoice, Mode};

use crate::DataOpts;

#[derive(Args)]
pub struct EvalArgs {
    /// A dataset name or a folder in the generic format.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataOpts,
    /// The split [default: the dataset's first].
    #[arg(long)]
    pub split: Option<String>,
    /// Which queries of the split.
    #[arg(long, value_enum, default_value_t = Part::Test)]
    pub part: Part,
    /// A trained model to evaluate, as PATH or NAME=PATH (repeatable): an n-gram model file, or
    /// a MiniLM model folder (pretrained, or fine-tuned by `aisle train --tower minilm`).
    #[arg(long)]
    pub model: Vec<String>,
    /// Also evaluate each model fused with BM25 in this mode (rrf, rrf:K or weighted:ALPHA),
    /// through the same Searcher `aisle serve` uses.
    #[arg(long, value_parser = parse_hybrid)]
    pub hybrid: Option<Mode>,
    /// Also evaluate each model with the history term in its score, `q'.p + B * max_j h_j.p`
    /// over the customer's earlier products (repeatable: one row per value).
    #[arg(long)]
    pub history_boost: Vec<f32>,
    /// Earlier interactions a personalized model and the history term read [default: as the
    /// model was trained, else 50].
    #[arg(long)]
    pub history: Option<usize>,
    /// Also evaluate each model re-ranked by the learned head in the rerank.json beside it
    /// (written by `aisle train --rerank`), its signals built from the split's training part.
    /// A model without one gets no re-ranked row, and the report says so.
    #[arg(long)]
    pub rerank: bool,
    /// Leave out BM25, popularity, query memorisation and per-user re-purchase.
    #[arg(long)]
    pub no_baselines: bool,
    /// Hide every customer's history from the trained models: each test customer as if new,
    /// known only by their features (segment and the other `users` columns) where a
    /// personalized model reads them. Simulates cold-start customers on any protocol.
    #[arg(long)]
    pub hide_histories: bool,
    /// Bootstrap resamples of the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Evaluate a model trained on another dataset (its recorded dataset digest is not this
    /// dataset's). Refused without it; with it, the report says so.
    #[arg(long)]
    pub allow_other_dataset: bool,
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,
    /// HNSW search effort of the Qdrant backend (hnsw_ef) [default: the collection's].
    #[arg(long)]
    pub expansion_search: Option<usize>,
}

fn parse_hybrid(s: &str) -> Result<Mode, String> {
    match Mode::parse(s)? {
        m @ Mode::Hybrid(_) => Ok(m),
        _ => Err(format!("`{s}`: expected rrf, rrf:K or weighted:ALPHA")),
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let ds = Arc::new(args.data.load(&args.dataset)?);
    let split = ds.split_named(args.split.as_deref())?;
    let part = args.part;
    let vectors = args
        .backend
        .qdrant_vectors()?
        .unwrap_or(Vectors::Embedded(IndexChoice::Exact));
    let models = args
        .model
        .iter()
        .map(|spec| ModelSpec::parse(spec, &vectors))
        .collect::<aisle_eval::Result<Vec<_>>>()?;
    let options = PlanOptions {
        baselines: !args.no_baselines,
        models,
        hybrid: args.hybrid,
        history_boosts: args.history_boost.clone(),
        history: args.history,
        rerank: args.rerank,
        hide_histories: args.hide_histories,
        part,
        allow_other_dataset: args.allow_other_dataset,
        search_effort: args.expansion_search,
    };
    let plan = Plan::new(&ds, split, &options)?;
    for line in &plan.said {
        eprintln!("{line}");
    }
    let cfg = EvalConfig {
        part,
        resamples: args.resamples,
        seed: args.data.seed,
        ..EvalConfig::default()
    };
    let mut bar = RowsBar::new()?;
    let report = plan.evaluate(&cfg, &mut |p| bar.show(p))?;
    bar.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// Progress of the rows on stderr: the row being built or ranked, with an ETA, and a line per
/// row done. The bar is drawn only when stderr is a terminal (indicatif hides it otherwise);
/// into a log go the lines of [`ProgressLog`]: every 30 s of a row's ranking, with the time
/// left, and the line per row. stdout's tables are untouched.
struct RowsBar {
    bar: ProgressBar,
    ranking: ProgressStyle,
    building: ProgressStyle,
    log: ProgressLog,
}

impl RowsBar {
    fn new() -> Result<RowsBar> {
        let bar = ProgressBar::new(0);
        Ok(RowsBar {
            bar,
            ranking: ProgressStyle::with_template(
                "{prefix}  {bar:30} {pos}/{len} queries  {per_sec}  ETA {eta}",
            )
            .context("progress bar template")?,
            building: ProgressStyle::with_template("{prefix}  {spinner} {msg} ({elapsed})")
                .context("progress bar template")?,
            log: ProgressLog::new(std::time::Duration::from_secs(30)),
        })
    }

    fn show(&mut self, p: Progress<'_>) {
        match p {
            Progress::Building { .. } => {
                self.bar.set_style(self.building.clone());
                self.bar.set_prefix(p.label().unwrap_or_default());
                self.bar.set_message("building");
                self.bar.reset_elapsed();
                self.bar
                    .enable_steady_tick(std::time::Duration::from_millis(200));
            }
            Progress::Ranking { queries, .. } => {
                self.bar.disable_steady_tick();
                self.bar.set_length(queries as u64);
                self.bar.set_position(0);
                self.bar.reset_eta();
                self.bar.set_prefix(p.label().unwrap_or_default());
                self.bar.set_style(self.ranking.clone());
            }
            Progress::Ranked { done, .. } => self.bar.set_position(done as u64),
            Progress::RowDone { .. } => {}
        }
        // Into a log (stderr not a terminal, the bar hidden) every line goes; over a bar, the
        // line per row.
        if let Some(line) = self.log.line(&p) {
            if self.bar.is_hidden() {
                eprintln!("{line}");
            } else if matches!(p, Progress::RowDone { .. }) {
                self.bar.println(line);
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
