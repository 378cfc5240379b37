//! The [`Encoder`]: what turns query texts and products into the vectors a Searcher compares.
//!
//! Two implement it: the hashed n-gram two-tower [`Model`] (this crate) and all-MiniLM-L6-v2,
//! pretrained or fine-tuned (aisle-transformer). The Searcher, and so `aisle eval`, `aisle serve`
//! and `aisle index`, hold an `Arc<dyn Encoder>` and do not know which one it is: what is
//! measured is what is served, for either.
//!
//! A trait object rather than an enum: one virtual call per batch of texts is nothing beside
//! the encoding itself (a MiniLM forward pass, or a tower's gather-and-sum), and aisle-model
//! need not depend on candle.

use std::sync::Arc;

use aisle_core::{Catalog, Taxonomy};

use crate::personal::Personalizer;
use crate::{FeatureRows, Model, Side};

/// An encoding failed (a transformer's tokenizer or forward pass); the n-gram model cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("the {encoder} encoder failed: {message}")]
pub struct EncodeError {
    pub encoder: &'static str,
    pub message: String,
}

/// A query tower and a product tower that put both into one space of [`dim`](Self::dim)
/// dimensions, compared by inner product (each returns unit-length vectors).
pub trait Encoder: Send + Sync {
    /// What kind of towers these are, for messages and `/healthz`: "n-gram" or "MiniLM".
    fn kind(&self) -> &'static str;

    /// Width of the vectors.
    fn dim(&self) -> usize;

    /// Query vectors of `texts`, a flat `texts.len() x dim` matrix in order.
    fn encode_queries(&self, texts: &[&str]) -> Result<Vec<f32>, EncodeError>;

    /// Product vectors of every product of `catalog`, a flat `len x dim` matrix in catalog order.
    fn encode_catalog(
        &self,
        catalog: &Catalog,
        taxonomy: &Taxonomy,
    ) -> Result<Vec<f32>, EncodeError>;

    /// The personalized query tower trained over this encoder's vectors, when there is one: it
    /// reads a customer's earlier products (their vectors from
    /// [`encode_catalog`](Self::encode_catalog)) and moves the query vector toward them.
    fn personal(&self) -> Option<&Personalizer> {
        None
    }
}

/// What a Searcher can be given as its encoder: an encoder by value, or one already shared
/// (`Arc<Model>`, `Arc<dyn Encoder>`), so that rows of one model file hold one copy of it.
pub trait IntoEncoder {
    fn into_encoder(self) -> Arc<dyn Encoder>;
}

impl<E: Encoder + 'static> IntoEncoder for E {
    fn into_encoder(self) -> Arc<dyn Encoder> {
        Arc::new(self)
    }
}

impl<E: Encoder + 'static> IntoEncoder for Arc<E> {
    fn into_encoder(self) -> Arc<dyn Encoder> {
        self
    }
}

impl IntoEncoder for Arc<dyn Encoder> {
    fn into_encoder(self) -> Arc<dyn Encoder> {
        self
    }
}

impl Encoder for Model {
    fn kind(&self) -> &'static str {
        "n-gram"
    }

    fn dim(&self) -> usize {
        Model::dim(self)
    }

    fn encode_queries(&self, texts: &[&str]) -> Result<Vec<f32>, EncodeError> {
        let rows = FeatureRows::build(&self.featurizer, texts);
        Ok(self.encode_rows(Side::Query, &rows))
    }

    fn encode_catalog(
        &self,
        catalog: &Catalog,
        taxonomy: &Taxonomy,
    ) -> Result<Vec<f32>, EncodeError> {
        Ok(Model::encode_catalog(self, catalog, taxonomy))
    }

    fn personal(&self) -> Option<&Personalizer> {
        self.personal.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_n_gram_model_encodes_through_the_trait_as_it_does_directly() {
        let model = crate::model::test_model(12, 16);
        let encoder: &dyn Encoder = &model;
        assert_eq!(encoder.kind(), "n-gram");
        assert_eq!(encoder.dim(), 16);
        let texts = ["oled tv", "running shoes"];
        let flat = encoder.encode_queries(&texts).expect("n-gram encoding");
        assert_eq!(flat.len(), 2 * 16);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(
                &flat[i * 16..(i + 1) * 16],
                model.encode_query(t).as_slice()
            );
        }
        assert!(encoder.personal().is_none());
    }
}
