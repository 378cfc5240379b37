//! The exact (erf) GELU as one fused CPU op, forward and backward.
//!
//! Why by hand: `perf` on `aisle bench minilm` put 14% of encoding time in candle's
//! `gelu_erf`, which calls the scalar `libm::erff` once per element (276 M calls for 2,000
//! titles), and its backward is nine separate tensor ops. Here erf is the Abramowitz & Stegun
//! formula 7.1.26 (|error| <= 1.5e-7, Handbook of Mathematical Functions, 1964) over an
//! `exp` built from a degree-6 Taylor polynomial and exponent bits, so that the loop has no
//! call and no branch and compiles to AVX-512 or AVX2 code, picked at run time. The gradient
//! comes from the same pass: d/dx gelu(x) = Phi(x) + x phi(x), and phi needs the same
//! `exp(-x^2 / 2)` the erf formula computes.
//!
//! A test checks both against candle's `gelu_erf` (libm) and its gradient on a dense grid.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::op_util::{contiguous_f32, min_len};

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// `exp(y)` for `y <= 0`, relative error about 1e-7; 0 below -87 (e^-87 ~ 1.6e-38).
#[inline(always)]
pub(crate) fn exp_nonpositive(y: f32) -> f32 {
    let underflow = y < -87.0;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN_2: f32 = std::f32::consts::LN_2;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let y = y.max(-87.0);
    let k = (y * LOG2_E + ROUND) - ROUND;
    let r = y - k * LN_2; // |r| <= ln(2) / 2
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^k from the exponent bits; k is in [-126, 0].
    let two_k = f32::from_bits((((k as i32) + 127) as u32) << 23);
    // A select, not a branch: the loop stays vectorised.
    if underflow {
        0.0
    } else {
        p * two_k
    }
}

/// `(gelu(x), gelu'(x))`.
#[inline(always)]
fn gelu_and_slope(x: f32) -> (f32, f32) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let e = exp_nonpositive(-z * z); // exp(-x^2 / 2)
                                     // erfc(|x| / sqrt 2) = poly * e; 2 Phi(x) = 1 + erf(x / sqrt 2), taken without cancellation.
    let tail = poly * e;
    let two_phi = if x < 0.0 { tail } else { 2.0 - tail };
    let phi_density = INV_SQRT_2PI * e;
    (0.5 * x * two_phi, 0.5 * two_phi + x * phi_density)
}

#[inline(always)]
fn forward_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = gelu_and_slope(x).0;
    }
}

#[inline(always)]
fn backward_slice(x: &[f32], grad: &[f32], dst: &mut [f32]) {
    for ((d, &x), &g) in dst.iter_mut().zip(x).zip(grad) {
        *d = g * gelu_and_slope(x).1;
    }
}

/// One chunk with the widest vector unit this CPU has (the baseline x86-64 target is SSE2).
fn forward_chunk(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(src: &[f32], dst: &mut [f32]) {
            forward_slice(src, dst)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(src: &[f32], dst: &mut [f32]) {
            forward_slice(src, dst)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(src, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(src, dst) };
        }
    }
    forward_slice(src, dst)
}

fn backward_chunk(x: &[f32], grad: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(x: &[f32], grad: &[f32], dst: &mut [f32]) {
            backward_slice(x, grad, dst)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(x: &[f32], grad: &[f32], dst: &mut [f32]) {
            backward_slice(x, grad, dst)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(x, grad, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(x, grad, dst) };
        }
    }
    backward_slice(x, grad, dst)
}

/// The exact GELU of `src` into `dst` (as long), in parallel when `parallel`.
pub(crate) fn gelu_erf_into(src: &[f32], dst: &mut [f32], parallel: bool) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .with_min_len(min_len(parallel))
        .for_each(|(d, s)| forward_chunk(s, d));
}

/// The exact GELU's input gradient, `grad * gelu'(x)`, into `dst` (as long), in parallel.
pub(crate) fn gelu_erf_backward_into(x: &[f32], grad: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(d, (x, g))| backward_chunk(x, g, d));
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "aisle-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| forward_chunk(s, d));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluGrad)?,
        ))
    }
}

/// `(x, dL/dy) -> dL/dx` for `y = gelu(x)`.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "aisle-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let grad = contiguous_f32(grad, grad_layout, self.name())?;
        if x.len() != grad.len() {
            return Err(Error::Msg(format!(
                "{}: {} inputs against {} gradients",
                self.name(),
                x.len(),
                grad.len()
            )));
        }
        let mut dst = vec![0f32; x.len()];
        gelu_erf_backward_into(x, grad, &mut dst);
        Ok((CpuStorage::F32(dst), x_layout.shape().clone()))
    }
}

/// The exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with a backward pass. CPU f32 tensors take the
/// fused kernel; anything else takes candle's `gelu_erf`.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if !xs.device().is_cpu() || xs.dtype() != candle_core::DType::F32 {
        return xs.gelu_erf();
    }
    xs.contiguous()?.apply_op1(Gelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grid() -> Vec<f32> {
        // -12 .. 12 in steps of 1/256, plus the extremes.
        let mut v: Vec<f32> = (-3072..=3072).map(|i| i as f32 / 256.0).collect();
        v.extend([
            -1e4, -100.0, -87.5, 87.5, 100.0, 1e4, 0.0, -0.0, 1e-30, -1e-30,
        ]);
        v
    }

    #[test]
    fn matches_candle_gelu_erf_on_a_dense_grid() -> Result<()> {
        let xs = Tensor::new(grid(), &Device::Cpu)?;
        let ours = gelu_erf(&xs)?.to_vec1::<f32>()?;
        let reference = xs.gelu_erf()?.to_vec1::<f32>()?;
        for ((x, a), b) in grid().iter().zip(&ours).zip(&reference) {
            let tol = 2e-7 * (1.0 + x.abs());
            assert!((a - b).abs() <= tol, "gelu({x}) = {a}, candle {b}");
        }
        Ok(())
    }

    #[test]
    fn every_code_path_gives_the_same_values() {
        // The fused op takes the widest vector unit; the baseline (SSE2) build of the same loop
        // and the AVX2 one must agree with it.
        let xs = grid();
        let mut wide = vec![0f32; xs.len()];
        forward_chunk(&xs, &mut wide);
        let mut baseline = vec![0f32; xs.len()];
        forward_slice(&xs, &mut baseline);
        let (mut g_wide, mut g_base) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        let ones = vec![1f32; xs.len()];
        backward_chunk(&xs, &ones, &mut g_wide);
        backward_slice(&xs, &ones, &mut g_base);
        for i in 0..xs.len() {
            let tol = 1e-6 * (1.0 + xs[i].abs());
            assert!((wide[i] - baseline[i]).abs() <= tol, "gelu({})", xs[i]);
            assert!((g_wide[i] - g_base[i]).abs() <= tol, "gelu'({})", xs[i]);
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            fn avx2(src: &[f32], dst: &mut [f32]) {
                forward_slice(src, dst)
            }
            let mut v = vec![0f32; xs.len()];
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            unsafe { avx2(&xs, &mut v) };
            for i in 0..xs.len() {
                assert!((v[i] - baseline[i]).abs() <= 1e-6 * (1.0 + xs[i].abs()));
            }
        }
    }

    #[test]
    fn gradient_matches_candle_backward() -> Result<()> {
        let x = Var::new(grid(), &Device::Cpu)?;
        let weights = Tensor::new(
            (0..grid().len())
                .map(|i| 1.0 + (i % 7) as f32)
                .collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let ours = (gelu_erf(x.as_tensor())? * &weights)?
            .sum_all()?
            .backward()?;
        let theirs = (x.as_tensor().gelu_erf()? * &weights)?
            .sum_all()?
            .backward()?;
        let a = ours.get(&x).map(|g| g.to_vec1::<f32>());
        let b = theirs.get(&x).map(|g| g.to_vec1::<f32>());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("no gradient reached x");
        };
        let (a, b) = (a?, b?);
        for (((x, ga), gb), w) in grid().iter().zip(&a).zip(&b).zip(weights.to_vec1::<f32>()?) {
            // candle's own gradient rounds 1/sqrt(2 pi) to 0.398942 (relative 1e-6).
            let tol = 2e-6 * w * (1.0 + x.abs());
            assert!(
                (ga - gb).abs() <= tol,
                "gelu'({x}) * {w} = {ga}, candle {gb}"
            );
        }
        Ok(())
    }
}
