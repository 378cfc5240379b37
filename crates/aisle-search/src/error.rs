//! The one error type of aisle-search.

use std::path::PathBuf;

/// What can go wrong while building, saving, loading or querying an index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The lexical engine (tantivy) failed.
    #[error("lexical index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),

    /// The ANN engine (usearch) failed; `context` says which operation.
    #[error("vector index: {context}: {message}")]
    Usearch { context: String, message: String },

    /// A vector, a set of rows or a saved index has another dimension than expected.
    #[error("dimension mismatch{}: expected {expected}, got {actual}", in_path(.path))]
    DimensionMismatch {
        expected: usize,
        actual: usize,
        /// The saved index, when the mismatch was found in a file.
        path: Option<PathBuf>,
    },

    /// A saved index that aisle cannot use (not an index, another metric or scalar type, another
    /// aisle format version, a truncated file).
    #[error("index file {}: {reason}", .path.display())]
    BadIndexFile { path: PathBuf, reason: String },

    /// A re-ranking head file (`rerank.json`) that aisle cannot use; `field` names what is wrong.
    #[error("re-ranking head {}: {field}: {reason}", .path.display())]
    BadHeadFile {
        path: PathBuf,
        field: String,
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Qdrant node refused or failed a request, or a collection is not what aisle expects;
    /// `node` is the node's URL (every URL when none answered).
    #[error("qdrant {node}{}: {message}", in_collection(.collection))]
    Qdrant {
        node: String,
        collection: String,
        /// The HTTP status, when a node answered.
        status: Option<u16>,
        message: String,
    },

    /// Loading the model at `path` (or encoding the catalog with it) failed.
    #[error("loading model {}", .path.display())]
    LoadModel {
        path: PathBuf,
        #[source]
        source: Box<SearchError>,
    },

    /// Uploading a dataset's vectors to Qdrant failed; `source` says where and why.
    #[error("uploading {dataset}'s vectors to Qdrant")]
    Upload {
        dataset: String,
        #[source]
        source: Box<SearchError>,
    },

    /// A model file that aisle cannot read (not a model, another version, damaged metadata).
    #[error(transparent)]
    Model(#[from] aisle_model::ModelError),

    /// A MiniLM model folder that aisle cannot read.
    #[error(transparent)]
    Transformer(#[from] aisle_transformer::TransformerError),

    /// A model trained on another dataset than the one it is asked to search; `why` names both.
    #[error("{why}: its figures would not be this dataset's (train on it, or pass --allow-other-dataset to use it anyway)")]
    OtherDataset { why: String },

    /// Vectors could not be written (`aisle encode`): a file name of no known format, or a
    /// file that could not be written.
    #[error(transparent)]
    Vectors(#[from] aisle_core::io::WriteVectorsError),

    /// The encoder (a transformer's tokenizer or forward pass) failed.
    #[error(transparent)]
    Encode(#[from] aisle_model::EncodeError),

    /// A caller passed something out of range (an empty dimension, rows not a multiple of it,
    /// non-finite values).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn in_collection(collection: &str) -> String {
    if collection.is_empty() {
        String::new()
    } else {
        format!(", collection `{collection}`")
    }
}

fn in_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

impl SearchError {
    /// Wraps an error from usearch (which reports C++ exceptions as strings).
    pub(crate) fn usearch(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        SearchError::Usearch {
            context: context.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SearchError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`SearchError`].
pub type Result<T, E = SearchError> = std::result::Result<T, E>;
