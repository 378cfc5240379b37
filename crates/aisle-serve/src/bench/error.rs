//! What can go wrong in a serving benchmark, with what failed and where.

use std::path::PathBuf;
use std::process::ExitStatus;

use aisle_search::SearchError;

/// An error from the caller's side (making a world, loading other towers).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong in a serving benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Options that leave nothing to measure.
    #[error("{0}")]
    Options(&'static str),
    /// Something failed while measuring one catalog size.
    #[error("at {products} products")]
    AtSize {
        products: usize,
        #[source]
        source: Box<BenchError>,
    },
    /// The caller's world (or its model) could not be made.
    #[error(transparent)]
    World(BoxError),
    /// The world has no default split to draw queries from.
    #[error("the world has no split")]
    NoSplit,
    /// Building, encoding, searching, or a Qdrant request.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The other towers could not be loaded.
    #[error("loading MiniLM from {name}")]
    OtherTowers {
        name: String,
        #[source]
        source: BoxError,
    },
    /// A file or folder could not be written.
    #[error("{doing} {}", path.display())]
    File {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server did not start.
    #[error("starting the server")]
    Server(#[source] std::io::Error),
    /// There was nothing for the one client to ask.
    #[error("no requests to send")]
    NoRequests,
    /// A request of the one client failed.
    #[error("GET {path}")]
    Request {
        path: String,
        #[source]
        source: ureq::Error,
    },
    /// An answer's body could not be read.
    #[error("reading a response")]
    Response(#[source] ureq::Error),
    /// Search requests answered with an error status during the benchmark.
    #[error("{0} search requests failed during the benchmark")]
    FailedRequests(u64),
    /// wrk could not be run.
    #[error("running {}", wrk.display())]
    WrkStart {
        wrk: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// wrk ran and failed.
    #[error("wrk exited with {status}: {output}")]
    WrkFailed { status: ExitStatus, output: String },
    /// wrk's output lacks a figure.
    #[error("no {what} in wrk's output:\n{output}")]
    WrkOutput { what: String, output: String },
    /// A Qdrant node's metrics could not be fetched.
    #[error("GET {node}/metrics")]
    NodeMetrics {
        node: String,
        #[source]
        source: ureq::Error,
    },
    /// A Qdrant node's metrics could not be read.
    #[error("reading /metrics")]
    NodeMetricsBody {
        node: String,
        #[source]
        source: ureq::Error,
    },
    /// A Qdrant node's metrics do not say its memory.
    #[error("{node}/metrics has no memory_resident_bytes")]
    NoResidentBytes { node: String },
}

impl BenchError {
    /// Wraps `self` with the catalog size it happened at.
    pub(super) fn at(self, products: usize) -> BenchError {
        BenchError::AtSize {
            products,
            source: Box::new(self),
        }
    }
}
