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

use aisle_core::rng::Rng;

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

/// What a forward pass keeps for the backward pass of one text.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    /// Pooled embedding.
    pub x: Vec<f32>,
    /// tanh output.
    pub a: Vec<f32>,
    /// |a|.
    pub norm: f32,
    /// Normalised output.
    pub z: Vec<f32>,
}

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
        use rayon::prelude::*;
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

    /// Forward pass of one text, keeping what backward needs.
    pub fn forward(&self, side: Side, ids: &[u32], cache: &mut Cache) {
        let d = self.cfg.dim;
        cache.x.clear();
        cache.x.resize(d, 0.0);
        for &id in ids {
            let row = self.row(id);
            for (xi, ri) in cache.x.iter_mut().zip(row) {
                *xi += ri;
            }
        }
        let w = self.cfg.pooling.weight(ids.len());
        for xi in cache.x.iter_mut() {
            *xi *= w;
        }
        cache.a.clear();
        cache.a.resize(d, 0.0);
        self.heads[self.head_index(side)].forward(&cache.x, &mut cache.a);
        for ai in cache.a.iter_mut() {
            *ai = ai.tanh();
        }
        let norm = dot(&cache.a, &cache.a).sqrt().max(1e-12);
        cache.norm = norm;
        cache.z.clear();
        cache.z.extend(cache.a.iter().map(|ai| ai / norm));
    }

    /// The normalised embedding of one text.
    pub fn encode(&self, side: Side, ids: &[u32]) -> Vec<f32> {
        let mut c = Cache::default();
        self.forward(side, ids, &mut c);
        c.z
    }

    /// Backward pass of one text: given `dz = dL/dz`, adds `dL/dW` and `dL/db` of the side's head
    /// into `grad_head` and returns `dL/dx` in `dx`; the gradient of embedding row `f_i` is then
    /// `pool_weight * dx` for every feature id (the caller accumulates those sparsely).
    pub fn backward(
        &self,
        side: Side,
        cache: &Cache,
        dz: &[f32],
        grad_head: &mut Dense,
        dx: &mut Vec<f32>,
    ) {
        let d = self.cfg.dim;
        let head = &self.heads[self.head_index(side)];
        // z = a / |a|  =>  da = (dz - z (z . dz)) / |a|
        let zdz = dot(&cache.z, dz);
        let mut dh = vec![0.0f32; d];
        for i in 0..d {
            let da = (dz[i] - cache.z[i] * zdz) / cache.norm;
            // a = tanh(h)  =>  dh = da (1 - a^2)
            dh[i] = da * (1.0 - cache.a[i] * cache.a[i]);
        }
        dx.clear();
        dx.resize(d, 0.0);
        for (o, &g) in dh.iter().enumerate() {
            if g == 0.0 {
                continue;
            }
            grad_head.b[o] += g;
            axpy(g, &cache.x, &mut grad_head.w[o * d..(o + 1) * d]);
            axpy(g, &head.w[o * d..(o + 1) * d], dx);
        }
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

    /// L = c . z for a fixed random c.
    fn loss(t: &TwoTower, side: Side, ids: &[u32], c: &[f32]) -> f64 {
        let z = t.encode(side, ids);
        z.iter()
            .zip(c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    fn check_gradients(shared: bool, pooling: Pooling, side: Side) {
        let mut t = tiny(shared, pooling);
        let ids = [1u32, 4, 4, 7];
        let c: Vec<f32> = (0..6).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut cache = Cache::default();
        t.forward(side, &ids, &mut cache);
        let hi = t.head_index(side);
        let mut gh = Dense {
            dim: 6,
            w: vec![0.0; 36],
            b: vec![0.0; 6],
        };
        let mut dx = Vec::new();
        t.backward(side, &cache, &c, &mut gh, &mut dx);
        let pw = pooling.weight(ids.len());
        let eps = 1e-3f32;
        let tol = |analytic: f64, numeric: f64| {
            (analytic - numeric).abs() <= 2e-3 * (1.0 + numeric.abs())
        };
        // Embedding rows: row 4 appears twice.
        for (row, mult) in [(1u32, 1.0f32), (4, 2.0), (7, 1.0)] {
            for (k, &dxk) in dx.iter().enumerate() {
                let i = row as usize * 6 + k;
                let orig = t.emb[i];
                t.emb[i] = orig + eps;
                let up = loss(&t, side, &ids, &c);
                t.emb[i] = orig - eps;
                let down = loss(&t, side, &ids, &c);
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
            let up = loss(&t, side, &ids, &c);
            t.heads[hi].w[i] = orig - eps;
            let down = loss(&t, side, &ids, &c);
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
            let up = loss(&t, side, &ids, &c);
            t.heads[hi].b[i] = orig - eps;
            let down = loss(&t, side, &ids, &c);
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
