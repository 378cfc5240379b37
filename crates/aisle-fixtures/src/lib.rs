//! aisle-fixtures: what the workspace's tests share, as a `[dev-dependencies]` entry only.
//!
//! - [`skip_or_fail`], [`need_path`] and [`real_data`]: a test that needs real data
//!   (`../shared/data`) or a binary (`../shared/bin/qdrant`, a browser, model files) skips with
//!   a printed reason where it is absent, and fails naming what is missing under CI (where it is
//!   always present): a test that returns early under CI can never fail.
//! - [`shop`]: the hand-built shop (two TV and sofa leaves, six products) that unit tests rank
//!   and count on.
//!
//! It depends on aisle-core alone, so that any other crate's unit tests can use it; aisle-core's
//! own unit tests cannot (they would see two copies of its types), only its `tests/`.

mod shop;
mod skip;

pub use shop::{shop, shop_with, ShopEvent};
pub use skip::{in_ci, need_path, real_data, skip_or_fail};
