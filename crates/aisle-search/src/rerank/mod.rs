//! A learned re-ranking head over the towers' candidates.
//!
//! The towers place a query near products; they cannot count. A customer who bought the same
//! yoghurt eleven times, the products a query was chosen for before, and what customers with a
//! similar basket bought are signals a single query vector cannot carry (ten earlier purchases in
//! an aisle cannot all be nearest to one point). The head scores each candidate by
//! `w . phi(query, customer, product)` over [`FEATURES`] features, the first being the towers'
//! own cosine, and is fitted by softmax cross-entropy over each case's candidates ([`fit`]): on
//! the validation queries in `aisle experiment`, never on test.
//!
//! Candidates are the dense top list, the customer's own earlier products and the products
//! chosen before for the same query text ([`Signals::chosen_for`]). Every signal is read from
//! the interactions the [`Signals`] were built from: a split's training part in evaluation, so
//! that no held-out event reaches a feature, every interaction when serving.
//!
//! One concept a file: [`Feature`] and the feature count (`features`), the [`Signals`] the
//! features read and their computation (`signals`), the head's weights and the file they are
//! saved in ([`Reranker`], [`HeadFile`]: `head`), and the fit ([`fit`]: `fit`). Every item is
//! re-exported here, at its `aisle_search::rerank::` path.

mod features;
mod fit;
mod head;
mod signals;

pub use features::{Feature, FEATURES, FEATURE_NAMES, NEIGHBOUR_FLOOR};
pub use fit::{fit, fit_observed, loss, FitCase, FitOptions};
pub use head::{HeadFile, Reranker, HEAD_FILE, HEAD_SCHEMA};
pub use signals::{counts_as_bought, product_words, words, Past, Signals, QUERY_CANDIDATES};
