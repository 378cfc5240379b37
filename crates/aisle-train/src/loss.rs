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
    // Per query: softmax gradient over [in-batch B | own k negatives], and dL/dz(q_i).
    struct Row {
        loss: f64,
        correct: bool,
        g_in: Vec<f32>,
        g_neg: Vec<f32>,
        dq: Vec<f32>,
    }
    let rows: Vec<Row> = (0..b)
        .into_par_iter()
        .map(|i| {
            let q = &zq[i * d..(i + 1) * d];
            let mut logits = vec![f32::NEG_INFINITY; b + k];
            for (j, l) in logits.iter_mut().enumerate().take(b) {
                if j == i || !masked(i, j) {
                    *l = scale * dot(q, &zc[j * d..(j + 1) * d]);
                }
            }
            for t in 0..k {
                let c = b + i * k + t;
                logits[b + t] = scale * dot(q, &zc[c * d..(c + 1) * d]);
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for l in &logits {
                sum += ((l - max) as f64).exp();
            }
            let lse = max as f64 + sum.ln();
            let loss = lse - logits[i] as f64;
            let correct = logits
                .iter()
                .enumerate()
                .all(|(j, &l)| j == i || l < logits[i]);
            // d loss_i / d l_ij = softmax_ij - [j == i], divided by B for the mean.
            let inv_b = 1.0 / b as f32;
            let mut g: Vec<f32> = logits
                .iter()
                .map(|&l| ((((l - max) as f64).exp() / sum) as f32) * inv_b)
                .collect();
            g[i] -= inv_b;
            let mut dq = vec![0.0f32; d];
            for (j, &gj) in g.iter().enumerate().take(b) {
                if gj != 0.0 {
                    axpy(scale * gj, &zc[j * d..(j + 1) * d], &mut dq);
                }
            }
            for t in 0..k {
                let c = b + i * k + t;
                axpy(scale * g[b + t], &zc[c * d..(c + 1) * d], &mut dq);
            }
            let g_neg = g.split_off(b);
            Row {
                loss,
                correct,
                g_in: g,
                g_neg,
                dq,
            }
        })
        .collect();
    let mut out = LossOutput {
        loss: rows.iter().map(|r| r.loss).sum::<f64>() / b.max(1) as f64,
        accuracy: rows.iter().filter(|r| r.correct).count() as f64 / b.max(1) as f64,
        d_query: Vec::with_capacity(b * d),
        d_candidates: vec![0.0; zc.len()],
    };
    for r in &rows {
        out.d_query.extend_from_slice(&r.dq);
    }
    // In-batch candidate j collects from every query, in query order (deterministic).
    let (d_in, d_neg) = out.d_candidates.split_at_mut(b * d);
    d_in.par_chunks_mut(d).enumerate().for_each(|(j, dc)| {
        for (i, r) in rows.iter().enumerate() {
            let g = r.g_in[j];
            if g != 0.0 {
                axpy(scale * g, &zq[i * d..(i + 1) * d], dc);
            }
        }
    });
    if k > 0 {
        d_neg
            .par_chunks_mut(d * k)
            .enumerate()
            .for_each(|(i, dcs)| {
                let q = &zq[i * d..(i + 1) * d];
                for (t, dc) in dcs.chunks_mut(d).enumerate() {
                    axpy(scale * rows[i].g_neg[t], q, dc);
                }
            });
    }
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
        let (b, k, d) = (3, 2, 4);
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
