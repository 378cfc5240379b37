//! The history term of a dense score: `q' . p + beta * max_j h_j . p` over the dense list and
//! the customer's own earlier products, for requests with a history when `beta` is above 0.

use aisle_core::{NodeId, ProductId};

use crate::vector::dot;

use super::encode::Encoded;
use super::options::{Mode, Request};
use super::results::Hit;
use super::state::Searcher;

impl Searcher {
    /// True when `r`'s dense scores get the history term.
    pub(super) fn boosts(&self, r: &Request, e: &Encoded) -> bool {
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
    pub(super) fn boost_with_history(
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
}
