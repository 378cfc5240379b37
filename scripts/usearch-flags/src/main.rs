//! One usearch graph, searched by this program built with different C++ flags (see
//! ../bench-usearch-flags.sh). `build DIR M EFC` builds an index over DIR/products.npy (as
//! exported by `aisle bench search --export-vectors`) in a fixed shuffled order and saves it;
//! `load DIR M EFC EF,EF,...` (or `view`: memory-mapped, immutable) loads it and prints recall@10
//! against exact search (cached in DIR) and queries per second on one thread for each ef.
//! With USEARCH_FLAGS_SCALAR=i8 the graph holds i8 vectors (each scaled to 127 / its norm, as
//! aisle's `--i8` index does) in its own file; recall then counts only exact-top-10 keys.
use std::time::{Duration, Instant};

use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn npy(path: &str) -> Res<(Vec<f32>, usize, usize)> {
    let b = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let bad = || format!("{path}: not a 2-d little-endian f32 .npy");
    let hl = u16::from_le_bytes([*b.get(8).ok_or_else(bad)?, *b.get(9).ok_or_else(bad)?]) as usize;
    let h = std::str::from_utf8(b.get(10..10 + hl).ok_or_else(bad)?).map_err(|_| bad())?;
    let s = h.find("'shape': (").ok_or_else(bad)? + 10;
    let e = s + h[s..].find(')').ok_or_else(bad)?;
    let dims: Vec<usize> = h[s..e]
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().map_err(|_| bad()))
        .collect::<Res<_>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad());
    };
    let data = b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((data, rows, cols))
}

/// Scales to 127 / norm and rounds, as aisle's `--i8` index does.
fn quantize(v: &[f32]) -> Vec<i8> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let scale = if norm > 0.0 { 127.0 / norm } else { 0.0 };
    v.iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

fn arg<T: std::str::FromStr>(a: &[String], i: usize, what: &str) -> Res<T> {
    a.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("{what}: cannot read `{}`", a[i]))
}

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    let mode: String = arg(&a, 1, "mode (build, load or view)")?;
    let dir: String = arg(&a, 2, "DIR")?;
    let m: usize = arg(&a, 3, "M")?;
    let efc: usize = arg(&a, 4, "efConstruction")?;
    let (p, n, d) = npy(&format!("{dir}/products.npy"))?;
    let i8 = match std::env::var("USEARCH_FLAGS_SCALAR").as_deref() {
        Ok("i8") => true,
        Ok("f32") | Err(_) => false,
        Ok(other) => return Err(format!("USEARCH_FLAGS_SCALAR `{other}`: f32 or i8")),
    };
    let opts = IndexOptions {
        dimensions: d,
        metric: MetricKind::IP,
        quantization: if i8 { ScalarKind::I8 } else { ScalarKind::F32 },
        connectivity: m,
        expansion_add: efc,
        expansion_search: 64,
        multi: false,
    };
    let scalar = if i8 { "-i8" } else { "" };
    let path = format!("{dir}/usearch-flags{scalar}-M{m}-efc{efc}.usearch");
    let index = Index::new(&opts).map_err(err)?;
    // Adds or searches one row, as f32 or quantized to i8.
    let add = |key: usize, row: &[f32]| {
        if i8 {
            index.add(key as u64, &quantize(row))
        } else {
            index.add(key as u64, row)
        }
        .map_err(err)
    };
    let search = |row: &[f32]| {
        if i8 {
            index.search(&quantize(row), 10)
        } else {
            index.search(row, 10)
        }
        .map_err(err)
    };
    if mode == "build" {
        index.reserve_capacity_and_threads(n, 2).map_err(err)?;
        let mut order: Vec<usize> = (0..n).collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let t = Instant::now();
        order
            .par_iter()
            .try_for_each(|&i| add(i, &p[i * d..(i + 1) * d]))?;
        eprintln!(
            "built {n} x {d} in {:.1} s: {path}",
            t.elapsed().as_secs_f64()
        );
        return index.save(&path).map_err(err);
    }
    match mode.as_str() {
        "load" => index.load(&path).map_err(err)?,
        "view" => index.view(&path).map_err(err)?,
        other => return Err(format!("unknown mode `{other}`: build, load or view")),
    }
    let efs: String = arg(&a, 5, "EF list")?;
    let (q, nq, _) = npy(&format!("{dir}/queries.npy"))?;
    let nq = nq.min(2000);
    let tpath = format!("{dir}/usearch-flags-truth.bin");
    let truth: Vec<(u64, f32)> = match std::fs::read(&tpath) {
        Ok(b) => b
            .chunks_exact(12)
            .map(|c| {
                let k = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                (k, f32::from_le_bytes(c[8..].try_into().unwrap_or_default()))
            })
            .collect(),
        Err(_) => {
            let t: Vec<(u64, f32)> = (0..nq)
                .into_par_iter()
                .flat_map_iter(|i| {
                    let qq = &q[i * d..(i + 1) * d];
                    let mut s: Vec<(f32, usize)> = (0..n)
                        .map(|j| {
                            (
                                p[j * d..(j + 1) * d]
                                    .iter()
                                    .zip(qq)
                                    .map(|(x, y)| x * y)
                                    .sum(),
                                j,
                            )
                        })
                        .collect();
                    s.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
                    s.truncate(10);
                    s.sort_by(|a, b| b.0.total_cmp(&a.0));
                    s.into_iter()
                        .map(|(v, j)| (j as u64, v))
                        .collect::<Vec<_>>()
                })
                .collect();
            let b: Vec<u8> = t
                .iter()
                .flat_map(|(k, v)| k.to_le_bytes().into_iter().chain(v.to_le_bytes()))
                .collect();
            std::fs::write(&tpath, b).map_err(|e| format!("{tpath}: {e}"))?;
            t
        }
    };
    for ef in efs.split(',') {
        let ef: usize = ef.parse().map_err(|_| format!("ef `{ef}`"))?;
        index.change_expansion_search(ef);
        let mut hits = 0usize;
        for i in 0..nq {
            let r = search(&q[i * d..(i + 1) * d])?;
            let tr = &truth[i * 10..(i + 1) * 10];
            // A tie with the exact 10th counts as a hit, as in aisle's own recall.
            hits += r
                .keys
                .iter()
                .zip(&r.distances)
                .filter(|(k, dist)| {
                    tr.iter().any(|t| t.0 == **k) || (!i8 && 1.0 - **dist >= tr[9].1 - 1e-5)
                })
                .count();
        }
        let t = Instant::now();
        let mut done = 0;
        while done < 2000 || t.elapsed() < Duration::from_secs(2) {
            std::hint::black_box(search(&q[(done % nq) * d..][..d])?);
            done += 1;
        }
        println!(
            "{mode}{scalar}\tef {ef}\trecall@10 {:.4}\t{:.0} queries/s",
            hits as f64 / (10 * nq) as f64,
            done as f64 / t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
