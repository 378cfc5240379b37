//! The learned re-ranking head's side of a dense request: its candidates (the dense list, the
//! customer's own earlier products, the products chosen before for the same query text) with
//! their features ([`Candidates`], what [`crate::rerank::fit`] learns from), and the customer's
//! past the head reads ([`RERANK_HISTORY`]).

use rayon::prelude::*;

use aisle_core::ProductId;

use crate::error::{Result, SearchError};
use crate::rerank::{Past, Signals, FEATURES, QUERY_CANDIDATES};
use crate::vector::dot;

use super::encode::Encoded;
use super::options::{HistoryInput, Mode, Request};
use super::retrieve::FUSION_DEPTH;
use super::state::Searcher;

/// Earlier interactions the re-ranking head reads per request.
pub const RERANK_HISTORY: usize = 1000;

/// A request's re-ranking candidates with their features ([`Searcher::candidate_features`]).
pub type Candidates = Vec<(ProductId, [f32; FEATURES])>;

impl Searcher {
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

    /// True when `r` is re-ranked by the learned head.
    pub(super) fn reranks(&self, r: &Request) -> bool {
        r.mode == Mode::Dense && self.signals.is_some() && self.reranker.is_some()
    }

    /// The head's candidates for one request with their features: the dense list, then the
    /// customer's own earlier products and the products chosen before for the same query text
    /// (both within the request's category).
    pub(super) fn candidates(
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
}
