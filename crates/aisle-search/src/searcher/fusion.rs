//! Hybrid search: a dense and a BM25 list fused into one by a [`HybridFusion`] (reciprocal rank
//! fusion or a weighted sum of the cosine and the normalised BM25 score).

use aisle_core::ProductId;

use crate::vector::dot;

use super::options::HybridFusion;
use super::results::Hit;
use super::state::Searcher;

impl Searcher {
    /// Fuses a dense and a lexical list into the top `k`.
    pub(super) fn fuse(
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
}
