//! The multiple-negatives ranking loss (MNRL) of sentence-transformers: the loss both towers
//! train with, on plain buffers, with its gradient. This is aisle's one definition of it.
//!
//! For a batch of `B` queries `q_i`, each is scored against the candidates that every query of
//! the batch sees (the `m >= B` shared candidates `c_1..c_m`, candidate `i` the positive of query
//! `i`) and against its own `k` negatives `n_i1..n_ik`:
//!
//! ```text
//! l_ij = s * q_i . c_j,   row i = [c_1..c_m | n_i1..n_ik]
//! L    = 1/B * sum_i ( logsumexp_{j allowed for i} l_ij  -  l_ii )
//! ```
//!
//! A shared candidate `j != i` that is a positive of query `i` (the same product, or another
//! product relevant to the same query) is masked out of row `i`: it is no negative. The two
//! layouts the callers use:
//!
//! - **aisle's n-gram trainer** (`aisle_train::trainer`, through `aisle_train::loss`): the
//!   shared candidates are the batch's `B` positives (in-batch negatives) and each pair has its
//!   own `k` sampled negatives (TB-HNS and the other samplers), scored against its query only.
//! - **MiniLM fine-tuning** (`aisle_train::transformer`, on the plain-buffer tuner through
//!   `aisle_transformer::Tuner::train_step_with`, or on candle's autograd through
//!   `aisle_transformer::mnrl_loss`, a candle op over this function): `k = 0`, and the shared
//!   candidates are every product of the step (the `B` positives, then the sampled negatives),
//!   as sentence-transformers' MNRL with hard negatives scores them.
//!
//! Why here: aisle-model is the lowest crate both aisle-train (the n-gram trainer) and
//! aisle-transformer (the MiniLM tuner and its candle op) depend on, it owns the plain-buffer
//! `gemm`, `dot` and `axpy` the loss is made of, and it pulls in no candle.
//!
//! The arithmetic, and its order, is the n-gram trainer's, so that its runs stay bit for bit
//! what they were: logits by `gemm` (shared) and `dot` (own negatives) in f32, the log-sum-exp
//! and the softmax's denominator in f64, each row on its own rayon task.

use rayon::prelude::*;

use crate::linalg::{gemm, Mat};
use crate::tower::{axpy, dot};

/// The loss of one batch and its gradients with respect to the vectors ([`mnrl`]).
#[derive(Clone, Debug, Default)]
pub struct LossOutput {
    pub loss: f64,
    /// Fraction of queries whose positive scored highest.
    pub accuracy: f64,
    /// `B x d`: dL/dq_i.
    pub d_query: Vec<f32>,
    /// `(m + B k) x d`: dL/dc_j, in candidate order.
    pub d_candidates: Vec<f32>,
}

/// The loss of one batch, without its gradients ([`mnrl_into`] writes those).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchLoss {
    pub loss: f64,
    /// Fraction of queries whose positive scored highest.
    pub accuracy: f64,
}

/// MNRL and its gradients, in new buffers; see [`mnrl_into`] for the arguments.
pub fn mnrl(
    zq: &[f32],
    zc: &[f32],
    d: usize,
    k: usize,
    scale: f32,
    masked: &(dyn Fn(usize, usize) -> bool + Sync),
) -> LossOutput {
    let mut d_query = vec![0.0; zq.len()];
    let mut d_candidates = vec![0.0; zc.len()];
    let BatchLoss { loss, accuracy } =
        mnrl_into(zq, zc, d, k, scale, masked, &mut d_query, &mut d_candidates);
    LossOutput {
        loss,
        accuracy,
        d_query,
        d_candidates,
    }
}

/// MNRL of a batch, its gradients written into `d_query` and `d_candidates` (every value is
/// overwritten: the buffers may be reused from step to step).
///
/// * `zq`: `B x d` query vectors; `zc`: the candidates, `m x d` shared ones (candidate `i` the
///   positive of query `i`, so `m >= B`) followed by the `k` own negatives of query 0, of query
///   1, ...: `m = zc.len() / d - B k`.
/// * `scale`: the scores are `scale * q . c` (20 in sentence-transformers).
/// * `masked(i, j)`, asked for each shared candidate `j < m`, `j != i`: true when candidate `j`
///   must not count as a negative of query `i`. Own negatives are never masked (the samplers
///   leave out a pair's positives).
/// * `d_query`: `B x d`; `d_candidates`: as long as `zc`.
///
/// # Panics
/// When the lengths do not agree (`m < B`, a buffer that is not a whole number of rows, or
/// gradient buffers of other lengths): programming errors.
#[allow(clippy::too_many_arguments)]
pub fn mnrl_into(
    zq: &[f32],
    zc: &[f32],
    d: usize,
    k: usize,
    scale: f32,
    masked: &(dyn Fn(usize, usize) -> bool + Sync),
    d_query: &mut [f32],
    d_candidates: &mut [f32],
) -> BatchLoss {
    assert!(
        d > 0 && zq.len().is_multiple_of(d) && zc.len().is_multiple_of(d),
        "rows of {d}"
    );
    let b = zq.len() / d;
    let m = (zc.len() / d)
        .checked_sub(b * k)
        .filter(|&m| m >= b)
        .unwrap_or_else(|| {
            panic!(
                "{} candidates for {b} queries with {k} own negatives each",
                zc.len() / d
            )
        });
    assert_eq!(d_query.len(), zq.len(), "d_query length");
    assert_eq!(d_candidates.len(), zc.len(), "d_candidates length");
    if b == 0 {
        d_candidates.fill(0.0);
        return BatchLoss::default();
    }
    let q = Mat::new(zq, b, d);
    let c_in = Mat::new(&zc[..m * d], m, d);
    // Shared logits, B x m: l_ij = s * q_i . c_j.
    let mut l_in = vec![0.0f32; b * m];
    gemm(scale, q, c_in.t(), 0.0, &mut l_in);
    // Per query: the softmax gradient over [shared m | own k negatives], divided by B for the
    // mean, written over its logits; masked entries get 0.
    let inv_b = 1.0 / b as f32;
    // One chunk per query even when k = 0 (a zip with no chunks would drop every row).
    let mut g_neg = vec![0.0f32; b * k.max(1)];
    let rows: Vec<(f64, bool)> = l_in
        .par_chunks_mut(m)
        .zip(g_neg.par_chunks_mut(k.max(1)))
        .enumerate()
        .map(|(i, (g_in, g_own))| {
            let qi = &zq[i * d..(i + 1) * d];
            for (j, l) in g_in.iter_mut().enumerate() {
                if j != i && masked(i, j) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let g_own = &mut g_own[..k];
            for (t, l) in g_own.iter_mut().enumerate() {
                let c = m + i * k + t;
                *l = scale * dot(qi, &zc[c * d..(c + 1) * d]);
            }
            softmax_row(g_in, g_own, i, inv_b)
        })
        .collect();
    let g_in = Mat::new(&l_in, b, m);
    let (d_in, d_neg) = d_candidates.split_at_mut(m * d);
    d_neg.fill(0.0);
    rayon::join(
        || {
            // dL/dq_i = s * (sum_j g_ij c_j + sum_t g_it n_it)
            gemm(scale, g_in, c_in, 0.0, d_query);
            for (i, dq) in d_query.chunks_mut(d).enumerate() {
                for t in 0..k {
                    let c = m + i * k + t;
                    axpy(scale * g_neg[i * k + t], &zc[c * d..(c + 1) * d], dq);
                }
            }
        },
        || {
            // dL/dc_j = s * sum_i g_ij q_i;  dL/dn_it = s * g_it q_i
            gemm(scale, g_in.t(), q, 0.0, d_in);
            for (i, dcs) in d_neg.chunks_mut(d * k.max(1)).enumerate() {
                let qi = &zq[i * d..(i + 1) * d];
                for (t, dc) in dcs.chunks_mut(d).enumerate() {
                    axpy(scale * g_neg[i * k + t], qi, dc);
                }
            }
        },
    );
    BatchLoss {
        loss: rows.iter().map(|r| r.0).sum::<f64>() / b as f64,
        accuracy: rows.iter().filter(|r| r.1).count() as f64 / b as f64,
    }
}

/// One query's row, from scores to loss: `shared` and `own` hold its logits (masked ones
/// `-inf`), its positive at `shared[pos]`. Returns the row's loss (`logsumexp - l_pos`) and
/// whether the positive scored highest, and overwrites the logits with dL/dl divided by `B`
/// (`inv_b`): `(softmax - onehot(pos)) / B`.
fn softmax_row(shared: &mut [f32], own: &mut [f32], pos: usize, inv_b: f32) -> (f64, bool) {
    let l_pos = shared[pos];
    let max = shared
        .iter()
        .chain(own.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = shared
        .iter()
        .chain(own.iter())
        .map(|&l| ((l - max) as f64).exp())
        .sum();
    let loss = max as f64 + sum.ln() - l_pos as f64;
    let correct = shared
        .iter()
        .chain(own.iter())
        .enumerate()
        .all(|(j, &l)| j == pos || l < l_pos);
    for l in shared.iter_mut().chain(own.iter_mut()) {
        *l = ((((*l - max) as f64).exp() / sum) as f32) * inv_b;
    }
    shared[pos] -= inv_b;
    (loss, correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::rng::Rng;

    fn unit_rows(n: usize, d: usize, rng: &mut Rng) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        for r in v.chunks_mut(d) {
            let norm = dot(r, r).sqrt();
            r.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// Central differences of the loss against the gradients, for `b` queries, `m` shared
    /// candidates and `k` own negatives each.
    fn check_gradients(b: usize, m: usize, k: usize, mask: &(dyn Fn(usize, usize) -> bool + Sync)) {
        let d = 4;
        let mut rng = Rng::new(11 + (m * 10 + k) as u64);
        // The queries, then the candidates: one vector, one gradient.
        let mut z = unit_rows(b, d, &mut rng);
        z.extend(unit_rows(m + b * k, d, &mut rng));
        let f = |z: &[f32]| {
            let (zq, zc) = z.split_at(b * d);
            mnrl(zq, zc, d, k, 5.0, mask)
        };
        let out = f(&z);
        let grad: Vec<f32> = out
            .d_query
            .iter()
            .chain(&out.d_candidates)
            .copied()
            .collect();
        let eps = 1e-3f32;
        for i in 0..z.len() {
            let o = z[i];
            z[i] = o + eps;
            let up = f(&z).loss;
            z[i] = o - eps;
            let down = f(&z).loss;
            z[i] = o;
            let num = (up - down) / (2.0 * eps as f64);
            assert!(
                (num - grad[i] as f64).abs() < 1e-3,
                "m {m} k {k}: z[{i}] {num} vs {}",
                grad[i]
            );
        }
        // Candidate 2 is masked for query 0 only: it still gets gradient from queries 1 and 2.
        assert!(out.d_candidates[2 * d..3 * d].iter().any(|&g| g != 0.0));
    }

    #[test]
    fn gradients_match_finite_differences() {
        // The n-gram trainer's layouts: in-batch positives, with and without own negatives.
        let in_batch = |i: usize, j: usize| i == 0 && j == 2;
        check_gradients(3, 3, 0, &in_batch);
        check_gradients(3, 3, 2, &in_batch);
        // MiniLM's: every query against every candidate, a hard negative (5) masked for query 1.
        let shared = |i: usize, j: usize| (i == 0 && j == 2) || (i == 1 && j == 5);
        check_gradients(3, 9, 0, &shared);
    }

    #[test]
    fn masked_candidates_get_no_gradient_from_their_row() {
        let (b, m, d) = (2, 4, 3);
        let mut rng = Rng::new(5);
        let zq = unit_rows(b, d, &mut rng);
        let zc = unit_rows(m, d, &mut rng);
        // Candidate 3 is masked for both queries: no query's softmax reaches it.
        let out = mnrl(&zq, &zc, d, 0, 20.0, &|_, j| j == 3);
        assert!(out.d_candidates[3 * d..].iter().all(|&g| g == 0.0));
        // And the loss is that of the batch without it.
        let without = mnrl(&zq, &zc[..3 * d], d, 0, 20.0, &|_, _| false);
        assert!((out.loss - without.loss).abs() < 1e-12);
    }

    /// Own negatives are shared candidates masked out of every other query's row: the two
    /// layouts are the same loss.
    #[test]
    fn own_negatives_are_masked_shared_candidates() {
        let (b, k, d) = (4, 2, 8);
        let mut rng = Rng::new(3);
        let zq = unit_rows(b, d, &mut rng);
        let zc = unit_rows(b + b * k, d, &mut rng);
        let in_batch = |i: usize, j: usize| i == 1 && j == 3;
        let own = mnrl(&zq, &zc, d, k, 20.0, &in_batch);
        let shared = mnrl(&zq, &zc, d, 0, 20.0, &|i, j| {
            if j < b {
                in_batch(i, j)
            } else {
                (j - b) / k != i
            }
        });
        assert!((own.loss - shared.loss).abs() < 1e-6, "{own:?} {shared:?}");
        assert_eq!(own.accuracy, shared.accuracy);
        for (x, y) in own
            .d_query
            .iter()
            .chain(&own.d_candidates)
            .zip(shared.d_query.iter().chain(&shared.d_candidates))
        {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }

    /// `mnrl_into` overwrites every value of reused buffers: the same bits as fresh ones.
    #[test]
    fn reused_buffers_give_the_same_bits() {
        let (b, k, d) = (3, 2, 5);
        let mut rng = Rng::new(9);
        let zq = unit_rows(b, d, &mut rng);
        let zc = unit_rows(b + b * k, d, &mut rng);
        let fresh = mnrl(&zq, &zc, d, k, 20.0, &|_, _| false);
        let (mut dq, mut dc) = (vec![f32::NAN; zq.len()], vec![f32::NAN; zc.len()]);
        let got = mnrl_into(&zq, &zc, d, k, 20.0, &|_, _| false, &mut dq, &mut dc);
        assert_eq!(got.loss.to_bits(), fresh.loss.to_bits());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dq), bits(&fresh.d_query));
        assert_eq!(bits(&dc), bits(&fresh.d_candidates));
    }

    #[test]
    fn loss_is_low_when_positives_match() {
        let d = 4;
        // Queries equal their positives, and positives are orthogonal.
        let mut zq = vec![0.0f32; 4 * d];
        for i in 0..4 {
            zq[i * d + i] = 1.0;
        }
        let zc = zq.clone();
        let out = mnrl(&zq, &zc, d, 0, 20.0, &|_, _| false);
        assert!(out.loss < 1e-6, "{}", out.loss);
        assert_eq!(out.accuracy, 1.0);
        // With a uniform score the loss is ln(B).
        let flat = vec![0.5f32; 4 * d];
        let out = mnrl(&flat, &flat, d, 0, 1.0, &|_, _| false);
        assert!((out.loss - (4f64).ln()).abs() < 1e-6);
    }

    #[test]
    fn masked_candidates_are_not_negatives() {
        let d = 2;
        // Query 0's positive and candidate 1 are identical: masked, the loss ignores it.
        let zq = vec![1.0, 0.0, 0.0, 1.0];
        let zc = vec![1.0, 0.0, 1.0, 0.0];
        let unmasked = mnrl(&zq, &zc, d, 0, 10.0, &|_, _| false);
        let masked = mnrl(&zq, &zc, d, 0, 10.0, &|i, j| i == 0 && j == 1);
        assert!(masked.loss < unmasked.loss);
    }

    #[test]
    #[should_panic(expected = "2 candidates for 3 queries")]
    fn fewer_candidates_than_queries_is_refused() {
        let _ = mnrl(&[0.0; 6], &[0.0; 4], 2, 0, 1.0, &|_, _| false);
    }
}
