//! The HTTP API over a real socket on 127.0.0.1: every endpoint, every kind of bad input, metrics,
//! hot reload under load, and graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

mod support;
use aisle_serve::ServeOptions;
use support::DemoServer;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

/// GET `path`: the status and the body as JSON (Null when it is not JSON).
fn get(server: &DemoServer, path: &str) -> (u16, Value) {
    let mut r = agent()
        .get(format!("{}{path}", server.url()))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get_text(server: &DemoServer, path: &str) -> (u16, String, String) {
    let mut r = agent()
        .get(format!("{}{path}", server.url()))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        r.status().as_u16(),
        ctype,
        r.body_mut().read_to_string().expect("body"),
    )
}

/// POST a raw body to `path`.
fn post(server: &DemoServer, path: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn result_ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A word from a product title, so that BM25 matches something.
fn title_word(server: &DemoServer) -> String {
    let s = server.app().searcher();
    let title = &s.dataset().catalog.get(aisle_core::ProductId(5)).title;
    title
        .split_whitespace()
        .find(|w| w.len() > 3 && w.chars().all(char::is_alphabetic))
        .unwrap_or("shoes")
        .to_lowercase()
}

#[test]
fn every_endpoint_answers() {
    let server = DemoServer::start().expect("server");
    let (status, health) = get(&server, "/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["products"], 800);
    assert_eq!(health["personalized"], true);

    let (status, ctype, page) = get_text(&server, "/");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(page.contains("id=\"q\""), "the page has no search box");

    let word = title_word(&server);
    let (status, r) = get(&server, &format!("/search?q={word}&k=5&explain=true"));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"].as_array().expect("results").len(), 5);
    assert_eq!(r["personalized"], false);
    assert_eq!(r["user"], Value::Null);
    let hit = &r["results"][0];
    assert_eq!(hit["rank"], 1);
    assert!(hit["path"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(hit["explanation"]["lexical_matches"].is_array());
    assert!(r["took_ms"].as_f64().is_some());

    // Personalized with a stored history.
    let user = server.user_with_history();
    let (status, p) = get(
        &server,
        &format!("/search?q={word}&k=5&user={user}&explain=true"),
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["personalized"], true);
    assert_eq!(p["user"]["known"], true);
    assert!(p["user"]["history_used"].as_u64().is_some_and(|n| n > 0));

    // Lexical and hybrid modes, and a category filter.
    for mode in ["lexical", "hybrid", "rrf:10", "weighted:0.7"] {
        let (status, r) = get(&server, &format!("/search?q={word}&mode={mode}"));
        assert_eq!(status, 200, "{mode}: {r}");
        assert!(!result_ids(&r).is_empty(), "{mode}");
    }
    let product_id = r["results"][0]["id"].as_str().expect("id").to_owned();
    let category = r["results"][0]["category"]["id"]
        .as_str()
        .expect("category")
        .to_owned();
    let (status, f) = get(
        &server,
        &format!("/search?q={word}&category={category}&k=20"),
    );
    assert_eq!(status, 200, "{f}");
    for h in f["results"].as_array().expect("results") {
        assert_eq!(h["category"]["id"], category.as_str());
    }

    // POST with an inline history.
    let body = json!({"q": word, "k": 5, "history": [{"product": product_id, "kind": "purchase"}], "explain": true});
    let (status, r) = post(&server, "/search", &body.to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["personalized"], true);
    assert_eq!(r["history_used"], 1);

    let (status, prod) = get(&server, &format!("/products/{product_id}"));
    assert_eq!(status, 200);
    assert_eq!(prod["id"], product_id.as_str());
    assert!(prod["attributes"].is_array());

    let (status, users) = get(&server, "/users?limit=5");
    assert_eq!(status, 200);
    let list = users["users"].as_array().expect("users");
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["id"], user.as_str());
    let (status, u) = get(&server, &format!("/users/{user}"));
    assert_eq!(status, 200);
    assert!(u["recent"].as_array().is_some_and(|r| !r.is_empty()));

    let (status, ctype, metrics) = get_text(&server, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"));
    assert!(
        metrics.contains("aisle_http_requests_total{route=\"/search\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics
        .contains("aisle_http_request_duration_seconds_bucket{route=\"/search\",le=\"+Inf\"}"));
    assert!(metrics.contains("aisle_products 800"));
}

/// `customer` in a POST body personalizes by its features, with no stored customer: the answer
/// is the stored customer's own, names the features, and bad fields are a 400.
#[test]
fn sent_customer_features_personalize_without_a_stored_customer() {
    let server = DemoServer::start_with_features().expect("server with customer features");
    let s = server.app().searcher();
    let ds = s.dataset();
    let (id, segment) = ds
        .users
        .iter()
        .find_map(|(_, u)| u.segment.clone().map(|seg| (u.id.clone(), seg)))
        .expect("a customer with a segment");
    let stored = ds.users.get(ds.users.find(&id).expect("the customer"));
    let mut fields = serde_json::Map::new();
    fields.insert("segment".into(), segment.clone().into());
    for (k, v) in &stored.demographics {
        fields.insert(k.clone(), v.clone().into());
    }
    let body = json!({"q": "winter jacket", "k": 10, "explain": true, "customer": fields});
    let (status, sent) = post(&server, "/search", &body.to_string());
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["personalized"], true, "{sent}");
    assert_eq!(
        sent["features_used"],
        stored.demographics.len() + 1,
        "{sent}"
    );
    let named: Vec<&str> = sent["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|h| {
            h["explanation"]["customer"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c["feature"].as_str())
        .collect();
    assert!(
        named.iter().any(|n| n.starts_with("segment=")),
        "the explanations name the segment: {sent}"
    );
    let plain = post(
        &server,
        "/search",
        &json!({"q": "winter jacket", "k": 10}).to_string(),
    )
    .1;
    assert_ne!(result_ids(&sent), result_ids(&plain));
    assert_eq!(plain["features_used"], 0);
    for bad in [
        json!({"q": "tv", "customer": {"segment": {"nested": 1}}}),
        json!({"q": "tv", "customer": {"": "x"}}),
        json!({"q": "tv", "customer": {"segment": "x".repeat(300)}}),
        json!({"q": "tv", "customer": (0..40).map(|i| (format!("f{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
    ] {
        let (status, v) = post(&server, "/search", &bad.to_string());
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("customer")),
            "{v}"
        );
    }
    server.stop();
    // A model without customer features says it did not read them.
    let server = DemoServer::start().expect("server");
    let (status, v) = post(
        &server,
        "/search",
        &json!({"q": "tv", "customer": {"segment": "x"}}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["warnings"].as_array().is_some_and(|w| w.iter().any(|x| x
            .as_str()
            .is_some_and(|x| x.contains("reads no customer features")))),
        "{v}"
    );
    server.stop();
}

#[test]
fn an_unknown_user_gets_the_plain_results_flagged() {
    let server = DemoServer::start().expect("server");
    let word = title_word(&server);
    let (_, plain) = get(&server, &format!("/search?q={word}&k=10"));
    let (status, r) = get(&server, &format!("/search?q={word}&k=10&user=nobody-such"));
    assert_eq!(status, 200);
    assert_eq!(r["personalized"], false);
    assert_eq!(r["user"]["known"], false);
    assert!(r["warnings"][0]
        .as_str()
        .is_some_and(|w| w.contains("unknown user")));
    assert_eq!(result_ids(&r), result_ids(&plain));
    let scores = |v: &Value| -> Vec<f64> {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| h["score"].as_f64().expect("score"))
            .collect()
    };
    assert_eq!(
        scores(&r),
        scores(&plain),
        "not the plain vector bit for bit"
    );
}

#[test]
fn bad_input_gets_a_json_4xx_and_the_server_stays_up() {
    let server = DemoServer::start().expect("server");
    let long = "a".repeat(600);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("missing q", "/search".into(), 400, "q is required"),
        ("empty q", "/search?q=".into(), 400, "no letters"),
        (
            "punctuation q",
            "/search?q=%21%21".into(),
            400,
            "no letters",
        ),
        ("long q", format!("/search?q={long}"), 400, "bytes long"),
        (
            "k zero",
            "/search?q=shoe&k=0".into(),
            400,
            "between 1 and 100",
        ),
        (
            "k large",
            "/search?q=shoe&k=101".into(),
            400,
            "between 1 and 100",
        ),
        (
            "k text",
            "/search?q=shoe&k=ten".into(),
            400,
            "not a whole number",
        ),
        (
            "k negative",
            "/search?q=shoe&k=-1".into(),
            400,
            "not a whole number",
        ),
        ("mode", "/search?q=shoe&mode=magic".into(), 400, "mode"),
        (
            "category",
            "/search?q=shoe&category=nope".into(),
            400,
            "unknown category",
        ),
        (
            "explain",
            "/search?q=shoe&explain=maybe".into(),
            400,
            "explain",
        ),
        (
            "product",
            "/products/no-such-product".into(),
            404,
            "unknown product",
        ),
        ("user", "/users/no-such-user".into(), 404, "unknown user"),
        ("users limit", "/users?limit=0".into(), 400, "limit"),
        ("route", "/nowhere".into(), 404, "no such route"),
    ];
    for (what, path, status, message) in &cases {
        let (got, body) = get(&server, path);
        assert_eq!(got, *status, "{what}: {body}");
        let err = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no JSON error: {body}"));
        assert!(err.contains(message), "{what}: {err}");
    }
    let posts: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{\"q\": ".into(), 400),
        ("not an object", "[1, 2]".into(), 422),
        (
            "unknown field",
            json!({"q": "shoe", "colour": "red"}).to_string(),
            422,
        ),
        (
            "k wrong type",
            json!({"q": "shoe", "k": "ten"}).to_string(),
            422,
        ),
        (
            "history product",
            json!({"q": "shoe", "history": [{"product": "nope"}]}).to_string(),
            400,
        ),
        (
            "history kind",
            json!({"q": "shoe", "history": [{"product": "x", "kind": "stolen"}]}).to_string(),
            400,
        ),
        (
            "oversized body",
            json!({"q": "shoe", "pad": "x".repeat(100_000)}).to_string(),
            413,
        ),
    ];
    for (what, body, status) in &posts {
        let (got, answer) = post(&server, "/search", body);
        assert_eq!(got, *status, "{what}: {answer}");
        assert!(
            answer["error"].is_string(),
            "{what}: no JSON error: {answer}"
        );
    }
    // A valid product id for the history-kind case, to reach the kind check.
    let s = server.app().searcher();
    let pid = s.dataset().catalog.get(aisle_core::ProductId(0)).id.clone();
    let (got, answer) = post(
        &server,
        "/search",
        &json!({"q": "shoe", "history": [{"product": pid, "kind": "stolen"}]}).to_string(),
    );
    assert_eq!(got, 400);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("history[0].kind")),
        "{answer}"
    );
    // Wrong method.
    let mut r = agent()
        .delete(format!("{}/search", server.url()))
        .call()
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 405);
    let body: Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON");
    assert!(body["error"].is_string());
    // Still up, and the errors were counted.
    let (status, _) = get(&server, "/healthz");
    assert_eq!(status, 200);
    let (_, _, metrics) = get_text(&server, "/metrics");
    assert!(
        metrics.contains("route=\"/search\",status=\"400\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"unmatched\",status=\"404\""),
        "{metrics}"
    );
    assert!(server.app().metrics.count("/search", 413) >= 1);
}

#[test]
fn a_reload_under_load_fails_no_request_and_swaps_the_model() {
    let server = Arc::new(DemoServer::start().expect("server"));
    let word = title_word(&server);
    let before = result_ids(&get(&server, &format!("/search?q={word}&k=10")).1);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (server, stop, answered, failed) = (
                Arc::clone(&server),
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&failed),
            );
            let word = word.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let user = server.user_with_history();
                // Bounded: at most 20,000 requests per client, or until told to stop.
                for n in 0..20_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let url = if (n + i).is_multiple_of(2) {
                        format!("{}/search?q={word}&k=10", server.url())
                    } else {
                        format!("{}/search?q={word}&k=10&user={user}", server.url())
                    };
                    match agent.get(&url).call() {
                        Ok(r) if r.status().as_u16() == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..3 {
        let (status, r) = post(&server, "/admin/reload", "");
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["reloaded"], true);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the reloads"
    );
    assert!(
        answered.load(Ordering::Relaxed) > 20,
        "too few requests ran"
    );
    assert_eq!(server.app().reloads(), 3);
    let after = result_ids(&get(&server, &format!("/search?q={word}&k=10")).1);
    assert_ne!(
        before, after,
        "the reloaded model (another seed) ranks the same"
    );
    let (_, health) = get(&server, "/healthz");
    assert_eq!(health["reloads"], 3);
}

#[test]
fn reload_needs_the_admin_token_when_one_is_set() {
    let server = DemoServer::start_with(ServeOptions {
        admin_token: Some("s3cret".into()),
        ..ServeOptions::default()
    })
    .expect("server");
    let (status, body) = post(&server, "/admin/reload", "");
    assert_eq!(status, 401, "{body}");
    // The scheme is case-insensitive; the token is not.
    for (value, want) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER  s3cret", 200),
        ("Bearer S3CRET", 401),
        ("Basic s3cret", 401),
    ] {
        let mut r = agent()
            .post(format!("{}/admin/reload", server.url()))
            .header("authorization", value)
            .send("")
            .expect("POST");
        assert_eq!(
            r.status().as_u16(),
            want,
            "{value}: {}",
            r.body_mut().read_to_string().unwrap_or_default()
        );
    }
    // GET is not a reload.
    let (status, _) = get(&server, "/admin/reload");
    assert_eq!(status, 405);
}

#[test]
fn shutdown_is_graceful_and_closes_the_port() {
    let server = DemoServer::start().expect("server");
    let addr = server.addr();
    assert_eq!(get(&server, "/healthz").0, 200);
    server.stop();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err(),
        "still accepting after shutdown"
    );
}
