//! The serving benchmark (`aisle bench search`): what serving costs at a given catalog size.
//!
//! For each size the caller makes a world and a briefly trained model (its weights shape the
//! vectors, so the ANN is measured on embedding-like data, not on random vectors); here the
//! catalog is encoded, the index built (HNSW above 20,000 products, as `aisle serve` does), and
//! the real HTTP server started on 127.0.0.1 in this process, then measured:
//! - one client, keep-alive, one request after the other: p50 / p99 / mean end-to-end latency
//!   (client.rs);
//! - the index's recall@10 against exact search on the world's test queries (speed is never
//!   shown without its recall cost);
//! - concurrent connections with wrk (wrk.rs), rotating over the same queries: queries per
//!   second, wrk's p50 / p99 and socket errors, and the connections the server's cap closed or
//!   refused, with the server's connection limits on, as `aisle serve` runs them.
//!
//! With [`QdrantBench`] each size is measured a second time with the vectors in Qdrant
//! (qdrant.rs), beside the embedded index, with the upload time, the nodes' resident memory
//! and what the REST path adds. With [`OtherTowers`] each size is also served with those towers
//! (all-MiniLM-L6-v2), query encoding included in the latency. With
//! [`BenchOptions::export_vectors`] the vectors are written for other ANN libraries
//! (export.rs). The tables (table.rs) are printed after each size.
//!
//! Half the requests name a customer with history (personalized), half do not. The server, the
//! load generator and this process share the machine's cores.

mod client;
mod error;
mod export;
mod options;
mod qdrant;
mod table;
mod wrk;

use std::sync::Arc;
use std::time::Instant;

use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, Histories};
use aisle_model::Model;
use aisle_search::{HnswParams, IndexChoice, Searcher, SearcherOptions};

pub use error::{BenchError, BoxError};
pub use options::{BenchOptions, OtherTowers, QdrantBench};
pub use table::{render, Load, Row};

use crate::{App, ServeOptions};

/// Measures every size of `options`: `world` makes each size's world (with its default split)
/// and its model; `other` adds a second set of towers. Prints progress on stderr and the tables
/// on stdout after each size; returns every row.
pub fn run(
    options: &BenchOptions,
    world: &mut dyn FnMut(usize) -> Result<(Dataset, Model), BoxError>,
    other: Option<&OtherTowers>,
) -> Result<Vec<Row>, BenchError> {
    options.validate()?;
    // As `aisle serve` does: 1,000 connections need more than the common 1,024 open files
    // once the server's side of each is counted (wrk inherits the raised limit).
    eprintln!(
        "{} (the server's cap)",
        crate::raise_open_files_and_say(crate::Limits::default().max_connections)
    );
    let wrk_ok = wrk::available(&options.wrk);
    if !wrk_ok {
        eprintln!(
            "note: {} not found: the throughput column is skipped (install it with scripts/install-wrk.sh)",
            options.wrk.display()
        );
    }
    let mut rows = Vec::new();
    for &n in &options.sizes {
        let (ds, model) = world(n).map_err(|e| BenchError::World(e).at(n))?;
        rows.extend(bench_size(options, n, ds, model, other, wrk_ok).map_err(|e| e.at(n))?);
        print!("{}", table::render(options, &rows));
    }
    Ok(rows)
}

/// One size: the embedded index, then the other towers and Qdrant where asked for.
fn bench_size(
    options: &BenchOptions,
    products: usize,
    ds: Dataset,
    model: Model,
    other: Option<&OtherTowers>,
    wrk: bool,
) -> Result<Vec<Row>, BenchError> {
    let ds = Arc::new(ds);
    let m = Measure {
        options,
        products,
        texts: client::test_texts(&ds)?,
        queries: client::query_paths(&ds, options.k),
        wrk,
    };
    let texts: Vec<&str> = m.texts.iter().map(String::as_str).collect();
    let index = if products > 20_000 {
        IndexChoice::Hnsw(HnswParams {
            connectivity: options.connectivity,
            expansion_add: options.expansion_add,
            build_threads: options.build_threads,
            walker: options.walker,
            ..HnswParams::default()
        })
    } else {
        IndexChoice::Exact
    };
    let t = Instant::now();
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
    let encode_s = t.elapsed().as_secs_f64();
    let kept = options.qdrant.is_some().then(|| vectors.clone());
    let t = Instant::now();
    let searcher_options = SearcherOptions {
        index,
        ..SearcherOptions::default()
    };
    let searcher = Searcher::with_vectors(
        Arc::clone(&ds),
        model.clone(),
        vectors,
        Histories::all(&ds),
        &searcher_options,
    )?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[{}] encoded in {encode_s:.1} s; {} index and BM25 built in {build_s:.1} s",
        fmt_n(products),
        searcher.index_kind()
    );
    if let Some(dir) = &options.export_vectors {
        export::export(
            options,
            &dir.join(products.to_string()),
            &searcher,
            &texts,
            build_s,
        )?;
    }
    let bytes = searcher.index_bytes() as f64;
    let mut rows = m.measure(searcher, build_s, bytes)?;
    if let Some(other) = other {
        let t = Instant::now();
        let encoder = (other.load)().map_err(|source| BenchError::OtherTowers {
            name: other.name.clone(),
            source,
        })?;
        let searcher = Searcher::build(
            Arc::clone(&ds),
            encoder,
            Histories::all(&ds),
            &searcher_options,
        )?;
        let build_s = t.elapsed().as_secs_f64();
        eprintln!(
            "[{}] MiniLM ({}): catalog encoded and {} index built in {build_s:.1} s",
            fmt_n(products),
            other.name,
            searcher.index_kind()
        );
        let bytes = searcher.index_bytes() as f64;
        rows.extend(m.measure(searcher, build_s, bytes)?);
    }
    if let (Some(q), Some(vectors)) = (&options.qdrant, kept) {
        let (searcher, upload_s, collection) = qdrant::on_qdrant(options, q, &ds, model, vectors)?;
        let effort = options.expansion_search.last().copied().unwrap_or(0);
        let rest = qdrant::rest_overhead(&searcher, &q.config, &collection, &texts, effort)?;
        let resident = qdrant::resident_bytes(&q.config)?;
        let total: f64 = resident.iter().map(|(_, b)| b).sum();
        rows.extend(m.measure(searcher, upload_s, total)?);
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

/// What every Searcher of one size is measured with.
struct Measure<'a> {
    options: &'a BenchOptions,
    products: usize,
    /// The test queries' distinct texts, for recall.
    texts: Vec<String>,
    /// Request paths over the test queries.
    queries: Vec<String>,
    /// Whether wrk runs.
    wrk: bool,
}

impl Measure<'_> {
    /// Recall, one-client latency and (with wrk) throughput of `searcher` behind the real HTTP
    /// server, one row per search effort.
    fn measure(
        &self,
        searcher: Searcher,
        build_s: f64,
        bytes: f64,
    ) -> Result<Vec<Row>, BenchError> {
        let (options, products) = (self.options, self.products);
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let index_kind = searcher.index_kind();
        let mut label = match (&options.qdrant, index_kind) {
            (Some(q), "qdrant") => format!(
                "qdrant, {} node(s), {} shard(s) x {} replica(s)",
                q.config.urls.len(),
                q.shards,
                q.replicas
            ),
            _ => index_kind.to_owned(),
        };
        // The n-gram towers are the default and go unnamed, as in earlier tables.
        let encoder = searcher.encoder().kind();
        if encoder != "n-gram" {
            label = format!("{label}, {encoder} towers");
        }
        let efforts: Vec<Option<usize>> = if index_kind == "exact" {
            vec![None]
        } else {
            options
                .expansion_search
                .iter()
                .map(|&e| Some(e.max(1)))
                .collect()
        };
        let server = crate::spawn(
            App::new(searcher, None, ServeOptions::default()),
            "127.0.0.1:0",
        )
        .map_err(BenchError::Server)?;
        let base = server.url();
        let mut rows = Vec::new();
        for (i, effort) in efforts.iter().enumerate() {
            let searcher = server.app().searcher();
            if let Some(e) = effort {
                searcher.set_search_effort(*e);
            }
            let quality = searcher.index_recall(&texts, 10)?;
            let (recall_at_10, kth_gap) = (quality.recall, quality.kth_gap);
            drop(searcher);
            let latency = client::one_client(&base, &self.queries, options.requests)?;
            let last = i + 1 == efforts.len();
            let load = if self.wrk && last {
                self.load(server.app(), &base)
            } else {
                Vec::new()
            };
            eprintln!(
                "[{}] {index_kind} ef {}: recall@10 {recall_at_10:.3} (10th similarity {kth_gap:.4} below exact), one client p50 {:.2} ms, p99 {:.2} ms",
                fmt_n(products),
                effort.map_or("-".into(), |e| e.to_string()),
                latency.p50_ms,
                latency.p99_ms
            );
            rows.push(Row {
                products,
                index: label.clone(),
                effort: *effort,
                recall_at_10,
                kth_gap,
                build_s,
                bytes_per_product: bytes / products.max(1) as f64,
                p50_ms: latency.p50_ms,
                p99_ms: latency.p99_ms,
                mean_ms: latency.mean_ms,
                load,
            });
        }
        let errors: u64 = [400u16, 404, 413, 422, 500, 502, 503]
            .iter()
            .map(|&s| server.app().metrics.count("/search", s))
            .sum();
        if errors > 0 {
            return Err(BenchError::FailedRequests(errors));
        }
        server.stop();
        Ok(rows)
    }

    /// One wrk run per connection count against the server of `app` at `base`, with the
    /// connections its cap closed or refused meanwhile; a failed run is said and left out.
    fn load(&self, app: &App, base: &str) -> Vec<Load> {
        let products = fmt_n(self.products);
        let seen = |s: &App| s.connections().map_or((0, 0), |c| (c.evicted, c.shed));
        let mut load = Vec::new();
        for &connections in &self.options.connections {
            let before = seen(app);
            match wrk::run(
                &self.options.wrk,
                self.options.seconds,
                base,
                &self.queries,
                connections,
            ) {
                Ok(w) => {
                    let after = seen(app);
                    eprintln!(
                        "[{products}] wrk, {connections} connections: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms",
                        w.qps,
                        w.p50_ms,
                        w.p99_ms
                    );
                    if w.failed > 0 {
                        eprintln!(
                            "[{products}] wrk, {connections} connections: {} answers were not 2xx",
                            w.failed
                        );
                    }
                    load.push(Load {
                        evicted: after.0 - before.0,
                        shed: after.1 - before.1,
                        ..w
                    });
                }
                Err(e) => eprintln!(
                    "wrk with {connections} connections failed: {}",
                    aisle_core::error::with_sources(&e)
                ),
            }
        }
        load
    }
}
