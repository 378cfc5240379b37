//! aisle over real Qdrant servers (`../shared/bin/qdrant`, 1.17.1): one node, and a cluster of
//! three with 3 shards x 2 replicas that loses a node under load.
//!
//! Each test starts its own nodes on free 127.0.0.1 ports in a temporary folder and stops them
//! by PID. Without the binary the tests skip with a printed reason; under `CI=true` they fail.
//! `AISLE_QDRANT_BIN` names another binary; `AISLE_CLUSTER_PRODUCTS` sizes the cluster test.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::qdrant_node::{qdrant_bin, Node};

use aisle_core::synth::small_dataset;
use aisle_core::{Dataset, Histories, NodeId, ProductId};
use aisle_model::{Model, ModelConfig};
use aisle_search::qdrant::{self, Client, Layout, Method, QdrantTarget, Upload};
use aisle_search::{
    Bm25Index, FieldBoosts, IndexChoice, Mode, QdrantConfig, Request, Searcher, SearcherOptions,
    VectorIndex,
};

fn config(nodes: &[&Node]) -> QdrantConfig {
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    QdrantConfig::new(&urls)
}

/// A small world and an untrained model (random towers embed text deterministically).
fn world(products: usize) -> (Arc<Dataset>, Model) {
    let ds = small_dataset(products, 30, 400, 7).expect("world");
    let mut cfg = ModelConfig::default();
    cfg.featurizer.buckets_log2 = 14;
    cfg.tower.dim = 32;
    (Arc::new(ds), Model::new(cfg))
}

/// One node in a temporary folder (stopped when the node is dropped, before the folder), its
/// configuration and a client.
fn one_node(bin: &std::path::Path) -> (Node, tempfile::TempDir, QdrantConfig, Client) {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Node::start(bin, &tmp.path().join("n1"), None);
    let cfg = config(&[&node]);
    let client = Client::connect(&cfg).expect("connect");
    (node, tmp, cfg, client)
}

fn upload<'a>(ds: &'a Dataset, vectors: &'a [f32], digest: &str) -> Upload<'a> {
    Upload {
        ds,
        vectors,
        dim: vectors.len() / ds.catalog.len(),
        model_digest: digest.into(),
        layout: Layout {
            collection: None,
            shards: 1,
            replicas: 1,
            keep: 2,
            batch: 256,
            hnsw_m: 16,
            ef_construct: 128,
            bm25: None,
        },
    }
}

fn searcher(ds: &Arc<Dataset>, model: &Model, index: IndexChoice) -> Searcher {
    searcher_with_bm25(ds, model, index, None)
}

fn ids(s: &Searcher, r: &Request) -> Vec<ProductId> {
    s.search(r)
        .expect("search")
        .hits
        .iter()
        .map(|h| h.product)
        .collect()
}

#[test]
fn one_node_serves_what_the_exact_index_serves() {
    let Some(bin) = qdrant_bin() else { return };
    let (node, _tmp, cfg, client) = one_node(&bin);
    let (ds, model) = world(3000);
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);

    // Upload, then the same upload again: nothing is sent twice.
    let first = qdrant::upload(&client, &upload(&ds, &vectors, "0000000a"), &mut |_, _| {})
        .expect("upload");
    assert_eq!((first.sent, first.skipped, first.resumed), (3000, 0, false));
    assert_eq!(first.previous, None);
    assert_eq!(first.alias, "aisle-synthetic");
    assert!(first.probes_found + 1 >= first.probes, "{first:?}");
    let again = qdrant::upload(&client, &upload(&ds, &vectors, "0000000a"), &mut |_, _| {})
        .expect("re-upload");
    assert_eq!((again.sent, again.skipped, again.resumed), (0, 3000, true));
    assert_eq!(again.collection, first.collection);

    // The Searcher over Qdrant (through the alias) answers as over the exact index: below
    // Qdrant's indexing threshold (10,000 points) its search is exact too.
    let target = QdrantTarget {
        config: cfg.clone(),
        collection: None,
        model_digest: Some("0000000a".into()),
    };
    let remote = searcher(&ds, &model, IndexChoice::Qdrant(target.clone()));
    assert_eq!(remote.index_kind(), "qdrant");
    let exact = searcher(&ds, &model, IndexChoice::Exact);
    let texts = [
        "running shoes",
        "coffee beans",
        "garden hose",
        "red dress",
        "laptop bag",
    ];
    for t in texts {
        assert_eq!(
            ids(&remote, &Request::new(t, 10)),
            ids(&exact, &Request::new(t, 10)),
            "{t}"
        );
    }
    // A batch goes through Qdrant's batch query and answers as one request at a time.
    let batch: Vec<Request> = texts.iter().map(|t| Request::new(t, 10)).collect();
    let many = remote.search_many(&batch).expect("batch");
    for (r, t) in many.iter().zip(texts) {
        let got: Vec<ProductId> = r.hits.iter().map(|h| h.product).collect();
        assert_eq!(got, ids(&exact, &Request::new(t, 10)), "{t}");
    }
    // A taxonomy filter runs in Qdrant (payload filter on ancestors) and keeps only the subtree.
    let t = &ds.taxonomy;
    let top: Vec<NodeId> = t.children(t.root()).to_vec();
    for &c in top.iter().take(3) {
        let r = Request {
            category: Some(c),
            ..Request::new("gift", 20)
        };
        let got = ids(&remote, &r);
        assert!(!got.is_empty());
        for p in &got {
            assert!(t.is_ancestor_or_self(c, ds.catalog.get(*p).category));
        }
        assert_eq!(got, ids(&exact, &r), "filtered by {}", t.name(c));
    }

    // A filter on the root keeps every product.
    let everything = Request {
        category: Some(t.root()),
        ..Request::new("gift", 20)
    };
    assert_eq!(
        ids(&remote, &everything),
        ids(&exact, &Request::new("gift", 20))
    );

    // A collection of another model is refused, and so is one of another dimension.
    let other_model = QdrantTarget {
        model_digest: Some("0000000b".into()),
        ..target.clone()
    };
    let err = other_model.open(&ds, 32).expect_err("other model");
    assert!(err.to_string().contains("0000000a"), "{err}");
    assert!(err.to_string().contains(&node.url()), "{err}");
    let err = target.open(&ds, 64).expect_err("other dimension");
    assert!(err.to_string().contains("32 dimensions"), "{err}");
    let missing = QdrantTarget {
        collection: Some("no-such".into()),
        ..target.clone()
    };
    let err = missing.open(&ds, 32).expect_err("missing");
    assert!(err.to_string().contains("no-such"), "{err}");
    // Another catalog (same name, fewer products) is refused.
    let (small, _) = world(500);
    let err = target.open(&small, 32).expect_err("other catalog");
    assert!(err.to_string().contains("3000 products"), "{err}");

    // A new model's upload moves the alias; with keep = 1 the old collection goes.
    let mut next = upload(&ds, &vectors, "0000000b");
    next.layout.keep = 1;
    let moved = qdrant::upload(&client, &next, &mut |_, _| {}).expect("second model");
    assert_eq!(moved.previous.as_deref(), Some(first.collection.as_str()));
    assert_eq!(moved.deleted, vec![first.collection.clone()]);
    assert!(qdrant::collection_meta(&client, &first.collection)
        .expect("meta")
        .is_none());
}

/// A Searcher whose BM25 has `boosts` (none without).
fn searcher_with_bm25(
    ds: &Arc<Dataset>,
    model: &Model,
    index: IndexChoice,
    boosts: Option<FieldBoosts>,
) -> Searcher {
    Searcher::build(
        Arc::clone(ds),
        model.clone(),
        Histories::all(ds),
        &SearcherOptions {
            index,
            lexical: boosts,
            ..SearcherOptions::default()
        },
    )
    .expect("searcher")
}

/// Products and scores of a search.
fn scored(s: &Searcher, r: &Request) -> Vec<(ProductId, f32)> {
    s.search(r)
        .expect("search")
        .hits
        .iter()
        .map(|h| (h.product, h.score))
        .collect()
}

/// The same products in the same order, with the same scores to f32 rounding, but where two
/// products' scores tie to rounding (the engines sum a product's terms in another order, so a
/// last-bit difference may order such near-ties either way).
fn same_ranking(got: &[(ProductId, f32)], want: &[(ProductId, f32)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let close = (g.1 - w.1).abs() <= 1e-5 * w.1.abs().max(1e-3);
        assert!(close, "{what} #{i}: {g:?} against {w:?}");
        let near_tie = |x: &(ProductId, f32)| (x.1 - w.1).abs() <= 1e-5 * w.1.abs();
        assert!(
            g.0 == w.0 || want.iter().filter(|x| near_tie(x)).count() >= 2 || i + 1 == want.len(),
            "{what} #{i}: {g:?} against {w:?}"
        );
    }
}

#[test]
fn lexical_and_hybrid_searches_run_in_qdrant_as_tantivy_ranks_them() {
    let Some(bin) = qdrant_bin() else { return };
    let (_node, _tmp, cfg, client) = one_node(&bin);
    let (ds, model) = world(3000);
    // 30 products with the same text in the same category: their BM25 scores tie exactly, in
    // both engines, and tantivy keeps the lowest product ids among them.
    let mut catalog = aisle_core::Catalog::new();
    let twin_category = ds.catalog.get(ProductId(100)).category;
    for (p, product) in ds.catalog.iter() {
        let mut product = product.clone();
        if (100..130).contains(&p.0) {
            product.title = "zebra lamp".into();
            product.brand.clear();
            product.description.clear();
            product.attributes.clear();
            product.category = twin_category;
        }
        catalog.push(product).expect("unique ids");
    }
    let ds = Arc::new(Dataset {
        catalog,
        ..(*ds).clone()
    });
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
    let boosts = FieldBoosts::default();
    let bm25 = Bm25Index::build(&ds.catalog, &ds.taxonomy, &boosts).expect("bm25");
    let mut up = upload(&ds, &vectors, "0000000c");
    up.layout.bm25 = Some(boosts);
    let report = qdrant::upload(&client, &up, &mut |_, _| {}).expect("upload");
    assert_eq!(report.lexical, Some(bm25.sparse_spec()));
    assert!(
        report.render().contains("sparse vectors in the engine"),
        "{}",
        report.render()
    );
    let line = report.lexical_line(&cfg, &ds, 200).expect("line");
    assert!(line.contains("top-10 agreement 1.0000"), "{line}");
    assert!(!line.contains("inf"), "{line}");

    let target = QdrantTarget {
        config: cfg.clone(),
        collection: None,
        model_digest: Some("0000000c".into()),
    };
    // The index answers BM25 itself, and the Searcher over it uses that.
    let index = target.open(&ds, 32).expect("open");
    assert!(index.has_lexical(&bm25));
    assert!(index.lexical_where(&bm25, "red dress", 10, None).is_some());
    let remote = searcher_with_bm25(
        &ds,
        &model,
        IndexChoice::Qdrant(target.clone()),
        Some(boosts),
    );
    let local = searcher_with_bm25(&ds, &model, IndexChoice::Exact, Some(boosts));
    assert!(remote.lexical_in_engine() && !local.lexical_in_engine());
    let texts: Vec<String> = ["running shoes", "coffee beans", "garden hose", "gift"]
        .iter()
        .map(|t| t.to_string())
        .chain((0..12).map(|i| ds.catalog.get(ProductId(i * 211)).title.clone()))
        .collect();
    let t = &ds.taxonomy;
    let first_top = t.children(t.root())[0];
    // Exact ties at the cut are cut as tantivy cuts them: the lowest product ids.
    let zebra = Request {
        mode: Mode::Lexical,
        ..Request::new("zebra", 10)
    };
    let lowest: Vec<ProductId> = (100..110).map(ProductId).collect();
    let got = scored(&remote, &zebra);
    assert_eq!(
        got.iter().map(|h| h.0).collect::<Vec<_>>(),
        lowest,
        "{got:?}"
    );
    assert_eq!(got, scored(&local, &zebra));
    for text in &texts {
        for mode in [Mode::Lexical, Mode::parse("hybrid").expect("mode")] {
            for category in [None, Some(first_top)] {
                let r = Request {
                    mode,
                    category,
                    ..Request::new(text, 10)
                };
                same_ranking(
                    &scored(&remote, &r),
                    &scored(&local, &r),
                    &format!("{text} {mode:?} {category:?}"),
                );
            }
        }
    }

    // A Searcher with other boosts does not use these vectors: its BM25 stays in tantivy.
    let other = FieldBoosts {
        title: 3.0,
        ..boosts
    };
    let other_bm25 = Bm25Index::build(&ds.catalog, &ds.taxonomy, &other).expect("bm25");
    assert!(!index.has_lexical(&other_bm25));
    assert!(index
        .lexical_where(&other_bm25, "red dress", 10, None)
        .is_none());
    let remote_other = searcher_with_bm25(&ds, &model, IndexChoice::Qdrant(target), Some(other));
    let local_other = searcher_with_bm25(&ds, &model, IndexChoice::Exact, Some(other));
    assert!(!remote_other.lexical_in_engine());
    let r = Request {
        mode: Mode::Lexical,
        ..Request::new(&texts[4], 10)
    };
    assert_eq!(scored(&remote_other, &r), scored(&local_other, &r));

    // Other BM25 settings name another collection; written into this one, they are refused,
    // naming both.
    assert!(report.collection.ends_with(&format!(
        "-b{:08x}",
        crc32fast::hash(&serde_json::to_vec(&bm25.sparse_spec()).expect("json"))
    )));
    let plain = qdrant::collection_for(&ds, "0000000c", None);
    assert!(report.collection.starts_with(&plain) && report.collection != plain);
    let mut into_it = upload(&ds, &vectors, "0000000c");
    into_it.layout.collection = Some(report.collection.clone());
    let err =
        qdrant::upload(&client, &into_it, &mut |_, _| {}).expect_err("other lexical settings");
    assert!(err.to_string().contains("no sparse vectors"), "{err}");
    assert!(err.to_string().contains("title 2"), "{err}");
}

#[test]
fn an_interrupted_upload_leaves_the_alias_and_resumes() {
    let Some(bin) = qdrant_bin() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Node::start(&bin, &tmp.path().join("n1"), None);
    let cfg = config(&[&node]);
    let client = Client::connect(&cfg).expect("connect");
    let (ds, model) = world(2000);
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
    let live = qdrant::upload(&client, &upload(&ds, &vectors, "000000a1"), &mut |_, _| {})
        .expect("first upload");

    // The second model's upload dies after three batches (as a killed process would).
    let shifted: Vec<f32> = vectors.iter().map(|x| -x).collect();
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut batches = 0;
        let _ = qdrant::upload(&client, &upload(&ds, &shifted, "000000b2"), &mut |_, _| {
            batches += 1;
            if batches == 3 {
                panic!("killed");
            }
        });
    }));
    assert!(died.is_err());
    let name = qdrant::collection_for(&ds, "000000b2", None);
    assert_eq!(
        qdrant::resolve_alias(&client, "aisle-synthetic").expect("alias"),
        Some(live.collection.clone()),
        "the alias stays on the complete collection"
    );
    let half = QdrantTarget {
        config: cfg.clone(),
        collection: Some(name.clone()),
        model_digest: None,
    };
    let err = half.open(&ds, 32).expect_err("incomplete");
    assert!(err.to_string().contains("never finished"), "{err}");
    // The served alias still answers with the first model's vectors.
    let served = QdrantTarget {
        collection: None,
        ..half.clone()
    };
    served.open(&ds, 32).expect("alias still serves");

    // The re-run continues: the three batches already in are skipped.
    let resumed = qdrant::upload(&client, &upload(&ds, &shifted, "000000b2"), &mut |_, _| {})
        .expect("resumed upload");
    assert!(resumed.resumed);
    assert_eq!(resumed.skipped, 3 * 256, "{resumed:?}");
    assert_eq!(resumed.sent + resumed.skipped, 2000);
    assert_eq!(resumed.collection, name);
    assert_eq!(
        qdrant::resolve_alias(&client, "aisle-synthetic").expect("alias"),
        Some(name)
    );
}

/// A fake server that answers every request with `body` (HTTP 200).
fn fake_server(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut s) = stream else { continue };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_server_of_another_version_or_kind_is_refused_by_name() {
    let url = fake_server(r#"{"title":"qdrant - vector search engine","version":"1.16.3"}"#);
    let err = Client::connect(&QdrantConfig::new(&[url.as_str()])).expect_err("old server");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("1.16.3") && text.contains("1.17"),
        "{text}"
    );
    let url = fake_server(r#"{"hello":"world"}"#);
    let err = Client::connect(&QdrantConfig::new(&[url.as_str()])).expect_err("not qdrant");
    assert!(err.to_string().contains("not a Qdrant server"), "{err}");
}

/// The state of every replica of every shard of `collection`, as the node asked sees it.
fn replica_states(client: &Client, collection: &str) -> Vec<String> {
    let Ok(info) = client.call(
        Method::Get,
        &format!("/collections/{collection}/cluster"),
        None,
        collection,
    ) else {
        return Vec::new();
    };
    ["local_shards", "remote_shards"]
        .iter()
        .flat_map(|k| {
            info.get(*k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s.get("state").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Waits until all 6 replicas (3 shards x 2) of `collection` are Active.
fn wait_all_active(client: &Client, collection: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let states = replica_states(client, collection);
        if states.len() == 6 && states.iter().all(|s| s == "Active") {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn a_cluster_keeps_answering_while_a_node_is_killed() {
    let Some(bin) = qdrant_bin() else { return };
    let products: usize = std::env::var("AISLE_CLUSTER_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let first = Node::start(&bin, &tmp.path().join("n1"), Some(None));
    let mut nodes = vec![first];
    for i in 2..=3 {
        let boot = nodes[0].p2p;
        nodes.push(Node::start(
            &bin,
            &tmp.path().join(format!("n{i}")),
            Some(Some(boot)),
        ));
    }
    // Wait for the three peers to agree.
    let one = Client::connect(&config(&[&nodes[0]])).expect("connect n1");
    let start = Instant::now();
    loop {
        let peers = one
            .call(Method::Get, "/cluster", None, "")
            .ok()
            .and_then(|c| c.get("peers").and_then(Value::as_object).map(|p| p.len()));
        if peers == Some(3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cluster did not form: {peers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cfg = config(&nodes.iter().collect::<Vec<_>>());
    let client = Client::connect(&cfg).expect("connect");
    let (ds, model) = world(products);
    let vectors = model.encode_catalog(&ds.catalog, &ds.taxonomy);
    let t = Instant::now();
    let mut up = upload(&ds, &vectors, "c1a57e55");
    up.layout.shards = 3;
    up.layout.replicas = 2;
    up.layout.batch = 1000;
    let report = qdrant::upload(&client, &up, &mut |_, _| {}).expect("upload to the cluster");
    eprintln!(
        "uploaded {products} points to 3 shards x 2 replicas in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let collection = report.collection.clone();
    assert!(wait_all_active(&client, &collection, Duration::from_secs(30)).is_some());

    // 64 connections search while node 2 is killed (SIGKILL) and started again.
    let target = QdrantTarget {
        config: cfg.clone(),
        collection: None,
        model_digest: Some("c1a57e55".into()),
    };
    let index = Arc::new(target.open(&ds, 32).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let during = Arc::new(Mutex::new(Vec::<f64>::new()));
    let fault = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (index, stop, failed) =
                (Arc::clone(&index), Arc::clone(&stop), Arc::clone(&failed));
            let (first_error, during, fault) = (
                Arc::clone(&first_error),
                Arc::clone(&during),
                Arc::clone(&fault),
            );
            let vectors = vectors.clone();
            std::thread::spawn(move || {
                let mut i = w * 7919;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let p = i % products;
                    i += 104_729;
                    let q = &vectors[p * 32..(p + 1) * 32];
                    let t = Instant::now();
                    match index.search(q, 10) {
                        Ok(hits) if !hits.is_empty() => {}
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .expect("lock")
                                .get_or_insert(e.to_string());
                        }
                    }
                    if fault.load(Ordering::Relaxed) {
                        during
                            .lock()
                            .expect("lock")
                            .push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    fault.store(true, Ordering::Relaxed);
    nodes[1].kill();
    std::thread::sleep(Duration::from_secs(3));
    let restart = Instant::now();
    nodes[1].spawn();
    let caught_up =
        wait_all_active(&client, &collection, Duration::from_secs(60)).map(|_| restart.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    fault.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let total: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let mut during = during.lock().expect("lock").clone();
    during.sort_by(f64::total_cmp);
    let p99 = during
        .get((during.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "cluster fault: {total} searches from 64 connections, {failed} failed; {} during the \
         fault, p99 {p99:.1} ms; restarted node caught up: {:?}",
        during.len(),
        caught_up
    );
    assert_eq!(
        failed,
        0,
        "first error: {:?}",
        first_error.lock().expect("lock")
    );
    assert!(
        caught_up.is_some(),
        "the restarted node did not catch up within 60 s"
    );
    assert!(total > 1000, "only {total} searches ran");
    // The restarted node answers on its own.
    let alone = QdrantTarget {
        config: config(&[&nodes[1]]),
        ..target.clone()
    };
    let hits = alone
        .open(&ds, 32)
        .expect("open on node 2")
        .search(&vectors[..32], 10)
        .expect("search on node 2");
    assert_eq!(hits.len(), 10);

    // Writes while node 3 is down: every acknowledged point is there once it is back, on
    // every replica (read with consistency=all).
    nodes[2].kill();
    let new_ids: Vec<usize> = (products..products + 300).collect();
    let mut acknowledged = Vec::new();
    for chunk in new_ids.chunks(50) {
        let points: Vec<Value> = chunk
            .iter()
            .map(|&p| json!({"id": p, "vector": &vectors[(p % products) * 32..(p % products + 1) * 32], "payload": {"product": p}}))
            .collect();
        if client
            .call(
                Method::Put,
                &format!("/collections/{collection}/points?wait=true"),
                Some(&json!({ "points": points })),
                &collection,
            )
            .is_ok()
        {
            acknowledged.extend_from_slice(chunk);
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged with one node down"
    );
    let down = replica_states(&client, &collection);
    let restart = Instant::now();
    nodes[2].spawn();
    let caught_up =
        wait_all_active(&client, &collection, Duration::from_secs(60)).map(|_| restart.elapsed());
    assert!(caught_up.is_some(), "node 3 did not catch up");
    let there = client
        .call(
            Method::Post,
            &format!("/collections/{collection}/points?consistency=all"),
            Some(&json!({"ids": acknowledged, "with_payload": false})),
            &collection,
        )
        .expect("retrieve");
    let found = there.as_array().map_or(0, Vec::len);
    eprintln!(
        "writes with node 3 down: {} of 300 acknowledged (replicas then: {down:?}), {found} on \
         every replica after it rejoined ({caught_up:?} from its restart to all replicas active)",
        acknowledged.len()
    );
    assert_eq!(found, acknowledged.len(), "acknowledged points lost");
}
