//! Fits a personalized query tower over an encoder whose towers stay fixed: MiniLM, pretrained
//! or fine-tuned (or any other [`Encoder`]).
//!
//! The n-gram trainer learns its personalized tower together with its towers. MiniLM's towers
//! are too slow to re-encode the catalog during such a run on two cores, and the tower does not
//! need them to move: it reads a query vector and the vectors of the customer's earlier products,
//! whatever made them. So the catalog and the training queries are encoded once, and only the
//! tower's few parameters learn, with the same loss (MNRL over the batch's positives and each
//! pair's sampled negatives), the same histories (training interactions before each pair's
//! event, the last `history`), the same customer features and the same Adam as in the n-gram
//! trainer. The tower kept is the best on a validation sample, measured as the n-gram trainer
//! measures (exact search, Recall@10).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use aisle_core::rng::Rng;
use aisle_core::{Dataset, Histories, ProductId, Split};
use aisle_model::demographics::{Demographics, DEFAULT_BUCKETS_LOG2};
use aisle_model::mnrl::mnrl;
use aisle_model::personal::{history_of, PersonalCache, PersonalizeConfig, Personalizer};
use aisle_model::personalized::{PersonalFile, PERSONAL_FILE, PERSONAL_FORMAT};
use aisle_model::Encoder;
use aisle_search::SearchError;
use aisle_transformer::{MiniLm, TunedOn};

use crate::data::{Pair, TrainData};
use crate::error::{Result, TrainError};
use crate::eval::{recall_of_vectors, ValidationSet};
use crate::optim::{adam_update, bias_corrections, OptimConfig};
use crate::sampler::{self, SampleCtx, SamplerSpec};

/// How the tower is fitted.
#[derive(Clone, Debug)]
pub struct PersonalFitConfig {
    /// The tower's settings (history window, learning rate, fusion, customer features).
    pub personalize: PersonalizeConfig,
    /// Optimiser steps.
    pub steps: u64,
    /// Pairs per step.
    pub batch_size: usize,
    /// Sampled negatives per pair, from `sampler`.
    pub negatives: usize,
    pub sampler: SamplerSpec,
    /// BM25 field boosts, for BM25 negatives.
    pub bm25: aisle_search::FieldBoosts,
    /// Scores are `scale * cosine` in the loss (MiniLM's fine-tuning uses 20).
    pub scale: f32,
    pub seed: u64,
    /// Steps between validation measurements.
    pub eval_every: u64,
    /// Validation queries measured (a seeded sample).
    pub eval_queries: usize,
}

impl Default for PersonalFitConfig {
    /// Chosen on Instacart's validation queries over pretrained MiniLM (2,000 of them, R@10):
    /// the n-gram trainer's learning rate, 0.01, had reached 0.12 at 300 steps; 0.05 reached
    /// 0.331 and 0.1 reached 0.347 at 1,500 steps (36 s of fitting), still rising slowly; at 0.2
    /// every measurement in 300 steps fell back to the plain figure (0.073), below the untrained
    /// tower. The n-gram trainer moves its towers too, so its rate is not this one's.
    fn default() -> Self {
        PersonalFitConfig {
            personalize: PersonalizeConfig {
                lr: 0.1,
                ..PersonalizeConfig::default()
            },
            steps: 1500,
            batch_size: 256,
            negatives: 4,
            sampler: SamplerSpec::Taxonomy(Default::default()),
            bm25: aisle_search::FieldBoosts::default(),
            scale: 20.0,
            seed: 42,
            eval_every: 250,
            eval_queries: 2000,
        }
    }
}

/// A fitted tower and how the fit went.
#[derive(Clone, Debug)]
pub struct PersonalFit {
    pub tower: Personalizer,
    /// Steps run, and the step whose tower was kept (0: the starting tower was never beaten).
    pub steps: u64,
    /// The step whose update left a parameter not finite, where the fit stopped.
    pub diverged_at: Option<u64>,
    pub kept_step: u64,
    /// Validation Recall@10 of the encoder's plain queries, and of the kept tower's.
    pub validation_plain: f64,
    pub validation_personalized: f64,
    /// Training pairs with a customer (the only ones the tower learns from).
    pub pairs: usize,
    /// Seconds spent encoding (catalog, queries), and fitting.
    pub encode_s: f64,
    pub fit_s: f64,
}

/// Everything a fit reads, encoded once: the training pairs with a customer, the catalog's
/// vectors, the training queries' and the validation sample's.
pub struct Encoded {
    pub data: TrainData,
    /// Training pairs whose interaction has a customer (the only ones a tower learns from).
    pub pairs: Vec<Pair>,
    /// `catalog.len() x d`, catalog order.
    pub items: Vec<f32>,
    /// `data.queries.len() x d`, in `data.queries` order.
    pub queries: Vec<f32>,
    pub validation: ValidationSet,
    /// `validation.len() x d`.
    pub validation_queries: Vec<f32>,
    pub dim: usize,
    /// Seconds it took.
    pub seconds: f64,
}

/// Fits a personalized tower over `encoder`'s vectors on the training part of `split`:
/// [`encode_for_fit`], then [`fit_over`]. `progress` gets a line per phase and per measurement.
pub fn fit_personalizer(
    ds: &Dataset,
    split: &Split,
    encoder: &dyn Encoder,
    cfg: &PersonalFitConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<PersonalFit> {
    let encoded = encode_for_fit(ds, split, encoder, cfg, progress)?;
    fit_over(ds, split, &encoded, cfg, progress)
}

/// Phase 1: the pairs a fit learns from and every vector it reads, encoded once (for MiniLM on
/// a large catalog, most of the time; several fits over one encoder can share it).
pub fn encode_for_fit(
    ds: &Dataset,
    split: &Split,
    encoder: &dyn Encoder,
    cfg: &PersonalFitConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Encoded> {
    check(cfg)?;
    let data = TrainData::without_features(ds, split);
    let pairs: Vec<Pair> = data
        .pairs
        .iter()
        .filter(|p| p.user.is_some())
        .copied()
        .collect();
    if pairs.len() < 2 {
        return Err(TrainError::Config(format!(
            "split `{}` has {} training pairs with a customer: a personalized tower learns from \
             customers' histories",
            split.name,
            pairs.len()
        )));
    }
    let validation = ValidationSet::new(ds, &split.validation, cfg.eval_queries, cfg.seed);
    let t = Instant::now();
    progress(&format!(
        "encoding {} products and {} query texts with {}",
        ds.catalog.len(),
        data.queries.len() + validation.len(),
        encoder.kind()
    ));
    let items = encoder
        .encode_catalog(&ds.catalog, &ds.taxonomy)
        .map_err(SearchError::from)?;
    let queries = encode(encoder, data.queries.iter())?;
    let validation_queries = encode(encoder, validation.texts.iter())?;
    Ok(Encoded {
        data,
        pairs,
        items,
        queries,
        validation,
        validation_queries,
        dim: encoder.dim(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Phases 2 and 3: the tower measured before it learns, then the steps, keeping the best tower
/// on validation.
pub fn fit_over(
    ds: &Dataset,
    split: &Split,
    x: &Encoded,
    cfg: &PersonalFitConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<PersonalFit> {
    check(cfg)?;
    let t = Instant::now();
    let d = x.dim;
    let histories = Histories::from_split(ds, split);
    let pcfg = &cfg.personalize;
    let mut tower = Personalizer::new(d, pcfg.fusion);
    if pcfg.demographics {
        tower.demographics = Demographics::fit(&ds.users, d, DEFAULT_BUCKETS_LOG2);
    }
    let measure = |tower: Option<&Personalizer>| {
        recall_of_vectors(
            d,
            x.items.clone(),
            x.validation_queries.clone(),
            &x.validation,
            10,
            tower.map(|t| (t, (ds, &histories, pcfg.history))),
        )
    };
    let validation_plain = measure(None)?;
    let mut best = (measure(Some(&tower))?, 0u64, tower.clone());
    progress(&format!(
        "validation R@10 on {} queries: plain {validation_plain:.4}, untrained tower {:.4}; {} \
         training pairs with a customer",
        x.validation.len(),
        best.0,
        x.pairs.len()
    ));

    let sampler = sampler::build(&cfg.sampler, ds, &x.data, &cfg.bm25)?;
    let k = if sampler.is_some() { cfg.negatives } else { 0 };
    let optim = OptimConfig::default();
    let (mut m, mut v) = (vec![0.0; tower.len()], vec![0.0; tower.len()]);
    let mut order: Vec<u32> = (0..x.pairs.len() as u32).collect();
    let (mut cursor, mut epoch) = (order.len(), 0u64);
    let mut rng = Rng::stream(cfg.seed, 0x9E25_0A11);
    let mut diverged_at = None;
    for step in 1..=cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch_size);
        while batch.len() < cfg.batch_size.min(x.pairs.len()) {
            if cursor == order.len() {
                Rng::stream(cfg.seed ^ 0x9E25_0000, epoch).shuffle(&mut order);
                (cursor, epoch) = (0, epoch + 1);
            }
            batch.push(x.pairs[order[cursor] as usize]);
            cursor += 1;
        }
        let ctx = SampleCtx {
            data: &x.data,
            dataset: ds,
            step,
        };
        let mut negatives: Vec<ProductId> = Vec::with_capacity(batch.len() * k);
        if let Some(s) = &sampler {
            for pair in &batch {
                s.sample(&ctx, pair, k, &mut rng, &mut negatives);
            }
        }
        let step_in = Inputs {
            ds,
            data: &x.data,
            histories: &histories,
            items: &x.items,
            queries: &x.queries,
            d,
            k,
            scale: cfg.scale,
            history: pcfg.history,
        };
        let grad = step_gradient(&tower, &batch, &negatives, step_in);
        let mut flat = tower.to_flat();
        let bc = bias_corrections(&optim, step);
        adam_update(&optim, pcfg.lr, bc, &mut flat, &grad, &mut m, &mut v);
        if flat.iter().any(|x| !x.is_finite()) {
            progress(&format!(
                "step {step}: the tower's parameters are no longer finite (learning rate {} too \
                 high?); stopping, keeping step {}",
                pcfg.lr, best.1
            ));
            diverged_at = Some(step);
            break;
        }
        tower.set_flat(&flat);
        if step % cfg.eval_every == 0 || step == cfg.steps {
            let r = measure(Some(&tower))?;
            let kept = r > best.0;
            progress(&format!(
                "step {step}/{}: validation R@10 {r:.4}{}",
                cfg.steps,
                if kept { " (best so far)" } else { "" }
            ));
            if kept {
                best = (r, step, tower.clone());
            }
        }
    }
    let (validation_personalized, kept_step, tower) = best;
    Ok(PersonalFit {
        tower,
        steps: diverged_at.unwrap_or(cfg.steps),
        diverged_at,
        kept_step,
        validation_plain,
        validation_personalized,
        pairs: x.pairs.len(),
        encode_s: x.seconds,
        fit_s: t.elapsed().as_secs_f64(),
    })
}

fn check(cfg: &PersonalFitConfig) -> Result<()> {
    if cfg.steps == 0 || cfg.batch_size < 2 || cfg.eval_every == 0 || cfg.eval_queries == 0 {
        return Err(TrainError::Config(format!(
            "a personalized tower needs steps >= 1, a batch of at least 2 pairs, eval_every and \
             eval_queries >= 1 (got {} steps of {}, every {}, {} queries)",
            cfg.steps, cfg.batch_size, cfg.eval_every, cfg.eval_queries
        )));
    }
    if cfg.personalize.history == 0 {
        return Err(TrainError::Config(
            "personalize.history must be at least 1".into(),
        ));
    }
    if cfg.sampler.ance_refresh().is_some() {
        return Err(TrainError::Config(
            "ANCE cannot fit a tower over fixed vectors: its refresh re-indexes with the n-gram \
             model"
                .into(),
        ));
    }
    Ok(())
}

/// `texts` through `encoder`, a flat matrix in order.
fn encode<'a>(encoder: &dyn Encoder, texts: impl Iterator<Item = &'a String>) -> Result<Vec<f32>> {
    let refs: Vec<&str> = texts.map(String::as_str).collect();
    Ok(encoder.encode_queries(&refs).map_err(SearchError::from)?)
}

/// What one step reads besides the tower and the batch.
struct Inputs<'a> {
    ds: &'a Dataset,
    data: &'a TrainData,
    histories: &'a Histories,
    /// The catalog's vectors, and the training queries' (rows in `data.queries` order).
    items: &'a [f32],
    queries: &'a [f32],
    d: usize,
    k: usize,
    scale: f32,
    history: usize,
}

/// The loss's gradient with respect to the tower's flat parameters, for one batch.
fn step_gradient(
    tower: &Personalizer,
    batch: &[Pair],
    negatives: &[ProductId],
    x: Inputs<'_>,
) -> Vec<f32> {
    let d = x.d;
    let row = |m: &[f32], i: usize| m[i * d..(i + 1) * d].to_vec();
    // Forward: each pair's query read with its customer's history and features.
    let passes: Vec<(Vec<f32>, Vec<f32>, Vec<_>, PersonalCache)> = batch
        .par_iter()
        .map(|pair| {
            let q = row(x.queries, pair.query as usize);
            let before = x.ds.interactions[pair.event as usize].time;
            let (vectors, weights) = history_of(
                &x.ds.interactions,
                x.histories,
                x.items,
                d,
                pair.user,
                before,
                x.history,
            );
            let features = pair
                .user
                .map_or_else(Vec::new, |u| tower.features(x.ds.users.get(u)));
            let mut cache = PersonalCache::default();
            tower.forward_with(&q, &vectors, &weights, &features, &mut cache);
            (vectors, weights, features, cache)
        })
        .collect();
    let zq: Vec<f32> = passes
        .iter()
        .flat_map(|p| p.3.out.iter().copied())
        .collect();
    let candidates: Vec<ProductId> = batch
        .iter()
        .map(|p| p.product)
        .chain(negatives.iter().copied())
        .collect();
    let zc: Vec<f32> = candidates
        .iter()
        .flat_map(|p| row(x.items, p.index()))
        .collect();
    let masked = |i: usize, j: usize| {
        batch[j].product == batch[i].product || x.data.is_positive(batch[i].query, batch[j].product)
    };
    let loss = mnrl(&zq, &zc, d, x.k, x.scale, &masked);
    // Backward, summed in batch order (the same sum whatever the thread count).
    let mut grad = tower.zeros_like();
    let mut dq = Vec::with_capacity(d);
    for (i, (pair, (vectors, weights, features, cache))) in batch.iter().zip(&passes).enumerate() {
        let q = row(x.queries, pair.query as usize);
        tower.backward_with(
            &q,
            vectors,
            weights,
            features,
            cache,
            &loss.d_query[i * d..(i + 1) * d],
            &mut grad,
            &mut dq,
        );
    }
    grad.to_flat()
}

/// Fits a tower over the MiniLM folder `folder` that `aisle train --tower minilm` fine-tuned on
/// `ds`, and writes it there as [`PERSONAL_FILE`], where serving finds it. Returns the fit and
/// the file.
pub fn fit_into_folder(
    ds: &Dataset,
    split: &Split,
    folder: &Path,
    cfg: &PersonalFitConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<(PersonalFit, PathBuf)> {
    // The tower's dataset must be the folder's (serving refuses it otherwise).
    let tuned = TunedOn::read(folder)?;
    if tuned.as_ref().map(|t| &t.dataset_digest) != Some(&ds.digest()) {
        return Err(TrainError::Config(format!(
            "{} was not fine-tuned on `{}`: a personalized tower is fitted into a folder that \
             `aisle train --tower minilm` tuned on the same data",
            folder.display(),
            ds.name
        )));
    }
    let encoder = MiniLm::load(folder)?;
    let fit = fit_personalizer(ds, split, &encoder, cfg, progress)?;
    let file = PersonalFile {
        format: PERSONAL_FORMAT,
        dataset: ds.name.clone(),
        dataset_digest: ds.digest(),
        split: split.name.clone(),
        encoder: Encoder::kind(&encoder).to_owned(),
        dim: Encoder::dim(&encoder),
        personalize: cfg.personalize.clone(),
        steps: fit.steps,
        kept_step: fit.kept_step,
        validation_plain: fit.validation_plain,
        validation_personalized: fit.validation_personalized,
        tower: fit.tower.clone(),
    };
    file.write(folder)?;
    Ok((fit, folder.join(PERSONAL_FILE)))
}

impl PersonalFit {
    /// What `aisle train --tower minilm --personalized` prints of the fit.
    pub fn render(&self, ds: &Dataset, cfg: &PersonalFitConfig, file: &Path) -> String {
        let p = &cfg.personalize;
        let features = crate::run::customer_features(ds, p.demographics);
        let diverged = self
            .diverged_at
            .map(|s| format!(", stopped at step {s}: a parameter was no longer finite"))
            .unwrap_or_default();
        format!(
            "personalized tower   fitted over the fixed vectors: {} training pairs with a \
             customer, history {}, {} fusion{features}\n\
             validation R@10      plain {:.4} -> personalized {:.4} (kept step {} of {}{diverged})\n\
             time                 encoding {:.1} s, fitting {:.1} s\n\
             tower                {}\n",
            self.pairs,
            p.history,
            p.fusion,
            self.validation_plain,
            self.validation_personalized,
            self.kept_step,
            self.steps,
            self.encode_s,
            self.fit_s,
            file.display()
        )
    }
}
