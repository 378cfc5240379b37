//! The [`Searcher`] type: what one holds (the encoder, the catalog's vectors in a vector index,
//! BM25, the customers' histories, the re-ranking signals and head), how it is built (an index
//! opened rather than built is checked against the catalog's vectors), its accessors and
//! query-time settings (the history term's `beta`, the re-ranking head), and the check of a
//! request against what it holds. The search itself is in the sibling files.

use std::sync::Arc;

use aisle_core::{Dataset, Histories, ProductId};
use aisle_model::{Encoder, IntoEncoder};

use crate::error::{Result, SearchError};
use crate::lexical::Bm25Index;
use crate::rerank::{Reranker, Signals};
use crate::vector::{ExactIndex, HnswIndex, IndexStamp, VectorIndex};

use super::options::{HistoryInput, IndexChoice, Mode, Request, SearcherOptions, MAX_K};

/// A trained encoder (the n-gram towers or MiniLM, with a personalized tower when it has one),
/// its product vectors in a vector index, BM25 over the same catalog, and the customers'
/// histories. Immutable: answers `&self` requests from many threads; a new model or
/// index means a new Searcher (the server swaps whole Searchers).
pub struct Searcher {
    pub(super) ds: Arc<Dataset>,
    /// Shared: Searchers over one model (an evaluation's rows of one model file) hold one copy
    /// of its weights (for the default n-gram model an embedding table of 2^20 x 128 f32,
    /// 512 MiB), not one each.
    pub(super) encoder: Arc<dyn Encoder>,
    /// Product vectors, row `p` for `ProductId(p)`.
    pub(super) vectors: Vec<f32>,
    pub(super) index: Box<dyn VectorIndex>,
    pub(super) bm25: Option<Bm25Index>,
    pub(super) histories: Histories,
    pub(super) history_len: usize,
    pub(super) history_boost: f32,
    /// What the learned re-ranking head reads, and the head; see [`crate::rerank`].
    pub(super) signals: Option<Arc<Signals>>,
    pub(super) reranker: Option<Reranker>,
    pub(super) exact_filter_max: usize,
    /// Products sorted by the pre-order rank of their category: a subtree's products are one
    /// contiguous run, found by two binary searches.
    pub(super) by_pre: Vec<ProductId>,
    pub(super) pre_of: Vec<u32>,
    pub(super) index_kind: &'static str,
    /// Facts every answer of this Searcher must carry (e.g. that its model was trained on
    /// another dataset).
    pub(super) notes: Vec<String>,
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

    pub fn has_lexical(&self) -> bool {
        self.bm25.is_some()
    }

    /// True when lexical and hybrid searches run BM25 in the vector index's engine (a Qdrant
    /// collection holding this BM25 as sparse vectors), not in this process.
    pub fn lexical_in_engine(&self) -> bool {
        self.bm25
            .as_ref()
            .is_some_and(|b| self.index.holds_lexical(b))
    }

    /// The product vector of `p` (unit length).
    pub fn vector(&self, p: ProductId) -> &[f32] {
        let d = self.encoder.dim();
        &self.vectors[p.index() * d..(p.index() + 1) * d]
    }

    /// Checks what a request asks for before any work.
    pub(super) fn check(&self, r: &Request) -> Result<()> {
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
