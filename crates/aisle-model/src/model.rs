//! The model: featurizer + towers + the product text recipe, and encoding with it.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use aisle_core::{Catalog, Product, Taxonomy};

use crate::featurize::{FeatureRows, Featurizer, FeaturizerConfig};
use crate::personal::Personalizer;
use crate::tower::{Side, TowerConfig, TwoTower};

/// Which product fields make up the product text, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductFields {
    pub title: bool,
    pub brand: bool,
    /// The names on the path from the top-level category to the product's category.
    pub taxonomy_path: bool,
    /// Attribute values (not their names).
    pub attributes: bool,
    pub description: bool,
}

impl Default for ProductFields {
    fn default() -> Self {
        ProductFields {
            title: true,
            brand: true,
            taxonomy_path: true,
            attributes: true,
            description: false,
        }
    }
}

/// The text a product is encoded from.
pub fn product_text(p: &Product, taxonomy: &Taxonomy, fields: &ProductFields) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if fields.title {
        parts.push(&p.title);
    }
    if fields.brand && !p.brand.is_empty() {
        parts.push(&p.brand);
    }
    let path;
    if fields.taxonomy_path {
        path = taxonomy
            .path(p.category)
            .into_iter()
            .map(|n| taxonomy.name(n))
            .collect::<Vec<_>>()
            .join(" ");
        parts.push(&path);
    }
    if fields.attributes {
        for (_, v) in &p.attributes {
            parts.push(v);
        }
    }
    if fields.description && !p.description.is_empty() {
        parts.push(&p.description);
    }
    parts.join(" ")
}

/// Everything that defines a model besides its learned weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub featurizer: FeaturizerConfig,
    pub tower: TowerConfig,
    pub fields: ProductFields,
    /// Scores are `scale * cosine`; the loss's softmax temperature is `1 / scale`.
    pub scale: f32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            featurizer: FeaturizerConfig::default(),
            tower: TowerConfig::default(),
            fields: ProductFields::default(),
            scale: 20.0,
        }
    }
}

/// A two-tower n-gram model.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub featurizer: Featurizer,
    pub towers: TwoTower,
    /// The personalized query tower, when the model was trained with one.
    pub personal: Option<Personalizer>,
}

impl Model {
    /// A freshly initialised model.
    pub fn new(cfg: ModelConfig) -> Model {
        let featurizer = Featurizer::new(cfg.featurizer.clone());
        let towers = TwoTower::new(cfg.tower.clone(), featurizer.buckets());
        Model {
            cfg,
            featurizer,
            towers,
            personal: None,
        }
    }

    pub fn dim(&self) -> usize {
        self.towers.dim()
    }

    /// The unit-length query vector.
    pub fn encode_query(&self, text: &str) -> Vec<f32> {
        self.towers
            .encode(Side::Query, &self.featurizer.featurize(text))
    }

    /// The unit-length product vector.
    pub fn encode_product(&self, p: &Product, taxonomy: &Taxonomy) -> Vec<f32> {
        let text = product_text(p, taxonomy, &self.cfg.fields);
        self.towers
            .encode(Side::Product, &self.featurizer.featurize(&text))
    }

    /// Feature rows of every product of a catalog, in catalog order.
    pub fn product_features(&self, catalog: &Catalog, taxonomy: &Taxonomy) -> FeatureRows {
        let texts: Vec<String> = catalog
            .products()
            .par_iter()
            .map(|p| product_text(p, taxonomy, &self.cfg.fields))
            .collect();
        FeatureRows::build(&self.featurizer, &texts)
    }

    /// Encodes every row of `rows` on `side` into a flat `len x dim` matrix, in parallel.
    pub fn encode_rows(&self, side: Side, rows: &FeatureRows) -> Vec<f32> {
        const CHUNK: usize = 4096;
        let mut out = Vec::with_capacity(rows.len() * self.dim());
        let mut cache = crate::tower::Cache::default();
        for start in (0..rows.len()).step_by(CHUNK) {
            let texts: Vec<&[u32]> = (start..rows.len().min(start + CHUNK))
                .map(|i| rows.row(i))
                .collect();
            self.towers.forward(side, &texts, &mut cache);
            out.extend_from_slice(&cache.z);
        }
        out
    }

    /// Vectors of every product of a catalog (`len x dim`, catalog order).
    pub fn encode_catalog(&self, catalog: &Catalog, taxonomy: &Taxonomy) -> Vec<f32> {
        self.encode_rows(Side::Product, &self.product_features(catalog, taxonomy))
    }
}

/// An untrained model with a small table (`2^buckets_log2` rows of `dim`), for tests.
#[cfg(test)]
pub(crate) fn test_model(buckets_log2: u8, dim: usize) -> Model {
    Model::new(ModelConfig {
        featurizer: FeaturizerConfig {
            buckets_log2,
            ..Default::default()
        },
        tower: TowerConfig {
            dim,
            ..Default::default()
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::{NodeId, TaxonomyBuilder};

    #[test]
    fn product_text_follows_fields() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("el", "Electronics", None, None);
        b.add_node("tv", "TVs", Some("el"), None);
        let t = b.build().expect("tree");
        let p = Product {
            id: "p".into(),
            title: "LG OLED55".into(),
            description: "nice".into(),
            brand: "LG".into(),
            price: None,
            attributes: vec![("size".into(), "55 inch".into())],
            category: t.node("tv").unwrap_or(NodeId(0)),
        };
        assert_eq!(
            product_text(&p, &t, &ProductFields::default()),
            "LG OLED55 LG Electronics TVs 55 inch"
        );
        let only_title = ProductFields {
            title: true,
            brand: false,
            taxonomy_path: false,
            attributes: false,
            description: true,
        };
        assert_eq!(product_text(&p, &t, &only_title), "LG OLED55 nice");
    }

    #[test]
    fn encode_rows_matches_single_encoding() {
        let m = test_model(12, 16);
        let texts = ["oled tv", "qled tv", ""];
        let rows = FeatureRows::build(&m.featurizer, &texts);
        let all = m.encode_rows(Side::Query, &rows);
        for (i, t) in texts.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            assert_eq!(&all[i * 16..(i + 1) * 16], m.encode_query(t).as_slice());
        }
    }
}
