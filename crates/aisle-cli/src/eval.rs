//! `aisle eval`: baselines and trained models on a split's test (or validation) queries.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use aisle_eval::{
    evaluate, Bm25Ranker, DenseRanker, EvalConfig, MemorisationRanker, Part, PopularityRanker,
    Ranker, RepurchaseRanker,
};

use aisle_search::Mode;

use crate::train::pick_split;
use crate::DataOpts;

#[derive(Clone, Copy, ValueEnum)]
pub enum PartArg {
    Test,
    Validation,
}

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
    #[arg(long, value_enum, default_value_t = PartArg::Test)]
    pub part: PartArg,
    /// A trained model to evaluate, as PATH or NAME=PATH (repeatable).
    #[arg(long)]
    pub model: Vec<String>,
    /// Also evaluate each model fused with BM25 in this mode (rrf, rrf:K or weighted:ALPHA),
    /// through the same Searcher `aisle serve` uses.
    #[arg(long, value_parser = parse_hybrid)]
    pub hybrid: Option<Mode>,
    /// Leave out BM25, popularity, query memorisation and per-user re-purchase.
    #[arg(long)]
    pub no_baselines: bool,
    /// Bootstrap resamples of the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_hybrid(s: &str) -> Result<Mode, String> {
    match Mode::parse(s)? {
        m @ Mode::Hybrid(_) => Ok(m),
        _ => Err(format!("`{s}`: expected rrf, rrf:K or weighted:ALPHA")),
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let ds = Arc::new(args.data.load(&args.dataset)?);
    let split = pick_split(&ds, args.split.as_deref())?;
    let mut owned: Vec<Box<dyn Ranker>> = Vec::new();
    if !args.no_baselines {
        owned.push(Box::new(Bm25Ranker::new(&ds)?));
        owned.push(Box::new(PopularityRanker::new(&ds, split)));
        owned.push(Box::new(MemorisationRanker::new(&ds, split)));
        if split
            .test
            .iter()
            .chain(&split.validation)
            .any(|q| q.user.is_some())
        {
            owned.push(Box::new(RepurchaseRanker::new(&ds, split)));
        }
    }
    for spec in &args.model {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (Some(n.to_owned()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        };
        let crate::model_file::ModelFile {
            model,
            meta,
            history,
        } = crate::model_file::load(&path, &ds, "evaluated")?;
        let name = name.unwrap_or_else(|| match meta.get("sampler").and_then(|s| s.as_str()) {
            Some(s) => format!("dense {s}"),
            None => format!("dense {}", path.display()),
        });
        let hybrid = args.hybrid.map(|mode| (mode, model.clone()));
        owned.push(Box::new(
            DenseRanker::new(name.clone(), model, &ds, split, history)
                .with_context(|| format!("encoding the catalog with {}", path.display()))?,
        ));
        if let Some((mode, model)) = hybrid {
            owned.push(Box::new(
                DenseRanker::with_mode(
                    format!("{name} + BM25 ({mode})"),
                    model,
                    &ds,
                    split,
                    history,
                    mode,
                )
                .with_context(|| format!("encoding the catalog with {}", path.display()))?,
            ));
        }
    }
    anyhow::ensure!(
        !owned.is_empty(),
        "nothing to evaluate: give --model or drop --no-baselines"
    );
    let rankers: Vec<&dyn Ranker> = owned.iter().map(|r| r.as_ref()).collect();
    let cfg = EvalConfig {
        part: match args.part {
            PartArg::Test => Part::Test,
            PartArg::Validation => Part::Validation,
        },
        resamples: args.resamples,
        seed: args.data.seed(),
        ..EvalConfig::default()
    };
    let report = evaluate(&ds, split, &rankers, &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
