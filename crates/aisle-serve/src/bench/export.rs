//! The vectors of a benchmark, written for other ANN libraries to be measured on, beside the
//! embedded index's own figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aisle_core::stats::fmt_n;
use aisle_search::{Searcher, VectorIndex, Walker};

use super::error::BenchError;
use super::options::BenchOptions;

/// Writes the catalog's and the queries' vectors as .npy, and times the index alone: for each
/// ef, recall@10 against exact search and queries per second, one query after the other on one
/// thread (aisle-ann.tsv: system, M, efConstruction, build s, ef, recall@10, queries/s).
pub fn export(
    options: &BenchOptions,
    dir: &Path,
    searcher: &Searcher,
    texts: &[&str],
    build_s: f64,
) -> Result<(), BenchError> {
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
        aisle_core::io::write_atomic(&path, |w| w.write_all(bytes)).map_err(|source| {
            BenchError::File {
                doing: "writing",
                path,
                source,
            }
        })
    };
    let npy = |values: &[f32]| aisle_core::io::npy_bytes(values, values.len() / d, d);
    write("products.npy", &npy(&products))?;
    write("queries.npy", &npy(&queries))?;
    let index = searcher.index();
    let exact = aisle_search::ExactIndex::new(d, products)?;
    // An HNSW graph is also walked by the other walker, the same graph: usearch's own search
    // against aisle's flat copy (vector::flat).
    let other = match index.as_hnsw() {
        Some(h) => {
            let walker = match h.walker() {
                Walker::Flat => Walker::Usearch,
                Walker::Usearch => Walker::Flat,
            };
            Some(h.with_walker(walker)?)
        }
        None => None,
    };
    let mut systems: Vec<(String, &dyn VectorIndex)> = Vec::new();
    let name = |index: &dyn VectorIndex| match index.as_hnsw() {
        Some(h) => format!("aisle (hnsw, {} walker)", h.walker().name()),
        None => format!("aisle ({})", searcher.index_kind()),
    };
    systems.push((name(index), index));
    if let Some(o) = &other {
        systems.push((name(o), o));
    }
    let mut tsv =
        String::from("system\tM\tefConstruction\tbuild_s\tef\trecall_at_10\tqueries_per_s\n");
    for (system, index) in &systems {
        for &ef in &options.expansion_search {
            index.set_search_effort(ef);
            let recall = aisle_search::ann_quality(*index, &exact, &queries, 10)?.recall;
            let t = Instant::now();
            let mut done = 0;
            while done < 2000 || t.elapsed() < Duration::from_secs(1) {
                let q = &queries[(done % (queries.len() / d)) * d..][..d];
                std::hint::black_box(index.search(q, 10)?);
                done += 1;
            }
            let qps = done as f64 / t.elapsed().as_secs_f64();
            eprintln!(
                "[{}] {system}, ef {ef}: recall@10 {recall:.4}, {qps:.0} queries/s on one thread",
                fmt_n(n)
            );
            let _ = writeln!(
                tsv,
                "{system}\t{}\t{}\t{build_s:.1}\t{ef}\t{recall:.4}\t{qps:.0}",
                options.connectivity, options.expansion_add
            );
        }
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
