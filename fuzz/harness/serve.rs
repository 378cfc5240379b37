//! What the aisle-serve fuzz target feeds the library; `fuzz/fuzz_targets/search_request.rs` and
//! `crates/aisle-serve/tests/fuzz_corpus.rs` (which replays the corpus) both call this.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

// The demo world of aisle-serve's tests (relative to this file, wherever it is included from).
#[path = "../../crates/aisle-serve/tests/support/mod.rs"]
mod demo;
use aisle_serve::{router, App, ServeOptions};
use demo::{demo_dataset, demo_searcher};

/// The API over the small demo world, built once per process.
fn api() -> &'static (tokio::runtime::Runtime, Router) {
    static API: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    API.get_or_init(|| {
        let ds = demo_dataset().expect("demo world");
        let searcher = demo_searcher(&ds, 1).expect("demo searcher");
        let app = Arc::new(App::new(searcher, None, ServeOptions::default()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (rt, router(app))
    })
}

/// One search request through the whole router. The first byte picks the form: even, the rest is
/// the query string of `GET /search?...`; odd, the rest is the JSON body of `POST /search`. An
/// answer of 500 means a search panicked (on its blocking thread) and fails the harness.
pub fn search_request(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let request = if form % 2 == 0 {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(request) = Request::get(format!("/search?{query}")).body(Body::empty()) else {
            return;
        };
        request
    } else {
        Request::post("/search")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(rest.to_vec()))
            .expect("a POST request")
    };
    let (rt, api) = api();
    let status = rt.block_on(async {
        let response = api.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        status
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "input {data:?}");
}
