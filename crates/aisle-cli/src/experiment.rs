//! `aisle experiment`: its flags. The experiment, every baseline and negative sampler under one
//! budget on every protocol of a dataset, is [`aisle_eval::experiment`]'s, written to
//! reports/DATASET/ (report.md, results.json, plots) by [`aisle_eval::report`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use aisle_eval::experiment::{self, Budget, DenseRow, ExperimentConfig, Inputs};

use crate::DataOpts;

#[derive(Args)]
pub struct ExperimentArgs {
    /// bestbuy_xbox, instacart, synthetic, or any dataset name or folder `aisle train` reads.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataOpts,
    /// A smaller budget (1,000 steps, one seed, 500 validation queries, 500 bootstrap
    /// resamples): minutes instead of tens of minutes.
    #[arg(long)]
    pub quick: bool,
    /// Training seeds per dense row [default: 3, or 1 with --quick].
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Training steps of every dense row [default: 2000, or 1000 with --quick].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Pairs per step of every dense row [default: 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Sampled negatives per pair [default: 4].
    #[arg(long)]
    pub negatives: Option<usize>,
    /// Embedding dimension [default: 128].
    #[arg(long)]
    pub dim: Option<usize>,
    /// log2 of the hashed feature buckets [default: 20].
    #[arg(long)]
    pub buckets_log2: Option<u8>,
    /// Protocols (split names, comma-separated) [default: every split of the dataset].
    #[arg(long, value_delimiter = ',')]
    pub splits: Vec<String>,
    /// Dense rows to train, by sampler spec, as NAME=SPEC (repeatable) [default: in-batch,
    /// random, BM25, ANCE and the TB-HNS variants].
    #[arg(long)]
    pub row: Vec<String>,
    /// Leave out the personalized rows.
    #[arg(long)]
    pub no_personalized: bool,
    /// Also fine-tune MiniLM (when its files are prepared) for this many steps on the first
    /// seed, with in-batch negatives and with the best TB-HNS variant [default: 0, off].
    #[arg(long, default_value_t = 0)]
    pub minilm_tune_steps: u64,
    /// Pairs per fine-tuning step of MiniLM.
    #[arg(long, default_value_t = 16)]
    pub minilm_tune_batch: usize,
    /// Candidate weights B of the history term (`q'.p + B * max_j h_j.p`), one chosen per
    /// protocol on validation Recall@10 of the personalized row (the smaller among ties); a
    /// choice of 0 leaves the history-term row out, so `--history-boosts 0` never adds it.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,1,2,4")]
    pub history_boosts: Vec<f32>,
    /// Leave out the personalized row's learned re-ranking head (fitted on validation).
    #[arg(long)]
    pub no_rerank: bool,
    /// Leave out the pretrained MiniLM row even when its files are prepared.
    #[arg(long)]
    pub no_minilm: bool,
    /// Where report.md, results.json and the plots go [default: reports/DATASET].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the trained models and logs go [default: out/experiment/DATASET].
    #[arg(long)]
    pub runs: Option<PathBuf>,
}

pub fn experiment(args: ExperimentArgs) -> Result<()> {
    let command = experiment::command_line(std::env::args().skip(1));
    let (ds, truth) = if args.dataset == "synthetic" {
        let (ds, truth) = experiment::synthetic_world(args.data.seed)?;
        (ds, Some(truth))
    } else {
        (args.data.load(&args.dataset)?, None)
    };
    let ds = Arc::new(ds);
    let splits = experiment::protocols(&ds, &args.splits)?;
    let rows = args
        .row
        .iter()
        .map(|arg| DenseRow::parse(arg).with_context(|| format!("--row {arg}")))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(args.seeds != Some(0), "--seeds must be at least 1");
    let runs_dir = args
        .runs
        .clone()
        .unwrap_or_else(|| experiment::default_runs_dir(&ds));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| experiment::default_report_dir(&ds));
    if args.runs.is_none() {
        crate::out_dir::announce_default("trained runs", &runs_dir, "--runs");
    }
    if args.out.is_none() {
        crate::out_dir::announce_default("report", &out, "--out");
    }
    let cfg = ExperimentConfig::from_budget(&Budget {
        quick: args.quick,
        seeds: args.seeds,
        steps: args.steps,
        batch_size: args.batch_size,
        negatives: args.negatives,
        dim: args.dim,
        buckets_log2: args.buckets_log2,
        rows,
        personalized: !args.no_personalized,
        minilm_tune_steps: args.minilm_tune_steps,
        minilm_tune_batch: args.minilm_tune_batch,
        history_boosts: args.history_boosts.clone(),
        rerank: !args.no_rerank,
        seed: args.data.seed,
        runs_dir,
    })?;
    let minilm_dir = aisle_transformer::default_dir(Path::new("."));
    let (minilm, absent) =
        experiment::minilm_rows(!args.no_minilm, args.minilm_tune_steps, &minilm_dir);
    eprintln!("{}", cfg.describe(&ds, &splits));
    let inputs = Inputs {
        ds: Arc::clone(&ds),
        splits,
        truth: truth.as_ref(),
        command,
        quick: args.quick,
        absent,
        minilm,
    };
    let exp = experiment::run(inputs, &cfg, &mut |line| eprintln!("{line}"))?;
    let written = aisle_eval::report::write(&exp, &out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    print!("{}", exp.summary());
    println!(
        "wrote {} and {} ({} plots) in {:.0} s",
        written.report.display(),
        written.results.display(),
        written.plots.len(),
        exp.wall_s
    );
    Ok(())
}
