//! `aisle serve` and `aisle index`: their flags. A Searcher from a model file (trained on the
//! spot when there is none: aisle-train) is served over HTTP (aisle-serve); an HNSW index is
//! built, saved and checked against exact search (aisle-search).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use aisle_core::Dataset;
use aisle_search::qdrant::Layout;
use aisle_search::saved_index::{self, Destination};
use aisle_search::served::{self, Ann, HeadChoice, ModelUse, Vectors, SERVE_EXPANSION_SEARCH};
use aisle_search::{FieldBoosts, HnswParams, Quantization, SearcherOptions, Walker};
use aisle_serve::files::{serve_files, Files};
use aisle_serve::ServeOptions;

use crate::backend::{BackendArgs, SparseBoosts, UploadArgs};
use crate::train::Bar;
use crate::DataOpts;

/// Where the model and index come from.
#[derive(Args, Clone)]
pub struct ModelSource {
    /// A dataset name or a folder in the generic format.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    #[command(flatten)]
    pub data: DataOpts,
    /// The model: a model file from `aisle train`, or a MiniLM model folder (`aisle train
    /// --tower minilm`'s model/, or the pretrained one) [default: out/serve/DATASET/model.aisle,
    /// trained on the spot (personalized TB-HNS, 2,000 steps) when it does not exist].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training steps when the default model has to be trained.
    #[arg(long, default_value_t = 2000)]
    pub train_steps: u64,
    /// Use a model trained on another dataset (its recorded dataset digest is not this
    /// dataset's). Refused without it; with it, every answer says so.
    #[arg(long)]
    pub allow_other_dataset: bool,
}

impl ModelSource {
    /// The model file to serve: the given one (which must exist), or the default one, trained
    /// now when missing or made for other data ([`aisle_train::run::ensure_default_model`]).
    fn resolve(&self, ds: &Dataset) -> Result<PathBuf> {
        if let Some(p) = &self.model {
            if !p.exists() {
                bail!(
                    "model file {} does not exist (train one with `aisle train`)",
                    p.display()
                );
            }
            return Ok(p.clone());
        }
        let path = aisle_train::run::default_serve_model(ds);
        crate::out_dir::announce_default("model", &path, "--model");
        let mut bar = Bar::new(false)?;
        let say = &mut |l: &str| eprintln!("{l}");
        let model =
            aisle_train::run::ensure_default_model(&path, ds, self.train_steps, &mut bar, say)?;
        bar.finish();
        Ok(model)
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: ModelSource,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// A saved HNSW index (from `aisle index`), read into memory after its header, checksums
    /// and digests are checked.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Which vector index to build when --index is not given.
    #[arg(long, value_enum, default_value_t = Ann::Auto)]
    pub ann: Ann,
    /// HNSW search effort (ef, Qdrant's hnsw_ef): higher finds more of the exact top-k, slower.
    #[arg(long, default_value_t = SERVE_EXPANSION_SEARCH)]
    pub expansion_search: usize,
    /// Add `B * max_j h_j . p` (the customer's closest earlier product) to dense scores of
    /// requests with a history; 0 for none. On Instacart B = 2 lifted test R@10 from 0.489 to
    /// 0.668 (docs/evaluation.md).
    #[arg(long, default_value_t = 0.0)]
    pub history_boost: f32,
    /// Earlier interactions read per customer [default: as the model was trained, or 1,000
    /// with a re-ranking head].
    #[arg(long)]
    pub history: Option<usize>,
    /// The learned re-ranking head to rank dense requests with [default: rerank.json beside
    /// the model, written by `aisle train --rerank`, when there is one].
    #[arg(long, conflicts_with = "no_rerank")]
    pub rerank: Option<PathBuf>,
    /// Serve the towers' order even when a rerank.json lies beside the model.
    #[arg(long)]
    pub no_rerank: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// A token that `POST /admin/reload` must send as `Authorization: Bearer TOKEN` [default:
    /// $AISLE_ADMIN_TOKEN; without one, only loopback clients may reload].
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The most results one request may ask for.
    #[arg(long, default_value_t = 100)]
    pub max_k: usize,
    /// Worker threads of the HTTP runtime [default: the number of cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Open client connections at most (kept below the open-file limit). At the cap the
    /// connection idle the longest is closed for a new one; when all are busy, 503.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a whole request head, and an idle keep-alive connection
    /// its next request, before the connection is closed.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a client has to send a whole request body (408 after).
    #[arg(long, default_value_t = 10.0)]
    pub body_timeout: f64,
    /// Seconds requests in flight get to finish on Ctrl-C / SIGTERM before the server exits.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
}

/// A positive, finite number of seconds from a flag.
fn seconds(flag: &str, s: f64) -> Result<std::time::Duration> {
    if !s.is_finite() || s <= 0.0 || s > 86_400.0 {
        bail!("--{flag} {s}: expected seconds, more than 0 and at most 86400");
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if !args.history_boost.is_finite() || args.history_boost < 0.0 {
        bail!(
            "--history-boost {}: expected a number >= 0",
            args.history_boost
        );
    }
    let start = Instant::now();
    let ds = Arc::new(args.source.data.load(&args.source.dataset)?);
    let model = args.source.resolve(&ds)?;
    let vectors = match args.backend.qdrant_vectors()? {
        Some(_) if args.index.is_some() => {
            bail!("--index is a saved usearch graph: leave it out with --backend qdrant")
        }
        Some(qdrant) => qdrant,
        None => Vectors::Embedded(served::index_choice(
            args.ann,
            args.index.as_deref(),
            ds.catalog.len(),
            args.expansion_search,
        )),
    };
    let options = ServeOptions {
        max_k: args.max_k.clamp(1, aisle_search::MAX_K),
        admin_token: args
            .admin_token
            .clone()
            .or_else(|| std::env::var("AISLE_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        model_label: model.display().to_string(),
        limits: aisle_serve::Limits {
            max_connections: args.max_connections.max(1),
            header_timeout: seconds("header-timeout", args.header_timeout)?,
            body_timeout: seconds("body-timeout", args.body_timeout)?,
            shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
            ..aisle_serve::Limits::default()
        },
        ..ServeOptions::default()
    };
    let files = Files {
        ds,
        model,
        vectors,
        uses: ModelUse {
            history: args.history,
            history_boost: args.history_boost,
            head: HeadChoice::new(args.rerank.clone(), args.no_rerank),
            allow_other_dataset: args.source.allow_other_dataset,
        },
        search_effort: args.expansion_search,
    };
    serve_files(files, options, &args.addr, args.threads, start)?;
    Ok(())
}

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub source: ModelSource,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    /// Where to write the index [default: beside the model, index.usearch].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Store vectors as i8 (a quarter of f32's memory, at a recall cost that --check measures).
    #[arg(long)]
    pub i8: bool,
    /// Graph degree (usearch connectivity; Qdrant's `m` with --backend qdrant).
    #[arg(long, default_value_t = HnswParams::default().connectivity)]
    pub connectivity: usize,
    /// Candidate list while building.
    #[arg(long, default_value_t = HnswParams::default().expansion_add)]
    pub expansion_add: usize,
    /// Candidate list while searching.
    #[arg(long, default_value_t = HnswParams::default().expansion_search)]
    pub expansion_search: usize,
    /// Threads adding vectors to the embedded graph; 0 means every core, and 1 builds the
    /// same graph every time from the same model, at about half the speed on 2 cores.
    #[arg(long, default_value_t = HnswParams::default().build_threads)]
    pub build_threads: usize,
    /// Also measure the index's recall@10 against exact search, on the dataset's test queries
    /// (or product vectors when it has none).
    #[arg(long)]
    pub check: bool,
    /// Queries for --check, at most.
    #[arg(long, default_value_t = 2000)]
    pub check_queries: usize,
}

/// The field boosts of the BM25 `--bm25` asks to upload as sparse vectors, if any.
fn sparse_boosts(which: SparseBoosts, ds: &Dataset) -> Result<Option<FieldBoosts>> {
    Ok(match which {
        SparseBoosts::None => None,
        SparseBoosts::Served => Some(SearcherOptions::default().lexical.unwrap_or_default()),
        SparseBoosts::Tuned => {
            let split = ds.default_split().with_context(|| {
                format!(
                    "--bm25 tuned: dataset `{}` has no split whose validation queries could \
                     choose the boosts",
                    ds.name
                )
            })?;
            let (_, choice) = aisle_eval::rankers::Bm25Ranker::tuned(ds, split)?;
            eprintln!("{}", choice.note());
            Some(choice.chosen)
        }
    })
}

pub fn index(args: IndexArgs) -> Result<()> {
    let ds = args.source.data.load(&args.source.dataset)?;
    let model_path = args.source.resolve(&ds)?;
    let to = match args.backend.qdrant()? {
        Some(config) => Destination::Qdrant {
            config,
            layout: Layout {
                bm25: sparse_boosts(args.upload.bm25, &ds)?,
                ..args
                    .backend
                    .layout(&args.upload, args.connectivity, args.expansion_add)
            },
            hnsw_ef: args.expansion_search,
        },
        None => Destination::File {
            out: args.out.clone(),
            params: HnswParams {
                connectivity: args.connectivity,
                expansion_add: args.expansion_add,
                expansion_search: args.expansion_search,
                quantization: if args.i8 {
                    Quantization::I8
                } else {
                    Quantization::F32
                },
                build_threads: args.build_threads,
                // `--check` measures the walker that `aisle serve` will use on the file.
                walker: Walker::Flat,
            },
        },
    };
    let (allow, check) = (
        args.source.allow_other_dataset,
        args.check.then_some(args.check_queries),
    );
    let bar = crate::backend::upload_bar(ds.catalog.len())?;
    let say = &mut |l: &str| eprintln!("{l}");
    let progress = &mut |done, _| bar.set_position(done as u64);
    let indexed = saved_index::index(&model_path, &ds, allow, to, check, say, progress)?;
    bar.finish_and_clear();
    print!("{indexed}");
    Ok(())
}
