//! Validation during training: Recall@K of the current model on a seeded sample of the split's
//! validation queries, by exact search over the whole catalog. (The full evaluation, with
//! segments, intervals and baselines, belongs to aisle-eval.)

use aisle_core::rng::Rng;
use aisle_core::{Dataset, EvalQuery, Histories, ProductId, UserId};
use aisle_model::personal::Personalizer;
use aisle_model::{FeatureRows, Model, Side};
use aisle_search::vector::{search_batch, ExactIndex};

use crate::error::Result;

/// Validation queries as text, with their relevant products (sorted).
#[derive(Clone, Debug, Default)]
pub struct ValidationSet {
    pub texts: Vec<String>,
    pub relevant: Vec<Vec<ProductId>>,
    /// Who asked, and the history cut-off, for the personalized tower.
    pub users: Vec<Option<UserId>>,
    pub before: Vec<i64>,
}

impl ValidationSet {
    /// At most `limit` queries of `queries`, a sample fixed by `seed`.
    pub fn new(ds: &Dataset, queries: &[EvalQuery], limit: usize, seed: u64) -> ValidationSet {
        let mut order: Vec<usize> = (0..queries.len()).collect();
        if queries.len() > limit {
            Rng::new(seed ^ 0x7A11_DA7E).shuffle(&mut order);
            order.truncate(limit);
            order.sort_unstable();
        }
        let mut set = ValidationSet::default();
        for i in order {
            let q = &queries[i];
            set.texts.push(ds.queries.text(q.query).to_owned());
            set.users.push(q.user);
            set.before.push(q.before);
            let mut rel: Vec<ProductId> =
                q.relevant.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
            rel.sort_unstable();
            set.relevant.push(rel);
        }
        set
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Customers' histories for a personalized model: the dataset, the training histories and how
/// many earlier interactions to read.
pub type PersonalCtx<'a> = (&'a Dataset, &'a Histories, usize);

/// Mean over queries of |relevant in top k| / |relevant|. With `personal` and a model that has a
/// personalized tower, each query is read with its customer's history before its cut-off.
pub fn recall_at_k(
    model: &Model,
    product_rows: &FeatureRows,
    set: &ValidationSet,
    k: usize,
    personal: Option<PersonalCtx>,
) -> Result<f64> {
    if set.is_empty() {
        return Ok(0.0);
    }
    let products = model.encode_rows(Side::Product, product_rows);
    let rows = FeatureRows::build(&model.featurizer, &set.texts);
    let queries = model.encode_rows(Side::Query, &rows);
    let tower = model.personal.as_ref().zip(personal);
    recall_of_vectors(model.dim(), products, queries, set, k, tower)
}

/// [`recall_at_k`] over vectors already encoded: `products` (`len x d`, catalog order) and the
/// set's `queries` (`set.len() x d`, in order), each query read by the personalized `tower` with
/// its customer's history first when one is given.
pub fn recall_of_vectors(
    d: usize,
    products: Vec<f32>,
    mut queries: Vec<f32>,
    set: &ValidationSet,
    k: usize,
    tower: Option<(&Personalizer, PersonalCtx)>,
) -> Result<f64> {
    if set.is_empty() {
        return Ok(0.0);
    }
    if let Some((tower, (ds, histories, n))) = tower {
        tower.personalize_rows(
            &mut queries,
            &products,
            &ds.interactions,
            &ds.users,
            histories,
            n,
            |i| (set.users[i], set.before[i]),
        );
    }
    let index = ExactIndex::new(d, products)?;
    let hits = search_batch(&index, &queries, k)?;
    let mut sum = 0.0;
    for (found, rel) in hits.iter().zip(&set.relevant) {
        if rel.is_empty() {
            continue;
        }
        let n = found
            .iter()
            .filter(|(p, _)| rel.binary_search(p).is_ok())
            .count();
        sum += n as f64 / rel.len() as f64;
    }
    Ok(sum / set.len() as f64)
}
