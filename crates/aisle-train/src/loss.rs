//! Multiple-negatives ranking loss (MNRL) with in-batch and sampled hard negatives.
//!
//! For a batch of `B` pairs `(q_i, p_i)` and `k` sampled negatives `n_i1..n_ik` per pair, query
//! `i` is scored against every positive of the batch and its own negatives:
//!
//! ```text
//! l_ij = s * z(q_i) . z(c_j),   c = [p_1..p_B, n_11..n_1k, .., n_B1..n_Bk]
//! L    = 1/B * sum_i ( logsumexp_{j allowed for i} l_ij  -  l_ii )
//! ```
//!
//! In-batch candidates that are positives of query `i` (the same product, or another product
//! relevant to the same normalised query) are masked out: they are not negatives.

use rayon::prelude::*;

use aisle_model::linalg::{gemm, Mat};
use aisle_model::tower::{axpy, dot};

/// The loss of one batch and its gradients with respect to the normalised vectors.
#[derive(Clone, Debug, Default)]
pub struct LossOutput {
    pub loss: f64,
    /// Fraction of queries whose positive scored highest.
    pub accuracy: f64,
    /// `B x d`: dL/dz(q_i).
    pub d_query: Vec<f32>,
    /// `(B + B k) x d`: dL/dz(c_j), in candidate order.
    pub d_candidates: Vec<f32>,
}

/// Computes MNRL and its gradients.
///
/// * `zq`: `B x d` query vectors; `zc`: `(B + B k) x d` candidates (positives first, then the `k`
///   negatives of pair 0, of pair 1, ...).
/// * `masked(i, j)` for `j < B`, `j != i`: true when in-batch candidate `j` must not count as a
///   negative of query `i`.
pub fn mnrl(
    zq: &[f32],
    zc: &[f32],
    d: usize,
    k: usize,
    scale: f32,
    masked: &(dyn Fn(usize, usize) -> bool + Sync),
) -> LossOutput {
    let b = zq.len() / d;
    debug_assert_eq!(zc.len(), (b + b * k) * d);
    let q = Mat::new(zq, b, d);
    let c_in = Mat::new(&zc[..b * d], b, d);
    // In-batch logits, B x B: l_ij = s * q_i . p_j.
    let mut l_in = vec![0.0f32; b * b];
    gemm(scale, q, c_in.t(), 0.0, &mut l_in);
    // Per query: the softmax gradient over [in-batch B | own k negatives], divided by B for the
    // mean, written over its logits; masked entries get 0.
    let inv_b = 1.0 / b as f32;
    // One chunk per query even when k = 0 (a zip with no chunks would drop every row).
    let mut g_neg = vec![0.0f32; b * k.max(1)];
    let rows: Vec<(f64, bool)> = l_in
        .par_chunks_mut(b)
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
                let c = b + i * k + t;
                *l = scale * dot(qi, &zc[c * d..(c + 1) * d]);
            }
            let pos = g_in[i];
            let max = g_in
                .iter()
                .chain(g_own.iter())
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = g_in
                .iter()
                .chain(g_own.iter())
                .map(|&l| ((l - max) as f64).exp())
                .sum();
            let loss = max as f64 + sum.ln() - pos as f64;
            let correct = g_in
                .iter()
                .chain(g_own.iter())
                .enumerate()
                .all(|(j, &l)| j == i || l < pos);
            for l in g_in.iter_mut().chain(g_own.iter_mut()) {
                *l = ((((*l - max) as f64).exp() / sum) as f32) * inv_b;
            }
            g_in[i] -= inv_b;
            (loss, correct)
        })
        .collect();
    let g_in = Mat::new(&l_in, b, b);
    let mut out = LossOutput {
        loss: rows.iter().map(|r| r.0).sum::<f64>() / b.max(1) as f64,
        accuracy: rows.iter().filter(|r| r.1).count() as f64 / b.max(1) as f64,
        d_query: vec![0.0; b * d],
        d_candidates: vec![0.0; zc.len()],
    };
    let (d_in, d_neg) = out.d_candidates.split_at_mut(b * d);
    let d_query = &mut out.d_query;
    rayon::join(
        || {
            // dL/dq_i = s * (sum_j g_ij p_j + sum_t g_it n_it)
            gemm(scale, g_in, c_in, 0.0, d_query);
            for (i, dq) in d_query.chunks_mut(d).enumerate() {
                for t in 0..k {
                    let c = b + i * k + t;
                    axpy(scale * g_neg[i * k + t], &zc[c * d..(c + 1) * d], dq);
                }
            }
        },
        || {
            // dL/dp_j = s * sum_i g_ij q_i;  dL/dn_it = s * g_it q_i
            gemm(scale, g_in.t(), q, 0.0, d_in);
            for (i, dcs) in d_neg.chunks_mut(d * k.max(1)).enumerate() {
                let qi = &zq[i * d..(i + 1) * d];
                for (t, dc) in dcs.chunks_mut(d).enumerate() {
                    axpy(scale * g_neg[i * k + t], qi, dc);
                }
            }
        },
    );
    out
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

    #[test]
    fn gradients_match_finite_differences() {
        for k in [0, 2] {
            check_gradients(k);
        }
    }

    fn check_gradients(k: usize) {
        let (b, d) = (3, 4);
        let mut rng = Rng::new(11);
        let mut zq = unit_rows(b, d, &mut rng);
        let mut zc = unit_rows(b + b * k, d, &mut rng);
        let mask = |i: usize, j: usize| i == 0 && j == 2;
        let out = mnrl(&zq, &zc, d, k, 5.0, &mask);
        let eps = 1e-3f32;
        let f = |zq: &[f32], zc: &[f32]| mnrl(zq, zc, d, k, 5.0, &mask).loss;
        for i in 0..zq.len() {
            let o = zq[i];
            zq[i] = o + eps;
            let up = f(&zq, &zc);
            zq[i] = o - eps;
            let down = f(&zq, &zc);
            zq[i] = o;
            let num = (up - down) / (2.0 * eps as f64);
            assert!(
                (num - out.d_query[i] as f64).abs() < 1e-3,
                "q[{i}] {num} vs {}",
                out.d_query[i]
            );
        }
        for i in 0..zc.len() {
            let o = zc[i];
            zc[i] = o + eps;
            let up = f(&zq, &zc);
            zc[i] = o - eps;
            let down = f(&zq, &zc);
            zc[i] = o;
            let num = (up - down) / (2.0 * eps as f64);
            assert!(
                (num - out.d_candidates[i] as f64).abs() < 1e-3,
                "c[{i}] {num} vs {}",
                out.d_candidates[i]
            );
        }
        // Candidate 2 is masked for query 0 only: it still gets gradient from queries 1 and 2.
        assert!(out.d_candidates[2 * d..3 * d].iter().any(|&g| g != 0.0));
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
}
