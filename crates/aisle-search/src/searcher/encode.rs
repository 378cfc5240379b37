//! The query side of a request: plain query vectors (each distinct text encoded once), the
//! history a request reads (a stored customer's or one given inline), and personalization by the
//! model's personalized tower, kept with its attention for the explanations ([`Encoded`]).

use std::collections::HashMap;

use rayon::prelude::*;

use aisle_core::ProductId;
use aisle_model::personal::{kind_weight, PersonalCache};

use crate::error::Result;

use super::options::{HistoryInput, Request};
use super::state::Searcher;

/// The query side of a request after the towers: its vector and what personalization did.
pub(super) struct Encoded {
    pub(super) vector: Vec<f32>,
    /// `(product, attention)` of each history item read.
    pub(super) attention: Vec<(ProductId, f32)>,
    /// `(feature, attention, slot vector)` of each customer feature read.
    pub(super) features: Vec<(String, f32, Vec<f32>)>,
}

impl Searcher {
    /// Query vectors for every request, personalized where a history is given or stored.
    pub(super) fn encode(&self, requests: &[Request], texts: &[&str]) -> Result<Vec<Encoded>> {
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
                let features = match (r.customer, r.history) {
                    (Some(given), _) => tower.features(given),
                    (None, HistoryInput::User { user, .. })
                        if user.index() < self.ds.users.len() =>
                    {
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
}
