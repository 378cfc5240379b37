//! BERT encoder (the model behind all-MiniLM-L6-v2).
//!
//! Vendored from candle-transformers 0.11.1, `src/models/bert.rs`
//! (<https://github.com/huggingface/candle>), Copyright the candle authors, licensed under
//! MIT OR Apache-2.0 (the same terms as aisle). Changes from the original:
//!
//! - **LayerNorm has a backward pass**: `candle_nn::LayerNorm` runs a fused op with none (with
//!   it, `backward()` succeeds and no variable gets a gradient, so the model cannot be
//!   fine-tuned). Trainable weights take aisle's fused kernel with its own backward
//!   ([`crate::norm`]) on the CPU, basic tensor ops elsewhere. A test checks that every variable
//!   receives a gradient.
//! - **Attention and the dense layers** are aisle's fused CPU ops with backward passes
//!   ([`crate::attention`], [`crate::linear`]); the query, key and value projections run as one
//!   dense layer. Other devices keep the original's ops (with candle's softmax made of basic
//!   ops, which has a backward).
//! - `BertModel::inference` copies the weights out for `crate::infer`'s plain-buffer forward
//!   pass, which `MiniLm::encode` runs.
//! - GELU is aisle's fused kernel ([`crate::gelu`]), 14% of encoding time was candle's scalar
//!   erf.
//! - Tracing spans, the masked-LM heads and dropout (a no-op in the original) are removed; the
//!   forward pass is otherwise the original's, and the tensor names are the checkpoint's.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    Gelu,
    GeluApproximate,
    Relu,
}

impl HiddenAct {
    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            // The exact (erf) GELU, as Hugging Face's "gelu", fused (see `crate::gelu`).
            HiddenAct::Gelu => crate::gelu::gelu_erf(xs),
            HiddenAct::GeluApproximate => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// The fields of a Hugging Face BERT `config.json` the encoder reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl Config {
    /// all-MiniLM-L6-v2's configuration (the values of its config.json).
    pub fn minilm_l6() -> Config {
        Config {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            model_type: Some("bert".into()),
        }
    }
}

/// Layer normalisation over the last dimension, with a backward pass. Weights that are not
/// variables (a memory-mapped checkpoint, inference only) take candle's fused kernel, which has
/// no backward; variables on the CPU take aisle's fused kernel with one ([`crate::norm`]); other
/// devices, basic ops.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(LayerNorm { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !self.weight.is_variable() && xs.is_contiguous() {
            return candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps as f32);
        }
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            // Fused, with its own backward pass (see `crate::norm`).
            return crate::norm::layer_norm(xs, &self.weight, &self.bias, self.eps);
        }
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        Ok(Self {
            word_embeddings: embedding(
                config.vocab_size,
                config.hidden_size,
                vb.pp("word_embeddings"),
            )?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                config.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                config.type_vocab_size,
                config.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: LayerNorm::load(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (_batch, seq_len) = input_ids.dims2()?;
        let input_embeddings = self.word_embeddings.forward(input_ids)?;
        let token_type_embeddings = self.token_type_embeddings.forward(token_type_ids)?;
        let position_ids: Vec<u32> = (0..seq_len as u32).collect();
        let position_ids = Tensor::new(&position_ids[..], input_ids.device())?;
        let embeddings = (&input_embeddings + token_type_embeddings)?
            .broadcast_add(&self.position_embeddings.forward(&position_ids)?)?;
        self.layer_norm.forward(&embeddings)
    }
}

struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl BertSelfAttention {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let attention_head_size = config.hidden_size / config.num_attention_heads;
        let all_head_size = config.num_attention_heads * attention_head_size;
        let hidden_size = config.hidden_size;
        Ok(Self {
            query: linear(hidden_size, all_head_size, vb.pp("query"))?,
            key: linear(hidden_size, all_head_size, vb.pp("key"))?,
            value: linear(hidden_size, all_head_size, vb.pp("value"))?,
            num_attention_heads: config.num_attention_heads,
            attention_head_size,
        })
    }

    fn transpose_for_scores(&self, xs: &Tensor) -> Result<Tensor> {
        let mut shape = xs.dims().to_vec();
        shape.pop();
        shape.push(self.num_attention_heads);
        shape.push(self.attention_head_size);
        xs.reshape(shape.as_slice())?.transpose(1, 2)?.contiguous()
    }

    /// `attention_mask` is `(batch, seq)`, 1 for tokens and 0 for padding.
    fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        if fused(hidden_states) {
            // One projection to query, key and value side by side, then aisle's fused
            // attention (see `crate::attention`).
            let weight = Tensor::cat(
                &[self.query.weight(), self.key.weight(), self.value.weight()],
                0,
            )?;
            let bias = Tensor::cat(
                &[bias(&self.query)?, bias(&self.key)?, bias(&self.value)?],
                0,
            )?;
            let qkv = crate::linear::linear(hidden_states, &weight, &bias)?;
            return crate::attention::attention(&qkv, attention_mask, self.num_attention_heads);
        }
        let query = self.transpose_for_scores(&self.query.forward(hidden_states)?)?;
        let key = self.transpose_for_scores(&self.key.forward(hidden_states)?)?;
        let value = self.transpose_for_scores(&self.value.forward(hidden_states)?)?;
        let mask = extended_attention_mask(attention_mask, hidden_states.dtype())?;
        let scores = (query.matmul(&key.t()?)? / (self.attention_head_size as f64).sqrt())?
            .broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        probs
            .matmul(&value)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)
    }
}

/// Whether `xs` takes aisle's fused CPU kernels (f32 on the CPU) rather than candle's ops.
fn fused(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

fn bias(layer: &Linear) -> Result<&Tensor> {
    layer
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("a BERT dense layer without a bias".into()))
}

/// A dense layer: aisle's fused matmul-and-bias on the CPU (see `crate::linear`), candle's
/// otherwise.
fn dense(layer: &Linear, xs: &Tensor) -> Result<Tensor> {
    if fused(xs) {
        crate::linear::linear(xs, layer.weight(), bias(layer)?)
    } else {
        layer.forward(xs)
    }
}

/// A dense layer followed by the residual connection and LayerNorm (BERT's self-output and
/// output blocks).
struct DenseResidual {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl DenseResidual {
    fn load(vb: VarBuilder, input: usize, config: &Config) -> Result<Self> {
        Ok(Self {
            dense: linear(input, config.hidden_size, vb.pp("dense"))?,
            layer_norm: LayerNorm::load(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> Result<Tensor> {
        let hidden_states = dense(&self.dense, hidden_states)?;
        self.layer_norm.forward(&(hidden_states + input_tensor)?)
    }
}

struct BertLayer {
    self_attention: BertSelfAttention,
    self_output: DenseResidual,
    intermediate: Linear,
    act: HiddenAct,
    output: DenseResidual,
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let attention = vb.pp("attention");
        Ok(Self {
            self_attention: BertSelfAttention::load(attention.pp("self"), config)?,
            self_output: DenseResidual::load(attention.pp("output"), config.hidden_size, config)?,
            intermediate: linear(
                config.hidden_size,
                config.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            act: config.hidden_act,
            output: DenseResidual::load(vb.pp("output"), config.intermediate_size, config)?,
        })
    }

    fn forward(&self, hidden_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let attended = self.self_attention.forward(hidden_states, attention_mask)?;
        let attention_output = self.self_output.forward(&attended, hidden_states)?;
        let intermediate = self
            .act
            .forward(&dense(&self.intermediate, &attention_output)?)?;
        self.output.forward(&intermediate, &attention_output)
    }
}

/// The BERT encoder: embeddings and transformer layers; the output is the last hidden state.
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pub device: Device,
}

impl BertModel {
    /// Loads the weights under `vb` (with or without a `bert.` prefix, as checkpoints differ).
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let embeddings = BertEmbeddings::load(vb.pp("embeddings"), config)?;
        let encoder = vb.pp("encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(encoder.pp(format!("layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            device: vb.device().clone(),
        })
    }

    /// The last hidden state, `(batch, seq, hidden)`. `attention_mask` is 1 for tokens, 0 for
    /// padding, `(batch, seq)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let mut hidden = self.embeddings.forward(input_ids, token_type_ids)?;
        let mask = attention_mask.to_dtype(hidden.dtype())?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }
}

impl BertModel {
    /// The weights copied out for [`crate::infer`]'s forward pass, or `None` where that pass
    /// does not apply (another device or dtype, an activation other than the exact GELU).
    pub(crate) fn inference(&self) -> Result<Option<crate::infer::Inference>> {
        use crate::infer::{Dense, Inference, Layer, Norm};
        let word = self.embeddings.word_embeddings.embeddings();
        let hidden = word.dim(1)?;
        let heads_divide = self.layers.iter().all(|l| {
            let heads = l.self_attention.num_attention_heads;
            heads > 0 && hidden % heads == 0
        });
        if !self.device.is_cpu()
            || word.dtype() != DType::F32
            || !heads_divide
            || self.layers.iter().any(|l| l.act != HiddenAct::Gelu)
        {
            return Ok(None);
        }
        let norm = |n: &LayerNorm| -> Result<Norm> {
            Ok(Norm {
                gamma: n.weight.to_vec1::<f32>()?,
                beta: n.bias.to_vec1::<f32>()?,
                eps: n.eps as f32,
            })
        };
        let dense = |parts: &[&Linear]| -> Result<Dense> {
            let parts = parts
                .iter()
                .map(|l| Ok((l.weight(), bias(l)?)))
                .collect::<Result<Vec<_>>>()?;
            Dense::of(&parts)
        };
        let table = |e: &Embedding| -> Result<Vec<f32>> { e.embeddings().flatten_all()?.to_vec1() };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.self_attention;
                Ok(Layer {
                    qkv: dense(&[&a.query, &a.key, &a.value])?,
                    attention_out: dense(&[&l.self_output.dense])?,
                    attention_norm: norm(&l.self_output.layer_norm)?,
                    intermediate: dense(&[&l.intermediate])?,
                    output: dense(&[&l.output.dense])?,
                    output_norm: norm(&l.output.layer_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let e = &self.embeddings;
        let first = &self.layers.first();
        Ok(Some(Inference {
            word: table(&e.word_embeddings)?,
            position: table(&e.position_embeddings)?,
            token_type: table(&e.token_type_embeddings)?,
            embedding_norm: norm(&e.layer_norm)?,
            hidden,
            heads: first.map_or(1, |l| l.self_attention.num_attention_heads),
            intermediate: first.map_or(0, |l| l.intermediate.weight().dim(0).unwrap_or(0)),
            layers,
        }))
    }
}

impl BertModel {
    /// Every weight, in the order of [`crate::tune`]'s flat parameter vector: the word,
    /// position and token-type tables, the embeddings' LayerNorm (weight, bias), then for each
    /// layer the query, key and value weights, their biases, the attention output's weight and
    /// bias, its LayerNorm's, the intermediate and output dense layers' and the output
    /// LayerNorm's. `None` where a dense layer has no bias.
    pub(crate) fn tensors(&self) -> Option<Vec<&Tensor>> {
        let e = &self.embeddings;
        let mut out = vec![
            e.word_embeddings.embeddings(),
            e.position_embeddings.embeddings(),
            e.token_type_embeddings.embeddings(),
            &e.layer_norm.weight,
            &e.layer_norm.bias,
        ];
        for l in &self.layers {
            let a = &l.self_attention;
            out.extend([a.query.weight(), a.key.weight(), a.value.weight()]);
            out.extend([a.query.bias()?, a.key.bias()?, a.value.bias()?]);
            for (dense, norm) in [
                (&l.self_output.dense, Some(&l.self_output.layer_norm)),
                (&l.intermediate, None),
                (&l.output.dense, Some(&l.output.layer_norm)),
            ] {
                out.extend([dense.weight(), dense.bias()?]);
                if let Some(n) = norm {
                    out.extend([&n.weight, &n.bias]);
                }
            }
        }
        Some(out)
    }
}

/// `(batch, seq)` of 1 / 0 -> `(batch, 1, 1, seq)` of 0 / the most negative value, added to the
/// attention scores so that padding gets no weight.
fn extended_attention_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let mask = attention_mask.unsqueeze(1)?.unsqueeze(1)?.to_dtype(dtype)?;
    (mask.ones_like()? - &mask)?
        .broadcast_mul(&Tensor::new(f32::MIN, mask.device())?.to_dtype(dtype)?)
}
