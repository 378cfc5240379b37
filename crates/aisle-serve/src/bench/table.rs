//! The figures of a serving benchmark, and their Markdown tables.

use std::fmt::Write as _;

use aisle_core::stats::fmt_n;

use super::options::BenchOptions;

/// One index's figures at one size and one search effort.
#[derive(Clone, Debug)]
pub struct Row {
    pub products: usize,
    pub index: String,
    /// HNSW ef, for an approximate index.
    pub effort: Option<usize>,
    pub recall_at_10: f64,
    /// Exact 10th similarity minus the index's.
    pub kth_gap: f64,
    pub build_s: f64,
    pub bytes_per_product: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// One wrk run per connection count (the last effort only).
    pub load: Vec<Load>,
}

/// One throughput run.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub connections: usize,
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// wrk's socket errors: connect, read, write, timeout (a request over wrk's 2 s timeout).
    pub socket_errors: [u64; 4],
    /// Answers other than 2xx / 3xx.
    pub failed: u64,
    /// Connections the server closed to make room, and refused with a 503, during the run.
    pub evicted: u64,
    pub shed: u64,
}

/// The tables of `rows`, as printed after each size: a blank line, the main table (the first
/// connection count's throughput), the load table when there are several counts, and the goals.
pub fn render(options: &BenchOptions, rows: &[Row]) -> String {
    let mut out = String::new();
    let first = options.connections.first().copied().unwrap_or(0);
    // Writing to a String cannot fail.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "aisle bench search (HNSW M = {}, efConstruction = {}; k = {}, one client: {} sequential keep-alive requests; load: wrk, {} connections, {} s; half the requests personalized)",
        options.connectivity, options.expansion_add, options.k, options.requests, first, options.seconds
    );
    let _ = writeln!(
        out,
        "| products | index | ef | recall@10 | 10th sim. gap | build s | index bytes/product | 1 client p50 ms | p99 ms | mean ms | {first} conn. q/s | p50 ms | p99 ms |",
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |x| format!("{x:.digits$}"));
    let effort = |r: &Row| r.effort.map_or("-".into(), |e| e.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.4} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            fmt_n(r.products),
            r.index,
            effort(r),
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
    if options.connections.len() > 1 {
        let limits = crate::Limits::default();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "load (wrk, 2 threads, {} s a run; the server's limits as `aisle serve` has them: cap {} connections, header timeout {} s)",
            options.seconds,
            crate::effective_cap(limits.max_connections),
            limits.header_timeout.as_secs()
        );
        let _ = writeln!(out, "| products | index | ef | connections | q/s | p50 ms | p99 ms | non-2xx | socket errors: connect / read / write / timeout | evicted | shed (503) |");
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in rows {
            for l in &r.load {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
                    fmt_n(r.products),
                    r.index,
                    effort(r),
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
    let _ = writeln!(
        out,
        "goals on 2 cores: p99 < 5 ms for one client at 1M products; >= 2,000 q/s at 100k products"
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn options(connections: Vec<usize>) -> BenchOptions {
        BenchOptions {
            sizes: vec![2000],
            requests: 200,
            connections,
            seconds: 2,
            expansion_search: vec![64, 256],
            connectivity: 16,
            expansion_add: 128,
            build_threads: 0,
            walker: aisle_search::Walker::default(),
            k: 10,
            wrk: PathBuf::from("wrk"),
            export_vectors: None,
            qdrant: None,
        }
    }

    fn row(effort: Option<usize>, load: Vec<Load>) -> Row {
        Row {
            products: 100_000,
            index: "hnsw".to_owned(),
            effort,
            recall_at_10: 0.98765,
            kth_gap: 0.00123,
            build_s: 12.34,
            bytes_per_product: 1350.4,
            p50_ms: 0.3449,
            p99_ms: 0.6,
            mean_ms: 0.351,
            load,
        }
    }

    fn load(connections: usize) -> Load {
        Load {
            connections,
            qps: 2345.6,
            p50_ms: 20.0,
            p99_ms: 111.376,
            socket_errors: [0, 12, 0, 3],
            failed: 17,
            evicted: 2,
            shed: 1,
        }
    }

    #[test]
    fn main_table_shows_the_first_connection_count() {
        let rows = [row(Some(64), vec![]), row(Some(256), vec![load(64)])];
        let text = render(&options(vec![64]), &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert!(lines[1].starts_with("aisle bench search (HNSW M = 16, efConstruction = 128; k = 10, one client: 200 sequential keep-alive requests; load: wrk, 64 connections, 2 s;"));
        assert!(
            lines[2].ends_with("| 64 conn. q/s | p50 ms | p99 ms |"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[4],
            "| 100,000 | hnsw | 64 | 0.988 | 0.0012 | 12.3 | 1350 | 0.34 | 0.60 | 0.35 | n/a | n/a | n/a |"
        );
        assert_eq!(
            lines[5],
            "| 100,000 | hnsw | 256 | 0.988 | 0.0012 | 12.3 | 1350 | 0.34 | 0.60 | 0.35 | 2346 | 20.00 | 111.38 |"
        );
        assert!(lines[6].starts_with("goals on 2 cores:"));
        assert_eq!(
            lines.len(),
            7,
            "one connection count, no load table:\n{text}"
        );
    }

    #[test]
    fn load_table_lists_every_run() {
        let rows = [row(None, vec![load(64), load(1000)])];
        let text = render(&options(vec![64, 1000]), &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[5], "");
        assert!(
            lines[6].starts_with("load (wrk, 2 threads, 2 s a run;"),
            "{}",
            lines[6]
        );
        assert_eq!(
            lines[9],
            "| 100,000 | hnsw | - | 64 | 2346 | 20.00 | 111.38 | 17 | 0 / 12 / 0 / 3 | 2 | 1 |"
        );
        assert!(lines[10].starts_with("| 100,000 | hnsw | - | 1000 |"));
        assert!(lines[11].starts_with("goals on 2 cores:"));
        assert!(text.ends_with('\n'));
    }
}
