//! What the head's features read beyond the towers ([`Signals`]), built once from a set of
//! interactions, and the features of a request's candidates computed from them.

use std::collections::HashMap;

use aisle_model::linalg::{gemm, Mat};

use aisle_core::split::QuerySource;
use aisle_core::{Dataset, Interaction, Kind, ProductId, Split, UserId};

use super::features::{FEATURES, NEIGHBOUR_FLOOR};

/// Products chosen for a query text taken as candidates (the most chosen first).
pub const QUERY_CANDIDATES: usize = 100;

/// One earlier interaction of the customer, as the head reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Past {
    pub product: ProductId,
    pub kind: Kind,
    /// Any increasing clock: the interaction's time, or its position in an inline history.
    pub time: i64,
}

/// What the head's features read beyond the towers, built once from a set of interactions.
#[derive(Clone, Debug)]
pub struct Signals {
    /// Sorted, distinct words of each product's title and category path.
    words: Vec<Vec<String>>,
    /// Per normalised query text, the products chosen for it and how often, most first.
    by_query: HashMap<String, Vec<(ProductId, u32)>>,
    /// Per product, the distinct customers who bought it, sorted.
    buyers: Vec<Vec<u32>>,
    /// Per customer, the number of distinct products bought.
    distinct: Vec<u32>,
    /// True when the data has purchases: then only purchases count as buying; otherwise
    /// (search logs) clicks and add-to-carts do.
    purchases: bool,
}

/// Lower-cased words (runs of letters and digits) of a text.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Sorted, distinct [`words`] of each product's title and category path, by product.
pub fn product_words(ds: &Dataset) -> Vec<Vec<String>> {
    let t = &ds.taxonomy;
    ds.catalog
        .iter()
        .map(|(_, p)| {
            let mut w = words(&p.title);
            for n in t.path(p.category) {
                w.extend(words(t.name(n)));
            }
            w.sort_unstable();
            w.dedup();
            w
        })
        .collect()
}

impl Signals {
    /// Signals from the interactions `events` (indices into `ds.interactions`). `query_text`
    /// gives the normalised query an interaction was chosen for, if any (the logged query, or on
    /// purchase histories the category it was bought under).
    pub fn build(
        ds: &Dataset,
        events: impl Iterator<Item = u32>,
        query_text: impl Fn(&Interaction) -> Option<String>,
    ) -> Signals {
        let purchases = ds.interactions.iter().any(|e| e.kind == Kind::Purchase);
        let words_of = product_words(ds);
        let mut counts: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        let mut buyers: Vec<Vec<u32>> = vec![Vec::new(); ds.catalog.len()];
        for i in events {
            let Some(e) = ds.interactions.get(i as usize) else {
                continue;
            };
            if let Some(text) = query_text(e) {
                *counts
                    .entry(text)
                    .or_default()
                    .entry(e.product)
                    .or_default() += 1;
            }
            if counts_as_bought(purchases, e.kind) {
                if let Some(b) = buyers.get_mut(e.product.index()) {
                    b.push(e.user.0);
                }
            }
        }
        let mut distinct = vec![0u32; ds.users.len()];
        for b in &mut buyers {
            b.sort_unstable();
            b.dedup();
            for &u in b.iter() {
                if let Some(d) = distinct.get_mut(u as usize) {
                    *d += 1;
                }
            }
        }
        let by_query = counts
            .into_iter()
            .map(|(q, c)| {
                let mut ps: Vec<(ProductId, u32)> = c.into_iter().collect();
                ps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (q, ps)
            })
            .collect();
        Signals {
            words: words_of,
            by_query,
            buyers,
            distinct,
            purchases,
        }
    }

    /// The signals of `split`'s training part: the same interactions the customers' histories
    /// hold, so that no held-out event reaches a feature (evaluation, and fitting a head).
    pub fn of_training(ds: &Dataset, split: &Split) -> Signals {
        let source = QuerySource::of(ds);
        Signals::build(ds, split.train.iter().copied(), |e| {
            source.query_text(ds, e)
        })
    }

    /// The signals of every interaction: what a live service knows (not for evaluation).
    pub fn of_all(ds: &Dataset) -> Signals {
        let source = QuerySource::of(ds);
        Signals::build(ds, 0..ds.interactions.len() as u32, |e| {
            source.query_text(ds, e)
        })
    }

    /// True when an interaction of this kind counts as buying.
    pub fn counts(&self, kind: Kind) -> bool {
        counts_as_bought(self.purchases, kind)
    }

    /// The products chosen for `text` before, most chosen first, with their counts.
    pub fn chosen_for(&self, text: &str) -> &[(ProductId, u32)] {
        self.by_query.get(text).map_or(&[], Vec::as_slice)
    }

    /// True when every word of `query_words` (not empty) is in the product's title or path.
    pub fn text_matches(&self, p: ProductId, query_words: &[String]) -> bool {
        let Some(w) = self.words.get(p.index()) else {
            return false;
        };
        !query_words.is_empty() && query_words.iter().all(|q| w.binary_search(q).is_ok())
    }

    /// The features of each candidate `(product, dense cosine)` for one request: its query text,
    /// the customer's earlier interactions, oldest first, and the customer's id when stored
    /// (left out of their own neighbours). `vector` gives a product's unit vector.
    pub fn features<'v>(
        &self,
        text: &str,
        past: &[Past],
        user: Option<UserId>,
        candidates: &[(ProductId, f32)],
        vector: impl Fn(ProductId) -> &'v [f32],
    ) -> Vec<[f32; FEATURES]> {
        let query_words = words(text);
        let chosen: HashMap<ProductId, u32> = self.chosen_for(text).iter().copied().collect();
        // Times bought and the last visit it was bought at, per product.
        let mut bought: HashMap<ProductId, (u32, i64)> = HashMap::new();
        let mut seen: Vec<ProductId> = Vec::with_capacity(past.len());
        let mut visits: Vec<i64> = past.iter().map(|e| e.time).collect();
        visits.dedup();
        for e in past {
            seen.push(e.product);
            if self.counts(e.kind) {
                let b = bought.entry(e.product).or_insert((0, e.time));
                b.0 += 1;
                b.1 = b.1.max(e.time);
            }
        }
        seen.sort_unstable();
        seen.dedup();
        let neighbours = self.neighbour_weights(user, &bought);
        let total: f32 = neighbours.values().sum();
        let closest = closest_seen(&seen, candidates, &vector);
        candidates
            .iter()
            .zip(closest)
            .map(|(&(p, dense), closest)| {
                let matched = self.text_matches(p, &query_words);
                let (times, recency) = match bought.get(&p) {
                    Some(&(n, last)) => {
                        // Distinct visits after the last one it was bought at.
                        let after = visits.len() - visits.partition_point(|&t| t <= last);
                        (n, 1.0 / (1.0 + after as f32))
                    }
                    None => (0, 0.0),
                };
                let shared = if total > 0.0 {
                    self.buyers.get(p.index()).map_or(0.0, |b| {
                        b.iter()
                            .filter_map(|v| neighbours.get(v))
                            .copied()
                            .sum::<f32>()
                            / total
                    })
                } else {
                    0.0
                };
                let shared = (NEIGHBOUR_FLOOR + shared).ln();
                let b = f32::from(u8::from(times > 0));
                let m = f32::from(u8::from(matched));
                // In `Feature::ALL` order.
                [
                    dense,
                    if closest.is_finite() { closest } else { 0.0 },
                    m,
                    b,
                    b * m,
                    (times as f32).ln_1p(),
                    recency,
                    (chosen.get(&p).copied().unwrap_or(0) as f32).ln_1p(),
                    shared,
                    shared * (1.0 - b),
                ]
            })
            .collect()
    }

    /// Cosine of every other customer's bought-product set with `bought`: shared products over
    /// the square root of both sets' sizes (`user` itself left out). Empty without purchases.
    fn neighbour_weights(
        &self,
        user: Option<UserId>,
        bought: &HashMap<ProductId, (u32, i64)>,
    ) -> HashMap<u32, f32> {
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for p in bought.keys() {
            for &v in self.buyers.get(p.index()).map_or(&[][..], Vec::as_slice) {
                if user.is_none_or(|u| u.0 != v) {
                    *shared.entry(v).or_default() += 1;
                }
            }
        }
        let mine = bought.len() as f32;
        shared
            .into_iter()
            .map(|(v, n)| {
                let theirs = self.distinct.get(v as usize).copied().unwrap_or(1).max(1) as f32;
                (v, n as f32 / (mine * theirs).sqrt())
            })
            .collect()
    }
}

/// Purchases count as buying where the data has any; otherwise (search logs) clicks and
/// add-to-carts do.
pub fn counts_as_bought(purchases: bool, kind: Kind) -> bool {
    if purchases {
        kind == Kind::Purchase
    } else {
        kind != Kind::View
    }
}

/// For each candidate, its largest inner product with a product of `seen` (`-inf` when `seen`
/// is empty): one matrix product per request. With 1,000 earlier products and 100 candidates,
/// one dot product per pair took three quarters of the head's candidate time (perf, 100k
/// products, 20,000 validation queries).
fn closest_seen<'v>(
    seen: &[ProductId],
    candidates: &[(ProductId, f32)],
    vector: &impl Fn(ProductId) -> &'v [f32],
) -> Vec<f32> {
    let Some(&(first, _)) = candidates.first() else {
        return Vec::new();
    };
    if seen.is_empty() {
        return vec![f32::NEG_INFINITY; candidates.len()];
    }
    let d = vector(first).len();
    let gather = |ps: &mut dyn Iterator<Item = ProductId>, n: usize| {
        let mut m = Vec::with_capacity(n * d);
        for p in ps {
            m.extend_from_slice(vector(p));
        }
        m
    };
    let c = gather(&mut candidates.iter().map(|c| c.0), candidates.len());
    let h = gather(&mut seen.iter().copied(), seen.len());
    let mut scores = vec![0f32; candidates.len() * seen.len()];
    gemm(
        1.0,
        Mat::new(&c, candidates.len(), d),
        Mat::new(&h, seen.len(), d).t(),
        0.0,
        &mut scores,
    );
    scores
        .chunks(seen.len())
        .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rerank::features::{Feature, FEATURE_NAMES};
    use aisle_core::split::{event_split, Fractions};
    use aisle_core::synth::small_dataset;
    use aisle_core::EvalQuery;

    /// TVs p0..p3 and sofas p4, p5. Customer u bought p1 at visits 1 and 2 and p2 at visit 3,
    /// and viewed p4 at visit 4; v bought p1 and p3; w bought p3 (not in `train`: held out).
    /// Every event searched "tv".
    fn shop() -> (Dataset, Vec<u32>) {
        let ds = aisle_fixtures::shop_with(
            &[
                ("u", 1, 1, Kind::Purchase),
                ("u", 1, 2, Kind::Purchase),
                ("u", 2, 3, Kind::Purchase),
                ("u", 4, 4, Kind::View),
                ("v", 1, 1, Kind::Purchase),
                ("v", 3, 2, Kind::Purchase),
                ("w", 3, 9, Kind::Purchase),
            ],
            Some("tv"),
        );
        (ds, (0..6).collect())
    }

    #[test]
    fn features_count_what_the_customer_bought_and_what_neighbours_bought() {
        let (ds, train) = shop();
        let signals = Signals::build(&ds, train.into_iter(), |e| {
            e.query.map(|q| ds.queries.text(q).to_owned())
        });
        let u = ds.users.find("u");
        let past: Vec<Past> = ds.interactions[..4]
            .iter()
            .map(|e| Past {
                product: e.product,
                kind: e.kind,
                time: e.time,
            })
            .collect();
        // Unit vectors: p_i along axis i.
        let unit: Vec<Vec<f32>> = (0..6)
            .map(|i| (0..6).map(|j| f32::from(u8::from(i == j))).collect())
            .collect();
        let candidates: Vec<(ProductId, f32)> = (0..6).map(|i| (ProductId(i), 0.5)).collect();
        let f = signals.features("tv", &past, u, &candidates, |p| &unit[p.index()]);
        let at = |p: usize, name: &str| {
            let j = FEATURE_NAMES.iter().position(|n| *n == name).expect("name");
            f[p][j]
        };
        // Bought twice, last at visit 2 of 4 (two visits after it); bought once at visit 3.
        assert_eq!(at(1, "bought"), 1.0);
        assert!((at(1, "log_times_bought") - 2f32.ln_1p()).abs() < 1e-6);
        assert!((at(1, "recency") - 1.0 / 3.0).abs() < 1e-6);
        assert!((at(2, "recency") - 0.5).abs() < 1e-6);
        // A view is no purchase, but it is in the history the closeness reads.
        assert_eq!(at(4, "bought"), 0.0);
        assert_eq!(at(4, "history_closest"), 1.0);
        assert_eq!(at(5, "history_closest"), 0.0);
        // The query's words are in every TV's category path, in no sofa's.
        assert_eq!(at(0, "text_match"), 1.0);
        assert_eq!(at(4, "text_match"), 0.0);
        assert_eq!(at(1, "bought_and_match"), 1.0);
        // Chosen for "tv" in training: p1 by u twice and v once.
        assert!((at(1, "log_query_count") - 3f32.ln_1p()).abs() < 1e-6);
        // v (who shares p1 with u) is the only neighbour: all of the weight is on p1 and p3;
        // w's purchase of p3 is held out and u's own purchases do not count.
        let full = (1.0 + NEIGHBOUR_FLOOR).ln();
        let none = NEIGHBOUR_FLOOR.ln();
        assert!((at(3, "neighbours") - full).abs() < 1e-6);
        assert!((at(3, "new_neighbours") - full).abs() < 1e-6);
        assert!((at(1, "neighbours") - full).abs() < 1e-6);
        assert_eq!(at(1, "new_neighbours"), 0.0, "u bought p1: not new");
        assert!(
            (at(2, "neighbours") - none).abs() < 1e-6,
            "only u bought p2"
        );
        assert!((at(0, "neighbours") - none).abs() < 1e-6);
        // No history: nothing personal, the query's own signals stay.
        let anonymous = signals.features("tv", &[], None, &candidates, |p| &unit[p.index()]);
        for row in &anonymous {
            assert_eq!(row[1..2], [0.0]);
            assert_eq!(row[3..7], [0.0; 4]);
            assert_eq!(row[8], none);
        }
        assert_eq!(anonymous[0][2], 1.0);
    }

    /// No held-out event reaches a feature: the products chosen for each query are counted
    /// over the training part only, and a product bought only in held-out events has no buyer.
    #[test]
    fn the_signals_of_a_split_hold_no_held_out_event() {
        let ds = small_dataset(300, 40, 300, 3).expect("world");
        let split = event_split(&ds, Fractions::default(), 7).expect("split");
        let signals = Signals::of_training(&ds, &split);
        let source = QuerySource::of(&ds);
        let mut want: HashMap<String, HashMap<ProductId, u32>> = HashMap::new();
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if let Some(q) = source.query_text(&ds, e) {
                *want.entry(q).or_default().entry(e.product).or_default() += 1;
            }
        }
        let held_out: Vec<&EvalQuery> = split.validation.iter().chain(&split.test).collect();
        assert!(!held_out.is_empty());
        for q in &held_out {
            let text = ds.queries.text(q.query);
            let got: HashMap<ProductId, u32> = signals.chosen_for(text).iter().copied().collect();
            assert_eq!(got, want.get(text).cloned().unwrap_or_default(), "{text}");
        }
        // Products bought in held-out events and never in training.
        let mut in_train = vec![false; ds.catalog.len()];
        for &i in &split.train {
            let e = &ds.interactions[i as usize];
            if signals.counts(e.kind) {
                in_train[e.product.index()] = true;
            }
        }
        let only_held_out: Vec<(ProductId, f32)> = held_out
            .iter()
            .flat_map(|q| q.events.iter())
            .map(|&i| ds.interactions[i as usize].product)
            .filter(|p| !in_train[p.index()])
            .map(|p| (p, 0.0))
            .collect();
        assert!(!only_held_out.is_empty(), "the world has no such product");
        // A customer who bought everything bought in training: every neighbour counts.
        let past: Vec<Past> = split
            .train
            .iter()
            .map(|&i| &ds.interactions[i as usize])
            .filter(|e| signals.counts(e.kind))
            .map(|e| Past {
                product: e.product,
                kind: e.kind,
                time: e.time,
            })
            .collect();
        let zero = vec![0.0f32; 4];
        let features = signals.features("x", &past, None, &only_held_out, |_| &zero);
        let j = Feature::Neighbours.index();
        for f in &features {
            assert_eq!(f[j], NEIGHBOUR_FLOOR.ln());
        }
    }
}
