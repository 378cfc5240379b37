//! LayerNorm and softmax over the last dimension as fused CPU ops with their own backward
//! passes, for fine-tuning.
//!
//! Why by hand: candle's fused `layer_norm` and `softmax_last_dim` have no backward, so the
//! trainable BERT built them from basic tensor ops, each a separate pass over memory with its own
//! allocation and its own backward node: seven ops forward and about fifteen backward per
//! LayerNorm (13 in MiniLM), five and ten per softmax. `perf` on `aisle bench minilm
//! --titles 64 --steps 6` put 23% of fine-tuning time in candle's strided and broadcast maps.
//! Here each is one pass forward and one backward:
//!
//! - LayerNorm, `y = (x - mean) / sqrt(var + eps) * gamma + beta` per row:
//!   `dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh))` with `xh` the normalised row and
//!   `dxh = dy * gamma`; `dgamma = sum over rows of dy * xh`, `dbeta = sum of dy`.
//! - Softmax: `dx = y * (dy - sum(dy * y))` per row.
//!
//! Tests check values and gradients against the basic-op versions.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use crate::op_util::contiguous_f32;

/// Rows per parallel task (rows are a few hundred floats).
const ROWS: usize = 64;

/// Mean and `1 / sqrt(var + eps)` of a row (two passes, as the basic-op version).
#[inline]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm of each row of `x` (rows of `gamma.len()`), in place, in parallel over rows when
/// `parallel`.
pub(crate) fn layer_norm_rows_in_place(
    x: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    parallel: bool,
) {
    let d = gamma.len();
    if d == 0 {
        return;
    }
    let min = crate::op_util::min_len(parallel);
    x.par_chunks_mut(d * ROWS).with_min_len(min).for_each(|xc| {
        for xr in xc.chunks_mut(d) {
            let (mean, rstd) = row_stats(xr, eps);
            for ((v, &g), &b) in xr.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    });
}

/// The gradients of [`layer_norm_rows_in_place`] (the module's text gives the formulas): `dx`
/// (as long as `x`) from the input `x` and the output's gradient `dy`, and `dgamma` and `dbeta`
/// (each `gamma.len()`), all overwritten; in parallel over rows, the weight gradients summed in
/// a fixed order so that runs repeat.
pub(crate) fn layer_norm_backward_rows(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let d = gamma.len();
    if d == 0 {
        return;
    }
    // Each task: dx of its rows, and its rows' share of dgamma and dbeta.
    let partial = dx
        .par_chunks_mut(d * ROWS)
        .zip(x.par_chunks(d * ROWS).zip(dy.par_chunks(d * ROWS)))
        .map(|(dxc, (xc, dyc))| {
            let mut acc = vec![0f32; 2 * d];
            let mut dxh = vec![0f32; d];
            for ((dxr, xr), dyr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(dyc.chunks(d)) {
                let (mean, rstd) = row_stats(xr, eps);
                let (mut s1, mut s2) = (0f32, 0f32);
                for i in 0..d {
                    let xh = (xr[i] - mean) * rstd;
                    dxh[i] = dyr[i] * gamma[i];
                    s1 += dxh[i];
                    s2 += dxh[i] * xh;
                    acc[i] += dyr[i] * xh;
                    acc[d + i] += dyr[i];
                }
                let (m1, m2) = (s1 / d as f32, s2 / d as f32);
                for i in 0..d {
                    let xh = (xr[i] - mean) * rstd;
                    dxr[i] = rstd * (dxh[i] - m1 - xh * m2);
                }
            }
            acc
        })
        .collect::<Vec<_>>();
    // Summed in task order, so that a run's gradients do not depend on thread timing.
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    for part in &partial {
        let (pg, pb) = part.split_at(d);
        dgamma.iter_mut().zip(pg).for_each(|(a, v)| *a += v);
        dbeta.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
    }
}

struct LayerNormOp {
    eps: f32,
}

/// The input's last dimension must be the weight's and the bias's length.
fn check_width(op: &str, last: usize, d: usize, other: usize) -> Result<()> {
    if d == 0 || last != d || other != d {
        return Err(Error::Msg(format!(
            "{op}: rows of {last} against a weight of {d} and a bias of {other}"
        )));
    }
    Ok(())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "aisle-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let gamma = contiguous_f32(s2, l2, self.name())?;
        let beta = contiguous_f32(s3, l3, self.name())?;
        let d = gamma.len();
        check_width(
            self.name(),
            l1.shape().dims().last().copied().unwrap_or(0),
            d,
            beta.len(),
        )?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    let (mean, rstd) = row_stats(xr, self.eps);
                    for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                        *o = (v - mean) * rstd * g + b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed =
            x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let (n, d) = (x.elem_count(), gamma.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, d)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + d, d)?.reshape(beta.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, gamma, dy)` -> `[dx | dgamma | dbeta]`, flat.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "aisle-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let gamma = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let d = gamma.len();
        check_width(
            self.name(),
            l1.shape().dims().last().copied().unwrap_or(0),
            d,
            d,
        )?;
        if dy.len() != x.len() {
            return Err(Error::Msg(format!(
                "{}: {} inputs against {} gradients",
                self.name(),
                x.len(),
                dy.len()
            )));
        }
        let n = x.len();
        let mut out = vec![0f32; n + 2 * d];
        let (dx, sums) = out.split_at_mut(n);
        let (dgamma, dbeta) = sums.split_at_mut(d);
        layer_norm_backward_rows(x, gamma, dy, self.eps, dx, dgamma, dbeta);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * d)))
    }
}

/// LayerNorm over the last dimension, differentiable in `xs`, `gamma` and `beta` (CPU, f32).
pub fn layer_norm(xs: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    xs.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "aisle-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let d = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = (v - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    for o in yr.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// `(y, dy)` -> `dx` for `y = softmax(x)`.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "aisle-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        if y.len() != dy.len() {
            return Err(Error::Msg(format!(
                "{}: {} outputs against {} gradients",
                self.name(),
                y.len(),
                dy.len()
            )));
        }
        let d = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(d * ROWS)
            .zip(y.par_chunks(d * ROWS).zip(dy.par_chunks(d * ROWS)))
            .for_each(|(dxc, (yc, dyc))| {
                for ((o, yr), gr) in dxc.chunks_mut(d).zip(yc.chunks(d)).zip(dyc.chunks(d)) {
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((o, &a), &g) in o.iter_mut().zip(yr).zip(gr) {
                        *o = a * (g - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable (CPU, f32).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(Softmax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, seeded};
    use candle_core::{Device, Var, D};

    fn basic_layer_norm(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(g)?.broadcast_add(b)
    }

    #[test]
    fn layer_norm_and_its_gradients_match_the_basic_ops() -> Result<()> {
        let dev = Device::Cpu;
        // 3 x 70 rows of 24: more rows than one parallel task holds.
        let x = Var::from_vec(seeded(3 * 70 * 24, 1), (3, 70, 24), &dev)?;
        let g = Var::from_vec(seeded(24, 2), 24, &dev)?;
        let b = Var::from_vec(seeded(24, 3), 24, &dev)?;
        let w = Tensor::from_vec(seeded(3 * 70 * 24, 4), (3, 70, 24), &dev)?;
        let ours = layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12)?;
        let basic = basic_layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12)?;
        close(&ours, &basic, 1e-5, "y")?;
        let go = (ours * &w)?.sum_all()?.backward()?;
        let gb = (basic * &w)?.sum_all()?.backward()?;
        for (v, name) in [(&x, "dx"), (&g, "dgamma"), (&b, "dbeta")] {
            let (Some(a), Some(c)) = (go.get(v), gb.get(v)) else {
                panic!("no {name}");
            };
            close(a, c, 1e-4, name)?;
        }
        Ok(())
    }

    #[test]
    fn softmax_and_its_gradient_match_the_basic_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(seeded(2 * 4 * 70 * 9, 5), (2, 4, 70, 9), &dev)?;
        let w = Tensor::from_vec(seeded(2 * 4 * 70 * 9, 6), (2, 4, 70, 9), &dev)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        let basic = candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?;
        close(&ours, &basic, 1e-6, "y")?;
        let go = (ours * &w)?.sum_all()?.backward()?;
        let gb = (basic * &w)?.sum_all()?.backward()?;
        let (Some(a), Some(c)) = (go.get(&x), gb.get(&x)) else {
            panic!("no dx");
        };
        close(a, c, 1e-5, "dx")
    }
}
