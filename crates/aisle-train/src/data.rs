//! Training data: (query, product) pairs of a split, featurized once, with the positive sets that
//! keep samplers from drawing false negatives.

use std::collections::HashMap;

// QuerySource, where the training queries come from, lives in aisle-core beside the split: what
// trains and what `aisle dataset stats` and the evaluation call a seen query are one thing.
use aisle_core::split::QuerySource;
use aisle_core::{Dataset, ProductId, Split, UserId};
use aisle_model::{FeatureRows, FeaturizerConfig, Model, ModelConfig};

/// One training pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Index into [`TrainData::queries`].
    pub query: u32,
    pub product: ProductId,
    pub user: Option<UserId>,
    /// The interaction it came from.
    pub event: u32,
}

/// Everything a training run reads, built once per run.
#[derive(Clone, Debug)]
pub struct TrainData {
    /// Distinct normalised training query texts.
    pub queries: Vec<String>,
    pub query_index: HashMap<String, u32>,
    pub pairs: Vec<Pair>,
    /// Per query, the sorted products relevant to it (training events and positive judgments).
    pub positives: Vec<Vec<ProductId>>,
    pub query_rows: FeatureRows,
    pub product_rows: FeatureRows,
    /// Training interactions per product (popularity).
    pub popularity: Vec<u32>,
    pub source: QuerySource,
}

impl TrainData {
    /// Pairs from the training part of `split`: every click, add-to-cart or purchase after a
    /// query; when the dataset has no queries at all, every purchase with its category's name as
    /// the query.
    pub fn build(ds: &Dataset, split: &Split, model: &Model) -> TrainData {
        let source = QuerySource::of(ds);
        let mut queries: Vec<String> = Vec::new();
        let mut query_index: HashMap<String, u32> = HashMap::new();
        let mut intern = |text: String| -> u32 {
            if let Some(&q) = query_index.get(&text) {
                return q;
            }
            let q = queries.len() as u32;
            query_index.insert(text.clone(), q);
            queries.push(text);
            q
        };
        let mut pairs = Vec::new();
        let mut popularity = vec![0u32; ds.catalog.len()];
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            popularity[e.product.index()] += 1;
            let Some(text) = source.query_text(ds, e) else {
                continue;
            };
            let query = intern(text);
            pairs.push(Pair {
                query,
                product: e.product,
                user: Some(e.user),
                event: i,
            });
        }
        let mut positives: Vec<Vec<ProductId>> = vec![Vec::new(); queries.len()];
        for p in &pairs {
            positives[p.query as usize].push(p.product);
        }
        for j in &ds.judgments {
            if j.relevance == 0 {
                continue;
            }
            if let Some(&q) = query_index.get(ds.queries.text(j.query)) {
                positives[q as usize].push(j.product);
            }
        }
        for p in &mut positives {
            p.sort_unstable();
            p.dedup();
        }
        let query_rows = FeatureRows::build(&model.featurizer, &queries);
        let product_rows = model.product_features(&ds.catalog, &ds.taxonomy);
        TrainData {
            queries,
            query_index,
            pairs,
            positives,
            query_rows,
            product_rows,
            popularity,
            source,
        }
    }

    /// [`build`](Self::build) for towers that read text themselves (MiniLM's fine-tuning and a
    /// personalized tower fitted over fixed vectors): the pairs, positives and popularity the
    /// samplers read, with feature rows from a tiny featurizer that nothing reads.
    pub fn without_features(ds: &Dataset, split: &Split) -> TrainData {
        let featurizer_only = Model::new(ModelConfig {
            featurizer: FeaturizerConfig {
                buckets_log2: 8,
                ..FeaturizerConfig::default()
            },
            ..ModelConfig::default()
        });
        TrainData::build(ds, split, &featurizer_only)
    }

    /// True when `p` is relevant to training query `q`.
    #[inline]
    pub fn is_positive(&self, q: u32, p: ProductId) -> bool {
        self.positives[q as usize].binary_search(&p).is_ok()
    }

    pub fn products(&self) -> usize {
        self.product_rows.len()
    }
}
