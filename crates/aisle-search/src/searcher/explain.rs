//! Why a hit is where it is ([`Explanation`]): the history items and customer features whose
//! attention-weighted similarity raised it, and the query terms its text contains.

use aisle_core::ProductId;

use crate::vector::dot;

use super::encode::Encoded;
use super::results::Explanation;
use super::state::Searcher;

/// History items named in a hit's explanation, at most.
const EXPLAIN_HISTORY: usize = 3;

/// A history item explains a hit only when it is itself close to it: attention spread thinly
/// over unrelated items moves every score a little, and explains none of them.
const EXPLAIN_MIN_SIMILARITY: f32 = 0.5;

impl Searcher {
    /// What raised `p`: the history items' and the customer features' attention-weighted
    /// similarity to it, and the query terms its text contains.
    pub(super) fn explain(&self, p: ProductId, terms: &[String], e: &Encoded) -> Explanation {
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
