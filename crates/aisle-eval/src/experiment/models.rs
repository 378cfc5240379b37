//! A protocol's trained models as rankers. A row's rankers are built one seed at a time when the
//! row is evaluated (each holds a model of hundreds of MB) and dropped after.

use std::path::Path;
use std::sync::Arc;

use aisle_core::{Dataset, Split};
use aisle_search::{FieldBoosts, Mode, Signals};

use super::results::{RerankChoice, Run};
use super::train::Trained;
use crate::error::Result;
use crate::evaluate::Member;
use crate::rankers::{DenseOptions, DenseRanker, Ranker};

/// A trained run's model, loaded from `path`, ranking as `options` say.
fn load_ranker(
    name: String,
    path: &Path,
    ds: &Arc<Dataset>,
    split: &Split,
    options: &DenseOptions,
) -> Result<DenseRanker> {
    let (model, _) = aisle_model::artifact::load(path)?;
    DenseRanker::with_options(name, model, ds, split, options)
}

/// The learned re-ranking heads of the personalized row's models, and the signals they read.
pub(super) struct Reranking {
    pub choice: RerankChoice,
    pub signals: Arc<Signals>,
}

/// Where a protocol's models rank: its dataset and split, and BM25's field boosts chosen on its
/// validation queries.
#[derive(Clone, Copy)]
pub(super) struct Models<'a> {
    pub ds: &'a Arc<Dataset>,
    pub split: &'a Split,
    pub bm25: FieldBoosts,
}

impl<'a> Models<'a> {
    /// How row `t`'s models rank by themselves: dense, reading the row's own history window.
    pub fn plain(&self, t: &Trained) -> DenseOptions {
        DenseOptions {
            history: t.history,
            history_rule: Default::default(),
            mode: Mode::Dense,
            history_boost: 0.0,
            bm25: self.bm25,
        }
    }

    /// The model of row `t`'s `run`, loaded now, ranking as `options` say.
    pub fn load(&self, t: &Trained, run: &Run, options: &DenseOptions) -> Result<DenseRanker> {
        let name = format!("{} (seed {})", t.name, run.seed);
        load_ranker(name, &run.model, self.ds, self.split, options)
    }

    /// The row `name`: each seed's model of `t` ranking as `options` say, built when its turn
    /// comes; with `reranking`, each with the head fitted for its seed.
    pub fn members(
        &self,
        name: &str,
        t: &Trained,
        options: DenseOptions,
        reranking: Option<&Reranking>,
    ) -> Vec<Member<'a>> {
        t.runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let row = format!("{name} (seed {})", r.seed);
                let path = r.model.clone();
                let (ds, split) = (Arc::clone(self.ds), self.split);
                // The fits are in the order of the runs: one per seed.
                let head =
                    reranking.map(|h| (Arc::clone(&h.signals), h.choice.fits[i].1.head.clone()));
                Member::Lazy(Box::new(move || -> Result<Box<dyn Ranker>> {
                    let mut ranker = load_ranker(row.clone(), &path, &ds, split, &options)?;
                    if let Some((signals, head)) = &head {
                        ranker.set_reranking(Arc::clone(signals), Some(head.clone()))?;
                    }
                    Ok(Box::new(ranker))
                }))
            })
            .collect()
    }
}
