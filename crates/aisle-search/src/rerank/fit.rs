//! Fitting the head's weights: softmax cross-entropy over each case's candidates, by full-batch
//! Adam ([`fit`]).

use rayon::prelude::*;

use super::features::{Feature, FEATURES};
use super::head::Reranker;

/// One case to fit on: its candidates' features and which of them are relevant.
#[derive(Clone, Debug, Default)]
pub struct FitCase {
    pub features: Vec<[f32; FEATURES]>,
    pub relevant: Vec<bool>,
}

/// How [`fit`] runs.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Full-batch Adam steps.
    pub iterations: usize,
    pub lr: f64,
    /// L2 penalty on every weight.
    pub l2: f64,
    /// Features the head may use; the others keep weight 0.
    pub use_feature: [bool; FEATURES],
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            iterations: 600,
            lr: 0.1,
            l2: 1e-4,
            use_feature: [true; FEATURES],
        }
    }
}

/// Fits the head's weights by full-batch Adam on the mean over cases of the softmax
/// cross-entropy of the relevant candidates: `-ln(sum_rel e^s / sum_all e^s)`, `s = w . phi`.
/// Cases with no relevant candidate, or only relevant ones, carry no signal and are skipped.
/// The fit is deterministic (no seed; the gradient is summed in case order). With a single
/// relevant candidate per case the loss is convex in `w`; with several it need not be, and Adam
/// finds a local minimum. Starts from the dense score at the towers' training scale (20).
pub fn fit(cases: &[FitCase], opts: &FitOptions) -> Reranker {
    fit_observed(cases, opts, |_| {})
}

/// [`fit`], calling `on_step(step)` after every Adam step (1-based), for progress reports.
pub fn fit_observed(
    cases: &[FitCase],
    opts: &FitOptions,
    mut on_step: impl FnMut(usize),
) -> Reranker {
    let useful: Vec<&FitCase> = cases
        .iter()
        .filter(|c| c.relevant.iter().any(|&r| r) && c.relevant.iter().any(|&r| !r))
        .collect();
    let mut w = [0f64; FEATURES];
    let dense = Feature::Dense.index();
    if opts.use_feature[dense] {
        w[dense] = 20.0;
    }
    if useful.is_empty() {
        return to_reranker(&w);
    }
    let (mut m, mut v) = ([0f64; FEATURES], [0f64; FEATURES]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let n = useful.len() as f64;
    // Cases in chunks, each chunk's gradient summed in case order and the chunks' sums added in
    // chunk order: the same cases give bit-identical weights on any number of threads.
    const CHUNK: usize = 64;
    for step in 1..=opts.iterations {
        let grad = useful
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut g = [0f64; FEATURES];
                let mut buf = Scratch::default();
                for c in chunk {
                    add_case_gradient(c, &w, &mut buf, &mut g);
                }
                g
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold([0f64; FEATURES], add);
        for j in 0..FEATURES {
            if !opts.use_feature[j] {
                continue;
            }
            let g = grad[j] / n + 2.0 * opts.l2 * w[j];
            m[j] = b1 * m[j] + (1.0 - b1) * g;
            v[j] = b2 * v[j] + (1.0 - b2) * g * g;
            let mh = m[j] / (1.0 - b1.powi(step as i32));
            let vh = v[j] / (1.0 - b2.powi(step as i32));
            w[j] -= opts.lr * mh / (vh.sqrt() + eps);
        }
        on_step(step);
    }
    to_reranker(&w)
}

/// Mean loss of `reranker` over the cases with signal (as [`fit`] minimises, without the
/// penalty).
pub fn loss(cases: &[FitCase], reranker: &Reranker) -> f64 {
    let w: [f64; FEATURES] = reranker.weights.map(f64::from);
    let useful: Vec<f64> = cases
        .iter()
        .filter(|c| c.relevant.iter().any(|&r| r) && c.relevant.iter().any(|&r| !r))
        .map(|c| case_loss(c, &w))
        .collect();
    useful.iter().sum::<f64>() / useful.len().max(1) as f64
}

fn to_reranker(w: &[f64; FEATURES]) -> Reranker {
    Reranker {
        weights: w.map(|x| x as f32),
    }
}

fn add(mut a: [f64; FEATURES], b: [f64; FEATURES]) -> [f64; FEATURES] {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

fn scores(c: &FitCase, w: &[f64; FEATURES]) -> Vec<f64> {
    c.features
        .iter()
        .map(|f| f.iter().zip(w).map(|(x, w)| f64::from(*x) * w).sum())
        .collect()
}

/// ln sum exp over the candidates where `keep` holds.
fn log_sum_exp(s: &[f64], keep: impl Fn(usize) -> bool) -> f64 {
    let max = s
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| x)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = s
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, &x)| (x - max).exp())
        .sum();
    max + sum.ln()
}

fn case_loss(c: &FitCase, w: &[f64; FEATURES]) -> f64 {
    let s = scores(c, w);
    log_sum_exp(&s, |_| true) - log_sum_exp(&s, |i| c.relevant[i])
}

/// Buffers [`add_case_gradient`] reuses from case to case.
#[derive(Default)]
struct Scratch {
    /// `exp(s_i - max_all)`.
    all: Vec<f64>,
    /// `exp(s_i - max_rel)` for relevant candidates, 0 for the others.
    rel: Vec<f64>,
}

/// Adds `d loss / d w = sum_i (softmax_all(s)_i - softmax_rel(s)_i) phi_i` of one case to `g`.
///
/// One `exp` per candidate, and one more per relevant candidate: each softmax is shifted by its
/// own maximum so that neither sum underflows. This loop is where the fit spends its time (a
/// profile on 1.46M purchases put it in `exp`; the earlier version took four per candidate).
fn add_case_gradient(c: &FitCase, w: &[f64; FEATURES], buf: &mut Scratch, g: &mut [f64; FEATURES]) {
    buf.all.clear();
    buf.all.extend(
        c.features
            .iter()
            .map(|f| f.iter().zip(w).map(|(x, w)| f64::from(*x) * w).sum::<f64>()),
    );
    let (mut max_all, mut max_rel) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (x, &r) in buf.all.iter().zip(&c.relevant) {
        max_all = max_all.max(*x);
        if r {
            max_rel = max_rel.max(*x);
        }
    }
    buf.rel.clear();
    let (mut z_all, mut z_rel) = (0f64, 0f64);
    for (x, &r) in buf.all.iter_mut().zip(&c.relevant) {
        let er = if r { (*x - max_rel).exp() } else { 0.0 };
        z_rel += er;
        buf.rel.push(er);
        *x = (*x - max_all).exp();
        z_all += *x;
    }
    for ((ea, er), f) in buf.all.iter().zip(&buf.rel).zip(&c.features) {
        let coef = ea / z_all - er / z_rel;
        for (gj, x) in g.iter_mut().zip(f) {
            *gj += coef * f64::from(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(rows: &[([f32; FEATURES], bool)]) -> FitCase {
        FitCase {
            features: rows.iter().map(|r| r.0).collect(),
            relevant: rows.iter().map(|r| r.1).collect(),
        }
    }

    fn one_hot(j: usize, x: f32) -> [f32; FEATURES] {
        let mut f = [0.0; FEATURES];
        f[j] = x;
        f
    }
    #[test]
    fn the_gradient_matches_finite_differences() {
        let mut a = one_hot(0, 0.3);
        a[3] = 1.0;
        a[8] = 0.2;
        let mut b = one_hot(0, 0.5);
        b[5] = 0.7;
        let c = case(&[(a, true), (b, false), (one_hot(2, 1.0), true)]);
        let w = [2.0, -0.5, 0.3, 1.0, 0.0, 0.4, -1.0, 0.2, 0.9, -0.3];
        let mut g = [0f64; FEATURES];
        add_case_gradient(&c, &w, &mut Scratch::default(), &mut g);
        for j in 0..FEATURES {
            let (mut hi, mut lo) = (w, w);
            hi[j] += 1e-5;
            lo[j] -= 1e-5;
            let numeric = (case_loss(&c, &hi) - case_loss(&c, &lo)) / 2e-5;
            assert!(
                (numeric - g[j]).abs() < 1e-6,
                "feature {j}: {numeric} vs {}",
                g[j]
            );
        }
    }

    #[test]
    fn fitting_learns_the_feature_that_separates_relevant_products() {
        // The dense score is noise; "bought" marks the relevant candidate.
        let cases: Vec<FitCase> = (0..50)
            .map(|i| {
                let noise = |k: usize| ((i * 7 + k * 13) % 10) as f32 / 10.0;
                let mut rel = one_hot(0, noise(0));
                rel[3] = 1.0;
                case(&[
                    (rel, true),
                    (one_hot(0, noise(1)), false),
                    (one_hot(0, noise(2)), false),
                ])
            })
            .collect();
        let start = Reranker::dense_only();
        let fitted = fit(&cases, &FitOptions::default());
        assert!(fitted.weights[3] > 2.0, "{:?}", fitted.weights);
        assert!(loss(&cases, &fitted) < 0.5 * loss(&cases, &start));
        // A masked feature stays at 0.
        let mut opts = FitOptions::default();
        opts.use_feature[3] = false;
        assert_eq!(fit(&cases, &opts).weights[3], 0.0);
        // Nothing to learn from: the dense score at the towers' scale.
        assert_eq!(fit(&[], &FitOptions::default()).weights[0], 20.0);
    }

    /// The gradient the fit follows is the derivative of the loss it reports (central
    /// differences), including cases with several relevant candidates and scores far apart,
    /// where one shared shift would underflow the relevant candidates' sum.
    #[test]
    fn the_gradient_holds_over_many_cases_and_far_apart_scores() {
        let mut cases = Vec::new();
        for i in 0..6 {
            let x = |k: usize| ((i * 5 + k * 3) % 7) as f32 / 7.0 - 0.4;
            let mut a = one_hot(0, x(0));
            a[3] = 1.0;
            a[5] = x(4);
            let mut b = one_hot(0, x(1));
            b[5] = -x(2);
            let mut c = one_hot(0, x(2));
            c[3] = x(3);
            cases.push(case(&[(a, true), (b, i % 2 == 0), (c, false)]));
        }
        let mut far = one_hot(0, 50.0);
        far[3] = 1.0;
        cases.push(case(&[(one_hot(0, -40.0), true), (far, false)]));
        let w: [f64; FEATURES] = std::array::from_fn(|j| 0.5 + 0.25 * j as f64);
        let mut grad = [0f64; FEATURES];
        let mut buf = Scratch::default();
        for c in &cases {
            add_case_gradient(c, &w, &mut buf, &mut grad);
        }
        let total = |w: &[f64; FEATURES]| cases.iter().map(|c| case_loss(c, w)).sum::<f64>();
        for j in [0, 3, 5] {
            let h = 1e-5;
            let (mut up, mut down) = (w, w);
            up[j] += h;
            down[j] -= h;
            let numeric = (total(&up) - total(&down)) / (2.0 * h);
            assert!(grad[j].is_finite(), "{grad:?}");
            assert!(
                (grad[j] - numeric).abs() < 1e-4 * numeric.abs().max(1.0),
                "feature {j}: {} against {numeric}",
                grad[j]
            );
        }
    }
}
