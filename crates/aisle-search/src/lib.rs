//! aisle-search: retrieval over a catalog.
//!
//! It owns the lexical index ([`Bm25Index`], BM25 over product text with tantivy) and the vector
//! indexes behind one trait ([`VectorIndex`]: [`ExactIndex`] by brute force, [`HnswIndex`] with
//! usearch, [`QdrantIndex`] in a Qdrant node or cluster), and the [`Searcher`], which puts a trained model, these indexes and the customers'
//! histories together: evaluation and the HTTP server both search through it. It reads the
//! model a Searcher is built over from its file or folder ([`model_file`]: n-gram towers or
//! MiniLM), writes a model's vectors out ([`export`]), builds and saves the HNSW graph `aisle
//! index` writes ([`saved_index`]) and assembles the Searcher `aisle serve` serves from its
//! files ([`served`]), but
//! does not embed text itself (that is `aisle-model` and `aisle-transformer`) nor
//! speak HTTP (`aisle-serve`). Every index and the
//! Searcher answer `&self` queries from many threads.
//!
//! ```no_run
//! use aisle_core::adapters::{load, LoadOptions};
//! use aisle_search::{Bm25Index, FieldBoosts};
//!
//! let ds = load("bestbuy_xbox", &LoadOptions::default())?;
//! let bm25 = Bm25Index::build(&ds.catalog, &ds.taxonomy, &FieldBoosts::default())?;
//! for (product, score) in bm25.search("gears of war", 10)? {
//!     println!("{score:.2} {}", ds.catalog.get(product).title);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `cli` feature, [`served::Ann`] derives `clap::ValueEnum` (`aisle serve --ann`).

pub mod error;
pub mod export;
pub mod lexical;
pub mod model_file;
pub mod qdrant;
pub mod rerank;
pub mod saved_index;
pub mod searcher;
pub mod served;
pub mod vector;

pub use error::{Result, SearchError};
pub use lexical::{Bm25Index, FieldBoosts, SparseBm25, SparseVector};
pub use qdrant::{QdrantConfig, QdrantIndex};
pub use rerank::{Reranker, Signals};
pub use searcher::{
    Explanation, HistoryInput, Hit, HybridFusion, IndexChoice, Mode, Request, Results, Searcher,
    SearcherOptions, MAX_K, RERANK_HISTORY,
};
pub use vector::{
    ann_quality, recall_at_k, search_batch, AnnQuality, ExactIndex, Filter, HnswIndex, HnswParams,
    IndexStamp, Quantization, VectorIndex, Walker,
};
