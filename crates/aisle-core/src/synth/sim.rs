//! Customers and their behaviour: latent preferences, search sessions (query, clicks, add to
//! cart, purchase), repeat purchases without a query, and graded judgments.

use std::collections::HashMap;

use crate::model::{
    Catalog, Interaction, Judgment, Kind, ProductId, Queries, QueryId, User, UserId,
};
use crate::rng::{cumulative, Rng};
use crate::taxonomy::NodeId;

use super::catalog::{allocate, CatalogIndex, Family, Vocab, COLOUR, FEATURE, MATERIAL, SIZE};
use super::tree::Shop;
use super::vocab::Line;
use super::{
    Constraints, PriceBand, ProductTruth, QuerySpec, Scope, SessionTruth, Specificity, UserTruth,
};

/// 2025-01-01T00:00:00Z.
pub const START_TIME: i64 = 1_735_689_600;
const YEAR: i64 = 365 * 86_400;
/// Sessions of one user start at least this far apart (a session lasts under 25 minutes).
const MIN_GAP: i64 = 1_800;

/// Probability that a session's intent comes from the user's category affinities.
pub(crate) const P_AFFINITY: f64 = 0.75;
/// Probability of a purchase without a query (a repeat buy) before a search session.
pub(crate) const P_REPEAT: f64 = 0.15;
/// Judged queries at most, and judgments per query at most.
pub(crate) const MAX_JUDGED_QUERIES: usize = 5_000;
pub(crate) const MAX_JUDGMENTS_PER_QUERY: usize = 50;

/// Click weight of each relevance grade 0..3 (a grade-3 result is 200x as attractive as an
/// unrelated one, before preference and popularity).
pub(crate) const REL_WEIGHT: [f64; 4] = [0.02, 0.4, 1.5, 4.0];
/// Exponent of a product's popularity in its click weight.
pub(crate) const POPULARITY_EXPONENT: f64 = 0.3;
/// Standard deviation of the log of the noise factor in a click weight.
pub(crate) const ATTRACTION_NOISE: f64 = 0.35;
/// Clicks per session: 1, plus one more with this probability each time, up to [`MAX_CLICKS`].
pub(crate) const P_ANOTHER_CLICK: f64 = 0.55;
pub(crate) const MAX_CLICKS: usize = 6;
/// Probability that an added-to-cart product is bought.
pub(crate) const P_PURCHASE_AFTER_CART: f64 = 0.7;

/// How strongly user `u` is drawn to click product `p` of relevance grade `g` for a query:
/// `REL_WEIGHT[g] x preference x popularity^0.3 x lognormal(0, 0.35)`. Draws one normal deviate.
pub(crate) fn attraction(u: &UserTruth, p: &ProductTruth, g: u8, rng: &mut Rng) -> f64 {
    let rel = REL_WEIGHT[(g as usize).min(REL_WEIGHT.len() - 1)];
    rel * preference(u, p)
        * (p.popularity as f64).powf(POPULARITY_EXPONENT)
        * (ATTRACTION_NOISE * rng.normal()).exp()
}

/// The number of clicks a session makes at most: 1 + geometric([`P_ANOTHER_CLICK`]), capped at
/// [`MAX_CLICKS`].
pub(crate) fn click_count(rng: &mut Rng) -> usize {
    let mut n = 1;
    while n < MAX_CLICKS && rng.chance(P_ANOTHER_CLICK) {
        n += 1;
    }
    n
}

/// Probability that the best clicked product (of grade `g`; `liked` when of a preferred brand)
/// goes to the cart: 0.3, +0.3 for grade 3, +0.15 for a preferred brand, at most 0.85 (a cap
/// that never binds: the terms add up to 0.75 at most).
pub(crate) fn p_cart(g: u8, liked: bool) -> f64 {
    (0.3f64 + if g == 3 { 0.3 } else { 0.0 } + if liked { 0.15 } else { 0.0 }).min(0.85)
}

const SEGMENTS: [(&str, f64, &[&str]); 9] = [
    ("budget", 0.14, &[]),
    ("value", 0.14, &[]),
    ("mainstream", 0.20, &[]),
    ("premium", 0.10, &[]),
    (
        "family",
        0.13,
        &["grocery", "toys", "baby", "household", "pet"],
    ),
    (
        "tech",
        0.10,
        &[
            "electronics",
            "computer",
            "phone",
            "camera",
            "game",
            "tv",
            "audio",
        ],
    ),
    (
        "outdoor",
        0.06,
        &["sport", "outdoor", "camping", "cycling", "fitness"],
    ),
    (
        "home",
        0.07,
        &[
            "home",
            "kitchen",
            "furniture",
            "appliance",
            "decor",
            "garden",
        ],
    ),
    (
        "style",
        0.06,
        &["clothing", "shoes", "accessor", "beauty", "jewelry"],
    ),
];
const AGE_BANDS: [&str; 6] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
const REGIONS: [(&str, f64); 4] = [
    ("northeast", 0.17),
    ("midwest", 0.21),
    ("south", 0.38),
    ("west", 0.24),
];

/// Everything the simulator reads.
pub(crate) struct Ctx<'a> {
    pub shop: &'a Shop,
    pub fams: &'a [Family],
    pub vocab: &'a Vocab,
    pub products: &'a [ProductTruth],
    pub catalog: &'a Catalog,
    pub index: &'a CatalogIndex,
    /// Leaf index of each taxonomy node (`u32::MAX` for inner nodes).
    pub leaf_of: Vec<u32>,
    /// Pre-order rank of each leaf, ascending.
    pub leaf_pre: Vec<u32>,
    pub scopes: Vec<Scope>,
    /// Scope of each leaf's specific noun and of its broad noun.
    pub leaf_scope: Vec<(u32, u32)>,
    /// Per scope: the leaf indices and the running product counts over them.
    scope_leaves: Vec<(Vec<u32>, Vec<f64>)>,
    /// Parent of every node (root for the root).
    parent: Vec<NodeId>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        shop: &'a Shop,
        fams: &'a [Family],
        vocab: &'a Vocab,
        products: &'a [ProductTruth],
        catalog: &'a Catalog,
        index: &'a CatalogIndex,
    ) -> Self {
        let t = &shop.taxonomy;
        let mut leaf_of = vec![u32::MAX; t.len()];
        for (l, leaf) in shop.leaves.iter().enumerate() {
            leaf_of[leaf.node.index()] = l as u32;
        }
        let leaf_pre = shop
            .leaves
            .iter()
            .map(|l| t.pre_range(l.node).start)
            .collect();
        let parent = t.nodes().map(|n| t.parent(n).unwrap_or(t.root())).collect();
        // Scopes: the leaves each query noun names.
        let mut by_noun: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (l, leaf) in shop.leaves.iter().enumerate() {
            for noun in [leaf.query_noun.as_str(), leaf.broad_noun.as_str()] {
                let e = by_noun.entry(noun).or_insert_with(|| {
                    order.push(noun);
                    Vec::new()
                });
                if e.last() != Some(&(l as u32)) {
                    e.push(l as u32);
                }
            }
        }
        let mut scope_id: HashMap<&str, u32> = HashMap::new();
        let mut scopes = Vec::with_capacity(order.len());
        let mut scope_leaves = Vec::with_capacity(order.len());
        for noun in order {
            let leaves = &by_noun[noun];
            let mut nodes: Vec<NodeId> = leaves
                .iter()
                .map(|&l| shop.leaves[l as usize].node)
                .collect();
            nodes.sort_unstable();
            let mut parents: Vec<NodeId> = nodes
                .iter()
                .filter_map(|&n| t.parent(n))
                .filter(|&p| p != t.root())
                .collect();
            parents.sort_unstable();
            parents.dedup();
            let counts = cumulative(leaves.iter().map(|&l| {
                (index.leaf_start[l as usize + 1] - index.leaf_start[l as usize]) as f64
            }));
            scope_id.insert(noun, scopes.len() as u32);
            scopes.push(Scope {
                noun: noun.to_owned(),
                leaves: nodes,
                parents,
            });
            scope_leaves.push((leaves.clone(), counts));
        }
        let leaf_scope = shop
            .leaves
            .iter()
            .map(|l| {
                (
                    scope_id[l.query_noun.as_str()],
                    scope_id[l.broad_noun.as_str()],
                )
            })
            .collect();
        Ctx {
            shop,
            fams,
            vocab,
            products,
            catalog,
            index,
            leaf_of,
            leaf_pre,
            scopes,
            leaf_scope,
            scope_leaves,
            parent,
        }
    }

    fn n_products(&self) -> u32 {
        self.products.len() as u32
    }

    /// Product range of the subtree of `n` (products are numbered in leaf pre-order).
    fn subtree_products(&self, n: NodeId) -> (u32, u32) {
        let r = self.shop.taxonomy.pre_range(n);
        let lo = self.leaf_pre.partition_point(|&p| p < r.start);
        let hi = self.leaf_pre.partition_point(|&p| p < r.end);
        (self.index.leaf_start[lo], self.index.leaf_start[hi])
    }

    fn leaf_range(&self, l: usize) -> (u32, u32) {
        (self.index.leaf_start[l], self.index.leaf_start[l + 1])
    }

    /// A product of leaf `l` drawn by popularity.
    fn popular_in_leaf(&self, l: usize, rng: &mut Rng) -> Option<u32> {
        let (lo, hi) = self.leaf_range(l);
        if lo >= hi {
            return None;
        }
        let cum = &self.index.cum_pop[lo as usize..hi as usize];
        let total = cum[cum.len() - 1];
        let x = rng.f64() as f32 * total;
        let k = cum.partition_point(|&c| c <= x).min(cum.len() - 1);
        Some(lo + k as u32)
    }

    /// A product of a scope: a leaf by product count, then a product by popularity.
    fn popular_in_scope(&self, scope: u32, rng: &mut Rng) -> Option<u32> {
        let (leaves, cum) = &self.scope_leaves[scope as usize];
        if cum.last().copied().unwrap_or(0.0) <= 0.0 {
            return None;
        }
        let l = leaves[rng.weighted_index(cum)] as usize;
        self.popular_in_leaf(l, rng)
    }

    fn leaf_index(&self, p: u32) -> usize {
        self.leaf_of[self.products[p as usize].leaf.index()] as usize
    }

    /// The graded relevance of product `p` for a query (see [`super::GroundTruth::relevance`]).
    pub fn grade(&self, spec: &QuerySpec, p: u32) -> u8 {
        grade(
            &self.scopes[spec.scope as usize],
            spec,
            &self.products[p as usize],
            p,
            |n| self.parent[n.index()],
        )
    }
}

/// Relevance grade: 3 when the product is in one of the leaves the query's noun names and matches
/// every attribute of the query; 2 in such a leaf with some but not all attributes; 1 in such a
/// leaf with none of them, or in a sibling leaf (same parent); 0 otherwise.
pub(crate) fn grade(
    scope: &Scope,
    spec: &QuerySpec,
    p: &ProductTruth,
    pid: u32,
    parent: impl Fn(NodeId) -> NodeId,
) -> u8 {
    if scope.leaves.binary_search(&p.leaf).is_err() {
        return u8::from(scope.parents.binary_search(&parent(p.leaf)).is_ok());
    }
    let c = &spec.constraints;
    let mut asked = 0;
    let mut matched = 0;
    if let Some(b) = c.brand {
        asked += 1;
        matched += u32::from(p.brand == b);
    }
    for s in 0..4 {
        if let Some(v) = c.attrs[s] {
            asked += 1;
            matched += u32::from(p.attrs[s] == Some(v));
        }
    }
    if let Some(m) = c.model {
        asked += 1;
        matched += u32::from(m.0 == pid);
    }
    if matched == asked {
        3
    } else if matched > 0 {
        2
    } else {
        1
    }
}

/// How much user `u` likes product `p`, whatever the query: brand, brand tier and price fit.
pub(crate) fn preference(u: &UserTruth, p: &ProductTruth) -> f64 {
    let brand = if u.preferred_brands.contains(&p.brand) {
        4.0
    } else {
        1.0
    };
    let tier = match u.price_band {
        PriceBand::Budget => [1.5, 1.0, 0.5],
        PriceBand::Mid => [1.0, 1.2, 0.9],
        PriceBand::Premium => [0.5, 1.0, 1.6],
    }[p.tier.min(2) as usize];
    let centre = match u.price_band {
        PriceBand::Budget => 0.2,
        PriceBand::Mid => 0.5,
        PriceBand::Premium => 0.8,
    };
    let d = (p.price_position as f64 - centre) / 0.22;
    brand * tier * (0.25 + (-d * d).exp())
}

/// Users with their latent preferences.
pub(crate) fn users(ctx: &Ctx, n: usize, seed: u64) -> (Vec<User>, Vec<UserTruth>) {
    let t = &ctx.shop.taxonomy;
    // Candidate affinity nodes: departments and their children that hold products.
    let mut cands: Vec<(NodeId, f64, usize)> = Vec::new(); // node, weight, segment mask
    for n in t.nodes().filter(|&n| (1..=2).contains(&t.depth(n))) {
        let (lo, hi) = ctx.subtree_products(n);
        if hi <= lo {
            continue;
        }
        let dept = t.ancestor_at_depth(n, 1).unwrap_or(n);
        let name = format!("{} {}", t.name(dept), t.name(n)).to_lowercase();
        let mut mask = 0usize;
        for (i, (_, _, keys)) in SEGMENTS.iter().enumerate() {
            if keys.iter().any(|k| name.contains(k)) {
                mask |= 1 << i;
            }
        }
        cands.push((n, ((hi - lo) as f64).sqrt(), mask));
    }
    let seg_cum = cumulative(SEGMENTS.iter().map(|s| s.1));
    let region_cum = cumulative(REGIONS.iter().map(|r| r.1));
    let mut out_users = Vec::with_capacity(n);
    let mut out_truth = Vec::with_capacity(n);
    for u in 0..n {
        let mut rng = Rng::stream(seed ^ 0x05E2_0000, u as u64);
        let seg = rng.weighted_index(&seg_cum);
        let segment = SEGMENTS[seg].0;
        let price_band = {
            let x = rng.f64();
            match segment {
                "budget" => {
                    if x < 0.85 {
                        PriceBand::Budget
                    } else {
                        PriceBand::Mid
                    }
                }
                "value" => {
                    if x < 0.45 {
                        PriceBand::Budget
                    } else {
                        PriceBand::Mid
                    }
                }
                "premium" => {
                    if x < 0.85 {
                        PriceBand::Premium
                    } else {
                        PriceBand::Mid
                    }
                }
                _ => {
                    if x < 0.25 {
                        PriceBand::Budget
                    } else if x < 0.75 {
                        PriceBand::Mid
                    } else {
                        PriceBand::Premium
                    }
                }
            }
        };
        // Affinities: 2-4 subtrees, boosted where the segment's keywords match.
        let mut affinities: Vec<(NodeId, f32)> = Vec::new();
        if !cands.is_empty() {
            let cum =
                cumulative(cands.iter().map(
                    |(_, w, mask)| {
                        if mask & (1 << seg) != 0 {
                            w * 6.0
                        } else {
                            *w
                        }
                    },
                ));
            let k = 2 + rng.index(3);
            let mut tries = 0;
            while affinities.len() < k && tries < 20 {
                tries += 1;
                let node = cands[rng.weighted_index(&cum)].0;
                // No node inside another chosen one.
                if affinities.iter().any(|(a, _)| {
                    t.is_ancestor_or_self(*a, node) || t.is_ancestor_or_self(node, *a)
                }) {
                    continue;
                }
                affinities.push((node, (0.7 * rng.normal()).exp() as f32));
            }
            let total: f32 = affinities.iter().map(|a| a.1).sum();
            for a in &mut affinities {
                a.1 /= total;
            }
            affinities.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let mut truth = UserTruth {
            segment: segment.to_owned(),
            preferred_brands: Vec::new(),
            price_band,
            affinities,
        };
        // Preferred brands: 2-3 brands of leaves in the affinity subtrees, tier-matched.
        let want = 2 + rng.index(2);
        let mut tries = 0;
        while truth.preferred_brands.len() < want && tries < 30 {
            tries += 1;
            let Some(leaf) = pick_leaf(ctx, &truth, &mut rng, 1.0).map(|(l, _)| l) else {
                break;
            };
            let fam = &ctx.fams[ctx.shop.leaves[leaf].family];
            let cum = cumulative(fam.tiers.iter().enumerate().map(|(i, &tier)| {
                let tw = match price_band {
                    PriceBand::Budget => [2.0, 1.0, 0.3],
                    PriceBand::Mid => [0.8, 1.5, 0.8],
                    PriceBand::Premium => [0.3, 1.0, 2.0],
                }[tier as usize];
                tw / ((i + 1) as f64).powf(0.5)
            }));
            let b = fam.brands[rng.weighted_index(&cum)];
            if !truth.preferred_brands.contains(&b) {
                truth.preferred_brands.push(b);
            }
        }
        let age = {
            let mut w = [0.12, 0.22, 0.20, 0.17, 0.15, 0.14];
            match segment {
                "family" => {
                    w[1] *= 2.0;
                    w[2] *= 2.0;
                }
                "tech" | "style" => {
                    w[0] *= 2.0;
                    w[1] *= 1.5;
                }
                "premium" => {
                    w[3] *= 1.5;
                    w[4] *= 1.5;
                }
                _ => {}
            }
            AGE_BANDS[rng.weighted_index(&cumulative(w))]
        };
        let region = REGIONS[rng.weighted_index(&region_cum)].0;
        out_users.push(User {
            id: format!("u{:06}", u + 1),
            segment: Some(segment.to_owned()),
            demographics: vec![
                ("age_band".to_owned(), age.to_owned()),
                ("region".to_owned(), region.to_owned()),
            ],
        });
        out_truth.push(truth);
    }
    (out_users, out_truth)
}

/// An intent leaf: from the user's affinities with probability `p_affinity`, else a popular leaf
/// (by product count). Returns the leaf index and whether it came from an affinity.
fn pick_leaf(ctx: &Ctx, u: &UserTruth, rng: &mut Rng, p_affinity: f64) -> Option<(usize, bool)> {
    if ctx.n_products() == 0 {
        return None;
    }
    if !u.affinities.is_empty() && rng.chance(p_affinity) {
        let x = rng.f64() as f32;
        let mut acc = 0.0;
        let mut node = u.affinities[u.affinities.len() - 1].0;
        for &(n, w) in &u.affinities {
            acc += w;
            if x < acc {
                node = n;
                break;
            }
        }
        let (lo, hi) = ctx.subtree_products(node);
        if hi > lo {
            let p = lo + rng.below((hi - lo) as u64) as u32;
            return Some((ctx.leaf_index(p), true));
        }
    }
    let p = rng.below(ctx.n_products() as u64) as u32;
    Some((ctx.leaf_index(p), false))
}

/// The user's pick among candidates, by preference (with a little noise).
fn choose_by_preference(ctx: &Ctx, u: &UserTruth, cands: &[u32], rng: &mut Rng) -> Option<u32> {
    if cands.is_empty() {
        return None;
    }
    let cum = cumulative(
        cands
            .iter()
            .map(|&p| preference(u, &ctx.products[p as usize])),
    );
    Some(cands[rng.weighted_index(&cum)])
}

/// Candidates in leaf `l`: some by popularity, some of the user's preferred brands.
fn leaf_candidates(
    ctx: &Ctx,
    u: &UserTruth,
    l: usize,
    n_pop: usize,
    rng: &mut Rng,
    out: &mut Vec<u32>,
) {
    out.clear();
    for _ in 0..n_pop {
        if let Some(p) = ctx.popular_in_leaf(l, rng) {
            out.push(p);
        }
    }
    for &(brand, lo, hi) in &ctx.index.brand_ranges[l] {
        if u.preferred_brands.contains(&brand) {
            for _ in 0..2 {
                out.push(lo + rng.below((hi - lo) as u64) as u32);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
}

/// One typo: a dropped, doubled or swapped letter in a word of four letters or more.
fn typo(word: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 4 || !chars.iter().all(|c| c.is_alphabetic()) {
        return word.to_owned();
    }
    let i = 1 + rng.index(chars.len() - 2);
    let mut c = chars.clone();
    match rng.index(3) {
        0 => {
            c.remove(i);
        }
        1 => c.insert(i, chars[i]),
        _ => c.swap(i, i + 1),
    }
    c.into_iter().collect()
}

/// The output of the simulation.
pub(crate) struct Behaviour {
    pub interactions: Vec<Interaction>,
    pub sessions: Vec<SessionTruth>,
    /// For each query id, the session that first issued it.
    pub query_session: Vec<u32>,
}

/// Simulates `n_sessions` search sessions (and the repeat purchases between them).
pub(crate) fn sessions(
    ctx: &Ctx,
    users: &[UserTruth],
    queries: &mut Queries,
    n_sessions: usize,
    seed: u64,
) -> Behaviour {
    let n_users = users.len();
    // Sessions per user: heavy and light users (lognormal activity).
    let mut rng = Rng::stream(seed, 0x5E55);
    let activity: Vec<f64> = (0..n_users).map(|_| (0.8 * rng.normal()).exp()).collect();
    let per_user = allocate(n_sessions, &activity);
    // Start times, each user's in order and at least MIN_GAP apart; then all sessions in time
    // order, which gives their ids.
    let mut starts: Vec<(i64, u32)> = Vec::with_capacity(n_sessions);
    let mut times: Vec<i64> = Vec::new();
    for (u, &k) in per_user.iter().enumerate() {
        let mut rng = Rng::stream(seed ^ 0x7143_0000, u as u64);
        times.clear();
        times.extend((0..k).map(|_| START_TIME + rng.below(YEAR as u64) as i64));
        times.sort_unstable();
        let mut last = i64::MIN;
        for t in times.iter_mut() {
            if *t < last + MIN_GAP {
                *t = last + MIN_GAP;
            }
            last = *t;
            starts.push((*t, u as u32));
        }
    }
    starts.sort_unstable();

    let mut out = Behaviour {
        interactions: Vec::with_capacity(n_sessions * 7 / 2),
        sessions: Vec::with_capacity(n_sessions),
        query_session: Vec::new(),
    };
    let mut last_time = vec![i64::MIN; n_users];
    let mut bought: Vec<Vec<u32>> = vec![Vec::new(); n_users];
    let mut cands: Vec<u32> = Vec::with_capacity(32);
    let mut scored: Vec<(u32, f64, u8)> = Vec::with_capacity(32);
    let mut words: Vec<(String, Option<usize>)> = Vec::with_capacity(8);
    let mut text = String::new();
    for (sid, &(start, u)) in starts.iter().enumerate() {
        let ui = u as usize;
        let user = &users[ui];
        let uid = UserId(u);
        let mut rng = Rng::stream(seed ^ 0x5E55_1000_0000, sid as u64);

        // A purchase without a query before the session: a repeat buy or a browse buy.
        if rng.chance(P_REPEAT) {
            let p = if !bought[ui].is_empty() && rng.chance(0.6) {
                Some(bought[ui][rng.index(bought[ui].len())])
            } else {
                pick_leaf(ctx, user, &mut rng, P_AFFINITY).and_then(|(l, _)| {
                    leaf_candidates(ctx, user, l, 6, &mut rng, &mut cands);
                    choose_by_preference(ctx, user, &cands, &mut rng)
                })
            };
            let t = (start - 300 - rng.below(1_500) as i64).max(last_time[ui].saturating_add(1));
            if let Some(p) = p.filter(|_| t < start) {
                out.interactions.push(Interaction {
                    user: uid,
                    product: ProductId(p),
                    kind: Kind::Purchase,
                    time: t,
                    session: None,
                    query: None,
                    price: ctx_price(ctx, p),
                });
                last_time[ui] = t;
                remember(&mut bought[ui], p);
            }
        }

        // Intent and target.
        let Some((leaf, from_affinity)) = pick_leaf(ctx, user, &mut rng, P_AFFINITY) else {
            continue;
        };
        leaf_candidates(ctx, user, leaf, 8, &mut rng, &mut cands);
        let Some(target) = choose_by_preference(ctx, user, &cands, &mut rng) else {
            continue;
        };
        let tp = &ctx.products[target as usize];
        let lspec = &ctx.shop.leaves[leaf];
        let fam = &ctx.fams[lspec.family];

        // Specificity and the attributes the query names.
        let x = rng.f64();
        let specificity = if x < 0.35 {
            Specificity::Broad
        } else if x < 0.75 {
            Specificity::Medium
        } else {
            Specificity::Specific
        };
        let mut c = Constraints::default();
        let present: Vec<usize> = [SIZE, COLOUR, MATERIAL, FEATURE]
            .into_iter()
            .filter(|&s| tp.attrs[s].is_some())
            .collect();
        let broad_noun = match specificity {
            Specificity::Broad | Specificity::Medium => rng.chance(0.5),
            Specificity::Specific => rng.chance(0.3),
        };
        let mut with_noun = true;
        match specificity {
            Specificity::Broad => {}
            Specificity::Medium => {
                let k = rng.index(present.len() + 2);
                if k >= present.len() {
                    c.brand = Some(tp.brand);
                } else {
                    c.attrs[present[k]] = tp.attrs[present[k]];
                }
            }
            Specificity::Specific => {
                c.brand = Some(tp.brand);
                if fam.line == Line::Code && rng.chance(0.15) {
                    c.model = Some(ProductId(target));
                    with_noun = rng.chance(0.5);
                } else {
                    let mut pool = present.clone();
                    rng.shuffle(&mut pool);
                    let k = (1 + rng.index(2)).min(pool.len());
                    for &s in &pool[..k] {
                        c.attrs[s] = tp.attrs[s];
                    }
                }
            }
        }
        // Words in shop order: brand, model, size, colour, material, feature, noun.
        words.clear();
        let v = |id: u32| ctx.vocab.lower[id as usize].clone();
        if let Some(b) = c.brand {
            words.push((v(b), Some(4)));
        }
        if c.model.is_some() {
            let model = model_code(ctx, target);
            words.push((model, Some(5)));
        }
        for s in [SIZE, COLOUR, MATERIAL, FEATURE] {
            if let Some(a) = c.attrs[s] {
                words.push((v(a), Some(s)));
            }
        }
        let noun = if broad_noun {
            &lspec.broad_noun
        } else {
            &lspec.query_noun
        };
        if with_noun || words.is_empty() {
            words.push((noun.clone(), None));
        }
        // Noise: a dropped attribute word (4%), a typo (6%).
        if words.len() >= 2 && rng.chance(0.04) {
            let k = rng.index(words.len() - 1);
            let slot = words[k].1;
            words.remove(k);
            match slot {
                Some(4) => c.brand = None,
                Some(5) => c.model = None,
                Some(s) => c.attrs[s] = None,
                None => {}
            }
        }
        if rng.chance(0.06) {
            let k = rng.index(words.len());
            let parts: Vec<&str> = words[k].0.split(' ').collect();
            let j = rng.index(parts.len());
            let mut changed: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            changed[j] = typo(parts[j], &mut rng);
            words[k].0 = changed.join(" ");
        }
        text.clear();
        for (w, _) in &words {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(w);
        }
        let has_noun = words.iter().any(|w| w.1.is_none());
        let (leaf_scope, broad_scope) = ctx.leaf_scope[leaf];
        let scope = if has_noun && broad_noun {
            broad_scope
        } else {
            leaf_scope
        };
        let spec = QuerySpec {
            scope,
            constraints: c,
        };
        let qid = queries.intern(&text);
        if qid.index() >= out.query_session.len() {
            out.query_session.push(out.sessions.len() as u32);
        }

        // Results the user looks at: popular products of the scope, of the asked brand, and the
        // target; clicks, cart and purchase by relevance x preference.
        cands.clear();
        for _ in 0..16 {
            if let Some(p) = ctx.popular_in_scope(scope, &mut rng) {
                cands.push(p);
            }
        }
        if let Some(b) = c.brand {
            if let Some(&(_, lo, hi)) = ctx.index.brand_ranges[leaf].iter().find(|r| r.0 == b) {
                for _ in 0..8 {
                    cands.push(lo + rng.below((hi - lo) as u64) as u32);
                }
            }
        }
        cands.push(target);
        cands.sort_unstable();
        cands.dedup();
        scored.clear();
        for &p in &cands {
            let g = ctx.grade(&spec, p);
            let s = attraction(user, &ctx.products[p as usize], g, &mut rng);
            scored.push((p, s, g));
        }
        let n_clicks = click_count(&mut rng);
        let mut t = start.max(last_time[ui].saturating_add(1));
        let mut best: Option<(u32, f64, u8)> = None;
        for _ in 0..n_clicks.min(scored.len()) {
            let cum = cumulative(scored.iter().map(|s| s.1));
            let k = rng.weighted_index(&cum);
            let (p, s, g) = scored.swap_remove(k);
            t += 10 + rng.below(110) as i64;
            out.interactions.push(Interaction {
                user: uid,
                product: ProductId(p),
                kind: Kind::Click,
                time: t,
                session: Some(sid as u64),
                query: Some(qid),
                price: ctx_price(ctx, p),
            });
            if best.is_none_or(|b| s > b.1) {
                best = Some((p, s, g));
            }
        }
        let mut purchased = None;
        if let Some((p, _, g)) = best {
            let liked = user
                .preferred_brands
                .contains(&ctx.products[p as usize].brand);
            if rng.chance(p_cart(g, liked)) {
                t += 20 + rng.below(180) as i64;
                out.interactions.push(Interaction {
                    user: uid,
                    product: ProductId(p),
                    kind: Kind::AddToCart,
                    time: t,
                    session: Some(sid as u64),
                    query: Some(qid),
                    price: ctx_price(ctx, p),
                });
                if rng.chance(P_PURCHASE_AFTER_CART) {
                    t += 60 + rng.below(540) as i64;
                    out.interactions.push(Interaction {
                        user: uid,
                        product: ProductId(p),
                        kind: Kind::Purchase,
                        time: t,
                        session: Some(sid as u64),
                        query: Some(qid),
                        price: ctx_price(ctx, p),
                    });
                    purchased = Some(ProductId(p));
                    remember(&mut bought[ui], p);
                }
            }
        }
        last_time[ui] = t;
        out.sessions.push(SessionTruth {
            id: sid as u64,
            user: uid,
            start,
            intent: lspec.node,
            from_affinity,
            specificity,
            target: ProductId(target),
            spec,
            query: qid,
            purchased,
        });
    }
    out.interactions
        .sort_unstable_by_key(|e| (e.time, e.user.0));
    out
}

fn remember(bought: &mut Vec<u32>, p: u32) {
    if bought.len() >= 32 {
        bought.remove(0);
    }
    bought.push(p);
}

fn ctx_price(ctx: &Ctx, p: u32) -> Option<f32> {
    ctx.catalog.get(ProductId(p)).price
}

/// The model code of a product, lowercased, as a customer types it.
fn model_code(ctx: &Ctx, p: u32) -> String {
    let attrs = &ctx.catalog.get(ProductId(p)).attributes;
    attrs
        .iter()
        .rev()
        .find(|(k, _)| k == "model")
        .map(|(_, m)| m.to_lowercase())
        .unwrap_or_default()
}

/// Graded judgments for up to [`MAX_JUDGED_QUERIES`] distinct queries, at most
/// [`MAX_JUDGMENTS_PER_QUERY`] each: up to 20 products of grade 3, then grade 2 up to 40, then
/// grade 1 (drawn from the query's leaves and their siblings).
pub(crate) fn judgments(ctx: &Ctx, b: &Behaviour, seed: u64) -> Vec<Judgment> {
    let mut rng = Rng::stream(seed, 0x7D6E);
    let mut qs: Vec<u32> = (0..b.query_session.len() as u32).collect();
    rng.shuffle(&mut qs);
    qs.truncate(MAX_JUDGED_QUERIES);
    qs.sort_unstable();
    let mut out = Vec::with_capacity(qs.len() * MAX_JUDGMENTS_PER_QUERY);
    let mut pool: Vec<u32> = Vec::new();
    let mut buckets: [Vec<u32>; 4] = Default::default();
    const POOL: usize = 2_000;
    for q in qs {
        let session = &b.sessions[b.query_session[q as usize] as usize];
        let spec = &session.spec;
        let (leaves, counts) = &ctx.scope_leaves[spec.scope as usize];
        pool.clear();
        let total = counts.last().copied().unwrap_or(0.0) as usize;
        if total <= POOL {
            for &l in leaves {
                let (lo, hi) = ctx.leaf_range(l as usize);
                pool.extend(lo..hi);
            }
        } else {
            for _ in 0..POOL {
                let l = leaves[rng.weighted_index(counts)] as usize;
                let (lo, hi) = ctx.leaf_range(l);
                pool.push(lo + rng.below((hi - lo) as u64) as u32);
            }
        }
        if let Some(brand) = spec.constraints.brand {
            for &l in leaves {
                if let Some(&(_, lo, hi)) = ctx.index.brand_ranges[l as usize]
                    .iter()
                    .find(|r| r.0 == brand)
                {
                    if (hi - lo) as usize <= POOL / 2 {
                        pool.extend(lo..hi);
                    } else {
                        pool.extend((0..POOL / 2).map(|_| lo + rng.below((hi - lo) as u64) as u32));
                    }
                }
            }
        }
        if let Some(m) = spec.constraints.model {
            pool.push(m.0);
        }
        for &parent in &ctx.scopes[spec.scope as usize].parents {
            let (lo, hi) = ctx.subtree_products(parent);
            if hi > lo {
                pool.extend((0..40).map(|_| lo + rng.below((hi - lo) as u64) as u32));
            }
        }
        pool.sort_unstable();
        pool.dedup();
        for bucket in &mut buckets {
            bucket.clear();
        }
        for &p in &pool {
            let g = ctx.grade(spec, p);
            buckets[g as usize].push(p);
        }
        let mut chosen = 0usize;
        for (g, cap) in [(3usize, 20usize), (2, 40), (1, MAX_JUDGMENTS_PER_QUERY)] {
            let bucket = &mut buckets[g];
            rng.shuffle(bucket);
            for &p in bucket.iter() {
                if chosen >= cap {
                    break;
                }
                out.push(Judgment {
                    query: QueryId(q),
                    product: ProductId(p),
                    relevance: g as u8,
                });
                chosen += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_change_one_letter() {
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let t = typo("samsung", &mut rng);
            assert_ne!(t, "samsung");
            assert!((6..=8).contains(&t.chars().count()), "{t}");
        }
        assert_eq!(typo("55", &mut rng), "55");
        assert_eq!(typo("tv", &mut rng), "tv");
    }
}
