//! The multiple-negatives ranking loss (MNRL) the n-gram trainer minimises: in-batch negatives
//! (the batch's other positives, those relevant to the query masked out) and each pair's own
//! sampled hard negatives.
//!
//! Its one definition, with its gradient, is aisle-model's [`aisle_model::mnrl`], which the
//! MiniLM fine-tuning ([`crate::transformer`]) calls too; this module names it where the
//! trainer looks for it.

pub use aisle_model::mnrl::{mnrl, mnrl_into, BatchLoss, LossOutput};
