//! The Searcher: what `aisle eval` measures and what `aisle serve` serves, one type for both.
//!
//! ```text
//! query text (+ customer or inline history)
//!   -> query tower -> personalized tower (when the model has one and there is a history)
//!   -> vector index top-k (ANN or exact), restricted to a taxonomy subtree when asked
//!   -> optional fusion with BM25 (reciprocal rank fusion, or a weighted score sum)
//!   -> hits with explanations (taxonomy path, history items that raised a hit, lexical matches)
//! ```
//!
//! A request with no customer, an unknown customer or an empty history is searched with the
//! plain query vector, bit for bit (the personalized tower returns it untouched).

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use aisle_core::{Dataset, Histories, Kind, NodeId, ProductId, UserId};
use aisle_model::personal::{kind_weight, PersonalCache};
use aisle_model::{Encoder, IntoEncoder};

use crate::error::{Result, SearchError};
use crate::lexical::{Bm25Index, FieldBoosts};
use crate::rerank::{Past, Reranker, Signals, FEATURES, QUERY_CANDIDATES};
use crate::vector::{dot, ExactIndex, HnswIndex, HnswParams, IndexStamp, VectorIndex};

/// The most hits one request may ask for.
pub const MAX_K: usize = 1000;

/// Candidates each side contributes to a hybrid fusion, at least (more when `k` is larger).
const FUSION_DEPTH: usize = 100;

/// A dense top-k list: products and their cosines, best first.
type DenseList = Vec<(ProductId, f32)>;

/// Earlier interactions the re-ranking head reads per request.
pub const RERANK_HISTORY: usize = 1000;

/// A request's re-ranking candidates with their features ([`Searcher::candidate_features`]).
pub type Candidates = Vec<(ProductId, [f32; FEATURES])>;

/// A taxonomy filter keeping at most this many products is searched exactly over the subtree's
/// own rows (a contiguous slice, see [`Searcher`]'s `by_pre`) instead of by a filtered graph
/// walk, which may run out of neighbours when few nodes pass.
const EXACT_FILTER_MAX: usize = 20_000;

/// History items named in a hit's explanation, at most.
const EXPLAIN_HISTORY: usize = 3;

/// A history item explains a hit only when it is itself close to it: attention spread thinly
/// over unrelated items moves every score a little, and explains none of them.
const EXPLAIN_MIN_SIMILARITY: f32 = 0.5;

/// How a hybrid search joins the dense and the lexical lists.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HybridFusion {
    /// Reciprocal rank fusion: `sum over lists of 1 / (k + rank)` (Cormack et al., SIGIR 2009).
    Rrf { k: f32 },
    /// `alpha * cosine + (1 - alpha) * bm25 / max bm25 of the query`, over the union of both
    /// lists (a product outside the BM25 list scores 0 there; every candidate's cosine is exact).
    Weighted { alpha: f32 },
}

/// `hybrid` means a weighted sum with `alpha` 0.8: on Best Buy's event split it was the only
/// fusion above the dense model alone (test R@10 0.914 against 0.911; `weighted:0.5` 0.892 and
/// RRF 0.874, pulled down by BM25's weaker list; docs/evaluation.md).
impl Default for HybridFusion {
    fn default() -> Self {
        HybridFusion::Weighted { alpha: 0.8 }
    }
}

/// Which retrieval a request runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The two-tower model alone.
    #[default]
    Dense,
    /// BM25 alone.
    Lexical,
    /// Both, fused.
    Hybrid(HybridFusion),
}

impl Mode {
    /// Parses `dense`, `lexical`, `hybrid` (= `weighted:0.8`), `rrf[:K]` (K = 60) or
    /// `weighted[:ALPHA]` (ALPHA = 0.8).
    pub fn parse(s: &str) -> std::result::Result<Mode, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |default: f32, lo: f32, hi: f32| -> std::result::Result<f32, String> {
            match arg {
                None => Ok(default),
                Some(a) => match a.parse::<f32>() {
                    Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                    _ => Err(format!("`{s}`: `{a}` must be a number in [{lo}, {hi}]")),
                },
            }
        };
        match name {
            "dense" if arg.is_none() => Ok(Mode::Dense),
            "lexical" | "bm25" if arg.is_none() => Ok(Mode::Lexical),
            "hybrid" if arg.is_none() => Ok(Mode::Hybrid(HybridFusion::default())),
            "rrf" => Ok(Mode::Hybrid(HybridFusion::Rrf {
                k: num(60.0, 0.0, 1e6)?,
            })),
            "weighted" => Ok(Mode::Hybrid(HybridFusion::Weighted {
                alpha: num(0.8, 0.0, 1.0)?,
            })),
            _ => Err(format!(
                "`{s}`: expected dense, lexical, hybrid, rrf[:K] or weighted[:ALPHA]"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Dense => f.write_str("dense"),
            Mode::Lexical => f.write_str("lexical"),
            Mode::Hybrid(HybridFusion::Rrf { k }) => write!(f, "rrf:{k}"),
            Mode::Hybrid(HybridFusion::Weighted { alpha }) => write!(f, "weighted:{alpha}"),
        }
    }
}

/// Which vector index the Searcher builds or opens.
#[derive(Clone, Debug)]
pub enum IndexChoice {
    /// Brute force over every product: exact, the right choice below some 100k products.
    Exact,
    /// A usearch HNSW graph built now.
    Hnsw(HnswParams),
    /// A graph saved by `aisle index`, read into memory after its header, checksums and
    /// digests are checked.
    Saved(std::path::PathBuf),
    /// A collection uploaded by `aisle index --backend qdrant`, searched in Qdrant.
    Qdrant(crate::qdrant::QdrantTarget),
}

/// How a Searcher is put together.
#[derive(Clone, Debug)]
pub struct SearcherOptions {
    pub index: IndexChoice,
    /// Earlier interactions the personalized tower reads.
    pub history: usize,
    /// Build the BM25 index (needed by lexical and hybrid requests, and for lexical matches in
    /// explanations).
    pub lexical: Option<FieldBoosts>,
    /// A taxonomy filter keeping at most this many products is searched exactly over the
    /// subtree's own vectors instead of by a filtered walk of the ANN graph.
    pub exact_filter_max: usize,
    /// `beta` of the history term in a dense score, for requests with a history:
    /// `score(p) = q' . p + beta * max_j h_j . p` over the dense top 100 and the customer's own
    /// earlier products. 0 leaves scores as the towers give them.
    pub history_boost: f32,
    /// The served model file's digest ([`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest)):
    /// a saved index whose header names another model is refused. `None` checks only the
    /// catalog.
    pub model_digest: Option<String>,
}

impl Default for SearcherOptions {
    fn default() -> Self {
        SearcherOptions {
            index: IndexChoice::Exact,
            history: aisle_model::personal::HISTORY_WINDOW,
            lexical: Some(FieldBoosts::default()),
            exact_filter_max: EXACT_FILTER_MAX,
            history_boost: 0.0,
            model_digest: None,
        }
    }
}

/// Where a request's history comes from.
#[derive(Clone, Copy, Debug, Default)]
pub enum HistoryInput<'a> {
    /// None: a plain search.
    #[default]
    None,
    /// The customer's stored interactions strictly before `before` (`i64::MAX` when serving).
    User { user: UserId, before: i64 },
    /// Given with the request, oldest first (the last `history` of them are read).
    Inline(&'a [(ProductId, Kind)]),
}

/// One search.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Query text, normalised as the model was trained ([`aisle_core::normalize_query`]).
    pub text: &'a str,
    /// Hits wanted, 1..=[`MAX_K`].
    pub k: usize,
    pub history: HistoryInput<'a>,
    /// Keep only products in this node's subtree.
    pub category: Option<NodeId>,
    pub mode: Mode,
    /// Fill each hit's [`Explanation`].
    pub explain: bool,
}

impl<'a> Request<'a> {
    /// A plain dense request for `k` hits.
    pub fn new(text: &'a str, k: usize) -> Request<'a> {
        Request {
            text,
            k,
            history: HistoryInput::None,
            category: None,
            mode: Mode::Dense,
            explain: false,
        }
    }
}

/// Why a hit is where it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// History items that raised the hit: attention weight times their similarity to it, the
    /// largest contributions first, for items at least somewhat similar to the hit (cosine 0.5).
    pub history: Vec<(ProductId, f32)>,
    /// Customer features (`segment=premium`, `age`) that raised the hit: attention weight times
    /// their slot's dot product with it, the largest first; empty for a tower without features.
    pub customer: Vec<(String, f32)>,
    /// Query terms (analyzed: lowercased, stemmed) found in the product's text.
    pub lexical_matches: Vec<String>,
}

/// One result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub product: ProductId,
    /// The score the list is ordered by (cosine, BM25 or the fused score, by mode; the
    /// re-ranking head's score when one is set).
    pub score: f32,
    /// Cosine of the (personalized) query vector and the product vector.
    pub dense: Option<f32>,
    /// BM25 score, where BM25 ran and matched.
    pub lexical: Option<f32>,
    pub explanation: Option<Explanation>,
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub hits: Vec<Hit>,
    /// History items the personalized tower read.
    pub history_used: usize,
    /// Customer features it read (segment, age band; 0 for a tower without them). With no
    /// history item and no feature, the plain query vector was used.
    pub features_used: usize,
}

impl Results {
    pub fn personalized(&self) -> bool {
        self.history_used > 0 || self.features_used > 0
    }
}

/// The query side of a request after the towers: its vector and what personalization did.
struct Encoded {
    vector: Vec<f32>,
    /// `(product, attention)` of each history item read.
    attention: Vec<(ProductId, f32)>,
    /// `(feature, attention, slot vector)` of each customer feature read.
    features: Vec<(String, f32, Vec<f32>)>,
}

/// A trained encoder (the n-gram towers or MiniLM, with a personalized tower when it has one),
/// its product vectors in a vector index, BM25 over the same catalog, and the customers'
/// histories. Immutable: answers `&self` requests from many threads; a new model or
/// index means a new Searcher (the server swaps whole Searchers).
pub struct Searcher {
    ds: Arc<Dataset>,
    /// Shared: Searchers over one model (an evaluation's rows of one model file) hold one copy
    /// of its weights (for the default n-gram model an embedding table of 2^20 x 128 f32,
    /// 512 MiB), not one each.
    encoder: Arc<dyn Encoder>,
    /// Product vectors, row `p` for `ProductId(p)`.
    vectors: Vec<f32>,
    index: Box<dyn VectorIndex>,
    bm25: Option<Bm25Index>,
    histories: Histories,
    history_len: usize,
    history_boost: f32,
    /// What the learned re-ranking head reads, and the head; see [`crate::rerank`].
    signals: Option<Arc<Signals>>,
    reranker: Option<Reranker>,
    exact_filter_max: usize,
    /// Products sorted by the pre-order rank of their category: a subtree's products are one
    /// contiguous run, found by two binary searches.
    by_pre: Vec<ProductId>,
    pre_of: Vec<u32>,
    index_kind: &'static str,
    /// Facts every answer of this Searcher must carry (e.g. that its model was trained on
    /// another dataset).
    notes: Vec<String>,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher")
            .field("dataset", &self.ds.name)
            .field("products", &self.ds.catalog.len())
            .field("encoder", &self.encoder.kind())
            .field("dim", &self.encoder.dim())
            .field("index", &self.index_kind)
            .field("personalized", &self.encoder.personal().is_some())
            .finish()
    }
}

impl Searcher {
    /// Encodes the catalog with `encoder`, builds (or opens) the vector index and BM25, and keeps
    /// `histories` as the customer store (a split's training part for evaluation, every
    /// interaction when serving). `encoder` may be shared with other Searchers.
    pub fn build(
        ds: Arc<Dataset>,
        encoder: impl IntoEncoder,
        histories: Histories,
        opts: &SearcherOptions,
    ) -> Result<Searcher> {
        let encoder = encoder.into_encoder();
        let vectors = encoder.encode_catalog(&ds.catalog, &ds.taxonomy)?;
        Self::with_vectors(ds, encoder, vectors, histories, opts)
    }

    /// Like [`build`](Self::build), with the catalog's vectors already encoded by `encoder`.
    pub fn with_vectors(
        ds: Arc<Dataset>,
        encoder: impl IntoEncoder,
        vectors: Vec<f32>,
        histories: Histories,
        opts: &SearcherOptions,
    ) -> Result<Searcher> {
        let encoder = encoder.into_encoder();
        check_history_boost(opts.history_boost)?;
        let d = encoder.dim();
        if vectors.len() != ds.catalog.len() * d {
            return Err(SearchError::InvalidArgument(format!(
                "{} values are not {} products x {d} dimensions",
                vectors.len(),
                ds.catalog.len()
            )));
        }
        let (index, index_kind): (Box<dyn VectorIndex>, _) = match &opts.index {
            IndexChoice::Exact => (Box::new(ExactIndex::new(d, vectors.clone())?), "exact"),
            IndexChoice::Hnsw(params) => (Box::new(HnswIndex::build(d, &vectors, params)?), "hnsw"),
            IndexChoice::Saved(path) => {
                let expected = IndexStamp {
                    model_digest: opts.model_digest.clone().unwrap_or_default(),
                    catalog_digest: crate::qdrant::catalog_digest(&ds),
                };
                let index = HnswIndex::load_checked(path, d, &expected)?;
                if let Some(reason) = index_misses(&index, &vectors, d)? {
                    return Err(SearchError::BadIndexFile {
                        path: path.to_path_buf(),
                        reason: format!("{reason} (rebuild it with `aisle index`)"),
                    });
                }
                (Box::new(index), "hnsw (saved)")
            }
            IndexChoice::Qdrant(target) => {
                let index = target.open(&ds, d)?;
                if let Some(reason) = index_misses(&index, &vectors, d)? {
                    return Err(SearchError::Qdrant {
                        node: index.client().urls().join(","),
                        collection: index.collection().to_owned(),
                        status: None,
                        message: format!(
                            "{reason} (upload it again with `aisle index --backend qdrant`)"
                        ),
                    });
                }
                (Box::new(index), "qdrant")
            }
        };
        let bm25 = match &opts.lexical {
            Some(boosts) => Some(Bm25Index::build(&ds.catalog, &ds.taxonomy, boosts)?),
            None => None,
        };
        let t = &ds.taxonomy;
        let pre_of: Vec<u32> = ds
            .catalog
            .products()
            .iter()
            .map(|p| t.pre_range(p.category).start)
            .collect();
        let mut by_pre: Vec<ProductId> = ds.catalog.iter().map(|(id, _)| id).collect();
        by_pre.sort_by_key(|p| (pre_of[p.index()], *p));
        Ok(Searcher {
            ds,
            encoder,
            vectors,
            index,
            bm25,
            histories,
            history_len: opts.history,
            history_boost: opts.history_boost,
            signals: None,
            reranker: None,
            exact_filter_max: opts.exact_filter_max,
            by_pre,
            pre_of,
            index_kind,
            notes: Vec::new(),
        })
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.ds
    }

    /// The query and product towers (n-gram or MiniLM), with the personalized tower when the
    /// model has one.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// The same, shared: a Searcher over the same model with other options (another index, a
    /// history term) need not load it again.
    pub fn shared_encoder(&self) -> Arc<dyn Encoder> {
        Arc::clone(&self.encoder)
    }

    /// Plain query vectors of `texts` (no personalization), a flat `len x dim` matrix.
    pub fn encode_queries(&self, texts: &[&str]) -> Result<Vec<f32>> {
        Ok(self.encoder.encode_queries(texts)?)
    }

    pub fn histories(&self) -> &Histories {
        &self.histories
    }

    /// Facts every answer must carry; `aisle serve` adds them to each reply's warnings.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn add_note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// "exact", "hnsw", "hnsw (saved)" or "qdrant".
    pub fn index_kind(&self) -> &'static str {
        self.index_kind
    }

    /// The vector index in service (for benchmarks that time it alone).
    pub fn index(&self) -> &dyn VectorIndex {
        self.index.as_ref()
    }

    /// Where the vector index lives when it is not in this process (a Qdrant deployment's
    /// nodes and the collection an alias resolved to); `None` otherwise.
    pub fn index_source(&self) -> Option<String> {
        self.index.source()
    }

    /// Bytes of the vector index in memory.
    pub fn index_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    /// Sets the ANN's search effort (HNSW `ef`); see [`VectorIndex::set_search_effort`].
    pub fn set_search_effort(&self, effort: usize) {
        self.index.set_search_effort(effort);
    }

    /// Recall@`k` of the vector index in service against exact search over the same vectors,
    /// for these query texts (1.0 for an exact index). What `aisle bench search` reports beside
    /// its latency, so that speed is never shown without what it costs in recall.
    pub fn index_recall(&self, texts: &[&str], k: usize) -> Result<crate::vector::AnnQuality> {
        if self.index_kind == "exact" {
            return Ok(crate::vector::AnnQuality {
                recall: 1.0,
                kth_gap: 0.0,
            });
        }
        let queries = self.encoder.encode_queries(texts)?;
        let exact = ExactIndex::new(self.encoder.dim(), self.vectors.clone())?;
        crate::vector::ann_quality(self.index.as_ref(), &exact, &queries, k)
    }

    /// `beta` of the history term ([`SearcherOptions::history_boost`]).
    pub fn history_boost(&self) -> f32 {
        self.history_boost
    }

    /// Sets `beta` of the history term, a query-time weight: nothing is rebuilt, so that it can
    /// be tuned on validation queries over one built index. Histories are only read when the
    /// Searcher was built with a personalized model or a `history_boost` above 0.
    pub fn set_history_boost(&mut self, beta: f32) -> Result<()> {
        check_history_boost(beta)?;
        self.history_boost = beta;
        Ok(())
    }

    /// Sets the signals the re-ranking head reads (built from the same interactions as the
    /// histories: a split's training part in evaluation). Without them no head can be set.
    pub fn set_signals(&mut self, signals: Option<Arc<Signals>>) {
        if signals.is_none() {
            self.reranker = None;
        }
        self.signals = signals;
    }

    /// Sets the learned re-ranking head for dense requests (`None`: the towers' order). A
    /// query-time choice, like the history term's `beta`; the head replaces that term.
    pub fn set_reranker(&mut self, reranker: Option<Reranker>) -> Result<()> {
        if let Some(r) = &reranker {
            if self.signals.is_none() {
                return Err(SearchError::InvalidArgument(
                    "a re-ranking head needs the Searcher's signals (set_signals) first".into(),
                ));
            }
            if let Some((name, w)) = r.named().into_iter().find(|(_, w)| !w.is_finite()) {
                return Err(SearchError::InvalidArgument(format!(
                    "re-ranking weight {name} is {w}, not a finite number"
                )));
            }
        }
        self.reranker = reranker;
        Ok(())
    }

    pub fn reranker(&self) -> Option<&Reranker> {
        self.reranker.as_ref()
    }

    /// The re-ranking head's candidates for each dense request, with their features: what
    /// [`crate::rerank::fit`] learns from. Needs the signals.
    pub fn candidate_features(&self, requests: &[Request]) -> Result<Vec<Candidates>> {
        let Some(signals) = &self.signals else {
            return Err(SearchError::InvalidArgument(
                "candidate features need the Searcher's signals (set_signals) first".into(),
            ));
        };
        for r in requests {
            self.check(r)?;
        }
        let texts: Vec<&str> = requests.iter().map(|r| r.text).collect();
        let encoded = self.encode(requests, &texts)?;
        let lists = self.batch_dense(requests, &encoded, |r, _| r.k.max(FUSION_DEPTH))?;
        requests
            .par_iter()
            .zip(encoded.par_iter())
            .zip(lists.into_par_iter())
            .map(|((r, e), dense)| {
                let dense = match dense {
                    Some(d) => d,
                    None => self.dense_top(&e.vector, r.k.max(FUSION_DEPTH), r.category)?,
                };
                Ok(self.candidates(r, e, dense, signals))
            })
            .collect()
    }

    /// The dense top `depth(r, e)` of every request through the index's batch search (one
    /// matrix product per block of queries on an exact index, about 5x faster than one scan
    /// each) when every request is an unfiltered dense one at the same depth; otherwise `None`
    /// for each, and each request searches on its own.
    fn batch_dense(
        &self,
        requests: &[Request],
        encoded: &[Encoded],
        depth: impl Fn(&Request, &Encoded) -> usize,
    ) -> Result<Vec<Option<DenseList>>> {
        let batch_k = requests
            .first()
            .zip(encoded.first())
            .map_or(0, |(r, e)| depth(r, e));
        let batch = requests.len() > 1
            && requests.iter().zip(encoded).all(|(r, e)| {
                r.mode == Mode::Dense && r.category.is_none() && depth(r, e) == batch_k
            });
        if !batch {
            return Ok(vec![None; requests.len()]);
        }
        let rows: Vec<f32> = encoded
            .iter()
            .flat_map(|e| e.vector.iter().copied())
            .collect();
        Ok(self
            .index
            .search_many(&rows, batch_k)?
            .into_iter()
            .map(Some)
            .collect())
    }

    pub fn has_lexical(&self) -> bool {
        self.bm25.is_some()
    }

    /// The product vector of `p` (unit length).
    pub fn vector(&self, p: ProductId) -> &[f32] {
        let d = self.encoder.dim();
        &self.vectors[p.index() * d..(p.index() + 1) * d]
    }

    /// Checks what a request asks for before any work.
    fn check(&self, r: &Request) -> Result<()> {
        if r.k == 0 || r.k > MAX_K {
            return Err(SearchError::InvalidArgument(format!(
                "k must be in 1..={MAX_K}, got {}",
                r.k
            )));
        }
        if matches!(r.mode, Mode::Lexical | Mode::Hybrid(_)) && self.bm25.is_none() {
            return Err(SearchError::InvalidArgument(format!(
                "mode {} needs the BM25 index, which this Searcher was built without",
                r.mode
            )));
        }
        if let Some(c) = r.category {
            if c.index() >= self.ds.taxonomy.len() {
                return Err(SearchError::InvalidArgument(format!(
                    "category {} is not a taxonomy node",
                    c.0
                )));
            }
        }
        if let HistoryInput::Inline(items) = r.history {
            if let Some((p, _)) = items
                .iter()
                .find(|(p, _)| p.index() >= self.ds.catalog.len())
            {
                return Err(SearchError::InvalidArgument(format!(
                    "history product {} is not in the catalog",
                    p.0
                )));
            }
        }
        Ok(())
    }

    /// Answers one request.
    pub fn search(&self, request: &Request) -> Result<Results> {
        let mut out = self.search_many(std::slice::from_ref(request))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Answers many requests, in parallel, results in request order. Queries are encoded
    /// together; unfiltered dense requests with the same `k` go through the index's batch search
    /// (one matrix product per block on an exact index).
    pub fn search_many(&self, requests: &[Request]) -> Result<Vec<Results>> {
        for r in requests {
            self.check(r)?;
        }
        let texts: Vec<&str> = requests.iter().map(|r| r.text).collect();
        let encoded = self.encode(requests, &texts)?;
        let depth = |r: &Request, e: &Encoded| {
            if self.boosts(r, e) || self.reranks(r) {
                r.k.max(FUSION_DEPTH)
            } else {
                r.k
            }
        };
        let dense_lists = self.batch_dense(requests, &encoded, depth)?;
        requests
            .par_iter()
            .zip(encoded.par_iter())
            .zip(dense_lists.into_par_iter())
            .map(|((r, e), dense)| self.finish(r, e, dense))
            .collect()
    }

    /// Query vectors for every request, personalized where a history is given or stored.
    fn encode(&self, requests: &[Request], texts: &[&str]) -> Result<Vec<Encoded>> {
        let d = self.encoder.dim();
        let plain = self.plain_queries(texts)?;
        Ok(plain
            .par_chunks(d)
            .zip(requests.par_iter())
            .map_init(PersonalCache::default, |cache, (q, r)| {
                let Some(tower) = self.encoder.personal() else {
                    // A plain model reads a history only for the history term of the score,
                    // every item weighing the same.
                    let attention = if self.history_boost > 0.0 {
                        let (items, _, _) = self.history_vectors(r.history);
                        items.into_iter().map(|p| (p, 1.0)).collect()
                    } else {
                        Vec::new()
                    };
                    return Encoded {
                        vector: q.to_vec(),
                        attention,
                        features: Vec::new(),
                    };
                };
                let (items, h, w) = self.history_vectors(r.history);
                let features = match r.history {
                    HistoryInput::User { user, .. } if user.index() < self.ds.users.len() => {
                        tower.features(self.ds.users.get(user))
                    }
                    _ => Vec::new(),
                };
                tower.forward_with(q, &h, &w, &features, cache);
                // cache.a[0] is the zero slot, then the history items, then the features; it is
                // empty when there was neither.
                let n = items.len();
                let attention = items
                    .into_iter()
                    .zip(cache.a.iter().skip(1).copied())
                    .collect();
                let features = features
                    .into_iter()
                    .zip(cache.a.iter().skip(1 + n).copied())
                    .zip(cache.slots.chunks(d))
                    .map(|((f, a), s)| (f.name, a, s.to_vec()))
                    .collect();
                Encoded {
                    vector: cache.out.clone(),
                    attention,
                    features,
                }
            })
            .collect())
    }

    /// Plain query vectors of `texts`, each distinct text encoded once: evaluation sets repeat
    /// queries (Instacart's are its aisles' names), and a MiniLM forward pass is costly. A text's
    /// vector does not depend on the others encoded with it.
    fn plain_queries(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let mut slot: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
        let mut distinct: Vec<&str> = Vec::new();
        let of: Vec<usize> = texts
            .iter()
            .map(|t| {
                *slot.entry(t).or_insert_with(|| {
                    distinct.push(t);
                    distinct.len() - 1
                })
            })
            .collect();
        if distinct.len() == texts.len() {
            return Ok(self.encoder.encode_queries(texts)?);
        }
        let d = self.encoder.dim();
        let vectors = self.encoder.encode_queries(&distinct)?;
        let mut out = Vec::with_capacity(texts.len() * d);
        for i in of {
            out.extend_from_slice(&vectors[i * d..(i + 1) * d]);
        }
        Ok(out)
    }

    /// The products, vectors and weights of the history a request reads.
    fn history_vectors(&self, input: HistoryInput) -> (Vec<ProductId>, Vec<f32>, Vec<f32>) {
        let d = self.encoder.dim();
        match input {
            HistoryInput::None => (Vec::new(), Vec::new(), Vec::new()),
            HistoryInput::User { user, before } => {
                let events = self.histories.before(user, before, self.history_len);
                let mut items = Vec::with_capacity(events.len());
                let mut h = Vec::with_capacity(events.len() * d);
                let mut w = Vec::with_capacity(events.len());
                for &i in events {
                    let e = &self.ds.interactions[i as usize];
                    items.push(e.product);
                    h.extend_from_slice(self.vector(e.product));
                    w.push(kind_weight(e.kind));
                }
                (items, h, w)
            }
            HistoryInput::Inline(all) => {
                let recent = &all[all.len().saturating_sub(self.history_len)..];
                let mut h = Vec::with_capacity(recent.len() * d);
                for (p, _) in recent {
                    h.extend_from_slice(self.vector(*p));
                }
                let w = recent.iter().map(|(_, k)| kind_weight(*k)).collect();
                (recent.iter().map(|(p, _)| *p).collect(), h, w)
            }
        }
    }

    /// The products of `category`'s subtree, as a contiguous run of `by_pre`.
    fn subtree(&self, category: NodeId) -> &[ProductId] {
        let range = self.ds.taxonomy.pre_range(category);
        let lo = self
            .by_pre
            .partition_point(|p| self.pre_of[p.index()] < range.start);
        let hi = self
            .by_pre
            .partition_point(|p| self.pre_of[p.index()] < range.end);
        &self.by_pre[lo..hi]
    }

    /// The dense top `k` for one query vector, within `category` when given.
    fn dense_top(
        &self,
        q: &[f32],
        k: usize,
        category: Option<NodeId>,
    ) -> Result<Vec<(ProductId, f32)>> {
        let Some(c) = category else {
            return self.index.search(q, k);
        };
        let t = &self.ds.taxonomy;
        let catalog = &self.ds.catalog;
        let filter = crate::vector::Filter {
            category: c,
            keep: &|p: ProductId| {
                p.index() < catalog.len() && t.is_ancestor_or_self(c, catalog.get(p).category)
            },
        };
        if self.index.filters_natively() {
            return self.index.search_where(q, k, &filter);
        }
        let products = self.subtree(c);
        if products.len() <= self.exact_filter_max || self.index_kind == "exact" {
            let mut scored: Vec<(ProductId, f32)> = products
                .iter()
                .map(|&p| (p, dot(q, self.vector(p))))
                .collect();
            let k = k.min(scored.len());
            if k == 0 {
                return Ok(Vec::new());
            }
            let by_score = |a: &(ProductId, f32), b: &(ProductId, f32)| {
                b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
            };
            if k < scored.len() {
                scored.select_nth_unstable_by(k - 1, by_score);
                scored.truncate(k);
            }
            scored.sort_by(by_score);
            return Ok(scored);
        }
        self.index.search_where(q, k, &filter)
    }

    /// BM25's top `k`, within `category` when given (filtered inside the BM25 query).
    fn lexical_top(
        &self,
        text: &str,
        k: usize,
        category: Option<NodeId>,
    ) -> Result<Vec<(ProductId, f32)>> {
        let Some(bm25) = &self.bm25 else {
            return Ok(Vec::new());
        };
        let ranks = category.map(|c| self.ds.taxonomy.pre_range(c));
        bm25.search_in(text, k, ranks)
    }

    /// Retrieval, fusion and explanations for one request.
    fn finish(
        &self,
        r: &Request,
        e: &Encoded,
        dense: Option<Vec<(ProductId, f32)>>,
    ) -> Result<Results> {
        let mut hits: Vec<Hit> = match (r.mode, &self.signals, &self.reranker) {
            (Mode::Dense, Some(signals), Some(head)) => {
                let list = match dense {
                    Some(l) => l,
                    None => self.dense_top(&e.vector, r.k.max(FUSION_DEPTH), r.category)?,
                };
                let mut hits: Vec<Hit> = self
                    .candidates(r, e, list, signals)
                    .into_iter()
                    .map(|(product, f)| Hit {
                        product,
                        score: head.score(&f),
                        dense: Some(f[0]),
                        lexical: None,
                        explanation: None,
                    })
                    .collect();
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.product.cmp(&b.product)));
                hits.truncate(r.k);
                hits
            }
            _ => self.score_hits(r, e, dense)?,
        };
        if r.explain {
            let terms = self
                .bm25
                .as_ref()
                .map(|b| b.query_terms(r.text))
                .unwrap_or_default();
            for h in &mut hits {
                h.explanation = Some(self.explain(h.product, &terms, e));
            }
        }
        Ok(Results {
            hits,
            history_used: e.attention.len(),
            features_used: e.features.len(),
        })
    }

    /// Hits of a request without the re-ranking head: the towers' order (with the history term
    /// where it applies), BM25's, or the two fused.
    fn score_hits(
        &self,
        r: &Request,
        e: &Encoded,
        dense: Option<Vec<(ProductId, f32)>>,
    ) -> Result<Vec<Hit>> {
        Ok(match r.mode {
            Mode::Dense if self.boosts(r, e) => {
                let list = match dense {
                    Some(l) => l,
                    None => self.dense_top(&e.vector, r.k.max(FUSION_DEPTH), r.category)?,
                };
                self.boost_with_history(&e.vector, list, e, r.category, r.k)
            }
            Mode::Dense => {
                let list = match dense {
                    Some(l) => l,
                    None => self.dense_top(&e.vector, r.k, r.category)?,
                };
                list.into_iter()
                    .map(|(product, s)| Hit {
                        product,
                        score: s,
                        dense: Some(s),
                        lexical: None,
                        explanation: None,
                    })
                    .collect()
            }
            Mode::Lexical => self
                .lexical_top(r.text, r.k, r.category)?
                .into_iter()
                .map(|(product, s)| Hit {
                    product,
                    score: s,
                    dense: Some(dot(&e.vector, self.vector(product))),
                    lexical: Some(s),
                    explanation: None,
                })
                .collect(),
            Mode::Hybrid(fusion) => {
                let depth = r.k.max(FUSION_DEPTH);
                let dense = self.dense_top(&e.vector, depth, r.category)?;
                let lexical = self.lexical_top(r.text, depth, r.category)?;
                self.fuse(&e.vector, &dense, &lexical, fusion, r.k)
            }
        })
    }

    /// True when `r` is re-ranked by the learned head.
    fn reranks(&self, r: &Request) -> bool {
        r.mode == Mode::Dense && self.signals.is_some() && self.reranker.is_some()
    }

    /// The head's candidates for one request with their features: the dense list, then the
    /// customer's own earlier products and the products chosen before for the same query text
    /// (both within the request's category).
    fn candidates(
        &self,
        r: &Request,
        e: &Encoded,
        dense: Vec<(ProductId, f32)>,
        signals: &Signals,
    ) -> Candidates {
        let past = self.past(r.history);
        let t = &self.ds.taxonomy;
        let inside = |p: ProductId| {
            r.category
                .is_none_or(|c| t.is_ancestor_or_self(c, self.ds.catalog.get(p).category))
        };
        let mut seen: std::collections::HashSet<ProductId> = dense.iter().map(|c| c.0).collect();
        // The exact cosine for every candidate, as the head was fitted: an ANN index's score
        // (an i8 one's above all) is an approximation of it.
        let mut list: Vec<(ProductId, f32)> = dense
            .into_iter()
            .map(|(p, _)| (p, dot(&e.vector, self.vector(p))))
            .collect();
        let chosen = signals
            .chosen_for(r.text)
            .iter()
            .take(QUERY_CANDIDATES)
            .map(|c| c.0);
        for p in past.iter().map(|x| x.product).chain(chosen) {
            if p.index() < self.ds.catalog.len() && inside(p) && seen.insert(p) {
                list.push((p, dot(&e.vector, self.vector(p))));
            }
        }
        let user = match r.history {
            HistoryInput::User { user, .. } => Some(user),
            _ => None,
        };
        let features = signals.features(r.text, &past, user, &list, |p| self.vector(p));
        list.into_iter().map(|c| c.0).zip(features).collect()
    }

    /// The customer's earlier interactions the head reads (the last [`RERANK_HISTORY`]),
    /// oldest first; an inline history's clock is its position.
    fn past(&self, input: HistoryInput) -> Vec<Past> {
        match input {
            HistoryInput::None => Vec::new(),
            HistoryInput::User { user, before } => self
                .histories
                .before(user, before, RERANK_HISTORY)
                .iter()
                .map(|&i| {
                    let e = &self.ds.interactions[i as usize];
                    Past {
                        product: e.product,
                        kind: e.kind,
                        time: e.time,
                    }
                })
                .collect(),
            HistoryInput::Inline(all) => all[all.len().saturating_sub(RERANK_HISTORY)..]
                .iter()
                .enumerate()
                .map(|(i, &(product, kind))| Past {
                    product,
                    kind,
                    time: i as i64,
                })
                .collect(),
        }
    }

    /// True when `r`'s dense scores get the history term.
    fn boosts(&self, r: &Request, e: &Encoded) -> bool {
        self.history_boost > 0.0 && r.mode == Mode::Dense && !e.attention.is_empty()
    }

    /// Rescores the dense list and the customer's own earlier products (those within
    /// `category`) by `q' . p + beta * max_j h_j . p`, and keeps the top `k`. The history term
    /// lets what the customer bought before compete as itself, which one blended query vector
    /// cannot do (ten earlier purchases in an aisle cannot all be nearest to one point). It is
    /// bounded (at most `beta`): a kernel density that grew with the number of purchases,
    /// `ln(1 + sum_j w_j max(0, h_j . p)^8)`, let staples bought twenty times crowd out the
    /// query's own aisle and scored 0.62 on Instacart's validation queries at its best `beta`
    /// against 0.70 for this one; adding `0.1 ln(1 + times p itself was bought)` raised MRR
    /// (0.57 to 0.61) but lowered Recall@10 (0.707 to 0.702), and was left out.
    fn boost_with_history(
        &self,
        q: &[f32],
        dense: Vec<(ProductId, f32)>,
        e: &Encoded,
        category: Option<NodeId>,
        k: usize,
    ) -> Vec<Hit> {
        let t = &self.ds.taxonomy;
        let mut candidates: Vec<ProductId> = dense.iter().map(|(p, _)| *p).collect();
        let mut seen: std::collections::HashSet<ProductId> = candidates.iter().copied().collect();
        for &(p, _) in &e.attention {
            let inside =
                category.is_none_or(|c| t.is_ancestor_or_self(c, self.ds.catalog.get(p).category));
            if inside && seen.insert(p) {
                candidates.push(p);
            }
        }
        let mut hits: Vec<Hit> = candidates
            .into_iter()
            .map(|p| {
                let v = self.vector(p);
                let cosine = dot(q, v);
                let closest = e
                    .attention
                    .iter()
                    .map(|&(h, _)| dot(self.vector(h), v))
                    .fold(f32::NEG_INFINITY, f32::max);
                Hit {
                    product: p,
                    score: cosine + self.history_boost * closest,
                    dense: Some(cosine),
                    lexical: None,
                    explanation: None,
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.product.cmp(&b.product)));
        hits.truncate(k);
        hits
    }

    /// Fuses a dense and a lexical list into the top `k`.
    fn fuse(
        &self,
        q: &[f32],
        dense: &[(ProductId, f32)],
        lexical: &[(ProductId, f32)],
        fusion: HybridFusion,
        k: usize,
    ) -> Vec<Hit> {
        use std::collections::HashMap;
        /// A candidate's place in each list.
        #[derive(Default)]
        struct Seen {
            dense_rank: Option<usize>,
            lexical_rank: Option<usize>,
            bm25: Option<f32>,
        }
        let mut seen: HashMap<ProductId, Seen> =
            HashMap::with_capacity(dense.len() + lexical.len());
        for (rank, (p, _)) in dense.iter().enumerate() {
            seen.entry(*p).or_default().dense_rank = Some(rank);
        }
        for (rank, (p, s)) in lexical.iter().enumerate() {
            let e = seen.entry(*p).or_default();
            e.lexical_rank = Some(rank);
            e.bm25 = Some(*s);
        }
        let max_bm25 = lexical.first().map_or(1.0, |l| l.1.max(f32::MIN_POSITIVE));
        let mut hits: Vec<Hit> = seen
            .into_iter()
            .map(|(product, seen)| {
                let (dr, lr, ls) = (seen.dense_rank, seen.lexical_rank, seen.bm25);
                let cosine = dot(q, self.vector(product));
                let score = match fusion {
                    HybridFusion::Rrf { k } => {
                        let rrf = |r: Option<usize>| r.map_or(0.0, |r| 1.0 / (k + 1.0 + r as f32));
                        rrf(dr) + rrf(lr)
                    }
                    HybridFusion::Weighted { alpha } => {
                        alpha * cosine + (1.0 - alpha) * ls.map_or(0.0, |s| s / max_bm25)
                    }
                };
                Hit {
                    product,
                    score,
                    dense: Some(cosine),
                    lexical: ls,
                    explanation: None,
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.product.cmp(&b.product)));
        hits.truncate(k);
        hits
    }

    /// What raised `p`: the history items' and the customer features' attention-weighted
    /// similarity to it, and the query terms its text contains.
    fn explain(&self, p: ProductId, terms: &[String], e: &Encoded) -> Explanation {
        let v = self.vector(p);
        let mut history: Vec<(ProductId, f32)> = Vec::new();
        // A feature's slot is not unit length: its contribution is attention times its dot
        // product with the hit, kept where that raised the hit.
        let mut customer: Vec<(String, f32)> = e
            .features
            .iter()
            .map(|(name, a, s)| (name.clone(), a * dot(s, v)))
            .filter(|(_, c)| *c > 0.0)
            .collect();
        customer.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(h, a) in &e.attention {
            let similarity = dot(self.vector(h), v);
            if similarity < EXPLAIN_MIN_SIMILARITY {
                continue;
            }
            let c = a * similarity;
            match history.iter_mut().find(|(q, _)| *q == h) {
                Some(e) => e.1 += c,
                None => history.push((h, c)),
            }
        }
        history.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        history.truncate(EXPLAIN_HISTORY);
        let lexical_matches = match (&self.bm25, terms.is_empty()) {
            (Some(bm25), false) => {
                let product = self.ds.catalog.get(p);
                let t = &self.ds.taxonomy;
                // The fields in the order the index weighs them, up to the part explained.
                let mut text = String::new();
                let mut add = |part: &str| {
                    if text.len() < crate::lexical::MAX_EXPLAINED_BYTES {
                        text.push_str(part);
                        text.push(' ');
                    }
                };
                add(&product.title);
                add(&product.brand);
                for n in t.path(product.category) {
                    add(t.name(n));
                }
                for (_, value) in &product.attributes {
                    add(value);
                }
                add(&product.description);
                bm25.matching_terms(&text, terms)
            }
            _ => Vec::new(),
        };
        Explanation {
            history,
            customer,
            lexical_matches,
        }
    }
}

/// Checks that an index opened rather than built holds this catalog's vectors: as many as there
/// are products, and a few products, searched with their own vector, find themselves at
/// similarity about 1. Returns what is wrong, `None` when nothing is.
fn index_misses(index: &dyn VectorIndex, vectors: &[f32], d: usize) -> Result<Option<String>> {
    let n = vectors.len() / d;
    if index.len() != n {
        return Ok(Some(format!(
            "it holds {} vectors, the catalog has {n} products",
            index.len()
        )));
    }
    let probes: Vec<usize> = (0..8.min(n)).map(|i| i * n / 8.min(n).max(1)).collect();
    let mut found = 0;
    for &p in &probes {
        let q = &vectors[p * d..(p + 1) * d];
        if let Some((id, s)) = index.search(q, 1)?.first() {
            if id.index() == p || *s > 0.999 {
                found += 1;
            }
        }
    }
    if found * 4 < probes.len() * 3 {
        return Ok(Some(format!(
            "only {found} of {} products found themselves: it was built with another model or \
             catalog",
            probes.len()
        )));
    }
    Ok(None)
}

fn check_history_boost(beta: f32) -> Result<()> {
    if !beta.is_finite() || beta < 0.0 {
        return Err(SearchError::InvalidArgument(format!(
            "history boost must be a finite number >= 0, got {beta}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
