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
    /// A training configuration file that could not be read.
    #[error("reading {}", .path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A training configuration file that is not valid TOML for a [`crate::TrainConfig`].
    #[error("{}: not a valid training configuration", .path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// Settings of the personalized tower given for a run without it (`aisle train`'s flags
    /// for them, as the user gave them).
    #[error("--history, --fusion and --no-demographics need --personalized")]
    NotPersonalized,
    /// A command a bench runs (`aisle train` in `aisle bench pipeline`) failed; its stdout.
    #[error("{command} failed ({status}):\n{stdout}")]
    Command {
        command: String,
        status: String,
        stdout: String,
    },
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
