//! The Qdrant side of a benchmark: the upload, a Searcher over the uploaded vectors, what the
//! REST path adds, and the nodes' resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, Histories};
use aisle_model::Model;
use aisle_search::{
    qdrant, FieldBoosts, IndexChoice, QdrantConfig, Searcher, SearcherOptions, VectorIndex,
};

use super::error::BenchError;
use super::options::{BenchOptions, QdrantBench};

/// Uploads the catalog's vectors to Qdrant (as `aisle index --backend qdrant` does, under the
/// alias `aisle-bench-N`) and opens a Searcher over them; returns it, the upload's seconds and
/// the collection.
pub fn on_qdrant(
    options: &BenchOptions,
    q: &QdrantBench,
    ds: &Arc<Dataset>,
    model: Model,
    vectors: Vec<f32>,
) -> Result<(Searcher, f64, String), BenchError> {
    use std::hash::{Hash, Hasher};
    let client = qdrant::Client::connect(&q.config)?;
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
            layout: qdrant::Layout {
                collection: None,
                shards: q.shards,
                replicas: q.replicas,
                keep: q.keep,
                batch: q.batch,
                hnsw_m: options.connectivity,
                ef_construct: options.expansion_add,
                // The BM25 the Searcher builds, as sparse vectors beside the dense ones (as
                // `aisle index --backend qdrant` uploads them).
                bm25: Some(FieldBoosts::default()),
            },
        },
        &mut |done, total| {
            if done == total || done % 100_000 < q.batch {
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
        q.shards,
        q.replicas
    );
    let searcher = Searcher::with_vectors(
        Arc::clone(ds),
        model,
        vectors,
        Histories::all(ds),
        &SearcherOptions {
            index: IndexChoice::Qdrant(qdrant::QdrantTarget {
                config: q.config.clone(),
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
pub fn rest_overhead(
    searcher: &Searcher,
    cfg: &QdrantConfig,
    collection: &str,
    texts: &[&str],
    effort: usize,
) -> Result<String, BenchError> {
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
pub fn resident_bytes(cfg: &QdrantConfig) -> Result<Vec<(String, f64)>, BenchError> {
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
                .map_err(|source| BenchError::NodeMetrics {
                    node: url.clone(),
                    source,
                })?
                .body_mut()
                .read_to_string()
                .map_err(|source| BenchError::NodeMetricsBody {
                    node: url.clone(),
                    source,
                })?;
            let bytes = text
                .lines()
                .find_map(|l| l.strip_prefix("memory_resident_bytes "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| BenchError::NoResidentBytes { node: url.clone() })?;
            Ok((format!("{url} (/metrics memory_resident_bytes)"), bytes))
        })
        .collect()
}
