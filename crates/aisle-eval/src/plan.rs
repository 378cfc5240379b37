//! What an evaluation of model files compares: the rows of `aisle eval`.
//!
//! [`Plan::new`] takes plain [`PlanOptions`] (the baselines or not, the model files and the
//! extra rows of each) and decides the rows: the baselines (BM25 with the field boosts that do
//! best on validation, popularity, query memorisation, per-user re-purchase where the split has
//! users), then per model its `+ learned re-ranking` row (when a re-ranking head lies beside it),
//! its `+ BM25 (mode)` row, one `+ history xB` row per boost, and its plain row; with the notes
//! every figure must carry (a model let through from other data, a model without a head, hidden
//! histories). Every model file is checked before the first row is ranked; the rows are built
//! when their turn comes ([`Member::Lazy`]) and one model is in memory at a time, read again at
//! its turn and refused if it changed meanwhile.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use aisle_core::{Dataset, Split};
use aisle_model::Encoder;
use aisle_search::model_file::{self, Made, ModelFile};
use aisle_search::rerank::{HeadFile, HEAD_FILE};
use aisle_search::served::{Vectors, HEAD_TOWER_HISTORY};
use aisle_search::{FieldBoosts, IndexChoice, Mode, Reranker, Signals};

use crate::error::{EvalError, Result};
use crate::evaluate::Report;
use crate::evaluate::{evaluate_groups_with_progress, EvalConfig, Group, Member, Part, Progress};
use crate::rankers::{
    Bm25Ranker, DenseOptions, DenseRanker, HistoryRule, MemorisationRanker, PopularityRanker,
    Ranker, RepurchaseRanker,
};

/// A model file to evaluate.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The rows' name [default: `dense SAMPLER`, or `dense PATH` for a pretrained model].
    pub name: Option<String>,
    /// An n-gram model file, or a MiniLM model folder.
    pub path: PathBuf,
    /// The vector index its rows search.
    pub index: IndexChoice,
}

impl ModelSpec {
    /// A model from `PATH` or `NAME=PATH`, its product vectors where `vectors` says.
    pub fn parse(spec: &str, vectors: &Vectors) -> Result<ModelSpec> {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (Some(n.to_owned()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        };
        let index = vectors.index_for(&path)?;
        Ok(ModelSpec { name, path, index })
    }
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// BM25, popularity, query memorisation and (where the split has users) re-purchase.
    pub baselines: bool,
    pub models: Vec<ModelSpec>,
    /// Also each model fused with BM25 in this mode.
    pub hybrid: Option<Mode>,
    /// Also each model with the history term, one row per boost (each > 0).
    pub history_boosts: Vec<f32>,
    /// Earlier interactions a personalized model and the history term read [default: as the
    /// model was trained].
    pub history: Option<usize>,
    /// Also each model re-ranked by the head beside it ([`HEAD_FILE`]); at least one must have
    /// one.
    pub rerank: bool,
    /// The trained models read no customer's history, as if every customer were new.
    pub hide_histories: bool,
    /// The queries evaluated (a re-ranking head was fitted on validation, so it is refused
    /// there).
    pub part: Part,
    /// Let through a model trained on another dataset, with a note.
    pub allow_other_dataset: bool,
    /// The vector index's search effort (HNSW `ef`) [default: the index's].
    pub search_effort: Option<usize>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            baselines: true,
            models: Vec::new(),
            hybrid: None,
            history_boosts: Vec::new(),
            history: None,
            rerank: false,
            hide_histories: false,
            part: Part::Test,
            allow_other_dataset: false,
            search_effort: None,
        }
    }
}

/// A row of the report, built when its turn comes and dropped after it.
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
        head: Option<Reranker>,
    },
}

impl Planned {
    fn name(&self) -> String {
        match self {
            Planned::Bm25 => "BM25".into(),
            Planned::Popularity => "popularity".into(),
            Planned::Memorisation => "query memorisation".into(),
            Planned::Repurchase => "re-purchase".into(),
            Planned::Dense { name, .. } => name.clone(),
        }
    }
}

/// A model file, checked before the first row is ranked.
struct Checked {
    path: PathBuf,
    made: Made,
    index: IndexChoice,
}

/// The rows of an evaluation, ready to be ranked ([`Plan::evaluate`]).
pub struct Plan<'a> {
    ds: &'a Arc<Dataset>,
    split: &'a Split,
    part: Part,
    rows: Vec<Planned>,
    models: Vec<Checked>,
    /// The model whose rows are being evaluated, shared by them: one model in memory at a time
    /// (for the default n-gram model an embedding table of 2^20 x 128 f32, 512 MiB), whatever
    /// the number of rows.
    loaded: RefCell<Option<(usize, Arc<dyn Encoder>)>>,
    signals: Option<Arc<Signals>>,
    bm25: FieldBoosts,
    search_effort: Option<usize>,
    /// Notes every figure of the report must carry (models let through from other data, rows
    /// left out); [`Plan::evaluate`] adds them to the report.
    pub notes: Vec<String>,
    /// Lines for whoever runs the evaluation, in the order they arose, each with its kind
    /// (`note: `, `warning: `) in front, except the BM25 choice's.
    pub said: Vec<String>,
}

/// `e` and its sources, `what: e: source: ...`, as anyhow's `{:#}` writes them.
fn with_context(what: String, e: &dyn std::error::Error) -> EvalError {
    EvalError::Ranker(format!("{what}: {}", aisle_core::error::with_sources(e)))
}

/// Where the hybrid rows' BM25 (boosts `bm25`) runs for a model searched in `target`: in Qdrant
/// when the collection holds it as sparse vectors, otherwise in aisle; in words, for the report.
fn where_bm25_runs(
    target: &aisle_search::qdrant::QdrantTarget,
    ds: &Dataset,
    bm25: FieldBoosts,
) -> Result<String> {
    let held = target
        .lexical(ds)
        .map_err(|e| with_context("reading the Qdrant collection's BM25".into(), &e))?;
    Ok(match held {
        Some(l) if l == aisle_search::SparseBm25::with_boosts(bm25) => format!(
            "the hybrid rows' BM25 ran in Qdrant, on the collection's sparse vectors ({})",
            bm25.describe()
        ),
        Some(l) => format!(
            "the hybrid rows' BM25 ran in aisle (tantivy): the Qdrant collection's sparse vectors \
             have boosts {}, the chosen ones are {} (`aisle index --backend qdrant --bm25 tuned` \
             uploads those)",
            l.boosts.describe(),
            bm25.describe()
        ),
        None => "the hybrid rows' BM25 ran in aisle (tantivy): the Qdrant collection holds no \
                 BM25 sparse vectors"
            .into(),
    })
}

impl<'a> Plan<'a> {
    /// Decides the rows of an evaluation of `split` and checks every model file (the last
    /// first; the first one's load is kept for its rows, the others are read again at their
    /// turn).
    pub fn new(ds: &'a Arc<Dataset>, split: &'a Split, options: &PlanOptions) -> Result<Self> {
        let mut said = Vec::new();
        let mut rows: Vec<Planned> = Vec::new();
        // The BM25 row and hybrid fusion use the field boosts that do best on validation.
        let bm25_choice = if options.baselines || options.hybrid.is_some() {
            let (_, choice) = Bm25Ranker::tuned(ds, split).map_err(|e| {
                with_context("choosing BM25's field boosts on validation".into(), &e)
            })?;
            said.push(choice.note());
            Some(choice)
        } else {
            None
        };
        let bm25 = bm25_choice
            .as_ref()
            .map_or_else(FieldBoosts::default, |c| c.chosen);
        let signals = options
            .rerank
            .then(|| Arc::new(Signals::of_training(ds, split)));
        if options.baselines {
            rows.extend([Planned::Bm25, Planned::Popularity, Planned::Memorisation]);
            if split
                .test
                .iter()
                .chain(&split.validation)
                .any(|q| q.user.is_some())
            {
                rows.push(Planned::Repurchase);
            }
        }
        // (how it was made, history as trained, the other-dataset note, personalized or not)
        // of each model.
        type Facts = (Made, usize, Option<String>, bool);
        let mut facts: Vec<Option<Facts>> = options.models.iter().map(|_| None).collect();
        let mut first: Option<Arc<dyn Encoder>> = None;
        for (k, spec) in options.models.iter().enumerate().rev() {
            let ModelFile {
                encoder,
                made,
                history,
                other_dataset,
            } = model_file::load(&spec.path, ds, "evaluated", options.allow_other_dataset)
                .map_err(|e| with_context(format!("loading model {}", spec.path.display()), &e))?;
            if let Some(note) = &other_dataset {
                said.push(format!("warning: {note}"));
            }
            facts[k] = Some((made, history, other_dataset, encoder.personal().is_some()));
            first = (k == 0).then_some(encoder);
        }
        let mut notes: Vec<String> = bm25_choice.iter().map(|c| c.note()).collect();
        if options.hybrid.is_some() {
            for spec in &options.models {
                if let IndexChoice::Qdrant(target) = &spec.index {
                    let note = where_bm25_runs(target, ds, bm25)?;
                    said.push(format!("note: {note}"));
                    notes.push(note);
                }
            }
        }
        let history_rule = if options.hide_histories {
            let note = "--hide-histories: the trained models read no customer's history, as if \
                        every customer were new; a personalized model still reads the customers' \
                        features"
                .to_owned();
            said.push(format!("note: {note}"));
            notes.push(note);
            HistoryRule::Hidden
        } else {
            HistoryRule::BeforeCutOff
        };
        let mut models: Vec<Checked> = Vec::new();
        let mut heads = 0;
        for (k, (spec, facts)) in options.models.iter().zip(facts).enumerate() {
            let Some((made, trained_history, other_dataset, personal)) = facts else {
                return Err(EvalError::Ranker("every model file was loaded".into()));
            };
            notes.extend(other_dataset);
            let path = &spec.path;
            let history = options.history.unwrap_or(trained_history);
            let name = spec.name.clone().unwrap_or_else(|| match made.sampler() {
                Some(s) => format!("dense {s}"),
                None => format!("dense {}", path.display()),
            });
            let options_with = |history: usize, mode: Mode, history_boost: f32| DenseOptions {
                history,
                history_rule,
                mode,
                history_boost,
                bm25,
            };
            let dense = |name: String, options: DenseOptions, head| Planned::Dense {
                model: k,
                name,
                options,
                head,
            };
            let head_path = path.with_file_name(HEAD_FILE);
            if signals.is_some() && !head_path.exists() {
                // One model without a head leaves out its re-ranked row, not the whole run.
                let note = format!(
                    "--rerank: no {HEAD_FILE} beside {}, so it has no re-ranked row (fit one with \
                     `aisle train --rerank`)",
                    path.display()
                );
                said.push(format!("note: {note}"));
                notes.push(note);
            }
            if signals.is_some() && head_path.exists() {
                heads += 1;
                let (head, saved) = HeadFile::load(&head_path)?;
                saved.check_model(&head_path, path)?;
                if options.part != Part::Test {
                    return Err(EvalError::Ranker(format!(
                        "--rerank with --part validation: {} was fitted on these very queries, so \
                         its figures would be in-sample (its held-out validation figures are in \
                         the file's `fitted`)",
                        head_path.display()
                    )));
                }
                if let Some(fitted) = saved.fitted.get("split").and_then(|s| s.as_str()) {
                    if fitted != split.name {
                        return Err(EvalError::Ranker(format!(
                            "--rerank: {} was fitted on split `{fitted}`'s validation queries, \
                             which may be split `{}`'s test queries; pass --split {fitted}",
                            head_path.display(),
                            split.name
                        )));
                    }
                }
                let head_history = if personal {
                    options.history.unwrap_or(HEAD_TOWER_HISTORY)
                } else {
                    history
                };
                rows.push(dense(
                    format!("{name} + learned re-ranking"),
                    options_with(head_history, Mode::Dense, 0.0),
                    Some(head),
                ));
            }
            // Extra rows of the same model: fused with BM25, or with the history term.
            if let Some(mode) = options.hybrid {
                rows.push(dense(
                    format!("{name} + BM25 ({mode})"),
                    options_with(history, mode, 0.0),
                    None,
                ));
            }
            for &beta in &options.history_boosts {
                if !(beta.is_finite() && beta > 0.0) {
                    return Err(EvalError::Ranker(format!(
                        "--history-boost {beta}: expected a number > 0"
                    )));
                }
                rows.push(dense(
                    format!("{name} + history x{beta}"),
                    options_with(history, Mode::Dense, beta),
                    None,
                ));
            }
            rows.push(dense(name, options_with(history, Mode::Dense, 0.0), None));
            models.push(Checked {
                path: path.clone(),
                made,
                index: spec.index.clone(),
            });
        }
        if options.rerank && heads == 0 {
            return Err(EvalError::Ranker(format!(
                "--rerank: none of the models has a {HEAD_FILE} beside it (fit one with `aisle \
                 train --rerank`)"
            )));
        }
        if rows.is_empty() {
            return Err(EvalError::Empty(
                "give --model or drop --no-baselines".into(),
            ));
        }
        Ok(Plan {
            ds,
            split,
            part: options.part,
            rows,
            models,
            loaded: RefCell::new(first.map(|m| (0, m))),
            signals,
            bm25,
            search_effort: options.search_effort,
            notes,
            said,
        })
    }

    /// The rows' names, in order.
    pub fn row_names(&self) -> Vec<String> {
        self.rows.iter().map(Planned::name).collect()
    }

    /// The `k`-th model, read again unless it is the one in memory.
    fn model(&self, k: usize) -> Result<Arc<dyn Encoder>> {
        let mut loaded = self.loaded.borrow_mut();
        if let Some((_, model)) = loaded.as_ref().filter(|(i, _)| *i == k) {
            return Ok(Arc::clone(model));
        }
        // The previous model's table is freed before the next one is read.
        *loaded = None;
        let path = &self.models[k].path;
        let (model, made) = model_file::read(path)?;
        if made != self.models[k].made {
            return Err(EvalError::Ranker(format!(
                "{} changed during the evaluation",
                path.display()
            )));
        }
        *loaded = Some((k, Arc::clone(&model)));
        Ok(model)
    }

    fn build(&self, row: &Planned) -> Result<Box<dyn Ranker>> {
        Ok(match row {
            Planned::Bm25 => Box::new(Bm25Ranker::with_boosts(self.ds, &self.bm25)?),
            Planned::Popularity => Box::new(PopularityRanker::new(self.ds, self.split)),
            Planned::Memorisation => Box::new(MemorisationRanker::new(self.ds, self.split)),
            Planned::Repurchase => Box::new(RepurchaseRanker::new(self.ds, self.split)),
            Planned::Dense {
                model,
                name,
                options,
                head,
            } => {
                let file = &self.models[*model];
                let mut ranker = DenseRanker::with_index(
                    name.clone(),
                    self.model(*model)?,
                    self.ds,
                    self.split,
                    options,
                    file.index.clone(),
                )
                .map_err(|e| {
                    with_context(
                        format!("encoding the catalog with {}", file.path.display()),
                        &e,
                    )
                })?;
                if let Some(ef) = self.search_effort {
                    ranker.set_search_effort(ef);
                }
                if let (Some(head), Some(signals)) = (head, &self.signals) {
                    ranker.set_reranking(Arc::clone(signals), Some(head.clone()))?;
                }
                Box::new(ranker)
            }
        })
    }

    /// A group of one lazy member per row.
    pub fn groups(&self) -> Vec<Group<'_>> {
        self.rows
            .iter()
            .map(|row| Group {
                name: row.name(),
                members: vec![Member::Lazy(Box::new(move || self.build(row)))],
            })
            .collect()
    }

    /// Ranks the rows on `cfg.part` (the options' part), reporting `progress`, and adds the
    /// plan's notes to the report.
    pub fn evaluate(
        &self,
        cfg: &EvalConfig,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        if cfg.part != self.part {
            return Err(EvalError::Ranker(format!(
                "the plan was made for the {:?} queries, not {:?}",
                self.part, cfg.part
            )));
        }
        let groups = self.groups();
        let mut report =
            evaluate_groups_with_progress(self.ds, self.split, &groups, cfg, progress)?;
        report.notes.extend(self.notes.iter().cloned());
        Ok(report)
    }
}
