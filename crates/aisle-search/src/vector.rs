//! Vector retrieval: the [`VectorIndex`] trait and its implementations, [`ExactIndex`] (brute
//! force, the ground truth) and [`HnswIndex`] (an HNSW graph usearch builds; aisle walks an `f32`
//! graph from its own flat copy, `flat`).
//!
//! Vectors are rows of `dim` `f32`s, L2-normalised by whoever produced them (the towers), so the
//! inner product is the cosine similarity. Results are `(ProductId, similarity)`, most similar
//! first.

mod exact;
mod flat;
mod graph_check;
mod hnsw;

pub use exact::{dot, ExactIndex};
pub(crate) use hnsw::insertion_order;
pub use hnsw::{
    HnswIndex, HnswParams, IndexStamp, Quantization, Walker, INDEX_FORMAT, INDEX_MAGIC,
};

use aisle_core::{NodeId, ProductId};

use crate::error::{Result, SearchError};

/// A set of product vectors that answers top-k inner-product queries.
///
/// Implementations are immutable once built and answer queries from many threads at once. Every
/// implementation promises:
/// - `search` returns at most `k` hits (fewer only when the index holds fewer products, or an
///   approximate index found fewer), sorted by decreasing similarity, each product at most once;
/// - a query whose length is not [`dim`](Self::dim) is an error, never a panic.
pub trait VectorIndex: Send + Sync {
    /// Length of every vector.
    fn dim(&self) -> usize;

    /// Number of vectors held.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index holds in memory (vectors and graph), for cost reports.
    fn memory_bytes(&self) -> usize;

    /// Sets how hard an approximate index searches (HNSW's candidate list, `ef`), trading speed
    /// for recall; safe while other threads search. Exact indexes ignore it.
    fn set_search_effort(&self, _effort: usize) {}

    /// The `k` products most similar to `query` (inner product), best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(ProductId, f32)>>;

    /// Like [`search`](Self::search), over only the products of a taxonomy subtree. An
    /// approximate index may return fewer than `k` hits when the filter is very selective.
    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(ProductId, f32)>>;

    /// Where the vectors live, for operators (a remote engine's nodes and collection); `None`
    /// for an index in this process.
    fn source(&self) -> Option<String> {
        None
    }

    /// The HNSW index this is, if it is one (benchmarks measure its walkers on one graph).
    fn as_hnsw(&self) -> Option<&HnswIndex> {
        None
    }

    /// True when the index filters inside its own engine and gains nothing from the Searcher's
    /// exact scan of a small subtree (a remote engine: Qdrant's payload filter).
    fn filters_natively(&self) -> bool {
        false
    }

    /// Whether the index's engine holds the products' text as BM25 sparse vectors written as
    /// `bm25` writes them (a Qdrant collection, [`crate::lexical::SparseBm25`]), so that
    /// [`lexical_where`](Self::lexical_where) answers.
    fn holds_lexical(&self, _bm25: &crate::lexical::Bm25Index) -> bool {
        false
    }

    /// BM25 inside the index's engine, when it [holds](Self::holds_lexical) it: the top `k` for
    /// `query` as `bm25` ranks them, within `category` when given. `None` when it does not, and
    /// BM25 runs in this process.
    fn lexical_where(
        &self,
        _bm25: &crate::lexical::Bm25Index,
        _query: &str,
        _k: usize,
        _category: Option<NodeId>,
    ) -> Option<Result<Vec<(ProductId, f32)>>> {
        None
    }

    /// [`search`](Self::search) for every `dim`-long row of `queries`, results in row order;
    /// by default in parallel, one search per row. Callers check that `queries` is whole rows.
    fn search_many(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(ProductId, f32)>>> {
        use rayon::prelude::*;
        queries
            .par_chunks_exact(self.dim())
            .map(|q| self.search(q, k))
            .collect()
    }
}

/// A taxonomy filter: the products whose category is `category` or lies below it.
///
/// An index that holds only vectors asks `keep` per product; an engine that stores each
/// product's ancestor ids (Qdrant) filters on `category` itself.
pub struct Filter<'a> {
    pub category: NodeId,
    pub keep: &'a (dyn Fn(ProductId) -> bool + Sync),
}

/// Checks that `query` has length `dim` and only finite values.
pub(crate) fn check_query(query: &[f32], dim: usize) -> Result<()> {
    if query.len() != dim {
        return Err(SearchError::DimensionMismatch {
            expected: dim,
            actual: query.len(),
            path: None,
        });
    }
    if let Some(i) = query.iter().position(|x| !x.is_finite()) {
        return Err(SearchError::InvalidArgument(format!(
            "query value {i} is {} (vectors must be finite)",
            query[i]
        )));
    }
    Ok(())
}

/// Checks that `rows` is a whole number of finite `dim`-long vectors; returns how many.
pub(crate) fn check_rows(rows: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(SearchError::InvalidArgument(
            "vector dimension must be at least 1".into(),
        ));
    }
    if !rows.len().is_multiple_of(dim) {
        return Err(SearchError::InvalidArgument(format!(
            "{} values are not a whole number of {dim}-dimensional rows",
            rows.len()
        )));
    }
    if let Some(i) = rows.iter().position(|x| !x.is_finite()) {
        return Err(SearchError::InvalidArgument(format!(
            "row {} holds a non-finite value ({}) at column {}",
            i / dim,
            rows[i],
            i % dim
        )));
    }
    Ok(rows.len() / dim)
}

/// Checks that `ids` has one entry per row and names each product at most once.
pub(crate) fn check_ids(ids: &[ProductId], rows: usize) -> Result<()> {
    if ids.len() != rows {
        return Err(SearchError::InvalidArgument(format!(
            "{rows} rows but {} product ids",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(SearchError::InvalidArgument(format!(
            "product {} appears twice",
            dup.0
        )));
    }
    Ok(())
}

/// Searches every `dim`-long row of `queries` ([`VectorIndex::search_many`]); results in row order.
pub fn search_batch(
    index: &dyn VectorIndex,
    queries: &[f32],
    k: usize,
) -> Result<Vec<Vec<(ProductId, f32)>>> {
    check_rows(queries, index.dim())?;
    index.search_many(queries, k)
}

/// Mean Recall@k of an approximate index against the exact one: for each query (a `dim`-long row
/// of `queries`), the share of the exact top-k that the approximate top-k matches.
///
/// Ties count: a returned product outside the exact top-k still matches when its exact
/// similarity is at least the exact k-th one (within 1e-5). Catalogs hold products with the same
/// text, hence the same vector, and which of several equal products fills the last places is
/// arbitrary; counting only ids would charge the index for it.
///
/// This is the figure behind `aisle index --check`. Queries run in parallel. Returns 1.0 for an
/// empty index or an empty query set (nothing can be missed).
pub fn recall_at_k(
    ann: &dyn VectorIndex,
    exact: &ExactIndex,
    queries: &[f32],
    k: usize,
) -> Result<f64> {
    ann_quality(ann, exact, queries, k).map(|q| q.recall)
}

/// How close an approximate top-k comes to the exact one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnQuality {
    /// [`recall_at_k`].
    pub recall: f64,
    /// Mean over queries of the exact k-th similarity minus the approximate k-th similarity:
    /// how much worse the last result shown is. Near 0 with a low recall means the misses are
    /// near-ties (many products about equally close), not far-off results.
    pub kth_gap: f64,
}

/// [`recall_at_k`] and the k-th similarity gap ([`AnnQuality`]).
pub fn ann_quality(
    ann: &dyn VectorIndex,
    exact: &ExactIndex,
    queries: &[f32],
    k: usize,
) -> Result<AnnQuality> {
    if ann.dim() != exact.dim() {
        return Err(SearchError::DimensionMismatch {
            expected: exact.dim(),
            actual: ann.dim(),
            path: None,
        });
    }
    let d = exact.dim();
    let truth = search_batch(exact, queries, k)?;
    let found = search_batch(ann, queries, k)?;
    let row_of: std::collections::HashMap<ProductId, usize> = exact
        .ids()
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i))
        .collect();
    let mut sum = 0.0;
    let mut gap = 0.0;
    let mut counted = 0usize;
    for ((t, f), q) in truth.iter().zip(&found).zip(queries.chunks_exact(d)) {
        let Some(&(_, kth)) = t.last() else {
            continue;
        };
        // A short approximate list counts its missing places at similarity -1.
        let found_kth = if f.len() >= t.len() {
            f.get(t.len() - 1).map_or(-1.0, |h| h.1)
        } else {
            -1.0
        };
        gap += f64::from(kth - found_kth);
        let hits = f
            .iter()
            .filter(|(p, _)| {
                t.iter().any(|(q, _)| q == p)
                    || row_of
                        .get(p)
                        .and_then(|&r| exact.row(r))
                        .is_some_and(|v| dot(q, v) >= kth - 1e-5)
            })
            .count()
            .min(t.len());
        sum += hits as f64 / t.len() as f64;
        counted += 1;
    }
    Ok(if counted == 0 {
        AnnQuality {
            recall: 1.0,
            kth_gap: 0.0,
        }
    } else {
        AnnQuality {
            recall: sum / counted as f64,
            kth_gap: gap / counted as f64,
        }
    })
}

/// Test and benchmark data: vectors near a low-rank subspace, as real embeddings are.
///
/// Each row is `latent (rank) x projection (rank x dim) + noise`, L2-normalised. Random unit
/// vectors in high dimension are nearly equidistant, which makes every HNSW look bad; real
/// embeddings are not like that.
#[doc(hidden)]
pub mod testdata {
    use aisle_core::rng::Rng;

    /// `n` rows of `dim` values, flattened.
    pub fn low_rank(n: usize, dim: usize, rank: usize, noise: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let projection: Vec<f32> = (0..rank * dim).map(|_| rng.normal() as f32).collect();
        let mut rows = vec![0f32; n * dim];
        let mut latent = vec![0f32; rank];
        for row in rows.chunks_exact_mut(dim) {
            for z in latent.iter_mut() {
                *z = rng.normal() as f32;
            }
            for (j, x) in row.iter_mut().enumerate() {
                let mut v = noise * rng.normal() as f32;
                for (r, z) in latent.iter().enumerate() {
                    v += z * projection[r * dim + j];
                }
                *x = v;
            }
            normalize(row);
        }
        rows
    }

    /// Scales `v` to unit L2 norm (leaves a zero vector alone).
    pub fn normalize(v: &mut [f32]) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_and_query_checks() {
        assert!(check_rows(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(check_rows(&[1.0, f32::NAN], 2).is_err());
        assert!(check_rows(&[], 0).is_err());
        assert_eq!(check_rows(&[], 3).expect("empty is fine"), 0);
        assert_eq!(check_rows(&[0.0; 6], 3).expect("two rows"), 2);
        let err = check_query(&[1.0], 2).expect_err("short query");
        assert!(err.to_string().contains("expected 2, got 1"), "{err}");
        assert!(check_query(&[1.0, f32::INFINITY], 2).is_err());
    }

    #[test]
    fn recall_counts_ties_with_the_kth_exact_score() {
        // Rows 0 and 1 are the same vector; the exact top-1 of the query is row 0 (smaller id),
        // an index returning row 1 is as right. Row 2 is worse and is a miss.
        let rows = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let exact = ExactIndex::new(2, rows.clone()).expect("builds");
        let twin = ExactIndex::with_ids(
            2,
            vec![1.0, 0.0, 0.0, 1.0],
            vec![ProductId(1), ProductId(2)],
        )
        .expect("builds");
        let q = [1.0, 0.0];
        assert_eq!(recall_at_k(&twin, &exact, &q, 1).expect("recall"), 1.0);
        let worse = ExactIndex::with_ids(2, vec![0.0, 1.0], vec![ProductId(2)]).expect("builds");
        assert_eq!(recall_at_k(&worse, &exact, &q, 1).expect("recall"), 0.0);
    }

    #[test]
    fn recall_of_exact_against_itself_is_one() {
        let rows = testdata::low_rank(300, 16, 4, 0.05, 1);
        let exact = ExactIndex::new(16, rows.clone()).expect("builds");
        let r = recall_at_k(&exact, &exact, &rows[..16 * 20], 10).expect("recall");
        assert_eq!(r, 1.0);
    }
}
