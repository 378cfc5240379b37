//! `--backend`: where the product vectors of `aisle index`, `aisle eval` and `aisle serve` live:
//! in this process (exact or usearch HNSW), or in a Qdrant node or cluster
//! (`aisle_search::qdrant`).

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use aisle_search::qdrant::Layout;
use aisle_search::served::Vectors;
use aisle_search::QdrantConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// In this process: exact search or a usearch HNSW graph.
    Embedded,
    /// A Qdrant node or cluster (--url).
    Qdrant,
}

#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where the product vectors live.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    /// Qdrant REST URLs, comma-separated or repeated: every node of a cluster may be named, and
    /// a request that fails on one is retried on the next.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// The Qdrant collection or alias to search [default: aisle-DATASET, the alias `aisle index
    /// --backend qdrant` moves]; for `aisle index`, the collection to write [default: named
    /// after the dataset, the model and the catalog].
    #[arg(long)]
    pub collection: Option<String>,
    /// Time limit of one Qdrant request attempt, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub qdrant_timeout_ms: u64,
}

impl BackendArgs {
    /// The Qdrant connection settings, `None` for the embedded backend.
    pub fn qdrant(&self) -> Result<Option<QdrantConfig>> {
        match self.backend {
            Backend::Embedded => {
                if !self.url.is_empty() || self.collection.is_some() {
                    bail!("--url and --collection are for --backend qdrant");
                }
                Ok(None)
            }
            Backend::Qdrant => {
                if self.url.is_empty() {
                    bail!("--backend qdrant needs --url http://HOST:6333 (every node, comma-separated)");
                }
                Ok(Some(QdrantConfig::from_env(
                    &self.url,
                    self.qdrant_timeout_ms,
                )))
            }
        }
    }

    /// The vectors' place in Qdrant (checked against each model file's digest), `None` for
    /// the embedded backend.
    pub fn qdrant_vectors(&self) -> Result<Option<Vectors>> {
        Ok(self.qdrant()?.map(|config| Vectors::Qdrant {
            config,
            collection: self.collection.clone(),
        }))
    }
}

/// `aisle index --backend qdrant`'s own flags.
#[derive(Args, Clone, Debug)]
pub struct UploadArgs {
    /// Shards of a new collection (spread over the cluster's nodes).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Copies of each shard, on different nodes.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Collections of this dataset kept in Qdrant, the new live one included; older ones are
    /// deleted.
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// Points per upload request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// BM25 sparse vectors beside the dense ones, so that lexical and hybrid searches run in
    /// Qdrant too: with the field boosts `aisle serve` uses (served), with those `aisle eval`
    /// chooses on the validation queries of the dataset's first split (tuned), or none.
    #[arg(long, value_enum, default_value_t = SparseBoosts::Served)]
    pub bm25: SparseBoosts,
}

/// Which BM25 goes into a collection as sparse vectors (`--bm25`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SparseBoosts {
    /// The field boosts `aisle serve` builds its BM25 with.
    Served,
    /// The boosts `aisle eval` and `aisle experiment` choose on validation Recall@10.
    Tuned,
    /// No sparse vectors: lexical and hybrid searches run in aisle (tantivy).
    None,
}

impl BackendArgs {
    /// How `aisle index --backend qdrant` lays its collection out: `upload`'s flags, with the
    /// graph's degree and build-time candidate list of the embedded index's flags.
    pub fn layout(&self, upload: &UploadArgs, degree: usize, expansion_add: usize) -> Layout {
        Layout {
            collection: self.collection.clone(),
            shards: upload.shards,
            replicas: upload.replicas,
            keep: upload.keep,
            batch: upload.batch,
            hnsw_m: degree,
            ef_construct: expansion_add,
            // Set by the caller, which has the dataset (`--bm25`).
            bm25: None,
        }
    }
}

/// The progress bar of an upload of `points` points.
pub fn upload_bar(points: usize) -> Result<ProgressBar> {
    let bar = ProgressBar::new(points as u64);
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {pos}/{len} points  {per_sec}  ETA {eta}")
            .context("progress bar template")?,
    );
    Ok(bar)
}
