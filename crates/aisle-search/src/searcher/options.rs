//! What a Searcher is built with and what one request asks: [`SearcherOptions`] and the vector
//! index it builds or opens ([`IndexChoice`]), and a [`Request`] with its retrieval [`Mode`]
//! (dense, lexical, or both fused by a [`HybridFusion`]), its [`HistoryInput`] and the most hits
//! it may ask for ([`MAX_K`]). Plain data: nothing here searches.

use serde::{Deserialize, Serialize};

use aisle_core::{Kind, NodeId, ProductId, User, UserId};

use crate::lexical::FieldBoosts;
use crate::vector::HnswParams;

/// The most hits one request may ask for.
pub const MAX_K: usize = 1000;

/// A taxonomy filter keeping at most this many products is searched exactly over the subtree's
/// own rows (a contiguous slice, see [`Searcher`](super::Searcher)'s `by_pre`) instead of by a
/// filtered graph walk, which may run out of neighbours when few nodes pass.
pub(super) const EXACT_FILTER_MAX: usize = 20_000;

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
    /// Fill each hit's [`Explanation`](super::Explanation).
    pub explain: bool,
    /// Customer features sent with the request (a segment, other `users` columns), read by a
    /// personalized tower that has customer features, in place of a stored customer's: a
    /// visitor the store has no record of, or an inline history, can be personalized too.
    /// `None` reads the stored customer's features when `history` names one.
    pub customer: Option<&'a User>,
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
            customer: None,
        }
    }
}
