//! One protocol (split) of an experiment, phase by phase: BM25 tuned on validation, the rows
//! trained, the choices made on validation, every row evaluated on test, the simulated A/B test,
//! and what each row is.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aisle_core::synth::GroundTruth;
use aisle_core::{Dataset, Split};
use aisle_search::FieldBoosts;
use aisle_train::SamplerSpec;

use super::choose::{choose_history_boost, fit_reranking};
use super::config::ExperimentConfig;
use super::models::{Models, Reranking};
use super::results::{FineTuned, HistoryChoice, Protocol, RowInfo, Run};
use super::rows::{
    RowKind, BM25, MEMORISATION, MINILM_PERSONALIZED, POPULARITY, REPURCHASE, WITHOUT_VALIDATION,
};
use super::train::{
    best_of, best_taxonomy, fine_tune_minilm, fit_minilm_personal, minilm_personal_group, reach,
    train_dense_rows, train_personalized, MiniLmPersonal, Trained,
};
use crate::error::Result;
use crate::evaluate::{evaluate_groups, EvalConfig, Group, Member, Part, Report};
use crate::online::{simulate_ab, ArmSpec, SimulatedAb};
use crate::rankers::{
    Bm25Ranker, DenseOptions, HistoryRule, MemorisationRanker, PopularityRanker, Ranker,
    RepurchaseRanker,
};
use crate::zero_shot::{MiniLmRanker, MINILM};

/// Test queries whose customer has a validation interaction before the query's cut-off: those
/// whose history the one history rule ([`HistoryRule::BeforeCutOff`]) lengthens.
pub fn validation_precedes_test(ds: &Dataset, split: &Split) -> usize {
    let mut first: std::collections::HashMap<aisle_core::UserId, i64> = Default::default();
    for q in &split.validation {
        for &i in &q.events {
            let e = &ds.interactions[i as usize];
            let t = first.entry(e.user).or_insert(e.time);
            *t = (*t).min(e.time);
        }
    }
    split
        .test
        .iter()
        .filter(|q| {
            q.user
                .and_then(|u| first.get(&u))
                .is_some_and(|&t| t < q.before)
        })
        .count()
}

/// Runs one protocol: BM25 tuned on validation (0), the rows trained (1) and chosen on
/// validation (2), every row evaluated on test (3), the simulated A/B test where the world's
/// truth is known (4), and what each row is (5).
pub(super) fn protocol(
    ds: &Arc<Dataset>,
    split: &Split,
    cfg: &ExperimentConfig,
    truth: Option<&GroundTruth>,
    minilm: Option<(&MiniLmRanker, &Path)>,
    progress: &mut dyn FnMut(&str),
) -> Result<Protocol> {
    let (minilm, minilm_dir) = match minilm {
        Some((m, dir)) => (Some(m), Some(dir)),
        None => (None, None),
    };
    progress(&format!(
        "protocol `{}`: {} training interactions, {} validation and {} test queries",
        split.name,
        split.train.len(),
        split.validation.len(),
        split.test.len()
    ));
    // 0. The strongest BM25 on this protocol's validation queries: the BM25 row, BM25 negatives
    // and hybrid fusion all use its field boosts.
    let (bm25, bm25_choice) = Bm25Ranker::tuned(ds, split)?;
    progress(&format!("  {}", bm25_choice.note()));
    let cfg = &with_bm25(cfg, bm25_choice.chosen);
    let models = Models {
        ds,
        split,
        bm25: bm25_choice.chosen,
    };
    // 1, 2. Rows trained, choices on validation.
    let with_users = split
        .test
        .iter()
        .chain(&split.validation)
        .any(|q| q.user.is_some());
    let training = Training::run(ds, split, cfg, with_users, minilm_dir, progress)?;
    // 3. Every row on test.
    let baselines = Baselines {
        bm25,
        pop: PopularityRanker::new(ds, split),
        memo: MemorisationRanker::new(ds, split),
        repurchase: with_users.then(|| RepurchaseRanker::new(ds, split)),
        minilm,
    };
    let dense = DenseRows::build(&models, cfg, &training, progress)?;
    let reranking = match (training.personalized_row(), cfg.rerank) {
        (Some(t), true) => Some(fit_reranking(&models, cfg, t, progress)?),
        _ => None,
    };
    let mut groups = baselines.groups(ds, &training.fine_tuned);
    if let (Some(fit), Some(dir)) = (&training.minilm_personal, minilm_dir) {
        groups.insert(
            groups.len() - training.fine_tuned.len(),
            minilm_personal_group(ds, split, dir, fit),
        );
    }
    groups.extend(dense.groups(&models));
    let mut without_validation = None;
    if let (Some(r), Some(t)) = (&reranking, training.personalized_row()) {
        let (heads, name) = rerank_groups(&models, cfg, t, r);
        groups.extend(heads);
        without_validation = name;
    }
    let reference = training.best_taxonomy.as_ref().map(|b| b.0.clone());
    let report = evaluate_on_test(&models, cfg, groups, reference, progress)?;
    // 4. The simulated A/B test (synthetic world).
    let simulated_ab = match truth {
        Some(truth) => Some(simulate(
            &models,
            cfg,
            truth,
            &baselines.bm25,
            &dense,
            progress,
        )?),
        None => None,
    };
    // 5. Rows, runs, reach.
    let rerank_row = reranking.as_ref().map(|r| r.choice.row.clone());
    let rows = row_infos(&baselines, &dense, rerank_row, without_validation);
    let trained = &training.trained;
    let runs: Vec<Run> = trained
        .iter()
        .flat_map(|t| t.runs.iter().cloned())
        .collect();
    let reach_ance = reach(trained);
    Ok(Protocol {
        split: split.name.clone(),
        description: split.description.clone(),
        rows,
        report,
        runs,
        best_taxonomy: training.best_taxonomy.as_ref().map(|b| b.0.clone()),
        best_dense: training.best_dense.clone(),
        reach_ance,
        simulated_ab,
        history_choice: dense.history_choice,
        rerank: reranking.map(|r| r.choice),
        bm25: bm25_choice,
        fine_tuned: training.fine_tuned,
    })
}

/// `cfg` with BM25's field boosts chosen for this protocol (BM25 negatives use them).
fn with_bm25(cfg: &ExperimentConfig, boosts: FieldBoosts) -> ExperimentConfig {
    let mut tuned = cfg.clone();
    tuned.train.bm25 = boosts;
    if let Some(t) = tuned.minilm_tune.as_mut() {
        t.bm25 = boosts;
    }
    tuned
}

/// What a protocol trained, and the rows chosen on validation.
struct Training {
    trained: Vec<Trained>,
    /// The best TB-HNS variant's name and sampler: it trains the personalized row.
    best_taxonomy: Option<(String, SamplerSpec)>,
    /// The best dense row: the hybrid row fuses it with BM25.
    best_dense: Option<String>,
    /// The personalized row's name.
    personalized: Option<String>,
    fine_tuned: Vec<FineTuned>,
    /// The personalized tower fitted over pretrained MiniLM (where queries name customers).
    minilm_personal: Option<MiniLmPersonal>,
}

impl Training {
    /// Phases 1 and 2: the dense rows, every seed; the best TB-HNS variant and the best dense
    /// row on validation Recall@10; the personalized row (where queries name customers and
    /// `cfg.personalized`); MiniLM fine-tuned (with its folder `minilm_dir`).
    fn run(
        ds: &Dataset,
        split: &Split,
        cfg: &ExperimentConfig,
        with_users: bool,
        minilm_dir: Option<&Path>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Training> {
        let mut trained = train_dense_rows(ds, split, cfg, progress)?;
        let best_taxonomy = best_taxonomy(cfg, &trained);
        let best_dense = best_of(trained.iter()).map(|t| t.name.clone());
        let personalized = match (cfg.personalized && with_users, &best_taxonomy) {
            (true, Some((name, sampler))) => Some(train_personalized(
                ds,
                split,
                cfg,
                (name, sampler),
                &mut trained,
                progress,
            )?),
            _ => None,
        };
        let fine_tuned = match minilm_dir {
            Some(dir) => fine_tune_minilm(ds, split, cfg, dir, best_taxonomy.as_ref(), progress)?,
            None => Vec::new(),
        };
        // The personalized tower over pretrained MiniLM's vectors, as over the n-gram towers.
        let minilm_personal = match minilm_dir {
            Some(dir) if cfg.personalized && with_users => {
                Some(fit_minilm_personal(ds, split, cfg, dir, progress)?)
            }
            _ => None,
        };
        Ok(Training {
            trained,
            best_taxonomy,
            best_dense,
            personalized,
            fine_tuned,
            minilm_personal,
        })
    }

    fn find(&self, name: Option<&String>) -> Option<&Trained> {
        name.and_then(|n| self.trained.iter().find(|t| &t.name == n))
    }

    /// The personalized row, when one was trained.
    fn personalized_row(&self) -> Option<&Trained> {
        self.find(self.personalized.as_ref())
    }
}

/// The rankers that need no training.
struct Baselines<'a> {
    bm25: Bm25Ranker,
    pop: PopularityRanker,
    memo: MemorisationRanker,
    /// Where queries name customers.
    repurchase: Option<RepurchaseRanker>,
    /// MiniLM zero-shot, where its files are given.
    minilm: Option<&'a MiniLmRanker>,
}

impl Baselines<'_> {
    /// Their rows, then MiniLM's (zero-shot, then each of `fine_tuned`, built when its turn
    /// comes), in report order.
    fn groups<'s>(&'s self, ds: &Arc<Dataset>, fine_tuned: &[FineTuned]) -> Vec<Group<'s>> {
        let ready = |name: &str, r: &'s dyn Ranker| Group {
            name: name.into(),
            members: vec![Member::Ready(r)],
        };
        let mut groups: Vec<Group> = vec![
            ready(BM25, &self.bm25),
            ready(POPULARITY, &self.pop),
            ready(MEMORISATION, &self.memo),
        ];
        if let Some(r) = &self.repurchase {
            groups.push(ready(REPURCHASE, r));
        }
        if let Some(m) = self.minilm {
            groups.push(ready(MINILM, m));
        }
        for f in fine_tuned {
            let (name, path) = (f.row.clone(), f.summary.model.clone());
            let ds = Arc::clone(ds);
            groups.push(Group {
                name: f.row.clone(),
                members: vec![Member::Lazy(Box::new(
                    move || -> Result<Box<dyn Ranker>> {
                        Ok(Box::new(MiniLmRanker::with_name(&ds, &path, name.clone())?))
                    },
                ))],
            });
        }
        groups
    }
}

/// The trained rows' models as the test evaluation ranks them, and the rows derived from them.
struct DenseRows<'t> {
    training: &'t Training,
    /// `(row name, trained row, search options)`, in report order.
    rows: Vec<(String, &'t Trained, DenseOptions)>,
    /// The best dense row fused with BM25.
    hybrid: Option<String>,
    /// The personalized row with the history term, where a `beta` above 0 was chosen.
    history: Option<String>,
    history_choice: Option<HistoryChoice>,
}

impl<'t> DenseRows<'t> {
    /// Every trained row as it is, the hybrid row, then the history-term row (its `beta`
    /// chosen here on validation, with the personalized row and candidates).
    fn build(
        models: &Models,
        cfg: &ExperimentConfig,
        training: &'t Training,
        progress: &mut dyn FnMut(&str),
    ) -> Result<DenseRows<'t>> {
        let mut rows: Vec<(String, &Trained, DenseOptions)> = Vec::new();
        for t in &training.trained {
            rows.push((t.name.clone(), t, models.plain(t)));
        }
        let mut hybrid = None;
        if let Some(best) = training.find(training.best_dense.as_ref()) {
            let name = format!("{} + BM25 ({})", best.name, cfg.hybrid);
            let options = DenseOptions {
                mode: cfg.hybrid,
                ..models.plain(best)
            };
            rows.push((name.clone(), best, options));
            hybrid = Some(name);
        }
        let mut history = None;
        let mut history_choice = None;
        if let (Some(t), false) = (training.personalized_row(), cfg.history_boosts.is_empty()) {
            let t0 = Instant::now();
            let choice = choose_history_boost(models, cfg, t, progress)?;
            progress(&format!(
                "  history term: beta {} chosen on validation Recall@10 ({}) in {:.1} s",
                choice.chosen,
                choice
                    .candidates
                    .iter()
                    .map(|(b, r)| format!("{b}: {r:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t0.elapsed().as_secs_f64()
            ));
            if choice.chosen > 0.0 {
                let name = format!("{} + history term x{}", t.name, choice.chosen);
                let options = DenseOptions {
                    history_boost: choice.chosen,
                    history: cfg.history_term_window,
                    ..models.plain(t)
                };
                rows.push((name.clone(), t, options));
                history = Some(name);
            }
            history_choice = Some(choice);
        }
        Ok(DenseRows {
            training,
            rows,
            hybrid,
            history,
            history_choice,
        })
    }

    /// One row per entry of `rows`, each seed's model built when its turn comes.
    fn groups<'a>(&self, models: &Models<'a>) -> Vec<Group<'a>> {
        self.rows
            .iter()
            .map(|(name, t, options)| Group {
                name: name.clone(),
                members: models.members(name, t, *options, None),
            })
            .collect()
    }
}

/// The personalized row `t`'s models with their re-ranking heads, reading histories as every
/// row does, and, where validation interactions come before test queries (leave-last-order-out),
/// the same heads reading training interactions only: what the one history rule adds. Returns
/// the rows and the second one's name (`None` where it is not run).
fn rerank_groups<'a>(
    models: &Models<'a>,
    cfg: &ExperimentConfig,
    t: &Trained,
    reranking: &Reranking,
) -> (Vec<Group<'a>>, Option<String>) {
    let row = &reranking.choice.row;
    let options = DenseOptions {
        history: cfg.history_term_window,
        ..models.plain(t)
    };
    let mut groups = vec![Group {
        name: row.clone(),
        members: models.members(row, t, options, Some(reranking)),
    }];
    if validation_precedes_test(models.ds, models.split) == 0 {
        return (groups, None);
    }
    let name = format!("{row}{WITHOUT_VALIDATION}");
    let options = DenseOptions {
        history_rule: HistoryRule::TrainingOnly,
        ..options
    };
    groups.push(Group {
        members: models.members(&name, t, options, Some(reranking)),
        name: name.clone(),
    });
    (groups, Some(name))
}

/// Phase 3: every row on the test queries, each tested against `reference` (the best TB-HNS
/// variant) and the best row. The rows' rankers are dropped after.
fn evaluate_on_test(
    models: &Models,
    cfg: &ExperimentConfig,
    groups: Vec<Group>,
    reference: Option<String>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
    let eval_cfg = EvalConfig {
        part: Part::Test,
        resamples: cfg.resamples,
        rounds: cfg.rounds,
        seed: cfg.seed,
        reference,
        ..EvalConfig::default()
    };
    let t = Instant::now();
    let report = evaluate_groups(models.ds, models.split, &groups, &eval_cfg)?;
    let n_rows = groups.len();
    drop(groups);
    progress(&format!(
        "  built and evaluated {} rows on {} test queries in {:.1} s",
        n_rows,
        report.queries,
        t.elapsed().as_secs_f64()
    ));
    Ok(report)
}

/// Phase 4: the simulated A/B test of BM25 against the best dense row and the personalized row.
fn simulate(
    models: &Models,
    cfg: &ExperimentConfig,
    truth: &GroundTruth,
    bm25: &Bm25Ranker,
    dense: &DenseRows,
    progress: &mut dyn FnMut(&str),
) -> Result<SimulatedAb> {
    let mut arms = vec![ArmSpec {
        name: BM25.into(),
        rankers: vec![Member::Ready(bm25)],
    }];
    let training = dense.training;
    for name in [training.best_dense.as_ref(), training.personalized.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some((_, t, options)) = dense.rows.iter().find(|(n, _, _)| n == name) {
            arms.push(ArmSpec {
                name: name.clone(),
                rankers: models.members(name, t, *options, None),
            });
        }
    }
    let t = Instant::now();
    let ab = simulate_ab(
        models.ds,
        models.split,
        truth,
        &arms,
        cfg.seed,
        cfg.resamples,
        cfg.rounds,
    )?;
    progress(&format!(
        "  simulated A/B over {} test sessions in {:.1} s",
        ab.sessions,
        t.elapsed().as_secs_f64()
    ));
    Ok(ab)
}

/// Phase 5: what each row is, in report order: the baselines, MiniLM's rows, the trained rows,
/// then the rows that reuse a trained row's models (hybrid, history term, re-ranking heads).
fn row_infos(
    baselines: &Baselines,
    dense: &DenseRows,
    rerank_row: Option<String>,
    without_validation: Option<String>,
) -> Vec<RowInfo> {
    let training = dense.training;
    let mut rows: Vec<RowInfo> = [BM25, POPULARITY, MEMORISATION]
        .iter()
        .map(|n| baseline_info(n))
        .collect();
    if baselines.repurchase.is_some() {
        rows.push(baseline_info(REPURCHASE));
    }
    if baselines.minilm.is_some() {
        rows.push(RowInfo {
            kind: RowKind::ZeroShot,
            ..baseline_info(MINILM)
        });
    }
    if let Some(fit) = &training.minilm_personal {
        rows.push(RowInfo {
            name: MINILM_PERSONALIZED.into(),
            kind: RowKind::FineTuned,
            sampler: Some(fit.sampler.clone()),
            validation_recall_at_10: Some(fit.fit.validation_personalized),
            train_s: Some(fit.fit.encode_s + fit.fit.fit_s),
            cost: None,
        });
    }
    for f in &training.fine_tuned {
        rows.push(RowInfo {
            name: f.row.clone(),
            kind: RowKind::FineTuned,
            sampler: Some(f.sampler.clone()),
            validation_recall_at_10: None,
            train_s: Some(f.summary.train_s),
            cost: None,
        });
    }
    for t in &training.trained {
        rows.push(t.info());
    }
    let personalized = training.personalized.as_ref();
    for (name, of) in [
        (dense.hybrid.clone(), training.best_dense.as_ref()),
        (dense.history.clone(), personalized),
        (rerank_row, personalized),
        (without_validation, personalized),
    ] {
        let (Some(name), Some(t)) = (name, training.find(of)) else {
            continue;
        };
        // No training of its own: it reuses `of`'s models.
        rows.push(RowInfo {
            name,
            kind: if t.kind == RowKind::Personalized {
                RowKind::Personalized
            } else {
                RowKind::Hybrid
            },
            sampler: Some(t.sampler.to_string()),
            validation_recall_at_10: None,
            train_s: None,
            cost: None,
        });
    }
    rows
}

fn baseline_info(name: &str) -> RowInfo {
    RowInfo {
        name: name.to_owned(),
        kind: RowKind::Baseline,
        sampler: None,
        validation_recall_at_10: None,
        train_s: None,
        cost: None,
    }
}
