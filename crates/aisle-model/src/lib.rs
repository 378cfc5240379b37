//! aisle-model: what turns text into vectors.
//!
//! It owns the text [`featurize`]r (hashed word and character n-grams), the n-gram two-tower
//! encoder ([`tower`]) with its hand-written backward pass, the [`Model`] that ties them to a
//! product-text recipe, the personalized query tower ([`personal`]) with its customer features
//! ([`demographics`]) and its file and wrapper over any encoder ([`personalized`]), the model
//! file ([`artifact`]), the [`Encoder`] trait that the n-gram model and MiniLM
//! (aisle-transformer) both implement, and the loss both train with ([`mnrl`]). It does not
//! train (aisle-train) or search (aisle-search).
//!
//! ```
//! use aisle_model::{Model, ModelConfig};
//! let model = Model::new(ModelConfig::default());
//! let q = model.encode_query("samsung 55 inch qled");
//! assert_eq!(q.len(), 128);
//! ```

pub mod artifact;
pub mod demographics;
pub mod encoder;
pub mod error;
pub mod featurize;
pub mod linalg;
pub mod meta;
pub mod mnrl;
pub mod model;
pub mod personal;
pub mod personalized;
pub mod tower;

pub use encoder::{EncodeError, Encoder, IntoEncoder};
pub use error::{ModelError, Result};
pub use featurize::{FeatureRows, Featurizer, FeaturizerConfig};
pub use meta::{ModelMeta, META_VERSION};
pub use model::{product_text, Model, ModelConfig, ProductFields};
pub use tower::{Pooling, Side, TowerConfig, TwoTower};
