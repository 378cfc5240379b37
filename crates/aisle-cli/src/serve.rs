//! `aisle serve` and `aisle index`: a Searcher from a model file (trained on the spot when there
//! is none), served over HTTP; an HNSW index built, saved and checked against exact search.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, Histories};
use aisle_search::served::{self, HeadChoice, ModelUse};
use aisle_search::{
    recall_at_k, ExactIndex, HnswIndex, HnswParams, IndexChoice, Quantization, Searcher,
};
use aisle_serve::{App, Loader, ServeOptions};
use aisle_train::run::RunOptions;

use crate::backend::{BackendArgs, UploadArgs};
use crate::train::Bar;
use crate::DataOpts;

/// Above this many products `--ann auto` builds an HNSW graph; below it exact search is fast
/// enough (about 1 ms a query at 20k x 128 on one core) and has no recall cost.
const AUTO_HNSW_ABOVE: usize = 20_000;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AnnChoice {
    /// HNSW above 20,000 products, exact below.
    Auto,
    Exact,
    Hnsw,
}

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
    fn default_model(&self, ds: &Dataset) -> PathBuf {
        PathBuf::from("out/serve")
            .join(aisle_core::io::slug(&ds.name))
            .join(aisle_train::run::MODEL_FILE)
    }

    /// The model file to serve: the given one (which must exist), or the default one, trained
    /// now when missing.
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
        let path = self.default_model(ds);
        crate::out_dir::announce_default("model", &path, "--model");
        if path.exists() {
            // The default model follows the dataset: one trained on other data (an older
            // generator, changed files) is trained again rather than refused.
            // One written by an older aisle, whose metadata this one cannot read, too.
            match aisle_search::model_file::read(&path) {
                Ok((_, made)) => {
                    match aisle_search::model_file::other_dataset(&path, &made, ds, "served") {
                        None => return Ok(path),
                        Some(why) => eprintln!("{why}: training the default model again"),
                    }
                }
                Err(e) => eprintln!("{e:#}: training the default model again"),
            }
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let split = ds.split_named(None)?;
        let cfg = aisle_train::run::default_model_config(self.train_steps)?;
        eprintln!(
            "training a personalized TB-HNS model for {} on {} ({} steps) first",
            path.display(),
            ds.name,
            cfg.steps
        );
        let mut bar = Bar::new(cfg.steps, false)?;
        let summary = aisle_train::run(
            cfg,
            ds,
            split,
            &RunOptions {
                out_dir: dir,
                resume: None,
            },
            &mut bar,
        )?;
        bar.finish();
        eprintln!(
            "trained in {:.1} s; kept step {}, validation R@10 {}; wrote {}",
            summary.train_wall_s,
            summary.kept_step,
            summary
                .kept_recall_at_10
                .map_or("not measured".into(), |r| format!("{r:.3}")),
            summary.model.display()
        );
        Ok(summary.model)
    }
}

fn index_choice(
    ann: AnnChoice,
    saved: Option<&Path>,
    products: usize,
    expansion_search: usize,
) -> IndexChoice {
    if let Some(p) = saved {
        return IndexChoice::Saved(p.to_path_buf());
    }
    let hnsw = IndexChoice::Hnsw(HnswParams {
        expansion_search,
        ..HnswParams::default()
    });
    match ann {
        AnnChoice::Exact => IndexChoice::Exact,
        AnnChoice::Hnsw => hnsw,
        AnnChoice::Auto if products > AUTO_HNSW_ABOVE => hnsw,
        AnnChoice::Auto => IndexChoice::Exact,
    }
}

/// The HNSW search effort `aisle serve` uses: at 100k products it lifts recall@10 against exact
/// from 0.86 (usearch's default of 64) to 0.95 for about 0.1 ms more per query (`aisle bench
/// search`, docs/serving.md).
const SERVE_EXPANSION_SEARCH: usize = 256;

/// The head `aisle serve`'s flags ask for.
fn head_choice(args: &ServeArgs) -> HeadChoice {
    match (&args.rerank, args.no_rerank) {
        (_, true) => HeadChoice::None,
        (Some(p), false) => HeadChoice::Given(p.clone()),
        (None, false) => HeadChoice::BesideModel,
    }
}

/// [`served::build`], with the model file named in its errors, and the note of a model let
/// through from other data printed.
fn build_searcher(
    ds: &Arc<Dataset>,
    model_path: &Path,
    index: &IndexChoice,
    uses: &ModelUse,
) -> Result<Searcher> {
    let searcher = served::build(ds, model_path, index, Histories::all(ds), uses)
        .with_context(|| format!("building the searcher for {}", model_path.display()))?;
    for note in searcher.notes() {
        eprintln!("warning: {note}");
    }
    Ok(searcher)
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
    #[arg(long, value_enum, default_value_t = AnnChoice::Auto)]
    pub ann: AnnChoice,
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
    let model_path = args.source.resolve(&ds)?;
    if args.index.is_some() && args.backend.qdrant()?.is_some() {
        bail!("--index is a saved usearch graph: leave it out with --backend qdrant");
    }
    let embedded = index_choice(
        args.ann,
        args.index.as_deref(),
        ds.catalog.len(),
        args.expansion_search,
    );
    // A Qdrant collection is checked against the model file's digest, read again at each
    // reload (a retrained model goes with the collection its `aisle index` moved the alias to).
    let backend = args.backend.clone();
    let index_for = move |model_path: &Path| -> Result<IndexChoice> {
        Ok(backend
            .choice(model_path)?
            .unwrap_or_else(|| embedded.clone()))
    };
    let index = index_for(&model_path)?;
    let uses = ModelUse {
        history: args.history,
        history_boost: args.history_boost,
        head: head_choice(&args),
        allow_other_dataset: args.source.allow_other_dataset,
    };
    let searcher = build_searcher(&ds, &model_path, &index, &uses)?;
    // A saved index carries the effort it was built with; the flag wins.
    searcher.set_search_effort(args.expansion_search);
    eprintln!(
        "serving {} ({} products, {} customers) with {} ({} index{}{}), ready in {:.1} s",
        ds.name,
        fmt_n(ds.catalog.len()),
        fmt_n(ds.users.len()),
        model_path.display(),
        searcher.index_kind(),
        if searcher.encoder().personal().is_some() {
            ", personalized"
        } else {
            ""
        },
        uses.head
            .file(&model_path)?
            .map_or(String::new(), |h| format!(", re-ranked by {}", h.display())),
        start.elapsed().as_secs_f64()
    );
    let loader: Loader = {
        let ds = Arc::clone(&ds);
        let model_path = model_path.clone();
        let effort = args.expansion_search;
        let uses = uses.clone();
        Box::new(move || {
            let s = index_for(&model_path)
                .and_then(|index| build_searcher(&ds, &model_path, &index, &uses))
                .map_err(|e| format!("{e:#}"))?;
            s.set_search_effort(effort);
            Ok(s)
        })
    };
    let options = ServeOptions {
        max_k: args.max_k.clamp(1, aisle_search::MAX_K),
        admin_token: args
            .admin_token
            .clone()
            .or_else(|| std::env::var("AISLE_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        model_label: model_path.display().to_string(),
        limits: aisle_serve::Limits {
            max_connections: args.max_connections.max(1),
            header_timeout: seconds("header-timeout", args.header_timeout)?,
            body_timeout: seconds("body-timeout", args.body_timeout)?,
            shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
            ..aisle_serve::Limits::default()
        },
        ..ServeOptions::default()
    };
    // At the common default of 1,024 open files, 1,100 idle sockets starved everyone.
    eprintln!(
        "{}",
        aisle_serve::raise_open_files_and_say(options.limits.max_connections)
    );
    let grace = options.limits.shutdown_grace;
    let app = Arc::new(App::new(searcher, Some(loader), options));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(async move {
        let listener = aisle_serve::bind(&args.addr)
            .await
            .with_context(|| format!("listening on {}", args.addr))?;
        let addr = listener.local_addr().context("local address")?;
        eprintln!("listening on http://{addr}/  (Ctrl-C to stop; POST /admin/reload or SIGHUP to reload the model)");
        aisle_serve::serve(listener, app, aisle_serve::shutdown_signal())
            .await
            .context("serving")?;
        Ok(())
    });
    // Searches still running on blocking threads get the same grace, then the process exits
    // (dropping the runtime would wait for them without a bound).
    runtime.shutdown_timeout(grace);
    eprintln!("stopped");
    served
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
    /// Also measure the index's recall@10 against exact search, on the dataset's test queries
    /// (or product vectors when it has none).
    #[arg(long)]
    pub check: bool,
    /// Queries for --check, at most.
    #[arg(long, default_value_t = 2000)]
    pub check_queries: usize,
}

pub fn index(args: IndexArgs) -> Result<()> {
    let ds = args.source.data.load(&args.source.dataset)?;
    let model_path = args.source.resolve(&ds)?;
    let file = aisle_search::model_file::load(
        &model_path,
        &ds,
        "indexed",
        args.source.allow_other_dataset,
    )
    .with_context(|| format!("loading model {}", model_path.display()))?;
    if let Some(note) = &file.other_dataset {
        eprintln!("warning: {note}");
    }
    let model = file.encoder;
    let d = model.dim();
    let qdrant = args.backend.qdrant()?;
    let start = Instant::now();
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy)?;
    let t_encode = start.elapsed().as_secs_f64();
    if let Some(cfg) = qdrant {
        eprintln!(
            "encoded {} products in {t_encode:.1} s",
            fmt_n(ds.catalog.len())
        );
        let queries = args
            .check
            .then(|| served::probe_queries(model.as_ref(), &ds, &vectors, args.check_queries))
            .transpose()?;
        return crate::backend::upload(
            &cfg,
            &args.backend,
            &args.upload,
            (args.connectivity, args.expansion_add),
            &ds,
            model.as_ref(),
            &model_path,
            &vectors,
            queries.as_deref().map(|q| (q, args.expansion_search)),
        );
    }
    let params = HnswParams {
        connectivity: args.connectivity,
        expansion_add: args.expansion_add,
        expansion_search: args.expansion_search,
        quantization: if args.i8 {
            Quantization::I8
        } else {
            Quantization::F32
        },
        ..HnswParams::default()
    };
    let start = Instant::now();
    let index = HnswIndex::build(d, &vectors, &params)?;
    let t_build = start.elapsed().as_secs_f64();
    let out = args.out.clone().unwrap_or_else(|| {
        model_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("index.usearch")
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stamp = aisle_search::IndexStamp {
        model_digest: aisle_search::model_file::digest(&model_path)?,
        catalog_digest: aisle_search::qdrant::catalog_digest(&ds),
    };
    index
        .save(&out, &stamp)
        .with_context(|| format!("writing {}", out.display()))?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("index                {}", out.display());
    println!(
        "products             {} x {d} ({})",
        fmt_n(ds.catalog.len()),
        if args.i8 { "i8" } else { "f32" }
    );
    println!("encode               {t_encode:.1} s");
    println!("build                {t_build:.1} s");
    println!(
        "bytes on disk        {} ({:.0} per product)",
        fmt_n(bytes as usize),
        bytes as f64 / ds.catalog.len().max(1) as f64
    );
    if args.check {
        let queries = served::probe_queries(model.as_ref(), &ds, &vectors, args.check_queries)?;
        let exact = ExactIndex::new(d, vectors)?;
        let r = recall_at_k(&index, &exact, &queries, 10)?;
        println!(
            "recall@10 vs exact   {r:.4} ({} queries, expansion_search {})",
            fmt_n(queries.len() / d),
            args.expansion_search
        );
    }
    Ok(())
}
