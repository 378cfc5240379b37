//! Errors of aisle-train.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] aisle_core::Error),
    #[error(transparent)]
    Model(#[from] aisle_model::ModelError),
    #[error(transparent)]
    Search(#[from] aisle_search::SearchError),
    #[error(transparent)]
    Transformer(#[from] aisle_transformer::TransformerError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("{}: cannot resume: {why}", .path.display())]
    Resume { path: PathBuf, why: String },
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
