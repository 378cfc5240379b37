//! `aisle dataset stats` and `aisle eval` count the same unseen test queries (issue 20, item 6):
//! stats said "n/a" where eval counted 7, because stats compared with the logged queries of
//! training interactions and eval with the query texts training pairs are made of. Both now ask
//! `Split::trained_queries`.

use aisle_core::io::generic::load_bytes;
use aisle_core::stats::DatasetStats;
use aisle_core::{adapters, synth, Dataset, Strictness};
use aisle_eval::{evaluate, EvalConfig, PopularityRanker, Ranker};

/// Per split, (stats' unseen test queries, eval's "unseen queries" segment size, test queries).
fn unseen_counts(ds: &Dataset) -> Vec<(Option<usize>, usize, usize)> {
    let stats = DatasetStats::of(ds);
    assert_eq!(stats.splits.len(), ds.splits.len());
    ds.splits
        .iter()
        .zip(&stats.splits)
        .map(|(split, s)| {
            let pop = PopularityRanker::new(ds, split);
            let cfg = EvalConfig {
                resamples: 20,
                rounds: 20,
                ..EvalConfig::default()
            };
            let rankers: [&dyn Ranker; 1] = [&pop];
            let report = evaluate(ds, split, &rankers, &cfg).expect("report");
            assert_eq!(
                report.queries, s.test_queries,
                "every test query is evaluated"
            );
            let seg = report
                .segment_sizes
                .get("unseen queries")
                .copied()
                .unwrap_or(0);
            (s.test_queries_unseen_in_train, seg, s.test_queries)
        })
        .collect()
}

/// Logged queries (the synthetic world). A query typed only before a view trains nothing, so it is
/// unseen for both (stats alone used to count it as seen).
#[test]
fn stats_and_eval_count_the_same_unseen_logged_queries() {
    let ds = synth::small_dataset(500, 50, 800, 3).expect("world");
    let counts = unseen_counts(&ds);
    assert_eq!(
        ds.splits
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["event", "query_disjoint", "product_disjoint"]
    );
    for (stats, eval, _) in &counts {
        assert_eq!(*stats, Some(*eval), "{counts:?}");
    }
    let (_, event_unseen, event_test) = counts[0];
    assert!(event_unseen > 0 && event_unseen < event_test, "{counts:?}");
    let (_, disjoint_unseen, disjoint_test) = counts[1];
    assert_eq!(disjoint_unseen, disjoint_test, "no test query trains");
}

/// A generic folder without a query column: queries are category texts (leave last order out),
/// and a test query is unseen when no training purchase is in its category.
#[test]
fn stats_and_eval_count_the_same_unseen_taxonomy_queries() {
    let taxonomy = "id,parent,name\nfood,,Food\nmilk,food,Milk\nbread,food,Bread\n\
                    eggs,food,Eggs\ntea,food,Tea\n";
    let products = "id,title,category\nm1,Whole milk,milk\nb1,Rye bread,bread\n\
                    e1,Free range eggs,eggs\nt1,Green tea,tea\n";
    // Each user's last order is test, the one before validation, the others train: u1 and u3
    // buy tea last, which no training order holds; u2's eggs and u4's milk are in u4's training
    // orders.
    let mut interactions = String::from("user,product,kind,time,session\n");
    for (user, orders) in [
        ("u1", ["m1", "b1", "t1"].as_slice()),
        ("u2", &["m1", "m1", "e1"]),
        ("u3", &["b1", "b1", "t1"]),
        ("u4", &["m1", "e1", "e1", "m1"]),
    ] {
        for (k, p) in orders.iter().enumerate() {
            interactions.push_str(&format!("{user},{p},purchase,{k},{k}\n"));
        }
    }
    let mut ds = load_bytes(
        "shop",
        &[
            ("taxonomy.csv", taxonomy.as_bytes()),
            ("products.csv", products.as_bytes()),
            ("interactions.csv", interactions.as_bytes()),
        ],
        Strictness::Strict,
    )
    .expect("dataset");
    adapters::add_default_splits(&mut ds, 1).expect("splits");
    assert_eq!(ds.splits[0].name, "leave_last_order_out");
    assert_eq!(unseen_counts(&ds), [(Some(2), 2, 4)]);
}
