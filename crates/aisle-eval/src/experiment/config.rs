//! How an experiment trains and evaluates: the settings every row shares.

use std::path::PathBuf;

use serde::Serialize;

use aisle_search::Mode;
use aisle_train::TrainConfig;

use super::rows::DenseRow;

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
