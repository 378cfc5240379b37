//! A customer response model for **simulated** A/B tests on the synthetic world.
//!
//! Given the ranked list a search system shows for one of the world's search sessions
//! ([`SessionTruth`]), [`respond`] simulates what that customer does with it, from the same latent
//! model the generator drew the logs from (`sim.rs`). Every figure computed from it (click-through,
//! conversion, revenue per session) is a **simulation on synthetic customers, never a live
//! figure**: it says how a ranking fares against the generator's own assumptions about shoppers,
//! and nothing about real shoppers. Report it as such.
//!
//! The customer:
//!
//! 1. **Examines** the top `k` results ([`DEFAULT_DEPTH`] = 10 is the usual choice), each
//!    independently: rank `i` (0-based) with probability `1 / (1 + i)^`[`EXAMINATION_DECAY`]
//!    (1.0, 0.61, 0.46, 0.38, ... 0.20 at rank 9), a position-biased decay. A product listed
//!    twice counts once, at its first rank.
//! 2. **Clicks**: every examined product has the generator's attraction
//!    `rel[grade] x preference(user, p) x popularity^0.3 x lognormal(0, 0.35)`, with
//!    `rel = [0.02, 0.4, 1.5, 4.0]` and `grade = GroundTruth::relevance(session.spec, p)`.
//!    Beside them stands an **outside option** (leave without clicking) of attraction
//!    [`OUTSIDE_OPTION`]. The customer makes up to `1 + geometric(0.55)` draws (at most 6), as the
//!    generator does; each draw picks among the examined products not yet clicked and the outside
//!    option in proportion to attraction. Picking the outside option, or running out of examined
//!    products, ends the clicking.
//! 3. **Cart and purchase** exactly as the generator: the best clicked product (highest
//!    attraction) goes to the cart with probability `min(0.85, 0.3 + 0.3 if grade 3 + 0.15 if a
//!    preferred brand)`, and an added product is bought with probability 0.7. The order value is
//!    the product's catalog price. The three bonuses add up to 0.75, so even a perfect list
//!    converts at most 0.75 x 0.7 = 52.5% of sessions.
//!
//! Products the world does not know (ids out of range) have no attraction and are never clicked.
//!
//! **Randomness and common random numbers.** [`respond`] is a pure function of its arguments and
//! the state of `rng`. Seed one stream per session, e.g. [`session_rng`] (`Rng::stream(seed,
//! session.id)`), and give the control and the treatment arm the *same* stream: the draws are laid
//! out so that both arms see the same customer. The number of clicks the customer is willing to
//! make, the examination coin of each rank, the noise of each product's attraction (keyed by
//! product id, not by rank: a product the customer happens to like today is liked in both arms),
//! the coin of each click draw, and the cart and purchase coins are all drawn the same way
//! whatever the ranking. Differences between arms then come from the rankings rather than from
//! sampling noise, and paired comparisons per session have a smaller variance (moving the target
//! from rank 0 to rank 2: a mean squared per-session difference in conversion of 0.17 with one
//! stream for both arms against 0.38 with independent streams, in the tests). Results below rank
//! `k` change nothing.
//!
//! The generator's logged sessions have no outside option (every logged session clicks at least
//! once), so the simulated rates of a ranking are not directly comparable with the log's rates;
//! compare arms with each other.

use crate::dataset::Dataset;
use crate::model::{Catalog, ProductId};
use crate::rng::{cumulative, Rng};
use crate::taxonomy::Taxonomy;

use super::sim;
use super::{GroundTruth, SessionTruth};

/// How many results the customer looks through by default.
pub const DEFAULT_DEPTH: usize = 10;

/// Position bias: rank `i` (0-based) is examined with probability `1 / (1 + i)^0.7`. A decay
/// between the steep `1 / log2(2 + i)`-like click models and a flat list: the top result is always
/// seen, the tenth about one time in five.
pub const EXAMINATION_DECAY: f64 = 0.7;

/// The attraction of leaving without a click, on the scale of the generator's click weights.
///
/// 1.0 is about the attraction of a grade-2 product the customer is neutral about (1.5 x a
/// preference of about 0.7 x `popularity^0.3`, whose median is 1.0): measured on a 4,000-product world, a
/// grade-0 product's attraction has median 0.01 (p90 0.04), so a list of ten unrelated products
/// is clicked in about 6% of sessions and converts in about 1%; a session's target product of a
/// preferred brand (always grade 3) has median 17.6 (p10 4.5), so at rank 0 it is clicked in
/// about 90% of sessions and converts in about 47%, close to the funnel's cap of 52.5% (see the
/// module documentation and `the_target_first_converts_far_more_than_unrelated_products`).
pub const OUTSIDE_OPTION: f64 = 1.0;

/// What the simulated customer did with a ranked list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    /// Clicked products, in click order (distinct, all among the top `k` shown).
    pub clicks: Vec<ProductId>,
    /// The best clicked product, when it went to the cart.
    pub added_to_cart: Option<ProductId>,
    /// The carted product, when it was bought.
    pub purchased: Option<ProductId>,
    /// The catalog price of the purchase (`None` without a purchase or without a price).
    pub order_value: Option<f64>,
}

impl Response {
    /// Whether the session ended in a purchase.
    pub fn converted(&self) -> bool {
        self.purchased.is_some()
    }
}

/// Examination probability of rank `rank` (0-based): `1 / (1 + rank)^`[`EXAMINATION_DECAY`].
pub fn examination_probability(rank: usize) -> f64 {
    1.0 / ((1 + rank) as f64).powf(EXAMINATION_DECAY)
}

/// The random stream for simulating `session` under experiment seed `seed`:
/// `Rng::stream(seed, session.id)`. Give each arm of an experiment a fresh copy of the same
/// stream (common random numbers).
pub fn session_rng(seed: u64, session: &SessionTruth) -> Rng {
    Rng::stream(seed, session.id)
}

/// Simulates the customer of `session` shown `ranking` (best first) and looking through its top
/// `k` results (see the module documentation). `taxonomy` and `catalog` are the world's dataset's
/// (`World::dataset.taxonomy`, `World::dataset.catalog`): the first grades relevance, the second
/// gives the order value. Deterministic given `rng`; which draws are taken from `rng` does not
/// depend on the ranking (common random numbers, see the module documentation).
pub fn respond(
    truth: &GroundTruth,
    taxonomy: &Taxonomy,
    catalog: &Catalog,
    session: &SessionTruth,
    ranking: &[ProductId],
    k: usize,
    rng: &mut Rng,
) -> Response {
    // Every draw is taken up front, in an order that does not depend on the ranking.
    let noise_seed = rng.next_u64();
    let n_clicks = sim::click_count(rng);
    let examine: Vec<f64> = (0..k).map(|_| rng.f64()).collect();
    let pick: Vec<f64> = (0..n_clicks).map(|_| rng.f64()).collect();
    let cart_coin = rng.f64();
    let buy_coin = rng.f64();

    let user = truth.users.get(session.user.index());
    // Examined products with their attraction and grade, in rank order.
    let mut pool: Vec<(ProductId, f64, u8)> = Vec::new();
    for (rank, (&p, &coin)) in ranking.iter().zip(&examine).enumerate() {
        if ranking[..rank].contains(&p) || coin >= examination_probability(rank) {
            continue;
        }
        let (Some(u), Some(pt)) = (user, truth.products.get(p.index())) else {
            continue;
        };
        let g = truth.relevance(taxonomy, &session.spec, p);
        // The product's own noise stream: the same in every arm that shows it.
        let mut noise = Rng::stream(noise_seed, u64::from(p.0));
        pool.push((p, sim::attraction(u, pt, g, &mut noise), g));
    }

    let mut out = Response::default();
    let mut best: Option<(ProductId, f64, u8)> = None;
    for &x in &pick {
        if pool.is_empty() {
            break;
        }
        // Index 0 is the outside option.
        let cum = cumulative(std::iter::once(OUTSIDE_OPTION).chain(pool.iter().map(|c| c.1)));
        let total = cum.last().copied().unwrap_or(0.0);
        let i = cum.partition_point(|&c| c <= x * total).min(cum.len() - 1);
        if i == 0 {
            break;
        }
        // `remove`, not `swap_remove`: the pool stays in rank order, so the next draw's layout
        // does not depend on which product was clicked in what position.
        let c = pool.remove(i - 1);
        out.clicks.push(c.0);
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }

    if let Some((p, _, g)) = best {
        let liked = match (user, truth.products.get(p.index())) {
            (Some(u), Some(pt)) => u.preferred_brands.contains(&pt.brand),
            _ => false,
        };
        if cart_coin < sim::p_cart(g, liked) {
            out.added_to_cart = Some(p);
            if buy_coin < sim::P_PURCHASE_AFTER_CART {
                out.purchased = Some(p);
                out.order_value = catalog
                    .products()
                    .get(p.index())
                    .and_then(|x| x.price)
                    .map(f64::from);
            }
        }
    }
    out
}

/// The search session of interaction `interaction_index` of `ds` (the world's dataset), by its
/// `session` field: `None` when there is no such interaction, when it belongs to no search session
/// (a purchase without a query), or when `truth` has no session of that id for that user.
///
/// `SessionTruth::id` is the `session` of its interactions; ids are increasing in
/// `GroundTruth::sessions` but can skip numbers (a session whose customer found no product is not
/// recorded), so the session is found by binary search.
pub fn session_of<'t>(
    truth: &'t GroundTruth,
    ds: &Dataset,
    interaction_index: u32,
) -> Option<&'t SessionTruth> {
    let e = ds.interactions.get(interaction_index as usize)?;
    let id = e.session?;
    let i = truth.sessions.binary_search_by_key(&id, |s| s.id).ok()?;
    truth.sessions.get(i).filter(|s| s.user == e.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::synth::{generate, SynthConfig, TaxonomySource, World};

    fn world(seed: u64) -> World {
        generate(&SynthConfig {
            products: 4_000,
            users: 400,
            sessions: 6_000,
            seed,
            taxonomy: TaxonomySource::BuiltIn,
        })
        .expect("world")
    }

    fn run(w: &World, s: &SessionTruth, ranking: &[ProductId], k: usize, seed: u64) -> Response {
        let ds = &w.dataset;
        respond(
            &w.truth,
            &ds.taxonomy,
            &ds.catalog,
            s,
            ranking,
            k,
            &mut session_rng(seed, s),
        )
    }

    /// `n` random products of grade 0 for the session (fewer if the world has too few).
    fn unrelated(w: &World, s: &SessionTruth, n: usize, rng: &mut Rng) -> Vec<ProductId> {
        let ds = &w.dataset;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n * 20 {
            if out.len() == n {
                break;
            }
            let p = ProductId(rng.index(ds.catalog.len()) as u32);
            if !out.contains(&p) && w.truth.relevance(&ds.taxonomy, &s.spec, p) == 0 {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn examination_decays_from_one() {
        assert_eq!(examination_probability(0), 1.0);
        let p: Vec<f64> = (0..10).map(examination_probability).collect();
        assert!(p.windows(2).all(|w| w[1] < w[0]));
        assert!((p[9] - 0.1995).abs() < 1e-3, "{}", p[9]);
    }

    #[test]
    fn same_stream_same_response() {
        let w = world(5);
        let mut rng = Rng::new(1);
        let mut differs = 0;
        for s in w.truth.sessions.iter().take(300) {
            let mut ranking = unrelated(&w, s, 9, &mut rng);
            ranking.insert(rng.index(3), s.target);
            let a = run(&w, s, &ranking, DEFAULT_DEPTH, 17);
            let b = run(&w, s, &ranking, DEFAULT_DEPTH, 17);
            assert_eq!(a, b);
            differs += usize::from(a != run(&w, s, &ranking, DEFAULT_DEPTH, 18));
        }
        assert!(differs > 10, "another seed changes responses ({differs})");
    }

    #[test]
    fn the_target_first_converts_far_more_than_unrelated_products() {
        let w = world(3);
        let ds = &w.dataset;
        let mut rng = Rng::new(9);
        let n = w.truth.sessions.len().min(2_000);
        assert!(n >= 2_000, "{n} sessions");
        let (mut target_first, mut target_alone, mut random, mut liked) = (0, 0, 0, (0, 0));
        let (mut clicked_random, mut clicked_target) = (0, 0);
        for s in w.truth.sessions.iter().take(n) {
            let junk = unrelated(&w, s, DEFAULT_DEPTH, &mut rng);
            let mut first = vec![s.target];
            first.extend_from_slice(&junk[..junk.len().min(DEFAULT_DEPTH - 1)]);
            let a = run(&w, s, &first, DEFAULT_DEPTH, 1);
            let b = run(&w, s, &junk, DEFAULT_DEPTH, 1);
            let c = run(&w, s, &[s.target], DEFAULT_DEPTH, 1);
            target_first += usize::from(a.converted());
            random += usize::from(b.converted());
            target_alone += usize::from(c.converted());
            clicked_target += usize::from(!a.clicks.is_empty());
            clicked_random += usize::from(!b.clicks.is_empty());
            let brand = w.truth.products[s.target.index()].brand;
            if w.truth.users[s.user.index()]
                .preferred_brands
                .contains(&brand)
                && w.truth.relevance(&ds.taxonomy, &s.spec, s.target) == 3
            {
                liked.0 += 1;
                liked.1 += usize::from(a.converted());
            }
        }
        let rate = |x: usize, n: usize| x as f64 / n.max(1) as f64;
        let logged = rate(
            w.truth
                .sessions
                .iter()
                .take(n)
                .filter(|s| s.purchased.is_some())
                .count(),
            n,
        );
        println!(
            "simulated over {n} sessions (k = {DEFAULT_DEPTH}): target first + 9 grade-0: \
             {:.1}% converted ({:.1}% clicked); target alone: {:.1}% converted; 10 random \
             grade-0: {:.1}% converted ({:.1}% clicked); target first where it is a grade-3 \
             preferred-brand product ({} sessions): {:.1}% converted; the generator's own log: \
             {:.1}% of these sessions bought",
            100.0 * rate(target_first, n),
            100.0 * rate(clicked_target, n),
            100.0 * rate(target_alone, n),
            100.0 * rate(random, n),
            100.0 * rate(clicked_random, n),
            liked.0,
            100.0 * rate(liked.1, liked.0),
            100.0 * logged,
        );
        assert!(
            target_first >= 5 * random.max(1),
            "target first {target_first}, random {random}"
        );
        assert!(rate(target_first, n) > 0.25, "{target_first} of {n}");
        assert!(rate(random, n) < 0.03, "{random} of {n}");
        assert!(liked.0 > 100 && rate(liked.1, liked.0) > 0.4, "{liked:?}");
    }

    #[test]
    fn common_random_numbers_pair_the_arms() {
        let w = world(7);
        let mut rng = Rng::new(2);
        let (mut paired, mut independent, mut n) = (0.0, 0.0, 0.0);
        for s in w.truth.sessions.iter().take(2_000) {
            let junk = unrelated(&w, s, DEFAULT_DEPTH, &mut rng);
            // Results beyond the depth change nothing.
            let mut control = junk.clone();
            control.insert(0, s.target);
            let cut = &control[..5];
            assert_eq!(run(&w, s, &control, 5, 8), run(&w, s, cut, 5, 8));
            // The treatment moves the target from rank 0 to rank 2.
            let mut treatment = junk.clone();
            treatment.insert(2.min(junk.len()), s.target);
            let c = f64::from(u8::from(run(&w, s, &control, DEFAULT_DEPTH, 8).converted()));
            let t = f64::from(u8::from(
                run(&w, s, &treatment, DEFAULT_DEPTH, 8).converted(),
            ));
            let t2 = f64::from(u8::from(
                run(&w, s, &treatment, DEFAULT_DEPTH, 9).converted(),
            ));
            paired += (c - t) * (c - t);
            independent += (c - t2) * (c - t2);
            n += 1.0;
        }
        println!(
            "mean squared per-session difference in conversion, target at rank 0 vs rank 2: \
             {:.3} with common random numbers, {:.3} with independent streams",
            paired / n,
            independent / n
        );
        assert!(paired < 0.6 * independent, "{paired} {independent}");
    }

    #[test]
    fn an_empty_ranking_or_depth_gets_no_clicks() {
        let w = world(4);
        for s in w.truth.sessions.iter().take(200) {
            assert_eq!(run(&w, s, &[], DEFAULT_DEPTH, 2), Response::default());
            assert_eq!(run(&w, s, &[s.target], 0, 2), Response::default());
        }
    }

    #[test]
    fn responses_are_consistent_with_the_list() {
        let w = world(6);
        let ds = &w.dataset;
        let mut rng = Rng::new(4);
        let k = 5;
        let (mut purchases, mut carts) = (0, 0);
        for s in w.truth.sessions.iter().take(1_500) {
            // Relevant products early (so that there are clicks and purchases), and the target
            // sometimes beyond the depth, plus an unknown id and a duplicate.
            let mut ranking = unrelated(&w, s, 6, &mut rng);
            ranking.insert(rng.index(ranking.len() + 1), s.target);
            ranking.insert(rng.index(3), ProductId(u32::MAX));
            let dup = ranking[rng.index(ranking.len())];
            ranking.push(dup);
            let r = run(&w, s, &ranking, k, 3);
            let top = &ranking[..k.min(ranking.len())];
            assert!(r.clicks.len() <= 6);
            for (i, c) in r.clicks.iter().enumerate() {
                assert!(top.contains(c), "{c:?} clicked outside the top {k}");
                assert!(!r.clicks[..i].contains(c), "{c:?} clicked twice");
                assert_ne!(*c, ProductId(u32::MAX));
            }
            if let Some(p) = r.purchased {
                purchases += 1;
                assert_eq!(r.added_to_cart, Some(p));
                let price = ds.catalog.get(p).price.map(f64::from);
                assert!(price.is_some());
                assert_eq!(r.order_value, price);
            } else {
                assert_eq!(r.order_value, None);
            }
            if let Some(p) = r.added_to_cart {
                carts += 1;
                assert!(r.clicks.contains(&p));
            }
        }
        assert!(purchases > 100 && carts > purchases, "{purchases} {carts}");
    }

    #[test]
    fn interactions_map_to_their_sessions() {
        let w = world(2);
        let ds = &w.dataset;
        let mut mapped = 0;
        for (i, e) in ds.interactions.iter().enumerate() {
            let s = session_of(&w.truth, ds, i as u32);
            match e.session {
                Some(id) => {
                    let s = s.expect("a search interaction has its session");
                    assert_eq!((s.id, s.user, Some(s.query)), (id, e.user, e.query));
                    if e.kind == Kind::Purchase {
                        assert_eq!(s.purchased, Some(e.product));
                    }
                    mapped += 1;
                }
                None => assert!(s.is_none()),
            }
        }
        assert!(mapped > 1_000);
        assert!(session_of(&w.truth, ds, ds.interactions.len() as u32).is_none());
        assert!(session_of(&w.truth, ds, u32::MAX).is_none());
    }
}
