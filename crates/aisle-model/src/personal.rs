//! The personalized query tower: what a customer bought before, read in the light of the query.
//!
//! For a query vector `q` (unit length, from the query tower) and the vectors `h_1..h_n` of the
//! customer's earlier products (unit length, from the product tower), with interaction weights
//! `w_j` (a purchase counts more than a click):
//!
//! ```text
//! e_0 = b0                              the zero slot: attending to nothing (Ai et al., CIKM 2019)
//! e_j = tau * (q . h_j) + ln w_j
//! a   = softmax(e_0, e_1, .., e_n)
//! u   = sum_j a_j h_j                   the zero slot adds nothing
//! g   = sigmoid(v_q . q + v_u . u + c)  how much of u to add
//! q'  = (q + g u) / |q + g u|
//! ```
//!
//! Customer features (a segment, an age band; [`crate::demographics`]) join the history as more
//! slots: feature `k` has the vector `s_k` (a row of a hashed table, scaled) and the logit
//! `tau * (q . s_k) + b_f`, so that `u` reads features and purchases in one attention, and a
//! customer with no history but known features still gets a personalized query.
//!
//! With no history and no feature, `q'` is `q` itself, bit for bit (the function returns it
//! untouched); a tower trained on customers without features has no table and is the
//! history-only tower. The backward pass sits beside the forward pass; a finite-difference test
//! checks every gradient.

/// Earlier interactions a personalized tower reads per query unless its configuration says
/// otherwise (the most recent): the one default of training, serving and evaluation.
pub const HISTORY_WINDOW: usize = 50;

use serde::{Deserialize, Serialize};

use aisle_core::{Histories, Interaction, Kind, UserId};

use crate::demographics::{Demographics, Feature};
use crate::tower::{axpy, dot};

/// How much an earlier interaction says about the customer: a purchase most, a view least.
pub fn kind_weight(kind: Kind) -> f32 {
    match kind {
        Kind::Purchase => 1.0,
        Kind::AddToCart => 0.7,
        Kind::Click => 0.5,
        Kind::View => 0.3,
    }
}

/// The vectors (`n x dim`, from `items`, the catalog's product vectors) and weights of the
/// customer's last `n` training interactions strictly before `before`; empty for no user, an
/// unknown user or no history. `histories` holds training interactions only, so nothing held
/// out can enter; `interactions` are the dataset's, which its indices point into.
pub fn history_of(
    interactions: &[Interaction],
    histories: &Histories,
    items: &[f32],
    dim: usize,
    user: Option<UserId>,
    before: i64,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let Some(user) = user else {
        return (Vec::new(), Vec::new());
    };
    let events = histories.before(user, before, n);
    let mut vectors = Vec::with_capacity(events.len() * dim);
    let mut weights = Vec::with_capacity(events.len());
    for &i in events {
        let e = &interactions[i as usize];
        let p = e.product.index();
        vectors.extend_from_slice(&items[p * dim..(p + 1) * dim]);
        weights.push(kind_weight(e.kind));
    }
    (vectors, weights)
}

/// Settings of the personalized query tower, as training used them and the model file records
/// them ([`crate::meta::ModelMeta::personalize`]): serving reads `history` from here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalizeConfig {
    /// At most this many earlier interactions per customer (the most recent).
    pub history: usize,
    /// Steps between re-encodings of the catalog, whose vectors stand for history items.
    pub refresh: u64,
    /// Learning rate of the personalizer's parameters (Adam).
    pub lr: f32,
    /// How the attended history joins the query: gated sum or concat + projection.
    pub fusion: Fusion,
    /// Read the customers' features (segment and the other `users` columns) beside their
    /// history. Customers without any feature leave the tower history-only, bit for bit.
    pub demographics: bool,
}

impl Default for PersonalizeConfig {
    fn default() -> Self {
        PersonalizeConfig {
            history: HISTORY_WINDOW,
            refresh: 100,
            lr: 0.01,
            fusion: Fusion::Gated,
            demographics: true,
        }
    }
}

/// How the attended history `u` joins the query vector `q`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// `q' = normalize(q + g u)`, `g = sigmoid(v_q . q + v_u . u + c)`.
    #[default]
    Gated,
    /// `q' = normalize(W [q; u] + b)`, `W` starting as `[I 0]`.
    Concat,
}

impl std::fmt::Display for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fusion::Gated => "gated",
            Fusion::Concat => "concat",
        })
    }
}

impl std::str::FromStr for Fusion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gated" => Ok(Fusion::Gated),
            "concat" => Ok(Fusion::Concat),
            _ => Err(format!("`{s}`: expected gated or concat")),
        }
    }
}

/// The personalizer's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Personalizer {
    #[serde(default)]
    pub fusion: Fusion,
    /// Logit of the zero slot.
    pub b0: f32,
    /// Attention sharpness.
    pub tau: f32,
    /// Gated fusion: gate weights on `q` and on `u`, and its bias.
    pub v_q: Vec<f32>,
    pub v_u: Vec<f32>,
    pub c: f32,
    /// Concat fusion: `dim x 2 dim` projection, row-major, and its bias (empty when gated).
    #[serde(default)]
    pub w: Vec<f32>,
    #[serde(default)]
    pub bw: Vec<f32>,
    /// Customer features read beside the history (`None`: history only; left out of the file
    /// then, so that such a model's file is what it was before features existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demographics: Option<Demographics>,
}

/// What the forward pass keeps for the backward pass of one query.
#[derive(Clone, Debug, Default)]
pub struct PersonalCache {
    /// Attention over [zero slot, h_1..h_n].
    pub a: Vec<f32>,
    pub u: Vec<f32>,
    /// The gate (gated fusion).
    pub g: f32,
    pub norm: f32,
    /// The output q'.
    pub out: Vec<f32>,
    /// The customer-feature slots' vectors (`m x dim`; their attention is `a[1 + n..]`).
    pub slots: Vec<f32>,
}

/// Gradients of the personalizer's parameters (same shapes).
pub type PersonalGrad = Personalizer;

impl Personalizer {
    /// Starts attending mildly, with the zero slot as likely as an average item; the gate at one
    /// half, or the projection passing `q` through.
    pub fn new(dim: usize, fusion: Fusion) -> Personalizer {
        let (w, bw) = match fusion {
            Fusion::Gated => (Vec::new(), Vec::new()),
            Fusion::Concat => {
                let mut w = vec![0.0; dim * 2 * dim];
                for i in 0..dim {
                    w[i * 2 * dim + i] = 1.0;
                }
                (w, vec![0.0; dim])
            }
        };
        Personalizer {
            fusion,
            b0: 0.0,
            tau: 5.0,
            v_q: vec![0.0; dim],
            v_u: vec![0.0; dim],
            c: 0.0,
            w,
            bw,
            demographics: None,
        }
    }

    /// Zero gradients of this shape.
    pub fn zeros_like(&self) -> PersonalGrad {
        Personalizer {
            fusion: self.fusion,
            b0: 0.0,
            tau: 0.0,
            v_q: vec![0.0; self.v_q.len()],
            v_u: vec![0.0; self.v_u.len()],
            c: 0.0,
            w: vec![0.0; self.w.len()],
            bw: vec![0.0; self.bw.len()],
            demographics: self.demographics.as_ref().map(Demographics::zeros_like),
        }
    }

    /// Number of parameters (for the optimiser's flat view).
    pub fn len(&self) -> usize {
        3 + self.v_q.len()
            + self.v_u.len()
            + self.w.len()
            + self.bw.len()
            + self.demographics.as_ref().map_or(0, |d| 1 + d.table.len())
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when the shapes fit vectors of `dim`.
    pub fn fits(&self, dim: usize) -> bool {
        let concat = match self.fusion {
            Fusion::Gated => self.w.is_empty() && self.bw.is_empty(),
            Fusion::Concat => self.w.len() == 2 * dim * dim && self.bw.len() == dim,
        };
        self.v_q.len() == dim
            && self.v_u.len() == dim
            && concat
            && self.demographics.as_ref().is_none_or(|d| d.fits(dim))
    }

    /// The parameters as one flat vector: b0, tau, c, v_q, v_u, w, bw, then the features'
    /// bias and table.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut v = vec![self.b0, self.tau, self.c];
        for part in [&self.v_q, &self.v_u, &self.w, &self.bw] {
            v.extend_from_slice(part);
        }
        if let Some(d) = &self.demographics {
            v.push(d.bias);
            v.extend_from_slice(&d.table);
        }
        v
    }

    /// Sets the parameters from [`to_flat`](Self::to_flat)'s layout.
    pub fn set_flat(&mut self, v: &[f32]) {
        self.b0 = v[0];
        self.tau = v[1];
        self.c = v[2];
        let mut at = 3;
        for part in [&mut self.v_q, &mut self.v_u, &mut self.w, &mut self.bw] {
            let n = part.len();
            part.copy_from_slice(&v[at..at + n]);
            at += n;
        }
        if let Some(d) = &mut self.demographics {
            d.bias = v[at];
            let n = d.table.len();
            d.table.copy_from_slice(&v[at + 1..at + 1 + n]);
        }
    }

    /// The features of `user` this tower reads (none without a feature table).
    pub fn features(&self, user: &aisle_core::User) -> Vec<Feature> {
        self.demographics
            .as_ref()
            .map_or_else(Vec::new, |d| d.features(user))
    }

    /// `q'` for query vector `q` and history vectors `history` (`n x dim`, row-major) with
    /// weights `weights` (`n`, each > 0). Returns `q` unchanged when the history is empty.
    pub fn forward(&self, q: &[f32], history: &[f32], weights: &[f32], cache: &mut PersonalCache) {
        self.forward_with(q, history, weights, &[], cache)
    }

    /// [`forward`](Self::forward) reading the customer's `features` too (ignored by a tower
    /// without a feature table). Returns `q` unchanged when there is neither history nor
    /// feature.
    pub fn forward_with(
        &self,
        q: &[f32],
        history: &[f32],
        weights: &[f32],
        features: &[Feature],
        cache: &mut PersonalCache,
    ) {
        let d = q.len();
        let n = weights.len();
        cache.out.clear();
        cache.slots.clear();
        let demo = self.demographics.as_ref().filter(|_| !features.is_empty());
        if n == 0 && demo.is_none() {
            cache.a.clear();
            cache.u.clear();
            cache.g = 0.0;
            cache.norm = 1.0;
            cache.out.extend_from_slice(q);
            return;
        }
        cache.a.clear();
        cache.a.push(self.b0);
        for (h, w) in history.chunks(d).zip(weights) {
            cache.a.push(self.tau * dot(q, h) + w.ln());
        }
        if let Some(dm) = demo {
            dm.slots(features, d, &mut cache.slots);
            for s in cache.slots.chunks(d) {
                cache.a.push(self.tau * dot(q, s) + dm.bias);
            }
        }
        let max = cache.a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for e in cache.a.iter_mut() {
            *e = (*e - max).exp();
            sum += *e;
        }
        for e in cache.a.iter_mut() {
            *e /= sum;
        }
        cache.u.clear();
        cache.u.resize(d, 0.0);
        for (h, &a) in history
            .chunks(d)
            .chain(cache.slots.chunks(d))
            .zip(&cache.a[1..])
        {
            axpy(a, h, &mut cache.u);
        }
        match self.fusion {
            Fusion::Gated => {
                let s = dot(&self.v_q, q) + dot(&self.v_u, &cache.u) + self.c;
                cache.g = 1.0 / (1.0 + (-s).exp());
                cache
                    .out
                    .extend(q.iter().zip(&cache.u).map(|(qi, ui)| qi + cache.g * ui));
            }
            Fusion::Concat => {
                for o in 0..d {
                    let row = &self.w[o * 2 * d..(o + 1) * 2 * d];
                    cache
                        .out
                        .push(self.bw[o] + dot(&row[..d], q) + dot(&row[d..], &cache.u));
                }
            }
        }
        cache.norm = dot(&cache.out, &cache.out).sqrt().max(1e-12);
        for x in cache.out.iter_mut() {
            *x /= cache.norm;
        }
    }

    /// Personalizes a batch of query vectors in place (`queries`: rows of `dim`), in parallel:
    /// row `i` is read with the history and the features of `who(i)` = (customer, cut-off), the
    /// features from `users`. Rows with no customer, or with neither history nor feature, stay
    /// as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn personalize_rows(
        &self,
        queries: &mut [f32],
        items: &[f32],
        interactions: &[Interaction],
        users: &aisle_core::Users,
        histories: &Histories,
        n: usize,
        who: impl Fn(usize) -> (Option<UserId>, i64) + Sync,
    ) {
        use rayon::prelude::*;
        let d = self.v_q.len();
        queries.par_chunks_mut(d).enumerate().for_each_init(
            PersonalCache::default,
            |cache, (i, q)| {
                let (user, before) = who(i);
                let (h, w) = history_of(interactions, histories, items, d, user, before, n);
                let features = user.map_or_else(Vec::new, |u| self.features(users.get(u)));
                self.forward_with(q, &h, &w, &features, cache);
                q.copy_from_slice(&cache.out);
            },
        );
    }

    /// Backward of [`forward`](Self::forward): given `d_out = dL/dq'`, adds the parameters'
    /// gradients into `grad` and writes `dL/dq` into `dq`. With an empty history `dq = d_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        q: &[f32],
        history: &[f32],
        weights: &[f32],
        cache: &PersonalCache,
        d_out: &[f32],
        grad: &mut PersonalGrad,
        dq: &mut Vec<f32>,
    ) {
        self.backward_with(q, history, weights, &[], cache, d_out, grad, dq)
    }

    /// Backward of [`forward_with`](Self::forward_with), with the same `features`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with(
        &self,
        q: &[f32],
        history: &[f32],
        weights: &[f32],
        features: &[Feature],
        cache: &PersonalCache,
        d_out: &[f32],
        grad: &mut PersonalGrad,
        dq: &mut Vec<f32>,
    ) {
        let d = q.len();
        dq.clear();
        if cache.a.is_empty() {
            // Neither history nor feature: q' was q.
            dq.extend_from_slice(d_out);
            return;
        }
        // q' = p / |p|
        let od = dot(&cache.out, d_out);
        let dp: Vec<f32> = d_out
            .iter()
            .zip(&cache.out)
            .map(|(g, o)| (g - o * od) / cache.norm)
            .collect();
        let mut du = vec![0.0f32; d];
        match self.fusion {
            Fusion::Gated => {
                // p = q + g u, g = sigmoid(s)
                dq.extend_from_slice(&dp);
                axpy(cache.g, &dp, &mut du);
                let ds = dot(&dp, &cache.u) * cache.g * (1.0 - cache.g);
                axpy(ds, q, &mut grad.v_q);
                axpy(ds, &cache.u, &mut grad.v_u);
                grad.c += ds;
                axpy(ds, &self.v_q, dq);
                axpy(ds, &self.v_u, &mut du);
            }
            Fusion::Concat => {
                // p = W [q; u] + b
                dq.resize(d, 0.0);
                for (o, &g) in dp.iter().enumerate() {
                    grad.bw[o] += g;
                    let gw = &mut grad.w[o * 2 * d..(o + 1) * 2 * d];
                    axpy(g, q, &mut gw[..d]);
                    axpy(g, &cache.u, &mut gw[d..]);
                    let row = &self.w[o * 2 * d..(o + 1) * 2 * d];
                    axpy(g, &row[..d], dq);
                    axpy(g, &row[d..], &mut du);
                }
            }
        }
        // u = sum_j a_j h_j + sum_k a_k s_k, then the softmax.
        let da: Vec<f32> = std::iter::once(0.0)
            .chain(
                history
                    .chunks(d)
                    .chain(cache.slots.chunks(d))
                    .map(|h| dot(&du, h)),
            )
            .collect();
        let mean = dot(&cache.a, &da);
        grad.b0 += cache.a[0] * (da[0] - mean);
        let n = weights.len();
        for (j, h) in history.chunks(d).enumerate() {
            let de = cache.a[j + 1] * (da[j + 1] - mean);
            // e_j = tau (q . h_j) + ln w_j
            grad.tau += de * dot(q, h);
            axpy(de * self.tau, h, dq);
        }
        if let (Some(gd), false) = (grad.demographics.as_mut(), cache.slots.is_empty()) {
            for ((k, s), f) in cache.slots.chunks(d).enumerate().zip(features) {
                let a = cache.a[1 + n + k];
                let de = a * (da[1 + n + k] - mean);
                // e_k = tau (q . s_k) + b_f, s_k = scale_k * T[row_k]
                grad.tau += de * dot(q, s);
                gd.bias += de;
                axpy(de * self.tau, s, dq);
                let row = &mut gd.table[f.row as usize * d..(f.row as usize + 1) * d];
                axpy(a * f.scale, &du, row);
                axpy(de * self.tau * f.scale, q, row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::rng::Rng;

    fn unit(d: usize, rng: &mut Rng) -> Vec<f32> {
        let mut v: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn setup(fusion: Fusion) -> (Personalizer, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = 5;
        let mut rng = Rng::new(4);
        let mut p = Personalizer::new(d, fusion);
        for w in p.w.iter_mut().chain(p.bw.iter_mut()) {
            *w += rng.normal() as f32 * 0.3;
        }
        p.b0 = 0.3;
        p.tau = 2.0;
        p.c = -0.2;
        p.v_q = (0..d).map(|_| rng.normal() as f32 * 0.5).collect();
        p.v_u = (0..d).map(|_| rng.normal() as f32 * 0.5).collect();
        let q = unit(d, &mut rng);
        let history: Vec<f32> = (0..3).flat_map(|_| unit(d, &mut rng)).collect();
        let weights = vec![1.0, 0.5, 0.8];
        let c: Vec<f32> = (0..d).map(|i| (i as f32 * 0.9).cos()).collect();
        (p, q, history, weights, c)
    }

    fn loss(p: &Personalizer, q: &[f32], h: &[f32], w: &[f32], f: &[Feature], c: &[f32]) -> f64 {
        let mut cache = PersonalCache::default();
        p.forward_with(q, h, w, f, &mut cache);
        cache
            .out
            .iter()
            .zip(c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        for fusion in [Fusion::Gated, Fusion::Concat] {
            check_gradients(fusion, false, true);
            // Customer features beside the history, and features alone (no history).
            check_gradients(fusion, true, true);
            check_gradients(fusion, true, false);
        }
    }

    /// Two features on one row (their gradients add up) and a negative numeric scale.
    fn with_features(p: &mut Personalizer, rng: &mut Rng) -> Vec<Feature> {
        let d = p.v_q.len();
        p.demographics = Some(Demographics {
            buckets_log2: 2,
            numeric: Vec::new(),
            bias: 0.2,
            table: (0..4 * d).map(|_| rng.normal() as f32 * 0.5).collect(),
        });
        [(1, 1.0), (3, -0.7), (1, 0.4)]
            .iter()
            .map(|&(row, scale)| Feature {
                name: format!("f{row}"),
                row,
                scale,
            })
            .collect()
    }

    fn check_gradients(fusion: Fusion, features: bool, history: bool) {
        let (mut p, mut q, mut h, mut w, c) = setup(fusion);
        let f = if features {
            with_features(&mut p, &mut Rng::new(9))
        } else {
            Vec::new()
        };
        if !history {
            h.clear();
            w.clear();
        }
        let mut cache = PersonalCache::default();
        p.forward_with(&q, &h, &w, &f, &mut cache);
        let mut grad = p.zeros_like();
        let mut dq = Vec::new();
        p.backward_with(&q, &h, &w, &f, &cache, &c, &mut grad, &mut dq);
        let eps = 1e-3f32;
        let close = |a: f32, n: f64, what: &str| {
            assert!(
                (a as f64 - n).abs() <= 2e-3 * (1.0 + n.abs()),
                "{what}: {a} vs {n}"
            );
        };
        for i in 0..q.len() {
            let o = q[i];
            q[i] = o + eps;
            let up = loss(&p, &q, &h, &w, &f, &c);
            q[i] = o - eps;
            let down = loss(&p, &q, &h, &w, &f, &c);
            q[i] = o;
            close(
                dq[i],
                (up - down) / (2.0 * eps as f64),
                &format!("{fusion} features {features} history {history} q[{i}]"),
            );
        }
        let flat = p.to_flat();
        let g = grad.to_flat();
        for i in 0..flat.len() {
            let mut fl = flat.clone();
            fl[i] += eps;
            p.set_flat(&fl);
            let up = loss(&p, &q, &h, &w, &f, &c);
            fl[i] -= 2.0 * eps;
            p.set_flat(&fl);
            let down = loss(&p, &q, &h, &w, &f, &c);
            p.set_flat(&flat);
            close(
                g[i],
                (up - down) / (2.0 * eps as f64),
                &format!("{fusion} features {features} history {history} param[{i}]"),
            );
        }
    }

    #[test]
    fn no_history_is_the_plain_query_bit_for_bit_and_a_strong_zero_slot_nearly_so() {
        let (mut p, q, h, w, _) = setup(Fusion::Gated);
        let mut cache = PersonalCache::default();
        p.forward(&q, &[], &[], &mut cache);
        assert_eq!(cache.out, q);
        let mut dq = Vec::new();
        let mut grad = p.zeros_like();
        p.backward(&q, &[], &[], &cache, &q, &mut grad, &mut dq);
        assert_eq!(dq, q);
        assert_eq!(grad, p.zeros_like());
        // The zero slot takes the attention: u -> 0, q' -> q.
        p.b0 = 50.0;
        p.forward(&q, &h, &w, &mut cache);
        assert!(cache.a[0] > 0.999);
        for (a, b) in cache.out.iter().zip(&q) {
            assert!((a - b).abs() < 1e-4);
        }
        assert!((dot(&cache.out, &cache.out) - 1.0).abs() < 1e-5);
    }
}

#[cfg(test)]
mod concat_tests {
    use super::*;

    #[test]
    fn concat_starts_as_the_plain_query_and_both_fusions_parse() {
        let p = Personalizer::new(3, Fusion::Concat);
        assert!(p.fits(3) && !p.fits(4));
        let q = [0.6f32, 0.8, 0.0];
        let h = [0.0f32, 0.0, 1.0];
        let mut cache = PersonalCache::default();
        p.forward(&q, &h, &[1.0], &mut cache);
        for (a, b) in cache.out.iter().zip(&q) {
            assert!((a - b).abs() < 1e-6, "[I 0] passes q through");
        }
        assert_eq!("concat".parse::<Fusion>(), Ok(Fusion::Concat));
        assert_eq!("gated".parse::<Fusion>(), Ok(Fusion::Gated));
        assert!("sum".parse::<Fusion>().is_err());
        let mut flat = p.to_flat();
        flat[0] = 1.5;
        let mut back = p.clone();
        back.set_flat(&flat);
        assert_eq!(back.b0, 1.5);
        assert_eq!(back.to_flat(), flat);
    }
}
