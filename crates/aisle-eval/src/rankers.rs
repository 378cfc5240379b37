//! What an evaluation ranks with: the baselines (BM25, popularity, query-log memorisation) and a
//! trained dense model, behind one trait.

use std::collections::HashMap;

use std::sync::Arc;

use aisle_core::split::QuerySource;
use aisle_core::{Dataset, Histories, Kind, ProductId, Split, UserId};
use aisle_model::IntoEncoder;
use aisle_search::lexical::{Bm25Index, FieldBoosts};
use aisle_search::rerank::{counts_as_bought, product_words, words};
use aisle_search::searcher::Candidates;
use aisle_search::{
    HistoryInput, IndexChoice, Mode, Request, Reranker, Searcher, SearcherOptions, Signals, MAX_K,
};

use serde::Serialize;

use crate::error::Result;

/// One query to rank for.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    /// Normalised query text.
    pub text: &'a str,
    pub user: Option<UserId>,
    /// History cut-off: a personalized ranker may use only the user's training interactions
    /// with `time < before`.
    pub before: i64,
}

/// A retrieval system under evaluation.
pub trait Ranker: Sync {
    /// The row name in reports.
    fn name(&self) -> String;

    /// The top `depth` products for each case, best first, in case order. Batched so that a
    /// dense model encodes its queries together.
    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>>;
}

/// Products by number of training interactions, most first (ties by id).
pub fn popularity_order(ds: &Dataset, split: &Split) -> Vec<ProductId> {
    let mut count = vec![0u32; ds.catalog.len()];
    for &i in &split.train {
        count[ds.interactions[i as usize].product.index()] += 1;
    }
    let mut order: Vec<ProductId> = ds.catalog.iter().map(|(id, _)| id).collect();
    order.sort_by(|a, b| count[b.index()].cmp(&count[a.index()]).then(a.cmp(b)));
    order
}

/// The same list for every query: the most interacted-with products of the training part.
pub struct PopularityRanker {
    order: Vec<ProductId>,
}

impl PopularityRanker {
    pub fn new(ds: &Dataset, split: &Split) -> Self {
        PopularityRanker {
            order: popularity_order(ds, split),
        }
    }
}

impl Ranker for PopularityRanker {
    fn name(&self) -> String {
        "popularity".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let top: Vec<ProductId> = self.order.iter().take(depth).copied().collect();
        Ok(cases.iter().map(|_| top.clone()).collect())
    }
}

/// Query-log memorisation: the products most often chosen for the same normalised query in
/// training (clicked, carted or bought after it; for purchase histories, bought under the
/// category the query names), then popularity for the rest of the list.
pub struct MemorisationRanker {
    by_query: HashMap<String, Vec<ProductId>>,
    popularity: Vec<ProductId>,
}

impl MemorisationRanker {
    pub fn new(ds: &Dataset, split: &Split) -> Self {
        let source = QuerySource::of(ds);
        let mut counts: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if let Some(text) = source.query_text(ds, e) {
                *counts
                    .entry(text)
                    .or_default()
                    .entry(e.product)
                    .or_default() += 1;
            }
        }
        let by_query = counts
            .into_iter()
            .map(|(q, c)| {
                let mut ps: Vec<(ProductId, u32)> = c.into_iter().collect();
                ps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (q, ps.into_iter().map(|(p, _)| p).collect())
            })
            .collect();
        MemorisationRanker {
            by_query,
            popularity: popularity_order(ds, split),
        }
    }

    /// True when the query occurs in training.
    pub fn knows(&self, text: &str) -> bool {
        self.by_query.contains_key(text)
    }
}

impl Ranker for MemorisationRanker {
    fn name(&self) -> String {
        "query memorisation".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        Ok(cases
            .iter()
            .map(|c| {
                let seen = self.by_query.get(c.text).map(Vec::as_slice).unwrap_or(&[]);
                let mut out: Vec<ProductId> = seen.iter().take(depth).copied().collect();
                for &p in &self.popularity {
                    if out.len() >= depth {
                        break;
                    }
                    if !seen.contains(&p) {
                        out.push(p);
                    }
                }
                out
            })
            .collect())
    }
}

/// BM25 over product text (tantivy), the lexical baseline.
pub struct Bm25Ranker {
    index: Bm25Index,
}

/// The field boosts [`Bm25Ranker::tuned`] tries on validation, the default first (it wins ties):
/// the fields scored apart and summed with a few weightings, and the single field of title,
/// brand, path names and attributes (`combined`) alone and with one field on top. tantivy's
/// BM25 keeps k1 = 1.2 and b = 0.75 (it does not let them be set), so they are not tuned.
pub fn bm25_candidates() -> Vec<FieldBoosts> {
    let apart = |title, brand, taxonomy, attributes, description| FieldBoosts {
        title,
        brand,
        taxonomy,
        attributes,
        description,
        combined: 0.0,
    };
    let combined = |title, taxonomy, description| FieldBoosts {
        title,
        brand: 0.0,
        taxonomy,
        attributes: 0.0,
        description,
        combined: 1.0,
    };
    vec![
        FieldBoosts::default(),
        apart(1.0, 1.0, 1.0, 1.0, 0.0),
        apart(1.0, 1.0, 2.0, 1.0, 0.0),
        apart(1.0, 0.5, 0.0, 0.5, 0.0),
        combined(0.0, 0.0, 0.0),
        combined(1.0, 0.0, 0.0),
        combined(0.0, 1.0, 0.0),
        combined(0.0, 0.0, 0.5),
    ]
}

/// At most this many validation queries (a seeded sample) choose BM25's boosts: every candidate
/// builds its index and searches them all (362,776 validation queries at 100k products would
/// take minutes a candidate).
pub const BM25_TUNE_QUERIES: usize = 10_000;

/// Which field boosts BM25 got on a split, and what each candidate scored.
#[derive(Clone, Debug, Serialize)]
pub struct Bm25Choice {
    pub chosen: FieldBoosts,
    /// `(boosts, validation Recall@10)` for each of [`bm25_candidates`], in order.
    pub candidates: Vec<(FieldBoosts, f64)>,
    pub validation_queries: usize,
    pub seconds: f64,
}

impl Bm25Choice {
    /// One line for a report: the chosen boosts and every candidate's validation figure.
    pub fn note(&self) -> String {
        let tried: Vec<String> = self
            .candidates
            .iter()
            .map(|(b, r)| format!("{} -> {r:.4}", b.describe()))
            .collect();
        format!(
            "BM25 field boosts chosen on validation Recall@10 ({} queries, {:.1} s): {}; tried {}",
            self.validation_queries,
            self.seconds,
            self.chosen.describe(),
            tried.join("; ")
        )
    }
}

impl Bm25Ranker {
    /// BM25 with the default field boosts.
    pub fn new(ds: &Dataset) -> Result<Self> {
        Self::with_boosts(ds, &FieldBoosts::default())
    }

    pub fn with_boosts(ds: &Dataset, boosts: &FieldBoosts) -> Result<Self> {
        Ok(Bm25Ranker {
            index: Bm25Index::build(&ds.catalog, &ds.taxonomy, boosts)?,
        })
    }

    /// The strongest BM25 of [`bm25_candidates`] on `split`'s validation queries (at most
    /// [`BM25_TUNE_QUERIES`]; micro Recall@10; the earlier candidate among ties), so that the
    /// lexical baseline is not handicapped by one fixed weighting. Without validation queries,
    /// the default.
    pub fn tuned(ds: &Dataset, split: &Split) -> Result<(Self, Bm25Choice)> {
        let start = std::time::Instant::now();
        let mut validation: Vec<&aisle_core::EvalQuery> = split
            .validation
            .iter()
            .filter(|q| q.relevant.iter().any(|r| r.1 > 0))
            .collect();
        if validation.len() > BM25_TUNE_QUERIES {
            aisle_core::rng::Rng::new(split.seed ^ 0xB325_F1E1).shuffle(&mut validation);
            validation.truncate(BM25_TUNE_QUERIES);
        }
        let queries: Vec<(&str, Vec<ProductId>)> = validation
            .iter()
            .map(|q| {
                let rel = q.relevant.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
                (ds.queries.text(q.query), rel)
            })
            .filter(|(_, rel): &(&str, Vec<ProductId>)| !rel.is_empty())
            .collect();
        let texts: Vec<&str> = queries.iter().map(|q| q.0).collect();
        let mut best: Option<(Bm25Ranker, f64)> = None;
        let mut candidates = Vec::new();
        for boosts in bm25_candidates() {
            let ranker = Self::with_boosts(ds, &boosts)?;
            let recall = if texts.is_empty() {
                0.0
            } else {
                let hits = ranker.index.search_many(&texts, 10)?;
                let sum: f64 = hits
                    .iter()
                    .zip(&queries)
                    .map(|(h, (_, rel))| {
                        let found = h.iter().filter(|(p, _)| rel.contains(p)).count();
                        found as f64 / rel.len() as f64
                    })
                    .sum();
                sum / texts.len() as f64
            };
            candidates.push((boosts, recall));
            if best.as_ref().is_none_or(|(_, r)| recall > *r) {
                best = Some((ranker, recall));
            }
        }
        let ranker = match best {
            Some((ranker, _)) => ranker,
            None => Self::new(ds)?,
        };
        let choice = Bm25Choice {
            chosen: *ranker.index.boosts(),
            candidates,
            validation_queries: texts.len(),
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok((ranker, choice))
    }
}

impl Ranker for Bm25Ranker {
    fn name(&self) -> String {
        "BM25".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let texts: Vec<&str> = cases.iter().map(|c| c.text).collect();
        Ok(self
            .index
            .search_many(&texts, depth)?
            .into_iter()
            .map(|hits| hits.into_iter().map(|(p, _)| p).collect())
            .collect())
    }
}

/// A trained two-tower model over the whole catalog, through the same [`Searcher`] that
/// `aisle serve` serves, searched exactly (the ANN's recall cost is measured by the search
/// crate, not mixed into model quality here). A model with a personalized tower reads each query
/// with its customer's training history before the query's cut-off; with no customer, or none
/// known, the query vector is the plain one. In hybrid mode the dense list is fused with BM25's.
pub struct DenseRanker {
    name: String,
    searcher: Searcher,
    mode: Mode,
}

impl DenseRanker {
    /// `history`: earlier interactions a personalized model reads (ignored by a plain one).
    pub fn new(
        name: impl Into<String>,
        model: impl IntoEncoder,
        ds: &Arc<Dataset>,
        split: &Split,
        history: usize,
    ) -> Result<Self> {
        Self::with_mode(name, model, ds, split, history, Mode::Dense)
    }

    /// A ranker searching in `mode` (dense, or hybrid with BM25).
    pub fn with_mode(
        name: impl Into<String>,
        model: impl IntoEncoder,
        ds: &Arc<Dataset>,
        split: &Split,
        history: usize,
        mode: Mode,
    ) -> Result<Self> {
        Self::with_options(
            name,
            model,
            ds,
            split,
            &DenseOptions {
                history,
                history_rule: HistoryRule::BeforeCutOff,
                mode,
                history_boost: 0.0,
                bm25: FieldBoosts::default(),
            },
        )
    }

    /// A ranker with every option of the Searcher it ranks through, over exact search.
    pub fn with_options(
        name: impl Into<String>,
        model: impl IntoEncoder,
        ds: &Arc<Dataset>,
        split: &Split,
        options: &DenseOptions,
    ) -> Result<Self> {
        Self::with_index(name, model, ds, split, options, IndexChoice::Exact)
    }

    /// Like [`with_options`](Self::with_options), searching `index` (an HNSW graph, or a Qdrant
    /// collection: what `aisle serve --backend qdrant` serves is then what is measured).
    ///
    /// `model` (the n-gram towers or MiniLM) may be an `Arc` that other rankers of the same
    /// model share: the ranker then adds the catalog's vectors, not another copy of its weights.
    pub fn with_index(
        name: impl Into<String>,
        model: impl IntoEncoder,
        ds: &Arc<Dataset>,
        split: &Split,
        options: &DenseOptions,
        index: IndexChoice,
    ) -> Result<Self> {
        // Read by a personalized model, the history term and a re-ranking head; cheap to build
        // (one sort of the training part), so every ranker has them.
        let histories = match options.history_rule {
            HistoryRule::BeforeCutOff => Histories::for_evaluation(ds, split),
            HistoryRule::TrainingOnly => Histories::from_split(ds, split),
            HistoryRule::Hidden => Histories::default(),
        };
        Self::over(name, model, ds, histories, options, index)
    }

    /// A ranker over these customers' `histories` (none: every customer as if new, which is
    /// what a model without a personalized tower or history term reads anyway).
    pub fn over(
        name: impl Into<String>,
        model: impl IntoEncoder,
        ds: &Arc<Dataset>,
        histories: Histories,
        options: &DenseOptions,
        index: IndexChoice,
    ) -> Result<Self> {
        let opts = SearcherOptions {
            index,
            history: options.history,
            lexical: (options.mode != Mode::Dense).then_some(options.bm25),
            history_boost: options.history_boost,
            ..SearcherOptions::default()
        };
        Ok(DenseRanker {
            name: name.into(),
            searcher: Searcher::build(Arc::clone(ds), model, histories, &opts)?,
            mode: options.mode,
        })
    }
}

impl DenseRanker {
    /// Sets the vector index's search effort (HNSW `ef`; see
    /// [`Searcher::set_search_effort`]).
    pub fn set_search_effort(&self, effort: usize) {
        self.searcher.set_search_effort(effort);
    }

    /// Sets `beta` of the history term for the next rankings (see
    /// [`Searcher::set_history_boost`]).
    pub fn set_history_boost(&mut self, beta: f32) -> Result<()> {
        Ok(self.searcher.set_history_boost(beta)?)
    }

    /// Sets the learned re-ranking head and what it reads (see [`Searcher::set_reranker`]).
    pub fn set_reranking(&mut self, signals: Arc<Signals>, head: Option<Reranker>) -> Result<()> {
        self.searcher.set_signals(Some(signals));
        Ok(self.searcher.set_reranker(head)?)
    }

    /// The re-ranking head's candidates and features for each case (see
    /// [`Searcher::candidate_features`]).
    pub fn candidate_features(&self, cases: &[Case]) -> Result<Vec<Candidates>> {
        let requests = self.requests(cases, 10);
        Ok(self.searcher.candidate_features(&requests)?)
    }

    fn requests<'a>(&self, cases: &[Case<'a>], depth: usize) -> Vec<Request<'a>> {
        cases
            .iter()
            .map(|c| Request {
                history: match c.user {
                    Some(user) => HistoryInput::User {
                        user,
                        before: c.before,
                    },
                    None => HistoryInput::None,
                },
                mode: self.mode,
                ..Request::new(c.text, depth)
            })
            .collect()
    }
}

/// Which of a customer's interactions a query's history holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistoryRule {
    /// Training and validation interactions strictly before the query's cut-off, never a test
    /// event ([`Histories::for_evaluation`]): what a live service would know. Every row reads it.
    #[default]
    BeforeCutOff,
    /// Training interactions only ([`Histories::from_split`]): on leave-last-order-out a test
    /// query then misses the validation order. aisle's rule before December 2026, kept to show
    /// what that order adds.
    TrainingOnly,
    /// None: every customer as if new, known only by their features (segment, age band) where
    /// the personalized tower reads them. Simulates cold-start customers on any protocol.
    Hidden,
}

/// How a [`DenseRanker`] searches.
#[derive(Clone, Copy, Debug)]
pub struct DenseOptions {
    /// Earlier interactions a personalized model (or the history term) reads.
    pub history: usize,
    /// Which interactions those are: everything before the query's cut-off but test events (the
    /// one rule of every row), or training interactions only.
    pub history_rule: HistoryRule,
    pub mode: Mode,
    /// `beta` of the history term ([`SearcherOptions::history_boost`]); 0 for none.
    pub history_boost: f32,
    /// BM25's field boosts in a hybrid mode (the ones [`Bm25Ranker::tuned`] chose, where the
    /// caller tuned them).
    pub bm25: FieldBoosts,
}

impl Ranker for DenseRanker {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        if cases.is_empty() || depth == 0 {
            return Ok(vec![Vec::new(); cases.len()]);
        }
        if depth > MAX_K {
            return Err(aisle_search::SearchError::InvalidArgument(format!(
                "a dense model ranks at most {MAX_K} products per query, {depth} were asked for"
            ))
            .into());
        }
        let requests = self.requests(cases, depth);
        Ok(self
            .searcher
            .search_many(&requests)?
            .into_iter()
            .map(|r| r.hits.into_iter().map(|h| h.product).collect())
            .collect())
    }
}

/// Per-user re-purchase: the products this customer bought before the query (from training
/// interactions only) that match it, most bought first (then most recent), then query
/// memorisation for the rest of the list. A product matches when the query is its category's
/// name or when every query word is in its title or category path. On data without purchases
/// (search logs), clicks and add-to-carts count as buying.
pub struct RepurchaseRanker {
    histories: Histories,
    /// Product and counted-or-not of every interaction.
    product: Vec<ProductId>,
    counts: Vec<bool>,
    time: Vec<i64>,
    category: Vec<String>,
    /// Sorted, distinct words of each product's title and category path.
    words: Vec<Vec<String>>,
    memorisation: MemorisationRanker,
}

impl RepurchaseRanker {
    pub fn new(ds: &Dataset, split: &Split) -> Self {
        let purchases = ds.interactions.iter().any(|e| e.kind == Kind::Purchase);
        let t = &ds.taxonomy;
        let category = ds
            .catalog
            .iter()
            .map(|(_, p)| aisle_core::normalize_query(t.name(p.category)))
            .collect();
        RepurchaseRanker {
            histories: Histories::for_evaluation(ds, split),
            product: ds.interactions.iter().map(|e| e.product).collect(),
            counts: ds
                .interactions
                .iter()
                .map(|e| counts_as_bought(purchases, e.kind))
                .collect(),
            time: ds.interactions.iter().map(|e| e.time).collect(),
            category,
            words: product_words(ds),
            memorisation: MemorisationRanker::new(ds, split),
        }
    }

    fn matches(&self, p: ProductId, query: &str, query_words: &[String]) -> bool {
        self.category[p.index()] == query
            || (!query_words.is_empty()
                && query_words
                    .iter()
                    .all(|w| self.words[p.index()].binary_search(w).is_ok()))
    }
}

impl Ranker for RepurchaseRanker {
    fn name(&self) -> String {
        "re-purchase".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let fallback = self.memorisation.rank(cases, depth)?;
        Ok(cases
            .iter()
            .zip(fallback)
            .map(|(c, fallback)| {
                let mut bought: HashMap<ProductId, (u32, i64)> = HashMap::new();
                if let Some(u) = c.user {
                    let query_words = words(c.text);
                    for &i in self.histories.before(u, c.before, usize::MAX) {
                        let i = i as usize;
                        let p = self.product[i];
                        if self.counts[i] && self.matches(p, c.text, &query_words) {
                            let e = bought.entry(p).or_default();
                            e.0 += 1;
                            e.1 = e.1.max(self.time[i]);
                        }
                    }
                }
                let mut ranked: Vec<(ProductId, (u32, i64))> = bought.into_iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut out: Vec<ProductId> = ranked.into_iter().map(|r| r.0).take(depth).collect();
                for p in fallback {
                    if out.len() >= depth {
                        break;
                    }
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tv (p0..p3) and sofa (p4, p5); user u bought p1 twice and p2 once at times 1..3, p3 at
    /// time 20 (after the cut-off), a sofa at time 2; user v bought p0 five times.
    fn shop() -> (Dataset, Split) {
        let mut events: Vec<aisle_fixtures::ShopEvent> = [(1, 1), (1, 2), (2, 3), (4, 2), (3, 20)]
            .into_iter()
            .map(|(p, time)| ("u", p, time, Kind::Purchase))
            .collect();
        events.extend((0..5).map(|time| ("v", 0, time, Kind::Purchase)));
        let ds = aisle_fixtures::shop_with(&events, None);
        let split = Split {
            name: "all".into(),
            description: String::new(),
            seed: 0,
            train: (0..ds.interactions.len() as u32).collect(),
            validation: vec![],
            test: vec![],
            cold_start: vec![false; 6],
        };
        (ds, split)
    }

    /// BM25's boosts are the best candidate on validation (the default among ties), every
    /// candidate's figure is kept for the report, and the ranker returned ranks with them.
    #[test]
    fn bm25_boosts_are_the_best_candidate_on_validation() {
        let ds = aisle_core::synth::small_dataset(400, 60, 400, 5).expect("world");
        let split = aisle_core::split::event_split(&ds, Default::default(), 3).expect("split");
        let (ranker, choice) = Bm25Ranker::tuned(&ds, &split).expect("tuned");
        assert_eq!(choice.candidates.len(), bm25_candidates().len());
        assert!(choice.validation_queries > 0);
        // The first candidate with the highest figure.
        let c = &choice.candidates;
        let first_best = (1..c.len()).fold(0, |b, i| if c[i].1 > c[b].1 { i } else { b });
        assert_eq!(choice.chosen, c[first_best].0);
        assert_eq!(*ranker.index.boosts(), choice.chosen);
        assert!(choice.note().contains(&choice.chosen.describe()));
        // Two candidates rank differently here, or the choice would mean nothing.
        let distinct: std::collections::HashSet<u64> =
            choice.candidates.iter().map(|c| c.1.to_bits()).collect();
        assert!(distinct.len() > 1, "{:?}", choice.candidates);
    }

    #[test]
    fn repurchase_ranks_the_users_matching_purchases_before_the_cut_off() {
        let (ds, split) = shop();
        let r = RepurchaseRanker::new(&ds, &split);
        let u = ds.users.find("u");
        let case = |text, user, before| Case { text, user, before };
        let got = r
            .rank(
                &[
                    case("tv", u, 10),
                    case("tv", None, 10),
                    case("sony", u, 10),
                    case("tv", u, 3),
                ],
                4,
            )
            .expect("rank");
        // p1 (twice) before p2; p3 was bought after the cut-off and the sofa does not match;
        // then the category's best sellers (p0, bought five times by v).
        assert_eq!(
            got[0],
            vec![ProductId(1), ProductId(2), ProductId(0), ProductId(3)]
        );
        // No user: memorisation alone.
        assert_eq!(got[1][0], ProductId(0));
        // A text query matches by title words.
        assert_eq!(got[2][0], ProductId(2));
        // A cut-off of 3 keeps only the purchases at times 1 and 2.
        assert_eq!(got[3][..2], [ProductId(1), ProductId(0)]);
    }
}
