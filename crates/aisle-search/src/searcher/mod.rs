//! The Searcher: what `aisle eval` measures and what `aisle serve` serves, one type for both.
//!
//! ```text
//! query text (+ customer or inline history)
//!   -> query tower -> personalized tower (when the model has one and there is a history)
//!   -> vector index top-k (ANN or exact), restricted to a taxonomy subtree when asked
//!   -> optional fusion with BM25 (reciprocal rank fusion, or a weighted score sum)
//!   -> hits with explanations (taxonomy path, history items that raised a hit, lexical matches)
//! ```
//!
//! A request with no customer, an unknown customer or an empty history is searched with the
//!
//! One concept a file: `options` (what a Searcher is built with, what a request asks),
//! `results` (hits and explanations), `state` (the Searcher type, its construction and
//! settings), `encode` (query vectors and personalization), `retrieve` (dense and lexical
//! top-k, taxonomy filters), `candidates` (the re-ranking head's candidates and features),
//! `boost` (the history term), `fusion` (hybrid), `explain` and `search` (a request end to end).
//! Every public item is re-exported here, at its old path.

mod boost;
mod candidates;
mod encode;
mod explain;
mod fusion;
mod options;
mod results;
mod retrieve;
mod search;
mod state;

pub use self::candidates::{Candidates, RERANK_HISTORY};
pub use self::options::{
    HistoryInput, HybridFusion, IndexChoice, Mode, Request, SearcherOptions, MAX_K,
};
pub use self::results::{Explanation, Hit, Results};
pub use self::state::Searcher;

#[cfg(test)]
mod tests;
