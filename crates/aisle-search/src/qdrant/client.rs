//! A small REST client for Qdrant 1.17: one keep-alive connection pool over every node of a
//! cluster, requests spread round-robin over the nodes, and a failed attempt (the node is down,
//! timed out, or answered 5xx) retried on the next node, with backoff after each full round.
//!
//! REST rather than the `qdrant-client` crate: aisle already has a blocking HTTP client (ureq),
//! and the gRPC crate brings tonic, prost and a second runtime into every build. What the REST
//! path costs over the server's own time is measured by `aisle bench search --backend qdrant`
//! (docs/scale-out.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Result, SearchError};

/// The Qdrant release line this client speaks: a server of another major.minor is refused.
pub const QDRANT_VERSION: &str = "1.17";

/// Where a Qdrant deployment is and how hard to try it.
#[derive(Clone, Debug)]
pub struct QdrantConfig {
    /// REST base URLs of the nodes (`http://host:6333`); any node of a cluster answers for the
    /// whole collection, the others stand by for retries.
    pub urls: Vec<String>,
    /// Limit on one attempt (connect, send, read).
    pub timeout: Duration,
    /// Attempts per request, over the nodes in turn, before giving up.
    pub attempts: usize,
    /// Sent as `api-key` when the deployment asks for one.
    pub api_key: Option<String>,
}

impl QdrantConfig {
    /// One or more URLs, comma-separated or given separately, with the default limits.
    pub fn new<S: AsRef<str>>(urls: &[S]) -> QdrantConfig {
        QdrantConfig {
            urls: urls
                .iter()
                .flat_map(|u| u.as_ref().split(','))
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            timeout: Duration::from_secs(10),
            attempts: 6,
            api_key: None,
        }
    }
}

impl QdrantConfig {
    /// [`QdrantConfig::new`] with a limit of `timeout_ms` (at least 1) per attempt, and the API
    /// key in `$QDRANT_API_KEY` when it is set and not empty.
    pub fn from_env<S: AsRef<str>>(urls: &[S], timeout_ms: u64) -> QdrantConfig {
        QdrantConfig {
            timeout: Duration::from_millis(timeout_ms.max(1)),
            api_key: std::env::var("QDRANT_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            ..QdrantConfig::new(urls)
        }
    }
}

/// The HTTP methods of Qdrant's REST API.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Put,
    Post,
    Patch,
    Delete,
}

/// A connection to a Qdrant deployment (one node or a cluster). Cheap to share between threads;
/// clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    urls: Vec<String>,
    attempts: usize,
    api_key: Option<String>,
    /// Round-robin start of the next request.
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("urls", &self.urls).finish()
    }
}

/// One failed attempt: the node, the HTTP status when one came back, and why.
struct Failure {
    node: String,
    status: Option<u16>,
    message: String,
}

impl Client {
    /// Checks the URLs and asks each node its version: at least one must answer, and every node
    /// that answers must run Qdrant [`QDRANT_VERSION`].x. A node that is down now is not an
    /// error (a cluster serves without it); requests will skip it.
    pub fn connect(cfg: &QdrantConfig) -> Result<Client> {
        if cfg.urls.is_empty() {
            return Err(SearchError::InvalidArgument(
                "no Qdrant URL given (--url http://HOST:6333)".into(),
            ));
        }
        for u in &cfg.urls {
            let rest = u.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(SearchError::InvalidArgument(format!(
                    "Qdrant URL `{u}`: expected http://HOST:PORT (its REST port, 6333 by default)"
                )));
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(2))))
            .http_status_as_error(false)
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build()
            .into();
        let client = Client {
            agent,
            urls: cfg.urls.clone(),
            attempts: cfg.attempts.max(1),
            api_key: cfg.api_key.clone(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let mut answered = 0;
        let mut last = None;
        for node in &client.urls {
            match client.attempt(node, Method::Get, "/", None) {
                Ok(v) => {
                    let version = v.get("version").and_then(Value::as_str).unwrap_or("");
                    let title = v.get("title").and_then(Value::as_str).unwrap_or("");
                    if !title.starts_with("qdrant") {
                        return Err(SearchError::Qdrant {
                            node: node.clone(),
                            collection: String::new(),
                            status: None,
                            message: format!(
                                "this is not a Qdrant server (GET / answered {})",
                                truncate(&v.to_string(), 200)
                            ),
                        });
                    }
                    if !same_minor(version, QDRANT_VERSION) {
                        return Err(SearchError::Qdrant {
                            node: node.clone(),
                            collection: String::new(),
                            status: None,
                            message: format!(
                                "server is Qdrant {version}, this aisle speaks Qdrant \
                                 {QDRANT_VERSION}.x (run a {QDRANT_VERSION} server, e.g. \
                                 ../shared/bin/qdrant)"
                            ),
                        });
                    }
                    answered += 1;
                }
                Err(f) => last = Some(f),
            }
        }
        if answered == 0 {
            let f = last.expect("at least one URL was tried");
            return Err(SearchError::Qdrant {
                node: client.urls.join(","),
                collection: String::new(),
                status: f.status,
                message: format!("no Qdrant node answered (last: {}: {})", f.node, f.message),
            });
        }
        Ok(client)
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Sends one request (`path` from the API root, such as `/collections`), retrying on the
    /// next node when a node is down, times out or answers 5xx; a 4xx answer is final. Returns
    /// the reply's `result`. `collection` names the collection in errors.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        collection: &str,
    ) -> Result<Value> {
        self.call_timed(method, path, body, collection)
            .map(|(v, _)| v)
    }

    /// [`call`](Self::call), with the seconds the server says it spent (its reply's `time`),
    /// for measuring what the client and the wire add.
    pub fn call_timed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        collection: &str,
    ) -> Result<(Value, f64)> {
        let body = body.map(Value::to_string);
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failures: Vec<Failure> = Vec::new();
        for attempt in 0..self.attempts {
            if attempt > 0 && attempt % n == 0 {
                // Every node failed once: give a restarting node or a moving shard a moment.
                let round = (attempt / n) as u32;
                std::thread::sleep(Duration::from_millis(50u64 << round.min(5)));
            }
            let node = &self.urls[(start + attempt) % n];
            match self.attempt(node, method, path, body.as_deref()) {
                Ok(mut v) => {
                    let time = v.get("time").and_then(Value::as_f64).unwrap_or(0.0);
                    return Ok((
                        v.get_mut("result").map(Value::take).unwrap_or(Value::Null),
                        time,
                    ));
                }
                Err(f) if f.status.is_some_and(|s| (400..500).contains(&s)) => {
                    return Err(SearchError::Qdrant {
                        node: f.node,
                        collection: collection.to_owned(),
                        status: f.status,
                        message: f.message,
                    });
                }
                Err(f) => failures.push(f),
            }
        }
        let last = failures.pop().expect("attempts >= 1");
        Err(SearchError::Qdrant {
            node: last.node,
            collection: collection.to_owned(),
            status: last.status,
            message: format!(
                "{} (after {} attempts over {} node{})",
                last.message,
                self.attempts,
                n,
                if n == 1 { "" } else { "s" }
            ),
        })
    }

    /// One request to one node; the whole reply when it is a 2xx JSON body.
    fn attempt(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> std::result::Result<Value, Failure> {
        let url = format!("{node}{path}");
        let fail = |status: Option<u16>, message: String| Failure {
            node: node.to_owned(),
            status,
            message,
        };
        let with_key = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match &self.api_key {
            Some(k) => r.header("api-key", k),
            None => r,
        };
        let without_key =
            |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match &self.api_key {
                Some(k) => r.header("api-key", k),
                None => r,
            };
        let json = "application/json";
        let reply = match method {
            Method::Get => without_key(self.agent.get(&url)).call(),
            Method::Delete => without_key(self.agent.delete(&url)).call(),
            Method::Put | Method::Post | Method::Patch => {
                let r = match method {
                    Method::Put => self.agent.put(&url),
                    Method::Patch => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                with_key(r)
                    .header("content-type", json)
                    .send(body.unwrap_or("{}"))
            }
        };
        let mut reply = reply.map_err(|e| fail(None, format!("{method:?} {path}: {e}")))?;
        let status = reply.status().as_u16();
        let text = reply
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| {
                fail(
                    Some(status),
                    format!("{method:?} {path}: reading the reply: {e}"),
                )
            })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            fail(
                Some(status),
                format!(
                    "{method:?} {path}: HTTP {status}, not JSON ({e}): {}",
                    truncate(&text, 200)
                ),
            )
        })?;
        if !(200..300).contains(&status) {
            let why = value
                .pointer("/status/error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| truncate(&text, 300));
            return Err(fail(
                Some(status),
                format!("{method:?} {path}: HTTP {status}: {why}"),
            ));
        }
        Ok(value)
    }
}

/// True when `version` (such as "1.17.1") is of the `minor` line ("1.17").
fn same_minor(version: &str, minor: &str) -> bool {
    version == minor
        || version
            .strip_prefix(minor)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_one_minor_line() {
        assert!(same_minor("1.17.1", "1.17"));
        assert!(same_minor("1.17.0-rc1", "1.17"));
        assert!(same_minor("1.17", "1.17"));
        assert!(!same_minor("1.170.0", "1.17"));
        assert!(!same_minor("1.16.3", "1.17"));
        assert!(!same_minor("", "1.17"));
    }

    #[test]
    fn urls_are_split_and_checked() {
        let cfg = QdrantConfig::new(&["http://a:1/, http://b:2", "http://c:3"]);
        assert_eq!(cfg.urls, ["http://a:1", "http://b:2", "http://c:3"]);
        let err = Client::connect(&QdrantConfig::new(&["localhost:6333"])).expect_err("no scheme");
        assert!(
            err.to_string().contains("expected http://HOST:PORT"),
            "{err}"
        );
        let err = Client::connect(&QdrantConfig::new::<&str>(&[])).expect_err("no url");
        assert!(err.to_string().contains("no Qdrant URL"), "{err}");
    }

    #[test]
    fn a_server_that_is_down_is_named() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("http://127.0.0.1:{port}");
        let err = Client::connect(&QdrantConfig::new(&[url.as_str()])).expect_err("down");
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("no Qdrant node answered"), "{text}");
    }
}
