//! The choices a protocol makes on its validation queries with the personalized row's models:
//! the history term's weight, and the learned re-ranking heads.

use std::sync::Arc;
use std::time::Instant;

use aisle_search::{Mode, Signals};

use super::config::ExperimentConfig;
use super::models::{Models, Reranking};
use super::results::{HistoryChoice, RerankChoice};
use super::train::Trained;
use crate::error::Result;
use crate::evaluate::{evaluate_groups, EvalConfig, Group, Member, Part};
use crate::rankers::DenseOptions;
use crate::rerank::{fit_head, HeadFitOptions, HeadJob};

/// Tries every candidate `beta` of the history term on the validation queries, with each seed's
/// model of the personalized row `t` built once (beta is a query-time weight), and keeps the
/// best by seed-averaged Recall@10; ties go to the smaller beta.
pub(super) fn choose_history_boost(
    models: &Models,
    cfg: &ExperimentConfig,
    t: &Trained,
    progress: &mut dyn FnMut(&str),
) -> Result<HistoryChoice> {
    let (ds, split) = (models.ds, models.split);
    let max = cfg.history_boosts.iter().copied().fold(0f32, f32::max);
    let start = Instant::now();
    let total = t.runs.len() * cfg.history_boosts.len();
    let mut done = 0usize;
    let eval_cfg = EvalConfig {
        part: Part::Validation,
        ks: vec![10],
        resamples: 0,
        rounds: 0,
        seed: cfg.seed,
        reference: None,
    };
    let mut sums = vec![0f64; cfg.history_boosts.len()];
    let mut queries = 0;
    for run in &t.runs {
        // Built with the largest candidate so that histories are loaded even for a plain model.
        let mut ranker = models.load(
            t,
            run,
            &DenseOptions {
                history: cfg.history_term_window,
                history_rule: Default::default(),
                mode: Mode::Dense,
                history_boost: max,
                bm25: aisle_search::FieldBoosts::default(),
            },
        )?;
        for (sum, &beta) in sums.iter_mut().zip(&cfg.history_boosts) {
            ranker.set_history_boost(beta)?;
            let groups = [Group {
                name: format!("beta {beta}"),
                members: vec![Member::Ready(&ranker)],
            }];
            let report = evaluate_groups(ds, split, &groups, &eval_cfg)?;
            queries = report.queries;
            *sum += report
                .rows
                .first()
                .and_then(|r| r.micro.get("recall@10"))
                .map_or(0.0, |e| e.mean);
            done += 1;
            if done < total {
                let elapsed = start.elapsed().as_secs_f64();
                progress(&format!(
                    "  history term: {done}/{total} validation runs (seed {}, beta {beta}) in \
                     {elapsed:.0} s, about {:.0} s left",
                    run.seed,
                    elapsed * (total - done) as f64 / done as f64
                ));
            }
        }
    }
    let n = t.runs.len().max(1) as f64;
    let candidates: Vec<(f32, f64)> = cfg
        .history_boosts
        .iter()
        .zip(&sums)
        .map(|(&b, &s)| (b, s / n))
        .collect();
    Ok(HistoryChoice {
        window: cfg.history_term_window,
        chosen: pick_boost(&candidates),
        candidates,
        validation_queries: queries,
    })
}

/// The `beta` with the best validation score; among ties, the smallest (0 without candidates).
fn pick_boost(candidates: &[(f32, f64)]) -> f32 {
    let mut chosen: Option<(f32, f64)> = None;
    for &(b, r) in candidates {
        chosen = match chosen {
            Some((cb, cr)) if r < cr || (r == cr && cb <= b) => Some((cb, cr)),
            _ => Some((b, r)),
        };
    }
    chosen.map_or(0.0, |c| c.0)
}

/// Fits the learned re-ranking head of each seed's model of the personalized row `t` on the
/// validation queries, with the held-out ablation ([`fit_head`]).
pub(super) fn fit_reranking(
    models: &Models,
    cfg: &ExperimentConfig,
    t: &Trained,
    progress: &mut dyn FnMut(&str),
) -> Result<Reranking> {
    let (ds, split) = (models.ds, models.split);
    let t0 = Instant::now();
    let signals = Arc::new(Signals::of_training(ds, split));
    let mut fits = Vec::with_capacity(t.runs.len());
    for run in &t.runs {
        let job = HeadJob {
            model: &run.model,
            name: format!("{} (seed {})", t.name, run.seed),
            options: DenseOptions {
                history: cfg.history_term_window,
                ..models.plain(t)
            },
            personalized_history: None,
            fit: HeadFitOptions {
                seed: cfg.seed,
                ..Default::default()
            },
            save: None,
        };
        let fit = fit_head(ds, split, &signals, &job, &mut |l: &str| {
            progress(&format!("  seed {}: {l}", run.seed))
        })?;
        fits.push((run.seed, fit));
    }
    let choice = RerankChoice {
        row: format!("{} + learned re-ranking", t.name),
        fits,
        fit_s: t0.elapsed().as_secs_f64(),
    };
    progress(&format!(
        "  learned re-ranking: held-out validation Recall@10 {} in {:.1} s",
        choice
            .held_out()
            .iter()
            .map(|(v, r)| format!("{v}: {r:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        choice.fit_s
    ));
    Ok(Reranking { choice, signals })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_weight_is_the_validation_argmax_and_ties_go_to_the_smaller() {
        assert_eq!(pick_boost(&[(2.0, 0.70), (0.5, 0.71), (1.0, 0.69)]), 0.5);
        assert_eq!(pick_boost(&[(4.0, 0.70), (1.0, 0.70), (2.0, 0.70)]), 1.0);
        assert_eq!(pick_boost(&[(0.25, 0.90), (0.0, 0.90)]), 0.0);
        assert_eq!(pick_boost(&[]), 0.0);
    }
}
