//! Errors of aisle-eval.

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Core(#[from] aisle_core::Error),
    #[error(transparent)]
    Search(#[from] aisle_search::SearchError),
    #[error(transparent)]
    Model(#[from] aisle_model::ModelError),
    #[error(transparent)]
    Train(#[from] aisle_train::TrainError),
    #[error(transparent)]
    Transformer(#[from] aisle_transformer::TransformerError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to evaluate: {0}")]
    Empty(String),
    /// A dataset without a split to evaluate on; its name.
    #[error("dataset `{0}` has no split to evaluate on")]
    NoSplits(String),
    #[error("{0}")]
    Ranker(String),
    /// A setting that leaves nothing to run; what is wrong.
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
