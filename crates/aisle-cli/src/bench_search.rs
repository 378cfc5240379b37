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

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use aisle_core::stats::fmt_n;
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::{Dataset, Histories};
use aisle_search::{qdrant, HnswParams, IndexChoice, Searcher, SearcherOptions, VectorIndex};
use aisle_serve::{App, ServeOptions};
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

/// One size's figures.
struct Row {
    products: usize,
    index: String,
    /// HNSW ef, for an approximate index.
    effort: Option<usize>,
    recall_at_10: f64,
    /// Exact 10th similarity minus the index's.
    kth_gap: f64,
    build_s: f64,
    bytes_per_product: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    /// One wrk run per `--connections` count (the last effort only).
    load: Vec<Load>,
}

/// One throughput run.
struct Load {
    connections: usize,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// wrk's socket errors: connect, read, write, timeout (a request over wrk's 2 s timeout).
    socket_errors: [u64; 4],
    /// Answers other than 2xx / 3xx.
    failed: u64,
    /// Connections the server closed to make room, and refused with a 503, during the run.
    evicted: u64,
    shed: u64,
}

pub fn bench_search(args: BenchSearchArgs) -> Result<()> {
    if args.sizes.is_empty() {
        bail!("--sizes: give at least one catalog size");
    }
    if args.requests == 0 || args.k == 0 {
        bail!("--requests and --k must be at least 1");
    }
    if args.connections.is_empty() || args.connections.contains(&0) {
        bail!("--connections: give one or more counts, each at least 1");
    }
    // As `aisle serve` does: 1,000 connections need more than the common 1,024 open files
    // once the server's side of each is counted (wrk inherits the raised limit).
    eprintln!(
        "{} (the server's cap)",
        aisle_serve::raise_open_files_and_say(aisle_serve::Limits::default().max_connections)
    );
    let wrk_ok = Command::new(&args.wrk)
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty());
    if !wrk_ok {
        eprintln!(
            "note: {} not found: the throughput column is skipped (install it with scripts/install-wrk.sh)",
            args.wrk.display()
        );
    }
    let mut rows = Vec::new();
    for &n in &args.sizes {
        rows.extend(bench_size(&args, n, wrk_ok).with_context(|| format!("at {n} products"))?);
        print_table(&args, &rows);
    }
    Ok(())
}

fn bench_size(args: &BenchSearchArgs, products: usize, wrk: bool) -> Result<Vec<Row>> {
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
    let ds = Arc::new(ds);
    let queries = query_paths(&ds, args.k);
    let index = if products > 20_000 {
        IndexChoice::Hnsw(HnswParams {
            connectivity: args.connectivity,
            expansion_add: args.expansion_add,
            ..HnswParams::default()
        })
    } else {
        IndexChoice::Exact
    };
    let t = Instant::now();
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
    let encode_s = t.elapsed().as_secs_f64();
    let qdrant = args.backend.qdrant()?;
    let kept = qdrant.is_some().then(|| vectors.clone());
    let t = Instant::now();
    let options = SearcherOptions {
        index,
        ..SearcherOptions::default()
    };
    let searcher = Searcher::with_vectors(
        Arc::clone(&ds),
        model.clone(),
        vectors,
        Histories::all(&ds),
        &options,
    )?;
    let build_s = t.elapsed().as_secs_f64();
    let texts: Vec<String> = {
        let split = ds.default_split().context("the world has no split")?;
        let mut seen = std::collections::HashSet::new();
        split
            .test
            .iter()
            .map(|q| ds.queries.text(q.query))
            .filter(|t| seen.insert(*t))
            .take(1000)
            .map(str::to_owned)
            .collect()
    };
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    eprintln!(
        "[{}] encoded in {encode_s:.1} s; {} index and BM25 built in {build_s:.1} s",
        fmt_n(products),
        searcher.index_kind()
    );
    if let Some(dir) = &args.export_vectors {
        export(
            args,
            &dir.join(products.to_string()),
            &searcher,
            &texts,
            build_s,
        )?;
    }
    let bytes = searcher.index_bytes() as f64;
    let mut rows = measure(
        args, products, searcher, build_s, bytes, &texts, &queries, wrk,
    )?;
    if let Some(dir) = &args.minilm {
        let t = Instant::now();
        let encoder = aisle_transformer::MiniLm::load(dir)
            .with_context(|| format!("loading MiniLM from {}", dir.display()))?;
        let searcher = Searcher::build(Arc::clone(&ds), encoder, Histories::all(&ds), &options)?;
        let build_s = t.elapsed().as_secs_f64();
        eprintln!(
            "[{}] MiniLM ({}): catalog encoded and {} index built in {build_s:.1} s",
            fmt_n(products),
            dir.display(),
            searcher.index_kind()
        );
        let bytes = searcher.index_bytes() as f64;
        rows.extend(measure(
            args, products, searcher, build_s, bytes, &texts, &queries, wrk,
        )?);
    }
    if let (Some(cfg), Some(vectors)) = (qdrant, kept) {
        let (searcher, upload_s, collection) = on_qdrant(args, &cfg, &ds, model, vectors)?;
        let effort = args.expansion_search.last().copied().unwrap_or(0);
        let rest = rest_overhead(&searcher, &cfg, &collection, &texts, effort)?;
        let resident = resident_bytes(&cfg)?;
        let total: f64 = resident.iter().map(|(_, b)| b).sum();
        rows.extend(measure(
            args, products, searcher, upload_s, total, &texts, &queries, wrk,
        )?);
        eprintln!("[{}] {rest}", fmt_n(products));
        for (url, b) in &resident {
            eprintln!(
                "[{}] qdrant node {url}: {:.0} MB resident, {:.0} bytes per product",
                fmt_n(products),
                b / 1e6,
                b / products.max(1) as f64
            );
        }
    }
    Ok(rows)
}

/// Writes the catalog's and the queries' vectors as .npy, and times the index alone: for each
/// ef, recall@10 against exact search and queries per second, one query after the other on one
/// thread (aisle-ann.tsv: system, M, efConstruction, build s, ef, recall@10, queries/s).
fn export(
    args: &BenchSearchArgs,
    dir: &std::path::Path,
    searcher: &Searcher,
    texts: &[&str],
    build_s: f64,
) -> Result<()> {
    use std::fmt::Write as _;
    let d = searcher.encoder().dim();
    let n = searcher.dataset().catalog.len();
    let products: Vec<f32> = (0..n)
        .flat_map(|p| {
            searcher
                .vector(aisle_core::ProductId(p as u32))
                .iter()
                .copied()
        })
        .collect();
    let queries = searcher.encode_queries(texts)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        aisle_core::io::write_atomic(&path, |w| w.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))
    };
    let npy = |values: &[f32]| aisle_core::io::npy_bytes(values, values.len() / d, d);
    write("products.npy", &npy(&products))?;
    write("queries.npy", &npy(&queries))?;
    let index = searcher.index();
    let exact = aisle_search::ExactIndex::new(d, products)?;
    let mut tsv = String::from(
        "system	M	efConstruction	build_s	ef	recall_at_10	queries_per_s
",
    );
    for &ef in &args.expansion_search {
        index.set_search_effort(ef);
        let recall = aisle_search::ann_quality(index, &exact, &queries, 10)?.recall;
        let t = Instant::now();
        let mut done = 0;
        while done < 2000 || t.elapsed() < Duration::from_secs(1) {
            let q = &queries[(done % (queries.len() / d)) * d..][..d];
            std::hint::black_box(index.search(q, 10)?);
            done += 1;
        }
        let qps = done as f64 / t.elapsed().as_secs_f64();
        let _ = writeln!(
            tsv,
            "aisle ({})	{}	{}	{build_s:.1}	{ef}	{recall:.4}	{qps:.0}",
            searcher.index_kind(),
            args.connectivity,
            args.expansion_add
        );
    }
    write("aisle-ann.tsv", tsv.as_bytes())?;
    eprintln!(
        "[{}] wrote the product vectors and {} query vectors to {}",
        fmt_n(n),
        fmt_n(queries.len() / d),
        dir.display()
    );
    Ok(())
}

/// Recall, one-client latency and (with wrk) throughput of `searcher` behind the real HTTP
/// server, one row per search effort.
#[allow(clippy::too_many_arguments)]
fn measure(
    args: &BenchSearchArgs,
    products: usize,
    searcher: Searcher,
    build_s: f64,
    bytes: f64,
    texts: &[&str],
    queries: &[String],
    wrk: bool,
) -> Result<Vec<Row>> {
    let index_kind = searcher.index_kind();
    let mut label = if index_kind == "qdrant" {
        format!(
            "qdrant, {} node(s), {} shard(s) x {} replica(s)",
            args.backend.url.len(),
            args.upload.shards,
            args.upload.replicas
        )
    } else {
        index_kind.to_owned()
    };
    // The n-gram towers are the default and go unnamed, as in earlier tables.
    let encoder = searcher.encoder().kind();
    if encoder != "n-gram" {
        label = format!("{label}, {encoder} towers");
    }
    let efforts: Vec<Option<usize>> = if index_kind == "exact" {
        vec![None]
    } else {
        args.expansion_search
            .iter()
            .map(|&e| Some(e.max(1)))
            .collect()
    };
    let server = aisle_serve::spawn(
        App::new(searcher, None, ServeOptions::default()),
        "127.0.0.1:0",
    )
    .context("starting the server")?;
    let base = server.url();
    let mut rows = Vec::new();
    for (i, effort) in efforts.iter().enumerate() {
        let searcher = server.app().searcher();
        if let Some(e) = effort {
            searcher.set_search_effort(*e);
        }
        let quality = searcher.index_recall(texts, 10)?;
        let (recall_at_10, kth_gap) = (quality.recall, quality.kth_gap);
        drop(searcher);
        let (p50_ms, p99_ms, mean_ms) = one_client(&base, queries, args.requests)?;
        let last = i + 1 == efforts.len();
        let mut load = Vec::new();
        if wrk && last {
            for &connections in &args.connections {
                let seen =
                    |s: &aisle_serve::App| s.connections().map_or((0, 0), |c| (c.evicted, c.shed));
                let before = seen(server.app());
                match run_wrk(args, &base, queries, connections) {
                    Ok(w) => {
                        let after = seen(server.app());
                        eprintln!(
                            "[{}] wrk, {connections} connections: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms",
                            fmt_n(products),
                            w.qps,
                            w.p50_ms,
                            w.p99_ms
                        );
                        if w.failed > 0 {
                            eprintln!(
                                "[{}] wrk, {connections} connections: {} answers were not 2xx",
                                fmt_n(products),
                                w.failed
                            );
                        }
                        load.push(Load {
                            evicted: after.0 - before.0,
                            shed: after.1 - before.1,
                            ..w
                        });
                    }
                    Err(e) => eprintln!("wrk with {connections} connections failed: {e:#}"),
                }
            }
        }
        eprintln!(
            "[{}] {index_kind} ef {}: recall@10 {recall_at_10:.3} (10th similarity {kth_gap:.4} below exact), one client p50 {p50_ms:.2} ms, p99 {p99_ms:.2} ms",
            fmt_n(products),
            effort.map_or("-".into(), |e| e.to_string())
        );
        rows.push(Row {
            products,
            index: label.clone(),
            effort: *effort,
            recall_at_10,
            kth_gap,
            build_s,
            bytes_per_product: bytes / products.max(1) as f64,
            p50_ms,
            p99_ms,
            mean_ms,
            load,
        });
    }
    let errors: u64 = [400u16, 404, 413, 422, 500, 502, 503]
        .iter()
        .map(|&s| server.app().metrics.count("/search", s))
        .sum();
    if errors > 0 {
        bail!("{errors} search requests failed during the benchmark");
    }
    server.stop();
    Ok(rows)
}

/// Uploads the catalog's vectors to Qdrant (as `aisle index --backend qdrant` does, under the
/// alias `aisle-bench-N`) and opens a Searcher over them; returns it, the upload's seconds and
/// the collection.
fn on_qdrant(
    args: &BenchSearchArgs,
    cfg: &aisle_search::QdrantConfig,
    ds: &Arc<Dataset>,
    model: aisle_model::Model,
    vectors: Vec<f32>,
) -> Result<(Searcher, f64, String)> {
    use std::hash::{Hash, Hasher};
    let client = qdrant::Client::connect(cfg)?;
    // The bench has no model file: the vectors' own hash names the collection.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    vectors.iter().for_each(|x| x.to_bits().hash(&mut h));
    let digest = format!("{:08x}", h.finish() as u32);
    let mut bench_ds = (**ds).clone();
    bench_ds.name = format!("bench-{}", ds.catalog.len());
    let t = Instant::now();
    let report = qdrant::upload(
        &client,
        &qdrant::Upload {
            ds: &bench_ds,
            vectors: &vectors,
            dim: model.dim(),
            model_digest: digest.clone(),
            collection: None,
            shards: args.upload.shards,
            replicas: args.upload.replicas,
            keep: args.upload.keep,
            batch: args.upload.batch,
            hnsw_m: args.connectivity,
            ef_construct: args.expansion_add,
        },
        &mut |done, total| {
            if done == total || done % 100_000 < args.upload.batch {
                eprintln!("  uploaded {} of {}", fmt_n(done), fmt_n(total));
            }
        },
    )?;
    let sent_s = t.elapsed().as_secs_f64();
    let index_s = qdrant::wait_indexed(&client, &report.collection, Duration::from_secs(3600))?;
    let upload_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[{}] uploaded to {} ({} shard(s) x {} replica(s)) in {sent_s:.1} s, indexed {index_s:.1} s later",
        fmt_n(ds.catalog.len()),
        report.collection,
        args.upload.shards,
        args.upload.replicas
    );
    let searcher = Searcher::with_vectors(
        Arc::clone(ds),
        model,
        vectors,
        Histories::all(ds),
        &SearcherOptions {
            index: IndexChoice::Qdrant(qdrant::QdrantTarget {
                config: cfg.clone(),
                collection: Some(report.collection.clone()),
                model_digest: Some(digest),
            }),
            ..SearcherOptions::default()
        },
    )?;
    Ok((searcher, upload_s, report.collection))
}

/// What the REST path adds: sequential searches straight to Qdrant (no aisle server), their
/// round trip against the time the server reports for each.
fn rest_overhead(
    searcher: &Searcher,
    cfg: &aisle_search::QdrantConfig,
    collection: &str,
    texts: &[&str],
    effort: usize,
) -> Result<String> {
    let d = searcher.encoder().dim();
    let queries = searcher.encode_queries(texts)?;
    let target = qdrant::QdrantTarget {
        config: cfg.clone(),
        collection: Some(collection.to_owned()),
        model_digest: None,
    };
    let index = target.open(searcher.dataset(), d)?;
    index.set_search_effort(effort);
    let (mut round, mut server) = (Vec::new(), Vec::new());
    for (i, q) in queries.chunks_exact(d).cycle().take(1200).enumerate() {
        let t = Instant::now();
        let (_, s) = index.search_timed(q, 10)?;
        if i >= 200 {
            round.push(t.elapsed().as_secs_f64() * 1e3);
            server.push(s * 1e3);
        }
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, s) = (p50(&mut round), p50(&mut server));
    Ok(format!(
        "qdrant REST, straight from the client: round trip p50 {r:.3} ms, the server's own time p50 {s:.3} ms: client, JSON and loopback add {:.3} ms",
        r - s
    ))
}

/// The resident set (VmRSS, bytes) of the process listening on `url`'s port, when it runs on
/// this machine: found through /proc/net/tcp (the listening socket's inode) and /proc/PID/fd.
fn local_rss(url: &str) -> Option<f64> {
    let port: u16 = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|f| {
        std::fs::read_to_string(f)
            .ok()?
            .lines()
            .skip(1)
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let local_port = cols.get(1)?.rsplit(':').next()?;
                (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3) == Some(&"0A"))
                    .then(|| cols.get(9).map(|s| s.to_string()))
                    .flatten()
            })
    })?;
    let socket = format!("socket:[{inode}]");
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str())
        });
        if owns {
            let status = std::fs::read_to_string(proc_dir.path().join("status")).ok()?;
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            return Some(kb * 1024.0);
        }
    }
    None
}

/// Each node's memory: its process's resident set where it runs on this machine (vectors,
/// graph and the mapped segment files), else the allocator's `memory_resident_bytes` from its
/// Prometheus `/metrics` (which leaves mapped files out).
fn resident_bytes(cfg: &aisle_search::QdrantConfig) -> Result<Vec<(String, f64)>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    cfg.urls
        .iter()
        .map(|url| {
            if let Some(rss) = local_rss(url) {
                return Ok((format!("{url} (process RSS)"), rss));
            }
            let text = agent
                .get(format!("{url}/metrics"))
                .call()
                .with_context(|| format!("GET {url}/metrics"))?
                .body_mut()
                .read_to_string()
                .context("reading /metrics")?;
            let bytes = text
                .lines()
                .find_map(|l| l.strip_prefix("memory_resident_bytes "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("{url}/metrics has no memory_resident_bytes"))?;
            Ok((format!("{url} (/metrics memory_resident_bytes)"), bytes))
        })
        .collect()
}

/// Request paths over the world's test queries, every other one with its customer.
fn query_paths(ds: &Dataset, k: usize) -> Vec<String> {
    let Some(split) = ds.default_split().filter(|s| !s.test.is_empty()) else {
        return vec![format!("/search?q=shoes&k={k}")];
    };
    split
        .test
        .iter()
        .take(5000)
        .enumerate()
        .map(|(i, q)| {
            let text = encode_query(ds.queries.text(q.query));
            match (i % 2, q.user) {
                (1, Some(u)) => format!(
                    "/search?q={text}&k={k}&user={}",
                    encode_query(&ds.users.get(u).id)
                ),
                _ => format!("/search?q={text}&k={k}"),
            }
        })
        .collect()
}

/// Percent-encodes a query-string value.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Sequential keep-alive requests: (p50, p99, mean) milliseconds.
fn one_client(base: &str, paths: &[String], n: usize) -> Result<(f64, f64, f64)> {
    if paths.is_empty() || n == 0 {
        bail!("no requests to send");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut times = Vec::with_capacity(n);
    for i in 0..(200 + n) {
        let path = &paths[i % paths.len()];
        let t = Instant::now();
        let mut r = agent
            .get(format!("{base}{path}"))
            .call()
            .with_context(|| format!("GET {path}"))?;
        r.body_mut().read_to_vec().context("reading a response")?;
        if i >= 200 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    Ok((q(0.50), q(0.99), mean))
}

/// wrk with `connections` connections and a Lua script rotating over `paths`.
fn run_wrk(
    args: &BenchSearchArgs,
    base: &str,
    paths: &[String],
    connections: usize,
) -> Result<Load> {
    let dir = std::env::temp_dir().join(format!("aisle-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("paths.lua");
    let mut lua = String::from("local paths = {\n");
    for p in paths.iter().take(2000) {
        lua.push_str(&format!(
            "  \"{}\",\n",
            p.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    lua.push_str(
        "}\nlocal i = math.random(#paths)\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
    );
    std::fs::write(&script, lua).with_context(|| format!("writing {}", script.display()))?;
    let out = Command::new(&args.wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", args.seconds),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(base)
        .output()
        .with_context(|| format!("running {}", args.wrk.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk exited with {}: {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "Non-2xx or 3xx responses: 17": shown in the load table (a 503 from the connection cap
    // never reaches the handlers' metrics).
    let failed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let pct = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| {
                let mut parts = l.split_whitespace();
                (parts.next() == Some(name)).then(|| parts.next()).flatten()
            })
            .and_then(parse_wrk_duration)
            .with_context(|| format!("no {name} latency in wrk's output:\n{text}"))
    };
    // "Socket errors: connect 0, read 12, write 0, timeout 3"
    let mut socket_errors = [0u64; 4];
    if let Some(rest) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
    {
        for (slot, part) in socket_errors.iter_mut().zip(rest.split(',')) {
            *slot = part
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok(Load {
        connections,
        qps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        socket_errors,
        failed,
        evicted: 0,
        shed: 0,
    })
}

/// wrk's durations ("812.00us", "1.23ms", "2.01s") in milliseconds.
fn parse_wrk_duration(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn print_table(args: &BenchSearchArgs, rows: &[Row]) {
    println!();
    println!(
        "aisle bench search (HNSW M = {}, efConstruction = {}; k = {}, one client: {} sequential keep-alive requests; load: wrk, {} connections, {} s; half the requests personalized)",
        args.connectivity, args.expansion_add, args.k, args.requests, args.connections[0], args.seconds
    );
    println!(
        "| products | index | ef | recall@10 | 10th sim. gap | build s | index bytes/product | 1 client p50 ms | p99 ms | mean ms | {} conn. q/s | p50 ms | p99 ms |",
        args.connections[0]
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |x| format!("{x:.digits$}"));
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.4} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            fmt_n(r.products),
            r.index,
            r.effort.map_or("-".into(), |e| e.to_string()),
            r.recall_at_10,
            r.kth_gap,
            r.build_s,
            r.bytes_per_product,
            r.p50_ms,
            r.p99_ms,
            r.mean_ms,
            opt(r.load.first().map(|l| l.qps), 0),
            opt(r.load.first().map(|l| l.p50_ms), 2),
            opt(r.load.first().map(|l| l.p99_ms), 2)
        );
    }
    if args.connections.len() > 1 {
        println!();
        println!(
            "load (wrk, 2 threads, {} s a run; the server's limits as `aisle serve` has them: cap {} connections, header timeout {} s)",
            args.seconds,
            aisle_serve::effective_cap(aisle_serve::Limits::default().max_connections),
            aisle_serve::Limits::default().header_timeout.as_secs()
        );
        println!("| products | index | ef | connections | q/s | p50 ms | p99 ms | non-2xx | socket errors: connect / read / write / timeout | evicted | shed (503) |");
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            for l in &r.load {
                println!(
                    "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
                    fmt_n(r.products),
                    r.index,
                    r.effort.map_or("-".into(), |e| e.to_string()),
                    l.connections,
                    l.qps,
                    l.p50_ms,
                    l.p99_ms,
                    l.failed,
                    l.socket_errors
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" / "),
                    l.evicted,
                    l.shed
                );
            }
        }
    }
    println!(
        "goals on 2 cores: p99 < 5 ms for one client at 1M products; >= 2,000 q/s at 100k products"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_durations_and_query_encoding() {
        assert_eq!(parse_wrk_duration("812.00us"), Some(0.812));
        assert_eq!(parse_wrk_duration("1.50ms"), Some(1.5));
        assert_eq!(parse_wrk_duration("2.00s"), Some(2000.0));
        assert_eq!(parse_wrk_duration("fast"), None);
        assert_eq!(encode_query("red shoes & co"), "red+shoes+%26+co");
    }
}
