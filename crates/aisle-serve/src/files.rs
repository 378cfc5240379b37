//! Serving from files, as `aisle serve` does: the Searcher built from a model file, its head and
//! its vectors (an index built now, a saved graph or a Qdrant collection:
//! [`aisle_search::served`]), built again from the files as they are at each reload, and the
//! HTTP server on its own runtime until Ctrl-C or SIGTERM. What is served, where it listens and
//! warnings go to stderr, as the server's log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, Histories};
use aisle_search::served::{self, ModelUse, Vectors};
use aisle_search::Searcher;

use crate::{App, Loader, ServeError, ServeOptions};

/// The files a Searcher is built from, and how it uses them.
#[derive(Clone, Debug)]
pub struct Files {
    pub ds: Arc<Dataset>,
    /// A model file or a MiniLM model folder.
    pub model: PathBuf,
    /// Where its product vectors live.
    pub vectors: Vectors,
    pub uses: ModelUse,
    /// HNSW search effort (ef): a saved index carries the one it was built with; this one wins.
    pub search_effort: usize,
}

impl Files {
    /// The Searcher over the files as they are now ([`served::build`]); the notes of a model
    /// let through from other data go to stderr as warnings.
    pub fn searcher(&self) -> Result<Searcher, ServeError> {
        let index = self.vectors.index_for(&self.model)?;
        let histories = Histories::all(&self.ds);
        let searcher = served::build(&self.ds, &self.model, &index, histories, &self.uses)
            .map_err(|source| ServeError::Build {
                path: self.model.clone(),
                source,
            })?;
        for note in searcher.notes() {
            eprintln!("warning: {note}");
        }
        searcher.set_search_effort(self.search_effort);
        Ok(searcher)
    }

    /// A [`Loader`] that builds the Searcher from the files again.
    fn loader(self) -> Loader {
        Box::new(move || {
            self.searcher()
                .map_err(|e| aisle_core::error::with_sources(&e))
        })
    }
}

/// Serves the Searcher of `files` with `options` on `addr`, with `threads` workers [default:
/// the number of cores]: says what is served and how long it took since `started`, raises the
/// open-file limit for the connection cap, and serves until Ctrl-C or SIGTERM (`POST
/// /admin/reload` or SIGHUP rebuilds the Searcher from the files). Searches still running at the
/// end get the shutdown grace, then it returns (dropping the runtime would wait for them without
/// a bound).
pub fn serve_files(
    files: Files,
    options: ServeOptions,
    addr: &str,
    threads: Option<usize>,
    started: Instant,
) -> Result<(), ServeError> {
    let searcher = files.searcher()?;
    let ds = &files.ds;
    eprintln!(
        "serving {} ({} products, {} customers) with {} ({} index{}{}), ready in {:.1} s",
        ds.name,
        fmt_n(ds.catalog.len()),
        fmt_n(ds.users.len()),
        files.model.display(),
        searcher.index_kind(),
        if searcher.encoder().personal().is_some() {
            ", personalized"
        } else {
            ""
        },
        files
            .uses
            .head
            .file(&files.model)?
            .map_or(String::new(), |h| format!(", re-ranked by {}", h.display())),
        started.elapsed().as_secs_f64()
    );
    // At the common default of 1,024 open files, 1,100 idle sockets starved everyone.
    eprintln!(
        "{}",
        crate::raise_open_files_and_say(options.limits.max_connections)
    );
    let grace = options.limits.shutdown_grace;
    let app = Arc::new(App::new(searcher, Some(files.loader()), options));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))?;
    let served = runtime.block_on(async move {
        let listener = crate::bind(addr)
            .await
            .map_err(io(&format!("listening on {addr}")))?;
        let local = listener.local_addr().map_err(io("local address"))?;
        eprintln!("listening on http://{local}/  (Ctrl-C to stop; POST /admin/reload or SIGHUP to reload the model)");
        crate::serve(listener, app, crate::shutdown_signal())
            .await
            .map_err(io("serving"))
    });
    runtime.shutdown_timeout(grace);
    eprintln!("stopped");
    served
}

/// An I/O error while doing `what`.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        what: what.to_owned(),
        source,
    }
}
