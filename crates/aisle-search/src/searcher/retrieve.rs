//! The candidate lists a request starts from: the dense top-k from the vector index (batched
//! over many requests when they allow it; restricted to a taxonomy subtree by an exact scan of
//! the subtree's own products or by a filtered index search) and BM25's top-k, and how deep
//! they go when something re-scores them ([`FUSION_DEPTH`]).

use aisle_core::{NodeId, ProductId};

use crate::error::Result;
use crate::vector::dot;

use super::encode::Encoded;
use super::options::{Mode, Request};
use super::state::Searcher;

/// Candidates each side contributes to a hybrid fusion, at least (more when `k` is larger).
pub(super) const FUSION_DEPTH: usize = 100;

/// A dense top-k list: products and their cosines, best first.
pub(super) type DenseList = Vec<(ProductId, f32)>;

impl Searcher {
    /// The dense top `depth(r, e)` of every request through the index's batch search (one
    /// matrix product per block of queries on an exact index, about 5x faster than one scan
    /// each) when every request is an unfiltered dense one at the same depth; otherwise `None`
    /// for each, and each request searches on its own.
    pub(super) fn batch_dense(
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

    /// The products of `category`'s subtree, as a contiguous run of `by_pre`.
    pub(super) fn subtree(&self, category: NodeId) -> &[ProductId] {
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
    pub(super) fn dense_top(
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
    pub(super) fn lexical_top(
        &self,
        text: &str,
        k: usize,
        category: Option<NodeId>,
    ) -> Result<Vec<(ProductId, f32)>> {
        let Some(bm25) = &self.bm25 else {
            return Ok(Vec::new());
        };
        // In the vector engine when it holds this BM25 (a Qdrant collection), so that lexical
        // and hybrid searches scale out with the vectors.
        if let Some(hits) = self.index.lexical_where(bm25, text, k, category) {
            return hits;
        }
        let ranks = category.map(|c| self.ds.taxonomy.pre_range(c));
        bm25.search_in(text, k, ranks)
    }
}
