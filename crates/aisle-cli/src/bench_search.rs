//! `aisle bench search`: what serving costs at 10k, 100k and 1M generated products.
//!
//! For each size: generate a synthetic world, train a personalized TB-HNS model briefly (its
//! weights shape the vectors, so the ANN is measured on embedding-like data, not on random
//! vectors), encode the catalog, build the index (HNSW above 20,000 products, as `aisle serve`
//! does), start the real HTTP server on 127.0.0.1 in this process, then measure:
//! - one client, keep-alive, one request after the other: p50 / p99 / mean end-to-end latency;
//! - the index's recall@10 against exact search on the world's test queries (speed is never
//!   shown without its recall cost);
//! - concurrent connections with wrk (`scripts/install-wrk.sh`; 64 unless `--connections`
//!   names other counts, e.g. `64,256,1000`), rotating over the same queries: queries per
//!   second, wrk's p50 / p99 and socket errors, and the connections the server's cap closed or
//!   refused, with the server's connection limits on, as `aisle serve` runs them.
//!
//! With `--backend qdrant --url ...` each size is measured a second time with the vectors in
//! Qdrant (one node or a cluster: name every node), beside the embedded index in the same run,
//! with the upload time, the nodes' resident memory and what the REST path adds.
//!
//! With `--minilm DIR` each size is also served with all-MiniLM-L6-v2 as the towers (the folder
//! DIR, pretrained or fine-tuned), so that its latency, query encoding included, stands beside
//! the n-gram towers'.
//!
//! Half the requests name a customer with history (personalized), half do not. The server, the
//! load generator and this process share the machine's cores: the figures are for all of them
//! on one box, which is what a 2-core machine can serve while also generating its own load.
//!
//! The measuring is `aisle_serve::bench`'s; here are the flags, and each size's world and the
//! brief training of its model (aisle-serve does not train).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use aisle_core::stats::fmt_n;
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::Dataset;
use aisle_model::{Encoder, Model};
use aisle_search::HnswParams;
use aisle_serve::bench::{self, BenchOptions, BoxError, OtherTowers, QdrantBench};
use aisle_train::trainer::PersonalizeConfig;
use aisle_train::{TrainConfig, Trainer};

#[derive(Args)]
pub struct BenchSearchArgs {
    /// Catalog sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Requests measured for the one-client latency (after 200 warm-up requests).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent connections for the throughput run, comma-separated: each count gets its own
    /// wrk run (the main table shows the first; a load table all of them).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub connections: Vec<usize>,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Training steps of each size's model.
    #[arg(long, default_value_t = 300)]
    pub train_steps: u64,
    /// HNSW search effort (ef) values to measure, comma-separated: each gets its recall and
    /// one-client latency; the throughput run uses the last.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub expansion_search: Vec<usize>,
    /// HNSW graph degree (M).
    #[arg(long, default_value_t = HnswParams::default().connectivity)]
    pub connectivity: usize,
    /// HNSW candidate list while building (efConstruction).
    #[arg(long, default_value_t = HnswParams::default().expansion_add)]
    pub expansion_add: usize,
    /// Hits per request.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// wrk binary for the throughput run [default: wrk on PATH].
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write each size's product vectors and query vectors (DIR/N/products.npy,
    /// queries.npy) and the embedded index's recall@10 and one-thread queries/s at each ef
    /// (DIR/N/aisle-ann.tsv), for `scripts/bench-ann-peers.py` to put faiss and hnswlib beside.
    #[arg(long)]
    pub export_vectors: Option<PathBuf>,
    /// Also serve each size's world with all-MiniLM-L6-v2 from this model folder (pretrained,
    /// or fine-tuned by `aisle train --tower minilm`) as the query and product tower, through
    /// the same Searcher and server: every request's latency then includes a MiniLM forward
    /// pass. It encodes the whole catalog first (about 500 products/s on 2 cores).
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// `--backend qdrant --url ...` adds, for each size, the same measurements with the vectors
    /// in Qdrant (uploaded first, as `aisle index --backend qdrant` does).
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,
    #[command(flatten)]
    pub upload: crate::backend::UploadArgs,
}

impl BenchSearchArgs {
    /// The library's options: the flags as they are, with Qdrant's connection where asked for.
    fn options(&self) -> Result<BenchOptions> {
        let qdrant = self.backend.qdrant()?.map(|config| QdrantBench {
            config,
            shards: self.upload.shards,
            replicas: self.upload.replicas,
            keep: self.upload.keep,
            batch: self.upload.batch,
        });
        Ok(BenchOptions {
            sizes: self.sizes.clone(),
            requests: self.requests,
            connections: self.connections.clone(),
            seconds: self.seconds,
            expansion_search: self.expansion_search.clone(),
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            k: self.k,
            wrk: self.wrk.clone(),
            export_vectors: self.export_vectors.clone(),
            qdrant,
        })
    }
}

pub fn bench_search(args: BenchSearchArgs) -> Result<()> {
    let options = args.options()?;
    let minilm = args.minilm.as_ref().map(|dir| OtherTowers {
        name: dir.display().to_string(),
        load: Box::new(move || {
            let encoder: Arc<dyn Encoder> = Arc::new(aisle_transformer::MiniLm::load(dir)?);
            Ok(encoder)
        }),
    });
    bench::run(
        &options,
        &mut |n| world(&args, n).map_err(BoxError::from),
        minilm.as_ref(),
    )?;
    Ok(())
}

/// A synthetic world of `products` products with its default splits, and a personalized TB-HNS
/// model trained on it for `--train-steps` steps (its weights shape the vectors, so the ANN is
/// measured on embedding-like data, not on random vectors).
fn world(args: &BenchSearchArgs, products: usize) -> Result<(Dataset, Model)> {
    let t = Instant::now();
    let cfg = SynthConfig {
        products,
        users: 2000,
        // Enough sessions for queries and histories; the catalog size is what is measured.
        sessions: 20_000.max(products / 10),
        seed: args.seed,
        taxonomy: TaxonomySource::BuiltIn,
    };
    cfg.validate()?;
    let mut ds = synth::generate(&cfg)?.dataset;
    aisle_core::adapters::add_default_splits(&mut ds, args.seed)?;
    eprintln!(
        "[{}] world: {} products, {} interactions in {:.1} s",
        fmt_n(products),
        fmt_n(ds.catalog.len()),
        fmt_n(ds.interactions.len()),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let model = {
        let split = ds.default_split().context("the world has no split")?;
        let cfg = TrainConfig {
            steps: args.train_steps,
            personalize: Some(PersonalizeConfig::default()),
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(cfg, &ds, split)?;
        for _ in 0..args.train_steps {
            trainer.train_step()?;
        }
        trainer.model.clone()
    };
    eprintln!(
        "[{}] trained {} steps in {:.1} s",
        fmt_n(products),
        args.train_steps,
        t.elapsed().as_secs_f64()
    );
    Ok((ds, model))
}
