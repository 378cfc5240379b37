//! Fine-tuning the BERT encoder on plain buffers: the forward pass, a hand-written backward pass
//! and AdamW over one flat parameter vector, without candle's autograd.
//!
//! Why by hand: with candle's autograd (and aisle's fused attention, dense, LayerNorm and GELU
//! ops), `perf` on `aisle bench minilm` put half of a fine-tuning step outside the matmul
//! micro-kernel: each op's output and each gradient a freshly allocated and zeroed tensor,
//! candle's binary ops for the residual adds and for summing gradients, the transposes and
//! broadcasts of the graph, the thread pools spinning between small ops. Here:
//!
//! - **Packed texts.** The step's texts (queries and products together) are one block of rows,
//!   each text only its own tokens: no padding is computed, where a padded batch of titles
//!   spends a third of its rows on padding. Dense layers, LayerNorm and GELU run over all
//!   rows at once (one gemm call per dense layer and direction); attention runs per text.
//!   The values are the padded model's (padding never reaches a real token or the pooling).
//! - **One forward and one backward per step** for both sides of the loss, so that every
//!   weight gradient is one gemm over all rows, written in place: nothing is summed across
//!   passes, and the gradients do not depend on thread timing.
//! - **Buffers kept across steps.** The activations the backward pass reads (each layer's
//!   input, query-key-value projections, attention output, the residual sums before each
//!   LayerNorm, the FFN's input and GELU output) and the gradient buffers are allocated once
//!   and reused.
//! - **AdamW in one pass** over the flat weights, gradients and moments, with candle-nn's
//!   arithmetic (as [`crate::optim::AdamW`]).
//!
//! The loss is a function of the embeddings, with their gradient, on plain buffers:
//! [`Tuner::train_step_with`] hands it the embeddings and a gradient buffer kept across steps
//! (aisle's fine-tuning passes aisle-model's MNRL, [`aisle_model::mnrl`], the n-gram trainer's
//! loss too). [`Tuner::train_step`] takes any candle expression of the embeddings instead (as
//! [`crate::mnrl_loss`], a candle op over the same MNRL), hands it the embeddings as a variable
//! and takes their gradient back from candle. The tests hold the embeddings and every weight
//! gradient to candle's autograd on the vendored model, a few AdamW steps to the candle path's
//! weights, and the two kinds of step to each other.

use candle_core::{DType, Device, InplaceOp1, Layout, Tensor, Var};
use candle_nn::ParamsAdamW;
use rayon::prelude::*;

use crate::attention::{attention_packed_backward, attention_packed_into};
use crate::linear::{dense_backward, dense_forward};
use crate::norm::{layer_norm_backward_rows, layer_norm_rows_in_place};
use crate::{MiniLm, Result, TransformerError};

/// A range of the flat parameter vector.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

/// The spans of one layer's weights. The query, key and value weights are consecutive, and so
/// are their biases: together they are the `(3 hidden, hidden)` weight of one dense layer.
#[derive(Clone, Copy, Debug)]
struct LayerSpans {
    qkv: (Span, Span),
    attention_out: (Span, Span),
    attention_norm: (Span, Span),
    intermediate: (Span, Span),
    output: (Span, Span),
    output_norm: (Span, Span),
}

/// Where each weight lies in the flat vector (the order of `BertModel::tensors`).
#[derive(Clone, Debug)]
struct Spans {
    word: Span,
    position: Span,
    token_type: Span,
    embedding_norm: (Span, Span),
    layers: Vec<LayerSpans>,
    /// The length of each tensor, in order.
    tensors: Vec<usize>,
    total: usize,
}

/// The sizes of the encoder.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    positions: usize,
    types: usize,
    eps: f32,
}

impl Spans {
    fn of(s: Sizes, layers: usize) -> Spans {
        let mut tensors = Vec::new();
        let mut next = |len: usize| {
            let span = Span {
                start: tensors.iter().sum(),
                len,
            };
            tensors.push(len);
            span
        };
        let h = s.hidden;
        let word = next(s.vocab * h);
        let position = next(s.positions * h);
        let token_type = next(s.types * h);
        let embedding_norm = (next(h), next(h));
        let mut layer_spans = Vec::with_capacity(layers);
        for _ in 0..layers {
            let (q, _, _) = (next(h * h), next(h * h), next(h * h));
            let (qb, _, _) = (next(h), next(h), next(h));
            let qkv = (
                Span {
                    start: q.start,
                    len: 3 * h * h,
                },
                Span {
                    start: qb.start,
                    len: 3 * h,
                },
            );
            layer_spans.push(LayerSpans {
                qkv,
                attention_out: (next(h * h), next(h)),
                attention_norm: (next(h), next(h)),
                intermediate: (next(s.intermediate * h), next(s.intermediate)),
                output: (next(h * s.intermediate), next(h)),
                output_norm: (next(h), next(h)),
            });
        }
        let total = tensors.iter().sum();
        Spans {
            word,
            position,
            token_type,
            embedding_norm,
            layers: layer_spans,
            tensors,
            total,
        }
    }
}

/// The activations of one layer that its backward pass reads.
#[derive(Default)]
struct LayerTape {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attention_sum: Vec<f32>,
    attended: Vec<f32>,
    pre: Vec<f32>,
    act: Vec<f32>,
    output_sum: Vec<f32>,
}

/// The last forward pass: its packed tokens and activations.
#[derive(Default)]
struct Tape {
    /// Text `b` is rows `starts[b]..starts[b + 1]`.
    starts: Vec<usize>,
    ids: Vec<u32>,
    types: Vec<u32>,
    positions: Vec<u32>,
    /// The embeddings before their LayerNorm.
    embedded: Vec<f32>,
    /// `hidden[0]` is the embeddings' output, `hidden[l + 1]` layer `l`'s.
    hidden: Vec<Vec<f32>>,
    layers: Vec<LayerTape>,
    /// Each text's mean-pooled vector before normalisation, and its norm.
    pooled: Vec<f32>,
    norms: Vec<f32>,
    /// Whether a forward pass ran since the last backward pass.
    ready: bool,
}

/// The backward pass's buffers.
#[derive(Default)]
struct Scratch {
    /// The loss's gradient of the embeddings ([`Tuner::train_step_with`]).
    d_embeddings: Vec<f32>,
    d_hidden: Vec<f32>,
    d_sum: Vec<f32>,
    d_act: Vec<f32>,
    d_pre: Vec<f32>,
    d_attended: Vec<f32>,
    d_ctx: Vec<f32>,
    d_qkv: Vec<f32>,
}

/// `buf` as `n` values, grown (never shrunk, never cleared) as needed: every caller overwrites
/// the values it reads.
fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Two disjoint spans of `buf`, the first before the second.
fn two(buf: &mut [f32], a: Span, b: Span) -> (&mut [f32], &mut [f32]) {
    debug_assert!(a.start + a.len <= b.start);
    let (head, tail) = buf.split_at_mut(b.start);
    (&mut head[a.range()], &mut tail[..b.len])
}

/// Fills a contiguous f32 tensor with `values` (as many), in place.
struct Fill<'a>(&'a [f32]);

impl InplaceOp1 for Fill<'_> {
    fn name(&self) -> &'static str {
        "aisle-tuner-store"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<()> {
        let candle_core::CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg(format!(
                "{}: an f32 tensor",
                self.name()
            )));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(format!(
                "{}: a contiguous tensor",
                self.name()
            )));
        };
        if end - start != self.0.len() {
            return Err(candle_core::Error::Msg(format!(
                "{}: {} values for a tensor of {}",
                self.name(),
                self.0.len(),
                end - start
            )));
        }
        data[start..end].copy_from_slice(self.0);
        Ok(())
    }
}

fn msg(what: impl Into<String>) -> TransformerError {
    TransformerError::Candle(candle_core::Error::Msg(what.into()))
}

/// What [`Tuner::train_step`] did.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub loss: f32,
    /// Seconds of the forward pass and the loss.
    pub forward_s: f64,
    /// Seconds of the loss's backward pass, the encoder's and the AdamW step.
    pub backward_s: f64,
}

/// The fine-tuning state of a BERT encoder: its weights as one flat vector, their gradients,
/// AdamW's moments, and the last forward pass. Made by [`MiniLm::tuner`]; the trained weights
/// go back into the model with [`Tuner::store`].
pub struct Tuner {
    tokenizer: tokenizers::Tokenizer,
    sizes: Sizes,
    spans: Spans,
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    adam: ParamsAdamW,
    step_t: i32,
    /// The word ids whose rows of the word table's gradient the last backward pass wrote.
    touched: Vec<u32>,
    tape: Tape,
    scratch: Scratch,
}

impl MiniLm {
    /// The encoder's fine-tuning state with AdamW `adam` (see [`Tuner`]), or `None` where the
    /// plain-buffer path does not apply (a device other than the CPU, a dtype other than f32,
    /// an activation other than the exact GELU, heads that do not divide the width, a dense
    /// layer without a bias): such a model fine-tunes through candle's autograd.
    pub fn tuner(&self, adam: ParamsAdamW) -> Result<Option<Tuner>> {
        let c = &self.config;
        if !self.model.device.is_cpu()
            || c.hidden_act != crate::bert::HiddenAct::Gelu
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        {
            return Ok(None);
        }
        let Some(tensors) = self.model.tensors() else {
            return Ok(None);
        };
        if tensors.iter().any(|t| t.dtype() != DType::F32) {
            return Ok(None);
        }
        let sizes = Sizes {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
            positions: c.max_position_embeddings,
            types: c.type_vocab_size,
            eps: c.layer_norm_eps as f32,
        };
        let spans = Spans::of(sizes, c.num_hidden_layers);
        if tensors.len() != spans.tensors.len() {
            return Err(msg(format!(
                "{} weight tensors for a layout of {}",
                tensors.len(),
                spans.tensors.len()
            )));
        }
        let mut params = Vec::with_capacity(spans.total);
        for (i, (t, &len)) in tensors.iter().zip(&spans.tensors).enumerate() {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            if values.len() != len {
                return Err(msg(format!(
                    "weight tensor {i} has {} values, the configuration gives {len}",
                    values.len()
                )));
            }
            params.extend(values);
        }
        let n = params.len();
        Ok(Some(Tuner {
            tokenizer: self.packer.clone(),
            sizes,
            spans,
            params,
            grads: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            adam,
            step_t: 0,
            touched: Vec::new(),
            tape: Tape::default(),
            scratch: Scratch::default(),
        }))
    }
}

impl Tuner {
    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.sizes.hidden
    }

    /// The AdamW steps taken.
    pub fn steps(&self) -> i32 {
        self.step_t
    }

    /// Tokenises `texts` into the tape's packed rows (each text without padding); on an error
    /// the tape is left as it was (and not ready for a backward pass).
    fn pack(&mut self, texts: &[&str]) -> Result<()> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TransformerError::Tokenizer(e.to_string()))?;
        let packed = crate::Packed::of(&enc)?;
        let mut positions = Vec::with_capacity(packed.ids.len());
        for (b, w) in packed.starts.windows(2).enumerate() {
            let len = w[1] - w[0];
            if len > self.sizes.positions {
                return Err(msg(format!(
                    "text {b}: {len} tokens, past the model's {} positions",
                    self.sizes.positions
                )));
            }
            positions.extend(0..len as u32);
        }
        for (&id, &ty) in packed.ids.iter().zip(&packed.types) {
            if id as usize >= self.sizes.vocab || ty as usize >= self.sizes.types {
                return Err(msg(format!(
                    "token id {id} or type {ty} outside the model's vocabulary"
                )));
            }
        }
        let t = &mut self.tape;
        (t.ids, t.types, t.starts, t.positions) =
            (packed.ids, packed.types, packed.starts, positions);
        Ok(())
    }

    /// Unit-length embeddings of `texts` (`texts.len() * dim` values, row-major), kept for
    /// [`Tuner::backward`]: the values of [`MiniLm::encode`] for the current weights.
    pub fn forward(&mut self, texts: &[&str]) -> Result<Vec<f32>> {
        // A failed pass leaves nothing for `backward` to mix with the previous one.
        self.tape.ready = false;
        self.pack(texts)?;
        let s = self.sizes;
        let (h, inter) = (s.hidden, s.intermediate);
        let p = &self.params;
        let sp = &self.spans;
        let t = &mut self.tape;
        let n = t.ids.len();
        // Embeddings: word + position + token type, then LayerNorm.
        let word = &p[sp.word.range()];
        let position = &p[sp.position.range()];
        let token_type = &p[sp.token_type.range()];
        let embedded = sized(&mut t.embedded, n * h);
        embedded
            .par_chunks_mut(h)
            .zip(t.ids.par_iter().zip(&t.types).zip(&t.positions))
            .for_each(|(row, ((&id, &ty), &pos))| {
                let w = &word[id as usize * h..][..h];
                let q = &position[pos as usize * h..][..h];
                let y = &token_type[ty as usize * h..][..h];
                for (((o, &a), &b), &c) in row.iter_mut().zip(w).zip(q).zip(y) {
                    *o = a + b + c;
                }
            });
        let layers = sp.layers.len();
        t.hidden.resize_with(layers + 1, Vec::new);
        t.layers.resize_with(layers, LayerTape::default);
        {
            let x0 = sized(&mut t.hidden[0], n * h);
            x0.copy_from_slice(&t.embedded[..n * h]);
            let (g, b) = sp.embedding_norm;
            layer_norm_rows_in_place(x0, &p[g.range()], &p[b.range()], s.eps, true);
        }
        for (l, ls) in sp.layers.iter().enumerate() {
            let (done, rest) = t.hidden.split_at_mut(l + 1);
            let x = &done[l][..n * h];
            let out = sized(&mut rest[0], n * h);
            let lt = &mut t.layers[l];
            let qkv = sized(&mut lt.qkv, n * 3 * h);
            dense_forward(
                x,
                &p[ls.qkv.0.range()],
                &p[ls.qkv.1.range()],
                None,
                qkv,
                (n, 3 * h, h),
                true,
            );
            let ctx = sized(&mut lt.ctx, n * h);
            attention_packed_into(
                &lt.qkv[..n * 3 * h],
                &t.starts,
                (s.heads, h / s.heads),
                ctx,
                true,
            );
            let sum = sized(&mut lt.attention_sum, n * h);
            dense_forward(
                &lt.ctx[..n * h],
                &p[ls.attention_out.0.range()],
                &p[ls.attention_out.1.range()],
                Some(x),
                sum,
                (n, h, h),
                true,
            );
            let attended = sized(&mut lt.attended, n * h);
            attended.copy_from_slice(&lt.attention_sum[..n * h]);
            let (g, b) = ls.attention_norm;
            layer_norm_rows_in_place(attended, &p[g.range()], &p[b.range()], s.eps, true);
            let pre = sized(&mut lt.pre, n * inter);
            dense_forward(
                &lt.attended[..n * h],
                &p[ls.intermediate.0.range()],
                &p[ls.intermediate.1.range()],
                None,
                pre,
                (n, inter, h),
                true,
            );
            let act = sized(&mut lt.act, n * inter);
            crate::gelu::gelu_erf_into(&lt.pre[..n * inter], act, true);
            let sum = sized(&mut lt.output_sum, n * h);
            dense_forward(
                &lt.act[..n * inter],
                &p[ls.output.0.range()],
                &p[ls.output.1.range()],
                Some(&lt.attended[..n * h]),
                sum,
                (n, h, inter),
                true,
            );
            out.copy_from_slice(&lt.output_sum[..n * h]);
            let (g, b) = ls.output_norm;
            layer_norm_rows_in_place(out, &p[g.range()], &p[b.range()], s.eps, true);
        }
        // Mean pooling over each text's tokens, then L2 normalisation (as `encode`).
        let texts_n = t.starts.len() - 1;
        let pooled = sized(&mut t.pooled, texts_n * h);
        crate::infer::mean_pool_packed(&t.hidden[layers][..n * h], &t.starts, h, pooled);
        t.norms.clear();
        let mut out = pooled.to_vec();
        for row in out.chunks_mut(h) {
            t.norms.push(crate::infer::normalise(row));
        }
        t.ready = true;
        Ok(out)
    }

    /// The weight gradients of the last [`Tuner::forward`] given the gradient of its
    /// embeddings (`texts * dim` values), into the gradient vector (overwritten).
    pub fn backward(&mut self, d_embeddings: &[f32]) -> Result<()> {
        let s = self.sizes;
        let (h, inter) = (s.hidden, s.intermediate);
        let t = &mut self.tape;
        if !t.ready {
            return Err(msg("Tuner::backward without a forward pass before it"));
        }
        let texts_n = t.starts.len() - 1;
        if d_embeddings.len() != texts_n * h {
            return Err(msg(format!(
                "{} embedding gradients for {texts_n} texts of {h}",
                d_embeddings.len()
            )));
        }
        t.ready = false;
        let n = t.ids.len();
        let p = &self.params;
        let sp = &self.spans;
        let g = &mut self.grads;
        let sc = &mut self.scratch;
        // Normalisation and mean pooling: du = (de - e (e . de)) / |u|, spread over the
        // text's tokens.
        let d_hidden = sized(&mut sc.d_hidden, n * h);
        for b in 0..texts_n {
            let norm = t.norms[b];
            let u = &t.pooled[b * h..][..h];
            let de = &d_embeddings[b * h..][..h];
            let dot: f32 = u.iter().zip(de).map(|(a, b)| a * b).sum::<f32>() / norm;
            let (r0, r1) = (t.starts[b], t.starts[b + 1]);
            let scale = 1.0 / (((r1 - r0) as f32).max(1e-9) * norm);
            for row in d_hidden[r0 * h..r1 * h].chunks_mut(h) {
                for ((o, &d), &uv) in row.iter_mut().zip(de).zip(u) {
                    *o = (d - uv / norm * dot) * scale;
                }
            }
        }
        for (l, ls) in sp.layers.iter().enumerate().rev() {
            let lt = &t.layers[l];
            let x = &t.hidden[l][..n * h];
            // Output LayerNorm, then the output dense layer (its residual is `attended`).
            let d_sum = sized(&mut sc.d_sum, n * h);
            let (dg, db) = two(g, ls.output_norm.0, ls.output_norm.1);
            layer_norm_backward_rows(
                &lt.output_sum[..n * h],
                &p[ls.output_norm.0.range()],
                &sc.d_hidden[..n * h],
                s.eps,
                d_sum,
                dg,
                db,
            );
            let d_act = sized(&mut sc.d_act, n * inter);
            let (dw, db) = two(g, ls.output.0, ls.output.1);
            dense_backward(
                &lt.act[..n * inter],
                &p[ls.output.0.range()],
                &sc.d_sum[..n * h],
                (n, h, inter),
                Some((d_act, false)),
                dw,
                db,
            );
            let d_pre = sized(&mut sc.d_pre, n * inter);
            crate::gelu::gelu_erf_backward_into(
                &lt.pre[..n * inter],
                &sc.d_act[..n * inter],
                d_pre,
            );
            // The intermediate layer; `attended`'s gradient is the residual's plus its own.
            let d_attended = sized(&mut sc.d_attended, n * h);
            d_attended.copy_from_slice(&sc.d_sum[..n * h]);
            let (dw, db) = two(g, ls.intermediate.0, ls.intermediate.1);
            dense_backward(
                &lt.attended[..n * h],
                &p[ls.intermediate.0.range()],
                &sc.d_pre[..n * inter],
                (n, inter, h),
                Some((d_attended, true)),
                dw,
                db,
            );
            // Attention LayerNorm, then the attention output layer (its residual is `x`).
            let d_sum = sized(&mut sc.d_sum, n * h);
            let (dg, db) = two(g, ls.attention_norm.0, ls.attention_norm.1);
            layer_norm_backward_rows(
                &lt.attention_sum[..n * h],
                &p[ls.attention_norm.0.range()],
                &sc.d_attended[..n * h],
                s.eps,
                d_sum,
                dg,
                db,
            );
            let d_ctx = sized(&mut sc.d_ctx, n * h);
            let (dw, db) = two(g, ls.attention_out.0, ls.attention_out.1);
            dense_backward(
                &lt.ctx[..n * h],
                &p[ls.attention_out.0.range()],
                &sc.d_sum[..n * h],
                (n, h, h),
                Some((d_ctx, false)),
                dw,
                db,
            );
            let d_qkv = sized(&mut sc.d_qkv, n * 3 * h);
            attention_packed_backward(
                &lt.qkv[..n * 3 * h],
                &t.starts,
                (s.heads, h / s.heads),
                &sc.d_ctx[..n * h],
                d_qkv,
            );
            // The query-key-value layer; `x`'s gradient is the residual's plus its own.
            let d_hidden = sized(&mut sc.d_hidden, n * h);
            d_hidden.copy_from_slice(&sc.d_sum[..n * h]);
            let (dw, db) = two(g, ls.qkv.0, ls.qkv.1);
            dense_backward(
                x,
                &p[ls.qkv.0.range()],
                &sc.d_qkv[..n * 3 * h],
                (n, 3 * h, h),
                Some((d_hidden, true)),
                dw,
                db,
            );
        }
        // The embeddings' LayerNorm, then the tables: rows added in token order.
        let d_sum = sized(&mut sc.d_sum, n * h);
        let (dg, db) = two(g, sp.embedding_norm.0, sp.embedding_norm.1);
        layer_norm_backward_rows(
            &t.embedded[..n * h],
            &p[sp.embedding_norm.0.range()],
            &sc.d_hidden[..n * h],
            s.eps,
            d_sum,
            dg,
            db,
        );
        let word = &mut g[sp.word.range()];
        for &id in &self.touched {
            word[id as usize * h..][..h].fill(0.0);
        }
        g[sp.position.range()].fill(0.0);
        g[sp.token_type.range()].fill(0.0);
        for (r, d) in sc.d_sum[..n * h].chunks(h).enumerate() {
            for (span, index) in [
                (sp.word, t.ids[r]),
                (sp.position, t.positions[r]),
                (sp.token_type, t.types[r]),
            ] {
                let row = &mut g[span.start + index as usize * h..][..h];
                row.iter_mut().zip(d).for_each(|(a, v)| *a += v);
            }
        }
        self.touched.clear();
        self.touched.extend_from_slice(&t.ids);
        self.touched.sort_unstable();
        self.touched.dedup();
        Ok(())
    }

    /// One AdamW step over every weight with the gradients of the last [`Tuner::backward`]:
    /// decoupled weight decay, bias-corrected moments, candle-nn's arithmetic.
    pub fn step(&mut self) {
        const CHUNK: usize = 1 << 15;
        self.step_t += 1;
        let a = &self.adam;
        let (b1, b2) = (a.beta1 as f32, a.beta2 as f32);
        let scale_m = (1.0 / (1.0 - a.beta1.powi(self.step_t))) as f32;
        let scale_v = (1.0 / (1.0 - a.beta2.powi(self.step_t))) as f32;
        let (lr, eps) = (a.lr as f32, a.eps as f32);
        let keep = 1.0 - lr * a.weight_decay as f32;
        self.params
            .par_chunks_mut(CHUNK)
            .zip(self.grads.par_chunks(CHUNK))
            .zip(
                self.m
                    .par_chunks_mut(CHUNK)
                    .zip(self.v.par_chunks_mut(CHUNK)),
            )
            .for_each(|((theta, g), (m, v))| {
                for (((t, &g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let step = (*m * scale_m) / ((*v * scale_v).sqrt() + eps);
                    *t = *t * keep - lr * step;
                }
            });
    }

    /// One fine-tuning step with a loss on plain buffers: embeds `texts`, hands `loss` the
    /// embeddings (`texts * dim` values, row-major) and a buffer for its gradient with respect
    /// to them (as long; `loss` writes every value, as aisle-model's
    /// [`mnrl_into`](aisle_model::mnrl::mnrl_into) does), back-propagates that gradient through
    /// the encoder and takes an AdamW step. `loss` returns the loss's value. The gradient buffer
    /// is kept across steps. [`Step::forward_s`] includes the whole loss, value and gradient.
    pub fn train_step_with(
        &mut self,
        texts: &[&str],
        loss: impl FnOnce(&[f32], &mut [f32]) -> f32,
    ) -> Result<Step> {
        let t0 = std::time::Instant::now();
        let e = self.forward(texts)?;
        let mut d_e = std::mem::take(&mut self.scratch.d_embeddings);
        let value = loss(&e, sized(&mut d_e, e.len()));
        let forward_s = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let done = self.backward(&d_e[..e.len()]);
        self.scratch.d_embeddings = d_e;
        done?;
        self.step();
        Ok(Step {
            loss: value,
            forward_s,
            backward_s: t1.elapsed().as_secs_f64(),
        })
    }

    /// One fine-tuning step: embeds `texts`, evaluates `loss` on the `(texts, dim)` tensor of
    /// embeddings (a candle expression, differentiated by candle), back-propagates its
    /// gradient through the encoder and takes an AdamW step (none if the loss does not depend
    /// on the embeddings). For any candle loss; MNRL on plain buffers is
    /// [`Tuner::train_step_with`].
    pub fn train_step(
        &mut self,
        texts: &[&str],
        loss: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Step> {
        let t0 = std::time::Instant::now();
        let e = self.forward(texts)?;
        let var = Var::from_vec(e, (texts.len(), self.dim()), &Device::Cpu)?;
        let value = loss(var.as_tensor())?;
        let forward_s = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let grads = value.backward()?;
        // A loss that does not depend on the embeddings gives no weight a gradient: no step,
        // as candle's optimisers skip variables without one.
        if let Some(g) = grads.get(var.as_tensor()) {
            self.backward(&g.flatten_all()?.to_vec1::<f32>()?)?;
            self.step();
        }
        Ok(Step {
            loss: value.to_scalar::<f32>()?,
            forward_s,
            backward_s: t1.elapsed().as_secs_f64(),
        })
    }

    /// The gradient of the weight tensor `i` (in the order of the model's weights, see
    /// `BertModel::tensors`) from the last backward pass. For tests.
    pub fn gradient(&self, i: usize) -> Option<&[f32]> {
        let start: usize = self.spans.tensors.get(..i)?.iter().sum();
        Some(&self.grads[start..start + *self.spans.tensors.get(i)?])
    }

    /// Writes the current weights into `encoder`'s tensors (those of the [`MiniLm`] this
    /// tuner was made from, or of one loaded from the same files), in place: a trainable
    /// encoder's `VarMap` then holds them too, and `encoder` encodes with them.
    pub fn store(&self, encoder: &mut MiniLm) -> Result<()> {
        let Some(tensors) = encoder.model.tensors() else {
            return Err(msg("the encoder has a dense layer without a bias"));
        };
        if tensors.len() != self.spans.tensors.len() {
            return Err(msg(format!(
                "an encoder of {} weight tensors for a tuner of {}",
                tensors.len(),
                self.spans.tensors.len()
            )));
        }
        // Every length is checked before anything is written.
        for (i, (t, &len)) in tensors.iter().zip(&self.spans.tensors).enumerate() {
            if t.elem_count() != len || t.dtype() != DType::F32 {
                return Err(msg(format!(
                    "weight tensor {i}: {} values of {:?} for {len} f32 values",
                    t.elem_count(),
                    t.dtype()
                )));
            }
        }
        let mut start = 0;
        for (t, &len) in tensors.iter().zip(&self.spans.tensors) {
            t.inplace_op1(&Fill(&self.params[start..start + len]))?;
            start += len;
        }
        // A model from `MiniLm::load` keeps a plain-buffer copy of its weights for `encode`.
        if encoder.frozen.is_some() {
            encoder.frozen = encoder.model.inference()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::seeded;

    use crate::tiny::SAMPLE_TEXTS as TEXTS;

    fn tiny() -> (tempfile::TempDir, MiniLm, candle_nn::VarMap) {
        let dir = tempfile::tempdir().expect("tempdir");
        let words: Vec<String> = crate::tiny::SAMPLE_WORDS
            .split(' ')
            .map(str::to_owned)
            .collect();
        crate::tiny::write_model_folder(dir.path(), &words).expect("tiny model");
        let (model, varmap) = MiniLm::load_trainable(dir.path()).expect("load");
        (dir, model, varmap)
    }

    fn adam(lr: f64) -> ParamsAdamW {
        ParamsAdamW {
            lr,
            weight_decay: 0.01,
            ..ParamsAdamW::default()
        }
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The packed forward pass gives the padded candle model's embeddings, and the hand-written
    /// backward pass gives candle's autograd gradient for every weight tensor.
    #[test]
    fn embeddings_and_every_gradient_match_candle_autograd() -> Result<()> {
        let (_dir, model, _varmap) = tiny();
        let mut tuner = model.tuner(adam(1e-3))?.expect("a tuner for the tiny BERT");
        let ours = tuner.forward(&TEXTS)?;
        let theirs = model.embed_batch(&TEXTS)?;
        assert_close(
            &ours,
            &theirs.flatten_all()?.to_vec1::<f32>()?,
            1e-5,
            "embeddings",
        );
        // A loss that weighs every coordinate differently.
        let r = seeded(TEXTS.len() * tuner.dim(), 7);
        let rt = Tensor::from_vec(r.clone(), theirs.shape(), &Device::Cpu)?;
        let grads = (theirs * &rt)?.sum_all()?.backward()?;
        tuner.backward(&r)?;
        let tensors = model.model.tensors().expect("biases");
        assert_eq!(tensors.len(), 5 + 16 * 2);
        for (i, t) in tensors.iter().enumerate() {
            let want = grads
                .get(t)
                .map(|g| g.flatten_all()?.to_vec1::<f32>())
                .transpose()?
                .unwrap_or_else(|| vec![0.0; t.elem_count()]);
            let got = tuner.gradient(i).expect("gradient");
            assert_close(got, &want, 1e-4, &format!("gradient of tensor {i}"));
        }
        // A second pass over other texts: the word rows of the first are cleared, not summed.
        tuner.forward(&["green tea", "lamp"])?;
        let r2 = seeded(2 * tuner.dim(), 8);
        tuner.backward(&r2)?;
        let e2 = model.embed_batch(&["green tea", "lamp"])?;
        let rt2 = Tensor::from_vec(r2, e2.shape(), &Device::Cpu)?;
        let grads = (e2 * rt2)?.sum_all()?.backward()?;
        let want = grads
            .get(tensors[0])
            .expect("word gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_close(
            tuner.gradient(0).expect("word"),
            &want,
            1e-4,
            "word table, second pass",
        );
        Ok(())
    }

    /// AdamW over the flat vector matches aisle's candle-path AdamW on the same gradients.
    #[test]
    fn adamw_steps_match_the_candle_path() -> Result<()> {
        let (_dir, model, varmap) = tiny();
        let params = adam(1e-2);
        let mut tuner = model.tuner(params.clone())?.expect("tuner");
        let mut theirs = crate::optim::AdamW::new(varmap.all_vars(), params)?;
        let tensors = model.model.tensors().expect("biases");
        for step in 0..3u32 {
            let e = model.embed_batch(&TEXTS)?;
            let r = Tensor::from_vec(seeded(e.elem_count(), step), e.shape(), &Device::Cpu)?;
            let grads = (e * r)?.sum_all()?.backward()?;
            // The same gradients into the tuner, then one step each.
            let mut start = 0;
            for t in &tensors {
                let g = match grads.get(t) {
                    Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                    None => vec![0.0; t.elem_count()],
                };
                tuner.grads[start..start + g.len()].copy_from_slice(&g);
                start += g.len();
            }
            tuner.step();
            theirs.step(&grads)?;
        }
        let mut start = 0;
        for (i, t) in tensors.iter().enumerate() {
            let w = t.flatten_all()?.to_vec1::<f32>()?;
            assert_close(
                &tuner.params[start..start + w.len()],
                &w,
                1e-6,
                &format!("tensor {i}"),
            );
            start += w.len();
        }
        Ok(())
    }

    /// Training steps lower the loss, and `store` hands the trained weights to the encoder.
    #[test]
    fn train_steps_lower_the_loss_and_store_writes_the_weights_back() -> Result<()> {
        let (_dir, mut model, varmap) = tiny();
        let mut tuner = model.tuner(adam(1e-2))?.expect("tuner");
        let queries = ["red", "blue lamp", "tea", "desk chair"];
        let docs = [
            "red shoe",
            "blue lamp desk",
            "green tea cup",
            "chair desk here",
        ];
        let texts: Vec<&str> = queries.iter().chain(&docs).copied().collect();
        let loss = |e: &Tensor| {
            let q = e.narrow(0, 0, 4)?;
            let d = e.narrow(0, 4, 4)?;
            crate::mnrl_loss(&q, &d, 20.0).map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        let first = tuner.train_step(&texts, loss)?.loss;
        let mut last = first;
        for _ in 0..20 {
            last = tuner.train_step(&texts, loss)?.loss;
        }
        assert!(last < first * 0.5, "loss {first} -> {last}");
        assert_eq!(tuner.steps(), 21);
        let before = model.encode(&TEXTS, 4)?;
        tuner.store(&mut model)?;
        let after = model.encode(&TEXTS, 4)?;
        let want = tuner.forward(&TEXTS)?;
        assert_close(&after.concat(), &want, 1e-5, "stored weights");
        assert!(before
            .concat()
            .iter()
            .zip(&want)
            .any(|(a, b)| (a - b).abs() > 1e-3));
        // The VarMap (what a fine-tuning run saves) holds the stored weights.
        let word = varmap
            .data()
            .lock()
            .map_err(|_| msg("poisoned"))?
            .get("embeddings.word_embeddings.weight")
            .expect("word table")
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_close(&word, &tuner.params[..word.len()], 0.0, "varmap");
        Ok(())
    }

    /// A step with aisle-model's MNRL on plain buffers and one with [`crate::mnrl_loss`] (the
    /// candle op over the same function) through candle take the same steps, bit for bit.
    #[test]
    fn plain_buffer_and_candle_loss_steps_agree() -> Result<()> {
        let (_dir, model, _varmap) = tiny();
        let mut plain = model.tuner(adam(1e-2))?.expect("tuner");
        let mut candle = model.tuner(adam(1e-2))?.expect("tuner");
        let texts = [
            "red",
            "tea",
            "blue lamp",
            "red shoe",
            "green tea cup",
            "lamp desk",
        ];
        let dim = plain.dim();
        // Two queries against four docs, doc 2 masked for query 1.
        let masked = [false, false, false, false, false, false, true, false];
        for _ in 0..3 {
            let ours = plain.train_step_with(&texts, |e, d_e| {
                let ((zq, zc), (d_q, d_c)) = (e.split_at(2 * dim), d_e.split_at_mut(2 * dim));
                let is_masked = |i: usize, j: usize| masked[i * 4 + j];
                aisle_model::mnrl::mnrl_into(zq, zc, dim, 0, 20.0, &is_masked, d_q, d_c).loss as f32
            })?;
            let theirs = candle.train_step(&texts, |e| {
                let (q, d) = (e.narrow(0, 0, 2)?, e.narrow(0, 2, 4)?);
                crate::mnrl_loss_masked(&q, &d, 20.0, Some(&masked))
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            })?;
            assert_eq!(ours.loss, theirs.loss);
        }
        assert_close(&plain.params, &candle.params, 0.0, "weights");
        Ok(())
    }

    #[test]
    fn a_backward_pass_needs_a_forward_pass_and_the_right_gradient_length() -> Result<()> {
        let (_dir, mut model, _varmap) = tiny();
        // Without truncation, so that a text can run past the model's positions.
        model
            .packer
            .with_truncation(None)
            .map_err(|e| TransformerError::Tokenizer(e.to_string()))?;
        let mut tuner = model.tuner(adam(1e-3))?.expect("tuner");
        let err = tuner.backward(&[0.0; 32]).unwrap_err().to_string();
        assert!(err.contains("without a forward pass"), "{err}");
        tuner.forward(&["red shoe", "tea"])?;
        let err = tuner.backward(&[0.0; 3]).unwrap_err().to_string();
        assert!(
            err.contains("3 embedding gradients for 2 texts of 32"),
            "{err}"
        );
        Ok(())
    }
}
