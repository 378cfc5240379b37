//! Training an experiment's rows: every dense row and seed under one budget, the personalized
//! row with the best TB-HNS sampler, MiniLM fine-tuned, and what the training runs say (the
//! best row on validation, the seconds to reach ANCE's best).

use std::path::{Path, PathBuf};
use std::time::Instant;

use aisle_core::io::slug;
use aisle_core::{Dataset, Split};
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{RunOptions, SamplerSpec, Silent};

use super::config::ExperimentConfig;
use super::results::{mean_curve, Cost, FineTuned, Reach, RowInfo, Run};
use super::rows::{RowKind, HISTORY_ONLY, MINILM_TUNED};
use crate::error::Result;

/// A row's trained models, one per seed.
pub(super) struct Trained {
    pub name: String,
    pub kind: RowKind,
    pub sampler: SamplerSpec,
    pub runs: Vec<Run>,
    /// Earlier interactions its models read (the personalized tower's window).
    pub history: usize,
}

impl Trained {
    /// Mean over seeds of the final validation Recall@10.
    pub fn validation(&self) -> Option<f64> {
        mean(
            self.runs
                .iter()
                .filter_map(|r| r.final_validation_recall_at_10),
        )
    }

    /// What the row is, with its training cost.
    pub fn info(&self) -> RowInfo {
        let n = self.runs.len().max(1) as f64;
        let sum = |f: fn(&Run) -> f64| self.runs.iter().map(f).sum::<f64>() / n;
        RowInfo {
            name: self.name.clone(),
            kind: self.kind,
            sampler: Some(self.sampler.to_string()),
            validation_recall_at_10: self.validation(),
            train_s: Some(sum(|r| r.train_s)),
            cost: Some(Cost {
                sample_s: sum(|r| r.sample_s),
                forward_s: sum(|r| r.forward_s),
                backward_s: sum(|r| r.backward_s),
                refresh_s: sum(|r| r.refresh_s),
            }),
        }
    }
}

/// The mean of `values` (`None` without any).
fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A row to train.
struct Job<'a> {
    name: &'a str,
    kind: RowKind,
    sampler: &'a SamplerSpec,
    personalize: Option<PersonalizeConfig>,
}

/// Trains `job` once per seed of `cfg`, each run into its own folder under `cfg.runs_dir`.
fn train_row(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    job: Job,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained> {
    let Job {
        name,
        kind,
        sampler,
        personalize,
    } = job;
    let mut runs = Vec::new();
    let history = personalize
        .as_ref()
        .map_or(aisle_model::personal::HISTORY_WINDOW, |p| p.history);
    for &seed in &cfg.seeds {
        let mut train = cfg.train.clone();
        train.sampler = sampler.clone();
        train.seed = seed;
        train.model.tower.seed = seed;
        train.personalize = personalize.clone();
        train.checkpoint_every = 0;
        let out_dir = run_dir(&cfg.runs_dir, &split.name, name, seed);
        let t = Instant::now();
        let summary = aisle_train::run(
            train,
            ds,
            split,
            &RunOptions {
                out_dir,
                resume: None,
            },
            &mut Silent,
        )?;
        progress(&format!(
            "  trained {name} (seed {seed}): validation R@10 {}, {:.1} s training, {:.1} s with validation",
            summary
                .final_recall_at_10
                .map_or("-".into(), |r| format!("{r:.4}")),
            summary.train_wall_s,
            t.elapsed().as_secs_f64()
        ));
        runs.push(Run::of(name, seed, &summary));
    }
    Ok(Trained {
        name: name.to_owned(),
        kind,
        sampler: sampler.clone(),
        runs,
        history,
    })
}

/// `DIR/SPLIT/ROW/seed-N`.
pub fn run_dir(dir: &Path, split: &str, row: &str, seed: u64) -> PathBuf {
    dir.join(slug(split))
        .join(slug(row))
        .join(format!("seed-{seed}"))
}

/// The row with the best validation Recall@10 among `rows` (ties: the first).
pub(super) fn best_of<'a>(rows: impl Iterator<Item = &'a Trained>) -> Option<&'a Trained> {
    let mut best: Option<(&Trained, f64)> = None;
    for r in rows {
        let v = r.validation().unwrap_or(f64::NEG_INFINITY);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((r, v));
        }
    }
    best.map(|b| b.0)
}

/// Phase 1 of a protocol: every dense row of `cfg`, every seed.
pub(super) fn train_dense_rows(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Trained>> {
    let mut trained: Vec<Trained> = Vec::new();
    for row in &cfg.rows {
        let job = Job {
            name: &row.name,
            kind: RowKind::Dense,
            sampler: &row.sampler,
            personalize: None,
        };
        trained.push(train_row(ds, split, cfg, job, progress)?);
    }
    Ok(trained)
}

/// The TB-HNS row with the best validation Recall@10: its name and sampler.
pub(super) fn best_taxonomy(
    cfg: &ExperimentConfig,
    trained: &[Trained],
) -> Option<(String, SamplerSpec)> {
    best_of(
        trained
            .iter()
            .filter(|t| cfg.rows.iter().any(|r| r.name == t.name && r.taxonomy)),
    )
    .map(|t| (t.name.clone(), t.sampler.clone()))
}

/// Trains the personalized row with the best TB-HNS variant's sampler (`tax_name`, `sampler`)
/// and, where customers have features (segment, age band), the same tower reading their
/// history only: what the features add, on cold-start customers above all. Appends them to
/// `trained` and returns the personalized row's name.
pub(super) fn train_personalized(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    (tax_name, sampler): (&str, &SamplerSpec),
    trained: &mut Vec<Trained>,
    progress: &mut dyn FnMut(&str),
) -> Result<String> {
    let name = format!("{tax_name} + personalization");
    let p = cfg.train.personalize.clone().unwrap_or_default();
    let job = Job {
        name: &name,
        kind: RowKind::Personalized,
        sampler,
        personalize: Some(p.clone()),
    };
    trained.push(train_row(ds, split, cfg, job, progress)?);
    if p.demographics && aisle_model::demographics::Demographics::any(&ds.users) {
        let name = format!("{name}{HISTORY_ONLY}");
        let job = Job {
            name: &name,
            kind: RowKind::Personalized,
            sampler,
            personalize: Some(PersonalizeConfig {
                demographics: false,
                ..p
            }),
        };
        trained.push(train_row(ds, split, cfg, job, progress)?);
    }
    Ok(name)
}

/// MiniLM (the folder `dir`) fine-tuned as `cfg.minilm_tune` says, in-batch and with the best
/// TB-HNS variant (one seed: it is slow on CPU). Empty without `cfg.minilm_tune`.
pub(super) fn fine_tune_minilm(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    dir: &Path,
    best_taxonomy: Option<&(String, SamplerSpec)>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FineTuned>> {
    let mut fine_tuned: Vec<FineTuned> = Vec::new();
    let Some(tune) = &cfg.minilm_tune else {
        return Ok(fine_tuned);
    };
    let mut jobs = vec![(format!("{MINILM_TUNED} in-batch"), SamplerSpec::InBatch)];
    match best_taxonomy {
        // A mixture with ANCE re-indexes with the n-gram model: not for a transformer.
        Some((tax_name, sampler)) if sampler.ance_refresh().is_some() => progress(&format!(
            "  not fine-tuning MiniLM with {tax_name}: its sampler includes ANCE"
        )),
        Some((tax_name, sampler)) => {
            jobs.push((format!("{MINILM_TUNED} {tax_name}"), sampler.clone()))
        }
        None => {}
    }
    let seed = cfg.seeds.first().copied().unwrap_or(42);
    for (name, sampler) in jobs {
        let tc = aisle_train::transformer::TuneConfig {
            sampler,
            seed,
            ..tune.clone()
        };
        let out = run_dir(&cfg.runs_dir, &split.name, &name, seed).join("model");
        progress(&format!(
            "  fine-tuning {name}: {} steps of {} pairs, {} negatives per pair",
            tc.steps, tc.batch_size, tc.negatives
        ));
        let summary =
            aisle_train::transformer::fine_tune(dir, ds, split, &tc, &out, &mut |l| progress(l))?;
        progress(&format!(
            "  fine-tuned {name} in {:.1} s ({:.1} pairs/s)",
            summary.train_s, summary.pairs_per_s
        ));
        let negatives = if tc.sampler.is_in_batch() {
            0
        } else {
            tc.negatives
        };
        fine_tuned.push(FineTuned {
            row: name,
            sampler: tc.sampler.to_string(),
            seed,
            batch_size: tc.batch_size,
            negatives,
            lr: tc.lr,
            summary,
        });
    }
    Ok(fine_tuned)
}

/// Training seconds for each row to reach ANCE's best seed-averaged validation Recall@10.
pub(super) fn reach(trained: &[Trained]) -> Vec<Reach> {
    let curve = |t: &Trained| mean_curve(&t.runs.iter().collect::<Vec<_>>());
    let Some(ance) = trained
        .iter()
        .find(|t| matches!(t.sampler, SamplerSpec::Ance { .. }) && t.kind == RowKind::Dense)
    else {
        return Vec::new();
    };
    let target = curve(ance)
        .iter()
        .map(|p| p.recall_at_10)
        .fold(f64::NEG_INFINITY, f64::max);
    if !target.is_finite() {
        return Vec::new();
    }
    trained
        .iter()
        .map(|t| {
            let hit = curve(t).into_iter().find(|p| p.recall_at_10 >= target);
            Reach {
                row: t.name.clone(),
                target,
                step: hit.map(|p| p.step),
                train_s: hit.map(|p| p.train_s),
            }
        })
        .collect()
}

/// The personalized tower fitted over pretrained MiniLM's fixed vectors
/// ([`aisle_train::personal_fit`]), on the first seed.
pub(super) struct MiniLmPersonal {
    pub fit: aisle_train::personal_fit::PersonalFit,
    /// The sampler of its negatives, as `--sampler` spells it.
    pub sampler: String,
    /// Earlier interactions the tower reads.
    pub history: usize,
}

/// Fits [`MiniLmPersonal`] over the MiniLM folder `dir` with the personalized row's settings
/// (history window, fusion, customer features) and the tower fit's defaults otherwise (its
/// learning rate among them: the towers do not move).
pub(super) fn fit_minilm_personal(
    ds: &Dataset,
    split: &Split,
    cfg: &ExperimentConfig,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<MiniLmPersonal> {
    use aisle_train::personal_fit::{fit_personalizer, PersonalFitConfig};
    let defaults = PersonalFitConfig::default();
    let fit_cfg = PersonalFitConfig {
        personalize: PersonalizeConfig {
            lr: defaults.personalize.lr,
            ..cfg.train.personalize.clone().unwrap_or_default()
        },
        seed: cfg.seeds.first().copied().unwrap_or(42),
        ..defaults
    };
    progress(&format!(
        "  fitting a personalized tower over pretrained MiniLM: {} steps of {} pairs",
        fit_cfg.steps, fit_cfg.batch_size
    ));
    let encoder = aisle_transformer::MiniLm::load(dir)?;
    let fit = fit_personalizer(ds, split, &encoder, &fit_cfg, &mut |l| {
        progress(&format!("    {l}"))
    })?;
    Ok(MiniLmPersonal {
        fit,
        sampler: fit_cfg.sampler.to_string(),
        history: fit_cfg.personalize.history,
    })
}

/// The row of [`MiniLmPersonal`]: pretrained MiniLM with the fitted tower, reading each
/// customer's history before the query's cut-off (the one history rule), built when its turn
/// comes.
pub(super) fn minilm_personal_group<'a>(
    ds: &'a std::sync::Arc<Dataset>,
    split: &'a Split,
    dir: &'a Path,
    personal: &'a MiniLmPersonal,
) -> crate::evaluate::Group<'a> {
    use crate::rankers::{DenseOptions, DenseRanker, HistoryRule, Ranker};
    let build = move || -> Result<Box<dyn Ranker>> {
        let encoder: std::sync::Arc<dyn aisle_model::Encoder> =
            std::sync::Arc::new(aisle_transformer::MiniLm::load(dir)?);
        let personalized =
            aisle_model::personalized::Personalized::new(encoder, personal.fit.tower.clone())?;
        let options = DenseOptions {
            history: personal.history,
            history_rule: HistoryRule::BeforeCutOff,
            mode: aisle_search::Mode::Dense,
            history_boost: 0.0,
            bm25: Default::default(),
        };
        Ok(Box::new(DenseRanker::with_options(
            super::rows::MINILM_PERSONALIZED,
            personalized,
            ds,
            split,
            &options,
        )?))
    };
    crate::evaluate::Group {
        name: super::rows::MINILM_PERSONALIZED.into(),
        members: vec![crate::evaluate::Member::Lazy(Box::new(build))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("TB-HNS mix + random"), "tb-hns-mix-random");
        assert_eq!(slug("  BM25 (weighted:0.8) "), "bm25-weighted-0-8");
        assert_eq!(
            run_dir(Path::new("/r"), "event", "ANCE", 3),
            PathBuf::from("/r/event/ance/seed-3")
        );
    }
}
