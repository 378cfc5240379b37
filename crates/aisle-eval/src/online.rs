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
use crate::metrics::{paired_randomization, Estimate};
use crate::rankers::{Case, Ranker};

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
    /// Share of sessions with a click.
    pub click_through: Estimate,
    /// Share of sessions with an add to cart.
    pub add_to_cart: Estimate,
    /// Share of sessions with a purchase.
    pub conversion: Estimate,
    /// Order value per session (0 without a purchase).
    pub revenue_per_session: Estimate,
    /// Mean order value over the sessions that bought.
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

/// Runs the test: `arms[0]` is control. `seed` seeds the customers' draws and the intervals.
pub fn simulate_ab(
    ds: &Dataset,
    split: &Split,
    truth: &GroundTruth,
    arms: &[(String, &dyn Ranker)],
    seed: u64,
    resamples: usize,
) -> Result<SimulatedAb> {
    let sessions = test_sessions(ds, split, truth);
    if sessions.is_empty() {
        return Err(EvalError::Empty(format!(
            "split `{}` has no test query from a synthetic search session",
            split.name
        )));
    }
    let Some((control, _)) = arms.first() else {
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
    // Per arm, per session: click, cart, purchase (0/1) and order value.
    let mut outcomes: Vec<[Vec<f64>; 4]> = Vec::with_capacity(arms.len());
    for (name, ranker) in arms {
        let rankings = ranker.rank(&cases, DEPTH)?;
        if rankings.len() != sessions.len() {
            return Err(EvalError::Ranker(format!(
                "{name} returned {} rankings for {} sessions",
                rankings.len(),
                sessions.len()
            )));
        }
        let mut o: [Vec<f64>; 4] = Default::default();
        for (s, ranking) in sessions.iter().zip(&rankings) {
            let mut rng = session_rng(seed, s);
            let r = respond(
                truth,
                &ds.taxonomy,
                &ds.catalog,
                s,
                ranking,
                DEPTH,
                &mut rng,
            );
            o[0].push(f64::from(u8::from(!r.clicks.is_empty())));
            o[1].push(f64::from(u8::from(r.added_to_cart.is_some())));
            o[2].push(f64::from(u8::from(r.converted())));
            o[3].push(if r.converted() {
                r.order_value.unwrap_or(0.0)
            } else {
                0.0
            });
        }
        outcomes.push(o);
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
        .enumerate()
        .map(|(i, ((name, _), o))| {
            let bought: Vec<f64> = o[2]
                .iter()
                .zip(&o[3])
                .filter(|(c, _)| **c > 0.0)
                .map(|(_, v)| *v)
                .collect();
            let treat = i > 0;
            Arm {
                name: name.clone(),
                click_through: est(&o[0], 1),
                add_to_cart: est(&o[1], 2),
                conversion: est(&o[2], 3),
                revenue_per_session: est(&o[3], 4),
                average_order_value: est(&bought, 5),
                conversion_lift: treat.then(|| lift(&o[2], &base[2], 6)),
                add_to_cart_lift: treat.then(|| lift(&o[1], &base[1], 7)),
                revenue_lift: treat.then(|| lift(&o[3], &base[3], 8)),
                p_conversion: treat.then(|| paired_randomization(&o[2], &base[2], 10_000, seed)),
            }
        })
        .collect();
    Ok(SimulatedAb {
        note: SIMULATED_NOTE,
        sessions: sessions.len(),
        depth: DEPTH,
        control: control.clone(),
        arms: out_arms,
    })
}
