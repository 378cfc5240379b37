//! What an evaluation ranks with: the baselines (BM25, popularity, query-log memorisation) and a
//! trained dense model, behind one trait.

use std::collections::HashMap;

use aisle_core::{Dataset, ProductId, Split, UserId};
use aisle_model::{FeatureRows, Model, Side};
use aisle_search::lexical::{Bm25Index, FieldBoosts};
use aisle_search::vector::{search_batch, ExactIndex};
use aisle_train::data::QuerySource;

use crate::error::Result;

/// One query to rank for.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    /// Normalised query text.
    pub text: &'a str,
    pub user: Option<UserId>,
}

/// A retrieval system under evaluation.
pub trait Ranker: Sync {
    /// The row name in reports.
    fn name(&self) -> String;

    /// The top `depth` products for each case, best first, in case order. Batched so that a
    /// dense model encodes its queries together.
    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>>;
}

/// Products by number of training interactions, most first (ties by id).
pub fn popularity_order(ds: &Dataset, split: &Split) -> Vec<ProductId> {
    let mut count = vec![0u32; ds.catalog.len()];
    for &i in &split.train {
        count[ds.interactions[i as usize].product.index()] += 1;
    }
    let mut order: Vec<ProductId> = ds.catalog.iter().map(|(id, _)| id).collect();
    order.sort_by(|a, b| count[b.index()].cmp(&count[a.index()]).then(a.cmp(b)));
    order
}

/// The same list for every query: the most interacted-with products of the training part.
pub struct PopularityRanker {
    order: Vec<ProductId>,
}

impl PopularityRanker {
    pub fn new(ds: &Dataset, split: &Split) -> Self {
        PopularityRanker {
            order: popularity_order(ds, split),
        }
    }
}

impl Ranker for PopularityRanker {
    fn name(&self) -> String {
        "popularity".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let top: Vec<ProductId> = self.order.iter().take(depth).copied().collect();
        Ok(cases.iter().map(|_| top.clone()).collect())
    }
}

/// Query-log memorisation: the products most often chosen for the same normalised query in
/// training (clicked, carted or bought after it; for purchase histories, bought under the
/// category the query names), then popularity for the rest of the list.
pub struct MemorisationRanker {
    by_query: HashMap<String, Vec<ProductId>>,
    popularity: Vec<ProductId>,
}

impl MemorisationRanker {
    pub fn new(ds: &Dataset, split: &Split) -> Self {
        let source = QuerySource::of(ds);
        let mut counts: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if let Some(text) = source.query_text(ds, e) {
                *counts
                    .entry(text)
                    .or_default()
                    .entry(e.product)
                    .or_default() += 1;
            }
        }
        let by_query = counts
            .into_iter()
            .map(|(q, c)| {
                let mut ps: Vec<(ProductId, u32)> = c.into_iter().collect();
                ps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (q, ps.into_iter().map(|(p, _)| p).collect())
            })
            .collect();
        MemorisationRanker {
            by_query,
            popularity: popularity_order(ds, split),
        }
    }

    /// True when the query occurs in training.
    pub fn knows(&self, text: &str) -> bool {
        self.by_query.contains_key(text)
    }
}

impl Ranker for MemorisationRanker {
    fn name(&self) -> String {
        "query memorisation".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        Ok(cases
            .iter()
            .map(|c| {
                let seen = self.by_query.get(c.text).map(Vec::as_slice).unwrap_or(&[]);
                let mut out: Vec<ProductId> = seen.iter().take(depth).copied().collect();
                for &p in &self.popularity {
                    if out.len() >= depth {
                        break;
                    }
                    if !seen.contains(&p) {
                        out.push(p);
                    }
                }
                out
            })
            .collect())
    }
}

/// BM25 over product text (tantivy), the lexical baseline.
pub struct Bm25Ranker {
    index: Bm25Index,
}

impl Bm25Ranker {
    pub fn new(ds: &Dataset) -> Result<Self> {
        Ok(Bm25Ranker {
            index: Bm25Index::build(&ds.catalog, &ds.taxonomy, &FieldBoosts::default())?,
        })
    }
}

impl Ranker for Bm25Ranker {
    fn name(&self) -> String {
        "BM25".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let texts: Vec<&str> = cases.iter().map(|c| c.text).collect();
        Ok(self
            .index
            .search_many(&texts, depth)?
            .into_iter()
            .map(|hits| hits.into_iter().map(|(p, _)| p).collect())
            .collect())
    }
}

/// A trained two-tower model over the whole catalog, searched exactly (the ANN's recall cost is
/// measured by the search crate, not mixed into model quality here).
pub struct DenseRanker {
    name: String,
    model: Model,
    index: ExactIndex,
}

impl DenseRanker {
    pub fn new(name: impl Into<String>, model: Model, ds: &Dataset) -> Result<Self> {
        let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
        let index = ExactIndex::new(model.dim(), vectors)?;
        Ok(DenseRanker {
            name: name.into(),
            model,
            index,
        })
    }
}

impl Ranker for DenseRanker {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let texts: Vec<&str> = cases.iter().map(|c| c.text).collect();
        let rows = FeatureRows::build(&self.model.featurizer, &texts);
        let queries = self.model.encode_rows(Side::Query, &rows);
        Ok(search_batch(&self.index, &queries, depth)?
            .into_iter()
            .map(|hits| hits.into_iter().map(|(p, _)| p).collect())
            .collect())
    }
}
