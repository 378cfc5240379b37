//! Fitting the learned re-ranking head ([`aisle_search::rerank`]) on a split's validation
//! queries, and measuring it there without fitting on what it is measured on.
//!
//! The head's weights are fitted per model on every validation query; the figure that says how
//! good the head is comes from two folds of customers: fitted on one half, measured on the other,
//! and the other way round, so that no query is scored by weights fitted on it. The same folds
//! measure the head without some of its features (an ablation), so that the report can say
//! which signal carries the gain.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use aisle_core::rng::Rng;
use aisle_core::split::QuerySource;
use aisle_core::{Dataset, EvalQuery, ProductId, Split};
use aisle_search::rerank::{
    fit_observed, Feature, FitCase, FitOptions, Reranker, Signals, FEATURES,
};

use crate::error::Result;
use crate::rankers::DenseRanker;

/// The signals of `split`'s training part: the same interactions the customers' histories hold.
pub fn split_signals(ds: &Dataset, split: &Split) -> Signals {
    let source = QuerySource::of(ds);
    Signals::build(ds, split.train.iter().copied(), |e| {
        source.query_text(ds, e)
    })
}

/// The signals of every interaction: what a live service knows (not for evaluation).
pub fn dataset_signals(ds: &Dataset) -> Signals {
    let source = QuerySource::of(ds);
    Signals::build(ds, 0..ds.interactions.len() as u32, |e| {
        source.query_text(ds, e)
    })
}

/// The head without some features, measured on held-out folds.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub drop: &'static [Feature],
}

/// The variants every fit is measured with: all features first.
pub const VARIANTS: [Variant; 5] = [
    Variant {
        name: "all features",
        drop: &[],
    },
    Variant {
        name: "without neighbours",
        drop: &[Feature::Neighbours, Feature::NewNeighbours],
    },
    Variant {
        name: "without the query text's own signals",
        drop: &[
            Feature::TextMatch,
            Feature::BoughtAndMatch,
            Feature::LogQueryCount,
        ],
    },
    Variant {
        name: "without the customer's history features and neighbours",
        drop: &[
            Feature::HistoryClosest,
            Feature::Bought,
            Feature::BoughtAndMatch,
            Feature::LogTimesBought,
            Feature::Recency,
            Feature::Neighbours,
            Feature::NewNeighbours,
        ],
    },
    Variant {
        name: "dense score only",
        drop: &[
            Feature::HistoryClosest,
            Feature::TextMatch,
            Feature::Bought,
            Feature::BoughtAndMatch,
            Feature::LogTimesBought,
            Feature::Recency,
            Feature::LogQueryCount,
            Feature::Neighbours,
            Feature::NewNeighbours,
        ],
    },
];

impl Variant {
    /// Which features the fit may use: all but those dropped.
    fn mask(&self) -> [bool; FEATURES] {
        let mut m = [true; FEATURES];
        for f in self.drop {
            m[f.index()] = false;
        }
        m
    }
}

/// One model's fit.
#[derive(Clone, Debug, Serialize)]
pub struct HeadFit {
    /// Fitted on every sampled validation query: what the test row ranks with.
    pub head: Reranker,
    /// Validation Recall@10 of the head fitted on the same queries (in-sample).
    pub in_sample_recall_at_10: f64,
    /// `(variant, validation Recall@10 over two folds of customers)`, [`VARIANTS`] in order;
    /// empty when the fit ran without the ablation.
    pub held_out: Vec<(String, f64)>,
    /// Validation queries the head was fitted on.
    pub validation_queries: usize,
    /// Validation queries with a relevant product, of which those were a seeded sample.
    pub sampled_from: usize,
    /// Share of relevant validation products among the candidates (the head's ceiling).
    pub candidate_recall: f64,
}

/// At most this many validation queries (a seeded sample) fit the head: its ten weights do not
/// need more, and each query costs its candidates' features (the dense top 100, the customer's
/// earlier products and those chosen before for the text) in memory and in every Adam step.
/// Every committed report fitted on fewer (4,000 to 4,564), so none of them changes.
pub const HEAD_FIT_QUERIES: usize = 10_000;

/// How [`fit_head`] runs.
#[derive(Clone, Debug)]
pub struct HeadFitOptions {
    /// At most this many validation queries, a sample fixed by `seed`.
    pub max_queries: usize,
    pub seed: u64,
    /// Also measure every [`VARIANTS`] entry on two folds of customers (ten more fits: what
    /// `aisle experiment` reports; `aisle train --rerank` fits once).
    pub ablation: bool,
}

impl Default for HeadFitOptions {
    fn default() -> Self {
        HeadFitOptions {
            max_queries: HEAD_FIT_QUERIES,
            seed: 0,
            ablation: true,
        }
    }
}

/// Progress lines of a long phase: at most one every few seconds, each with the share done and
/// the time left at the rate so far.
struct Eta<'a> {
    what: String,
    start: std::time::Instant,
    last: std::time::Instant,
    progress: &'a mut dyn FnMut(&str),
}

impl<'a> Eta<'a> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(what: String, progress: &'a mut dyn FnMut(&str)) -> Eta<'a> {
        let now = std::time::Instant::now();
        Eta {
            what,
            start: now,
            last: now,
            progress,
        }
    }

    fn update(&mut self, done: usize, total: usize, unit: &str) {
        if self.last.elapsed() < Self::EVERY || done == 0 || done >= total {
            return;
        }
        self.last = std::time::Instant::now();
        let elapsed = self.start.elapsed().as_secs_f64();
        let left = elapsed * (total - done) as f64 / done as f64;
        (self.progress)(&format!(
            "{}: {done}/{total} {unit} in {elapsed:.0} s, about {left:.0} s left",
            self.what
        ));
    }

    fn finish(self, what: &str) -> f64 {
        let s = self.start.elapsed().as_secs_f64();
        (self.progress)(&format!("{}: {what} in {s:.1} s", self.what));
        s
    }
}

/// Fits the head for one model (`ranker`, whose Searcher reads `signals`) on at most
/// `opts.max_queries` validation queries of `split`, with the two-fold measurements of every
/// [`VARIANTS`] entry when `opts.ablation`. `progress` gets a line per phase and, while a phase
/// runs, one every few seconds with the time left.
pub fn fit_head(
    ds: &Dataset,
    split: &Split,
    ranker: &mut DenseRanker,
    signals: &Arc<Signals>,
    opts: &HeadFitOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<HeadFit> {
    ranker.set_reranking(Arc::clone(signals), None)?;
    let all: Vec<&EvalQuery> = split
        .validation
        .iter()
        .filter(|q| q.relevant.iter().any(|r| r.1 > 0))
        .collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    if all.len() > opts.max_queries {
        Rng::new(opts.seed ^ 0x4EAD_F175).shuffle(&mut order);
        order.truncate(opts.max_queries);
        order.sort_unstable();
    }
    let queries: Vec<&EvalQuery> = order.iter().map(|&i| all[i]).collect();
    let cases = crate::evaluate::cases_of(ds, &queries);
    let mut candidates = Vec::with_capacity(queries.len());
    {
        let mut eta = Eta::new(
            format!(
                "re-ranking head: candidates of {} validation queries{}",
                queries.len(),
                if queries.len() < all.len() {
                    format!(" (a sample of {})", all.len())
                } else {
                    String::new()
                }
            ),
            progress,
        );
        // In chunks, so that a long phase reports how far it got.
        for chunk in cases.chunks(1024) {
            candidates.extend(ranker.candidate_features(chunk)?);
            eta.update(candidates.len(), cases.len(), "queries");
        }
        eta.finish("done");
    }
    let mut fit_cases = Vec::with_capacity(queries.len());
    let mut products: Vec<Vec<ProductId>> = Vec::with_capacity(queries.len());
    let mut relevant: Vec<HashSet<ProductId>> = Vec::with_capacity(queries.len());
    let (mut found, mut total) = (0usize, 0usize);
    for (q, c) in queries.iter().zip(candidates) {
        let rel: HashSet<ProductId> = q.relevant.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
        let flags: Vec<bool> = c.iter().map(|(p, _)| rel.contains(p)).collect();
        found += flags.iter().filter(|&&f| f).count();
        total += rel.len();
        products.push(c.iter().map(|(p, _)| *p).collect());
        fit_cases.push(FitCase {
            features: c.into_iter().map(|(_, f)| f).collect(),
            relevant: flags,
        });
        relevant.push(rel);
    }
    // Folds by customer, so that one customer's queries never sit on both sides.
    let fold: Vec<usize> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| q.user.map_or(i, |u| u.index()) % 2)
        .collect();
    let recall = |head: &Reranker, i: usize| -> f64 {
        let c = &fit_cases[i];
        let mut order: Vec<usize> = (0..c.features.len()).collect();
        let score: Vec<f32> = c.features.iter().map(|f| head.score(f)).collect();
        order.sort_by(|&a, &b| {
            score[b]
                .total_cmp(&score[a])
                .then(products[i][a].cmp(&products[i][b]))
        });
        let hits = order.iter().take(10).filter(|&&j| c.relevant[j]).count();
        hits as f64 / relevant[i].len().max(1) as f64
    };
    let n = fit_cases.len().max(1) as f64;
    let variants: &[Variant] = if opts.ablation { &VARIANTS } else { &[] };
    let fits = 2 * variants.len() + 1;
    let steps = FitOptions::default().iterations;
    let mut eta = Eta::new(
        format!(
            "re-ranking head: {fits} fit{} of {steps} steps{}",
            if fits == 1 { "" } else { "s" },
            if opts.ablation {
                " (the ablation's two folds, then all queries)"
            } else {
                ""
            }
        ),
        progress,
    );
    let mut done = 0usize;
    let mut held_out = Vec::with_capacity(variants.len());
    for v in variants {
        let fit_opts = FitOptions {
            use_feature: v.mask(),
            ..FitOptions::default()
        };
        let mut sum = 0.0;
        for side in 0..2 {
            let train: Vec<FitCase> = fit_cases
                .iter()
                .zip(&fold)
                .filter(|(_, &f)| f != side)
                .map(|(c, _)| c.clone())
                .collect();
            let head = fit_observed(&train, &fit_opts, |_| {
                done += 1;
                eta.update(done, fits * steps, "steps");
            });
            sum += (0..fit_cases.len())
                .filter(|&i| fold[i] == side)
                .map(|i| recall(&head, i))
                .sum::<f64>();
        }
        held_out.push((v.name.to_string(), sum / n));
    }
    let head = fit_observed(&fit_cases, &FitOptions::default(), |_| {
        done += 1;
        eta.update(done, fits * steps, "steps");
    });
    eta.finish("fitted");
    let in_sample = (0..fit_cases.len()).map(|i| recall(&head, i)).sum::<f64>() / n;
    ranker.set_reranking(Arc::clone(signals), Some(head.clone()))?;
    Ok(HeadFit {
        head,
        in_sample_recall_at_10: in_sample,
        held_out,
        validation_queries: fit_cases.len(),
        sampled_from: all.len(),
        candidate_recall: found as f64 / total.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::split::{event_split, Fractions};
    use aisle_core::synth::small_dataset;
    use aisle_search::rerank::{Past, NEIGHBOUR_FLOOR};
    use std::collections::HashMap;

    /// No held-out event reaches a feature: the products chosen for each query are counted
    /// over the training part only, and a product bought only in held-out events has no buyer.
    #[test]
    fn the_signals_of_a_split_hold_no_held_out_event() {
        let ds = small_dataset(300, 40, 300, 3).expect("world");
        let split = event_split(&ds, Fractions::default(), 7).expect("split");
        let signals = split_signals(&ds, &split);
        let source = QuerySource::of(&ds);
        let mut want: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if let Some(q) = source.query_text(&ds, e) {
                *want.entry(q).or_default().entry(e.product).or_default() += 1;
            }
        }
        let held_out: Vec<&EvalQuery> = split.validation.iter().chain(&split.test).collect();
        assert!(!held_out.is_empty());
        for q in &held_out {
            let text = ds.queries.text(q.query);
            let got: HashMap<ProductId, u32> = signals.chosen_for(text).iter().copied().collect();
            assert_eq!(got, want.get(text).cloned().unwrap_or_default(), "{text}");
        }
        // Products bought in held-out events and never in training.
        let mut in_train = vec![false; ds.catalog.len()];
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if signals.counts(e.kind) {
                in_train[e.product.index()] = true;
            }
        }
        let only_held_out: Vec<(ProductId, f32)> = held_out
            .iter()
            .flat_map(|q| q.events.iter())
            .map(|&i| ds.interactions[i as usize].product)
            .filter(|p| !in_train[p.index()])
            .map(|p| (p, 0.0))
            .collect();
        assert!(!only_held_out.is_empty(), "the world has no such product");
        // A customer who bought everything bought in training: every neighbour counts.
        let past: Vec<Past> = split
            .train
            .iter()
            .map(|&i| &ds.interactions[i as usize])
            .filter(|e| signals.counts(e.kind))
            .map(|e| Past {
                product: e.product,
                kind: e.kind,
                time: e.time,
            })
            .collect();
        let zero = vec![0.0f32; 4];
        let features = signals.features("x", &past, None, &only_held_out, |_| &zero);
        let j = Feature::Neighbours.index();
        for f in &features {
            assert_eq!(f[j], NEIGHBOUR_FLOOR.ln());
        }
    }
}
