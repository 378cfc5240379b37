//! How an experiment trains and evaluates: the settings every row shares.

use std::path::PathBuf;

use serde::Serialize;

use aisle_core::Dataset;
use aisle_search::Mode;
use aisle_train::transformer::TuneConfig;
use aisle_train::TrainConfig;

use super::rows::DenseRow;
use crate::error::{EvalError, Result};

/// How an experiment trains and evaluates.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentConfig {
    /// The training settings every dense row shares (its sampler, seed and personalization are
    /// set per row).
    pub train: TrainConfig,
    /// One training run per row and seed.
    pub seeds: Vec<u64>,
    #[serde(skip)]
    pub rows: Vec<DenseRow>,
    /// Train the personalized row when the test queries name customers.
    pub personalized: bool,
    /// Fine-tune MiniLM (when its files are given) on the first seed, twice: with in-batch
    /// negatives only (sentence-transformers' usual recipe) and with the best TB-HNS variant.
    /// `None`: no such rows. Its sampler is set per row.
    pub minilm_tune: Option<aisle_train::transformer::TuneConfig>,
    /// Candidate `beta`s of the history-term row, one chosen per protocol on validation
    /// Recall@10 (empty: no such row; a choice of 0 leaves the row out).
    pub history_boosts: Vec<f32>,
    /// Earlier interactions the history-term row reads (the tower trains on fewer; the term is
    /// best with all of them, see docs/evaluation.md).
    pub history_term_window: usize,
    /// Add the personalized row's models with the learned re-ranking head, fitted per seed on
    /// the validation queries ([`crate::rerank`]).
    pub rerank: bool,
    /// How the hybrid row fuses the best dense model with BM25.
    #[serde(serialize_with = "display")]
    pub hybrid: Mode,
    pub resamples: usize,
    /// Sign flips of the paired test.
    pub rounds: usize,
    /// Seed of the splits, the bootstrap and the paired test.
    pub seed: u64,
    /// Where the training runs are written (one folder per protocol, row and seed).
    #[serde(skip)]
    pub runs_dir: PathBuf,
}

fn display<S: serde::Serializer>(m: &Mode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(m)
}

/// An experiment's budget and rows as `aisle experiment`'s flags give them; `None` and empty
/// values take the defaults, smaller with `quick` ([`ExperimentConfig::from_budget`]). With the
/// `cli` feature they are its flags, and these comments its `--help`.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Budget {
    /// A smaller budget (1,000 steps, one seed, 500 validation queries, 500 bootstrap
    /// resamples): minutes instead of tens of minutes.
    #[cfg_attr(feature = "cli", arg(long))]
    pub quick: bool,
    /// Training seeds per dense row, 42, 43, ... [default: 3, or 1 with --quick].
    #[cfg_attr(feature = "cli", arg(long))]
    pub seeds: Option<u64>,
    /// Training steps of every dense row [default: 2000, or 1000 with --quick].
    #[cfg_attr(feature = "cli", arg(long))]
    pub steps: Option<u64>,
    /// Pairs per step of every dense row [default: 256].
    #[cfg_attr(feature = "cli", arg(long))]
    pub batch_size: Option<usize>,
    /// Sampled negatives per pair [default: 4].
    #[cfg_attr(feature = "cli", arg(long))]
    pub negatives: Option<usize>,
    /// Embedding dimension [default: 128].
    #[cfg_attr(feature = "cli", arg(long))]
    pub dim: Option<usize>,
    /// log2 of the hashed feature buckets [default: 20].
    #[cfg_attr(feature = "cli", arg(long))]
    pub buckets_log2: Option<u8>,
    /// Dense rows to train, by sampler spec, as NAME=SPEC (repeatable) [default: in-batch,
    /// random, BM25, ANCE and the TB-HNS variants: `DenseRow::standard`].
    #[cfg_attr(feature = "cli", arg(long = "row", value_name = "NAME=SPEC", value_parser = DenseRow::parse))]
    pub rows: Vec<DenseRow>,
    /// Leave out the personalized rows.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_personalized: bool,
    /// Also fine-tune MiniLM (when its files are prepared) for this many steps on the first
    /// seed, with in-batch negatives and with the best TB-HNS variant [default: 0, off].
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub minilm_tune_steps: u64,
    /// Pairs per fine-tuning step of MiniLM.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 16))]
    pub minilm_tune_batch: usize,
    /// Candidate weights B of the history term (`q'.p + B * max_j h_j.p`), one chosen per
    /// protocol on validation Recall@10 of the personalized row (the smaller among ties); a
    /// choice of 0 leaves the history-term row out, so `--history-boosts 0` never adds it.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,1,2,4")
    )]
    pub history_boosts: Vec<f32>,
    /// Leave out the personalized row's learned re-ranking head (fitted on validation).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_rerank: bool,
    /// Seed of the splits, the bootstrap and the paired test (the caller's data seed).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub seed: u64,
    /// Where the training runs are written (the caller's choice).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub runs_dir: PathBuf,
}

impl ExperimentConfig {
    /// The configuration of `b`: every dense row trains with the same steps, batch, negatives
    /// and validation schedule (every 250 steps, on 1,000 queries, 500 when quick), log lines
    /// every 50 steps; the history-term row reads 1,000 earlier interactions; the hybrid row
    /// fuses with `weighted:0.8`.
    pub fn from_budget(b: &Budget) -> Result<ExperimentConfig> {
        if b.seeds == Some(0) {
            return Err(EvalError::InvalidArgument(
                "seeds: an experiment needs at least one seed".into(),
            ));
        }
        let n_seeds = b.seeds.unwrap_or(if b.quick { 1 } else { 3 });
        let mut train = TrainConfig {
            steps: b.steps.unwrap_or(if b.quick { 1000 } else { 2000 }),
            eval_every: 250,
            eval_queries: if b.quick { 500 } else { 1000 },
            log_every: 50,
            ..TrainConfig::default()
        };
        if let Some(n) = b.batch_size {
            train.batch_size = n;
        }
        if let Some(k) = b.negatives {
            train.negatives = k;
        }
        if let Some(d) = b.dim {
            train.model.tower.dim = d;
        }
        if let Some(n) = b.buckets_log2 {
            train.model.featurizer.buckets_log2 = n;
        }
        train.validate()?;
        Ok(ExperimentConfig {
            train,
            seeds: (0..n_seeds).map(|i| 42 + i).collect(),
            rows: if b.rows.is_empty() {
                DenseRow::standard()?
            } else {
                b.rows.clone()
            },
            personalized: !b.no_personalized,
            minilm_tune: (b.minilm_tune_steps > 0).then(|| TuneConfig {
                steps: b.minilm_tune_steps,
                batch_size: b.minilm_tune_batch,
                negatives: 1,
                ..Default::default()
            }),
            history_boosts: b.history_boosts.clone(),
            history_term_window: 1000,
            rerank: !b.no_rerank,
            hybrid: Mode::parse("weighted:0.8").map_err(EvalError::Ranker)?,
            resamples: if b.quick { 500 } else { 1000 },
            rounds: if b.quick { 2000 } else { 10_000 },
            seed: b.seed,
            runs_dir: b.runs_dir.clone(),
        })
    }

    /// The line that opens an experiment on `splits` of `ds`.
    pub fn describe(&self, ds: &Dataset, splits: &[String]) -> String {
        format!(
            "aisle experiment: {} ({} products), protocols {}, {} dense rows x {} seeds, {} steps each",
            ds.name,
            ds.catalog.len(),
            splits.join(", "),
            self.rows.len(),
            self.seeds.len(),
            self.train.steps
        )
    }
}
