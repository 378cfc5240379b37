//! `aisle eval`: baselines and trained models on a split's test (or validation) queries.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use aisle_eval::evaluate::Progress;
use aisle_eval::{
    Bm25Ranker, DenseOptions, DenseRanker, EvalConfig, EvalError, Group, HistoryRule, Member,
    MemorisationRanker, Part, PopularityRanker, Ranker, RepurchaseRanker,
};
use aisle_model::Encoder;

use aisle_search::model_file::Made;
use aisle_search::{IndexChoice, Mode};

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

/// A row of the report, built when its turn comes ([`Member::Lazy`]) and dropped after it.
enum Planned {
    Bm25,
    Popularity,
    Memorisation,
    Repurchase,
    /// A row of the `model`-th model file.
    Dense {
        model: usize,
        name: String,
        options: DenseOptions,
        head: Option<aisle_search::Reranker>,
    },
}

/// A model file given with `--model`, checked before the first row is ranked.
struct Checked {
    path: PathBuf,
    made: Made,
    index: IndexChoice,
}

/// The model whose rows are being evaluated, shared by them: one model in memory at a time
/// (for the default n-gram model an embedding table of 2^20 x 128 f32, 512 MiB), whatever the
/// number of rows.
struct Current<'a> {
    models: &'a [Checked],
    loaded: RefCell<Option<(usize, Arc<dyn Encoder>)>>,
}

impl Current<'_> {
    fn get(&self, k: usize) -> Result<Arc<dyn Encoder>> {
        let mut loaded = self.loaded.borrow_mut();
        if let Some((_, model)) = loaded.as_ref().filter(|(i, _)| *i == k) {
            return Ok(Arc::clone(model));
        }
        // The previous model's table is freed before the next one is read.
        *loaded = None;
        let path = &self.models[k].path;
        let (model, made) = aisle_search::model_file::read(path)?;
        anyhow::ensure!(
            made == self.models[k].made,
            "{} changed during the evaluation",
            path.display()
        );
        *loaded = Some((k, Arc::clone(&model)));
        Ok(model)
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let ds = Arc::new(args.data.load(&args.dataset)?);
    let split = pick_split(&ds, args.split.as_deref())?;
    let mut planned: Vec<Planned> = Vec::new();
    // The BM25 row and hybrid fusion use the field boosts that do best on validation.
    let bm25_choice = if !args.no_baselines || args.hybrid.is_some() {
        let (_, choice) =
            Bm25Ranker::tuned(&ds, split).context("choosing BM25's field boosts on validation")?;
        eprintln!("{}", choice.note());
        Some(choice)
    } else {
        None
    };
    let bm25 = bm25_choice
        .as_ref()
        .map_or_else(aisle_search::FieldBoosts::default, |c| c.chosen);
    let signals = args
        .rerank
        .then(|| Arc::new(aisle_search::Signals::of_training(&ds, split)));
    if !args.no_baselines {
        planned.extend([Planned::Bm25, Planned::Popularity, Planned::Memorisation]);
        if split
            .test
            .iter()
            .chain(&split.validation)
            .any(|q| q.user.is_some())
        {
            planned.push(Planned::Repurchase);
        }
    }
    // Every model file is loaded and checked before the first row is ranked, the last first:
    // the first one's load is kept for its rows, the others are dropped here and read again at
    // their turn, so that one embedding table is in memory at a time.
    let specs: Vec<(Option<String>, PathBuf)> = args
        .model
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some((n, p)) => (Some(n.to_owned()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        })
        .collect();
    // (how it was made, history as trained, the other-dataset note, personalized or not) of
    // each model.
    type Facts = (Made, usize, Option<String>, bool);
    let mut facts: Vec<Option<Facts>> = specs.iter().map(|_| None).collect();
    let mut first: Option<Arc<dyn Encoder>> = None;
    for (k, (_, path)) in specs.iter().enumerate().rev() {
        let aisle_search::model_file::ModelFile {
            encoder,
            made,
            history,
            other_dataset,
        } = aisle_search::model_file::load(path, &ds, "evaluated", args.allow_other_dataset)
            .with_context(|| format!("loading model {}", path.display()))?;
        if let Some(note) = &other_dataset {
            eprintln!("warning: {note}");
        }
        facts[k] = Some((made, history, other_dataset, encoder.personal().is_some()));
        first = (k == 0).then_some(encoder);
    }
    // Notes every figure of the report must carry (models let through from other data, rows
    // left out).
    let mut notes: Vec<String> = bm25_choice.iter().map(|c| c.note()).collect();
    let history_rule = if args.hide_histories {
        let note = "--hide-histories: the trained models read no customer's history, as if every \
                    customer were new; a personalized model still reads the customers' features"
            .to_owned();
        eprintln!("note: {note}");
        notes.push(note);
        HistoryRule::Hidden
    } else {
        HistoryRule::BeforeCutOff
    };
    let mut checked: Vec<Checked> = Vec::new();
    let mut heads = 0;
    for (k, ((name, path), facts)) in specs.into_iter().zip(facts).enumerate() {
        let (made, history, other_dataset, personal) =
            facts.context("every model file was loaded")?;
        notes.extend(other_dataset);
        let history = args.history.unwrap_or(history);
        let index = args
            .backend
            .choice(&path)?
            .unwrap_or(aisle_search::IndexChoice::Exact);
        let name = name.unwrap_or_else(|| match made.sampler() {
            Some(s) => format!("dense {s}"),
            None => format!("dense {}", path.display()),
        });
        let dense = |name: String, options: DenseOptions, head| Planned::Dense {
            model: k,
            name,
            options,
            head,
        };
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
        if signals.is_some() && head_path.exists() {
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
                history: if personal {
                    args.history.unwrap_or(crate::train::HEAD_TOWER_HISTORY)
                } else {
                    history
                },
                history_rule,
                mode: Mode::Dense,
                history_boost: 0.0,
                bm25,
            };
            planned.push(dense(
                format!("{name} + learned re-ranking"),
                options,
                Some(head),
            ));
        }
        // Extra rows of the same model: fused with BM25, or with the history term.
        if let Some(mode) = args.hybrid {
            let options = DenseOptions {
                history,
                history_rule,
                mode,
                history_boost: 0.0,
                bm25,
            };
            planned.push(dense(format!("{name} + BM25 ({mode})"), options, None));
        }
        for &beta in &args.history_boost {
            anyhow::ensure!(
                beta.is_finite() && beta > 0.0,
                "--history-boost {beta}: expected a number > 0"
            );
            let options = DenseOptions {
                history,
                history_rule,
                mode: Mode::Dense,
                history_boost: beta,
                bm25,
            };
            planned.push(dense(format!("{name} + history x{beta}"), options, None));
        }
        let options = DenseOptions {
            history,
            history_rule,
            mode: Mode::Dense,
            history_boost: 0.0,
            bm25,
        };
        planned.push(dense(name, options, None));
        checked.push(Checked { path, made, index });
    }
    anyhow::ensure!(
        !args.rerank || heads > 0,
        "--rerank: none of the models has a {} beside it (fit one with `aisle train --rerank`)",
        aisle_search::rerank::HEAD_FILE
    );
    anyhow::ensure!(
        !planned.is_empty(),
        "nothing to evaluate: give --model or drop --no-baselines"
    );
    let current = Current {
        models: &checked,
        loaded: RefCell::new(first.map(|m| (0, m))),
    };
    let build = |plan: &Planned| -> Result<Box<dyn Ranker>> {
        Ok(match plan {
            Planned::Bm25 => Box::new(Bm25Ranker::with_boosts(&ds, &bm25)?),
            Planned::Popularity => Box::new(PopularityRanker::new(&ds, split)),
            Planned::Memorisation => Box::new(MemorisationRanker::new(&ds, split)),
            Planned::Repurchase => Box::new(RepurchaseRanker::new(&ds, split)),
            Planned::Dense {
                model,
                name,
                options,
                head,
            } => {
                let file = &checked[*model];
                let mut ranker = DenseRanker::with_index(
                    name.clone(),
                    current.get(*model)?,
                    &ds,
                    split,
                    options,
                    file.index.clone(),
                )
                .with_context(|| format!("encoding the catalog with {}", file.path.display()))?;
                if let Some(ef) = args.expansion_search {
                    ranker.set_search_effort(ef);
                }
                if let (Some(head), Some(signals)) = (head, &signals) {
                    ranker.set_reranking(Arc::clone(signals), Some(head.clone()))?;
                }
                Box::new(ranker)
            }
        })
    };
    let groups: Vec<Group> = planned
        .iter()
        .map(|plan| Group {
            name: match plan {
                Planned::Bm25 => "BM25".into(),
                Planned::Popularity => "popularity".into(),
                Planned::Memorisation => "query memorisation".into(),
                Planned::Repurchase => "re-purchase".into(),
                Planned::Dense { name, .. } => name.clone(),
            },
            members: vec![Member::Lazy(Box::new(|| {
                build(plan).map_err(|e| EvalError::Ranker(format!("{e:#}")))
            }))],
        })
        .collect();
    let cfg = EvalConfig {
        part: match args.part {
            PartArg::Test => Part::Test,
            PartArg::Validation => Part::Validation,
        },
        resamples: args.resamples,
        seed: args.data.seed(),
        ..EvalConfig::default()
    };
    let mut bar = RowsBar::new()?;
    let mut report =
        aisle_eval::evaluate::evaluate_groups_with_progress(&ds, split, &groups, &cfg, &mut |p| {
            bar.show(p)
        })?;
    bar.finish();
    report.notes.extend(notes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// Progress of the rows on stderr: the row being built or ranked, with an ETA, and a line per
/// row done. The bar is drawn only when stderr is a terminal (indicatif hides it otherwise);
/// into a log go a line every 30 s of a row's ranking, with the time left, and the line per row.
/// stdout's tables are untouched.
struct RowsBar {
    bar: ProgressBar,
    ranking: ProgressStyle,
    building: ProgressStyle,
    /// For a log (the bar hidden): the row being ranked, when it started and when a line about
    /// it was last printed.
    logged: Option<(String, std::time::Instant, std::time::Instant)>,
}

/// Seconds between progress lines of one row in a log.
const LOG_EVERY_S: u64 = 30;

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
            logged: None,
        })
    }

    fn show(&mut self, p: Progress<'_>) {
        let prefix = |row: usize, rows: usize, name: &str, member: usize, members: usize| {
            let seed = if members > 1 {
                format!(" (member {}/{members})", member + 1)
            } else {
                String::new()
            };
            format!("row {}/{rows} {name}{seed}", row + 1)
        };
        match p {
            Progress::Building {
                row,
                rows,
                name,
                member,
                members,
            } => {
                self.bar.set_style(self.building.clone());
                self.bar
                    .set_prefix(prefix(row, rows, name, member, members));
                self.bar.set_message("building");
                self.bar.reset_elapsed();
                self.bar
                    .enable_steady_tick(std::time::Duration::from_millis(200));
            }
            Progress::Ranking {
                row,
                rows,
                name,
                member,
                members,
                queries,
            } => {
                let now = std::time::Instant::now();
                self.logged = Some((prefix(row, rows, name, member, members), now, now));
                self.bar.disable_steady_tick();
                self.bar.set_length(queries as u64);
                self.bar.set_position(0);
                self.bar.reset_eta();
                self.bar
                    .set_prefix(prefix(row, rows, name, member, members));
                self.bar.set_style(self.ranking.clone());
            }
            Progress::Ranked { done, queries } => {
                self.bar.set_position(done as u64);
                if let (true, Some((row, start, last))) = (self.bar.is_hidden(), &mut self.logged) {
                    if last.elapsed().as_secs() >= LOG_EVERY_S && done > 0 && done < queries {
                        *last = std::time::Instant::now();
                        let s = start.elapsed().as_secs_f64();
                        eprintln!(
                            "{row}: {}/{} queries in {s:.0} s, about {:.0} s left",
                            aisle_core::stats::fmt_n(done),
                            aisle_core::stats::fmt_n(queries),
                            s * (queries - done) as f64 / done as f64
                        );
                    }
                }
            }
            Progress::RowDone {
                row,
                rows,
                name,
                build_s,
                rank_s,
            } => {
                let line = format!(
                    "row {}/{rows} {name}: built in {build_s:.1} s, ranked in {rank_s:.1} s",
                    row + 1
                );
                // Into a log (stderr not a terminal, the bar hidden), the line per row still
                // goes, so that a long evaluation is never silent.
                if self.bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    self.bar.println(line);
                }
            }
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
