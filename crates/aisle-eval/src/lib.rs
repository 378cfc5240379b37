//! aisle-eval: measuring retrieval.
//!
//! It owns the ranking [`metrics`] (Recall@K, graded NDCG, MRR, bootstrap intervals, the paired
//! randomization test), the [`rankers`] an evaluation compares (BM25, popularity, query-log
//! memorisation, per-user re-purchase, a trained dense model, MiniLM in [`zero_shot`]) and
//! [`evaluate`], which runs them on a split's validation or test queries with micro and macro
//! means and segments (head / torso / tail / unseen queries, cold-start products, cold-start
//! users). [`plan`] decides what an evaluation of model files compares (`aisle eval`'s rows and
//! notes) and builds its rankers one model at a time. Around those: the [`experiment`] runner,
//! which has every row it compares trained by aisle-train (the training loop, the samplers and
//! the MiniLM fine-tuning live there, not here) under one budget, makes its choices on
//! validation and evaluates on test; [`rerank`], which fits the learned re-ranking head's few
//! weights on validation queries; [`online`], the simulated A/B test; [`report`] and [`plot`],
//! which write an experiment out. It serves nothing.
//!
//! ```no_run
//! use aisle_core::adapters::{load, LoadOptions};
//! use aisle_eval::{evaluate, Bm25Ranker, EvalConfig, PopularityRanker, Ranker};
//! let ds = load("bestbuy_xbox", &LoadOptions::default())?;
//! let split = ds.default_split().expect("a split");
//! let bm25 = Bm25Ranker::new(&ds)?;
//! let pop = PopularityRanker::new(&ds, split);
//! let rankers: [&dyn Ranker; 2] = [&bm25, &pop];
//! let report = evaluate(&ds, split, &rankers, &EvalConfig::default())?;
//! print!("{}", report.render());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `cli` feature, [`experiment::Budget`] derives `clap::Args` and [`Part`]
//! `clap::ValueEnum`: `aisle experiment`'s budget flags and `aisle eval --part` are declared
//! once, on what they set.

pub mod error;
pub mod evaluate;
pub mod experiment;
pub mod metrics;
pub mod online;
pub mod plan;
pub mod plot;
pub mod rankers;
pub mod report;
pub mod rerank;
pub mod zero_shot;

pub use error::{EvalError, Result};
pub use evaluate::{
    evaluate, evaluate_groups, EvalConfig, Group, Member, Part, Report, Row, REPLAY_NOTE,
};
pub use rankers::{
    Bm25Ranker, Case, DenseOptions, DenseRanker, HistoryRule, MemorisationRanker, PopularityRanker,
    Ranker, RepurchaseRanker,
};
