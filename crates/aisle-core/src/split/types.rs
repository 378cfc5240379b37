//! What a split is: the training interactions and the evaluation queries, as plain data.
//!
//! Kept apart from the protocols that make splits ([`crate::split`], which reads a [`Dataset`]),
//! so that a [`Dataset`] can hold its splits without the two modules importing each other.
//!
//! [`Dataset`]: crate::dataset::Dataset

use crate::model::{ProductId, QueryId, UserId};

/// One query an evaluation asks, with the products that answer it.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalQuery {
    pub query: QueryId,
    /// The user who asked, for personalized models.
    pub user: Option<UserId>,
    /// Relevant products with a graded relevance (1 click, 2 add to cart, 3 purchase, or the
    /// judgment's grade), sorted by product, each product once.
    pub relevant: Vec<(ProductId, u8)>,
    /// History cut-off: only the user's interactions with `time < before` may be used.
    pub before: i64,
    /// The interactions this query was built from.
    pub events: Vec<u32>,
}

/// A named split of a dataset into training interactions and evaluation queries.
#[derive(Clone, Debug)]
pub struct Split {
    pub name: String,
    /// One line saying how the split was made.
    pub description: String,
    pub seed: u64,
    /// Indices into `Dataset::interactions` a model may train on (and use as history).
    pub train: Vec<u32>,
    pub validation: Vec<EvalQuery>,
    pub test: Vec<EvalQuery>,
    /// `cold_start[p]` is true when product `p` has no training interaction.
    pub cold_start: Vec<bool>,
}
