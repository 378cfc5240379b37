//! aisle-core: the ground floor of aisle.
//!
//! It owns the retail domain ([`Catalog`], [`Taxonomy`], [`Users`], [`Interaction`], [`Judgment`],
//! [`Dataset`]), customers' [`Histories`] without leakage, the importers for aisle's generic format and for the bundled real datasets
//! ([`adapters`]), the evaluation splits ([`split`]), dataset statistics ([`stats`]) and the
//! synthetic retail world ([`synth`]). It knows nothing of models, indexes or servers.
//!
//! ```no_run
//! use aisle_core::adapters::{load, LoadOptions};
//! let ds = load("bestbuy_xbox", &LoadOptions::default())?;
//! if let Some(split) = ds.default_split() {
//!     println!("{} products, {} test queries", ds.catalog.len(), split.test.len());
//! }
//! # Ok::<(), aisle_core::Error>(())
//! ```

pub mod adapters;
pub mod dataset;
pub mod error;
pub mod history;
pub mod io;
pub mod model;
pub mod rng;
pub mod split;
pub mod stats;
pub mod synth;
pub mod taxonomy;

pub use dataset::Dataset;
pub use error::{Error, ImportReport, Location, Result, Strictness};
pub use history::Histories;
pub use model::{
    normalize_query, Catalog, Interaction, Judgment, Kind, Product, ProductId, Queries, QueryId,
    User, UserId, Users,
};
pub use split::{EvalQuery, Split};
pub use taxonomy::{NodeId, Taxonomy, TaxonomyBuilder, TaxonomyError};
