//! `aisle eval`: baselines and trained models on a split's test (or validation) queries.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use aisle_eval::{
    evaluate, Bm25Ranker, DenseOptions, DenseRanker, EvalConfig, MemorisationRanker, Part,
    PopularityRanker, Ranker, RepurchaseRanker,
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
    let split = pick_split(&ds, args.split.as_deref())?;
    let mut owned: Vec<Box<dyn Ranker>> = Vec::new();
    let signals = args
        .rerank
        .then(|| Arc::new(aisle_eval::rerank::split_signals(&ds, split)));
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
    // Notes every figure of the report must carry (models let through from other data, rows
    // left out).
    let mut notes: Vec<String> = Vec::new();
    let mut heads = 0;
    for spec in &args.model {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (Some(n.to_owned()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        };
        let crate::model_file::ModelFile {
            model,
            meta,
            history,
            other_dataset,
        } = crate::model_file::load(&path, &ds, "evaluated", args.allow_other_dataset)?;
        notes.extend(other_dataset);
        let history = args.history.unwrap_or(history);
        let index = args
            .backend
            .choice(&path)?
            .unwrap_or(aisle_search::IndexChoice::Exact);
        let dense = |row: String, model: aisle_model::Model, options: &DenseOptions| {
            let ranker = DenseRanker::with_index(row, model, &ds, split, options, index.clone())
                .with_context(|| format!("encoding the catalog with {}", path.display()))?;
            if let Some(ef) = args.expansion_search {
                ranker.set_search_effort(ef);
            }
            anyhow::Ok(ranker)
        };
        let name = name.unwrap_or_else(|| match meta.get("sampler").and_then(|s| s.as_str()) {
            Some(s) => format!("dense {s}"),
            None => format!("dense {}", path.display()),
        });
        // Extra rows of the same model: fused with BM25, or with the history term.
        let mut variants: Vec<(String, DenseOptions)> = Vec::new();
        if let Some(mode) = args.hybrid {
            variants.push((
                format!("{name} + BM25 ({mode})"),
                DenseOptions {
                    history,
                    mode,
                    history_boost: 0.0,
                },
            ));
        }
        for &beta in &args.history_boost {
            anyhow::ensure!(
                beta.is_finite() && beta > 0.0,
                "--history-boost {beta}: expected a number > 0"
            );
            variants.push((
                format!("{name} + history x{beta}"),
                DenseOptions {
                    history,
                    mode: Mode::Dense,
                    history_boost: beta,
                },
            ));
        }
        let head_path = path.with_file_name(aisle_search::rerank::HEAD_FILE);
        if signals.is_some() && !head_path.exists() {
            // One model without a head leaves out its re-ranked row, not the whole run.
            let note = format!(
                "--rerank: no {} beside {}, so it has no re-ranked row (fit one with `aisle train \
                 --rerank`)",
                aisle_search::rerank::HEAD_FILE,
                path.display()
            );
            eprintln!("note: {note}");
            notes.push(note);
        }
        if let Some(signals) = signals.as_ref().filter(|_| head_path.exists()) {
            heads += 1;
            let (head, saved) = aisle_search::rerank::HeadFile::load(&head_path)?;
            saved.check_model(&head_path, &path)?;
            anyhow::ensure!(
                matches!(args.part, PartArg::Test),
                "--rerank with --part validation: {} was fitted on these very queries, so its \
                 figures would be in-sample (its held-out validation figures are in the file's \
                 `fitted`)",
                head_path.display()
            );
            if let Some(fitted) = saved.fitted.get("split").and_then(|s| s.as_str()) {
                anyhow::ensure!(
                    fitted == split.name,
                    "--rerank: {} was fitted on split `{fitted}`'s validation queries, which may be \
                     split `{}`'s test queries; pass --split {fitted}",
                    head_path.display(),
                    split.name
                );
            }
            let options = DenseOptions {
                history: if model.personal.is_some() {
                    args.history.unwrap_or(crate::train::HEAD_TOWER_HISTORY)
                } else {
                    history
                },
                mode: Mode::Dense,
                history_boost: 0.0,
            };
            let mut ranker = dense(
                format!("{name} + learned re-ranking"),
                model.clone(),
                &options,
            )?;
            ranker.set_reranking(Arc::clone(signals), Some(head))?;
            owned.push(Box::new(ranker));
        }
        for (row, options) in &variants {
            owned.push(Box::new(dense(row.clone(), model.clone(), options)?));
        }
        owned.push(Box::new(dense(
            name,
            model,
            &DenseOptions {
                history,
                mode: Mode::Dense,
                history_boost: 0.0,
            },
        )?));
    }
    anyhow::ensure!(
        !args.rerank || heads > 0,
        "--rerank: none of the models has a {} beside it (fit one with `aisle train --rerank`)",
        aisle_search::rerank::HEAD_FILE
    );
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
    let mut report = evaluate(&ds, split, &rankers, &cfg)?;
    report.notes.extend(notes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
