//! Fitting the learned re-ranking head ([`aisle_search::rerank`]) on a split's validation
//! queries, and measuring it there without fitting on what it is measured on.
//!
//! The head's weights are fitted per model on every validation query; the figure that says how
//! good the head is comes from two folds of customers: fitted on one half, measured on the other,
//! and the other way round, so that no query is scored by weights fitted on it. The same folds
//! measure the head without some of its features (an ablation), so that the report can say
//! which signal carries the gain.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use aisle_core::rng::Rng;
use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, EvalQuery, ProductId, Split};
use aisle_search::rerank::{
    fit_observed, Feature, FitCase, FitOptions, HeadFile, Reranker, Signals, FEATURES,
};
use aisle_search::searcher::Candidates;
use aisle_search::served::HEAD_TOWER_HISTORY;

use crate::error::Result;
use crate::rankers::{DenseOptions, DenseRanker};

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
        // Every feature but the first, `Feature::Dense`.
        drop: Feature::ALL.split_at(1).1,
    },
];

// `Feature::ALL` starts with the dense score, which "dense score only" keeps.
const _: () = assert!(matches!(Feature::ALL[0], Feature::Dense));

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

/// A model file whose head [`fit_head`] fits, how the model ranks meanwhile, and where the head
/// goes.
#[derive(Clone, Debug)]
pub struct HeadJob<'a> {
    /// The model: a model file (`model.aisle`) or a MiniLM model folder.
    pub model: &'a Path,
    /// The ranker's name.
    pub name: String,
    /// How the model ranks while the head's candidates are drawn.
    pub options: DenseOptions,
    /// Earlier interactions the towers read instead of `options.history` when the model has a
    /// personalized tower (`aisle train --rerank`: what `aisle serve` reads with a head);
    /// `None` reads `options.history` whatever the model.
    pub personalized_history: Option<usize>,
    pub fit: HeadFitOptions,
    /// Where to write the head: a [`HeadFile`] with the model file's digest and what it was
    /// fitted on (dataset, split, model, the towers' history and the fit's figures); `None`
    /// writes nothing.
    pub save: Option<&'a Path>,
}

/// Fits the head of the model file `job.model` on at most `job.fit.max_queries` validation
/// queries of `split`, its features read from `signals` (the split's training part,
/// [`Signals::of_training`]), with the two-fold measurements of every [`VARIANTS`] entry when
/// `job.fit.ablation`, and writes it to `job.save`. `progress` gets a line per phase and, while
/// a phase runs, one every few seconds with the time left. What `aisle train --rerank` and
/// `aisle experiment` both fit through.
pub fn fit_head(
    ds: &Arc<Dataset>,
    split: &Split,
    signals: &Arc<Signals>,
    job: &HeadJob,
    progress: &mut dyn FnMut(&str),
) -> Result<HeadFit> {
    let (model, _) = aisle_search::model_file::read(job.model)?;
    let mut options = job.options;
    if let (Some(h), true) = (job.personalized_history, model.personal().is_some()) {
        options.history = h;
    }
    let mut ranker = DenseRanker::with_options(job.name.clone(), model, ds, split, &options)?;
    let fit = fit_ranker_head(ds, split, &mut ranker, signals, &job.fit, progress)?;
    if let Some(out) = job.save {
        let fitted = serde_json::json!({
            "dataset": ds.name,
            "split": split.name,
            "model": job.model.display().to_string(),
            "tower_history": options.history,
            "validation_queries": fit.validation_queries,
            "in_sample_recall_at_10": fit.in_sample_recall_at_10,
            "held_out_recall_at_10": fit.held_out,
            "candidate_recall": fit.candidate_recall,
        });
        let digest = HeadFile::model_digest(job.model)?;
        HeadFile::new(&fit.head, Some(digest), fitted).save(out)?;
    }
    Ok(fit)
}

/// The head `aisle serve` ranks with, fitted by [`fit_for_serving`], and where it went.
#[derive(Clone, Debug)]
pub struct ServingHead {
    pub fit: HeadFit,
    /// Seconds of the fit, its signals included.
    pub seconds: f64,
    pub path: PathBuf,
}

/// Fits the re-ranking head for the model at `model` (a model file or a MiniLM folder) on
/// `split`'s validation queries and writes it to `out`, where `aisle serve` looks for it: one
/// fit, on at most [`HEAD_FIT_QUERIES`] of them, without the ablation (that is `aisle
/// experiment`'s). A plain model's towers read `history` earlier interactions meanwhile, a
/// personalized one's [`HEAD_TOWER_HISTORY`], as served. What `aisle train --rerank` does;
/// `progress` gets [`fit_head`]'s lines.
pub fn fit_for_serving(
    ds: &Arc<Dataset>,
    split: &Split,
    model: &Path,
    history: usize,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ServingHead> {
    let t = std::time::Instant::now();
    let signals = Arc::new(Signals::of_training(ds, split));
    let job = HeadJob {
        model,
        name: "model".into(),
        options: DenseOptions {
            history,
            history_rule: Default::default(),
            mode: aisle_search::Mode::Dense,
            history_boost: 0.0,
            bm25: aisle_search::FieldBoosts::default(),
        },
        personalized_history: Some(HEAD_TOWER_HISTORY),
        fit: HeadFitOptions {
            seed: split.seed,
            ablation: false,
            ..Default::default()
        },
        save: Some(out),
    };
    let fit = fit_head(ds, split, &signals, &job, progress)?;
    Ok(ServingHead {
        fit,
        seconds: t.elapsed().as_secs_f64(),
        path: out.to_path_buf(),
    })
}

impl ServingHead {
    /// What `aisle train --rerank` prints of the fit: the queries, the in-sample validation
    /// Recall@10, the candidates' recall (the head's ceiling), the weights, the file.
    pub fn render(&self) -> String {
        let fit = &self.fit;
        let sample = if fit.validation_queries < fit.sampled_from {
            format!(" (a seeded sample of {})", fmt_n(fit.sampled_from))
        } else {
            String::new()
        };
        let weights: Vec<String> = fit
            .head
            .named()
            .iter()
            .map(|(n, w)| format!("{n} {w:.2}"))
            .collect();
        format!(
            "re-ranking head      fitted on {} validation queries{sample} in {:.1} s\n  \
             validation R@10    {:.4} with the head (in-sample: fitted on the same queries; \
             `aisle experiment` measures it on held-out folds, with the ablation)\n  \
             candidate recall   {:.4} of the relevant validation products are among the head's candidates\n  \
             weights            {}\n\
             re-ranking head      {}\n",
            fmt_n(fit.validation_queries),
            self.seconds,
            fit.in_sample_recall_at_10,
            fit.candidate_recall,
            weights.join(", "),
            self.path.display()
        )
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

/// Fits the head of `ranker` (whose Searcher then reads `signals` and the head): the phases of
/// [`fit_head`] once the model ranks.
fn fit_ranker_head(
    ds: &Dataset,
    split: &Split,
    ranker: &mut DenseRanker,
    signals: &Arc<Signals>,
    opts: &HeadFitOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<HeadFit> {
    ranker.set_reranking(Arc::clone(signals), None)?;
    let (queries, sampled_from) = sample_queries(split, opts);
    let candidates = draw_candidates(ds, ranker, &queries, sampled_from, progress)?;
    let cases = Cases::new(&queries, candidates);
    let variants: &[Variant] = if opts.ablation { &VARIANTS } else { &[] };
    let mut fitter = Fitter::new(2 * variants.len() + 1, opts.ablation, progress);
    let held_out = held_out(&cases, variants, &mut fitter);
    let head = fitter.fit(&cases.fit, &FitOptions::default());
    fitter.eta.finish("fitted");
    let in_sample = cases.recall_sum(&head, None) / cases.n();
    ranker.set_reranking(Arc::clone(signals), Some(head.clone()))?;
    Ok(HeadFit {
        head,
        in_sample_recall_at_10: in_sample,
        held_out,
        validation_queries: cases.fit.len(),
        sampled_from,
        candidate_recall: cases.candidate_recall,
    })
}

/// The validation queries with a relevant product, at most `opts.max_queries` of them (a sample
/// fixed by `opts.seed`, in the split's order), and how many there were.
fn sample_queries<'s>(split: &'s Split, opts: &HeadFitOptions) -> (Vec<&'s EvalQuery>, usize) {
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
    (order.iter().map(|&i| all[i]).collect(), all.len())
}

/// Each query's candidates and their features, as `ranker` draws them (`sampled_from`: how many
/// queries the sample was drawn from, for the progress lines).
fn draw_candidates(
    ds: &Dataset,
    ranker: &DenseRanker,
    queries: &[&EvalQuery],
    sampled_from: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Candidates>> {
    let cases = crate::evaluate::cases_of(ds, queries);
    let mut candidates = Vec::with_capacity(queries.len());
    let mut eta = Eta::new(
        format!(
            "re-ranking head: candidates of {} validation queries{}",
            queries.len(),
            if queries.len() < sampled_from {
                format!(" (a sample of {sampled_from})")
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
    Ok(candidates)
}

/// What the head is fitted on and measured with, one entry per query.
struct Cases {
    /// The candidates' features, and which candidates are relevant.
    fit: Vec<FitCase>,
    /// The candidates' products (ties in a ranking go to the smaller id).
    products: Vec<Vec<ProductId>>,
    /// The relevant products, candidates or not.
    relevant: Vec<HashSet<ProductId>>,
    /// The query's fold, 0 or 1, by customer: one customer's queries never sit on both sides.
    fold: Vec<usize>,
    /// Share of the relevant products among the candidates (the head's ceiling).
    candidate_recall: f64,
}

impl Cases {
    fn new(queries: &[&EvalQuery], candidates: Vec<Candidates>) -> Cases {
        let mut fit = Vec::with_capacity(queries.len());
        let mut products: Vec<Vec<ProductId>> = Vec::with_capacity(queries.len());
        let mut relevant: Vec<HashSet<ProductId>> = Vec::with_capacity(queries.len());
        let (mut found, mut total) = (0usize, 0usize);
        for (q, c) in queries.iter().zip(candidates) {
            let rel: HashSet<ProductId> =
                q.relevant.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
            let flags: Vec<bool> = c.iter().map(|(p, _)| rel.contains(p)).collect();
            found += flags.iter().filter(|&&f| f).count();
            total += rel.len();
            products.push(c.iter().map(|(p, _)| *p).collect());
            fit.push(FitCase {
                features: c.into_iter().map(|(_, f)| f).collect(),
                relevant: flags,
            });
            relevant.push(rel);
        }
        let fold = queries
            .iter()
            .enumerate()
            .map(|(i, q)| q.user.map_or(i, |u| u.index()) % 2)
            .collect();
        Cases {
            fit,
            products,
            relevant,
            fold,
            candidate_recall: found as f64 / total.max(1) as f64,
        }
    }

    /// The number of queries (at least 1): what summed recalls are divided by.
    fn n(&self) -> f64 {
        self.fit.len().max(1) as f64
    }

    /// Recall@10 of query `i`'s candidates ranked by `head`.
    fn recall(&self, head: &Reranker, i: usize) -> f64 {
        let c = &self.fit[i];
        let products = &self.products[i];
        let mut order: Vec<usize> = (0..c.features.len()).collect();
        let score: Vec<f32> = c.features.iter().map(|f| head.score(f)).collect();
        order.sort_by(|&a, &b| {
            score[b]
                .total_cmp(&score[a])
                .then(products[a].cmp(&products[b]))
        });
        let hits = order.iter().take(10).filter(|&&j| c.relevant[j]).count();
        hits as f64 / self.relevant[i].len().max(1) as f64
    }

    /// The sum of [`recall`](Self::recall) over the queries of fold `side`, or over all.
    fn recall_sum(&self, head: &Reranker, side: Option<usize>) -> f64 {
        (0..self.fit.len())
            .filter(|&i| side.is_none_or(|s| self.fold[i] == s))
            .map(|i| self.recall(head, i))
            .sum::<f64>()
    }

    /// The cases outside fold `side`: what the head measured on `side` is fitted on.
    fn outside(&self, side: usize) -> Vec<FitCase> {
        self.fit
            .iter()
            .zip(&self.fold)
            .filter(|(_, &f)| f != side)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

/// Runs a head's fits, with one progress line for all of their steps.
struct Fitter<'a> {
    eta: Eta<'a>,
    done: usize,
    total: usize,
}

impl<'a> Fitter<'a> {
    /// For `fits` fits of [`FitOptions::default`]'s steps each; `ablation`: the first are the
    /// ablation's.
    fn new(fits: usize, ablation: bool, progress: &'a mut dyn FnMut(&str)) -> Fitter<'a> {
        let steps = FitOptions::default().iterations;
        let eta = Eta::new(
            format!(
                "re-ranking head: {fits} fit{} of {steps} steps{}",
                if fits == 1 { "" } else { "s" },
                if ablation {
                    " (the ablation's two folds, then all queries)"
                } else {
                    ""
                }
            ),
            progress,
        );
        Fitter {
            eta,
            done: 0,
            total: fits * steps,
        }
    }

    fn fit(&mut self, cases: &[FitCase], opts: &FitOptions) -> Reranker {
        let (eta, done, total) = (&mut self.eta, &mut self.done, self.total);
        fit_observed(cases, opts, |_| {
            *done += 1;
            eta.update(*done, total, "steps");
        })
    }
}

/// `(variant, validation Recall@10)` of each of `variants`: its head fitted on one fold of
/// customers and measured on the other, both ways round.
fn held_out(cases: &Cases, variants: &[Variant], fitter: &mut Fitter) -> Vec<(String, f64)> {
    let mut out = Vec::with_capacity(variants.len());
    for v in variants {
        let fit_opts = FitOptions {
            use_feature: v.mask(),
            ..FitOptions::default()
        };
        let mut sum = 0.0;
        for side in 0..2 {
            let head = fitter.fit(&cases.outside(side), &fit_opts);
            sum += cases.recall_sum(&head, Some(side));
        }
        out.push((v.name.to_string(), sum / cases.n()));
    }
    out
}
