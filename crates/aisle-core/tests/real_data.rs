//! The importers and the synthetic world over the real datasets in `../shared/data` (or
//! `$AISLE_DATA_DIR`). Without a dataset a test skips with a printed reason; under `CI=true` it
//! fails naming the missing folder (`aisle_fixtures::real_data`).

use aisle_core::adapters::bestbuy::{load_xbox, read_categories, XBOX_GAMES};
use aisle_core::adapters::{flipkart, instacart};
use aisle_core::synth::{generate, SynthConfig, TaxonomySource};
use aisle_core::Strictness;
use aisle_fixtures::real_data;

#[test]
fn real_instacart() {
    let Some(data) = real_data("instacart") else {
        return;
    };
    let ds = instacart::load(&data.join("instacart"), Strictness::Strict).expect("loads");
    assert_eq!(ds.catalog.len(), 49_688);
    assert_eq!(ds.taxonomy.len(), 1 + 21 + 134);
    assert_eq!(ds.taxonomy.max_depth(), 2);
    assert_eq!(ds.users.len(), 593);
    assert_eq!(ds.interactions.len(), 150_000);
    let p = ds.catalog.find("105").expect("product 105");
    assert_eq!(
        ds.catalog.get(p).title,
        "Easy Grab 9\"x13\" Oblong Glass Bakeware"
    );
    let p = ds.catalog.find("1").expect("product 1");
    assert_eq!(
        ds.taxonomy.path_string(ds.catalog.get(p).category),
        "snacks > cookies cakes"
    );
}

#[test]
fn real_categories_tree() {
    let Some(data) = real_data("bestbuy_categories") else {
        return;
    };
    let t = read_categories(&data.join("bestbuy_categories/categories.json")).expect("tree");
    // 4,584 listed categories plus 139 ancestors that appear only inside paths, plus the root.
    assert_eq!(t.len(), 4584 + 139 + 1);
    assert_eq!(t.max_depth(), 6);
    let games = t.node(XBOX_GAMES).expect("xbox games");
    assert_eq!(
        t.path_string(games),
        "Video Games > Xbox 360 > Xbox 360 Games"
    );
}

#[test]
fn real_xbox_logs() {
    let (Some(data), Some(_)) = (real_data("bestbuy_xbox"), real_data("bestbuy_categories")) else {
        return;
    };
    let ds = load_xbox(&data, Strictness::Strict).expect("loads");
    assert_eq!(ds.catalog.len(), 437, "874 rows, each twice");
    // 42,365 clicks, 300 of them on SKUs absent from product.csv.
    assert_eq!(ds.interactions.len(), 42_365 - 300);
    let leaves = ds.taxonomy.leaves();
    assert_eq!(
        leaves.len(),
        17,
        "16 genres after case-merging, plus the unknown genre"
    );
    for l in &leaves {
        assert_eq!(ds.taxonomy.depth(*l), 4);
    }
    let p = ds.catalog.find("1004622").expect("sku");
    assert_eq!(ds.catalog.get(p).brand, "City Interactive");
    assert_eq!(
        ds.taxonomy.name(ds.catalog.get(p).category),
        "Unknown genre"
    );
    assert!(
        ds.catalog.iter().any(|(_, p)| p.title.contains("brütal")),
        "latin-1 decoded"
    );
    assert!(
        ds.catalog.iter().any(|(_, p)| p.title.contains('–')),
        "cp1252 dash"
    );
    let gow = ds.queries.find("Gears of War 3").expect("head query");
    let n = ds
        .interactions
        .iter()
        .filter(|e| e.query == Some(gow))
        .count();
    assert!(n > 2000, "{n}");
}

#[test]
fn real_flipkart() {
    let Some(data) = real_data("flipkart_sample") else {
        return;
    };
    let ds = flipkart::load(&data.join("flipkart_sample"), Strictness::Strict).expect("loads");
    assert_eq!(ds.catalog.len(), 1002);
    assert_eq!(ds.taxonomy.max_depth(), 7);
    let p = ds
        .catalog
        .find("f449ec65dcbc041b6ae5e6a32717d01b")
        .expect("aw bellies");
    let prod = ds.catalog.get(p);
    assert_eq!(
        ds.taxonomy.path_string(prod.category),
        "footwear > womens footwear > ballerinas > aw bellies"
    );
    assert!(prod.attributes.contains(&("color".into(), "Red".into())));
    assert_eq!(prod.price, Some(499.0));
    // A depth-7 product: its LCA with a sibling leaf is an inner node.
    let deep = ds
        .catalog
        .iter()
        .find(|(_, p)| ds.taxonomy.depth(p.category) == 7)
        .map(|(_, p)| p.category)
        .expect("a depth-7 product");
    assert_eq!(ds.taxonomy.ancestors(deep).count(), 7);
}

/// The synthetic world over Best Buy's category tree instead of the built-in one.
#[test]
fn best_buy_taxonomy_world() {
    let Some(data) = real_data("bestbuy_categories") else {
        return;
    };
    let w = generate(&SynthConfig {
        products: 6_000,
        users: 200,
        sessions: 2_000,
        seed: 3,
        taxonomy: TaxonomySource::BestBuy(data.join("bestbuy_categories/categories.json")),
    })
    .expect("world");
    let ds = &w.dataset;
    let t = &ds.taxonomy;
    assert_eq!(t.len(), 4_724, "4,723 Best Buy categories and the root");
    assert!(t.node("abcat0101000").is_some());
    for (_, p) in ds.catalog.iter() {
        assert!(t.is_leaf(p.category));
        assert!(p.title.starts_with(&p.brand));
    }
    let tvs = ds
        .catalog
        .iter()
        .filter(|(_, p)| t.path_string(p.category).contains("TVs"))
        .count();
    assert!(tvs > 0);
    assert!(!ds.interactions.is_empty() && !ds.judgments.is_empty());
}
