//! What a serving benchmark measures: the plain options (the CLI's flags, converted).

use std::path::PathBuf;
use std::sync::Arc;

use aisle_model::Encoder;
use aisle_search::QdrantConfig;

use super::error::{BenchError, BoxError};

/// The options of a serving benchmark (`aisle bench search`).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Catalog sizes, each measured in turn.
    pub sizes: Vec<usize>,
    /// Requests measured for the one-client latency (after 200 warm-up requests).
    pub requests: usize,
    /// Concurrent connections of the throughput runs: one wrk run per count (the main table
    /// shows the first; a load table all of them).
    pub connections: Vec<usize>,
    /// Seconds of each throughput run.
    pub seconds: u64,
    /// HNSW search effort (ef) values: each gets its recall and one-client latency; the
    /// throughput runs use the last.
    pub expansion_search: Vec<usize>,
    /// HNSW graph degree (M).
    pub connectivity: usize,
    /// HNSW candidate list while building (efConstruction).
    pub expansion_add: usize,
    /// Hits per request.
    pub k: usize,
    /// The wrk binary of the throughput runs.
    pub wrk: PathBuf,
    /// Where to write each size's vectors and the index's own figures (DIR/N/...), if anywhere.
    pub export_vectors: Option<PathBuf>,
    /// Also measure each size with the vectors in Qdrant.
    pub qdrant: Option<QdrantBench>,
}

impl BenchOptions {
    /// Checks what would leave nothing to measure.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.sizes.is_empty() {
            return Err(BenchError::Options(
                "--sizes: give at least one catalog size",
            ));
        }
        if self.requests == 0 || self.k == 0 {
            return Err(BenchError::Options("--requests and --k must be at least 1"));
        }
        if self.connections.is_empty() || self.connections.contains(&0) {
            return Err(BenchError::Options(
                "--connections: give one or more counts, each at least 1",
            ));
        }
        Ok(())
    }
}

/// Where and how the vectors go into Qdrant (as `aisle index --backend qdrant` uploads them).
#[derive(Clone, Debug)]
pub struct QdrantBench {
    /// The nodes (every node of a cluster) and the request settings.
    pub config: QdrantConfig,
    /// Shards of the new collection.
    pub shards: u32,
    /// Copies of each shard.
    pub replicas: u32,
    /// Collections of the bench's dataset kept, the new one included.
    pub keep: usize,
    /// Points per upload request.
    pub batch: usize,
}

/// Other towers each size is also served with (all-MiniLM-L6-v2), loaded by the caller.
pub struct OtherTowers<'a> {
    /// Where they come from (a model folder), for the progress line and errors.
    pub name: String,
    /// Loads the encoder; called once per size, and timed with the catalog's encoding and the
    /// index build.
    pub load: Box<dyn Fn() -> Result<Arc<dyn Encoder>, BoxError> + 'a>,
}
