//! The BERT forward pass for encoding, on plain buffers (no autograd, no candle tensors).
//!
//! Why by hand: encoding runs no backward pass, and through candle each op allocated its
//! output, ran as its own pass over memory and was dispatched to one of three thread pools.
//! `perf` on `aisle bench minilm` (after the fused attention and dense layers) put about half
//! of encoding time outside the matmul micro-kernel: page faults and clearing of new buffers,
//! copies (concatenating the query, key and value weights), the residual adds, the pools'
//! spinning. Here a pass allocates its six buffers once and every layer writes into them:
//!
//! - the pass's texts are packed without padding ([`crate::Packed`]): text `b` is rows
//!   `starts[b]..starts[b + 1]`, dense layers, LayerNorm and GELU run over all rows at once and
//!   attention per text;
//! - a dense layer's output starts as its bias (plus the residual, for the two that have one)
//!   and gemm accumulates into it, the same gemm crate and kernels as candle's;
//! - GELU, LayerNorm and attention are the fused kernels of [`crate::gelu`], [`crate::norm`]
//!   and [`crate::attention`], in parallel over rows or texts on rayon's pool.
//!
//! The values are the candle model's: the tests compare the two on a small BERT, and the
//! parity test holds all-MiniLM-L6-v2 against sentence-transformers through this path.

use candle_core::{Error, Result, Tensor};

use crate::attention::attention_packed_into;

/// A dense layer's weight, `(out, in)` row-major, and bias.
pub(crate) struct Dense {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out: usize,
    pub inp: usize,
}

impl Dense {
    /// The weights of `(out, in)` `weights` (concatenated along `out`) and their biases.
    pub fn of(parts: &[(&Tensor, &Tensor)]) -> Result<Dense> {
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        let mut out = 0;
        let mut inp = 0;
        for (w, b) in parts {
            let (o, i) = w.dims2()?;
            if inp != 0 && i != inp {
                return Err(Error::Msg(format!(
                    "dense layers of {inp} and {i} inputs side by side"
                )));
            }
            inp = i;
            out += o;
            weight.extend(w.flatten_all()?.to_vec1::<f32>()?);
            let bv = b.to_vec1::<f32>()?;
            if bv.len() != o {
                return Err(Error::Msg(format!(
                    "a bias of {} for {o} outputs",
                    bv.len()
                )));
            }
            bias.extend(bv);
        }
        Ok(Dense {
            weight,
            bias,
            out,
            inp,
        })
    }

    /// `y = x W^T + b (+ residual)`, `rows` rows.
    fn apply(&self, x: &[f32], residual: Option<&[f32]>, y: &mut [f32], rows: usize, par: bool) {
        crate::linear::dense_forward(
            x,
            &self.weight,
            &self.bias,
            residual,
            y,
            (rows, self.out, self.inp),
            par,
        );
    }
}

/// LayerNorm weights.
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    fn apply(&self, x: &mut [f32], par: bool) {
        crate::norm::layer_norm_rows_in_place(x, &self.gamma, &self.beta, self.eps, par);
    }
}

pub(crate) struct Layer {
    pub qkv: Dense,
    pub attention_out: Dense,
    pub attention_norm: Norm,
    pub intermediate: Dense,
    pub output: Dense,
    pub output_norm: Norm,
}

/// The weights of a BERT encoder with exact GELU, copied out of the candle model.
pub(crate) struct Inference {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub embedding_norm: Norm,
    pub layers: Vec<Layer>,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
}

impl Inference {
    /// The last hidden state, `rows * hidden` values, of packed texts (`rows` tokens in all,
    /// no padding). Each op runs on rayon's pool when `par`, on the calling thread otherwise
    /// (for passes run side by side).
    pub fn forward(&self, p: &crate::Packed, par: bool) -> Result<Vec<f32>> {
        let (h, n) = (self.hidden, p.ids.len());
        if p.types.len() != n || p.starts.last() != Some(&n) {
            return Err(Error::Msg(format!(
                "{n} ids, {} types and texts ending at {:?}",
                p.types.len(),
                p.starts.last()
            )));
        }
        let mut x = vec![0f32; n * h];
        for (b, w) in p.starts.windows(2).enumerate() {
            if (w[1] - w[0]) * h > self.position.len() {
                return Err(Error::Msg(format!(
                    "text {b}: {} tokens, past the model's {} positions",
                    w[1] - w[0],
                    self.position.len() / h
                )));
            }
            for (pos, r) in (w[0]..w[1]).enumerate() {
                let (id, ty) = (p.ids[r] as usize, p.types[r] as usize);
                let (Some(wv), Some(tv)) = (
                    self.word.get(id * h..(id + 1) * h),
                    self.token_type.get(ty * h..(ty + 1) * h),
                ) else {
                    return Err(Error::Msg(format!(
                        "token id {id} or type {ty} outside the model's vocabulary"
                    )));
                };
                let pv = &self.position[pos * h..][..h];
                let row = &mut x[r * h..][..h];
                for (((o, &a), &b), &c) in row.iter_mut().zip(wv).zip(pv).zip(tv) {
                    *o = a + b + c;
                }
            }
        }
        self.embedding_norm.apply(&mut x, par);
        let heads = (self.heads, h / self.heads.max(1));
        let mut qkv = vec![0f32; n * 3 * h];
        let mut ctx = vec![0f32; n * h];
        let mut attended = vec![0f32; n * h];
        let mut pre = vec![0f32; n * self.intermediate];
        let mut act = vec![0f32; n * self.intermediate];
        for layer in &self.layers {
            layer.qkv.apply(&x, None, &mut qkv, n, par);
            attention_packed_into(&qkv, &p.starts, heads, &mut ctx, par);
            layer
                .attention_out
                .apply(&ctx, Some(&x), &mut attended, n, par);
            layer.attention_norm.apply(&mut attended, par);
            layer.intermediate.apply(&attended, None, &mut pre, n, par);
            crate::gelu::gelu_erf_into(&pre, &mut act, par);
            layer.output.apply(&act, Some(&attended), &mut x, n, par);
            layer.output_norm.apply(&mut x, par);
        }
        Ok(x)
    }
}

/// The mean of each packed text's rows of `hidden` (rows of `dim`, text `b` at rows
/// `starts[b]..starts[b + 1]`) into `out` (`texts * dim`, overwritten); a text without tokens
/// gives zeros.
pub(crate) fn mean_pool_packed(hidden: &[f32], starts: &[usize], dim: usize, out: &mut [f32]) {
    for (w, row) in starts.windows(2).zip(out.chunks_mut(dim.max(1))) {
        row.fill(0.0);
        for tok in hidden[w[0] * dim..w[1] * dim].chunks(dim.max(1)) {
            row.iter_mut().zip(tok).for_each(|(s, v)| *s += v);
        }
        let count = ((w[1] - w[0]) as f32).max(1e-9);
        row.iter_mut().for_each(|s| *s /= count);
    }
}

/// Scales `v` to unit length (a zero vector stays zero) and returns its former norm, at least
/// 1e-12.
pub(crate) fn normalise(v: &mut [f32]) -> f32 {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    norm
}

/// sentence-transformers' mean pooling and L2 normalisation of `hidden` (packed rows of `dim`,
/// text `b` at rows `starts[b]..starts[b + 1]`): one vector per text. A text without tokens
/// (a tokenizer without special tokens, an empty text) gives a zero vector.
pub(crate) fn mean_pool_normalise_packed(
    hidden: &[f32],
    starts: &[usize],
    dim: usize,
) -> Vec<Vec<f32>> {
    let texts = starts.len().saturating_sub(1);
    let mut flat = vec![0f32; texts * dim];
    mean_pool_packed(hidden, starts, dim, &mut flat);
    (0..texts)
        .map(|b| {
            let mut v = flat[b * dim..(b + 1) * dim].to_vec();
            normalise(&mut v);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_each_text_and_handles_texts_without_tokens() {
        // Two texts of width 2: two tokens, then one.
        let hidden = [3.0, 4.0, 1.0, 0.0, 0.0, 2.0];
        let v = mean_pool_normalise_packed(&hidden, &[0, 2, 3], 2);
        let s = 1.0 / (4.0f32 + 4.0).sqrt();
        assert!((v[0][0] - 2.0 * s).abs() < 1e-6 && (v[0][1] - 2.0 * s).abs() < 1e-6);
        assert_eq!(v[1], vec![0.0, 1.0]);
        // Three texts of no token at all: zero vectors, no panic.
        assert_eq!(
            mean_pool_normalise_packed(&[], &[0, 0, 0, 0], 4),
            vec![vec![0.0; 4]; 3]
        );
    }
}
