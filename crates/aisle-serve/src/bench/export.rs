//! The vectors of a benchmark, written for other ANN libraries to be measured on, beside the
//! embedded index's own figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aisle_core::stats::fmt_n;
use aisle_search::Searcher;

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
    let mut tsv =
        String::from("system\tM\tefConstruction\tbuild_s\tef\trecall_at_10\tqueries_per_s\n");
    for &ef in &options.expansion_search {
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
            "aisle ({})\t{}\t{}\t{build_s:.1}\t{ef}\t{recall:.4}\t{qps:.0}",
            searcher.index_kind(),
            options.connectivity,
            options.expansion_add
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
