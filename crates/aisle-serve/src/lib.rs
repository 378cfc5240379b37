//! aisle-serve: the HTTP API and the search page, over one [`Searcher`].
//!
//! It owns the routes, their JSON bodies and errors, the Prometheus metrics, and the hot swap of
//! the Searcher (`POST /admin/reload`, or SIGHUP). It does not train, encode or rank: the
//! [`Searcher`] of `aisle-search` does, the same one `aisle eval` measures.
//! [`files`] runs it as `aisle serve` does: a Searcher built from a model file and its head and
//! vectors, built again from them at each reload. [`bench`] measures what serving costs (`aisle
//! bench search`): the same server, one client and wrk against it.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the search page |
//! | `GET /search?q=&user=&k=&category=&mode=&explain=` | search; `user` personalizes |
//! | `POST /search` | the same as JSON, with an optional inline `history` |
//! | `GET /products/{id}` | one product with its taxonomy path |
//! | `GET /users` / `GET /users/{id}` | customers with the most history / one customer's history |
//! | `GET /healthz` | liveness and what is served |
//! | `GET /metrics` | Prometheus text: requests by route and status, latency histograms |
//! | `POST /admin/reload` | rebuild the Searcher from its files and swap it in |
//!
//! Bad input is a 4xx answer with a JSON body `{"error": "..."}`; the server stays up.
//!
//! ```no_run
//! # async fn demo(searcher: aisle_search::Searcher) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let app = aisle_serve::App::new(searcher, None, aisle_serve::ServeOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! aisle_serve::serve(listener, Arc::new(app), std::future::pending()).await
//! # }
//! ```
//!
//! With the `cli` feature, [`bench::BenchOptions`] derives `clap::Args`: `aisle bench search`'s
//! flags are declared once, on the options they set.

mod api;
pub mod bench;
mod conn;
pub mod files;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use aisle_search::Searcher;

pub use api::router;
pub use conn::{
    bind, effective_cap, open_file_limit, raise_open_file_limit, raise_open_files_and_say,
    FileLimit, Limits,
};
pub use metrics::Metrics;

/// What can go wrong while reloading.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The loader failed; the old Searcher stays in service.
    #[error("reload failed, still serving the previous model: {0}")]
    Reload(String),
    /// The server was started without a way to rebuild its Searcher.
    #[error("this server has nothing to reload from (it was started without model files)")]
    NoLoader,
    #[error("a reload is already running")]
    Busy,
    /// The Searcher could not be built from its files ([`files`]).
    #[error("building the searcher for {}", .path.display())]
    Build {
        path: std::path::PathBuf,
        #[source]
        source: aisle_search::SearchError,
    },
    /// A model file, head or index that the served Searcher cannot use.
    #[error(transparent)]
    Search(#[from] aisle_search::SearchError),
    /// The server could not start, or stopped on an I/O error; `what` it was doing.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Builds a fresh Searcher (from the model and index files the server was started with).
pub type Loader = Box<dyn Fn() -> Result<Searcher, String> + Send + Sync>;

/// Limits and switches of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The most hits a request may ask for.
    pub max_k: usize,
    /// Hits when the request does not say.
    pub default_k: usize,
    /// Longest query text, in bytes.
    pub max_query_bytes: usize,
    /// Longest inline history, in items.
    pub max_history: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// When set, `POST /admin/reload` needs `Authorization: Bearer <token>`; when not, only
    /// loopback clients may reload (behind a reverse proxy on the same host every client looks
    /// like loopback: set a token there).
    pub admin_token: Option<String>,
    /// What `/healthz` says is served (a model file's path, say).
    pub model_label: String,
    /// What a client can hold: connections, timeouts, head size, shutdown grace.
    pub limits: Limits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_k: 100,
            default_k: 10,
            max_query_bytes: 512,
            max_history: 1000,
            max_body_bytes: 64 * 1024,
            admin_token: None,
            model_label: "in-memory model".into(),
            limits: Limits::default(),
        }
    }
}

/// The server's state: the Searcher in service, how to rebuild it, and the metrics.
pub struct App {
    current: RwLock<Arc<Searcher>>,
    loader: Option<Loader>,
    reloading: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
    pub options: ServeOptions,
    started: Instant,
    reloads: std::sync::atomic::AtomicU64,
    /// The open connections, once [`serve`] runs.
    connections: std::sync::OnceLock<Arc<conn::Table>>,
}

impl App {
    pub fn new(searcher: Searcher, loader: Option<Loader>, options: ServeOptions) -> App {
        App {
            current: RwLock::new(Arc::new(searcher)),
            loader,
            reloading: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            options,
            started: Instant::now(),
            reloads: std::sync::atomic::AtomicU64::new(0),
            connections: std::sync::OnceLock::new(),
        }
    }

    /// Connections: open now, the cap, closed to make room (idle ones), refused with a 503.
    pub fn connections(&self) -> Option<Connections> {
        self.connections.get().map(|t| {
            let (evicted, shed) = t.evicted_and_shed();
            Connections {
                open: t.open(),
                cap: t.cap(),
                evicted,
                shed,
            }
        })
    }

    /// The Searcher in service now. A request holds its own `Arc` for its whole life, so a swap
    /// never pulls a Searcher out from under a running request.
    pub fn searcher(&self) -> Arc<Searcher> {
        match self.current.read() {
            Ok(s) => Arc::clone(&s),
            // A panic while holding the lock cannot leave a half-written Arc behind.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new Searcher.
    pub fn swap(&self, searcher: Searcher) {
        let new = Arc::new(searcher);
        match self.current.write() {
            Ok(mut s) => *s = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Rebuilds the Searcher with the loader (on a blocking thread) and swaps it in; requests
    /// keep being answered by the old one until then. Returns the seconds it took. The work
    /// runs in its own task, so a client that hangs up does not cancel a reload halfway (nor
    /// release the lock that keeps two reloads from running at once).
    pub async fn reload(self: &Arc<Self>) -> Result<f64, ServeError> {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_guard) = app.reloading.try_lock() else {
                return Err(ServeError::Busy);
            };
            if app.loader.is_none() {
                return Err(ServeError::NoLoader);
            }
            let start = Instant::now();
            let builder = Arc::clone(&app);
            let built = tokio::task::spawn_blocking(move || match &builder.loader {
                Some(load) => load(),
                None => Err("no loader".into()),
            })
            .await
            .map_err(|e| ServeError::Reload(format!("the loader panicked: {e}")))?
            .map_err(ServeError::Reload)?;
            app.swap(built);
            Ok(start.elapsed().as_secs_f64())
        })
        .await
        .map_err(|e| ServeError::Reload(format!("the reload task failed: {e}")))?
    }

    /// Number of swaps since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What the connection cap has seen ([`App::connections`]).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Connections {
    pub open: usize,
    pub cap: usize,
    /// Idle connections closed to make room for new ones.
    pub evicted: u64,
    /// Connections answered 503 because every open one was busy.
    pub shed: u64,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets running
/// requests finish, for up to `limits.shutdown_grace` (graceful shutdown). Connections are
/// bounded as [`Limits`] says (module `conn`). On Unix, SIGHUP reloads the Searcher.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let app = Arc::clone(&app);
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match app.reload().await {
                        Ok(s) => eprintln!("SIGHUP: reloaded in {s:.2} s"),
                        Err(e) => eprintln!("SIGHUP: {e}"),
                    }
                }
            });
        }
    }
    let limits = app.options.limits.clone();
    let table = Arc::clone(
        app.connections
            .get_or_init(|| conn::Table::new(effective_cap(limits.max_connections))),
    );
    conn::serve(listener, router(app), table, limits, shutdown).await
}

/// A server running on its own runtime in a background thread (for tests and benchmarks that
/// drive it from the same process); stopped gracefully by [`stop`](Self::stop) or on drop.
pub struct Running {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves `app` on `addr` (`127.0.0.1:0` for a free port) from a background thread with a
/// two-worker runtime.
pub fn spawn(app: App, addr: &str) -> std::io::Result<Running> {
    let app = Arc::new(app);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = Arc::clone(&app);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(bind(addr))?;
    let addr = listener.local_addr()?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = serve(listener, served, shutdown).await {
                eprintln!("aisle-serve: {e}");
            }
        });
    });
    Ok(Running {
        addr,
        app,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Running {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets running requests finish, and waits for the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
