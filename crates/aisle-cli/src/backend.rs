//! `--backend`: where the product vectors of `aisle index`, `aisle eval` and `aisle serve` live:
//! in this process (exact or usearch HNSW), or in a Qdrant node or cluster
//! (`aisle_search::qdrant`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use aisle_core::stats::fmt_n;
use aisle_core::Dataset;
use aisle_model::Encoder;
use aisle_search::qdrant::{self, Client, Layout, QdrantTarget, Upload};
use aisle_search::{ann_quality, ExactIndex, IndexChoice, QdrantConfig, VectorIndex};

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
                let mut cfg = QdrantConfig::new(&self.url);
                cfg.timeout = Duration::from_millis(self.qdrant_timeout_ms.max(1));
                cfg.api_key = std::env::var("QDRANT_API_KEY")
                    .ok()
                    .filter(|k| !k.is_empty());
                Ok(Some(cfg))
            }
        }
    }

    /// The index a Searcher over `model_path` opens in Qdrant, `None` for the embedded backend.
    pub fn choice(&self, model_path: &Path) -> Result<Option<IndexChoice>> {
        let Some(config) = self.qdrant()? else {
            return Ok(None);
        };
        Ok(Some(IndexChoice::Qdrant(QdrantTarget {
            config,
            collection: self.collection.clone(),
            model_digest: Some(aisle_search::model_file::digest(model_path)?),
        })))
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
}

/// Uploads `vectors` (the catalog encoded by the model at `model_path`) to Qdrant, checks the
/// collection and moves the dataset's alias to it; prints what it did. `graph` is the HNSW
/// graph's degree and build-time candidate list (the embedded index's flags). With `check`,
/// also the recall@10 of Qdrant's search against exact search on `queries`.
#[allow(clippy::too_many_arguments)]
pub fn upload(
    cfg: &QdrantConfig,
    backend: &BackendArgs,
    args: &UploadArgs,
    graph: (usize, usize),
    ds: &Dataset,
    model: &dyn Encoder,
    model_path: &Path,
    vectors: &[f32],
    check: Option<(&[f32], usize)>,
) -> Result<()> {
    let client = Client::connect(cfg)?;
    let d = model.dim();
    let up = Upload {
        ds,
        vectors,
        dim: d,
        model_digest: aisle_search::model_file::digest(model_path)?,
        layout: Layout {
            collection: backend.collection.clone(),
            shards: args.shards,
            replicas: args.replicas,
            keep: args.keep,
            batch: args.batch,
            hnsw_m: graph.0,
            ef_construct: graph.1,
        },
    };
    let bar = ProgressBar::new(ds.catalog.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {pos}/{len} points  {per_sec}  ETA {eta}")
            .context("progress bar template")?,
    );
    let start = Instant::now();
    let report = qdrant::upload(&client, &up, &mut |done, _| bar.set_position(done as u64))
        .with_context(|| format!("uploading {}'s vectors to Qdrant", ds.name))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!("qdrant               {}", client.urls().join(","));
    println!("collection           {}", report.collection);
    println!(
        "alias                {} -> {} (was {})",
        report.alias,
        report.collection,
        report.previous.as_deref().unwrap_or("none")
    );
    println!(
        "points               {} x {d}: {} sent, {} already there{}",
        fmt_n(ds.catalog.len()),
        fmt_n(report.sent),
        fmt_n(report.skipped),
        if report.resumed { " (resumed)" } else { "" }
    );
    println!(
        "layout               {} shard(s) x {} replica(s)",
        args.shards, args.replicas
    );
    println!("upload               {secs:.1} s");
    println!(
        "check                count {}, {} of {} sampled products found themselves",
        fmt_n(ds.catalog.len()),
        report.probes_found,
        report.probes
    );
    if !report.deleted.is_empty() {
        println!("deleted              {}", report.deleted.join(", "));
    }
    if let Some((queries, effort)) = check {
        let target = QdrantTarget {
            config: cfg.clone(),
            collection: Some(report.collection.clone()),
            model_digest: Some(up.model_digest.clone()),
        };
        let index = target.open(ds, d)?;
        index.set_search_effort(effort);
        let exact = ExactIndex::new(d, vectors.to_vec())?;
        let q = ann_quality(&index, &exact, queries, 10)?;
        println!(
            "recall@10 vs exact   {:.4} ({} queries, hnsw_ef {effort})",
            q.recall,
            fmt_n(queries.len() / d)
        );
    }
    Ok(())
}
