//! Tests of the synthetic world.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::*;
use crate::model::Kind;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        products: 4_000,
        users: 400,
        sessions: 6_000,
        seed,
        taxonomy: TaxonomySource::BuiltIn,
    }
}

fn world(cfg: &SynthConfig) -> World {
    generate(cfg).expect("world")
}

#[test]
fn same_config_same_world_and_other_seed_other_world() {
    let a = world(&small(7));
    let b = world(&small(7));
    let (da, db) = (&a.dataset, &b.dataset);
    assert_eq!(da.catalog.products(), db.catalog.products());
    assert_eq!(da.interactions, db.interactions);
    assert_eq!(da.judgments, db.judgments);
    assert_eq!(da.queries.len(), db.queries.len());
    assert!(da
        .queries
        .iter()
        .zip(db.queries.iter())
        .all(|(x, y)| x == y));
    let ua: Vec<_> = da.users.iter().map(|(_, u)| u.clone()).collect();
    let ub: Vec<_> = db.users.iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(ua, ub);
    assert_eq!(a.truth.users, b.truth.users);
    assert_eq!(a.truth.sessions, b.truth.sessions);

    let c = world(&small(8));
    assert_ne!(da.catalog.products(), c.dataset.catalog.products());
    assert_ne!(da.interactions, c.dataset.interactions);
}

#[test]
fn products_sit_on_leaves_with_brand_and_type_in_the_title() {
    let w = world(&small(1));
    let ds = &w.dataset;
    let t = &ds.taxonomy;
    let shop = tree::built_in().expect("tree");
    let noun: HashMap<NodeId, &str> = shop
        .leaves
        .iter()
        .map(|l| (l.node, l.noun.as_str()))
        .collect();
    assert_eq!(ds.catalog.len(), 4_000);
    assert_eq!(w.truth.products.len(), 4_000);
    let mut leaves_used = std::collections::HashSet::new();
    for (id, p) in ds.catalog.iter() {
        assert!(
            t.is_leaf(p.category),
            "{} on inner node {}",
            p.id,
            t.path_string(p.category)
        );
        assert_eq!(w.truth.products[id.index()].leaf, p.category);
        assert!(
            p.title.starts_with(&p.brand),
            "{:?} lacks its brand {:?}",
            p.title,
            p.brand
        );
        let n = noun[&p.category];
        assert!(p.title.contains(n), "{:?} lacks its type {n:?}", p.title);
        assert!(p.price.is_some_and(|x| x > 0.0));
        assert!(p
            .attributes
            .contains(&("brand".to_owned(), p.brand.clone())));
        assert!(
            p.attributes.windows(2).all(|w| w[0].0 <= w[1].0),
            "sorted by name"
        );
        assert!(p.attributes.iter().any(|(k, _)| k == "model"));
        assert!(!p.description.is_empty());
        leaves_used.insert(p.category);
    }
    assert!(
        leaves_used.len() > 300,
        "{} leaves hold products",
        leaves_used.len()
    );
    // Siblings in a variant group differ in subtle attributes only.
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, p) in w.truth.products.iter().enumerate() {
        groups.entry(p.group).or_default().push(i);
    }
    let multi = groups.values().filter(|g| g.len() > 1).count();
    assert!(multi > 200, "{multi} groups with variants");
    for g in groups.values() {
        let first = &w.truth.products[g[0]];
        for &i in &g[1..] {
            let p = &w.truth.products[i];
            assert_eq!(
                (p.leaf, p.brand, p.attrs[1], p.attrs[3]),
                (first.leaf, first.brand, first.attrs[1], first.attrs[3])
            );
            assert!(p.attrs[0] != first.attrs[0] || p.attrs[2] != first.attrs[2]);
        }
    }
    let tv = ds
        .catalog
        .iter()
        .find(|(_, p)| t.name(p.category) == "QLED TVs")
        .map(|(_, p)| p.title.clone())
        .expect("a QLED TV");
    assert!(tv.contains("inch") && tv.contains("QLED TV"), "{tv}");
}

#[test]
fn queries_range_from_broad_to_specific() {
    let w = world(&small(2));
    let ds = &w.dataset;
    let mut by_spec: HashMap<Specificity, Vec<&str>> = HashMap::new();
    for s in &w.truth.sessions {
        by_spec
            .entry(s.specificity)
            .or_default()
            .push(ds.queries.text(s.query));
    }
    let n = w.truth.sessions.len() as f64;
    for spec in [
        Specificity::Broad,
        Specificity::Medium,
        Specificity::Specific,
    ] {
        let share = by_spec.get(&spec).map_or(0, Vec::len) as f64 / n;
        assert!(share > 0.15, "{spec:?}: {share}");
    }
    let words = |q: &str| q.split(' ').count();
    let mean = |v: &Vec<&str>| v.iter().map(|q| words(q)).sum::<usize>() as f64 / v.len() as f64;
    let (b, m, s) = (
        mean(&by_spec[&Specificity::Broad]),
        mean(&by_spec[&Specificity::Medium]),
        mean(&by_spec[&Specificity::Specific]),
    );
    assert!(
        b < m && m < s,
        "mean words broad {b}, medium {m}, specific {s}"
    );
    assert!(ds.queries.find("tv").is_some() || ds.queries.iter().any(|(_, q)| q.ends_with(" tv")));
    // The target of every session is a grade-3 answer to what its query means.
    for s in &w.truth.sessions {
        assert_eq!(w.truth.relevance(&ds.taxonomy, &s.spec, s.target), 3);
    }
}

#[test]
fn interactions_are_valid_and_in_time_order_per_user() {
    let w = world(&small(3));
    let ds = &w.dataset;
    assert!(!ds.interactions.is_empty());
    let mut last: HashMap<u32, i64> = HashMap::new();
    let mut kinds: HashMap<Kind, usize> = HashMap::new();
    for e in &ds.interactions {
        assert!(e.user.index() < ds.users.len());
        assert!(e.product.index() < ds.catalog.len());
        if let Some(q) = e.query {
            assert!(q.index() < ds.queries.len());
            let s = e.session.expect("search events have a session");
            assert!((s as usize) < w.truth.sessions.len());
            assert_eq!(w.truth.sessions[s as usize].user, e.user);
        } else {
            assert_eq!(
                e.kind,
                Kind::Purchase,
                "events without a query are repeat buys"
            );
        }
        assert!(e.time >= START_TIME && e.time < START_TIME + 400 * 86_400);
        assert!(e.price.is_some());
        let l = last.entry(e.user.0).or_insert(i64::MIN);
        assert!(e.time >= *l, "user {} goes back in time", e.user.0);
        *l = e.time;
        *kinds.entry(e.kind).or_default() += 1;
    }
    for h in ds.user_histories() {
        let times: Vec<i64> = h
            .iter()
            .map(|&i| ds.interactions[i as usize].time)
            .collect();
        assert!(times.windows(2).all(|p| p[0] <= p[1]));
    }
    assert!(kinds[&Kind::Click] > kinds[&Kind::AddToCart]);
    assert!(kinds[&Kind::AddToCart] > 0 && kinds[&Kind::Purchase] > 0);
    let repeat = ds.interactions.iter().filter(|e| e.query.is_none()).count();
    assert!(repeat > 0, "no purchases without a query");
    for j in &ds.judgments {
        assert!(j.query.index() < ds.queries.len() && j.product.index() < ds.catalog.len());
        let spec = w
            .truth
            .query_spec(j.query)
            .expect("judged queries have a meaning");
        assert_eq!(
            w.truth.relevance(&ds.taxonomy, spec, j.product),
            j.relevance
        );
        assert!((1..=3).contains(&j.relevance));
    }
    let mut per_query: HashMap<QueryId, usize> = HashMap::new();
    for j in &ds.judgments {
        *per_query.entry(j.query).or_default() += 1;
    }
    assert!(per_query
        .values()
        .all(|&n| n <= sim::MAX_JUDGMENTS_PER_QUERY));
    assert!(per_query.len() <= sim::MAX_JUDGED_QUERIES && per_query.len() > 100);
    for g in 1..=3u8 {
        assert!(
            ds.judgments.iter().any(|j| j.relevance == g),
            "no judgment of grade {g}"
        );
    }
}

#[test]
fn purchases_prefer_the_users_brands() {
    let w = world(&SynthConfig {
        products: 3_000,
        users: 300,
        sessions: 8_000,
        seed: 11,
        taxonomy: TaxonomySource::BuiltIn,
    });
    let ds = &w.dataset;
    // Chance: the share of the bought product's leaf whose brand the buyer prefers.
    let by_leaf = ds.products_by_node();
    let (mut observed, mut expected, mut n) = (0.0, 0.0, 0usize);
    for e in ds.interactions.iter().filter(|e| e.kind == Kind::Purchase) {
        let u = &w.truth.users[e.user.index()];
        let p = &w.truth.products[e.product.index()];
        let leaf = &by_leaf[p.leaf.index()];
        let liked = leaf
            .iter()
            .filter(|q| {
                u.preferred_brands
                    .contains(&w.truth.products[q.index()].brand)
            })
            .count();
        expected += liked as f64 / leaf.len() as f64;
        observed += f64::from(u8::from(u.preferred_brands.contains(&p.brand)));
        n += 1;
    }
    assert!(n > 1_000, "{n} purchases");
    // Binomial margin: observed must beat chance by far more than 5 standard deviations.
    let sd = (expected * (1.0 - expected / n as f64)).sqrt();
    println!("purchases {n}: preferred brand {observed}, chance {expected:.1} (sd {sd:.1})");
    assert!(
        observed > 2.0 * expected,
        "observed {observed}, chance {expected}"
    );
    assert!(observed - expected > 5.0 * sd);
}

#[test]
fn interactions_per_session_is_as_documented() {
    let cfg = SynthConfig {
        products: 5_000,
        users: 1_000,
        sessions: 30_000,
        seed: 5,
        taxonomy: TaxonomySource::BuiltIn,
    };
    let w = world(&cfg);
    let per = w.dataset.interactions.len() as f64 / cfg.sessions as f64;
    println!("interactions per session: {per:.3}");
    assert!((per / INTERACTIONS_PER_SESSION - 1.0).abs() < 0.05, "{per}");
    assert_eq!(
        SynthConfig::sessions_for_interactions(10_000_000),
        (10_000_000f64 / INTERACTIONS_PER_SESSION).ceil() as usize
    );
}

#[test]
fn bad_settings_are_config_errors() {
    for cfg in [
        SynthConfig {
            products: 0,
            ..Default::default()
        },
        SynthConfig {
            products: 5_000_001,
            ..Default::default()
        },
        SynthConfig {
            users: 0,
            ..Default::default()
        },
        SynthConfig {
            sessions: 20_000_001,
            ..Default::default()
        },
        SynthConfig {
            taxonomy: TaxonomySource::BestBuy("/nonexistent/categories.json".into()),
            ..Default::default()
        },
    ] {
        let err = generate(&cfg).expect_err("invalid");
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("synthetic world"), "{err}");
    }
    assert!(SynthConfig::default().validate().is_ok());
}

#[test]
fn tiny_worlds_work() {
    let w = world(&SynthConfig {
        products: 1,
        users: 1,
        sessions: 3,
        seed: 0,
        taxonomy: TaxonomySource::BuiltIn,
    });
    assert_eq!(w.dataset.catalog.len(), 1);
    assert_eq!(w.truth.sessions.len(), 3);
    let w = world(&SynthConfig {
        products: 10,
        users: 5,
        sessions: 0,
        seed: 0,
        taxonomy: TaxonomySource::BuiltIn,
    });
    assert!(w.dataset.interactions.is_empty());
}

#[test]
fn written_world_loads_back() {
    let w = world(&SynthConfig {
        products: 800,
        users: 60,
        sessions: 500,
        seed: 9,
        taxonomy: TaxonomySource::BuiltIn,
    });
    let dir = std::env::temp_dir().join(format!("aisle-synth-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_world(&w, &dir).expect("written");
    for f in [
        "users.jsonl",
        "sessions.jsonl",
        "scopes.jsonl",
        "products.csv",
        "world.json",
    ] {
        assert!(dir.join("truth").join(f).is_file(), "{f}");
    }
    let back =
        crate::io::generic::load_dir(&dir, "synthetic", crate::Strictness::Strict).expect("loads");
    let ds = &w.dataset;
    assert_eq!(back.catalog.products(), ds.catalog.products());
    assert_eq!(back.taxonomy.len(), ds.taxonomy.len());
    assert_eq!(back.users.len(), ds.users.len());
    assert_eq!(back.interactions.len(), ds.interactions.len());
    assert_eq!(back.judgments.len(), ds.judgments.len());
    let sessions = std::fs::read_to_string(dir.join("truth/sessions.jsonl")).expect("read");
    assert_eq!(sessions.lines().count(), w.truth.sessions.len());
    let first: serde_json::Value =
        serde_json::from_str(sessions.lines().next().expect("a line")).expect("json");
    assert!(first["query"].is_string() && first["target"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_world_is_the_embedded_dataset() {
    let start = Instant::now();
    let w = default_world().expect("default world");
    println!("default world in {:?}", start.elapsed());
    let ds = &w.dataset;
    assert_eq!(ds.name, "synthetic");
    assert_eq!(ds.catalog.len(), 10_000);
    assert_eq!(ds.users.len(), 2_000);
    assert!(ds.interactions.len() > 100_000);
    for (_, p) in ds.catalog.iter().take(3) {
        println!("{} | {} | {} | {:?}", p.id, p.title, p.description, p.price);
    }
    for s in w.truth.sessions.iter().take(12) {
        println!("{:?}: {}", s.specificity, ds.queries.text(s.query));
    }
}

/// `Dataset::digest` on small synthetic worlds (tested here because `synth` imports `dataset`,
/// not the other way round).
#[test]
fn digest_follows_the_data_not_the_name() {
    let ds = small_dataset(200, 20, 100, 7).expect("world");
    let d = ds.digest();
    assert_eq!(d.len(), 8);
    // The same data built again, or under another name, has the same digest.
    let mut again = small_dataset(200, 20, 100, 7).expect("world");
    assert_eq!(again.digest(), d);
    again.name = "renamed".into();
    assert_eq!(again.digest(), d);
    // Another world, one event more or less, one title changed: another digest.
    let other = small_dataset(200, 20, 100, 8).expect("world");
    assert_ne!(other.digest(), d);
    let mut fewer = ds.clone();
    fewer.interactions.pop();
    assert_ne!(fewer.digest(), d);
    let mut retitled = ds.clone();
    let mut products = retitled.catalog.products().to_vec();
    products[crate::model::ProductId(3).index()].title.push('x');
    retitled.catalog = crate::model::Catalog::new();
    for p in products {
        retitled.catalog.push(p).expect("unique ids");
    }
    assert_ne!(retitled.digest(), d);
}

/// The scale benchmark: 1M products and about 10M interactions, generated and written to
/// /tmp/aisle-synth-scale. Run with
/// `cargo test --release -p aisle-core -- --ignored synth_scale --nocapture`.
#[test]
#[ignore]
fn synth_scale_1m_products_10m_interactions() {
    let cfg = SynthConfig {
        products: 1_000_000,
        users: 100_000,
        sessions: SynthConfig::sessions_for_interactions(10_000_000),
        seed: 42,
        taxonomy: TaxonomySource::BuiltIn,
    };
    let start = Instant::now();
    let w = generate(&cfg).expect("world");
    let gen = start.elapsed();
    let dir = PathBuf::from("/tmp/aisle-synth-scale");
    let _ = std::fs::remove_dir_all(&dir);
    write_world(&w, &dir).expect("written");
    let total = start.elapsed();
    println!(
        "scale: {} products, {} users, {} sessions, {} queries, {} interactions, {} judgments; generate {:.1}s, write {:.1}s, total {:.1}s",
        w.dataset.catalog.len(),
        w.dataset.users.len(),
        w.truth.sessions.len(),
        w.dataset.queries.len(),
        w.dataset.interactions.len(),
        w.dataset.judgments.len(),
        gen.as_secs_f64(),
        (total - gen).as_secs_f64(),
        total.as_secs_f64()
    );
}
