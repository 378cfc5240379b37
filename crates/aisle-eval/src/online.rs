//! A **simulated** A/B test on the synthetic world: each arm's ranking of a held-out search
//! session is shown to that session's synthetic customer, whose response comes from the world's
//! own latent model ([`aisle_core::synth::respond`]). Control and treatment see the same customer
//! (common random numbers: one seeded stream per session, replayed for every arm), so differences
//! come from the rankings. Every figure is a simulation under the generator's assumptions, never a
//! live one. Replayed outcomes on logged real sessions are in [`crate::evaluate`].

use std::collections::HashSet;

use serde::Serialize;

use aisle_core::synth::{respond, session_of, session_rng, GroundTruth, SessionTruth};
use aisle_core::{Dataset, Split};

use crate::error::{EvalError, Result};
use crate::evaluate::Member;
use crate::metrics::{paired_randomization, Estimate};
use crate::rankers::Case;

/// How the simulated figures must be read.
pub const SIMULATED_NOTE: &str = "simulated, not live: each held-out synthetic search session's \
    customer is shown each arm's top 10 and responds by the world's own latent model (position-\
    biased examination, clicks by relevance x preference against an outside option, the \
    generator's cart and purchase odds); arms share each customer's random draws";

/// Results shown to each simulated customer.
pub const DEPTH: usize = 10;

/// One arm of the test.
#[derive(Clone, Debug, Serialize)]
pub struct Arm {
    pub name: String,
    /// Rankers (training seeds) whose outcomes are averaged per session.
    pub seeds: usize,
    /// Share of sessions with a click.
    pub click_through: Estimate,
    /// Share of sessions with an add to cart.
    pub add_to_cart: Estimate,
    /// Share of sessions with a purchase.
    pub conversion: Estimate,
    /// Order value per session (0 without a purchase).
    pub revenue_per_session: Estimate,
    /// Mean order value over the purchases with a price (every seed's).
    pub average_order_value: Estimate,
    /// Treatment minus control, per session, with a 95% bootstrap interval (`None` for control).
    pub conversion_lift: Option<Estimate>,
    pub add_to_cart_lift: Option<Estimate>,
    pub revenue_lift: Option<Estimate>,
    /// Paired randomization test of conversion against control.
    pub p_conversion: Option<f64>,
}

/// The simulated test.
#[derive(Clone, Debug, Serialize)]
pub struct SimulatedAb {
    pub note: &'static str,
    pub sessions: usize,
    pub depth: usize,
    /// The first arm.
    pub control: String,
    pub arms: Vec<Arm>,
}

/// The held-out search sessions of `split`'s test queries, each once.
fn test_sessions<'t>(ds: &Dataset, split: &Split, truth: &'t GroundTruth) -> Vec<&'t SessionTruth> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for q in &split.test {
        for &e in &q.events {
            if let Some(s) = session_of(truth, ds, e) {
                if seen.insert(s.id) {
                    out.push(s);
                }
            }
        }
    }
    out.sort_by_key(|s| s.id);
    out
}

/// Salt of the customers' random streams, so that they are not the generator's own streams.
const STREAM_SALT: u64 = 0xAB7E_57ED_0C5A_11E5;

/// One arm: a name and its rankers (one per training seed; their per-session outcomes are
/// averaged, every seed shown to the same customers).
pub struct ArmSpec<'a> {
    pub name: String,
    pub rankers: Vec<Member<'a>>,
}

/// Runs the test: `arms[0]` is control. `seed` seeds the customers' draws and the intervals;
/// `rounds` is the number of sign flips of the paired test.
pub fn simulate_ab(
    ds: &Dataset,
    split: &Split,
    truth: &GroundTruth,
    arms: &[ArmSpec],
    seed: u64,
    resamples: usize,
    rounds: usize,
) -> Result<SimulatedAb> {
    let sessions = test_sessions(ds, split, truth);
    if sessions.is_empty() {
        return Err(EvalError::Empty(format!(
            "split `{}` has no test query from a synthetic search session",
            split.name
        )));
    }
    let Some(control) = arms.first().map(|a| a.name.clone()) else {
        return Err(EvalError::Empty("a simulated A/B test needs arms".into()));
    };
    let cases: Vec<Case> = sessions
        .iter()
        .map(|s| Case {
            text: ds.queries.text(s.query),
            user: Some(s.user),
            before: s.start,
        })
        .collect();
    // Per arm, per session: click, cart, purchase (0/1) and order value, each the mean over the
    // arm's rankers; and per arm the values of the priced purchases (for the average order).
    let mut outcomes: Vec<[Vec<f64>; 4]> = Vec::with_capacity(arms.len());
    let mut orders: Vec<Vec<f64>> = Vec::with_capacity(arms.len());
    for arm in arms {
        if arm.rankers.is_empty() {
            return Err(EvalError::Ranker(format!(
                "arm `{}` has no ranker",
                arm.name
            )));
        }
        let n = arm.rankers.len() as f64;
        let mut o: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; sessions.len()]);
        let mut priced = Vec::new();
        for member in &arm.rankers {
            let rankings = member.with(|ranker| ranker.rank(&cases, DEPTH))?;
            if rankings.len() != sessions.len() {
                return Err(EvalError::Ranker(format!(
                    "{} returned {} rankings for {} sessions",
                    arm.name,
                    rankings.len(),
                    sessions.len()
                )));
            }
            for (i, (s, ranking)) in sessions.iter().zip(&rankings).enumerate() {
                let mut rng = session_rng(seed ^ STREAM_SALT, s);
                let r = respond(
                    truth,
                    &ds.taxonomy,
                    &ds.catalog,
                    s,
                    ranking,
                    DEPTH,
                    &mut rng,
                );
                o[0][i] += f64::from(u8::from(!r.clicks.is_empty())) / n;
                o[1][i] += f64::from(u8::from(r.added_to_cart.is_some())) / n;
                o[2][i] += f64::from(u8::from(r.converted())) / n;
                if r.converted() {
                    if let Some(v) = r.order_value.filter(|v| v.is_finite()) {
                        o[3][i] += v / n;
                        priced.push(v);
                    }
                }
            }
        }
        outcomes.push(o);
        orders.push(priced);
    }
    let est = |v: &[f64], salt: u64| Estimate::of(v, resamples, seed ^ salt);
    let lift = |a: &[f64], b: &[f64], salt: u64| {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        est(&d, salt)
    };
    let base = &outcomes[0];
    let out_arms = arms
        .iter()
        .zip(&outcomes)
        .zip(&orders)
        .enumerate()
        .map(|(i, ((arm, o), priced))| {
            let treat = i > 0;
            Arm {
                name: arm.name.clone(),
                seeds: arm.rankers.len(),
                click_through: est(&o[0], 1),
                add_to_cart: est(&o[1], 2),
                conversion: est(&o[2], 3),
                revenue_per_session: est(&o[3], 4),
                average_order_value: est(priced, 5),
                conversion_lift: treat.then(|| lift(&o[2], &base[2], 6)),
                add_to_cart_lift: treat.then(|| lift(&o[1], &base[1], 7)),
                revenue_lift: treat.then(|| lift(&o[3], &base[3], 8)),
                p_conversion: treat.then(|| paired_randomization(&o[2], &base[2], rounds, seed)),
            }
        })
        .collect();
    Ok(SimulatedAb {
        note: SIMULATED_NOTE,
        sessions: sessions.len(),
        depth: DEPTH,
        control,
        arms: out_arms,
    })
}
