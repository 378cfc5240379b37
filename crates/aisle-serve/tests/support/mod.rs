//! A server for tests: a small synthetic world, an untrained personalized model (random towers
//! embed text deterministically, which is all an API or browser test needs), on a free loopback
//! port in a background thread, stopped gracefully on drop.
//!
//! aisle-serve's tests use it as `mod support;`, and the serve fuzz harness
//! (`fuzz/harness/serve.rs`) through `#[path]`, so that the library ships no test support.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use aisle_core::{Dataset, Histories};
use aisle_model::personal::{Fusion, Personalizer};
use aisle_model::{Model, ModelConfig};
use aisle_search::{Searcher, SearcherOptions};

use aisle_serve::{App, Loader, Running, ServeOptions};

/// The small world every test server serves.
pub fn demo_dataset() -> Result<Arc<Dataset>, String> {
    aisle_core::synth::small_dataset(800, 40, 600, 11)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// An untrained model; `seed` changes its weights (two seeds rank differently).
pub fn demo_model(seed: u64) -> Model {
    let mut cfg = ModelConfig::default();
    cfg.featurizer.buckets_log2 = 14;
    cfg.tower.dim = 32;
    cfg.tower.seed = seed;
    let mut model = Model::new(cfg);
    model.personal = Some(Personalizer::new(32, Fusion::Gated));
    model
}

/// A Searcher over `ds` with an exact index and BM25, serving every interaction as history.
pub fn demo_searcher(ds: &Arc<Dataset>, seed: u64) -> Result<Searcher, String> {
    Searcher::build(
        Arc::clone(ds),
        demo_model(seed),
        Histories::all(ds),
        &SearcherOptions::default(),
    )
    .map_err(|e| e.to_string())
}

/// [`demo_searcher`] whose personalized tower also reads customer features (the demo world's
/// segments), with a random feature table: the features then move queries.
pub fn demo_searcher_with_features(ds: &Arc<Dataset>) -> Result<Searcher, String> {
    let mut model = demo_model(1);
    let mut features = aisle_model::demographics::Demographics::fit(&ds.users, 32, 8)
        .ok_or("the demo world has no customer features")?;
    let mut rng = aisle_core::rng::Rng::new(3);
    for x in features.table.iter_mut() {
        *x = rng.normal() as f32;
    }
    if let Some(tower) = model.personal.as_mut() {
        tower.demographics = Some(features);
    }
    Searcher::build(
        Arc::clone(ds),
        model,
        Histories::all(ds),
        &SearcherOptions::default(),
    )
    .map_err(|e| e.to_string())
}

/// A running test server.
pub struct DemoServer {
    running: Running,
}

impl DemoServer {
    /// Serves the demo world; a reload alternates between two model seeds.
    pub fn start() -> Result<DemoServer, String> {
        Self::start_with(ServeOptions::default())
    }

    /// [`start`](Self::start) with other limits.
    pub fn start_with(options: ServeOptions) -> Result<DemoServer, String> {
        let ds = demo_dataset()?;
        let first = demo_searcher(&ds, 1)?;
        let next_seed = std::sync::atomic::AtomicU64::new(2);
        let loader_ds = Arc::clone(&ds);
        let loader: Loader = Box::new(move || {
            let seed = next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            demo_searcher(&loader_ds, seed)
        });
        let running = aisle_serve::spawn(App::new(first, Some(loader), options), "127.0.0.1:0")
            .map_err(|e| e.to_string())?;
        Ok(DemoServer { running })
    }

    /// Serves the demo world with [`demo_searcher_with_features`] (no reload).
    pub fn start_with_features() -> Result<DemoServer, String> {
        let ds = demo_dataset()?;
        let searcher = demo_searcher_with_features(&ds)?;
        let running = aisle_serve::spawn(
            App::new(searcher, None, ServeOptions::default()),
            "127.0.0.1:0",
        )
        .map_err(|e| e.to_string())?;
        Ok(DemoServer { running })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    pub fn app(&self) -> &Arc<App> {
        self.running.app()
    }

    /// The id of the customer with the most history.
    pub fn user_with_history(&self) -> String {
        let s = self.app().searcher();
        let ds = s.dataset();
        ds.users
            .iter()
            .max_by_key(|(u, _)| (s.histories().count(*u), std::cmp::Reverse(*u)))
            .map(|(_, user)| user.id.clone())
            .unwrap_or_default()
    }

    /// Stops accepting, lets running requests finish, and waits for the server thread.
    pub fn stop(self) {
        self.running.stop();
    }
}
