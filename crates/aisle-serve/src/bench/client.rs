//! The requests of a benchmark, and one client sending them one after the other.

use std::time::{Duration, Instant};

use aisle_core::Dataset;

use super::error::BenchError;

/// Request paths over the world's test queries, every other one with its customer.
pub fn query_paths(ds: &Dataset, k: usize) -> Vec<String> {
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

/// The distinct texts of the world's test queries, the first 1,000 (for recall).
pub fn test_texts(ds: &Dataset) -> Result<Vec<String>, BenchError> {
    let split = ds.default_split().ok_or(BenchError::NoSplit)?;
    let mut seen = std::collections::HashSet::new();
    Ok(split
        .test
        .iter()
        .map(|q| ds.queries.text(q.query))
        .filter(|t| seen.insert(*t))
        .take(1000)
        .map(str::to_owned)
        .collect())
}

/// Percent-encodes a query-string value.
pub fn encode_query(s: &str) -> String {
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

/// One-client latency, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// Sequential keep-alive requests to `base`: 200 to warm up over `paths` in turn, then `n`
/// timed ones.
pub fn one_client(base: &str, paths: &[String], n: usize) -> Result<Latency, BenchError> {
    if paths.is_empty() || n == 0 {
        return Err(BenchError::NoRequests);
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
            .map_err(|source| BenchError::Request {
                path: path.clone(),
                source,
            })?;
        r.body_mut().read_to_vec().map_err(BenchError::Response)?;
        if i >= 200 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean_ms = times.iter().sum::<f64>() / times.len().max(1) as f64;
    Ok(Latency {
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        mean_ms,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aisle_core::Histories;
    use aisle_model::{Model, ModelConfig};
    use aisle_search::{Searcher, SearcherOptions};

    use super::*;
    use crate::{App, ServeOptions};

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("red shoes & co"), "red+shoes+%26+co");
        assert_eq!(encode_query("a-b_c.d~é"), "a-b_c.d~%C3%A9");
    }

    /// The one client against a real server over a tiny world: every path answers, half of
    /// them personalized, and the figures are ordered.
    #[test]
    fn one_client_against_a_served_world() {
        let ds = Arc::new(aisle_core::synth::small_dataset(300, 20, 200, 5).unwrap());
        let paths = query_paths(&ds, 5);
        assert!(paths.len() > 10);
        assert!(paths
            .iter()
            .all(|p| p.starts_with("/search?q=") && p.contains("&k=5")));
        assert!(paths.iter().any(|p| p.contains("&user=")));
        assert!(!test_texts(&ds).unwrap().is_empty());
        let mut cfg = ModelConfig::default();
        cfg.featurizer.buckets_log2 = 12;
        cfg.tower.dim = 16;
        let searcher = Searcher::build(
            Arc::clone(&ds),
            Model::new(cfg),
            Histories::all(&ds),
            &SearcherOptions::default(),
        )
        .unwrap();
        let server = crate::spawn(
            App::new(searcher, None, ServeOptions::default()),
            "127.0.0.1:0",
        )
        .unwrap();
        let latency = one_client(&server.url(), &paths, 50).unwrap();
        assert!(latency.p50_ms > 0.0 && latency.p50_ms <= latency.p99_ms);
        assert!(latency.mean_ms > 0.0);
        assert_eq!(server.app().metrics.count("/search", 200), 250);
        let err = one_client(&server.url(), &["/nowhere".to_owned()], 1).unwrap_err();
        assert!(err.to_string().starts_with("GET /nowhere"), "{err}");
        assert!(matches!(
            one_client(&server.url(), &[], 1),
            Err(BenchError::NoRequests)
        ));
        server.stop();
    }
}
