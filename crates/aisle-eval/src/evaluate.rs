//! Evaluating rankers on a split: every metric per query, micro (per evaluated query event) and
//! macro (per distinct query) means with bootstrap intervals, Recall@10 by segment, and a paired
//! randomization test of the best row against each other row.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use aisle_core::{Dataset, EvalQuery, Split};
use aisle_train::data::QuerySource;

use crate::error::{EvalError, Result};
use crate::metrics::{ndcg_at, paired_randomization, recall_at, reciprocal_rank, Estimate};
use crate::rankers::{Case, Ranker};

/// Which queries of the split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Validation,
    Test,
}

/// How to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub part: Part,
    /// Recall cut-offs; the ranking depth is the largest.
    pub ks: Vec<usize>,
    pub resamples: usize,
    /// Sign flips of the paired test.
    pub rounds: usize,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            part: Part::Test,
            ks: vec![1, 5, 10, 20, 50, 100],
            resamples: 1000,
            rounds: 10_000,
            seed: 42,
        }
    }
}

/// The results of one ranker.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub system: String,
    /// Metric name (`recall@10`, `ndcg@10`, `mrr`) -> mean over evaluated queries.
    pub micro: BTreeMap<String, Estimate>,
    /// The same, averaged first within each distinct normalised query.
    #[serde(rename = "macro")]
    pub macro_: BTreeMap<String, Estimate>,
    /// Segment name -> Recall@10 over the queries (or relevant products) of that segment.
    pub segments: BTreeMap<String, Estimate>,
    /// Two-sided p-value of the paired test against the best row (by micro Recall@10); `None`
    /// for the best row itself.
    pub p_vs_best: Option<f64>,
    /// Seconds to rank every query.
    pub rank_s: f64,
}

/// Everything an evaluation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub dataset: String,
    pub split: String,
    pub part: Part,
    /// Queries evaluated, and those left out because nothing is relevant to them.
    pub queries: usize,
    pub skipped: usize,
    pub best: String,
    /// Segment name -> number of queries in it (for cold-start products: relevant pairs).
    pub segment_sizes: BTreeMap<String, usize>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// Segment membership of each evaluated query.
struct Segments {
    /// Per query, the segment names it belongs to.
    of: Vec<Vec<&'static str>>,
    sizes: BTreeMap<String, usize>,
}

/// Seen queries split by training frequency: the most frequent queries that hold the first third
/// of seen training events are head, the next third torso, the rest tail.
fn segments(ds: &Dataset, split: &Split, queries: &[&EvalQuery]) -> Segments {
    let source = QuerySource::of(ds);
    let mut freq: HashMap<String, usize> = HashMap::new();
    let mut trained_users = HashSet::new();
    for &i in &split.train {
        let e = &ds.interactions[i as usize];
        trained_users.insert(e.user);
        if let Some(t) = source.query_text(ds, e) {
            *freq.entry(t).or_default() += 1;
        }
    }
    let mut by_freq: Vec<(&String, usize)> = freq.iter().map(|(q, &n)| (q, n)).collect();
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: usize = by_freq.iter().map(|x| x.1).sum();
    let mut band: HashMap<&str, &'static str> = HashMap::new();
    let mut acc = 0;
    for (q, n) in by_freq {
        let name = if acc * 3 < total {
            "head queries"
        } else if acc * 3 < total * 2 {
            "torso queries"
        } else {
            "tail queries"
        };
        band.insert(q.as_str(), name);
        acc += n;
    }
    let mut of = Vec::with_capacity(queries.len());
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for q in queries {
        let text = ds.queries.text(q.query);
        let mut s = vec![band.get(text).copied().unwrap_or("unseen queries")];
        if band.contains_key(text) {
            s.push("seen queries");
        }
        match q.user {
            Some(u) if trained_users.contains(&u) => s.push("users with history"),
            Some(_) => s.push("cold-start users"),
            None => {}
        }
        for name in &s {
            *sizes.entry((*name).to_owned()).or_default() += 1;
        }
        of.push(s);
    }
    let cold_pairs = queries
        .iter()
        .flat_map(|q| q.relevant.iter())
        .filter(|r| r.1 > 0 && split.is_cold_start(r.0))
        .count();
    sizes.insert("cold-start products".into(), cold_pairs);
    Segments { of, sizes }
}

/// Evaluates every ranker on `cfg.part` of `split`.
pub fn evaluate(
    ds: &Dataset,
    split: &Split,
    rankers: &[&dyn Ranker],
    cfg: &EvalConfig,
) -> Result<Report> {
    let all = match cfg.part {
        Part::Validation => &split.validation,
        Part::Test => &split.test,
    };
    let queries: Vec<&EvalQuery> = all
        .iter()
        .filter(|q| q.relevant.iter().any(|r| r.1 > 0))
        .collect();
    if queries.is_empty() {
        return Err(EvalError::Empty(format!(
            "split `{}` of `{}` has no {:?} query with a relevant product",
            split.name, ds.name, cfg.part
        )));
    }
    let depth = cfg.ks.iter().copied().max().unwrap_or(10).max(10);
    let cases: Vec<Case> = queries
        .iter()
        .map(|q| Case {
            text: ds.queries.text(q.query),
            user: q.user,
            before: q.before,
        })
        .collect();
    let seg = segments(ds, split, &queries);
    // Distinct query groups for macro means.
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    let groups: Vec<usize> = cases
        .iter()
        .map(|c| {
            let n = group_of.len();
            *group_of.entry(c.text).or_insert(n)
        })
        .collect();
    let n_groups = group_of.len();

    let mut rows = Vec::with_capacity(rankers.len());
    let mut recall10: Vec<Vec<f64>> = Vec::with_capacity(rankers.len());
    for ranker in rankers {
        let start = std::time::Instant::now();
        let rankings = ranker.rank(&cases, depth)?;
        let rank_s = start.elapsed().as_secs_f64();
        if rankings.len() != cases.len() {
            return Err(EvalError::Ranker(format!(
                "{} returned {} rankings for {} queries",
                ranker.name(),
                rankings.len(),
                cases.len()
            )));
        }
        // Per-query values of every metric (all defined: every query has a relevant product).
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (q, ranking) in queries.iter().zip(&rankings) {
            let rel = &q.relevant;
            for &k in &cfg.ks {
                per.entry(format!("recall@{k}"))
                    .or_default()
                    .push(recall_at(ranking, rel, k).unwrap_or(0.0));
            }
            per.entry("ndcg@10".into())
                .or_default()
                .push(ndcg_at(ranking, rel, 10).unwrap_or(0.0));
            per.entry("mrr".into())
                .or_default()
                .push(reciprocal_rank(ranking, rel).unwrap_or(0.0));
        }
        // Seeded by the row's name, not its position: a system gets the same interval whatever
        // else is evaluated beside it.
        let seed = cfg.seed ^ name_seed(&ranker.name());
        let micro = per
            .iter()
            .map(|(m, v)| (m.clone(), Estimate::of(v, cfg.resamples, seed)))
            .collect();
        let macro_ = per
            .iter()
            .map(|(m, v)| {
                let mut sum = vec![0.0; n_groups];
                let mut count = vec![0usize; n_groups];
                for (x, &g) in v.iter().zip(&groups) {
                    sum[g] += x;
                    count[g] += 1;
                }
                let means: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| s / c as f64).collect();
                (m.clone(), Estimate::of(&means, cfg.resamples, seed))
            })
            .collect();
        let r10 = recall_at_10(&per, &queries, &rankings);
        let mut segments: BTreeMap<String, Estimate> = BTreeMap::new();
        for name in seg.sizes.keys() {
            let values: Vec<f64> = if name == "cold-start products" {
                // Recall of each query over its cold-start relevant products only.
                queries
                    .iter()
                    .zip(&rankings)
                    .filter_map(|(q, ranking)| {
                        let cold: Vec<_> = q
                            .relevant
                            .iter()
                            .copied()
                            .filter(|r| r.1 > 0 && split.is_cold_start(r.0))
                            .collect();
                        recall_at(ranking, &cold, 10)
                    })
                    .collect()
            } else {
                r10.iter()
                    .zip(&seg.of)
                    .filter(|(_, s)| s.contains(&name.as_str()))
                    .map(|(x, _)| *x)
                    .collect()
            };
            if !values.is_empty() {
                segments.insert(name.clone(), Estimate::of(&values, cfg.resamples, seed));
            }
        }
        recall10.push(r10);
        rows.push(Row {
            system: ranker.name(),
            micro,
            macro_,
            segments,
            p_vs_best: None,
            rank_s,
        });
    }
    let best = (0..rows.len())
        .max_by(|&a, &b| {
            let m = |i: usize| {
                rows[i]
                    .micro
                    .get("recall@10")
                    .map_or(f64::NEG_INFINITY, |e| e.mean)
            };
            m(a).total_cmp(&m(b)).then(b.cmp(&a))
        })
        .unwrap_or(0);
    for (i, row) in rows.iter_mut().enumerate() {
        if i != best {
            row.p_vs_best = Some(paired_randomization(
                &recall10[best],
                &recall10[i],
                cfg.rounds,
                cfg.seed,
            ));
        }
    }
    let mut notes = ds.notes.clone();
    notes.push(format!("split `{}`: {}", split.name, split.description));
    Ok(Report {
        dataset: ds.name.clone(),
        split: split.name.clone(),
        part: cfg.part,
        queries: queries.len(),
        skipped: all.len() - queries.len(),
        best: rows.get(best).map(|r| r.system.clone()).unwrap_or_default(),
        segment_sizes: seg.sizes,
        rows,
        notes,
    })
}

/// A stable 64-bit seed from a name (FNV-1a).
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Per-query Recall@10 (computed when 10 is not among the configured cut-offs).
fn recall_at_10(
    per: &BTreeMap<String, Vec<f64>>,
    queries: &[&EvalQuery],
    rankings: &[Vec<aisle_core::ProductId>],
) -> Vec<f64> {
    match per.get("recall@10") {
        Some(v) => v.clone(),
        None => queries
            .iter()
            .zip(rankings)
            .map(|(q, r)| recall_at(r, &q.relevant, 10).unwrap_or(0.0))
            .collect(),
    }
}

impl Report {
    /// The report as aligned text tables.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} / split `{}` / {:?}: {} queries ({} without a relevant product left out)",
            self.dataset, self.split, self.part, self.queries, self.skipped
        );
        let metrics = [
            "recall@1",
            "recall@5",
            "recall@10",
            "recall@20",
            "recall@50",
            "recall@100",
            "ndcg@10",
            "mrr",
        ];
        let present: Vec<&str> = metrics
            .iter()
            .copied()
            .filter(|m| self.rows.iter().any(|r| r.micro.contains_key(*m)))
            .collect();
        let name_w = self
            .rows
            .iter()
            .map(|r| r.system.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = write!(s, "\n{:<name_w$}  {:>21}", "system", "R@10 [95% CI]");
        for m in &present {
            if *m != "recall@10" {
                let _ = write!(s, " {:>9}", short(m));
            }
        }
        let _ = writeln!(
            s,
            " {:>12} {:>9} {:>8}",
            "macro R@10", "p vs best", "rank s"
        );
        for r in &self.rows {
            let e = r.micro.get("recall@10");
            let _ = write!(
                s,
                "{:<name_w$}  {:>21}",
                r.system,
                e.map_or("-".into(), |e| format!(
                    "{:.4} [{:.4}, {:.4}]",
                    e.mean, e.low, e.high
                ))
            );
            for m in &present {
                if *m != "recall@10" {
                    let _ = write!(
                        s,
                        " {:>9}",
                        r.micro
                            .get(*m)
                            .map_or("-".into(), |e| format!("{:.4}", e.mean))
                    );
                }
            }
            let _ = writeln!(
                s,
                " {:>12} {:>9} {:>8.2}",
                r.macro_
                    .get("recall@10")
                    .map_or("-".into(), |e| format!("{:.4}", e.mean)),
                r.p_vs_best.map_or("best".into(), |p| format!("{p:.4}")),
                r.rank_s
            );
        }
        let names: Vec<&String> = self.segment_sizes.keys().collect();
        if !names.is_empty() {
            let _ = write!(s, "\nRecall@10 by segment\n{:<name_w$}", "system");
            for n in &names {
                let _ = write!(s, " {:>22}", format!("{n} ({})", self.segment_sizes[*n]));
            }
            let _ = writeln!(s);
            for r in &self.rows {
                let _ = write!(s, "{:<name_w$}", r.system);
                for n in &names {
                    let _ = write!(
                        s,
                        " {:>22}",
                        r.segments.get(*n).map_or("-".into(), |e| format!(
                            "{:.4} ±{:.4}",
                            e.mean,
                            (e.high - e.low) / 2.0
                        ))
                    );
                }
                let _ = writeln!(s);
            }
        }
        let _ = writeln!(
            s,
            "\nR@K: share of a query's relevant products in the top K, mean over queries (micro); macro: mean over distinct queries; \
             CI: 95% bootstrap; p vs best: paired randomization test on per-query R@10 against the best row; \
             cold-start products: recall over relevant products with no training interaction (count = relevant pairs)"
        );
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

fn short(metric: &str) -> String {
    metric
        .replace("recall@", "R@")
        .replace("ndcg@", "NDCG@")
        .replace("mrr", "MRR")
}
