//! What a serving benchmark measures: its options (the CLI's flags, with the `cli` feature).

use std::path::PathBuf;
use std::sync::Arc;

use aisle_model::Encoder;
use aisle_search::QdrantConfig;

use super::error::{BenchError, BoxError};

/// The options of a serving benchmark (`aisle bench search`). With the `cli` feature they are
/// its flags, and these comments its `--help`.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct BenchOptions {
    /// Catalog sizes, comma-separated, each measured in turn.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")
    )]
    pub sizes: Vec<usize>,
    /// Requests measured for the one-client latency (after 200 warm-up requests).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 2000))]
    pub requests: usize,
    /// Concurrent connections for the throughput run, comma-separated: each count gets its own
    /// wrk run (the main table shows the first; a load table all of them).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_delimiter = ',', default_value = "64")
    )]
    pub connections: Vec<usize>,
    /// Seconds of each throughput run.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10))]
    pub seconds: u64,
    /// HNSW search effort (ef) values to measure, comma-separated: each gets its recall and
    /// one-client latency; the throughput run uses the last.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_delimiter = ',', default_value = "64,256")
    )]
    pub expansion_search: Vec<usize>,
    /// HNSW graph degree (M).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = aisle_search::HnswParams::default().connectivity)
    )]
    pub connectivity: usize,
    /// HNSW candidate list while building (efConstruction).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = aisle_search::HnswParams::default().expansion_add)
    )]
    pub expansion_add: usize,
    /// Threads adding vectors to the HNSW graph; 0 means every core. Parallel insertion
    /// makes each build's graph a little different (recall@10 at 1M varied by up to 0.03 at
    /// `ef` 64); 1 builds the same graph every time, at about half the speed on 2 cores.
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value_t = aisle_search::HnswParams::default().build_threads)
    )]
    pub build_threads: usize,
    /// What walks the HNSW graph: aisle's flat copy of it (with the reverse links it adds), or
    /// usearch itself (the graph as usearch built it). With `--build-threads 1` both get the
    /// same graph from usearch, so two runs compare the walkers and the links.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = aisle_search::Walker::default())
    )]
    pub walker: aisle_search::Walker,
    /// Hits per request.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10))]
    pub k: usize,
    /// wrk binary for the throughput run [default: wrk on PATH].
    #[cfg_attr(feature = "cli", arg(long, default_value = "wrk"))]
    pub wrk: PathBuf,
    /// Also write each size's product vectors and query vectors (DIR/N/products.npy,
    /// queries.npy) and the embedded index's recall@10 and one-thread queries/s at each ef
    /// (DIR/N/aisle-ann.tsv), for `scripts/bench-ann-peers.py` to put faiss and hnswlib beside.
    #[cfg_attr(feature = "cli", arg(long))]
    pub export_vectors: Option<PathBuf>,
    /// Also measure each size with the vectors in Qdrant (the caller fills it in from its
    /// `--backend qdrant` flags).
    #[cfg_attr(feature = "cli", arg(skip))]
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
