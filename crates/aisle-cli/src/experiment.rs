//! `aisle experiment`: every baseline and negative sampler under one budget, on every protocol of
//! a dataset, written to reports/DATASET/ (report.md, results.json, plots).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use aisle_core::adapters;
use aisle_core::synth::{self, SynthConfig};
use aisle_eval::experiment::{self, DenseRow, ExperimentConfig, Inputs};
use aisle_search::Mode;
use aisle_train::TrainConfig;

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
    let command = std::iter::once("aisle".to_owned())
        .chain(std::env::args().skip(1).map(|a| shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ");
    // The synthetic world is generated here rather than loaded by name, to keep its truth for
    // the simulated A/B test (the same world `aisle train --dataset synthetic` trains on).
    let (ds, truth) = if args.dataset == "synthetic" {
        let world = synth::generate(&SynthConfig {
            seed: args.data.seed(),
            ..Default::default()
        })?;
        let mut ds = world.dataset;
        adapters::add_default_splits(&mut ds, args.data.seed())?;
        (ds, Some(world.truth))
    } else {
        (args.data.load(&args.dataset)?, None)
    };
    let ds = Arc::new(ds);
    let splits = if args.splits.is_empty() {
        ds.splits.iter().map(|s| s.name.clone()).collect()
    } else {
        args.splits.clone()
    };
    for s in &splits {
        anyhow::ensure!(
            ds.split(s).is_some(),
            "dataset `{}` has no split `{s}` (it has: {})",
            ds.name,
            ds.splits
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    anyhow::ensure!(
        !splits.is_empty(),
        "dataset `{}` has no split to evaluate on",
        ds.name
    );
    let rows = if args.row.is_empty() {
        DenseRow::standard()?
    } else {
        args.row
            .iter()
            .map(|arg| {
                // NAME=SPEC, or a bare SPEC (which may itself hold `=`, as in ance:refresh=100):
                // a name holds no `:`.
                let (name, spec) = match arg.split_once('=') {
                    Some((name, spec)) if !name.contains(':') => (name.trim(), spec),
                    _ => (arg.as_str(), arg.as_str()),
                };
                let sampler = aisle_train::SamplerSpec::parse(spec)
                    .with_context(|| format!("--row {arg}"))?;
                Ok(DenseRow {
                    name: name.to_owned(),
                    taxonomy: experiment::uses_taxonomy(&sampler),
                    sampler,
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let quick = args.quick;
    let n_seeds = args.seeds.unwrap_or(if quick { 1 } else { 3 });
    anyhow::ensure!(n_seeds >= 1, "--seeds must be at least 1");
    let mut train = TrainConfig {
        steps: args.steps.unwrap_or(if quick { 1000 } else { 2000 }),
        eval_every: 250,
        eval_queries: if quick { 500 } else { 1000 },
        ..TrainConfig::default()
    };
    train.log_every = 50;
    if let Some(b) = args.batch_size {
        train.batch_size = b;
    }
    if let Some(k) = args.negatives {
        train.negatives = k;
    }
    if let Some(d) = args.dim {
        train.model.tower.dim = d;
    }
    if let Some(b) = args.buckets_log2 {
        train.model.featurizer.buckets_log2 = b;
    }
    train.validate()?;
    let runs_dir = args
        .runs
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/experiment").join(&ds.name));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&ds.name));
    if args.runs.is_none() {
        crate::out_dir::announce_default("trained runs", &runs_dir, "--runs");
    }
    if args.out.is_none() {
        crate::out_dir::announce_default("report", &out, "--out");
    }
    let cfg = ExperimentConfig {
        train,
        seeds: (0..n_seeds).map(|i| 42 + i).collect(),
        rows,
        personalized: !args.no_personalized,
        minilm_tune: (args.minilm_tune_steps > 0).then(|| aisle_train::transformer::TuneConfig {
            steps: args.minilm_tune_steps,
            batch_size: args.minilm_tune_batch,
            negatives: 1,
            ..Default::default()
        }),
        history_boosts: args.history_boosts.clone(),
        history_term_window: 1000,
        rerank: !args.no_rerank,
        hybrid: Mode::parse("weighted:0.8").map_err(anyhow::Error::msg)?,
        resamples: if quick { 500 } else { 1000 },
        rounds: if quick { 2000 } else { 10_000 },
        seed: args.data.seed(),
        runs_dir,
    };
    let mut absent = BTreeMap::new();
    let minilm_dir = aisle_transformer::default_dir(Path::new("."));
    let minilm = if args.no_minilm {
        absent.insert(
            aisle_eval::zero_shot::MINILM.to_owned(),
            "left out (--no-minilm)".to_owned(),
        );
        None
    } else if aisle_transformer::is_present(&minilm_dir) {
        Some(minilm_dir)
    } else {
        absent.insert(
            aisle_eval::zero_shot::MINILM.to_owned(),
            format!(
                "its files are not in {} (run `bash scripts/fetch-minilm.sh`, or set AISLE_MINILM_DIR)",
                minilm_dir.display()
            ),
        );
        None
    };
    let tuned_rows = format!("{} in-batch / TB-HNS", experiment::MINILM_TUNED);
    if args.minilm_tune_steps == 0 {
        absent.insert(
            tuned_rows,
            "off: fine-tuning a transformer on a CPU takes minutes per row (`--minilm-tune-steps N` turns it on)".to_owned(),
        );
    } else if minilm.is_none() {
        absent.insert(
            tuned_rows,
            "the MiniLM files are not there (see above)".to_owned(),
        );
    }
    eprintln!(
        "aisle experiment: {} ({} products), protocols {}, {} dense rows x {} seeds, {} steps each",
        ds.name,
        ds.catalog.len(),
        splits.join(", "),
        cfg.rows.len(),
        cfg.seeds.len(),
        cfg.train.steps
    );
    let exp = experiment::run(
        Inputs {
            ds: Arc::clone(&ds),
            splits,
            truth: truth.as_ref(),
            command,
            quick,
            absent,
            minilm,
        },
        &cfg,
        &mut |line| eprintln!("{line}"),
    )?;
    let written = aisle_eval::report::write(&exp, &out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    for p in &exp.protocols {
        println!("{} / {}:", exp.dataset, p.split);
        for row in &p.report.rows {
            if let Some(e) = row.micro.get("recall@10") {
                println!(
                    "  {:<48} R@10 {:.3} [{:.3}, {:.3}]{}",
                    row.system,
                    e.mean,
                    e.low,
                    e.high,
                    if row.system == p.report.best {
                        "  best"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    println!(
        "wrote {} and {} ({} plots) in {:.0} s",
        written.report.display(),
        written.results.display(),
        written.plots.len(),
        exp.wall_s
    );
    Ok(())
}

/// `arg` as a POSIX shell word: unchanged when it holds only safe characters, else single-quoted.
fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("--dataset"), "--dataset");
        assert_eq!(shell_quote("mix:0.5*taxonomy"), "'mix:0.5*taxonomy'");
        assert_eq!(shell_quote("TB leaf=taxonomy"), "'TB leaf=taxonomy'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
