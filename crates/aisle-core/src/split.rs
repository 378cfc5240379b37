//! Evaluation protocols: deterministic (seeded) train / validation / test splits.
//!
//! A [`Split`] lists the interactions a model may train on and the [`EvalQuery`]s it is judged
//! on. Every evaluation query carries a history cut-off (`before`): a personalized model may use
//! only the user's interactions strictly before it. docs/protocols.md states each protocol and
//! what it cannot show.

pub(crate) mod types;
pub use types::{EvalQuery, Split};

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{normalize_query, Interaction, Kind, ProductId, QueryId, UserId};
use crate::rng::Rng;

/// Where the training queries come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuerySource {
    /// What customers typed (search logs).
    Logged,
    /// The name of the product's category, made unique where names repeat
    /// ([`Dataset::category_query_text`]; purchase histories without queries; Ai et al. 2017).
    Taxonomy,
}

impl QuerySource {
    /// Logged when any interaction of the dataset carries a query, taxonomy otherwise.
    pub fn of(ds: &Dataset) -> QuerySource {
        if ds.interactions.iter().any(|e| e.query.is_some()) {
            QuerySource::Logged
        } else {
            QuerySource::Taxonomy
        }
    }

    /// The normalised query a training interaction pairs with its product, or `None` when it
    /// trains nothing (a view, or an event without a query in a logged dataset).
    pub fn query_text(self, ds: &Dataset, e: &Interaction) -> Option<String> {
        if e.kind == Kind::View {
            return None;
        }
        match (self, e.query) {
            (QuerySource::Logged, Some(q)) => Some(ds.queries.text(q).to_owned()),
            (QuerySource::Logged, None) => None,
            (QuerySource::Taxonomy, _) => Some(normalize_query(
                ds.category_query_text(ds.catalog.get(e.product).category),
            )),
        }
    }
}

/// The query texts a split's training part trains on: [`QuerySource::query_text`] of each
/// training interaction, with how many interactions train each. The one definition of a *seen*
/// held-out query (its text is here) and an *unseen* one: `aisle dataset stats`
/// ([`Split::summary`]) and the evaluation's query segments both count by it.
#[derive(Clone, Debug, Default)]
pub struct TrainedQueries {
    /// Normalised text -> training interactions that pair it with a product.
    pub counts: HashMap<String, usize>,
}

impl TrainedQueries {
    /// True when the held-out query's text never occurs among the trained texts.
    pub fn is_unseen(&self, ds: &Dataset, q: &EvalQuery) -> bool {
        !self.counts.contains_key(ds.queries.text(q.query))
    }
}

impl Split {
    /// The query texts the training part trains on (see [`TrainedQueries`]).
    pub fn trained_queries(&self, ds: &Dataset) -> TrainedQueries {
        let source = QuerySource::of(ds);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for &i in &self.train {
            if let Some(t) = source.query_text(ds, &ds.interactions[i as usize]) {
                *counts.entry(t).or_default() += 1;
            }
        }
        TrainedQueries { counts }
    }

    /// True when the product has no interaction in the training part.
    pub fn is_cold_start(&self, p: ProductId) -> bool {
        self.cold_start.get(p.index()).copied().unwrap_or(true)
    }

    /// Number of cold-start products.
    pub fn cold_start_count(&self) -> usize {
        self.cold_start.iter().filter(|&&c| c).count()
    }

    /// Distinct logged queries of the training interactions, views included (what a
    /// query-disjoint split keeps apart). Whether a held-out query counts as seen in training is
    /// [`Split::trained_queries`].
    pub fn train_queries(&self, ds: &Dataset) -> HashSet<QueryId> {
        self.train
            .iter()
            .filter_map(|&i| ds.interactions[i as usize].query)
            .collect()
    }

    /// How the test part relates to training: see [`SplitSummary`].
    pub fn summary(&self, ds: &Dataset) -> SplitSummary {
        let trained = self.trained_queries(ds);
        let test_distinct: HashSet<QueryId> = self.test.iter().map(|q| q.query).collect();
        // Where training trains no query at all, "unseen" has no meaning.
        let (unseen_events, unseen_distinct) = if trained.counts.is_empty() {
            (None, None)
        } else {
            let unseen: Vec<&EvalQuery> = self
                .test
                .iter()
                .filter(|q| trained.is_unseen(ds, q))
                .collect();
            let distinct: HashSet<QueryId> = unseen.iter().map(|q| q.query).collect();
            (Some(unseen.len()), Some(distinct.len()))
        };
        let bought: HashSet<(UserId, ProductId)> = self
            .train
            .iter()
            .map(|&i| &ds.interactions[i as usize])
            .filter(|e| e.kind == crate::model::Kind::Purchase)
            .map(|e| (e.user, e.product))
            .collect();
        let repurchase = self
            .test
            .iter()
            .filter_map(|q| q.user.map(|u| (u, q)))
            .flat_map(|(u, q)| q.relevant.iter().map(move |(p, _)| (u, *p)))
            .filter(|up| bought.contains(up))
            .count();
        let cold_relevant = self
            .test
            .iter()
            .flat_map(|q| q.relevant.iter())
            .filter(|(p, _)| self.is_cold_start(*p))
            .count();
        SplitSummary {
            train: self.train.len(),
            validation: self.validation.len(),
            test: self.test.len(),
            test_distinct_queries: test_distinct.len(),
            test_unseen_queries: unseen_events,
            test_unseen_distinct_queries: unseen_distinct,
            cold_start_products: self.cold_start_count(),
            test_relevant_cold_start: cold_relevant,
            test_relevant: self.test.iter().map(|q| q.relevant.len()).sum(),
            test_relevant_bought_before: repurchase,
        }
    }
}

/// Counts that say what a split can show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitSummary {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub test_distinct_queries: usize,
    /// Test queries (events) whose normalised text the training part never trains on
    /// ([`TrainedQueries`]: logged queries of clicks, carts and purchases, or the category texts
    /// of a dataset without queries); `None` when the training part trains no query at all.
    pub test_unseen_queries: Option<usize>,
    pub test_unseen_distinct_queries: Option<usize>,
    pub cold_start_products: usize,
    /// Relevant (test query, product) pairs whose product is cold-start.
    pub test_relevant_cold_start: usize,
    pub test_relevant: usize,
    /// Relevant (test user, product) pairs the user had purchased in training (re-purchases).
    pub test_relevant_bought_before: usize,
}

/// Train / validation / test fractions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fractions {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

impl Default for Fractions {
    fn default() -> Self {
        Fractions {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}

impl Fractions {
    fn check(&self) -> Result<()> {
        let all = [self.train, self.validation, self.test];
        if all.iter().any(|f| !f.is_finite() || *f < 0.0)
            || (all.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err(Error::Config(format!(
                "split fractions must be non-negative and sum to 1, got {}/{}/{}",
                self.train, self.validation, self.test
            )));
        }
        Ok(())
    }
}

fn cold_start(ds: &Dataset, train: &[u32]) -> Vec<bool> {
    let mut cold = vec![true; ds.catalog.len()];
    for &i in train {
        cold[ds.interactions[i as usize].product.index()] = false;
    }
    cold
}

/// Groups query-bearing interactions into search events: one per (user, session, query) when the
/// data has sessions, one per interaction otherwise. Returns the groups in first-seen order.
fn search_events(ds: &Dataset) -> Vec<Vec<u32>> {
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut by_key: HashMap<(UserId, u64, QueryId), usize> = HashMap::new();
    for (i, e) in ds.interactions.iter().enumerate() {
        let Some(q) = e.query else { continue };
        match e.session {
            Some(s) => {
                let g = *by_key.entry((e.user, s, q)).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i as u32);
            }
            None => groups.push(vec![i as u32]),
        }
    }
    groups
}

/// The search events a protocol splits, after checking its fractions; an error naming the
/// protocol when the data has no query at all.
fn logged_search_events(
    ds: &Dataset,
    fractions: Fractions,
    protocol: &str,
) -> Result<Vec<Vec<u32>>> {
    fractions.check()?;
    let groups = search_events(ds);
    if groups.is_empty() {
        return Err(Error::Dataset(format!(
            "dataset `{}` has no interaction with a query: {protocol} needs search logs",
            ds.name
        )));
    }
    Ok(groups)
}

fn eval_query(ds: &Dataset, events: &[u32]) -> EvalQuery {
    let mut best: BTreeMap<ProductId, u8> = BTreeMap::new();
    let first: &Interaction = &ds.interactions[events[0] as usize];
    let mut before = first.time;
    for &i in events {
        let e = &ds.interactions[i as usize];
        before = before.min(e.time);
        let g = best.entry(e.product).or_insert(0);
        *g = (*g).max(e.kind.grade().max(1));
    }
    EvalQuery {
        query: first.query.unwrap_or(QueryId(u32::MAX)),
        user: Some(first.user),
        relevant: best.into_iter().collect(),
        before,
        events: events.to_vec(),
    }
}

/// A split from its validation and test search events: every other interaction trains, except
/// those with a product flagged in `held_out` (indexed by product; empty: none), with a query or
/// without one.
fn assemble(
    ds: &Dataset,
    name: &str,
    description: String,
    seed: u64,
    val_groups: Vec<Vec<u32>>,
    test_groups: Vec<Vec<u32>>,
    held_out: &[bool],
) -> Split {
    // Interactions without a query (purchase histories, views) are training / history, unless
    // their product is held out.
    let mut in_eval = vec![false; ds.interactions.len()];
    for g in val_groups.iter().chain(&test_groups) {
        for &i in g {
            in_eval[i as usize] = true;
        }
    }
    let is_held_out = |i: u32| {
        held_out
            .get(ds.interactions[i as usize].product.index())
            .copied()
            .unwrap_or(false)
    };
    let train: Vec<u32> = (0..ds.interactions.len() as u32)
        .filter(|&i| !in_eval[i as usize] && !is_held_out(i))
        .collect();
    let cold = cold_start(ds, &train);
    Split {
        name: name.to_owned(),
        description,
        seed,
        validation: val_groups.iter().map(|g| eval_query(ds, g)).collect(),
        test: test_groups.iter().map(|g| eval_query(ds, g)).collect(),
        train,
        cold_start: cold,
    }
}

/// Random split of search events (see [`search_events`]) into train / validation / test.
pub fn event_split(ds: &Dataset, fractions: Fractions, seed: u64) -> Result<Split> {
    let mut groups = logged_search_events(ds, fractions, "an event split")?;
    Rng::new(seed).shuffle(&mut groups);
    // Interactions without a query stay in training, whatever their group.
    let n = groups.len();
    let n_test = (n as f64 * fractions.test).round() as usize;
    let n_val = (n as f64 * fractions.validation).round() as usize;
    let test = groups.split_off(n - n_test);
    let val = groups.split_off(groups.len() - n_val);
    let description = format!(
        "search events shuffled with seed {seed}, {:.0}/{:.0}/{:.0} train/validation/test; each test event is one query with the product(s) it led to",
        fractions.train * 100.0,
        fractions.validation * 100.0,
        fractions.test * 100.0
    );
    Ok(assemble(ds, "event", description, seed, val, test, &[]))
}

/// Split by distinct normalised query: no test or validation query occurs in training.
///
/// Queries are shuffled with the seed, then assigned to test until it holds `fractions.test` of
/// the search events, then to validation likewise; the rest train.
pub fn query_disjoint_split(ds: &Dataset, fractions: Fractions, seed: u64) -> Result<Split> {
    let groups = logged_search_events(ds, fractions, "a query-disjoint split")?;
    let mut by_query: BTreeMap<QueryId, Vec<usize>> = BTreeMap::new();
    for (g, events) in groups.iter().enumerate() {
        if let Some(q) = ds.interactions[events[0] as usize].query {
            by_query.entry(q).or_default().push(g);
        }
    }
    let mut queries: Vec<QueryId> = by_query.keys().copied().collect();
    Rng::new(seed).shuffle(&mut queries);
    let total = groups.len() as f64;
    let (want_test, want_val) = (total * fractions.test, total * fractions.validation);
    let (mut test, mut val, mut train) = (Vec::new(), Vec::new(), Vec::<Vec<u32>>::new());
    let (mut n_test, mut n_val) = (0usize, 0usize);
    for q in queries {
        let gs = &by_query[&q];
        // A query goes where adding it brings the count closer to the target.
        let target = if (n_test as f64) + (gs.len() as f64) / 2.0 <= want_test {
            n_test += gs.len();
            &mut test
        } else if (n_val as f64) + (gs.len() as f64) / 2.0 <= want_val {
            n_val += gs.len();
            &mut val
        } else {
            &mut train
        };
        target.extend(gs.iter().map(|&g| groups[g].clone()));
    }
    let description = format!(
        "distinct normalised queries shuffled with seed {seed} and assigned whole to test ({n_test} events), validation ({n_val}) and train, about {:.0}/{:.0}/{:.0} of events; no evaluated query occurs in training",
        fractions.train * 100.0,
        fractions.validation * 100.0,
        fractions.test * 100.0
    );
    Ok(assemble(
        ds,
        "query_disjoint",
        description,
        seed,
        val,
        test,
        &[],
    ))
}

/// Split by product: a share of the products that searches led to, with every interaction of
/// theirs, never appears in training. It measures what the cold-start segment of the other
/// protocols measures on a few pairs, on many: whether a product the model never saw bought or
/// clicked can be found from its content alone.
///
/// The products with at least one query-bearing interaction are shuffled with the seed; the first
/// `fractions.test` of them are test products, the next `fractions.validation` validation
/// products. Each search event's interactions with test (validation) products form one test
/// (validation) query, its relevant products those products only; its interactions with other
/// products stay in training. No interaction with a held-out product trains, with a query or
/// without one (a purchase history included).
pub fn product_disjoint_split(ds: &Dataset, fractions: Fractions, seed: u64) -> Result<Split> {
    let groups = logged_search_events(ds, fractions, "a product-disjoint split")?;
    let mut searched = vec![false; ds.catalog.len()];
    for g in &groups {
        for &i in g {
            searched[ds.interactions[i as usize].product.index()] = true;
        }
    }
    let mut products: Vec<usize> = (0..searched.len()).filter(|&p| searched[p]).collect();
    Rng::new(seed).shuffle(&mut products);
    let n = products.len() as f64;
    let n_test = (n * fractions.test).round() as usize;
    let n_val = (n * fractions.validation).round() as usize;
    // 0: trains, 1: validation, 2: test.
    let mut role = vec![0u8; ds.catalog.len()];
    for (rank, &p) in products.iter().enumerate() {
        role[p] = if rank < n_test {
            2
        } else if rank < n_test + n_val {
            1
        } else {
            0
        };
    }
    let (mut val, mut test) = (Vec::new(), Vec::new());
    for g in &groups {
        let part = |r: u8| -> Vec<u32> {
            g.iter()
                .copied()
                .filter(|&i| role[ds.interactions[i as usize].product.index()] == r)
                .collect()
        };
        let (v, t) = (part(1), part(2));
        if !v.is_empty() {
            val.push(v);
        }
        if !t.is_empty() {
            test.push(t);
        }
    }
    let held_out: Vec<bool> = role.iter().map(|&r| r > 0).collect();
    let description = format!(
        "products that searches led to shuffled with seed {seed}: {n_test} test and {n_val} validation products ({:.0}% / {:.0}%) never appear in training, with every interaction of theirs; each search event's interactions with them make one query, the rest of the event trains",
        fractions.test * 100.0,
        fractions.validation * 100.0
    );
    Ok(assemble(
        ds,
        "product_disjoint",
        description,
        seed,
        val,
        test,
        &held_out,
    ))
}

/// The query text of each category that holds products: its name, or where leaves share a
/// name ("SEASONAL" under twenty departments), the parent's name and its own, or, where that
/// still repeats, its whole path: two categories never share a query. A name that is empty
/// once normalised is refused. The note says how many texts were made unique this way.
fn category_query_texts(ds: &Dataset) -> Result<(HashMap<u32, String>, Option<String>)> {
    use crate::model::normalize_query;
    use crate::taxonomy::NodeId;
    let t = &ds.taxonomy;
    let cats: std::collections::BTreeSet<u32> =
        ds.catalog.iter().map(|(_, p)| p.category.0).collect();
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for &c in &cats {
        let name = normalize_query(t.name(NodeId(c)));
        if name.is_empty() {
            return Err(Error::Dataset(format!(
                "category `{}` has an empty name (`{}`): leave_last_order_out makes each category's name a query text; name it in the taxonomy file",
                t.id(NodeId(c)),
                t.name(NodeId(c))
            )));
        }
        by_name.entry(name).or_default().push(c);
    }
    let distinct = |texts: &[String]| {
        texts
            .iter()
            .map(|x| normalize_query(x))
            .collect::<HashSet<_>>()
            .len()
            == texts.len()
    };
    let mut out = HashMap::with_capacity(cats.len());
    let (mut shared, mut by_parent, mut by_path) = (0, 0, 0);
    for group in by_name.into_values() {
        if let [c] = group[..] {
            out.insert(c, t.name(NodeId(c)).to_owned());
            continue;
        }
        shared += 1;
        let with_parent: Vec<String> = group
            .iter()
            .map(|&c| match t.parent(NodeId(c)).filter(|&p| p != t.root()) {
                Some(p) => format!("{} {}", t.name(p), t.name(NodeId(c))),
                None => t.name(NodeId(c)).to_owned(),
            })
            .collect();
        let texts = if distinct(&with_parent) {
            by_parent += group.len();
            with_parent
        } else {
            by_path += group.len();
            let paths: Vec<String> = group.iter().map(|&c| t.path_string(NodeId(c))).collect();
            if distinct(&paths) {
                paths
            } else {
                // Same names all the way up: the ids tell them apart.
                group
                    .iter()
                    .zip(paths)
                    .map(|(&c, p)| format!("{p} ({})", t.id(NodeId(c))))
                    .collect()
            }
        };
        out.extend(group.into_iter().zip(texts));
    }
    let note = (shared > 0).then(|| {
        format!(
            "{shared} category names are shared by several categories: their query texts were made unique, {by_parent} with the parent's name, {by_path} with the whole path ({} categories, {} query texts)",
            cats.len(),
            out.len()
        )
    });
    Ok((out, note))
}

/// A user's orders, in time order: events of one `session` (an order id) form one order; events
/// without a session group by `time`. Two baskets bought at the same time stay two orders when
/// their sessions differ. `history` is the user's events sorted by time (stable).
fn user_orders(ds: &Dataset, history: &[u32]) -> Vec<Vec<u32>> {
    #[derive(Hash, PartialEq, Eq)]
    enum Key {
        Session(u64),
        Time(i64),
    }
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut orders: Vec<Vec<u32>> = Vec::new();
    for &i in history {
        let e = &ds.interactions[i as usize];
        let key = match e.session {
            Some(s) => Key::Session(s),
            None => Key::Time(e.time),
        };
        let at = *index.entry(key).or_insert_with(|| {
            orders.push(Vec::new());
            orders.len() - 1
        });
        orders[at].push(i);
    }
    // By the time of each order's first event (orders were opened in that order already; a
    // session that spans times stays where it began).
    orders
}

/// Leave-last-order-out with queries built from the taxonomy (Ai et al., SIGIR 2017).
///
/// Per user, the last order (by time; an order is a `session` when the events have one, else a
/// `time`) is test and the one before it validation; every
/// earlier interaction trains. Each (user, leaf category) of a held-out order becomes one query
/// whose text is the category's name and whose relevant products are that order's products in
/// the category. Users with fewer than three orders only train. The category names (made unique
/// where they repeat, by `category_query_texts`) are interned into `ds.queries`.
pub fn leave_last_order_out(ds: &mut Dataset) -> Result<Split> {
    if ds.interactions.is_empty() {
        return Err(Error::Dataset(format!(
            "dataset `{}` has no interactions to leave out",
            ds.name
        )));
    }
    let (texts, made_unique) = category_query_texts(ds)?;
    if let Some(note) = made_unique {
        if !ds.notes.contains(&note) {
            ds.notes.push(note);
        }
    }
    let histories = ds.user_histories();
    let mut held: Vec<(u8, Vec<u32>)> = Vec::new(); // (1 = validation, 2 = test, events)
    let mut in_eval = vec![false; ds.interactions.len()];
    for h in &histories {
        let mut orders = user_orders(ds, h);
        if orders.len() < 3 {
            continue;
        }
        let test_order = orders.pop().unwrap_or_default();
        let val_order = orders.pop().unwrap_or_default();
        for (part, events) in [(2u8, test_order), (1u8, val_order)] {
            for &i in &events {
                in_eval[i as usize] = true;
            }
            held.push((part, events));
        }
    }
    let mut validation = Vec::new();
    let mut test = Vec::new();
    for (part, events) in held {
        // One query per leaf category of the order, in category order for determinism.
        let mut by_cat: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &i in &events {
            let p = ds.interactions[i as usize].product;
            by_cat
                .entry(ds.catalog.get(p).category.0)
                .or_default()
                .push(i);
        }
        for (cat, evs) in by_cat {
            let q = ds.queries.intern(&texts[&cat]);
            let first = &ds.interactions[evs[0] as usize];
            let mut relevant: Vec<(ProductId, u8)> = evs
                .iter()
                .map(|&i| {
                    (
                        ds.interactions[i as usize].product,
                        ds.interactions[i as usize].kind.grade().max(1),
                    )
                })
                .collect();
            relevant.sort();
            relevant.dedup_by_key(|r| r.0);
            let eq = EvalQuery {
                query: q,
                user: Some(first.user),
                relevant,
                before: first.time,
                events: evs,
            };
            if part == 2 {
                test.push(eq);
            } else {
                validation.push(eq);
            }
        }
    }
    // Training pairs and every ranker read the same texts (`Dataset::category_query_text`);
    // interned after the held-out queries, so that their ids stay in first-use order.
    ds.category_queries = vec![None; ds.taxonomy.len()];
    let mut by_category: Vec<(&u32, &String)> = texts.iter().collect();
    by_category.sort();
    for (&cat, text) in by_category {
        ds.category_queries[cat as usize] = Some(ds.queries.intern(text));
    }
    let train: Vec<u32> = (0..ds.interactions.len() as u32)
        .filter(|&i| !in_eval[i as usize])
        .collect();
    let cold = cold_start(ds, &train);
    Ok(Split {
        name: "leave_last_order_out".into(),
        description: "per user, the last order is test and the one before validation; one query per (user, leaf category) of a held-out order, its text the category name, its relevant products that order's products in the category (Ai et al., SIGIR 2017)".into(),
        seed: 0,
        train,
        validation,
        test,
        cold_start: cold,
    })
}

/// The default protocols: search logs get an event split, a query-disjoint split and a
/// product-disjoint split; purchase histories without queries get leave-last-order-out with
/// taxonomy queries; a catalog alone gets none.
pub fn add_default_splits(ds: &mut Dataset, seed: u64) -> Result<()> {
    if ds.interactions.is_empty() {
        return Ok(());
    }
    let searches = ds.interactions.iter().filter(|e| e.query.is_some()).count();
    if searches > 0 {
        let event = event_split(ds, Fractions::default(), seed)?;
        let disjoint = query_disjoint_split(ds, Fractions::default(), seed)?;
        let products = product_disjoint_split(ds, Fractions::default(), seed)?;
        ds.set_split(event);
        ds.set_split(disjoint);
        ds.set_split(products);
    } else {
        let s = leave_last_order_out(ds)?;
        ds.set_split(s);
        let note = "queries are built from the taxonomy (the leaf category's name), not typed by customers (Ai et al., SIGIR 2017)";
        if !ds.notes.iter().any(|n| n == note) {
            ds.notes.push(note.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interaction, Kind, Product};
    use crate::taxonomy::TaxonomyBuilder;

    fn world(with_queries: bool) -> Dataset {
        let mut b = TaxonomyBuilder::new();
        b.add_node("food", "Food", None, None);
        b.add_node("milk", "milk", Some("food"), None);
        b.add_node("bread", "bread", Some("food"), None);
        let mut ds = Dataset::new("t", b.build().expect("tree"));
        for i in 0..6 {
            let cat = ds
                .taxonomy
                .node(if i < 3 { "milk" } else { "bread" })
                .expect("cat");
            ds.catalog
                .push(Product {
                    id: format!("p{i}"),
                    title: format!("product {i}"),
                    description: String::new(),
                    brand: String::new(),
                    price: None,
                    attributes: vec![],
                    category: cat,
                })
                .expect("unique");
        }
        for u in 0..4 {
            let user = ds.users.get_or_insert(&format!("u{u}"));
            for order in 1..=4i64 {
                for k in 0..3u32 {
                    let query =
                        with_queries.then(|| ds.queries.intern(&format!("q{}", (u + k) % 5)));
                    ds.interactions.push(Interaction {
                        user,
                        product: ProductId((k + order as u32 + u) % 6),
                        kind: Kind::Purchase,
                        time: order,
                        session: None,
                        query,
                        price: None,
                    });
                }
            }
        }
        ds
    }

    #[test]
    fn event_split_is_deterministic_and_partitions_events() {
        let ds = world(true);
        let a = event_split(&ds, Fractions::default(), 7).expect("split");
        let b = event_split(&ds, Fractions::default(), 7).expect("split");
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        let c = event_split(&ds, Fractions::default(), 8).expect("split");
        assert_ne!(a.test, c.test);
        let n = ds.interactions.len();
        assert_eq!(a.train.len() + a.validation.len() + a.test.len(), n);
        assert_eq!(a.test.len(), (n as f64 * 0.1).round() as usize);
        let mut all: Vec<u32> = a.train.clone();
        for q in a.validation.iter().chain(&a.test) {
            all.extend(&q.events);
        }
        all.sort_unstable();
        assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
    }

    #[test]
    fn query_disjoint_split_shares_no_query() {
        let ds = world(true);
        let s = query_disjoint_split(&ds, Fractions::default(), 3).expect("split");
        let train_q = s.train_queries(&ds);
        assert!(!s.test.is_empty());
        for q in s.test.iter().chain(&s.validation) {
            assert!(!train_q.contains(&q.query));
        }
        let sum = s.summary(&ds);
        assert_eq!(sum.test_unseen_queries, Some(sum.test));
    }

    #[test]
    fn product_disjoint_split_keeps_every_event_of_held_out_products_out_of_training() {
        let fractions = Fractions {
            train: 0.6,
            validation: 0.2,
            test: 0.2,
        };
        let mut ds = world(true);
        let first = product_disjoint_split(&ds, fractions, 5).expect("split");
        let test_product = first.test[0].relevant[0].0;
        let trained = (0..6u32)
            .map(ProductId)
            .find(|p| !first.cold_start[p.index()])
            .expect("a product that trains");
        // One session that led to a held-out and a trained product, and a purchase of the
        // held-out product without a query.
        let (user, query) = (ds.users.get_or_insert("u0"), ds.queries.intern("q9"));
        for (product, query, session) in [
            (test_product, Some(query), Some(1)),
            (trained, Some(query), Some(1)),
            (test_product, None, None),
        ] {
            ds.interactions.push(Interaction {
                user,
                product,
                kind: Kind::Purchase,
                time: 9,
                session,
                query,
                price: None,
            });
        }
        let n = ds.interactions.len() as u32;
        let s = product_disjoint_split(&ds, fractions, 5).expect("split");
        assert_eq!(s.name, "product_disjoint");
        let again = product_disjoint_split(&ds, fractions, 5).expect("split");
        assert_eq!((&s.train, &s.test), (&again.train, &again.test));

        let held_out = |qs: &[EvalQuery]| -> Vec<ProductId> {
            let mut v: Vec<ProductId> = qs
                .iter()
                .flat_map(|q| q.relevant.iter().map(|r| r.0))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (test_products, val_products) = (held_out(&s.test), held_out(&s.validation));
        assert_eq!(test_products, vec![test_product], "20% of 6 products: one");
        assert_eq!(val_products.len(), 1);
        assert_ne!(val_products, test_products);
        // No interaction of a held-out product trains, with a query or without one.
        for &i in &s.train {
            let p = ds.interactions[i as usize].product;
            assert!(
                !test_products.contains(&p) && !val_products.contains(&p),
                "{i}"
            );
        }
        for p in test_products.iter().chain(&val_products) {
            assert!(s.cold_start[p.index()]);
        }
        // Every query-bearing interaction of a held-out product is evaluated, each event's
        // queries name only held-out products, and the rest of the session trains.
        let mut evaluated: Vec<u32> = Vec::new();
        for q in s.test.iter().chain(&s.validation) {
            evaluated.extend(&q.events);
            assert!(q.relevant.len() == 1 && s.cold_start[q.relevant[0].0.index()]);
        }
        for i in 0..n {
            let e = &ds.interactions[i as usize];
            let out = test_products.contains(&e.product) || val_products.contains(&e.product);
            assert_eq!(evaluated.contains(&i), out && e.query.is_some(), "{i}");
            assert_eq!(s.train.contains(&i), !out, "{i}");
        }
        assert!(
            s.train.contains(&(n - 2)),
            "the trained product of the mixed session"
        );
    }

    /// Leaves that share a name ("SEASONAL" x20 on a grocery set) merged into one query text;
    /// a whitespace-only name became an empty query.
    #[test]
    fn category_query_texts_never_merge_two_categories_and_refuse_empty_names() {
        let shop = |leaves: &[(&str, &str, &str)]| {
            let mut b = TaxonomyBuilder::new();
            b.add_node("food", "Food", None, None);
            b.add_node("drinks", "Drinks", None, None);
            b.add_node("food2", "Food", None, None);
            for (id, name, parent) in leaves {
                b.add_node(id, name, Some(parent), None);
            }
            let mut ds = Dataset::new("t", b.build().expect("tree"));
            for (i, (id, _, _)) in leaves.iter().enumerate() {
                let category = ds.taxonomy.node(id).expect("leaf");
                ds.catalog
                    .push(Product {
                        id: format!("p{i}"),
                        title: format!("product {i}"),
                        description: String::new(),
                        brand: String::new(),
                        price: None,
                        attributes: vec![],
                        category,
                    })
                    .expect("unique");
            }
            ds
        };
        let ds = shop(&[
            ("s1", "SEASONAL", "food"),
            ("s2", "Seasonal ", "drinks"),
            ("m1", "misc", "food"),
            ("m2", "MISC", "drinks"),
            ("m3", "misc", "food2"),
            ("milk", "milk", "food"),
        ]);
        let (texts, note) = category_query_texts(&ds).expect("texts");
        let text = |id: &str| texts[&ds.taxonomy.node(id).expect("leaf").0].clone();
        assert_eq!(text("milk"), "milk");
        assert_eq!(text("s1"), "Food SEASONAL");
        assert_eq!(text("s2"), "Drinks Seasonal ");
        // "Food misc" twice: the path, and then the id, tell them apart.
        assert_eq!(text("m2"), "Drinks > MISC (m2)");
        assert_eq!(text("m3"), "Food > misc (m3)");
        let distinct: HashSet<String> = texts
            .values()
            .map(|t| crate::model::normalize_query(t))
            .collect();
        assert_eq!(distinct.len(), 6);
        let note = note.expect("a note");
        assert!(
            note.starts_with("2 category names are shared")
                && note.contains("2 with the parent's name, 3 with the whole path"),
            "{note}"
        );
        let ds = shop(&[("m1", "misc", "food"), ("m2", "milk", "drinks")]);
        assert!(category_query_texts(&ds).expect("texts").1.is_none());
        // The split's queries and the texts training reads are the same unique ones.
        let mut ds = shop(&[("s1", "SEASONAL", "food"), ("s2", "SEASONAL", "drinks")]);
        let user = ds.users.get_or_insert("u");
        for (time, product) in [(1, 0), (2, 1), (3, 0)] {
            ds.interactions.push(Interaction {
                user,
                product: ProductId(product),
                kind: Kind::Purchase,
                time,
                session: None,
                query: None,
                price: None,
            });
        }
        let s = leave_last_order_out(&mut ds).expect("split");
        let s1 = ds.taxonomy.node("s1").expect("leaf");
        assert_eq!(ds.category_query_text(s1), "food seasonal");
        assert_eq!(ds.queries.text(s.test[0].query), "food seasonal");
        assert_eq!(ds.queries.text(s.validation[0].query), "drinks seasonal");
        assert!(ds
            .notes
            .iter()
            .any(|n| n.starts_with("1 category names are shared")));
        let mut ds = shop(&[("blank", "  \t ", "food")]);
        ds.interactions.push(Interaction {
            user: ds.users.get_or_insert("u"),
            product: ProductId(0),
            kind: Kind::Purchase,
            time: 1,
            session: None,
            query: None,
            price: None,
        });
        let err = leave_last_order_out(&mut ds)
            .expect_err("empty name")
            .to_string();
        assert!(err.contains("category `blank` has an empty name"), "{err}");
    }

    /// Baskets bought at the same time merged into one order when `session` was ignored.
    #[test]
    fn orders_are_sessions_when_events_have_one() {
        let mut ds = world(false);
        // One user, three baskets: sessions 7 and 8 share time 2.
        ds.interactions.clear();
        let user = ds.users.get_or_insert("u0");
        for (time, session, product) in [(1, 6, 0), (2, 7, 1), (2, 8, 4), (2, 8, 5)] {
            ds.interactions.push(Interaction {
                user,
                product: ProductId(product),
                kind: Kind::Purchase,
                time,
                session: Some(session),
                query: None,
                price: None,
            });
        }
        let s = leave_last_order_out(&mut ds).expect("split");
        assert_eq!(s.train, vec![0], "session 6 trains");
        let products = |qs: &[EvalQuery]| -> Vec<u32> {
            let mut v: Vec<u32> = qs
                .iter()
                .flat_map(|q| q.relevant.iter().map(|r| r.0 .0))
                .collect();
            v.sort();
            v
        };
        assert_eq!(products(&s.validation), vec![1]);
        assert_eq!(products(&s.test), vec![4, 5]);
        // Without sessions the three baskets are two orders (times 1 and 2): the user only trains.
        for e in &mut ds.interactions {
            e.session = None;
        }
        let s = leave_last_order_out(&mut ds).expect("split");
        assert!(s.test.is_empty() && s.train.len() == 4);
    }

    #[test]
    fn leave_last_order_out_builds_category_queries() {
        let mut ds = world(false);
        let s = leave_last_order_out(&mut ds).expect("split");
        // 4 users, each with a validation (order 3) and a test order (order 4).
        for q in &s.test {
            let text = ds.queries.text(q.query);
            assert!(text == "milk" || text == "bread");
            assert_eq!(q.before, 4);
            for (p, _) in &q.relevant {
                let cat = ds.catalog.get(*p).category;
                assert_eq!(ds.taxonomy.name(cat), text);
            }
        }
        for q in &s.validation {
            assert_eq!(q.before, 3);
        }
        for &i in &s.train {
            assert!(ds.interactions[i as usize].time <= 2);
        }
        let users: HashSet<_> = s.test.iter().filter_map(|q| q.user).collect();
        assert_eq!(users.len(), 4);
    }

    #[test]
    fn cold_start_flags_products_without_training_events() {
        let ds = world(true);
        let s = event_split(&ds, Fractions::default(), 1).expect("split");
        for (p, _) in ds.catalog.iter() {
            let trained = s
                .train
                .iter()
                .any(|&i| ds.interactions[i as usize].product == p);
            assert_eq!(s.is_cold_start(p), !trained);
        }
    }

    #[test]
    fn bad_fractions_are_refused() {
        let ds = world(true);
        let f = Fractions {
            train: 0.9,
            validation: 0.2,
            test: 0.1,
        };
        assert!(matches!(event_split(&ds, f, 1), Err(Error::Config(_))));
    }
}
