//! Request counts and latency histograms in Prometheus' text format.
//!
//! Written by hand: a handful of counters under one mutex, rendered as text, is all `/metrics`
//! needs; a metrics crate would add a registry and a dependency tree for no gain here. The lock
//! is held for a map lookup and two additions per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; summed when rendered), then +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (route, status) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    /// route -> latency.
    latency: BTreeMap<String, Histogram>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts one answered request of `route` (the matched pattern, like `/products/{id}`).
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        *m.requests.entry((route.to_owned(), status)).or_default() += 1;
        let h = m.latency.entry(route.to_owned()).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        h.counts[bucket] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    /// Requests counted for `route` with `status`.
    pub fn count(&self, route: &str, status: u16) -> u64 {
        let m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.requests
            .get(&(route.to_owned(), status))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition, with `extra` gauge lines (already formatted) appended.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut out = String::new();
        out.push_str(
            "# HELP aisle_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE aisle_http_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "aisle_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP aisle_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE aisle_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            let route = escape(route);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "aisle_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[BUCKETS.len()];
            let _ = writeln!(
                out,
                "aisle_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "aisle_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "aisle_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counts_by_status() {
        let m = Metrics::default();
        m.observe("/search", 200, 0.0004);
        m.observe("/search", 200, 0.003);
        m.observe("/search", 400, 9.0);
        let text = m.render(&[("aisle_products", "Products served.", 10.0)]);
        assert!(text.contains("aisle_http_requests_total{route=\"/search\",status=\"200\"} 2"));
        assert!(text.contains("aisle_http_requests_total{route=\"/search\",status=\"400\"} 1"));
        assert!(text.contains(
            "aisle_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "aisle_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "aisle_http_request_duration_seconds_bucket{route=\"/search\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("aisle_http_request_duration_seconds_count{route=\"/search\"} 3"));
        assert!(text.contains("aisle_products 10"));
        assert_eq!(m.count("/search", 200), 2);
        assert_eq!(m.count("/nope", 200), 0);
    }
}
