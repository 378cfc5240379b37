//! The BERT forward pass for encoding, on plain buffers (no autograd, no candle tensors).
//!
//! Why by hand: encoding runs no backward pass, and through candle each op allocated its
//! output, ran as its own pass over memory and was dispatched to one of three thread pools.
//! `perf` on `aisle bench minilm` (after the fused attention and dense layers) put about half
//! of encoding time outside the matmul micro-kernel: page faults and clearing of new buffers,
//! copies (concatenating the query, key and value weights), the residual adds, the pools'
//! spinning. Here a batch allocates its six buffers once and every layer writes into them:
//!
//! - a dense layer's output starts as its bias (plus the residual, for the two that have one)
//!   and gemm accumulates into it, the same gemm crate and kernels as candle's;
//! - GELU, LayerNorm and attention are the fused kernels of [`crate::gelu`], [`crate::norm`]
//!   and [`crate::attention`], in parallel over rows or texts on rayon's pool.
//!
//! The values are the candle model's: the tests compare the two on a small BERT, and the
//! parity test holds all-MiniLM-L6-v2 against sentence-transformers through this path.

use candle_core::{Error, Result, Tensor};

use crate::attention::{attention_into, Dims};

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
    /// The last hidden state, `rows * len * hidden` values, of `rows` texts of `len` token ids
    /// (and token type ids, and 1 / 0 attention mask values). Each op runs on rayon's pool
    /// when `par`, on the calling thread otherwise (for batches encoded side by side).
    pub fn forward(
        &self,
        ids: &[u32],
        types: &[u32],
        mask: &[u32],
        (rows, len): (usize, usize),
        par: bool,
    ) -> Result<Vec<f32>> {
        let (h, n) = (self.hidden, rows * len);
        if ids.len() != n || types.len() != n || mask.len() != n {
            return Err(Error::Msg(format!(
                "{} ids, {} types and {} mask values for {rows} texts of {len}",
                ids.len(),
                types.len(),
                mask.len()
            )));
        }
        if len * h > self.position.len() {
            return Err(Error::Msg(format!(
                "{len} tokens, past the model's {} positions",
                self.position.len() / h
            )));
        }
        let mut x = vec![0f32; n * h];
        for (t, row) in x.chunks_mut(h).enumerate() {
            let (id, ty) = (ids[t] as usize, types[t] as usize);
            let (Some(w), Some(ty)) = (
                self.word.get(id * h..(id + 1) * h),
                self.token_type.get(ty * h..(ty + 1) * h),
            ) else {
                return Err(Error::Msg(format!(
                    "token id {id} or type {ty} outside the model's vocabulary"
                )));
            };
            let p = &self.position[(t % len) * h..][..h];
            for (((o, &a), &b), &c) in row.iter_mut().zip(w).zip(p).zip(ty) {
                *o = a + b + c;
            }
        }
        self.embedding_norm.apply(&mut x, par);
        let maskf: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
        let dims = Dims {
            batch: rows,
            seq: len,
            heads: self.heads,
            head: h / self.heads.max(1),
        };
        let mut qkv = vec![0f32; n * 3 * h];
        let mut ctx = vec![0f32; n * h];
        let mut attended = vec![0f32; n * h];
        let mut pre = vec![0f32; n * self.intermediate];
        let mut act = vec![0f32; n * self.intermediate];
        for layer in &self.layers {
            layer.qkv.apply(&x, None, &mut qkv, n, par);
            attention_into(&qkv, &maskf, dims, &mut ctx, par);
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

/// sentence-transformers' mean pooling and L2 normalisation of `hidden` (`rows * len * dim`)
/// over the tokens whose mask is 1: one vector per text.
pub(crate) fn mean_pool_normalise_rows(
    hidden: &[f32],
    mask: &[u32],
    (rows, len): (usize, usize),
    dim: usize,
) -> Vec<Vec<f32>> {
    if len == 0 || dim == 0 {
        // No token in any text (a tokenizer without special tokens, every text empty).
        return vec![vec![0.0; dim]; rows];
    }
    hidden
        .chunks(len * dim)
        .zip(mask.chunks(len))
        .map(|(text, m)| {
            let mut sum = vec![0f32; dim];
            let mut count = 0f32;
            for (tok, &mk) in text.chunks(dim).zip(m) {
                if mk != 0 {
                    count += 1.0;
                    sum.iter_mut().zip(tok).for_each(|(s, v)| *s += v);
                }
            }
            let count = count.max(1e-9);
            sum.iter_mut().for_each(|s| *s /= count);
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            sum.iter_mut().for_each(|s| *s /= norm);
            sum
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_skips_padding_and_handles_texts_without_tokens() {
        // Two texts of 2 tokens, width 2; the second's last token is padding.
        let hidden = [3.0, 4.0, 1.0, 0.0, 0.0, 2.0, 9.0, 9.0];
        let mask = [1, 1, 1, 0];
        let v = mean_pool_normalise_rows(&hidden, &mask, (2, 2), 2);
        let s = 1.0 / (4.0f32 + 4.0).sqrt();
        assert!((v[0][0] - 2.0 * s).abs() < 1e-6 && (v[0][1] - 2.0 * s).abs() < 1e-6);
        assert_eq!(v[1], vec![0.0, 1.0]);
        // Three texts of no token at all: zero vectors, no panic.
        assert_eq!(
            mean_pool_normalise_rows(&[], &[], (3, 0), 4),
            vec![vec![0.0; 4]; 3]
        );
    }
}
