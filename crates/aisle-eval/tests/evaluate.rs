//! An evaluation end to end on a small synthetic world: an oracle ranks perfectly, the baselines
//! behave as defined, segments partition the queries, and the paired test separates rows.

mod support;

use aisle_core::{Dataset, ProductId};
use aisle_eval::{
    evaluate, Bm25Ranker, Case, EvalConfig, MemorisationRanker, PopularityRanker, Ranker, Result,
};

use support::world;

/// Ranks each test query's relevant products first (by grade), then nothing.
struct Oracle<'a>(&'a Dataset);

impl Ranker for Oracle<'_> {
    fn name(&self) -> String {
        "oracle".into()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        let split = self.0.default_split().expect("split");
        Ok(cases
            .iter()
            .map(|c| {
                let mut rel: Vec<(ProductId, u8)> = split
                    .test
                    .iter()
                    .filter(|q| self.0.queries.text(q.query) == c.text)
                    .flat_map(|q| q.relevant.iter().copied())
                    .collect();
                rel.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                rel.dedup_by_key(|r| r.0);
                rel.into_iter().map(|r| r.0).take(depth).collect()
            })
            .collect())
    }
}

#[test]
fn oracle_baselines_segments_and_significance() {
    let ds = world();
    let split = ds.default_split().expect("split");
    let oracle = Oracle(&ds);
    let bm25 = Bm25Ranker::new(&ds).expect("bm25");
    let pop = PopularityRanker::new(&ds, split);
    let memo = MemorisationRanker::new(&ds, split);
    let rankers: [&dyn Ranker; 4] = [&pop, &bm25, &memo, &oracle];
    let cfg = EvalConfig {
        resamples: 200,
        rounds: 2000,
        ..EvalConfig::default()
    };
    let report = evaluate(&ds, split, &rankers, &cfg).expect("report");
    assert_eq!(report.best, "oracle");
    let row = |name: &str| report.rows.iter().find(|r| r.system == name).expect("row");
    let r100 = |name: &str| row(name).micro["recall@100"].mean;
    // The oracle puts every relevant product of its query text in the list; a query whose text
    // recurs with other relevant products can still lose some below rank 100, so 0.99, not 1.
    assert!(r100("oracle") > 0.99, "{}", r100("oracle"));
    assert!(row("oracle").micro["mrr"].mean > 0.99);
    // Recall is monotone in K for every row.
    for r in &report.rows {
        let ks = [1, 5, 10, 20, 50, 100];
        for w in ks.windows(2) {
            let a = r.micro[&format!("recall@{}", w[0])].mean;
            let b = r.micro[&format!("recall@{}", w[1])].mean;
            assert!(
                a <= b + 1e-12,
                "{}: R@{} {a} > R@{} {b}",
                r.system,
                w[0],
                w[1]
            );
        }
        let e = r.micro["recall@10"];
        assert!(e.low <= e.mean && e.mean <= e.high);
        assert_eq!(e.n, report.queries);
    }
    // Lexical and memorised rankings beat one list for everyone; the oracle beats all, clearly.
    assert!(row("BM25").micro["recall@10"].mean > row("popularity").micro["recall@10"].mean);
    assert!(row("popularity").p_vs_best.expect("p") < 0.01);
    assert!(row("oracle").p_vs_best.is_none());
    // Seen and unseen queries partition the evaluated ones; head + torso + tail = seen.
    let size = |s: &str| report.segment_sizes.get(s).copied().unwrap_or(0);
    assert_eq!(
        size("seen queries") + size("unseen queries"),
        report.queries
    );
    assert_eq!(
        size("head queries") + size("torso queries") + size("tail queries"),
        size("seen queries")
    );
    // Cold-start products: the oracle finds them, popularity (training counts) cannot, and the
    // paired test on that segment says so against the segment's best row.
    let cold = |name: &str| row(name).segments["cold-start products"].mean;
    println!(
        "cold-start products ({} pairs): oracle {:.3}, popularity {:.3} (p {:?})",
        size("cold-start products"),
        cold("oracle"),
        cold("popularity"),
        row("popularity").p_cold_vs_best
    );
    assert!(
        size("cold-start products") >= 10,
        "the world has cold-start products"
    );
    assert!(
        row("oracle").p_cold_vs_best.is_none(),
        "the oracle is best there"
    );
    assert!(cold("popularity") < cold("oracle"));
    assert!(row("popularity").p_cold_vs_best.expect("p") < 0.01);
    // Memorisation falls back to popularity on unseen queries: the same recall there.
    let unseen = |name: &str| row(name).segments["unseen queries"].mean;
    assert!((unseen("query memorisation") - unseen("popularity")).abs() < 1e-12);
    // The rendered table names every row and segment.
    let text = report.render();
    for name in [
        "oracle",
        "BM25",
        "popularity",
        "query memorisation",
        "unseen queries",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn personalized_ranking_without_a_history_is_the_plain_ranking() {
    use aisle_core::UserId;
    use aisle_eval::DenseRanker;

    let ds = std::sync::Arc::new(world());
    let split = ds.default_split().expect("split");
    // History only: with the synthetic customers' features, a known customer without a history
    // is personalized (aisle-search's customer_features test).
    let personal = support::personal_model(&ds, 30, false);
    let mut plain = personal.clone();
    plain.personal = None;
    let p = DenseRanker::new("personal", personal, &ds, split, 10).expect("ranker");
    let q = DenseRanker::new("plain", plain, &ds, split, 10).expect("ranker");
    // Customers with a history: the last test queries' users, asked at their cut-offs.
    let with: Vec<Case> = split
        .test
        .iter()
        .filter(|e| e.user.is_some())
        .take(50)
        .map(|e| Case {
            text: ds.queries.text(e.query),
            user: e.user,
            before: e.before,
        })
        .collect();
    let without: Vec<Case> = with
        .iter()
        .enumerate()
        .map(|(i, c)| Case {
            user: match i % 3 {
                0 => None,
                1 => Some(UserId(u32::MAX - 1)),
                _ => c.user,
            },
            // No interaction is before the earliest time: an empty history.
            before: if i % 3 == 2 { i64::MIN } else { c.before },
            ..*c
        })
        .collect();
    assert_eq!(
        p.rank(&without, 20).expect("rank"),
        q.rank(&without, 20).expect("rank"),
        "no user, an unknown user or an empty history must rank as the plain model"
    );
    assert_ne!(
        p.rank(&with, 20).expect("rank"),
        q.rank(&with, 20).expect("rank"),
        "histories changed nothing"
    );
}

/// A row of several rankers (seeds) averages their per-query values: its means are the means of
/// its members' rows, and it keeps each member's Recall@10.
#[test]
fn a_group_averages_its_members_and_replays_outcomes() {
    use aisle_eval::{evaluate_groups, Group, Member};
    let ds = world();
    let split = ds.default_split().expect("split");
    let oracle = Oracle(&ds);
    let pop = PopularityRanker::new(&ds, split);
    let cfg = EvalConfig {
        resamples: 100,
        rounds: 200,
        ..EvalConfig::default()
    };
    let single = evaluate(&ds, split, &[&oracle as &dyn Ranker, &pop], &cfg).expect("report");
    let groups = [Group {
        name: "both".into(),
        members: vec![Member::Ready(&oracle), Member::Ready(&pop)],
    }];
    let grouped = evaluate_groups(&ds, split, &groups, &cfg).expect("report");
    let row = &grouped.rows[0];
    for metric in ["recall@10", "ndcg@10", "mrr", "recall@100"] {
        let want = (single.rows[0].micro[metric].mean + single.rows[1].micro[metric].mean) / 2.0;
        let got = row.micro[metric].mean;
        assert!((got - want).abs() < 1e-9, "{metric}: {got} != {want}");
    }
    assert_eq!(row.seeds.len(), 2);
    assert!((row.seeds[0] - single.rows[0].micro["recall@10"].mean).abs() < 1e-12);
    assert!((row.seeds[1] - single.rows[1].micro["recall@10"].mean).abs() < 1e-12);
    // Replay: every evaluated query has a logged interaction, and the oracle shows the query's
    // relevant (interacted) products first, so it finds nearly all; popularity finds fewer.
    let interacted = |r: &aisle_eval::Row| r.replay["interacted in top 10"].mean;
    assert!(
        interacted(&single.rows[0]) > 0.95,
        "{}",
        interacted(&single.rows[0])
    );
    assert!(interacted(&single.rows[1]) < interacted(&single.rows[0]));
    assert_eq!(
        single.rows[0].replay["interacted in top 10"].n,
        single.queries
    );
    // Purchases are a subset of the queries; the synthetic world prices every product.
    let bought = single.rows[0].replay["bought in top 10"];
    assert!(bought.n > 0 && bought.n < single.queries);
    assert!(single.rows[0].replay.contains_key("order value found"));
    let empty: [Group; 1] = [Group {
        name: "nobody".into(),
        members: vec![],
    }];
    assert!(evaluate_groups(&ds, split, &empty, &cfg).is_err());
}
