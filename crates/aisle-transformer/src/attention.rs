//! BERT's multi-head self-attention as one fused CPU op with its own backward pass.
//!
//! Why by hand: the vendored BERT computed attention as candle ops: three reshapes and
//! transposes of the query, key and value (each a strided copy), a batched matmul of
//! `batch * heads` tiny `(seq, 32) x (32, seq)` products (768 separate gemm calls, each
//! dispatching to the thread pool, for a batch of 64), a scale, the mask's broadcast add, a
//! softmax, a second batched matmul and a last transpose copy; the backward pass doubled all of
//! it. `perf` on `aisle bench minilm` put candle's strided copies, broadcast maps and zeroed
//! buffers at about a fifth of the time, while attention is under 1% of the model's
//! arithmetic (the dense layers hold the rest). Here one pass per text does all heads, in
//! parallel over the batch.
//!
//! Input: `qkv`, `(batch, seq, 3 * hidden)`, the query, key and value projections side by side
//! (heads in order within each), and `mask`, `(batch, seq)`, 1 for a token and 0 for padding.
//! Output: `(batch, seq, hidden)`, for each head `softmax(q k^T / sqrt(d) + mask) v`, where
//! padding keys get no weight (the original added `f32::MIN` to their scores). A row whose keys
//! are all padding, which a tokenised text never gives (it has `[CLS]` and `[SEP]`), weighs
//! every key equally, as the original's `f32::MIN` scores did.
//!
//! Backward, per head, with `P` the attention weights (recomputed, not stored) and `dO` the
//! output's gradient: `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP))`,
//! `dQ = dS K / sqrt(d)`, `dK = dS^T Q / sqrt(d)`. Tests check values and gradients against the
//! candle-op version.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::op_util::contiguous_f32;

/// The shape of one attention call: `batch` texts of `seq` tokens, `heads` heads of `head`
/// values each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head: usize,
}

impl Dims {
    fn hidden(&self) -> usize {
        self.heads * self.head
    }

    /// The dims of a `(batch, seq, 3 * hidden)` input with `heads` heads, checked.
    fn of(op: &str, layout: &Layout, heads: usize) -> Result<Dims> {
        let &[batch, seq, width] = layout.shape().dims() else {
            return Err(Error::Msg(format!(
                "{op}: expected (batch, seq, 3 * hidden), got {:?}",
                layout.shape().dims()
            )));
        };
        if heads == 0 || width == 0 || width % (3 * heads) != 0 {
            return Err(Error::Msg(format!(
                "{op}: a width of {width} is not three times a multiple of {heads} heads"
            )));
        }
        Ok(Dims {
            batch,
            seq,
            heads,
            head: width / (3 * heads),
        })
    }

    fn check_mask(&self, op: &str, layout: &Layout) -> Result<()> {
        if layout.shape().dims() != [self.batch, self.seq] {
            return Err(Error::Msg(format!(
                "{op}: a mask of {:?} for (batch {}, seq {})",
                layout.shape().dims(),
                self.batch,
                self.seq
            )));
        }
        Ok(())
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight lanes of partial sums: the compiler vectorises this (the head width is 32 in
    // MiniLM).
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// Row `i`'s attention weights over the keys of one text and head, into `p`.
/// `qkv` is the text's `(seq, 3 * hidden)` block, `valid` its mask.
#[inline(always)]
fn weights(qkv: &[f32], valid: &[bool], d: Dims, h: usize, i: usize, scale: f32, p: &mut [f32]) {
    let w = 3 * d.hidden();
    let q = &qkv[i * w + h * d.head..][..d.head];
    let key = |j: usize| &qkv[j * w + d.hidden() + h * d.head..][..d.head];
    let mut max = f32::NEG_INFINITY;
    for (j, pj) in p.iter_mut().enumerate() {
        *pj = if valid[j] {
            scale * dot(q, key(j))
        } else {
            f32::NEG_INFINITY
        };
        max = max.max(*pj);
    }
    if max == f32::NEG_INFINITY {
        // No key to attend to: equal weights, as the original's all-`f32::MIN` row.
        p.fill(1.0 / p.len() as f32);
        return;
    }
    // A vectorised exp (padding's -inf gives 0): libm's scalar expf was a fifth of this
    // function's time.
    let mut sum = 0f32;
    for pj in p.iter_mut() {
        *pj = crate::gelu::exp_nonpositive(*pj - max);
        sum += *pj;
    }
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|v| *v *= inv);
}

/// One text's attention output (`o`, `seq * hidden`) from its `qkv` block and mask.
#[inline(always)]
fn text_forward(x: &[f32], m: &[f32], o: &mut [f32], d: Dims) {
    let (t, hid) = (d.seq, d.hidden());
    let scale = 1.0 / (d.head as f32).sqrt();
    o.fill(0.0);
    let valid = valid_of(m);
    let mut p = vec![0f32; t];
    for h in 0..d.heads {
        for i in 0..t {
            weights(x, &valid, d, h, i, scale, &mut p);
            let oi = &mut o[i * hid + h * d.head..][..d.head];
            for (j, &pj) in p.iter().enumerate() {
                if pj != 0.0 {
                    let v = &x[j * 3 * hid + 2 * hid + h * d.head..][..d.head];
                    axpy(pj, v, oi);
                }
            }
        }
    }
}

/// [`text_forward`] with the widest vector unit this CPU has (the baseline x86-64 target is
/// SSE2).
fn text_forward_dispatch(x: &[f32], m: &[f32], o: &mut [f32], d: Dims) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(x: &[f32], m: &[f32], o: &mut [f32], d: Dims) {
            text_forward(x, m, o, d)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(x: &[f32], m: &[f32], o: &mut [f32], d: Dims) {
            text_forward(x, m, o, d)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(x, m, o, d) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(x, m, o, d) };
        }
    }
    text_forward(x, m, o, d)
}

/// One text's `dqkv` (`g`, `seq * 3 * hidden`, overwritten) from its `qkv` block `x`, mask `m`
/// and output gradient `dy` (the module's text gives the formulas).
#[inline(always)]
fn text_backward(x: &[f32], m: &[f32], dy: &[f32], g: &mut [f32], d: Dims) {
    let (t, hid) = (d.seq, d.hidden());
    let w = 3 * hid;
    let scale = 1.0 / (d.head as f32).sqrt();
    g.fill(0.0);
    let valid = valid_of(m);
    let mut p = vec![0f32; t];
    let mut dp = vec![0f32; t];
    for h in 0..d.heads {
        let (qo, ko, vo) = (h * d.head, hid + h * d.head, 2 * hid + h * d.head);
        for i in 0..t {
            weights(x, &valid, d, h, i, scale, &mut p);
            let dyi = &dy[i * hid + h * d.head..][..d.head];
            // dP_ij = dO_i . V_j, and dV_j += P_ij dO_i.
            let mut row = 0f32;
            for j in 0..t {
                dp[j] = dot(dyi, &x[j * w + vo..][..d.head]);
                row += p[j] * dp[j];
                if p[j] != 0.0 {
                    axpy(p[j], dyi, &mut g[j * w + vo..][..d.head]);
                }
            }
            // dS_ij = P_ij (dP_ij - row); dQ_i += dS_ij K_j; dK_j += dS_ij Q_i.
            for j in 0..t {
                let ds = p[j] * (dp[j] - row) * scale;
                if ds == 0.0 {
                    continue;
                }
                let (head_q, rest) = g.split_at_mut(i.max(j) * w);
                let (gi, gj) = if i < j {
                    (&mut head_q[i * w..], &mut rest[..])
                } else if i > j {
                    (&mut rest[..], &mut head_q[j * w..])
                } else {
                    // i == j: the query and key parts of one row.
                    let (a, b) = rest.split_at_mut(ko);
                    axpy(ds, &x[j * w + ko..][..d.head], &mut a[qo..][..d.head]);
                    axpy(ds, &x[i * w + qo..][..d.head], &mut b[..d.head]);
                    continue;
                };
                axpy(ds, &x[j * w + ko..][..d.head], &mut gi[qo..][..d.head]);
                axpy(ds, &x[i * w + qo..][..d.head], &mut gj[ko..][..d.head]);
            }
        }
    }
}

/// [`text_backward`] with the widest vector unit this CPU has.
fn text_backward_dispatch(x: &[f32], m: &[f32], dy: &[f32], g: &mut [f32], d: Dims) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(x: &[f32], m: &[f32], dy: &[f32], g: &mut [f32], d: Dims) {
            text_backward(x, m, dy, g, d)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(x: &[f32], m: &[f32], dy: &[f32], g: &mut [f32], d: Dims) {
            text_backward(x, m, dy, g, d)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(x, m, dy, g, d) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(x, m, dy, g, d) };
        }
    }
    text_backward(x, m, dy, g, d)
}

/// `buf` cut into the row blocks of packed texts: text `b` is rows `starts[b]..starts[b + 1]`
/// of `width` values each.
pub(crate) fn split_rows<'a>(
    mut buf: &'a mut [f32],
    starts: &[usize],
    width: usize,
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(starts.len().saturating_sub(1));
    for w in starts.windows(2) {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut((w[1] - w[0]) * width);
        out.push(head);
        buf = rest;
    }
    out
}

/// The dims of packed text `b`: one text of its own length.
fn packed_dims(starts: &[usize], b: usize, heads: usize, head: usize) -> Dims {
    Dims {
        batch: 1,
        seq: starts[b + 1] - starts[b],
        heads,
        head,
    }
}

/// Attention over packed texts (no padding): text `b` is rows `starts[b]..starts[b + 1]` of
/// `qkv` (`rows * 3 * hidden`), and its output goes to the same rows of `out` (`rows *
/// hidden`); in parallel over texts when `parallel`. The values are those of
/// [`attention_into`] on the padded batch, for the real tokens.
pub(crate) fn attention_packed_into(
    qkv: &[f32],
    starts: &[usize],
    (heads, head): (usize, usize),
    out: &mut [f32],
    parallel: bool,
) {
    let hid = heads * head;
    let longest = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let ones = vec![1f32; longest];
    split_rows(out, starts, hid)
        .into_par_iter()
        .enumerate()
        .with_min_len(crate::op_util::min_len(parallel))
        .for_each(|(b, o)| {
            let d = packed_dims(starts, b, heads, head);
            let x = &qkv[starts[b] * 3 * hid..starts[b + 1] * 3 * hid];
            text_forward_dispatch(x, &ones[..d.seq], o, d);
        });
}

/// The gradient of [`attention_packed_into`] with respect to `qkv`, into `dqkv` (overwritten),
/// from the output's gradient `dout`.
pub(crate) fn attention_packed_backward(
    qkv: &[f32],
    starts: &[usize],
    (heads, head): (usize, usize),
    dout: &[f32],
    dqkv: &mut [f32],
) {
    let hid = heads * head;
    let longest = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let ones = vec![1f32; longest];
    split_rows(dqkv, starts, 3 * hid)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, g)| {
            let d = packed_dims(starts, b, heads, head);
            let (r0, r1) = (starts[b], starts[b + 1]);
            let x = &qkv[r0 * 3 * hid..r1 * 3 * hid];
            let dy = &dout[r0 * hid..r1 * hid];
            text_backward_dispatch(x, &ones[..d.seq], dy, g, d);
        });
}

/// The attention output of `qkv` under `mask` (see the module's text) into `out`
/// (`batch * seq * hidden` values, overwritten), in parallel over texts when `parallel`.
pub(crate) fn attention_into(qkv: &[f32], mask: &[f32], d: Dims, out: &mut [f32], parallel: bool) {
    let (t, hid) = (d.seq, d.hidden());
    if t == 0 {
        return;
    }
    out.par_chunks_mut(t * hid)
        .zip(qkv.par_chunks(t * 3 * hid))
        .zip(mask.par_chunks(t))
        .with_min_len(crate::op_util::min_len(parallel))
        .for_each(|((o, x), m)| text_forward_dispatch(x, m, o, d));
}

fn valid_of(mask: &[f32]) -> Vec<bool> {
    mask.iter().map(|&m| m > 0.5).collect()
}

struct Attention {
    heads: usize,
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "aisle-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(self.name(), l1, self.heads)?;
        d.check_mask(self.name(), l2)?;
        let qkv = contiguous_f32(s1, l1, self.name())?;
        let mask = contiguous_f32(s2, l2, self.name())?;
        let (t, hid) = (d.seq, d.hidden());
        let mut out = vec![0f32; d.batch * t * hid];
        attention_into(qkv, mask, d, &mut out, true);
        Ok((CpuStorage::F32(out), Shape::from((d.batch, t, hid))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dqkv = qkv.apply_op3_no_bwd(
            mask,
            &grad.contiguous()?,
            &AttentionGrad { heads: self.heads },
        )?;
        Ok((Some(dqkv), None))
    }
}

/// `(qkv, mask, dOut)` -> `dqkv`.
struct AttentionGrad {
    heads: usize,
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "aisle-attention-grad"
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
        let d = Dims::of(self.name(), l1, self.heads)?;
        d.check_mask(self.name(), l2)?;
        let (t, hid) = (d.seq, d.hidden());
        if l3.shape().dims() != [d.batch, t, hid] {
            return Err(Error::Msg(format!(
                "{}: a gradient of {:?} for an output of ({}, {t}, {hid})",
                self.name(),
                l3.shape().dims(),
                d.batch
            )));
        }
        let qkv = contiguous_f32(s1, l1, self.name())?;
        let mask = contiguous_f32(s2, l2, self.name())?;
        let dout = contiguous_f32(s3, l3, self.name())?;
        let w = 3 * hid;
        let mut dqkv = vec![0f32; d.batch * t * w];
        if t > 0 {
            dqkv.par_chunks_mut(t * w)
                .zip(qkv.par_chunks(t * w))
                .zip(mask.par_chunks(t))
                .zip(dout.par_chunks(t * hid))
                .for_each(|(((g, x), m), dy)| text_backward_dispatch(x, m, dy, g, d));
        }
        Ok((CpuStorage::F32(dqkv), Shape::from((d.batch, t, w))))
    }
}

/// Multi-head self-attention of `qkv` (`(batch, seq, 3 * hidden)`: query, key, value) under
/// `mask` (`(batch, seq)` of 1 / 0, any float dtype converted to f32), `(batch, seq, hidden)`;
/// differentiable with respect to `qkv`. CPU and f32 only.
pub fn attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let mask = mask.to_dtype(candle_core::DType::F32)?.contiguous()?;
    qkv.contiguous()?.apply_op2(&mask, Attention { heads })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, seeded};
    use candle_core::{DType, Device, Var, D};

    /// The candle-op attention the vendored BERT ran before (`transpose_for_scores`, matmul,
    /// the `f32::MIN` mask, softmax, matmul).
    fn basic(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, w) = qkv.dims3()?;
        let hid = w / 3;
        let head = hid / heads;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * hid, hid)?
                .reshape((b, t, heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let m = mask.unsqueeze(1)?.unsqueeze(1)?.to_dtype(DType::F32)?;
        let m = (m.ones_like()? - &m)?.broadcast_mul(&Tensor::new(f32::MIN, mask.device())?)?;
        let scores = (q.matmul(&k.t()?)? / (head as f64).sqrt())?.broadcast_add(&m)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)
    }

    #[test]
    fn attention_and_its_gradient_match_the_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        // 3 texts of 7 tokens, 4 heads of 10 (a width that is no multiple of 8); the second
        // text has 3 padding tokens, the third 6 (only its first token is real).
        let (b, t, heads, head) = (3, 7, 4, 10);
        let w = 3 * heads * head;
        let qkv = Var::from_vec(seeded(b * t * w, 1), (b, t, w), &dev)?;
        let mut mask = vec![1f32; b * t];
        mask[t + 4..2 * t].fill(0.0);
        mask[2 * t + 1..3 * t].fill(0.0);
        let mask = Tensor::from_vec(mask, (b, t), &dev)?;
        let dy = Tensor::from_vec(seeded(b * t * heads * head, 2), (b, t, heads * head), &dev)?;
        let ours = attention(qkv.as_tensor(), &mask, heads)?;
        let theirs = basic(qkv.as_tensor(), &mask, heads)?;
        close(&ours, &theirs, 1e-5, "out")?;
        let go = (ours * &dy)?.sum_all()?.backward()?;
        let gb = (theirs * &dy)?.sum_all()?.backward()?;
        let (Some(a), Some(c)) = (go.get(&qkv), gb.get(&qkv)) else {
            panic!("no dqkv");
        };
        close(a, c, 1e-4, "dqkv")
    }

    #[test]
    fn a_row_of_padding_only_weighs_every_key_equally() -> Result<()> {
        let dev = Device::Cpu;
        let (t, heads, head) = (3, 1, 2);
        let qkv = Tensor::from_vec(seeded(t * 3 * heads * head, 3), (1, t, 6), &dev)?;
        let mask = Tensor::zeros((1, t), DType::F32, &dev)?;
        let out = attention(&qkv, &mask, heads)?.to_vec3::<f32>()?;
        let v = qkv.narrow(2, 4, 2)?.mean(1)?.to_vec2::<f32>()?;
        for row in &out[0] {
            for (a, b) in row.iter().zip(&v[0]) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((2, 3, 10), DType::F32, &dev)?;
        let mask = Tensor::ones((2, 3), DType::F32, &dev)?;
        let err = attention(&qkv, &mask, 2)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("width of 10"), "{err}");
        let qkv = Tensor::zeros((2, 3, 12), DType::F32, &dev)?;
        let err = attention(&qkv, &Tensor::ones((2, 4), DType::F32, &dev)?, 2)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("mask of [2, 4]"), "{err}");
        Ok(())
    }
}
