//! Fine-tuning a transformer tower (all-MiniLM-L6-v2, `aisle-transformer`) on the retailer's
//! training pairs, with aisle's negative samplers.
//!
//! One step takes the next `B` pairs of the epoch's shuffled order (skipping a pair whose query
//! or product is already in the batch, so that in-batch negatives are true negatives), lets the
//! sampler draw `k` negatives per pair (TB-HNS, random, popularity, BM25 or a mixture; `k = 0`
//! is in-batch only), embeds the `B` queries and the `B (1 + k)` products with the one shared
//! encoder, and minimises sentence-transformers' MultipleNegativesRankingLoss with hard
//! negatives: each query against every product of the step, scaled cosine, cross-entropy.
//! Products that are positives of a query (other than its own target) are masked out of its
//! softmax. The loss is aisle-model's [`aisle_model::mnrl`], the n-gram trainer's too (there
//! each query meets only its own sampled negatives; here every query meets every product).
//! AdamW at a constant learning rate: no warm-up or decay, and no dropout (aisle's BERT has
//! none), unlike sentence-transformers' fit. The queries and products of a step run as one
//! packed forward and backward pass on plain buffers (`aisle_transformer::tune`), or through
//! candle's autograd with aisle's in-place AdamW where that does not apply (another device or
//! dtype): the same values.
//!
//! ANCE is refused: its refresh re-indexes with the n-gram model, which a transformer run does
//! not train. The trained weights are written as a complete model folder (safetensors, config,
//! tokenizer) that [`MiniLm::load`] reads, to a temporary folder renamed into place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aisle_core::io::{slug, write_atomic};
use aisle_core::rng::Rng;
use aisle_core::{Dataset, ProductId, Split};
use aisle_model::{FeaturizerConfig, Model, ModelConfig};
use aisle_transformer::optim::AdamW;
use aisle_transformer::{mnrl_loss_masked, product_text, MiniLm, TransformerError, TunedOn};
use candle_nn::ParamsAdamW;
use serde::Serialize;

use crate::data::{Pair, TrainData};
use crate::error::{Result, TrainError};
use crate::loss::mnrl_into;
use crate::overrides::Overrides;
use crate::sampler::{self, SampleCtx, SamplerSpec};

/// How a transformer tower is fine-tuned.
#[derive(Clone, Debug, Serialize)]
pub struct TuneConfig {
    pub steps: u64,
    /// Pairs per step.
    pub batch_size: usize,
    /// Sampled negatives per pair (0 with in-batch only).
    pub negatives: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Scores are `scale * cosine` (20 in sentence-transformers).
    pub scale: f64,
    pub seed: u64,
    #[serde(serialize_with = "display")]
    pub sampler: SamplerSpec,
    /// BM25's field boosts for BM25 negatives.
    pub bm25: aisle_search::FieldBoosts,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            steps: 100,
            batch_size: 32,
            negatives: 1,
            lr: 2e-5,
            weight_decay: 0.01,
            scale: 20.0,
            seed: 42,
            sampler: SamplerSpec::Taxonomy(Default::default()),
            bm25: aisle_search::FieldBoosts::default(),
        }
    }
}

impl TuneConfig {
    /// The fine-tuning of `aisle train --tower minilm`: the defaults with 16 pairs a step and
    /// one negative per pair, under the sampler, steps, batch size, negatives and seed that `o`
    /// gives (the n-gram tower's settings do not apply).
    pub fn overridden(o: &Overrides) -> TuneConfig {
        let defaults = TuneConfig::default();
        TuneConfig {
            steps: o.steps.unwrap_or(defaults.steps),
            batch_size: o.batch_size.unwrap_or(16),
            negatives: o.negatives.unwrap_or(1),
            seed: o.seed.unwrap_or(defaults.seed),
            sampler: o.sampler.clone().unwrap_or(defaults.sampler.clone()),
            ..defaults
        }
    }
}

/// What a fine-tuning run did.
#[derive(Clone, Debug, Serialize)]
pub struct TuneSummary {
    pub steps: u64,
    pub pairs: u64,
    /// Seconds of the steps (the data and sampler set-up before the first step excluded).
    pub train_s: f64,
    pub sample_s: f64,
    pub forward_s: f64,
    /// Backward pass and optimiser step.
    pub backward_s: f64,
    pub pairs_per_s: f64,
    /// `(step, mean loss over the steps since the previous entry)`, every `max(1, steps / 20)`
    /// steps and at the last: one batch's loss is too noisy to read.
    pub losses: Vec<(u64, f32)>,
    /// The model folder written.
    pub model: PathBuf,
}

/// The file of a fine-tuning run's folder (beside `model/`) that records its configuration and
/// its [`TuneSummary`].
pub const SUMMARY_FILE: &str = "tune_summary.json";

/// Where `aisle train --tower minilm` writes when not told: `out/train/DATASET-SAMPLER-minilm`
/// under the working directory.
pub fn default_out_dir(ds: &Dataset, cfg: &TuneConfig) -> PathBuf {
    PathBuf::from("out/train").join(format!(
        "{}-{}-minilm",
        slug(&ds.name),
        slug(&cfg.sampler.to_string())
    ))
}

/// The line that opens a fine-tuning run: the model, the data, the sampler and the sizes.
pub fn describe(base: &Path, ds: &Dataset, split: &Split, cfg: &TuneConfig) -> String {
    format!(
        "fine-tuning {} on {} (split `{}`: {}), sampler {}, {} steps of {} pairs, {} negatives per pair, seed {}",
        base.display(),
        ds.name,
        split.name,
        split.description,
        cfg.sampler,
        cfg.steps,
        cfg.batch_size,
        if cfg.sampler.is_in_batch() { 0 } else { cfg.negatives },
        cfg.seed
    )
}

/// Writes the configuration and the summary of a fine-tuning run into its folder `out`
/// ([`SUMMARY_FILE`], beside the model folder); returns the file's path.
pub fn write_summary(out: &Path, cfg: &TuneConfig, summary: &TuneSummary) -> Result<PathBuf> {
    let path = out.join(SUMMARY_FILE);
    let json = serde_json::json!({ "config": cfg, "summary": summary });
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| TrainError::io(&path, e.into()))?;
    write_atomic(&path, |w| w.write_all(&bytes)).map_err(|e| TrainError::io(&path, e))?;
    Ok(path)
}

impl TuneSummary {
    /// What `aisle train --tower minilm` prints of the run fine-tuned from `base` with `cfg`:
    /// the tower, the sampler, the steps, the time and where it went, the loss first and last.
    pub fn render(&self, cfg: &TuneConfig, base: &Path) -> String {
        let mut out = format!(
            "tower                all-MiniLM-L6-v2, fine-tuned from {}\n\
             sampler              {}\n\
             steps                {} of {} pairs ({} pairs in all)\n",
            base.display(),
            cfg.sampler,
            self.steps,
            cfg.batch_size,
            self.pairs
        );
        out += &format!(
            "training time        {:.1} s ({:.1} pairs/s; sampling {:.1} s, forward {:.1} s, backward + AdamW {:.1} s)\n",
            self.train_s, self.pairs_per_s, self.sample_s, self.forward_s, self.backward_s
        );
        if let (Some(a), Some(b)) = (self.losses.first(), self.losses.last()) {
            out += &format!(
                "mean loss            {:.4} (steps to {}) -> {:.4} (steps to {})\n",
                a.1, a.0, b.1, b.0
            );
        }
        out
    }
}

/// How a step runs: the plain-buffer passes, or candle's autograd with aisle's AdamW.
enum Steps {
    Tuner(Box<aisle_transformer::Tuner>),
    Autograd(AdamW),
}

fn candle(e: candle_core::Error) -> TrainError {
    TrainError::Transformer(TransformerError::Candle(e))
}

/// Fine-tunes the model in `base` on the training pairs of `split` and writes the result to
/// `out` (a model folder; an existing one is replaced only once the new one is complete).
/// `progress` gets a line now and then.
pub fn fine_tune(
    base: &Path,
    ds: &Dataset,
    split: &Split,
    cfg: &TuneConfig,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<TuneSummary> {
    if cfg.steps == 0 || cfg.batch_size < 2 {
        return Err(TrainError::Config(format!(
            "transformer fine-tuning needs steps >= 1 and a batch of at least 2 pairs (got {} steps of {})",
            cfg.steps, cfg.batch_size
        )));
    }
    if cfg.sampler.ance_refresh().is_some() {
        return Err(TrainError::Config(
            "ANCE cannot fine-tune a transformer tower: its refresh re-indexes with the n-gram model"
                .into(),
        ));
    }
    let k = if cfg.sampler.is_in_batch() {
        0
    } else {
        cfg.negatives
    };
    let (mut encoder, varmap) = MiniLm::load_trainable(base)?;
    // TrainData's pairs, positives and popularity are what the samplers read; its feature rows
    // are not used here, so a tiny featurizer builds them.
    let featurizer_only = Model::new(ModelConfig {
        featurizer: FeaturizerConfig {
            buckets_log2: 8,
            ..FeaturizerConfig::default()
        },
        ..ModelConfig::default()
    });
    let data = TrainData::build(ds, split, &featurizer_only);
    if data.pairs.len() < 2 {
        return Err(TrainError::Config(format!(
            "split `{}` has {} training pairs; fine-tuning needs at least 2",
            split.name,
            data.pairs.len()
        )));
    }
    let mut sampler = sampler::build(&cfg.sampler, ds, &data, &cfg.bm25)?;
    let texts: Vec<String> = ds
        .catalog
        .iter()
        .map(|(_, p)| product_text(p, &ds.taxonomy))
        .collect();
    let adam = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..ParamsAdamW::default()
    };
    // The plain-buffer passes (`aisle_transformer::tune`) where they apply (all-MiniLM-L6-v2 on
    // the CPU), candle's autograd otherwise: the same values.
    let mut path = match encoder.tuner(adam.clone())? {
        Some(tuner) => Steps::Tuner(Box::new(tuner)),
        None => Steps::Autograd(AdamW::new(varmap.all_vars(), adam).map_err(candle)?),
    };
    let mut order: Vec<u32> = (0..data.pairs.len() as u32).collect();
    // Pairs passed over because their query or product was already in a batch: they go first
    // into the next batch, so that no pair is lost and popular queries are not under-drawn.
    let mut deferred: Vec<Pair> = Vec::new();
    let mut cursor = order.len();
    let mut epoch = 0u64;
    let mut rng = Rng::stream(cfg.seed, 0x7E57);
    let (mut sample_s, mut forward_s, mut backward_s) = (0.0, 0.0, 0.0);
    let mut losses = Vec::new();
    let log_every = (cfg.steps / 20).max(1);
    let mut pairs_seen = 0u64;
    let (mut loss_sum, mut loss_n) = (0f64, 0u32);
    let start = Instant::now();
    for step in 0..cfg.steps {
        let t0 = Instant::now();
        // The batch: distinct queries and distinct products.
        let mut batch: Vec<Pair> = Vec::with_capacity(cfg.batch_size);
        let fits = |batch: &[Pair], pair: &Pair| {
            batch
                .iter()
                .all(|b| b.query != pair.query && b.product != pair.product)
        };
        let mut waiting = Vec::new();
        for pair in deferred.drain(..) {
            if batch.len() < cfg.batch_size && fits(&batch, &pair) {
                batch.push(pair);
            } else {
                waiting.push(pair);
            }
        }
        let mut scanned = 0;
        while batch.len() < cfg.batch_size && scanned < order.len() {
            if cursor == order.len() {
                Rng::stream(cfg.seed ^ 0xE90C_0000, epoch).shuffle(&mut order);
                epoch += 1;
                cursor = 0;
            }
            let pair = data.pairs[order[cursor] as usize];
            cursor += 1;
            scanned += 1;
            if fits(&batch, &pair) {
                batch.push(pair);
            } else if waiting.len() < 4 * cfg.batch_size {
                waiting.push(pair);
            }
        }
        deferred = waiting;
        if batch.len() < 2 {
            return Err(TrainError::Config(
                "the training pairs have fewer than 2 distinct queries and products".into(),
            ));
        }
        let ctx = SampleCtx {
            data: &data,
            dataset: ds,
            step,
        };
        if let Some(s) = sampler.as_mut() {
            s.prepare(step, &featurizer_only, &ctx)?;
        }
        let mut negatives: Vec<ProductId> = Vec::with_capacity(batch.len() * k);
        if let Some(s) = sampler.as_ref() {
            for pair in &batch {
                s.sample(&ctx, pair, k, &mut rng, &mut negatives);
            }
        }
        let products: Vec<ProductId> = batch
            .iter()
            .map(|p| p.product)
            .chain(negatives.iter().copied())
            .collect();
        // Mask: a product of the step that is relevant to query i, other than its own target.
        let n = products.len();
        let mut masked = vec![false; batch.len() * n];
        for (i, pair) in batch.iter().enumerate() {
            for (j, &p) in products.iter().enumerate() {
                masked[i * n + j] = j != i && data.is_positive(pair.query, p);
            }
        }
        sample_s += t0.elapsed().as_secs_f64();

        let query_texts: Vec<&str> = batch
            .iter()
            .map(|p| data.queries[p.query as usize].as_str())
            .collect();
        let product_texts: Vec<&str> = products.iter().map(|p| texts[p.index()].as_str()).collect();
        let b = batch.len();
        // Each query against every product of the step (k = 0: no product is one query's
        // own), masked: aisle-model's MNRL, on plain buffers or as a candle op.
        let loss = match &mut path {
            Steps::Tuner(tuner) => {
                // Queries and products in one packed pass.
                let all: Vec<&str> = query_texts.iter().chain(&product_texts).copied().collect();
                let dim = tuner.dim();
                let is_masked = |i: usize, j: usize| masked[i * n + j];
                let s = tuner.train_step_with(&all, |e, d_e| {
                    let ((zq, zc), (d_q, d_c)) = (e.split_at(b * dim), d_e.split_at_mut(b * dim));
                    mnrl_into(zq, zc, dim, 0, cfg.scale as f32, &is_masked, d_q, d_c).loss as f32
                })?;
                forward_s += s.forward_s;
                backward_s += s.backward_s;
                s.loss
            }
            Steps::Autograd(opt) => {
                let t1 = Instant::now();
                let q = encoder.embed_batch(&query_texts)?;
                let d = encoder.embed_batch(&product_texts)?;
                let loss = mnrl_loss_masked(&q, &d, cfg.scale, Some(&masked))?;
                forward_s += t1.elapsed().as_secs_f64();
                let t2 = Instant::now();
                opt.backward_step(&loss).map_err(candle)?;
                backward_s += t2.elapsed().as_secs_f64();
                loss.to_scalar::<f32>().map_err(candle)?
            }
        };
        pairs_seen += batch.len() as u64;
        loss_sum += f64::from(loss);
        loss_n += 1;
        if (step + 1).is_multiple_of(log_every) || step + 1 == cfg.steps {
            let l = (loss_sum / f64::from(loss_n)) as f32;
            (loss_sum, loss_n) = (0.0, 0);
            losses.push((step + 1, l));
            progress(&format!(
                "    step {}/{}: loss {l:.4}, {:.1} s",
                step + 1,
                cfg.steps,
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let train_s = start.elapsed().as_secs_f64();
    if let Steps::Tuner(tuner) = &path {
        // The trained weights into the encoder's variables, which `save_model` writes.
        tuner.store(&mut encoder)?;
    }
    let tuned_on = TunedOn {
        dataset: ds.name.clone(),
        dataset_digest: ds.digest(),
        base: base.display().to_string(),
        sampler: cfg.sampler.to_string(),
        steps: cfg.steps,
    };
    save_model(base, &varmap, &tuned_on, out)?;
    Ok(TuneSummary {
        steps: cfg.steps,
        pairs: pairs_seen,
        train_s,
        sample_s,
        forward_s,
        backward_s,
        pairs_per_s: pairs_seen as f64 / train_s.max(1e-9),
        losses,
        model: out.to_path_buf(),
    })
}

/// Writes the weights of `varmap`, every other file of `base` (config, tokenizer, the
/// sentence-transformers pooling folder; not its weights) and what it was tuned on
/// ([`aisle_transformer::TUNED_FILE`]) as a model folder at `out`: built
/// beside it under a temporary name, then swapped in (the old folder is moved aside first and
/// deleted last), so that `out` is never half-written. On an error the temporary folder is
/// removed.
fn save_model(
    base: &Path,
    varmap: &candle_nn::VarMap,
    tuned_on: &TunedOn,
    out: &Path,
) -> Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    let written = (|| -> Result<()> {
        copy_tree(base, &tmp, true)?;
        tuned_on.write(&tmp)?;
        let weights = tmp.join("model.safetensors");
        varmap.save(&weights).map_err(|e| {
            TrainError::Transformer(TransformerError::Invalid {
                path: weights.clone(),
                why: format!("writing the weights: {e}"),
            })
        })
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|e| TrainError::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(TrainError::io(out, e));
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(())
}

/// Copies the folder `from` into a new folder `to`, recursively; at the top level, without the
/// weight files (`top`).
fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| TrainError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| TrainError::io(from, e))? {
        let entry = entry.map_err(|e| TrainError::io(from, e))?;
        let (src, file) = (entry.path(), entry.file_name());
        let dst = to.join(&file);
        if src.is_dir() {
            copy_tree(&src, &dst, false)?;
        } else if !(top && (file == "model.safetensors" || file == "pytorch_model.bin")) {
            std::fs::copy(&src, &dst).map_err(|e| TrainError::io(&src, e))?;
        }
    }
    Ok(())
}
