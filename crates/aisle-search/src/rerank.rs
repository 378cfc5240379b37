//! A learned re-ranking head over the towers' candidates.
//!
//! The towers place a query near products; they cannot count. A customer who bought the same
//! yoghurt eleven times, the products a query was chosen for before, and what customers with a
//! similar basket bought are signals a single query vector cannot carry (ten earlier purchases in
//! an aisle cannot all be nearest to one point). The head scores each candidate by
//! `w . phi(query, customer, product)` over [`FEATURES`] features, the first being the towers'
//! own cosine, and is fitted by softmax cross-entropy over each case's candidates ([`fit`]): on
//! the validation queries in `aisle experiment`, never on test.
//!
//! Candidates are the dense top list, the customer's own earlier products and the products
//! chosen before for the same query text ([`Signals::chosen_for`]). Every signal is read from
//! the interactions the [`Signals`] were built from: a split's training part in evaluation, so
//! that no held-out event reaches a feature, every interaction when serving.

use std::collections::HashMap;

use aisle_model::linalg::{gemm, Mat};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use aisle_core::{Dataset, Interaction, Kind, ProductId, UserId};

use crate::error::SearchError;

/// Number of features of a candidate.
pub const FEATURES: usize = 10;

/// A feature of a candidate: its position in [`Reranker::weights`] and in each candidate's
/// feature array is `feature as usize` ([`Feature::index`]), its name is what head files and
/// reports print ([`Feature::name`]). Code names a feature by its variant, so that a misspelt
/// one does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The (personalized) query vector's cosine with the product: the towers' score.
    Dense,
    /// max_j h_j . p over the customer's earlier products (0 without a history).
    HistoryClosest,
    /// 1 when every query word is in the product's title or category path.
    TextMatch,
    /// 1 when the customer bought the product before.
    Bought,
    /// bought x text_match: an earlier purchase that the query names.
    BoughtAndMatch,
    /// ln(1 + times the customer bought it).
    LogTimesBought,
    /// 1 / (1 + earlier visits since the customer last bought it); 0 if never bought.
    Recency,
    /// ln(1 + times the product was chosen for this exact query text).
    LogQueryCount,
    /// ln(0.001 + share of similar customers' weight on the product): user-based collaborative
    /// filtering, each other customer weighted by the cosine of the two bought-product sets. On
    /// a log scale because shares are small (a linear share of 0.01 to 0.1 needed weights far
    /// beyond what the fit reached, and got a weight of -1 on Instacart).
    Neighbours,
    /// neighbours x (1 - bought): what similar customers bought that this one never did.
    NewNeighbours,
}

impl Feature {
    /// Every feature, in the order of [`Reranker::weights`].
    pub const ALL: [Feature; FEATURES] = [
        Feature::Dense,
        Feature::HistoryClosest,
        Feature::TextMatch,
        Feature::Bought,
        Feature::BoughtAndMatch,
        Feature::LogTimesBought,
        Feature::Recency,
        Feature::LogQueryCount,
        Feature::Neighbours,
        Feature::NewNeighbours,
    ];

    /// Its position in a feature array and in [`Reranker::weights`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name head files and reports give it.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Dense => "dense",
            Feature::HistoryClosest => "history_closest",
            Feature::TextMatch => "text_match",
            Feature::Bought => "bought",
            Feature::BoughtAndMatch => "bought_and_match",
            Feature::LogTimesBought => "log_times_bought",
            Feature::Recency => "recency",
            Feature::LogQueryCount => "log_query_count",
            Feature::Neighbours => "neighbours",
            Feature::NewNeighbours => "new_neighbours",
        }
    }
}

// `Feature::ALL` lists each feature at its own index (checked when compiling).
const _: () = {
    let mut i = 0;
    while i < FEATURES {
        assert!(Feature::ALL[i].index() == i);
        i += 1;
    }
};

/// The features' names, in the order of [`Reranker::weights`].
pub const FEATURE_NAMES: [&str; FEATURES] = {
    let mut names = [""; FEATURES];
    let mut i = 0;
    while i < FEATURES {
        names[i] = Feature::ALL[i].name();
        i += 1;
    }
    names
};

/// Added to a neighbour share before its logarithm: a product no similar customer bought.
pub const NEIGHBOUR_FLOOR: f32 = 1e-3;

/// Products chosen for a query text taken as candidates (the most chosen first).
pub const QUERY_CANDIDATES: usize = 100;

/// One earlier interaction of the customer, as the head reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Past {
    pub product: ProductId,
    pub kind: Kind,
    /// Any increasing clock: the interaction's time, or its position in an inline history.
    pub time: i64,
}

/// What the head's features read beyond the towers, built once from a set of interactions.
#[derive(Clone, Debug)]
pub struct Signals {
    /// Sorted, distinct words of each product's title and category path.
    words: Vec<Vec<String>>,
    /// Per normalised query text, the products chosen for it and how often, most first.
    by_query: HashMap<String, Vec<(ProductId, u32)>>,
    /// Per product, the distinct customers who bought it, sorted.
    buyers: Vec<Vec<u32>>,
    /// Per customer, the number of distinct products bought.
    distinct: Vec<u32>,
    /// True when the data has purchases: then only purchases count as buying; otherwise
    /// (search logs) clicks and add-to-carts do.
    purchases: bool,
}

/// Lower-cased words (runs of letters and digits) of a text.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Sorted, distinct [`words`] of each product's title and category path, by product.
pub fn product_words(ds: &Dataset) -> Vec<Vec<String>> {
    let t = &ds.taxonomy;
    ds.catalog
        .iter()
        .map(|(_, p)| {
            let mut w = words(&p.title);
            for n in t.path(p.category) {
                w.extend(words(t.name(n)));
            }
            w.sort_unstable();
            w.dedup();
            w
        })
        .collect()
}

impl Signals {
    /// Signals from the interactions `events` (indices into `ds.interactions`). `query_text`
    /// gives the normalised query an interaction was chosen for, if any (the logged query, or on
    /// purchase histories the category it was bought under).
    pub fn build(
        ds: &Dataset,
        events: impl Iterator<Item = u32>,
        query_text: impl Fn(&Interaction) -> Option<String>,
    ) -> Signals {
        let purchases = ds.interactions.iter().any(|e| e.kind == Kind::Purchase);
        let words_of = product_words(ds);
        let mut counts: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        let mut buyers: Vec<Vec<u32>> = vec![Vec::new(); ds.catalog.len()];
        for i in events {
            let Some(e) = ds.interactions.get(i as usize) else {
                continue;
            };
            if let Some(text) = query_text(e) {
                *counts
                    .entry(text)
                    .or_default()
                    .entry(e.product)
                    .or_default() += 1;
            }
            if counts_as_bought(purchases, e.kind) {
                if let Some(b) = buyers.get_mut(e.product.index()) {
                    b.push(e.user.0);
                }
            }
        }
        let mut distinct = vec![0u32; ds.users.len()];
        for b in &mut buyers {
            b.sort_unstable();
            b.dedup();
            for &u in b.iter() {
                if let Some(d) = distinct.get_mut(u as usize) {
                    *d += 1;
                }
            }
        }
        let by_query = counts
            .into_iter()
            .map(|(q, c)| {
                let mut ps: Vec<(ProductId, u32)> = c.into_iter().collect();
                ps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (q, ps)
            })
            .collect();
        Signals {
            words: words_of,
            by_query,
            buyers,
            distinct,
            purchases,
        }
    }

    /// True when an interaction of this kind counts as buying.
    pub fn counts(&self, kind: Kind) -> bool {
        counts_as_bought(self.purchases, kind)
    }

    /// The products chosen for `text` before, most chosen first, with their counts.
    pub fn chosen_for(&self, text: &str) -> &[(ProductId, u32)] {
        self.by_query.get(text).map_or(&[], Vec::as_slice)
    }

    /// True when every word of `query_words` (not empty) is in the product's title or path.
    pub fn text_matches(&self, p: ProductId, query_words: &[String]) -> bool {
        let Some(w) = self.words.get(p.index()) else {
            return false;
        };
        !query_words.is_empty() && query_words.iter().all(|q| w.binary_search(q).is_ok())
    }

    /// The features of each candidate `(product, dense cosine)` for one request: its query text,
    /// the customer's earlier interactions, oldest first, and the customer's id when stored
    /// (left out of their own neighbours). `vector` gives a product's unit vector.
    pub fn features<'v>(
        &self,
        text: &str,
        past: &[Past],
        user: Option<UserId>,
        candidates: &[(ProductId, f32)],
        vector: impl Fn(ProductId) -> &'v [f32],
    ) -> Vec<[f32; FEATURES]> {
        let query_words = words(text);
        let chosen: HashMap<ProductId, u32> = self.chosen_for(text).iter().copied().collect();
        // Times bought and the last visit it was bought at, per product.
        let mut bought: HashMap<ProductId, (u32, i64)> = HashMap::new();
        let mut seen: Vec<ProductId> = Vec::with_capacity(past.len());
        let mut visits: Vec<i64> = past.iter().map(|e| e.time).collect();
        visits.dedup();
        for e in past {
            seen.push(e.product);
            if self.counts(e.kind) {
                let b = bought.entry(e.product).or_insert((0, e.time));
                b.0 += 1;
                b.1 = b.1.max(e.time);
            }
        }
        seen.sort_unstable();
        seen.dedup();
        let neighbours = self.neighbour_weights(user, &bought);
        let total: f32 = neighbours.values().sum();
        let closest = closest_seen(&seen, candidates, &vector);
        candidates
            .iter()
            .zip(closest)
            .map(|(&(p, dense), closest)| {
                let matched = self.text_matches(p, &query_words);
                let (times, recency) = match bought.get(&p) {
                    Some(&(n, last)) => {
                        // Distinct visits after the last one it was bought at.
                        let after = visits.len() - visits.partition_point(|&t| t <= last);
                        (n, 1.0 / (1.0 + after as f32))
                    }
                    None => (0, 0.0),
                };
                let shared = if total > 0.0 {
                    self.buyers.get(p.index()).map_or(0.0, |b| {
                        b.iter()
                            .filter_map(|v| neighbours.get(v))
                            .copied()
                            .sum::<f32>()
                            / total
                    })
                } else {
                    0.0
                };
                let shared = (NEIGHBOUR_FLOOR + shared).ln();
                let b = f32::from(u8::from(times > 0));
                let m = f32::from(u8::from(matched));
                // In `Feature::ALL` order.
                [
                    dense,
                    if closest.is_finite() { closest } else { 0.0 },
                    m,
                    b,
                    b * m,
                    (times as f32).ln_1p(),
                    recency,
                    (chosen.get(&p).copied().unwrap_or(0) as f32).ln_1p(),
                    shared,
                    shared * (1.0 - b),
                ]
            })
            .collect()
    }

    /// Cosine of every other customer's bought-product set with `bought`: shared products over
    /// the square root of both sets' sizes (`user` itself left out). Empty without purchases.
    fn neighbour_weights(
        &self,
        user: Option<UserId>,
        bought: &HashMap<ProductId, (u32, i64)>,
    ) -> HashMap<u32, f32> {
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for p in bought.keys() {
            for &v in self.buyers.get(p.index()).map_or(&[][..], Vec::as_slice) {
                if user.is_none_or(|u| u.0 != v) {
                    *shared.entry(v).or_default() += 1;
                }
            }
        }
        let mine = bought.len() as f32;
        shared
            .into_iter()
            .map(|(v, n)| {
                let theirs = self.distinct.get(v as usize).copied().unwrap_or(1).max(1) as f32;
                (v, n as f32 / (mine * theirs).sqrt())
            })
            .collect()
    }
}

/// Purchases count as buying where the data has any; otherwise (search logs) clicks and
/// add-to-carts do.
pub fn counts_as_bought(purchases: bool, kind: Kind) -> bool {
    if purchases {
        kind == Kind::Purchase
    } else {
        kind != Kind::View
    }
}

/// The head's weights: a candidate scores `weights . features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reranker {
    pub weights: [f32; FEATURES],
}

impl Reranker {
    /// The towers' order: the dense cosine alone.
    pub fn dense_only() -> Reranker {
        let mut weights = [0.0; FEATURES];
        weights[Feature::Dense.index()] = 1.0;
        Reranker { weights }
    }

    pub fn score(&self, features: &[f32; FEATURES]) -> f32 {
        self.weights.iter().zip(features).map(|(w, f)| w * f).sum()
    }

    /// The weights as `(feature name, weight)`.
    pub fn named(&self) -> Vec<(&'static str, f32)> {
        FEATURE_NAMES.iter().copied().zip(self.weights).collect()
    }
}

/// Version of the head file layout.
pub const HEAD_SCHEMA: &str = "aisle.rerank/1";

/// The file name `aisle train --rerank` writes beside the model, and `aisle serve` reads.
pub const HEAD_FILE: &str = "rerank.json";

/// A head as saved: its weights by feature name, and what it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadFile {
    pub schema: String,
    /// `[name, weight]` for every feature, in [`FEATURE_NAMES`] order.
    pub weights: Vec<(String, f32)>,
    /// CRC-32 (hex) of the model file the head was fitted for: its `dense` weight is tuned to
    /// that model's cosines, so another model is refused ([`HeadFile::check_model`]).
    #[serde(default)]
    pub model_crc32: Option<String>,
    /// Free-form provenance: dataset, split, model file, validation figures.
    #[serde(default)]
    pub fitted: serde_json::Value,
}

impl HeadFile {
    pub fn new(
        head: &Reranker,
        model_crc32: Option<String>,
        fitted: serde_json::Value,
    ) -> HeadFile {
        HeadFile {
            schema: HEAD_SCHEMA.into(),
            model_crc32,
            weights: head
                .named()
                .into_iter()
                .map(|(n, w)| (n.to_owned(), w))
                .collect(),
            fitted,
        }
    }

    /// Writes the file atomically (a temporary file renamed into place).
    pub fn save(&self, path: &std::path::Path) -> crate::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SearchError::BadHeadFile {
            path: path.to_path_buf(),
            field: "(whole file)".into(),
            reason: e.to_string(),
        })?;
        aisle_core::io::write_atomic(path, |w| w.write_all(text.as_bytes()))
            .map_err(|e| SearchError::io(path, e))
    }

    /// The digest [`HeadFile::model_crc32`] (and a Qdrant collection's metadata) holds: CRC-32
    /// of every byte of the model file but the last four, in hex. A model artifact ends with the
    /// CRC-32 of the bytes before it, so this is that checksum. (A CRC-32 of the whole file would
    /// be CRC-32's residue, 2144df1c, for every artifact: it told no two models apart.)
    pub fn model_digest(model: &std::path::Path) -> crate::Result<String> {
        let bytes = std::fs::read(model).map_err(|e| SearchError::io(model, e))?;
        let body = &bytes[..bytes.len().saturating_sub(4)];
        Ok(format!("{:08x}", crc32fast::hash(body)))
    }

    /// Refuses a head fitted for another model than the file at `model` (a head without a
    /// digest is accepted). `path` is the head file, for the message.
    pub fn check_model(
        &self,
        path: &std::path::Path,
        model: &std::path::Path,
    ) -> crate::Result<()> {
        let Some(want) = &self.model_crc32 else {
            return Ok(());
        };
        let got = Self::model_digest(model)?;
        if &got != want {
            return Err(SearchError::BadHeadFile {
                path: path.to_path_buf(),
                field: "model_crc32".into(),
                reason: format!(
                    "fitted for a model with CRC-32 {want}, but {} has {got}: refit it with \
                     `aisle train --rerank` (or serve without it, --no-rerank)",
                    model.display()
                ),
            });
        }
        Ok(())
    }

    /// Reads a head file and checks it: the schema, and every feature of this aisle, by name
    /// and in order, with a finite weight.
    pub fn load(path: &std::path::Path) -> crate::Result<(Reranker, HeadFile)> {
        let text = std::fs::read_to_string(path).map_err(|e| SearchError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// [`load`](Self::load) over the text of a head file; `path` is used in messages.
    pub fn from_json(text: &str, path: &std::path::Path) -> crate::Result<(Reranker, HeadFile)> {
        let bad = |field: &str, reason: String| SearchError::BadHeadFile {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        let file: HeadFile = serde_json::from_str(text).map_err(|e| {
            bad(
                &format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        if file.schema != HEAD_SCHEMA {
            return Err(bad(
                "schema",
                format!("`{}`, expected `{HEAD_SCHEMA}`", file.schema),
            ));
        }
        if file.weights.len() != FEATURES {
            return Err(bad(
                "weights",
                format!(
                    "{} features, this aisle has {FEATURES}: {}",
                    file.weights.len(),
                    FEATURE_NAMES.join(", ")
                ),
            ));
        }
        let mut weights = [0f32; FEATURES];
        for (i, ((name, w), want)) in file.weights.iter().zip(FEATURE_NAMES).enumerate() {
            if name != want {
                return Err(bad(
                    &format!("weights[{i}]"),
                    format!("feature `{name}`, expected `{want}`"),
                ));
            }
            if !w.is_finite() {
                return Err(bad(
                    &format!("weights[{i}] ({name})"),
                    format!("{w} is not finite"),
                ));
            }
            weights[i] = *w;
        }
        Ok((Reranker { weights }, file))
    }
}

/// For each candidate, its largest inner product with a product of `seen` (`-inf` when `seen`
/// is empty): one matrix product per request. With 1,000 earlier products and 100 candidates,
/// one dot product per pair took three quarters of the head's candidate time (perf, 100k
/// products, 20,000 validation queries).
fn closest_seen<'v>(
    seen: &[ProductId],
    candidates: &[(ProductId, f32)],
    vector: &impl Fn(ProductId) -> &'v [f32],
) -> Vec<f32> {
    let Some(&(first, _)) = candidates.first() else {
        return Vec::new();
    };
    if seen.is_empty() {
        return vec![f32::NEG_INFINITY; candidates.len()];
    }
    let d = vector(first).len();
    let gather = |ps: &mut dyn Iterator<Item = ProductId>, n: usize| {
        let mut m = Vec::with_capacity(n * d);
        for p in ps {
            m.extend_from_slice(vector(p));
        }
        m
    };
    let c = gather(&mut candidates.iter().map(|c| c.0), candidates.len());
    let h = gather(&mut seen.iter().copied(), seen.len());
    let mut scores = vec![0f32; candidates.len() * seen.len()];
    gemm(
        1.0,
        Mat::new(&c, candidates.len(), d),
        Mat::new(&h, seen.len(), d).t(),
        0.0,
        &mut scores,
    );
    scores
        .chunks(seen.len())
        .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect()
}

/// One case to fit on: its candidates' features and which of them are relevant.
#[derive(Clone, Debug, Default)]
pub struct FitCase {
    pub features: Vec<[f32; FEATURES]>,
    pub relevant: Vec<bool>,
}

/// How [`fit`] runs.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Full-batch Adam steps.
    pub iterations: usize,
    pub lr: f64,
    /// L2 penalty on every weight.
    pub l2: f64,
    /// Features the head may use; the others keep weight 0.
    pub use_feature: [bool; FEATURES],
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            iterations: 600,
            lr: 0.1,
            l2: 1e-4,
            use_feature: [true; FEATURES],
        }
    }
}

/// Fits the head's weights by full-batch Adam on the mean over cases of the softmax
/// cross-entropy of the relevant candidates: `-ln(sum_rel e^s / sum_all e^s)`, `s = w . phi`.
/// Cases with no relevant candidate, or only relevant ones, carry no signal and are skipped.
/// The fit is deterministic (no seed; the gradient is summed in case order). With a single
/// relevant candidate per case the loss is convex in `w`; with several it need not be, and Adam
/// finds a local minimum. Starts from the dense score at the towers' training scale (20).
pub fn fit(cases: &[FitCase], opts: &FitOptions) -> Reranker {
    fit_observed(cases, opts, |_| {})
}

/// [`fit`], calling `on_step(step)` after every Adam step (1-based), for progress reports.
pub fn fit_observed(
    cases: &[FitCase],
    opts: &FitOptions,
    mut on_step: impl FnMut(usize),
) -> Reranker {
    let useful: Vec<&FitCase> = cases
        .iter()
        .filter(|c| c.relevant.iter().any(|&r| r) && c.relevant.iter().any(|&r| !r))
        .collect();
    let mut w = [0f64; FEATURES];
    let dense = Feature::Dense.index();
    if opts.use_feature[dense] {
        w[dense] = 20.0;
    }
    if useful.is_empty() {
        return to_reranker(&w);
    }
    let (mut m, mut v) = ([0f64; FEATURES], [0f64; FEATURES]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let n = useful.len() as f64;
    // Cases in chunks, each chunk's gradient summed in case order and the chunks' sums added in
    // chunk order: the same cases give bit-identical weights on any number of threads.
    const CHUNK: usize = 64;
    for step in 1..=opts.iterations {
        let grad = useful
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut g = [0f64; FEATURES];
                let mut buf = Scratch::default();
                for c in chunk {
                    add_case_gradient(c, &w, &mut buf, &mut g);
                }
                g
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold([0f64; FEATURES], add);
        for j in 0..FEATURES {
            if !opts.use_feature[j] {
                continue;
            }
            let g = grad[j] / n + 2.0 * opts.l2 * w[j];
            m[j] = b1 * m[j] + (1.0 - b1) * g;
            v[j] = b2 * v[j] + (1.0 - b2) * g * g;
            let mh = m[j] / (1.0 - b1.powi(step as i32));
            let vh = v[j] / (1.0 - b2.powi(step as i32));
            w[j] -= opts.lr * mh / (vh.sqrt() + eps);
        }
        on_step(step);
    }
    to_reranker(&w)
}

/// Mean loss of `reranker` over the cases with signal (as [`fit`] minimises, without the
/// penalty).
pub fn loss(cases: &[FitCase], reranker: &Reranker) -> f64 {
    let w: [f64; FEATURES] = reranker.weights.map(f64::from);
    let useful: Vec<f64> = cases
        .iter()
        .filter(|c| c.relevant.iter().any(|&r| r) && c.relevant.iter().any(|&r| !r))
        .map(|c| case_loss(c, &w))
        .collect();
    useful.iter().sum::<f64>() / useful.len().max(1) as f64
}

fn to_reranker(w: &[f64; FEATURES]) -> Reranker {
    Reranker {
        weights: w.map(|x| x as f32),
    }
}

fn add(mut a: [f64; FEATURES], b: [f64; FEATURES]) -> [f64; FEATURES] {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

fn scores(c: &FitCase, w: &[f64; FEATURES]) -> Vec<f64> {
    c.features
        .iter()
        .map(|f| f.iter().zip(w).map(|(x, w)| f64::from(*x) * w).sum())
        .collect()
}

/// ln sum exp over the candidates where `keep` holds.
fn log_sum_exp(s: &[f64], keep: impl Fn(usize) -> bool) -> f64 {
    let max = s
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| x)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = s
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| (x - max).exp())
        .sum();
    max + sum.ln()
}

fn case_loss(c: &FitCase, w: &[f64; FEATURES]) -> f64 {
    let s = scores(c, w);
    log_sum_exp(&s, |_| true) - log_sum_exp(&s, |i| c.relevant[i])
}

/// Buffers [`add_case_gradient`] reuses from case to case.
#[derive(Default)]
struct Scratch {
    /// `exp(s_i - max_all)`.
    all: Vec<f64>,
    /// `exp(s_i - max_rel)` for relevant candidates, 0 for the others.
    rel: Vec<f64>,
}

/// Adds `d loss / d w = sum_i (softmax_all(s)_i - softmax_rel(s)_i) phi_i` of one case to `g`.
///
/// One `exp` per candidate, and one more per relevant candidate: each softmax is shifted by its
/// own maximum so that neither sum underflows. This loop is where the fit spends its time (a
/// profile on 1.46M purchases put it in `exp`; the earlier version took four per candidate).
fn add_case_gradient(c: &FitCase, w: &[f64; FEATURES], buf: &mut Scratch, g: &mut [f64; FEATURES]) {
    buf.all.clear();
    buf.all.extend(
        c.features
            .iter()
            .map(|f| f.iter().zip(w).map(|(x, w)| f64::from(*x) * w).sum::<f64>()),
    );
    let (mut max_all, mut max_rel) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (x, &r) in buf.all.iter().zip(&c.relevant) {
        max_all = max_all.max(*x);
        if r {
            max_rel = max_rel.max(*x);
        }
    }
    buf.rel.clear();
    let (mut z_all, mut z_rel) = (0f64, 0f64);
    for (x, &r) in buf.all.iter_mut().zip(&c.relevant) {
        let er = if r { (*x - max_rel).exp() } else { 0.0 };
        z_rel += er;
        buf.rel.push(er);
        *x = (*x - max_all).exp();
        z_all += *x;
    }
    for ((ea, er), f) in buf.all.iter().zip(&buf.rel).zip(&c.features) {
        let coef = ea / z_all - er / z_rel;
        for (gj, x) in g.iter_mut().zip(f) {
            *gj += coef * f64::from(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TVs p0..p3 and sofas p4, p5. Customer u bought p1 at visits 1 and 2 and p2 at visit 3,
    /// and viewed p4 at visit 4; v bought p1 and p3; w bought p3 (not in `train`: held out).
    /// Every event searched "tv".
    fn shop() -> (Dataset, Vec<u32>) {
        let ds = aisle_fixtures::shop_with(
            &[
                ("u", 1, 1, Kind::Purchase),
                ("u", 1, 2, Kind::Purchase),
                ("u", 2, 3, Kind::Purchase),
                ("u", 4, 4, Kind::View),
                ("v", 1, 1, Kind::Purchase),
                ("v", 3, 2, Kind::Purchase),
                ("w", 3, 9, Kind::Purchase),
            ],
            Some("tv"),
        );
        (ds, (0..6).collect())
    }

    #[test]
    fn features_count_what_the_customer_bought_and_what_neighbours_bought() {
        let (ds, train) = shop();
        let signals = Signals::build(&ds, train.into_iter(), |e| {
            e.query.map(|q| ds.queries.text(q).to_owned())
        });
        let u = ds.users.find("u");
        let past: Vec<Past> = ds.interactions[..4]
            .iter()
            .map(|e| Past {
                product: e.product,
                kind: e.kind,
                time: e.time,
            })
            .collect();
        // Unit vectors: p_i along axis i.
        let unit: Vec<Vec<f32>> = (0..6)
            .map(|i| (0..6).map(|j| f32::from(u8::from(i == j))).collect())
            .collect();
        let candidates: Vec<(ProductId, f32)> = (0..6).map(|i| (ProductId(i), 0.5)).collect();
        let f = signals.features("tv", &past, u, &candidates, |p| &unit[p.index()]);
        let at = |p: usize, name: &str| {
            let j = FEATURE_NAMES.iter().position(|n| *n == name).expect("name");
            f[p][j]
        };
        // Bought twice, last at visit 2 of 4 (two visits after it); bought once at visit 3.
        assert_eq!(at(1, "bought"), 1.0);
        assert!((at(1, "log_times_bought") - 2f32.ln_1p()).abs() < 1e-6);
        assert!((at(1, "recency") - 1.0 / 3.0).abs() < 1e-6);
        assert!((at(2, "recency") - 0.5).abs() < 1e-6);
        // A view is no purchase, but it is in the history the closeness reads.
        assert_eq!(at(4, "bought"), 0.0);
        assert_eq!(at(4, "history_closest"), 1.0);
        assert_eq!(at(5, "history_closest"), 0.0);
        // The query's words are in every TV's category path, in no sofa's.
        assert_eq!(at(0, "text_match"), 1.0);
        assert_eq!(at(4, "text_match"), 0.0);
        assert_eq!(at(1, "bought_and_match"), 1.0);
        // Chosen for "tv" in training: p1 by u twice and v once.
        assert!((at(1, "log_query_count") - 3f32.ln_1p()).abs() < 1e-6);
        // v (who shares p1 with u) is the only neighbour: all of the weight is on p1 and p3;
        // w's purchase of p3 is held out and u's own purchases do not count.
        let full = (1.0 + NEIGHBOUR_FLOOR).ln();
        let none = NEIGHBOUR_FLOOR.ln();
        assert!((at(3, "neighbours") - full).abs() < 1e-6);
        assert!((at(3, "new_neighbours") - full).abs() < 1e-6);
        assert!((at(1, "neighbours") - full).abs() < 1e-6);
        assert_eq!(at(1, "new_neighbours"), 0.0, "u bought p1: not new");
        assert!(
            (at(2, "neighbours") - none).abs() < 1e-6,
            "only u bought p2"
        );
        assert!((at(0, "neighbours") - none).abs() < 1e-6);
        // No history: nothing personal, the query's own signals stay.
        let anonymous = signals.features("tv", &[], None, &candidates, |p| &unit[p.index()]);
        for row in &anonymous {
            assert_eq!(row[1..2], [0.0]);
            assert_eq!(row[3..7], [0.0; 4]);
            assert_eq!(row[8], none);
        }
        assert_eq!(anonymous[0][2], 1.0);
    }

    fn case(rows: &[([f32; FEATURES], bool)]) -> FitCase {
        FitCase {
            features: rows.iter().map(|r| r.0).collect(),
            relevant: rows.iter().map(|r| r.1).collect(),
        }
    }

    fn one_hot(j: usize, x: f32) -> [f32; FEATURES] {
        let mut f = [0.0; FEATURES];
        f[j] = x;
        f
    }

    #[test]
    fn two_model_artifacts_have_two_digests() {
        let dir = tempfile::tempdir().expect("tmp");
        let digest = |dim: usize| {
            let mut cfg = aisle_model::ModelConfig::default();
            cfg.featurizer.buckets_log2 = 10;
            cfg.tower.dim = dim;
            let path = dir.path().join(format!("model-{dim}.aisle"));
            aisle_model::artifact::save(
                &aisle_model::Model::new(cfg),
                &serde_json::json!({}),
                &path,
            )
            .expect("save");
            HeadFile::model_digest(&path).expect("digest")
        };
        let (a, b) = (digest(8), digest(16));
        assert_ne!(a, b);
        assert_ne!(
            a, "2144df1c",
            "the CRC-32 residue of a file ending in its own CRC"
        );
    }

    #[test]
    fn a_head_file_round_trips_and_bad_ones_name_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(HEAD_FILE);
        let mut head = Reranker::dense_only();
        head.weights[8] = 0.25;
        let model = dir.path().join("model.aisle");
        std::fs::write(&model, b"a model").expect("model");
        let digest = HeadFile::model_digest(&model).expect("digest");
        HeadFile::new(&head, Some(digest), serde_json::json!({"dataset": "shop"}))
            .save(&path)
            .expect("save");
        let (back, file) = HeadFile::load(&path).expect("load");
        assert_eq!(back, head);
        assert_eq!(file.fitted["dataset"], "shop");
        file.check_model(&path, &model).expect("the same model");
        std::fs::write(&model, b"another model").expect("model");
        let err = file.check_model(&path, &model).expect_err("another model");
        assert!(err.to_string().contains("model_crc32"), "{err}");
        let text = std::fs::read_to_string(&path).expect("read");
        for (broken, field) in [
            (text.replace("\"recency\"", "\"freshness\""), "weights[6]"),
            (text.replace(HEAD_SCHEMA, "aisle.rerank/0"), "schema"),
            (text.replace("0.25", "1e999"), "line"),
            ("{".to_owned(), "line"),
        ] {
            std::fs::write(&path, broken).expect("write");
            let err = HeadFile::load(&path).expect_err("refused").to_string();
            assert!(err.contains(field) && err.contains(HEAD_FILE), "{err}");
        }
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let mut a = one_hot(0, 0.3);
        a[3] = 1.0;
        a[8] = 0.2;
        let mut b = one_hot(0, 0.5);
        b[5] = 0.7;
        let c = case(&[(a, true), (b, false), (one_hot(2, 1.0), true)]);
        let w = [2.0, -0.5, 0.3, 1.0, 0.0, 0.4, -1.0, 0.2, 0.9, -0.3];
        let mut g = [0f64; FEATURES];
        add_case_gradient(&c, &w, &mut Scratch::default(), &mut g);
        for j in 0..FEATURES {
            let (mut hi, mut lo) = (w, w);
            hi[j] += 1e-5;
            lo[j] -= 1e-5;
            let numeric = (case_loss(&c, &hi) - case_loss(&c, &lo)) / 2e-5;
            assert!(
                (numeric - g[j]).abs() < 1e-6,
                "feature {j}: {numeric} vs {}",
                g[j]
            );
        }
    }

    #[test]
    fn fitting_learns_the_feature_that_separates_relevant_products() {
        // The dense score is noise; "bought" marks the relevant candidate.
        let cases: Vec<FitCase> = (0..50)
            .map(|i| {
                let noise = |k: usize| ((i * 7 + k * 13) % 10) as f32 / 10.0;
                let mut rel = one_hot(0, noise(0));
                rel[3] = 1.0;
                case(&[
                    (rel, true),
                    (one_hot(0, noise(1)), false),
                    (one_hot(0, noise(2)), false),
                ])
            })
            .collect();
        let start = Reranker::dense_only();
        let fitted = fit(&cases, &FitOptions::default());
        assert!(fitted.weights[3] > 2.0, "{:?}", fitted.weights);
        assert!(loss(&cases, &fitted) < 0.5 * loss(&cases, &start));
        // A masked feature stays at 0.
        let mut opts = FitOptions::default();
        opts.use_feature[3] = false;
        assert_eq!(fit(&cases, &opts).weights[3], 0.0);
        // Nothing to learn from: the dense score at the towers' scale.
        assert_eq!(fit(&[], &FitOptions::default()).weights[0], 20.0);
    }

    /// The gradient the fit follows is the derivative of the loss it reports (central
    /// differences), including cases with several relevant candidates and scores far apart,
    /// where one shared shift would underflow the relevant candidates' sum.
    #[test]
    fn the_gradient_holds_over_many_cases_and_far_apart_scores() {
        let mut cases = Vec::new();
        for i in 0..6 {
            let x = |k: usize| ((i * 5 + k * 3) % 7) as f32 / 7.0 - 0.4;
            let mut a = one_hot(0, x(0));
            a[3] = 1.0;
            a[5] = x(4);
            let mut b = one_hot(0, x(1));
            b[5] = -x(2);
            let mut c = one_hot(0, x(2));
            c[3] = x(3);
            cases.push(case(&[(a, true), (b, i % 2 == 0), (c, false)]));
        }
        let mut far = one_hot(0, 50.0);
        far[3] = 1.0;
        cases.push(case(&[(one_hot(0, -40.0), true), (far, false)]));
        let w: [f64; FEATURES] = std::array::from_fn(|j| 0.5 + 0.25 * j as f64);
        let mut grad = [0f64; FEATURES];
        let mut buf = Scratch::default();
        for c in &cases {
            add_case_gradient(c, &w, &mut buf, &mut grad);
        }
        let total = |w: &[f64; FEATURES]| cases.iter().map(|c| case_loss(c, w)).sum::<f64>();
        for j in [0, 3, 5] {
            let h = 1e-5;
            let (mut up, mut down) = (w, w);
            up[j] += h;
            down[j] -= h;
            let numeric = (total(&up) - total(&down)) / (2.0 * h);
            assert!(grad[j].is_finite(), "{grad:?}");
            assert!(
                (grad[j] - numeric).abs() < 1e-4 * numeric.abs().max(1.0),
                "feature {j}: {} against {numeric}",
                grad[j]
            );
        }
    }
}
