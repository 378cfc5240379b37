//! A dense layer, `y = x W^T + b`, as one fused CPU op with its own backward pass.
//!
//! Why by hand: `candle_nn::Linear` runs the matmul into a zeroed buffer and then a separate
//! broadcast add of the bias (a second pass and a second buffer), and its backward pass goes
//! through the transposed-weight and broadcast nodes of the autograd graph. `perf` on
//! `aisle bench minilm` put candle's broadcast adds at 8% of encoding time and zeroing new
//! buffers at 4%. Here the output starts as the bias, and gemm accumulates `x W^T` into it; the
//! backward pass is two gemm calls and a column sum into one buffer, `[dx | dW | db]`. Both run
//! the same gemm crate as candle, on rayon's global pool.

use candle_core::{CpuStorage, CustomOp3, Error, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::op_util::{contiguous_f32, min_len};

fn parallelism(parallel: bool) -> Parallelism {
    match rayon::current_num_threads() {
        _ if !parallel => Parallelism::None,
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst (m x n, row-major) = read ? dst + a b : a b`, where `a` is `m x k` and `b` is `k x n`,
/// each given by its element strides `(row, column)`; on rayon's pool when `parallel`, on the
/// calling thread otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    parallel: bool,
    dst: &mut [f32],
    read: bool,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm_into: a short destination");
    if k > 0 {
        assert!(
            (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
            "gemm_into: a short lhs"
        );
        assert!(
            (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
            "gemm_into: a short rhs"
        );
    }
    // SAFETY: the asserts above keep every index gemm reads or writes inside the slices; `dst`
    // does not overlap `a` or `b` (a `&mut` borrow beside two shared ones).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            read,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(parallel),
        )
    }
}

/// `y = x W^T + b (+ residual)` for `rows` rows of `x` (`rows * inp`), a `(out, inp)` row-major
/// weight `w` and a bias `b` (`out`): `y` (`rows * out`) starts as the bias (plus the residual)
/// and gemm accumulates into it. On rayon's pool when `parallel`, on the calling thread
/// otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    (rows, out, inp): (usize, usize, usize),
    parallel: bool,
) {
    let y = &mut y[..rows * out];
    let min = min_len(parallel);
    match residual {
        Some(r) => y
            .par_chunks_mut(out * 64)
            .zip(r.par_chunks(out * 64))
            .with_min_len(min)
            .for_each(|(yc, rc)| {
                for (yr, rr) in yc.chunks_mut(out).zip(rc.chunks(out)) {
                    for ((o, &a), &c) in yr.iter_mut().zip(rr).zip(b) {
                        *o = a + c;
                    }
                }
            }),
        None => y.par_chunks_mut(out * 64).with_min_len(min).for_each(|yc| {
            for yr in yc.chunks_mut(out) {
                yr.copy_from_slice(b);
            }
        }),
    }
    // y += x (rows x in) W^T (in x out): W^T's element (i, o) is W[o * in + i].
    gemm_into(
        parallel,
        y,
        true,
        (rows, out, inp),
        &x[..rows * inp],
        (inp, 1),
        w,
        (1, inp),
    );
}

/// The gradients of [`dense_forward`] from the output's gradient `dy` (`rows * out`): `dW`
/// (`out * inp`) and `db` (`out`), overwritten, and, when given, `dx` (`rows * inp`),
/// overwritten or added to (`(dx, true)`, for a residual's gradient already there). On rayon's
/// pool; the bias sums run in a fixed order, so that runs repeat.
pub(crate) fn dense_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (rows, out, inp): (usize, usize, usize),
    dx: Option<(&mut [f32], bool)>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    if let Some((dx, add)) = dx {
        // dx (rows x in) (+)= dy (rows x out) W (out x in).
        gemm_into(true, dx, add, (rows, inp, out), dy, (out, 1), w, (inp, 1));
    }
    // dW (out x in) = dy^T (out x rows) x (rows x in).
    if rows == 0 {
        dw.fill(0.0);
    } else {
        gemm_into(true, dw, false, (out, inp, rows), dy, (1, out), x, (inp, 1));
    }
    // db = column sums of dy, in a fixed order (blocks of rows, then the blocks in order).
    let partial: Vec<Vec<f32>> = dy[..rows * out]
        .par_chunks(out.max(1) * ROWS)
        .map(|block| {
            let mut s = vec![0f32; out];
            for row in block.chunks_exact(out.max(1)) {
                s.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            s
        })
        .collect();
    db.fill(0.0);
    for p in &partial {
        db.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
}

/// The rows, input and output widths of `x` against a `(out, in)` weight and an `(out)` bias.
fn dims(op: &str, x: &Layout, w: &Layout, b: &Layout) -> Result<(usize, usize, usize)> {
    let (&[out, inp], &[bias]) = (w.shape().dims(), b.shape().dims()) else {
        return Err(Error::Msg(format!(
            "{op}: a weight of {:?} and a bias of {:?} (expected (out, in) and (out))",
            w.shape().dims(),
            b.shape().dims()
        )));
    };
    let last = x.shape().dims().last().copied().unwrap_or(0);
    if last != inp || bias != out {
        return Err(Error::Msg(format!(
            "{op}: rows of {last} against a weight of ({out}, {inp}) and a bias of {bias}"
        )));
    }
    let dims = x.shape().dims();
    let rows = dims[..dims.len().saturating_sub(1)].iter().product();
    Ok((rows, inp, out))
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "aisle-linear"
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
        let (rows, inp, out) = dims(self.name(), l1, l2, l3)?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let mut y = vec![0f32; rows * out];
        dense_forward(x, w, b, None, &mut y, (rows, out, inp), true);
        let mut shape = l1.shape().dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LinearGrad)?;
        let (n, nw) = (x.elem_count(), w.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, nw)?.reshape(w.shape())?;
        let db = packed
            .narrow(0, n + nw, b.elem_count())?
            .reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(x, W, dy)` -> `[dx | dW | db]`, flat.
struct LinearGrad;

/// Rows per task of the bias gradient's column sums.
const ROWS: usize = 256;

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "aisle-linear-grad"
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
        let w = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let &[out, inp] = l2.shape().dims() else {
            return Err(Error::Msg(format!(
                "{}: a weight of {:?}",
                self.name(),
                l2.shape().dims()
            )));
        };
        let dims = l1.shape().dims();
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
        if x.len() != rows * inp || dy.len() != rows * out {
            return Err(Error::Msg(format!(
                "{}: {} inputs and {} gradients for a ({out}, {inp}) weight",
                self.name(),
                x.len(),
                dy.len()
            )));
        }
        let mut packed = vec![0f32; rows * inp + out * inp + out];
        let (dx, rest) = packed.split_at_mut(rows * inp);
        let (dw, db) = rest.split_at_mut(out * inp);
        dense_backward(x, w, dy, (rows, out, inp), Some((dx, false)), dw, db);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

/// `x W^T + b` over the last dimension of `x` (weight `(out, in)`, bias `(out)`), differentiable
/// in all three. CPU and f32 only.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, LinearOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, seeded};
    use candle_core::{DType, Device, Var};

    #[test]
    fn linear_and_its_gradients_match_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        // 3 x 150 rows (more than one block of the bias sums), 37 in, 23 out.
        let x = Var::from_vec(seeded(3 * 150 * 37, 1), (3, 150, 37), &dev)?;
        let w = Var::from_vec(seeded(23 * 37, 2), (23, 37), &dev)?;
        let b = Var::from_vec(seeded(23, 3), 23, &dev)?;
        let dy = Tensor::from_vec(seeded(3 * 150 * 23, 4), (3, 150, 23), &dev)?;
        let ours = linear(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
        let nn = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let theirs = candle_core::Module::forward(&nn, x.as_tensor())?;
        close(&ours, &theirs, 1e-5, "y")?;
        let go = (ours * &dy)?.sum_all()?.backward()?;
        let gt = (theirs * &dy)?.sum_all()?.backward()?;
        for (v, name) in [(&x, "dx"), (&w, "dW"), (&b, "db")] {
            let (Some(a), Some(c)) = (go.get(v), gt.get(v)) else {
                panic!("no {name}");
            };
            close(a, c, 1e-4, name)?;
        }
        Ok(())
    }

    #[test]
    fn mismatched_widths_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 5), DType::F32, &dev)?;
        let w = Tensor::zeros((3, 6), DType::F32, &dev)?;
        let b = Tensor::zeros(3, DType::F32, &dev)?;
        let err = linear(&x, &w, &b).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("rows of 5"), "{err}");
        Ok(())
    }
}
