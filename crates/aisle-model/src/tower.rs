//! The n-gram two-tower encoder: a shared embedding table, pooling, a dense head per side with a
//! tanh, and L2 normalisation.
//!
//! For a text with feature ids `f_1..f_n` on side `s` (query or product):
//!
//! ```text
//! x = w_n * sum_i E[f_i]          w_n = 1/n (mean) or 1/sqrt(n) (sqrt-n pooling)
//! a = tanh(W_s x + b_s)
//! z = a / |a|
//! ```
//!
//! and the score of a query and a product is `scale * z_q . z_p` (cosine times a scale). The
//! backward pass sits beside the forward pass; a finite-difference test checks both.

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use aisle_core::rng::Rng;

use crate::linalg::{gemm, Mat};

/// How feature embeddings are pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Mean,
    SqrtN,
}

impl Pooling {
    #[inline]
    pub fn weight(self, n: usize) -> f32 {
        if n == 0 {
            return 0.0;
        }
        match self {
            Pooling::Mean => 1.0 / n as f32,
            Pooling::SqrtN => 1.0 / (n as f32).sqrt(),
        }
    }
}

/// Which tower a text goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Query,
    Product,
}

/// Shape of the towers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TowerConfig {
    /// Embedding and output dimension.
    pub dim: usize,
    pub pooling: Pooling,
    /// One dense head for both sides instead of one per side.
    pub shared_head: bool,
    /// Standard deviation of the initial embeddings.
    pub init_std: f32,
    /// Seed of the initial embeddings (row `r` is drawn from its own stream, so untouched rows
    /// can be regenerated instead of stored).
    pub seed: u64,
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig {
            dim: 128,
            pooling: Pooling::SqrtN,
            shared_head: false,
            init_std: 0.1,
            seed: 42,
        }
    }
}

/// A dense layer `W x + b` with `W` stored row-major as `[out][in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub dim: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Dense {
    /// The identity map: both sides start as the pooled embedding itself.
    pub fn identity(dim: usize) -> Dense {
        let mut w = vec![0.0; dim * dim];
        for i in 0..dim {
            w[i * dim + i] = 1.0;
        }
        Dense {
            dim,
            w,
            b: vec![0.0; dim],
        }
    }

    /// `out = W x + b`.
    #[inline]
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let d = self.dim;
        for (o, out_o) in out.iter_mut().enumerate().take(d) {
            *out_o = self.b[o] + dot(&self.w[o * d..(o + 1) * d], x);
        }
    }
}

/// `a . b`, written so that the compiler vectorises it (eight independent accumulators).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0.0;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s + acc.iter().sum::<f32>()
}

/// How many feature ids ahead the pooling loop prefetches: the rows a step reads are scattered
/// over a table far larger than the caches, so each read would otherwise wait on memory
/// (`aisle bench train` measured the forward pass; see docs/training.md).
pub const PREFETCH_AHEAD: usize = 4;

/// Asks the CPU to bring `row` into cache (a hint: it never faults and changes no value).
#[inline(always)]
pub fn prefetch(row: &[f32]) {
    prefetch_ptr(row.as_ptr(), row.len());
}

/// [`prefetch`] of the `len` floats at `p`; `p` need not be valid (a prefetch cannot fault).
#[inline(always)]
pub fn prefetch_ptr(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in (0..len).step_by(16) {
            // SAFETY: prefetch is a hint that reads nothing architecturally and cannot fault,
            // whatever the address; `wrapping_add` computes it without claiming validity. SSE is
            // part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// The parameters of both towers.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoTower {
    pub cfg: TowerConfig,
    /// `rows x dim` embedding table, row-major.
    pub emb: Vec<f32>,
    pub rows: usize,
    /// Heads: `heads[0]` is the query head; `heads[1]` the product head unless shared.
    pub heads: Vec<Dense>,
}

/// What a forward pass over `n` texts keeps for the backward pass: row-major `n x dim` matrices.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    pub n: usize,
    /// Pooled embeddings.
    pub x: Vec<f32>,
    /// tanh outputs.
    pub a: Vec<f32>,
    /// |a| of each row.
    pub norm: Vec<f32>,
    /// Normalised outputs.
    pub z: Vec<f32>,
}

impl Cache {
    /// Output row `i`.
    pub fn z_row(&self, i: usize) -> &[f32] {
        let d = self.z.len() / self.n.max(1);
        &self.z[i * d..(i + 1) * d]
    }
}

/// Rows per parallel task of the batched passes: fixed, so that results do not depend on the
/// number of threads.
const BLOCK: usize = 32;

/// Initial value of embedding row `r`: uniform with standard deviation `init_std` (uniform rather
/// than normal because a 2^20 x 128 table is 134M draws, and a uniform draw is a multiply).
pub fn init_row(cfg: &TowerConfig, r: usize, out: &mut [f32]) {
    let mut rng = Rng::stream(cfg.seed, r as u64);
    let half_width = cfg.init_std * 3f32.sqrt();
    for v in out.iter_mut() {
        *v = ((rng.f64() as f32) * 2.0 - 1.0) * half_width;
    }
}

impl TwoTower {
    /// Fresh parameters: embeddings from the seed, identity heads.
    pub fn new(cfg: TowerConfig, rows: usize) -> TwoTower {
        let d = cfg.dim;
        let mut emb = vec![0.0f32; rows * d];
        emb.par_chunks_mut(d)
            .enumerate()
            .for_each(|(r, row)| init_row(&cfg, r, row));
        let n_heads = if cfg.shared_head { 1 } else { 2 };
        TwoTower {
            heads: (0..n_heads).map(|_| Dense::identity(d)).collect(),
            emb,
            rows,
            cfg,
        }
    }

    pub fn dim(&self) -> usize {
        self.cfg.dim
    }

    /// Index into `heads` of a side.
    #[inline]
    pub fn head_index(&self, side: Side) -> usize {
        match side {
            Side::Query => 0,
            Side::Product => self.heads.len() - 1,
        }
    }

    #[inline]
    pub fn row(&self, r: u32) -> &[f32] {
        let d = self.cfg.dim;
        &self.emb[r as usize * d..(r as usize + 1) * d]
    }

    /// Forward pass of `texts` (feature ids each) on `side`, keeping what backward needs.
    pub fn forward(&self, side: Side, texts: &[&[u32]], cache: &mut Cache) {
        let d = self.cfg.dim;
        let n = texts.len();
        cache.n = n;
        for m in [&mut cache.x, &mut cache.a, &mut cache.z] {
            m.clear();
            m.resize(n * d, 0.0);
        }
        cache.norm.clear();
        cache.norm.resize(n, 0.0);
        let head = &self.heads[self.head_index(side)];
        let w_t = Mat::new(&head.w, d, d).t();
        cache
            .x
            .par_chunks_mut(BLOCK * d)
            .zip(cache.a.par_chunks_mut(BLOCK * d))
            .zip(cache.z.par_chunks_mut(BLOCK * d))
            .zip(cache.norm.par_chunks_mut(BLOCK))
            .enumerate()
            .for_each(|(blk, (((x, a), z), norm))| {
                let rows = norm.len();
                // x = w_n * sum_i E[f_i]
                for (r, xr) in x.chunks_mut(d).enumerate() {
                    let ids = texts[blk * BLOCK + r];
                    for (j, &id) in ids.iter().enumerate() {
                        if let Some(&ahead) = ids.get(j + PREFETCH_AHEAD) {
                            prefetch(self.row(ahead));
                        }
                        for (xi, ei) in xr.iter_mut().zip(self.row(id)) {
                            *xi += ei;
                        }
                    }
                    let w = self.cfg.pooling.weight(ids.len());
                    for xi in xr.iter_mut() {
                        *xi *= w;
                    }
                }
                // a = tanh(x W^T + b)
                for ar in a.chunks_mut(d) {
                    ar.copy_from_slice(&head.b);
                }
                gemm(1.0, Mat::new(x, rows, d), w_t, 1.0, a);
                for ((ar, zr), nr) in a.chunks_mut(d).zip(z.chunks_mut(d)).zip(norm.iter_mut()) {
                    for ai in ar.iter_mut() {
                        *ai = ai.tanh();
                    }
                    // z = a / |a|
                    *nr = dot(ar, ar).sqrt().max(1e-12);
                    for (zi, ai) in zr.iter_mut().zip(ar.iter()) {
                        *zi = ai / *nr;
                    }
                }
            });
    }

    /// The normalised embedding of one text.
    pub fn encode(&self, side: Side, ids: &[u32]) -> Vec<f32> {
        let mut c = Cache::default();
        self.forward(side, &[ids], &mut c);
        c.z
    }

    /// Backward pass of a forward pass over `n` texts: given `dz = dL/dz` (`n x dim`), adds
    /// `dL/dW` and `dL/db` of the side's head into `grad_head` and writes `dL/dx` (`n x dim`) into
    /// `dx`; the gradient of embedding row `f` of text `t` is then `pool_weight(t) * dx[t]` for
    /// every occurrence of `f` in `t` (the caller accumulates those sparsely).
    pub fn backward(
        &self,
        side: Side,
        cache: &Cache,
        dz: &[f32],
        grad_head: &mut Dense,
        dx: &mut Vec<f32>,
    ) {
        let d = self.cfg.dim;
        let n = cache.n;
        let head = &self.heads[self.head_index(side)];
        // z = a / |a|  =>  da = (dz - z (z . dz)) / |a|;  a = tanh(h)  =>  dh = da (1 - a^2)
        let mut dh = vec![0.0f32; n * d];
        dh.par_chunks_mut(BLOCK * d)
            .enumerate()
            .for_each(|(blk, out)| {
                for (r, dhr) in out.chunks_mut(d).enumerate() {
                    let t = blk * BLOCK + r;
                    let (z, a) = (&cache.z[t * d..(t + 1) * d], &cache.a[t * d..(t + 1) * d]);
                    let g = &dz[t * d..(t + 1) * d];
                    let zdz = dot(z, g);
                    let norm = cache.norm[t];
                    for i in 0..d {
                        dhr[i] = (g[i] - z[i] * zdz) / norm * (1.0 - a[i] * a[i]);
                    }
                }
            });
        dx.clear();
        dx.resize(n * d, 0.0);
        let dh_m = Mat::new(&dh, n, d);
        let w = Mat::new(&head.w, d, d);
        rayon::join(
            || {
                // dW += dh^T x;  db += column sums of dh
                gemm(
                    1.0,
                    dh_m.t(),
                    Mat::new(&cache.x, n, d),
                    1.0,
                    &mut grad_head.w,
                );
                for row in dh.chunks(d) {
                    for (b, g) in grad_head.b.iter_mut().zip(row) {
                        *b += g;
                    }
                }
            },
            || {
                // dx = dh W
                dx.par_chunks_mut(BLOCK * d)
                    .enumerate()
                    .for_each(|(blk, out)| {
                        let rows = out.len() / d;
                        let start = blk * BLOCK * d;
                        let block = Mat::new(&dh[start..start + rows * d], rows, d);
                        gemm(1.0, block, w, 0.0, out);
                    });
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(shared: bool, pooling: Pooling) -> TwoTower {
        let cfg = TowerConfig {
            dim: 6,
            pooling,
            shared_head: shared,
            init_std: 0.5,
            seed: 9,
        };
        let mut t = TwoTower::new(cfg, 10);
        // Non-trivial heads so that every term of the backward pass is exercised.
        let mut rng = Rng::new(3);
        for h in &mut t.heads {
            for w in &mut h.w {
                *w += (rng.normal() as f32) * 0.3;
            }
            for b in &mut h.b {
                *b = (rng.normal() as f32) * 0.1;
            }
        }
        t
    }

    /// A batch of 40 texts (more than one parallel block): text 0 holds rows 1, 4 (twice) and
    /// 7, which no other text holds.
    fn batch() -> Vec<Vec<u32>> {
        let others = [0u32, 2, 3, 5, 6, 8, 9];
        let mut texts = vec![vec![1u32, 4, 4, 7]];
        for t in 1..40usize {
            texts.push((0..1 + t % 4).map(|i| others[(t * 3 + i) % 7]).collect());
        }
        texts
    }

    /// L = sum_t c_t . z_t for fixed c.
    fn loss(t: &TwoTower, side: Side, texts: &[Vec<u32>], c: &[f32]) -> f64 {
        let refs: Vec<&[u32]> = texts.iter().map(|v| v.as_slice()).collect();
        let mut cache = Cache::default();
        t.forward(side, &refs, &mut cache);
        cache
            .z
            .iter()
            .zip(c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    fn check_gradients(shared: bool, pooling: Pooling, side: Side) {
        let mut t = tiny(shared, pooling);
        let texts = batch();
        let refs: Vec<&[u32]> = texts.iter().map(|v| v.as_slice()).collect();
        let c: Vec<f32> = (0..6 * texts.len())
            .map(|i| (i as f32 * 0.7).sin())
            .collect();
        let mut cache = Cache::default();
        t.forward(side, &refs, &mut cache);
        let hi = t.head_index(side);
        let mut gh = Dense {
            dim: 6,
            w: vec![0.0; 36],
            b: vec![0.0; 6],
        };
        let mut dx = Vec::new();
        t.backward(side, &cache, &c, &mut gh, &mut dx);
        assert_eq!(dx.len(), 6 * texts.len());
        let pw = pooling.weight(texts[0].len());
        let eps = 1e-3f32;
        let tol = |analytic: f64, numeric: f64| {
            (analytic - numeric).abs() <= 2e-3 * (1.0 + numeric.abs())
        };
        // Embedding rows of text 0: row 4 appears twice.
        for (row, mult) in [(1u32, 1.0f32), (4, 2.0), (7, 1.0)] {
            for (k, &dxk) in dx[..6].iter().enumerate() {
                let i = row as usize * 6 + k;
                let orig = t.emb[i];
                t.emb[i] = orig + eps;
                let up = loss(&t, side, &texts, &c);
                t.emb[i] = orig - eps;
                let down = loss(&t, side, &texts, &c);
                t.emb[i] = orig;
                let numeric = (up - down) / (2.0 * eps as f64);
                let analytic = (mult * pw * dxk) as f64;
                assert!(
                    tol(analytic, numeric),
                    "emb[{row}][{k}]: {analytic} vs {numeric}"
                );
            }
        }
        for i in 0..36 {
            let orig = t.heads[hi].w[i];
            t.heads[hi].w[i] = orig + eps;
            let up = loss(&t, side, &texts, &c);
            t.heads[hi].w[i] = orig - eps;
            let down = loss(&t, side, &texts, &c);
            t.heads[hi].w[i] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            assert!(
                tol(gh.w[i] as f64, numeric),
                "w[{i}]: {} vs {numeric}",
                gh.w[i]
            );
        }
        for i in 0..6 {
            let orig = t.heads[hi].b[i];
            t.heads[hi].b[i] = orig + eps;
            let up = loss(&t, side, &texts, &c);
            t.heads[hi].b[i] = orig - eps;
            let down = loss(&t, side, &texts, &c);
            t.heads[hi].b[i] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            assert!(
                tol(gh.b[i] as f64, numeric),
                "b[{i}]: {} vs {numeric}",
                gh.b[i]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for pooling in [Pooling::Mean, Pooling::SqrtN] {
            for side in [Side::Query, Side::Product] {
                check_gradients(false, pooling, side);
                check_gradients(true, pooling, side);
            }
        }
    }

    #[test]
    fn output_is_unit_length_and_deterministic() {
        let t = TwoTower::new(TowerConfig::default(), 1000);
        let z = t.encode(Side::Query, &[1, 2, 3]);
        assert!((dot(&z, &z) - 1.0).abs() < 1e-5);
        let t2 = TwoTower::new(TowerConfig::default(), 1000);
        assert_eq!(t.emb, t2.emb);
        // Identity heads: both sides agree before training.
        assert_eq!(z, t.encode(Side::Product, &[1, 2, 3]));
        // A text encodes the same alone and inside a batch.
        let texts: Vec<Vec<u32>> = (0..70u32).map(|i| vec![i, i + 1, 2 * i]).collect();
        let refs: Vec<&[u32]> = texts.iter().map(|v| v.as_slice()).collect();
        let mut cache = Cache::default();
        t.forward(Side::Query, &refs, &mut cache);
        for (i, ids) in refs.iter().enumerate() {
            let alone = t.encode(Side::Query, ids);
            for (a, b) in alone.iter().zip(cache.z_row(i)) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn rows_regenerate_from_the_seed() {
        let t = TwoTower::new(TowerConfig::default(), 50);
        let mut row = vec![0.0; 128];
        init_row(&t.cfg, 37, &mut row);
        assert_eq!(row.as_slice(), t.row(37));
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        let b = vec![1.0f32; 13];
        assert_eq!(dot(&a, &b), 78.0);
    }
}
