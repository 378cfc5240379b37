//! Evaluating rankers on a split: every metric per query, micro (per evaluated query event) and
//! macro (per distinct query) means with bootstrap intervals, Recall@10 by segment, replayed
//! session outcomes, and a paired randomization test of the best row against each other row.
//!
//! A row may stand for several rankers ([`Group`]): the same system trained with several seeds.
//! Its per-query values are then the mean over the seeds, so that its intervals and tests are
//! over queries of the seed-averaged system, and [`Row::seeds`] keeps each seed's own figure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use aisle_core::stats::fmt_n;
use aisle_core::{Dataset, EvalQuery, Kind, ProductId, Split};

use crate::error::{EvalError, Result};
use crate::metrics::{ndcg_at, paired_randomization, recall_at, reciprocal_rank, Estimate};
use crate::rankers::{Case, Ranker};

/// Which queries of the split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
    /// Also test every row against this one ([`Row::p_vs_reference`]).
    pub reference: Option<String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            part: Part::Test,
            ks: vec![1, 5, 10, 20, 50, 100],
            resamples: 1000,
            rounds: 10_000,
            seed: 42,
            reference: None,
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
    /// Replayed session outcomes at the top 10 (see [`REPLAY_NOTE`]), each a mean over the
    /// queries where it is defined.
    pub replay: BTreeMap<String, Estimate>,
    /// Two-sided p-value of the paired test against the best row (by micro Recall@10); `None`
    /// for the best row itself.
    pub p_vs_best: Option<f64>,
    /// The same test against [`EvalConfig::reference`] (`None` for that row, or without one).
    pub p_vs_reference: Option<f64>,
    /// The paired test on Recall@10 over cold-start products (the queries that have any)
    /// against the row best on that segment; `None` for that row, or where no query has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_cold_vs_best: Option<f64>,
    /// Micro Recall@10 of each member of the row's group (one per seed), in group order.
    pub seeds: Vec<f64>,
    /// Seconds to rank every query (all members of the group; building a lazy member excluded).
    pub rank_s: f64,
}

/// Rankers reported as one row: one system trained with several seeds.
pub struct Group<'a> {
    pub name: String,
    pub members: Vec<Member<'a>>,
}

/// A member of a [`Group`]: a ranker that exists, or one built when its turn comes and dropped
/// after it, so that evaluating many trained models holds one of them in memory at a time.
pub enum Member<'a> {
    Ready(&'a dyn Ranker),
    Lazy(Box<dyn Fn() -> Result<Box<dyn Ranker>> + 'a>),
}

impl<'a> Member<'a> {
    /// Runs `f` with the ranker, building it first when it is lazy.
    pub fn with<T>(&self, f: impl FnOnce(&dyn Ranker) -> Result<T>) -> Result<T> {
        match self {
            Member::Ready(r) => f(*r),
            Member::Lazy(build) => {
                let r = build()?;
                f(r.as_ref())
            }
        }
    }
}

impl<'a> From<&'a dyn Ranker> for Member<'a> {
    fn from(r: &'a dyn Ranker) -> Self {
        Member::Ready(r)
    }
}

/// Where an evaluation is, for a progress display ([`evaluate_groups_with_progress`]). Rows and
/// members count from 0.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// A lazy member's ranker is being built (for a dense model: encoding the catalog).
    Building {
        row: usize,
        rows: usize,
        name: &'a str,
        member: usize,
        members: usize,
    },
    /// A member starts ranking the row's `queries` queries.
    Ranking {
        row: usize,
        rows: usize,
        name: &'a str,
        member: usize,
        members: usize,
        queries: usize,
    },
    /// `done` of the member's `queries` are ranked.
    Ranked { done: usize, queries: usize },
    /// A row is done: seconds spent building its lazy members, and ranking.
    RowDone {
        row: usize,
        rows: usize,
        name: &'a str,
        build_s: f64,
        rank_s: f64,
    },
}

impl Progress<'_> {
    /// `row 2/5 NAME` of a member being built or starting to rank, with ` (member 1/3)` when
    /// the row has several; `None` for the other events.
    pub fn label(&self) -> Option<String> {
        let (row, rows, name, member, members) = match *self {
            Progress::Building {
                row,
                rows,
                name,
                member,
                members,
            }
            | Progress::Ranking {
                row,
                rows,
                name,
                member,
                members,
                ..
            } => (row, rows, name, member, members),
            _ => return None,
        };
        let seed = if members > 1 {
            format!(" (member {}/{members})", member + 1)
        } else {
            String::new()
        };
        Some(format!("row {}/{rows} {name}{seed}", row + 1))
    }
}

/// An evaluation's progress as lines for a log, where no bar is drawn: while a member ranks, a
/// line every `every` with the time left, and a line per row done, so that a long evaluation
/// is never silent.
pub struct ProgressLog {
    every: std::time::Duration,
    /// The member ranking: its label, when it started, when a line about it was last given.
    ranking: Option<(String, Instant, Instant)>,
}

impl ProgressLog {
    pub fn new(every: std::time::Duration) -> ProgressLog {
        ProgressLog {
            every,
            ranking: None,
        }
    }

    /// The line `p` calls for now, if any.
    pub fn line(&mut self, p: &Progress) -> Option<String> {
        match *p {
            Progress::Ranking { .. } => {
                let now = Instant::now();
                self.ranking = p.label().map(|label| (label, now, now));
                None
            }
            Progress::Ranked { done, queries } => {
                let (row, start, last) = self.ranking.as_mut()?;
                if last.elapsed() < self.every || done == 0 || done >= queries {
                    return None;
                }
                *last = Instant::now();
                let s = start.elapsed().as_secs_f64();
                Some(format!(
                    "{row}: {}/{} queries in {s:.0} s, about {:.0} s left",
                    fmt_n(done),
                    fmt_n(queries),
                    s * (queries - done) as f64 / done as f64
                ))
            }
            Progress::RowDone {
                row,
                rows,
                name,
                build_s,
                rank_s,
            } => Some(format!(
                "row {}/{rows} {name}: built in {build_s:.1} s, ranked in {rank_s:.1} s",
                row + 1
            )),
            Progress::Building { .. } => None,
        }
    }
}

/// Queries a ranker is given at once when progress is reported. It bounds what a ranker holds
/// for its answers (a dense model's hits, with scores and explanations, are some 70 bytes each:
/// 433 MiB for 63,000 queries of 100 in one call). A multiple of the 4,096 rows
/// [`aisle_model::Model::encode_rows`] encodes together and of the 64 queries an exact index
/// scores with one matrix product, so that a dense model computes each query in the same
/// company as in one call; a last chunk of one query joins the one before it (a single request
/// skips the batch search). Every figure is then the same bit for bit.
pub const PROGRESS_CHUNK: usize = 4096;

/// What the replayed outcomes mean.
pub const REPLAY_NOTE: &str = "replayed, not live: on held-out logged events, `bought in top 10` \
    is the share of queries with a purchase whose bought product is among the 10 shown (a proxy \
    for conversion), `carted in top 10` the same for add-to-cart or purchase, `interacted in top \
    10` for any logged interaction, and `order value found` the share of the bought products' \
    value (price) that the top 10 contains";

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

/// Seen and unseen queries as [`Split::trained_queries`] defines them (the count `aisle dataset
/// stats` prints); seen queries split by training frequency: the most frequent queries that hold
/// the first third of seen training events are head, the next third torso, the rest tail.
fn segments(ds: &Dataset, split: &Split, queries: &[&EvalQuery]) -> Segments {
    let trained = split.trained_queries(ds);
    let trained_users: HashSet<_> = split
        .train
        .iter()
        .map(|&i| ds.interactions[i as usize].user)
        .collect();
    let mut by_freq: Vec<(&String, usize)> = trained.counts.iter().map(|(q, &n)| (q, n)).collect();
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
        let mut s = if trained.is_unseen(ds, q) {
            vec!["unseen queries"]
        } else {
            vec![band[ds.queries.text(q.query)], "seen queries"]
        };
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

/// Evaluates every ranker on `cfg.part` of `split`, one row each.
pub fn evaluate(
    ds: &Dataset,
    split: &Split,
    rankers: &[&dyn Ranker],
    cfg: &EvalConfig,
) -> Result<Report> {
    let groups: Vec<Group> = rankers
        .iter()
        .map(|&r| Group {
            name: r.name(),
            members: vec![Member::Ready(r)],
        })
        .collect();
    evaluate_groups(ds, split, &groups, cfg)
}

/// What each query's logged events say happened: the products bought, carted (or bought) and
/// interacted with, and the value of the purchases.
struct Outcome {
    bought: Vec<(ProductId, Option<f32>)>,
    carted: Vec<ProductId>,
    interacted: Vec<ProductId>,
}

fn outcomes(ds: &Dataset, queries: &[&EvalQuery]) -> Vec<Outcome> {
    queries
        .iter()
        .map(|q| {
            let mut o = Outcome {
                bought: Vec::new(),
                carted: Vec::new(),
                interacted: Vec::new(),
            };
            for &i in &q.events {
                let Some(e) = ds.interactions.get(i as usize) else {
                    continue;
                };
                o.interacted.push(e.product);
                if matches!(e.kind, Kind::AddToCart | Kind::Purchase) {
                    o.carted.push(e.product);
                }
                if e.kind == Kind::Purchase {
                    let price = e.price.or_else(|| ds.catalog.get(e.product).price);
                    o.bought.push((e.product, price));
                }
            }
            o.bought.sort_by_key(|b| b.0);
            o.bought.dedup_by_key(|b| b.0);
            for v in [&mut o.carted, &mut o.interacted] {
                v.sort_unstable();
                v.dedup();
            }
            o
        })
        .collect()
}

/// Replayed outcomes of one ranking at the top 10 (`None` where a query has no such event).
fn replay_values(o: &Outcome, ranking: &[ProductId]) -> [Option<f64>; 4] {
    let top = &ranking[..ranking.len().min(10)];
    let hit = |set: &[ProductId]| {
        (!set.is_empty()).then(|| f64::from(u8::from(set.iter().any(|p| top.contains(p)))))
    };
    let bought: Vec<ProductId> = o.bought.iter().map(|b| b.0).collect();
    let value = {
        let priced: Vec<(ProductId, f64)> = o
            .bought
            .iter()
            .filter_map(|&(p, v)| v.map(|v| (p, f64::from(v))))
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect();
        let total: f64 = priced.iter().map(|x| x.1).sum();
        (total > 0.0).then(|| {
            priced
                .iter()
                .filter(|(p, _)| top.contains(p))
                .map(|x| x.1)
                .sum::<f64>()
                / total
        })
    };
    [hit(&bought), hit(&o.carted), hit(&o.interacted), value]
}

/// Names of the replayed outcomes, in report order.
pub const REPLAY_NAMES: [&str; 4] = [
    "bought in top 10",
    "carted in top 10",
    "interacted in top 10",
    "order value found",
];

/// The ranking case of each evaluation query: its text, customer and history cut-off.
pub fn cases_of<'a>(ds: &'a Dataset, queries: &[&EvalQuery]) -> Vec<Case<'a>> {
    queries
        .iter()
        .map(|q| Case {
            text: ds.queries.text(q.query),
            user: q.user,
            before: q.before,
        })
        .collect()
}

/// Evaluates every group of rankers on `cfg.part` of `split`, one row per group.
pub fn evaluate_groups(
    ds: &Dataset,
    split: &Split,
    groups: &[Group],
    cfg: &EvalConfig,
) -> Result<Report> {
    evaluate_groups_inner(ds, split, groups, cfg, None)
}

/// Like [`evaluate_groups`], telling `progress` where it is. The queries are then ranked in
/// chunks of [`PROGRESS_CHUNK`], so a ranker must rank each query independently of the others
/// of its call for the figures to be those of [`evaluate_groups`]. Every ranker of this crate
/// does, a dense one because every request of an evaluation asks for the same depth: its
/// searcher then takes the batch search for a chunk exactly when it does for the whole call.
pub fn evaluate_groups_with_progress(
    ds: &Dataset,
    split: &Split,
    groups: &[Group],
    cfg: &EvalConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report> {
    evaluate_groups_inner(ds, split, groups, cfg, Some(progress))
}

/// Ranks `cases` with `ranker`, in chunks of [`PROGRESS_CHUNK`] when `progress` is given.
fn rank_cases(
    ranker: &dyn Ranker,
    cases: &[Case],
    depth: usize,
    progress: &mut Option<&mut dyn FnMut(Progress<'_>)>,
) -> Result<Vec<Vec<ProductId>>> {
    let check = |r: &Vec<Vec<ProductId>>, n: usize| {
        if r.len() == n {
            Ok(())
        } else {
            Err(EvalError::Ranker(format!(
                "{} returned {} rankings for {} queries",
                ranker.name(),
                r.len(),
                n
            )))
        }
    };
    let Some(progress) = progress else {
        let r = ranker.rank(cases, depth)?;
        check(&r, cases.len())?;
        return Ok(r);
    };
    let mut out = Vec::with_capacity(cases.len());
    while out.len() < cases.len() {
        let start = out.len();
        let mut end = (start + PROGRESS_CHUNK).min(cases.len());
        if cases.len() - end == 1 {
            end = cases.len();
        }
        let r = ranker.rank(&cases[start..end], depth)?;
        check(&r, end - start)?;
        out.extend(r);
        progress(Progress::Ranked {
            done: out.len(),
            queries: cases.len(),
        });
    }
    Ok(out)
}

/// Ranks the queries of `cfg.part` with every group, one row each, then tests every row against
/// the best one (and the reference).
fn evaluate_groups_inner(
    ds: &Dataset,
    split: &Split,
    groups: &[Group],
    cfg: &EvalConfig,
    mut progress: Option<&mut dyn FnMut(Progress<'_>)>,
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
    let qs = Queries::new(ds, split, queries, cfg);
    let mut rows = Vec::with_capacity(groups.len());
    let mut recall10: Vec<Vec<f64>> = Vec::with_capacity(groups.len());
    let mut cold: Vec<Vec<Option<f64>>> = Vec::with_capacity(groups.len());
    for (row, group) in groups.iter().enumerate() {
        if group.members.is_empty() {
            return Err(EvalError::Ranker(format!(
                "row `{}` has no ranker",
                group.name
            )));
        }
        let values = qs.measure((row, groups.len()), group, cfg, &mut progress)?;
        if let Some(p) = progress.as_mut() {
            p(Progress::RowDone {
                row,
                rows: groups.len(),
                name: &group.name,
                build_s: values.build_s,
                rank_s: values.rank_s,
            });
        }
        rows.push(values.row(&group.name, &qs, cfg));
        recall10.push(values.r10);
        cold.push(values.cold);
    }
    let best = best_row(&rows);
    paired_tests(&mut rows, &recall10, best, cfg);
    cold_start_tests(&mut rows, &cold, cfg);
    let mut notes = ds.notes.clone();
    notes.push(format!("split `{}`: {}", split.name, split.description));
    Ok(Report {
        dataset: ds.name.clone(),
        split: split.name.clone(),
        part: cfg.part,
        queries: qs.queries.len(),
        skipped: all.len() - qs.queries.len(),
        best: rows.get(best).map(|r| r.system.clone()).unwrap_or_default(),
        segment_sizes: qs.segments.sizes,
        rows,
        notes,
    })
}

/// The queries an evaluation ranks, and what is known of each before ranking.
struct Queries<'a> {
    split: &'a Split,
    /// The evaluated queries (each with a relevant product), and their ranking cases.
    queries: Vec<&'a EvalQuery>,
    cases: Vec<Case<'a>>,
    /// Ranking depth: the largest cut-off, at least 10.
    depth: usize,
    segments: Segments,
    /// Each query's distinct text (an index among them), for macro means.
    text_of: Vec<usize>,
    texts: usize,
    outcomes: Vec<Outcome>,
}

impl<'a> Queries<'a> {
    fn new(
        ds: &'a Dataset,
        split: &'a Split,
        queries: Vec<&'a EvalQuery>,
        cfg: &EvalConfig,
    ) -> Queries<'a> {
        let depth = cfg.ks.iter().copied().max().unwrap_or(10).max(10);
        let cases = cases_of(ds, &queries);
        let segments = segments(ds, split, &queries);
        // Distinct query groups for macro means.
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        let text_of: Vec<usize> = cases
            .iter()
            .map(|c| {
                let n = group_of.len();
                *group_of.entry(c.text).or_insert(n)
            })
            .collect();
        let texts = group_of.len();
        let outcomes = outcomes(ds, &queries);
        Queries {
            split,
            queries,
            cases,
            depth,
            segments,
            text_of,
            texts,
            outcomes,
        }
    }

    /// Ranks every query with each member of `group` in turn (row `at.0` of `at.1`), a lazy
    /// member built first and dropped at the end of its turn, so that one of them is in memory
    /// at a time; returns the row's per-query values.
    fn measure(
        &self,
        (row, rows): (usize, usize),
        group: &Group,
        cfg: &EvalConfig,
        progress: &mut Option<&mut dyn FnMut(Progress<'_>)>,
    ) -> Result<RowValues> {
        let members = group.members.len();
        let mut values = RowValues::new(self.queries.len(), members);
        for (member, m) in group.members.iter().enumerate() {
            let built;
            let ranker: &dyn Ranker = match m {
                Member::Ready(r) => *r,
                Member::Lazy(build) => {
                    if let Some(p) = progress.as_mut() {
                        p(Progress::Building {
                            row,
                            rows,
                            name: &group.name,
                            member,
                            members,
                        });
                    }
                    let t = std::time::Instant::now();
                    built = build()?;
                    values.build_s += t.elapsed().as_secs_f64();
                    built.as_ref()
                }
            };
            if let Some(p) = progress.as_mut() {
                p(Progress::Ranking {
                    row,
                    rows,
                    name: &group.name,
                    member,
                    members,
                    queries: self.cases.len(),
                });
            }
            let t = std::time::Instant::now();
            let rankings = rank_cases(ranker, &self.cases, self.depth, progress)?;
            values.rank_s += t.elapsed().as_secs_f64();
            values.add(self, &rankings, cfg);
        }
        Ok(values)
    }
}

/// One row's per-query values (all defined: every query has a relevant product), summed over
/// the row's members, each divided by their number.
struct RowValues {
    /// Metric name -> value of each query.
    per: BTreeMap<String, Vec<f64>>,
    /// Recall@10 over each query's cold-start relevant products (where it has any).
    cold: Vec<Option<f64>>,
    /// The replayed outcomes of each query ([`REPLAY_NAMES`] order; where defined).
    replay: Vec<[Option<f64>; 4]>,
    /// Recall@10 of each query: what the paired tests compare.
    r10: Vec<f64>,
    /// Mean Recall@10 of each member.
    seeds: Vec<f64>,
    n_members: f64,
    rank_s: f64,
    build_s: f64,
}

impl RowValues {
    fn new(queries: usize, members: usize) -> RowValues {
        RowValues {
            per: BTreeMap::new(),
            cold: vec![None; queries],
            replay: vec![[None; 4]; queries],
            r10: vec![0.0; queries],
            seeds: Vec::with_capacity(members),
            n_members: members as f64,
            rank_s: 0.0,
            build_s: 0.0,
        }
    }

    /// Adds one member's `rankings` of `qs`'s queries.
    fn add(&mut self, qs: &Queries, rankings: &[Vec<ProductId>], cfg: &EvalConfig) {
        let n_members = self.n_members;
        let n = qs.queries.len();
        let per = &mut self.per;
        let mut add = |name: String, i: usize, x: f64| {
            let v = per.entry(name).or_insert_with(|| vec![0.0; n]);
            v[i] += x / n_members;
        };
        let mut r10_sum = 0.0;
        for (i, (q, ranking)) in qs.queries.iter().zip(rankings).enumerate() {
            let rel = &q.relevant;
            for &k in &cfg.ks {
                add(
                    format!("recall@{k}"),
                    i,
                    recall_at(ranking, rel, k).unwrap_or(0.0),
                );
            }
            let x = recall_at(ranking, rel, 10).unwrap_or(0.0);
            r10_sum += x;
            self.r10[i] += x / n_members;
            add(
                "ndcg@10".into(),
                i,
                ndcg_at(ranking, rel, 10).unwrap_or(0.0),
            );
            add(
                "mrr".into(),
                i,
                reciprocal_rank(ranking, rel).unwrap_or(0.0),
            );
            // Recall of each query over its cold-start relevant products only.
            let cold: Vec<_> = rel
                .iter()
                .copied()
                .filter(|r| r.1 > 0 && qs.split.is_cold_start(r.0))
                .collect();
            if let Some(x) = recall_at(ranking, &cold, 10) {
                *self.cold[i].get_or_insert(0.0) += x / n_members;
            }
            for (slot, x) in self.replay[i]
                .iter_mut()
                .zip(replay_values(&qs.outcomes[i], ranking))
            {
                if let Some(x) = x {
                    *slot.get_or_insert(0.0) += x / n_members;
                }
            }
        }
        self.seeds.push(r10_sum / n as f64);
    }

    /// The row `name`: bootstrap estimates of every micro and macro mean, segment and replayed
    /// outcome (the paired tests are left to [`paired_tests`]).
    fn row(&self, name: &str, qs: &Queries, cfg: &EvalConfig) -> Row {
        // Seeded by the row's name, not its position: a system gets the same interval whatever
        // else is evaluated beside it.
        let seed = cfg.seed ^ name_seed(name);
        let estimate = |v: &[f64]| Estimate::of(v, cfg.resamples, seed);
        let micro = self
            .per
            .iter()
            .map(|(m, v)| (m.clone(), estimate(v)))
            .collect();
        let macro_ = self
            .per
            .iter()
            .map(|(m, v)| {
                let mut sum = vec![0.0; qs.texts];
                let mut count = vec![0usize; qs.texts];
                for (x, &g) in v.iter().zip(&qs.text_of) {
                    sum[g] += x;
                    count[g] += 1;
                }
                let means: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| s / c as f64).collect();
                (m.clone(), estimate(&means))
            })
            .collect();
        let mut segments: BTreeMap<String, Estimate> = BTreeMap::new();
        for name in qs.segments.sizes.keys() {
            let values: Vec<f64> = if name == "cold-start products" {
                self.cold.iter().flatten().copied().collect()
            } else {
                self.r10
                    .iter()
                    .zip(&qs.segments.of)
                    .filter(|(_, s)| s.contains(&name.as_str()))
                    .map(|(x, _)| *x)
                    .collect()
            };
            if !values.is_empty() {
                segments.insert(name.clone(), estimate(&values));
            }
        }
        let replay = REPLAY_NAMES
            .iter()
            .enumerate()
            .filter_map(|(j, name)| {
                let v: Vec<f64> = self.replay.iter().filter_map(|r| r[j]).collect();
                (!v.is_empty()).then(|| ((*name).to_owned(), estimate(&v)))
            })
            .collect();
        Row {
            system: name.to_owned(),
            micro,
            macro_,
            segments,
            replay,
            p_vs_best: None,
            p_vs_reference: None,
            p_cold_vs_best: None,
            seeds: self.seeds.clone(),
            rank_s: self.rank_s,
        }
    }
}

/// The row with the best micro Recall@10 (ties: the first).
fn best_row(rows: &[Row]) -> usize {
    (0..rows.len())
        .max_by(|&a, &b| {
            let m = |i: usize| {
                rows[i]
                    .micro
                    .get("recall@10")
                    .map_or(f64::NEG_INFINITY, |e| e.mean)
            };
            m(a).total_cmp(&m(b)).then(b.cmp(&a))
        })
        .unwrap_or(0)
}

/// The paired randomization test on per-query Recall@10 (`recall10`, one per row) of every row
/// against the best row and against [`EvalConfig::reference`].
fn paired_tests(rows: &mut [Row], recall10: &[Vec<f64>], best: usize, cfg: &EvalConfig) {
    let reference = cfg
        .reference
        .as_ref()
        .and_then(|name| rows.iter().position(|r| &r.system == name));
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(j) = reference.filter(|&j| j != i) {
            row.p_vs_reference = Some(paired_randomization(
                &recall10[j],
                &recall10[i],
                cfg.rounds,
                cfg.seed,
            ));
        }
        if i != best {
            row.p_vs_best = Some(paired_randomization(
                &recall10[best],
                &recall10[i],
                cfg.rounds,
                cfg.seed,
            ));
        }
    }
}

/// The paired randomization test on Recall@10 over cold-start products, per query that has
/// any (`cold`, one per row; the same queries for every row), of every row against the row
/// with the best mean there.
fn cold_start_tests(rows: &mut [Row], cold: &[Vec<Option<f64>>], cfg: &EvalConfig) {
    let values: Vec<Vec<f64>> = cold
        .iter()
        .map(|v| v.iter().flatten().copied().collect())
        .collect();
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let Some(best) = (0..values.len())
        .filter(|&i| !values[i].is_empty())
        .max_by(|&a, &b| {
            mean(&values[a])
                .total_cmp(&mean(&values[b]))
                .then(b.cmp(&a))
        })
    else {
        return;
    };
    for (i, row) in rows.iter_mut().enumerate() {
        if i != best && values[i].len() == values[best].len() {
            row.p_cold_vs_best = Some(paired_randomization(
                &values[best],
                &values[i],
                cfg.rounds,
                cfg.seed,
            ));
        }
    }
}

/// A stable 64-bit seed from a name (FNV-1a).
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
        let replayed: Vec<&str> = REPLAY_NAMES
            .iter()
            .copied()
            .filter(|n| self.rows.iter().any(|r| r.replay.contains_key(*n)))
            .collect();
        if !replayed.is_empty() {
            let _ = write!(
                s,
                "\nReplayed outcomes at the top 10 (not live)\n{:<name_w$}",
                "system"
            );
            for n in &replayed {
                let _ = write!(s, " {n:>22}");
            }
            let _ = writeln!(s);
            for r in &self.rows {
                let _ = write!(s, "{:<name_w$}", r.system);
                for n in &replayed {
                    let _ = write!(
                        s,
                        " {:>22}",
                        r.replay.get(*n).map_or("-".into(), |e| format!(
                            "{:.4} ±{:.4} ({})",
                            e.mean,
                            (e.high - e.low) / 2.0,
                            e.n
                        ))
                    );
                }
                let _ = writeln!(s);
            }
        }
        if self.rows.iter().any(|r| r.seeds.len() > 1) {
            let _ = writeln!(s, "\nRecall@10 of each seed (rows with several)");
            for r in self.rows.iter().filter(|r| r.seeds.len() > 1) {
                let seeds: Vec<String> = r.seeds.iter().map(|x| format!("{x:.4}")).collect();
                let _ = writeln!(s, "{:<name_w$}  {}", r.system, seeds.join("  "));
            }
        }
        let _ = writeln!(
            s,
            "\nR@K: share of a query's relevant products in the top K, mean over queries (micro); macro: mean over distinct queries; \
             CI: 95% bootstrap; p vs best: paired randomization test on per-query R@10 against the best row; \
             cold-start products: recall over relevant products with no training interaction (count = relevant pairs)"
        );
        if !replayed.is_empty() {
            let _ = writeln!(s, "{REPLAY_NOTE}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_labelled_by_row_and_member_and_a_log_hears_of_each_row() {
        let ranking = Progress::Ranking {
            row: 1,
            rows: 3,
            name: "dense",
            member: 0,
            members: 2,
            queries: 10,
        };
        assert_eq!(
            ranking.label().as_deref(),
            Some("row 2/3 dense (member 1/2)")
        );
        let mut log = ProgressLog::new(std::time::Duration::ZERO);
        assert_eq!(log.line(&ranking), None);
        let ranked = log.line(&Progress::Ranked {
            done: 5,
            queries: 10,
        });
        assert!(
            ranked.is_some_and(|l| l.starts_with("row 2/3 dense (member 1/2): 5/10 queries in ")),
        );
        let done = Progress::RowDone {
            row: 1,
            rows: 3,
            name: "dense",
            build_s: 0.25,
            rank_s: 1.0,
        };
        assert_eq!(done.label(), None);
        assert_eq!(
            log.line(&done).as_deref(),
            Some("row 2/3 dense: built in 0.2 s, ranked in 1.0 s")
        );
    }
}
