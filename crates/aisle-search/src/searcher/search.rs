//! A search from end to end: requests checked, their queries encoded together, the dense lists
//! searched in one batch where they can be, then for each request its hits (re-ranked by the
//! learned head, boosted by the history term, lexical, or fused) and their explanations.

use rayon::prelude::*;

use aisle_core::ProductId;

use crate::error::Result;
use crate::vector::dot;

use super::encode::Encoded;
use super::options::{Mode, Request};
use super::results::{Hit, Results};
use super::retrieve::FUSION_DEPTH;
use super::state::Searcher;

impl Searcher {
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
}
