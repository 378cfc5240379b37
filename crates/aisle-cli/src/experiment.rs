//! `aisle experiment`: its flags. The experiment, every baseline and negative sampler under one
//! budget on every protocol of a dataset, is [`aisle_eval::experiment`]'s, written to
//! reports/DATASET/ (report.md, results.json, plots) by [`aisle_eval::report`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use aisle_eval::experiment::{self, Budget, ExperimentConfig, Inputs};

use crate::DataOpts;

#[derive(Args)]
pub struct ExperimentArgs {
    /// bestbuy_xbox, instacart, synthetic, or any dataset name or folder `aisle train` reads.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataOpts,
    #[command(flatten)]
    pub budget: Budget,
    /// Protocols (split names, comma-separated) [default: every split of the dataset].
    #[arg(long, value_delimiter = ',')]
    pub splits: Vec<String>,
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
    let mut budget = args.budget;
    (budget.seed, budget.runs_dir) = (args.data.seed, runs_dir);
    let cfg = ExperimentConfig::from_budget(&budget)?;
    let minilm_dir = aisle_transformer::default_dir(Path::new("."));
    let (minilm, absent) =
        experiment::minilm_rows(!args.no_minilm, budget.minilm_tune_steps, &minilm_dir);
    eprintln!("{}", cfg.describe(&ds, &splits));
    let inputs = Inputs {
        ds: Arc::clone(&ds),
        splits,
        truth: truth.as_ref(),
        command,
        quick: budget.quick,
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
