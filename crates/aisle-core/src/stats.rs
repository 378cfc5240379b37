//! Dataset statistics, as printed by `aisle dataset stats`.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::model::Kind;

/// Min / median / mean / max of a count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: u64,
    pub median: f64,
    pub mean: f64,
    pub max: u64,
}

impl Summary {
    /// Summarises `values` (empty gives all zeros).
    pub fn of(mut values: Vec<u64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_unstable();
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2] as f64
        } else {
            (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0
        };
        Summary {
            n,
            min: values[0],
            median,
            mean: values.iter().sum::<u64>() as f64 / n as f64,
            max: values[n - 1],
        }
    }
}

/// Per-split counts.
#[derive(Clone, Debug, Serialize)]
pub struct SplitStats {
    pub name: String,
    pub description: String,
    pub train_interactions: usize,
    pub validation_queries: usize,
    pub test_queries: usize,
    pub test_distinct_queries: usize,
    /// Test queries whose text the training part never trains on ([`crate::split::TrainedQueries`],
    /// the "unseen queries" segment of `aisle eval`); `None` when it trains no query at all.
    pub test_queries_unseen_in_train: Option<usize>,
    pub test_distinct_queries_unseen_in_train: Option<usize>,
    pub cold_start_products: usize,
    pub test_relevant_pairs: usize,
    pub test_relevant_cold_start: usize,
    pub test_relevant_bought_before: usize,
}

/// Everything `aisle dataset stats` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetStats {
    pub name: String,
    pub products: usize,
    pub taxonomy_nodes: usize,
    pub leaves: usize,
    pub max_depth: usize,
    pub users: usize,
    pub interactions: usize,
    /// `(kind, count)` for every kind.
    pub interactions_by_kind: Vec<(String, usize)>,
    pub interactions_with_query: usize,
    pub distinct_queries: usize,
    pub judgments: usize,
    /// `nodes_by_depth[d]` = taxonomy nodes at depth d (the root is depth 0).
    pub nodes_by_depth: Vec<usize>,
    /// `products_by_depth[d]` = products filed at depth d.
    pub products_by_depth: Vec<usize>,
    /// Over leaves that hold at least one product.
    pub products_per_leaf: Summary,
    pub empty_leaves: usize,
    /// Over users with at least one interaction.
    pub interactions_per_user: Summary,
    /// Over products reached by at least one query.
    pub distinct_queries_per_product: Summary,
    pub products_with_queries: usize,
    pub splits: Vec<SplitStats>,
    /// `(reason, count)` of what the import skipped or merged.
    pub import: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

impl DatasetStats {
    /// Computes the statistics of a dataset and of its splits.
    pub fn of(ds: &Dataset) -> DatasetStats {
        let t = &ds.taxonomy;
        let max_depth = t.max_depth();
        let mut nodes_by_depth = vec![0usize; max_depth + 1];
        for n in t.nodes() {
            nodes_by_depth[t.depth(n)] += 1;
        }
        let mut products_by_depth = vec![0usize; max_depth + 1];
        let mut per_node = vec![0u64; t.len()];
        for (_, p) in ds.catalog.iter() {
            products_by_depth[t.depth(p.category)] += 1;
            per_node[p.category.index()] += 1;
        }
        let leaves = t.leaves();
        let leaf_counts: Vec<u64> = leaves
            .iter()
            .map(|l| per_node[l.index()])
            .filter(|&c| c > 0)
            .collect();
        let empty_leaves = leaves.len() - leaf_counts.len();

        let mut by_kind = [0usize; 4];
        let mut per_user = vec![0u64; ds.users.len()];
        let mut with_query = 0;
        let mut product_queries: HashSet<(u32, u32)> = HashSet::new();
        for e in &ds.interactions {
            by_kind[e.kind as usize] += 1;
            per_user[e.user.index()] += 1;
            if let Some(q) = e.query {
                with_query += 1;
                product_queries.insert((e.product.0, q.0));
            }
        }
        let mut q_per_product = vec![0u64; ds.catalog.len()];
        for (p, _) in &product_queries {
            q_per_product[*p as usize] += 1;
        }
        let q_per_product: Vec<u64> = q_per_product.into_iter().filter(|&c| c > 0).collect();
        let splits = ds
            .splits
            .iter()
            .map(|s| {
                let sum = s.summary(ds);
                SplitStats {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    train_interactions: sum.train,
                    validation_queries: sum.validation,
                    test_queries: sum.test,
                    test_distinct_queries: sum.test_distinct_queries,
                    test_queries_unseen_in_train: sum.test_unseen_queries,
                    test_distinct_queries_unseen_in_train: sum.test_unseen_distinct_queries,
                    cold_start_products: sum.cold_start_products,
                    test_relevant_pairs: sum.test_relevant,
                    test_relevant_cold_start: sum.test_relevant_cold_start,
                    test_relevant_bought_before: sum.test_relevant_bought_before,
                }
            })
            .collect();
        DatasetStats {
            name: ds.name.clone(),
            products: ds.catalog.len(),
            taxonomy_nodes: t.len(),
            leaves: leaves.len(),
            max_depth,
            users: ds.users.len(),
            interactions: ds.interactions.len(),
            interactions_by_kind: Kind::ALL
                .iter()
                .map(|k| (k.as_str().to_owned(), by_kind[*k as usize]))
                .collect(),
            interactions_with_query: with_query,
            distinct_queries: ds.queries.len(),
            judgments: ds.judgments.len(),
            nodes_by_depth,
            products_by_depth,
            products_per_leaf: Summary::of(leaf_counts),
            empty_leaves,
            interactions_per_user: Summary::of(per_user.into_iter().filter(|&c| c > 0).collect()),
            products_with_queries: q_per_product.len(),
            distinct_queries_per_product: Summary::of(q_per_product),
            splits,
            import: ds
                .report
                .entries()
                .map(|(r, n, _)| (r.to_owned(), n))
                .collect(),
            notes: ds.notes.clone(),
        }
    }

    /// Aligned plain-text tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "dataset: {}", self.name);
        let mut counts = Table::new(&["count", "value"]);
        counts.row(&["products".into(), fmt_n(self.products)]);
        counts.row(&[
            "taxonomy nodes (root included)".into(),
            fmt_n(self.taxonomy_nodes),
        ]);
        counts.row(&["taxonomy leaves".into(), fmt_n(self.leaves)]);
        counts.row(&["taxonomy depth (max)".into(), fmt_n(self.max_depth)]);
        counts.row(&["users".into(), fmt_n(self.users)]);
        counts.row(&["interactions".into(), fmt_n(self.interactions)]);
        for (k, n) in &self.interactions_by_kind {
            counts.row(&[format!("  {k}"), fmt_n(*n)]);
        }
        counts.row(&[
            "interactions with a query".into(),
            fmt_n(self.interactions_with_query),
        ]);
        counts.row(&["distinct queries".into(), fmt_n(self.distinct_queries)]);
        counts.row(&["judgments".into(), fmt_n(self.judgments)]);
        out.push_str(&counts.render());

        let _ = writeln!(out, "\ntaxonomy by depth");
        let mut depth = Table::new(&["depth", "nodes", "products filed"]);
        for (d, n) in self.nodes_by_depth.iter().enumerate() {
            depth.row(&[d.to_string(), fmt_n(*n), fmt_n(self.products_by_depth[d])]);
        }
        out.push_str(&depth.render());

        let _ = writeln!(out, "\ndistributions");
        let mut dist = Table::new(&["distribution", "n", "min", "median", "mean", "max"]);
        for (label, s) in [
            ("products per non-empty leaf", &self.products_per_leaf),
            ("interactions per active user", &self.interactions_per_user),
            (
                "distinct queries per queried product",
                &self.distinct_queries_per_product,
            ),
        ] {
            dist.row(&[
                label.into(),
                fmt_n(s.n),
                s.min.to_string(),
                format!("{:.1}", s.median),
                format!("{:.2}", s.mean),
                s.max.to_string(),
            ]);
        }
        out.push_str(&dist.render());
        let _ = writeln!(out, "empty leaves: {}", fmt_n(self.empty_leaves));

        if !self.splits.is_empty() {
            let _ = writeln!(out, "\nsplits");
            let mut header = vec!["measure"];
            header.extend(self.splits.iter().map(|s| s.name.as_str()));
            let mut sp = Table::new(&header);
            let share = |a: usize, b: usize| format!("{} ({:.1}%)", fmt_n(a), pct(a, b));
            type Cell<'a> = dyn Fn(&SplitStats) -> String + 'a;
            let rows: Vec<(&str, Box<Cell>)> = vec![
                (
                    "train interactions",
                    Box::new(|s| fmt_n(s.train_interactions)),
                ),
                (
                    "validation queries",
                    Box::new(|s| fmt_n(s.validation_queries)),
                ),
                ("test queries", Box::new(|s| fmt_n(s.test_queries))),
                (
                    "distinct test queries",
                    Box::new(|s| fmt_n(s.test_distinct_queries)),
                ),
                (
                    "test queries unseen in train",
                    Box::new(move |s| match s.test_queries_unseen_in_train {
                        Some(u) => share(u, s.test_queries),
                        None => "n/a: no train queries".into(),
                    }),
                ),
                (
                    "distinct test queries unseen",
                    Box::new(|s| match s.test_distinct_queries_unseen_in_train {
                        Some(u) => fmt_n(u),
                        None => "n/a".into(),
                    }),
                ),
                (
                    "cold-start products",
                    Box::new(move |s| share(s.cold_start_products, self.products)),
                ),
                (
                    "test relevant pairs",
                    Box::new(|s| fmt_n(s.test_relevant_pairs)),
                ),
                (
                    "  on a cold-start product",
                    Box::new(move |s| share(s.test_relevant_cold_start, s.test_relevant_pairs)),
                ),
                (
                    "  bought by the user in train",
                    Box::new(move |s| share(s.test_relevant_bought_before, s.test_relevant_pairs)),
                ),
            ];
            for (label, cell) in &rows {
                let mut r = vec![(*label).to_owned()];
                r.extend(self.splits.iter().map(cell));
                sp.row(&r);
            }
            out.push_str(&sp.render());
            for s in &self.splits {
                let _ = writeln!(out, "  {}: {}", s.name, s.description);
            }
        }
        if !self.import.is_empty() {
            let _ = writeln!(out, "\nimport: skipped or merged");
            let mut imp = Table::new(&["reason", "rows"]);
            for (r, n) in &self.import {
                imp.row(&[r.clone(), n.to_string()]);
            }
            out.push_str(&imp.render());
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// Peak resident set size of this process (VmHWM) in bytes, on Linux; `None` where
/// `/proc/self/status` cannot be read. The "peak memory" of `aisle train` and the benches.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `bytes` in GiB (2^30 bytes), as the "peak memory" lines print it.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `12345` as `12,345`.
pub fn fmt_n(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A plain-text table: the first column left-aligned, the others right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.to_vec());
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (i, c) in cells.iter().enumerate().take(cols) {
                let pad = width[i] - c.chars().count();
                if i == 0 {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &self.header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_counts() {
        let s = Summary::of(vec![5, 1, 3, 9]);
        assert_eq!((s.n, s.min, s.max), (4, 1, 9));
        assert_eq!(s.median, 4.0);
        assert_eq!(s.mean, 4.5);
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![7, 1, 2]).median, 2.0);
    }

    #[test]
    fn thousands() {
        assert_eq!(fmt_n(0), "0");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_n(1000), "1,000");
        assert_eq!(fmt_n(1234567), "1,234,567");
    }

    #[test]
    fn peak_memory_is_read_where_linux_has_it() {
        assert_eq!(gib(3 << 29), 1.5);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(&["long name".into(), "1".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "a          bb");
        assert_eq!(lines[2], "long name   1");
    }
}
