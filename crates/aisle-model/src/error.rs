//! Errors of aisle-model.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an aisle model file (no AISLEMDL header)", .path.display())]
    NotAModel { path: PathBuf },
    #[error("{}: model format version {found}, but this aisle reads version {expected}: retrain or use a matching aisle", .path.display())]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: corrupt model file: {why}", .path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("invalid model configuration: {0}")]
    Config(String),
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
