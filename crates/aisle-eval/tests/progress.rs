//! What `aisle eval` relies on to hold one row in memory at a time and to show its progress:
//! lazy rows are built one at a time and dropped after their turn, rows of one model share its
//! embedding table, and ranking in chunks (as progress does) changes no figure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod support;

use aisle_core::{Dataset, ProductId};
use aisle_eval::evaluate::{evaluate_groups_with_progress, Progress, PROGRESS_CHUNK};
use aisle_eval::{
    evaluate_groups, Bm25Ranker, Case, DenseOptions, DenseRanker, EvalConfig, Group, Member,
    PopularityRanker, Ranker, Report, Result,
};
use aisle_model::Model;
use aisle_search::Mode;

fn world() -> Arc<Dataset> {
    Arc::new(support::world())
}

/// A small personalized model, trained for a few steps.
fn model(ds: &Dataset) -> Model {
    support::personal_model(ds, 20, true)
}

fn options(history_boost: f32) -> DenseOptions {
    DenseOptions {
        history: 10,
        history_rule: Default::default(),
        mode: Mode::Dense,
        history_boost,
        bm25: aisle_search::FieldBoosts::default(),
    }
}

/// The report without its timings, as JSON.
fn figures(report: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("json");
    for row in v["rows"].as_array_mut().expect("rows") {
        row["rank_s"] = serde_json::Value::Null;
    }
    v
}

#[test]
fn rows_of_one_model_share_its_table() {
    let ds = world();
    let split = ds.default_split().expect("split");
    let model = Arc::new(model(&ds));
    let a = DenseRanker::with_options("a", Arc::clone(&model), &ds, split, &options(0.0))
        .expect("ranker");
    let b = DenseRanker::with_options("b", Arc::clone(&model), &ds, split, &options(1.0))
        .expect("ranker");
    assert_eq!(Arc::strong_count(&model), 3, "each ranker copied the model");
    drop((a, b));
    assert_eq!(
        Arc::strong_count(&model),
        1,
        "a dropped ranker kept the model"
    );
}

/// Ranking in chunks of [`PROGRESS_CHUNK`] gives the lists of one call, bit for bit, for a
/// personalized model with the history term (more cases than a chunk, with customers).
#[test]
fn a_dense_ranker_ranks_the_same_in_chunks() {
    let ds = world();
    let split = ds.default_split().expect("split");
    let ranker =
        DenseRanker::with_options("p", model(&ds), &ds, split, &options(0.5)).expect("ranker");
    let cases: Vec<Case> = split
        .test
        .iter()
        .cycle()
        .take(PROGRESS_CHUNK + 700)
        .map(|q| Case {
            text: ds.queries.text(q.query),
            user: q.user,
            before: q.before,
        })
        .collect();
    assert!(cases.iter().any(|c| c.user.is_some()));
    let whole = ranker.rank(&cases, 100).expect("rank");
    let mut chunked: Vec<Vec<ProductId>> = Vec::new();
    for chunk in cases.chunks(PROGRESS_CHUNK) {
        chunked.extend(ranker.rank(chunk, 100).expect("rank"));
    }
    assert_eq!(whole, chunked);
}

/// Counts the rankers alive, to check that lazy rows are built one at a time.
struct Counted<R> {
    inner: R,
    live: &'static AtomicUsize,
}

impl<R> Counted<R> {
    fn new(inner: R, live: &'static AtomicUsize, most: &'static AtomicUsize) -> Self {
        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(n, Ordering::SeqCst);
        Counted { inner, live }
    }
}

impl<R> Drop for Counted<R> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R: Ranker + ?Sized> Ranker for Counted<Box<R>> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        self.inner.rank(cases, depth)
    }
}

/// Lazy rows with progress give the report of rankers built beforehand, are built one at a
/// time, and every row reports its start, its ranked queries and its end.
#[test]
fn lazy_rows_with_progress_keep_every_figure() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    let ds = world();
    let split = ds.default_split().expect("split");
    let model = Arc::new(model(&ds));
    let cfg = EvalConfig {
        resamples: 100,
        rounds: 200,
        ..EvalConfig::default()
    };
    let bm25 = Bm25Ranker::new(&ds).expect("bm25");
    let pop = PopularityRanker::new(&ds, split);
    let plain = DenseRanker::with_options("dense", Arc::clone(&model), &ds, split, &options(0.0))
        .expect("ranker");
    let boosted =
        DenseRanker::with_options("boosted", Arc::clone(&model), &ds, split, &options(1.0))
            .expect("ranker");
    let ready: Vec<(&str, &dyn Ranker)> = vec![
        ("BM25", &bm25),
        ("popularity", &pop),
        ("dense", &plain),
        ("boosted", &boosted),
    ];
    let groups: Vec<Group> = ready
        .iter()
        .map(|&(name, r)| Group {
            name: name.into(),
            members: vec![Member::Ready(r)],
        })
        .collect();
    let before = evaluate_groups(&ds, split, &groups, &cfg).expect("report");
    drop(groups);
    drop(ready);
    drop((plain, boosted));

    let build = |name: &str| -> Result<Box<dyn Ranker>> {
        let counted =
            |r: Box<dyn Ranker>| -> Box<dyn Ranker> { Box::new(Counted::new(r, &LIVE, &MOST)) };
        Ok(match name {
            "BM25" => counted(Box::new(Bm25Ranker::new(&ds)?)),
            "popularity" => counted(Box::new(PopularityRanker::new(&ds, split))),
            "dense" => counted(Box::new(DenseRanker::with_options(
                "dense",
                Arc::clone(&model),
                &ds,
                split,
                &options(0.0),
            )?)),
            _ => counted(Box::new(DenseRanker::with_options(
                "boosted",
                Arc::clone(&model),
                &ds,
                split,
                &options(1.0),
            )?)),
        })
    };
    let names = ["BM25", "popularity", "dense", "boosted"];
    let lazy: Vec<Group> = names
        .iter()
        .map(|&name| Group {
            name: name.into(),
            members: vec![Member::Lazy(Box::new(move || build(name)))],
        })
        .collect();
    let mut events: Vec<String> = Vec::new();
    let after = evaluate_groups_with_progress(&ds, split, &lazy, &cfg, &mut |p| {
        events.push(match p {
            Progress::Building { row, rows, .. } => format!("build {row}/{rows}"),
            Progress::Ranking { row, queries, .. } => format!("rank {row} {queries}"),
            Progress::Ranked { done, queries } => format!("ranked {done}/{queries}"),
            Progress::RowDone { row, name, .. } => format!("done {row} {name}"),
        })
    })
    .expect("report");
    assert_eq!(figures(&before), figures(&after));
    assert_eq!(
        MOST.load(Ordering::SeqCst),
        1,
        "lazy rows were alive together"
    );
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "a lazy row outlived its turn"
    );
    assert_eq!(Arc::strong_count(&model), 1);
    let n = after.queries;
    assert!(n < PROGRESS_CHUNK, "one chunk per row here");
    let want: Vec<String> = names
        .iter()
        .enumerate()
        .flat_map(|(row, name)| {
            [
                format!("build {row}/4"),
                format!("rank {row} {n}"),
                format!("ranked {n}/{n}"),
                format!("done {row} {name}"),
            ]
        })
        .collect();
    assert_eq!(events, want);
}
