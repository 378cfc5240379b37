//! What an experiment measured: the protocols with their rows, runs and choices, serialised to
//! `results.json` (schema [`SCHEMA`], documented in docs/experiments.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use aisle_train::RunSummary;

use super::config::ExperimentConfig;
use super::rows::RowKind;
use crate::evaluate::Report;
use crate::online::SimulatedAb;

/// Version of the `results.json` layout.
pub const SCHEMA: &str = "aisle.experiment/1";

/// One training run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub row: String,
    pub seed: u64,
    pub sampler: String,
    pub steps: u64,
    /// Training seconds (sampling, forward, backward, refresh), validation excluded.
    pub train_s: f64,
    pub pairs_per_s: f64,
    pub sample_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    /// ANCE re-indexing, or the personalized tower's catalog re-encodings.
    pub refresh_s: f64,
    /// Validation Recall@10 at each measurement.
    pub curve: Vec<CurvePoint>,
    pub final_validation_recall_at_10: Option<f64>,
    pub model: PathBuf,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    /// Training seconds up to this step.
    pub train_s: f64,
    pub recall_at_10: f64,
}

impl Run {
    /// The run of `row` with `seed`, from its training summary.
    pub(super) fn of(row: &str, seed: u64, s: &RunSummary) -> Run {
        Run {
            row: row.to_owned(),
            seed,
            sampler: s.sampler.clone(),
            steps: s.steps,
            train_s: s.train_wall_s,
            pairs_per_s: s.pairs_per_s,
            sample_s: s.sample_s,
            forward_s: s.forward_s,
            backward_s: s.backward_s,
            refresh_s: s.refresh_s,
            curve: s
                .recall_curve
                .iter()
                .map(|&(step, train_s, recall_at_10)| CurvePoint {
                    step,
                    train_s,
                    recall_at_10,
                })
                .collect(),
            final_validation_recall_at_10: s.final_recall_at_10,
            model: s.model.clone(),
        }
    }
}

/// What one row of a protocol is, beside its metrics (in [`Report::rows`], same name).
#[derive(Clone, Debug, Serialize)]
pub struct RowInfo {
    pub name: String,
    pub kind: RowKind,
    /// The sampler spec (dense and personalized rows).
    pub sampler: Option<String>,
    /// Mean over seeds of the final validation Recall@10 (trained rows).
    pub validation_recall_at_10: Option<f64>,
    /// Mean over seeds of the training seconds, and the time split.
    pub train_s: Option<f64>,
    pub cost: Option<Cost>,
}

/// Mean training seconds by part, over a row's seeds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cost {
    pub sample_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub refresh_s: f64,
}

/// When a row's seed-averaged validation curve first reached a target.
#[derive(Clone, Debug, Serialize)]
pub struct Reach {
    pub row: String,
    pub target: f64,
    /// `None`: never within the budget.
    pub step: Option<u64>,
    pub train_s: Option<f64>,
}

/// One protocol (split) of the experiment.
#[derive(Clone, Debug, Serialize)]
pub struct Protocol {
    pub split: String,
    pub description: String,
    pub rows: Vec<RowInfo>,
    /// Test-set metrics of every row (baselines, models, hybrid).
    pub report: Report,
    pub runs: Vec<Run>,
    /// Chosen on validation Recall@10.
    pub best_taxonomy: Option<String>,
    pub best_dense: Option<String>,
    /// Seconds each trained row took to reach ANCE's best (seed-averaged) validation Recall@10.
    pub reach_ance: Vec<Reach>,
    /// The simulated A/B test, on the synthetic world only.
    pub simulated_ab: Option<SimulatedAb>,
    /// How the history term's `beta` was chosen (with a personalized row and candidates).
    pub history_choice: Option<HistoryChoice>,
    /// The learned re-ranking head of the personalized row's models, fitted per seed.
    pub rerank: Option<RerankChoice>,
    /// BM25's field boosts, chosen on validation; the BM25 row and hybrid fusion use them.
    pub bm25: crate::rankers::Bm25Choice,
    /// The fine-tuned MiniLM rows' runs.
    pub fine_tuned: Vec<FineTuned>,
}

/// One fine-tuned transformer row.
#[derive(Clone, Debug, Serialize)]
pub struct FineTuned {
    pub row: String,
    pub sampler: String,
    pub seed: u64,
    pub batch_size: usize,
    pub negatives: usize,
    pub lr: f64,
    pub summary: aisle_train::transformer::TuneSummary,
}

/// The history term's `beta`, chosen on validation Recall@10 of the personalized row's models
/// (the mean over seeds) reading `window` earlier interactions.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryChoice {
    pub window: usize,
    /// `(beta, validation Recall@10)` of every candidate, in the order tried.
    pub candidates: Vec<(f32, f64)>,
    /// The best candidate (the smallest among ties); 0 means no history-term row.
    pub chosen: f32,
    pub validation_queries: usize,
}

/// The re-ranking head fitted on the validation queries for each seed's personalized model.
#[derive(Clone, Debug, Serialize)]
pub struct RerankChoice {
    /// The row that ranks with it.
    pub row: String,
    /// `(seed, fit)`, in the order of the personalized row's runs.
    pub fits: Vec<(u64, crate::rerank::HeadFit)>,
    /// Seconds to build the signals and fit every seed's head (with the held-out variants).
    pub fit_s: f64,
}

impl RerankChoice {
    /// The held-out validation Recall@10 of each variant, the mean over seeds.
    pub fn held_out(&self) -> Vec<(String, f64)> {
        let n = self.fits.len().max(1) as f64;
        let mut out: Vec<(String, f64)> = Vec::new();
        for (_, f) in &self.fits {
            for (i, (name, r)) in f.held_out.iter().enumerate() {
                match out.get_mut(i) {
                    Some(o) => o.1 += r / n,
                    None => out.push((name.clone(), r / n)),
                }
            }
        }
        out
    }

    /// Each feature's weight, the mean over seeds.
    pub fn mean_weights(&self) -> Vec<(&'static str, f32)> {
        let n = self.fits.len().max(1) as f32;
        let mut w = [0f32; aisle_search::rerank::FEATURES];
        for (_, f) in &self.fits {
            for (m, x) in w.iter_mut().zip(f.head.weights) {
                *m += x / n;
            }
        }
        aisle_search::rerank::Reranker { weights: w }.named()
    }
}

/// Everything an experiment measured (`results.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Experiment {
    pub schema: &'static str,
    pub dataset: String,
    /// The command line that made it.
    pub command: String,
    pub aisle_version: &'static str,
    /// Unix seconds at the start.
    pub started: u64,
    pub wall_s: f64,
    pub threads: usize,
    pub quick: bool,
    pub config: ExperimentConfig,
    pub protocols: Vec<Protocol>,
    /// Rows that were not run, with the reason.
    pub absent: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

impl Experiment {
    /// The summary `aisle experiment` prints: per protocol, each row's test Recall@10 with its
    /// 95% interval, the best row marked.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for p in &self.protocols {
            out += &format!("{} / {}:\n", self.dataset, p.split);
            for row in &p.report.rows {
                if let Some(e) = row.micro.get("recall@10") {
                    out += &format!(
                        "  {:<48} R@10 {:.3} [{:.3}, {:.3}]{}\n",
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
        out
    }
}

/// The seed-averaged validation curve of a row: (step, mean training seconds, mean recall) at
/// the steps every seed measured.
pub fn mean_curve(runs: &[&Run]) -> Vec<CurvePoint> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .curve
        .iter()
        .filter_map(|p| {
            let at: Vec<&CurvePoint> = runs
                .iter()
                .filter_map(|r| r.curve.iter().find(|c| c.step == p.step))
                .collect();
            (at.len() == runs.len()).then(|| CurvePoint {
                step: p.step,
                train_s: at.iter().map(|c| c.train_s).sum::<f64>() / at.len() as f64,
                recall_at_10: at.iter().map(|c| c.recall_at_10).sum::<f64>() / at.len() as f64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(curve: &[(u64, f64, f64)]) -> Run {
        Run {
            row: "r".into(),
            seed: 0,
            sampler: "random".into(),
            steps: 0,
            train_s: 0.0,
            pairs_per_s: 0.0,
            sample_s: 0.0,
            forward_s: 0.0,
            backward_s: 0.0,
            refresh_s: 0.0,
            curve: curve
                .iter()
                .map(|&(step, train_s, recall_at_10)| CurvePoint {
                    step,
                    train_s,
                    recall_at_10,
                })
                .collect(),
            final_validation_recall_at_10: curve.last().map(|c| c.2),
            model: PathBuf::new(),
        }
    }

    #[test]
    fn mean_curve_keeps_steps_every_seed_measured() {
        let a = run_with(&[(0, 0.0, 0.1), (100, 2.0, 0.3), (200, 4.0, 0.5)]);
        let b = run_with(&[(0, 0.0, 0.3), (100, 4.0, 0.5)]);
        let m = mean_curve(&[&a, &b]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].step, 100);
        assert!((m[1].train_s - 3.0).abs() < 1e-12);
        assert!((m[1].recall_at_10 - 0.4).abs() < 1e-12);
        assert!(mean_curve(&[]).is_empty());
    }
}
