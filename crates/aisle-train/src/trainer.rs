//! The training loop.
//!
//! One step: take the next `B` pairs of the epoch's shuffled order, let the sampler draw `k`
//! negatives per pair, encode the `B` queries and `B (1 + k)` candidates (each distinct query and
//! product once: popular products recur within a step, and their gradients are summed), compute
//! MNRL, run the towers' backward pass, and update the touched embedding rows (sparse) and the
//! heads (dense).
//!
//! Everything random derives from `(seed, step, position)`, and every parallel reduction sums in
//! a fixed order, so a run is the same whatever the thread count, and a run resumed from a
//! checkpoint ends with the same model as an uninterrupted one.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use aisle_core::rng::Rng;
use aisle_core::{Dataset, Histories, ProductId, Split};
use aisle_model::demographics::{Demographics, Feature, DEFAULT_BUCKETS_LOG2};
use aisle_model::personal::{history_of, PersonalCache, Personalizer};
use aisle_model::tower::{axpy, prefetch_ptr, Cache, Dense, Pooling, PREFETCH_AHEAD};
use aisle_model::{FeatureRows, Model, ModelConfig, Side};

use crate::data::{Pair, TrainData};
use crate::error::{Result, TrainError};
use crate::eval::{recall_at_k, ValidationSet};
use crate::loss::{mnrl, LossOutput};
use crate::optim::{
    adam_update, bias_corrections, row_adagrad_update, DenseAdam, OptimConfig, SparseState,
};
use crate::sampler::{self, SampleCtx, SampleStats, Sampler, SamplerSpec};

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub sampler: SamplerSpec,
    /// Pairs per step.
    pub batch_size: usize,
    /// Sampled negatives per pair (ignored, i.e. 0, for the in-batch sampler).
    pub negatives: usize,
    pub steps: u64,
    pub seed: u64,
    /// Steps between training-log lines.
    pub log_every: u64,
    /// Steps between validation Recall@10 measurements (0 = only at the end).
    pub eval_every: u64,
    /// At most this many validation queries (a seeded sample) per measurement.
    pub eval_queries: usize,
    /// Steps between checkpoints (0 = none).
    pub checkpoint_every: u64,
    /// The personalized query tower (`None`: plain queries).
    pub personalize: Option<PersonalizeConfig>,
    /// Which model the run saves: the one with the best validation Recall@10, or the last.
    pub keep: Keep,
    /// Stop when this many validation measurements in a row (`patience * eval_every` steps)
    /// have not beaten the best; 0 = never stop early.
    pub patience: u64,
    /// BM25's field boosts where the sampler draws BM25 negatives (`aisle experiment` sets the
    /// ones chosen on validation, as for its BM25 row).
    pub bm25: aisle_search::FieldBoosts,
}

/// Which model a training run saves as `model.aisle`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The model at the validation measurement with the highest Recall@10 (the earliest of
    /// equals); the last when nothing was measured.
    #[default]
    Best,
    /// The model after the last step.
    Last,
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Keep::Best => "best",
            Keep::Last => "last",
        })
    }
}

impl std::str::FromStr for Keep {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "best" => Ok(Keep::Best),
            "last" => Ok(Keep::Last),
            _ => Err(format!("`{s}`: expected best or last")),
        }
    }
}

/// Settings of the personalized query tower (aisle-model owns them: the model file records
/// them, and serving reads the history window from there).
pub use aisle_model::personal::PersonalizeConfig;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            sampler: SamplerSpec::Taxonomy(Default::default()),
            batch_size: 256,
            negatives: 4,
            steps: 2000,
            seed: 42,
            log_every: 50,
            eval_every: 250,
            eval_queries: 1000,
            checkpoint_every: 0,
            personalize: None,
            keep: Keep::Best,
            patience: 0,
            bm25: aisle_search::FieldBoosts::default(),
        }
    }
}

impl TrainConfig {
    /// Negatives per pair actually drawn.
    pub fn k(&self) -> usize {
        if self.sampler.is_in_batch() {
            0
        } else {
            self.negatives
        }
    }

    /// Checks the settings that would otherwise fail late.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 2 {
            return Err(TrainError::Config("batch_size must be at least 2".into()));
        }
        if self.model.tower.dim == 0 {
            return Err(TrainError::Config("dim must be at least 1".into()));
        }
        if !(10..=28).contains(&self.model.featurizer.buckets_log2) {
            return Err(TrainError::Config(format!(
                "buckets_log2 must be within 10..=28, got {}",
                self.model.featurizer.buckets_log2
            )));
        }
        if self.patience > 0 && self.eval_every == 0 {
            return Err(TrainError::Config(
                "patience needs validation measurements during the run (eval_every > 0)".into(),
            ));
        }
        if !(self.model.scale.is_finite() && self.model.scale > 0.0) {
            return Err(TrainError::Config("scale must be a positive number".into()));
        }
        if let Some(p) = &self.personalize {
            if p.history == 0 || p.refresh == 0 {
                return Err(TrainError::Config(
                    "personalize.history and personalize.refresh must be at least 1".into(),
                ));
            }
            if self.checkpoint_every > 0 && !self.checkpoint_every.is_multiple_of(p.refresh) {
                return Err(TrainError::Config(format!(
                    "checkpoint_every ({}) must be a multiple of personalize.refresh ({}) so that a resumed run re-encodes where an uninterrupted one does",
                    self.checkpoint_every, p.refresh
                )));
            }
        }
        if let (Some(r), c) = (self.sampler.ance_refresh(), self.checkpoint_every) {
            if c > 0 && !c.is_multiple_of(r) {
                return Err(TrainError::Config(format!(
                    "checkpoint_every ({c}) must be a multiple of the ANCE refresh interval ({r}) so that a resumed run re-indexes where an uninterrupted one does"
                )));
            }
        }
        Ok(())
    }
}

/// Timings and counts of one step.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub sample_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub refresh_ms: f64,
    pub removed_positives: u32,
    pub fallbacks: u32,
    pub masked_in_batch: u32,
    pub touched_rows: usize,
}

/// A training run in progress.
pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub ds: &'a Dataset,
    pub split: &'a Split,
    pub data: TrainData,
    pub model: Model,
    sampler: Option<Box<dyn Sampler>>,
    pub(crate) sparse: SparseState,
    pub(crate) dense: Vec<DenseAdam>,
    /// Adam moments of the personalizer's flat parameters (empty without one).
    pub(crate) personal_m: Vec<f32>,
    pub(crate) personal_v: Vec<f32>,
    /// Training histories, for the personalized tower.
    histories: Option<Histories>,
    /// Catalog vectors standing for history items, and the step they were encoded at.
    pub(crate) items: Vec<f32>,
    pub(crate) items_step: Option<u64>,
    /// Rows that have ever been updated (their optimiser state is non-zero).
    pub(crate) touched: Vec<bool>,
    /// Steps done so far.
    pub step: u64,
    /// The step and validation Recall@10 of the best measurement so far (kept in checkpoints,
    /// so that a resumed run keeps the best model and its patience as an uninterrupted one).
    pub best_validation: Option<(u64, f64)>,
    epoch: Option<(u64, Vec<u32>)>,
    q_cache: Cache,
    p_cache: Cache,
    /// Scratch for the sparse update: `row -> slot` of the current step, `NO_SLOT` otherwise.
    row_slot: Vec<u32>,
    validation: ValidationSet,
}

/// Raw pointer to a slice that parallel workers write at disjoint rows.
struct RowWriter(*mut f32);
// SAFETY: workers only touch disjoint rows (the unique ids of one step), see `apply_sparse`.
unsafe impl Send for RowWriter {}
unsafe impl Sync for RowWriter {}

impl RowWriter {
    /// # Safety
    /// No other thread may access row `r` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize, d: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(r * d), d)
    }
}

impl<'a> Trainer<'a> {
    /// A fresh run: a new model, training data from `split`, the configured sampler.
    pub fn new(cfg: TrainConfig, ds: &'a Dataset, split: &'a Split) -> Result<Trainer<'a>> {
        cfg.validate()?;
        let mut model = Model::new(cfg.model.clone());
        let histories = cfg.personalize.as_ref().map(|p| {
            let mut tower = Personalizer::new(cfg.model.tower.dim, p.fusion);
            if p.demographics {
                tower.demographics =
                    Demographics::fit(&ds.users, cfg.model.tower.dim, DEFAULT_BUCKETS_LOG2);
            }
            model.personal = Some(tower);
            Histories::from_split(ds, split)
        });
        let n_personal = model.personal.as_ref().map_or(0, |p| p.len());
        let data = TrainData::build(ds, split, &model);
        if data.pairs.is_empty() {
            return Err(TrainError::Config(format!(
                "split `{}` of `{}` has no training pairs",
                split.name, ds.name
            )));
        }
        if ds.catalog.len() < 2 {
            return Err(TrainError::Config(
                "the catalog needs at least two products".into(),
            ));
        }
        let sampler = sampler::build(&cfg.sampler, ds, &data, &cfg.bm25)?;
        let rows = model.towers.rows;
        let d = model.dim();
        let validation = ValidationSet::new(ds, &split.validation, cfg.eval_queries, cfg.seed);
        Ok(Trainer {
            sparse: SparseState::new(cfg.optim.sparse, rows, d),
            dense: model
                .towers
                .heads
                .iter()
                .map(|_| DenseAdam::new(d))
                .collect(),
            touched: vec![false; rows],
            step: 0,
            best_validation: None,
            epoch: None,
            q_cache: Cache::default(),
            p_cache: Cache::default(),
            row_slot: vec![NO_SLOT; rows],
            personal_m: vec![0.0; n_personal],
            personal_v: vec![0.0; n_personal],
            histories,
            items: Vec::new(),
            items_step: None,
            validation,
            cfg,
            ds,
            split,
            data,
            model,
            sampler,
        })
    }

    /// Facts about the sampler worth logging once.
    pub fn sampler_notes(&self) -> Vec<String> {
        self.sampler.as_ref().map(|s| s.notes()).unwrap_or_default()
    }

    /// The sampler's name ("in-batch" when none).
    pub fn sampler_name(&self) -> String {
        self.sampler
            .as_ref()
            .map(|s| s.name())
            .unwrap_or_else(|| "in-batch".into())
    }

    /// Pair indices of the batch of `step`.
    fn batch(&mut self, step: u64) -> Vec<u32> {
        let n = self.data.pairs.len() as u64;
        let b = self.cfg.batch_size as u64;
        (0..b)
            .map(|i| {
                let pos = step * b + i;
                let (epoch, offset) = (pos / n, (pos % n) as usize);
                if self.epoch.as_ref().map(|e| e.0) != Some(epoch) {
                    let mut order: Vec<u32> = (0..n as u32).collect();
                    Rng::stream(self.cfg.seed ^ 0xE90C_0000, epoch).shuffle(&mut order);
                    self.epoch = Some((epoch, order));
                }
                self.epoch.as_ref().map(|e| e.1[offset]).unwrap_or(0)
            })
            .collect()
    }

    /// Runs one step: the sampler's negatives, the forward pass and the loss, the backward pass,
    /// then the updates (the module doc says what each does).
    pub fn train_step(&mut self) -> Result<StepStats> {
        let step = self.step;
        let mut stats = StepStats {
            step,
            ..Default::default()
        };
        let batch = self.batch(step);
        let pairs: Vec<Pair> = batch.iter().map(|&i| self.data.pairs[i as usize]).collect();
        let negatives = self.sample_negatives(step, &pairs, &mut stats)?;
        let forward = self.forward(step, &pairs, &negatives, &mut stats);
        let t2 = Instant::now();
        let grads = self.backward(&forward);
        stats.touched_rows = self.update(step + 1, &forward, &grads);
        stats.backward_ms = t2.elapsed().as_secs_f64() * 1e3;
        self.step += 1;
        Ok(stats)
    }

    /// Phase 1, negatives: lets the sampler prepare for `step` (ANCE re-indexes: refresh time),
    /// then draws `k` negatives per pair in parallel, each pair from its own random stream.
    /// Returns them pair by pair (none for in-batch).
    fn sample_negatives(
        &mut self,
        step: u64,
        pairs: &[Pair],
        stats: &mut StepStats,
    ) -> Result<Vec<ProductId>> {
        let k = self.cfg.k();
        let b = pairs.len();
        let t0 = Instant::now();
        let mut negatives: Vec<ProductId> = Vec::with_capacity(b * k);
        let Some(sampler) = self.sampler.as_mut() else {
            stats.sample_ms = t0.elapsed().as_secs_f64() * 1e3;
            return Ok(negatives);
        };
        let ctx = SampleCtx {
            data: &self.data,
            dataset: self.ds,
            step,
        };
        stats.refresh_ms = sampler.prepare(step, &self.model, &ctx)?;
        let t_sample = Instant::now();
        let sampler = &**sampler;
        let seed = self.cfg.seed;
        let drawn: Vec<(Vec<ProductId>, SampleStats)> = pairs
            .par_iter()
            .enumerate()
            .map(|(i, pair)| {
                let mut rng = Rng::stream(seed ^ 0x5A3F_1E00, step * b as u64 + i as u64);
                let mut out = Vec::with_capacity(k);
                let s = sampler.sample(&ctx, pair, k, &mut rng, &mut out);
                out.truncate(k);
                (out, s)
            })
            .collect();
        let mut total = SampleStats::default();
        for (out, s) in drawn {
            negatives.extend(out);
            total += s;
        }
        stats.removed_positives = total.removed_positives;
        stats.fallbacks = total.fallbacks;
        stats.sample_ms = t_sample.elapsed().as_secs_f64() * 1e3;
        Ok(negatives)
    }

    /// Phase 2, forward: each distinct query and product of the step is encoded once; the
    /// personalized tower reads each pair's query with its customer's history; the loss sees the
    /// batch's queries and its candidates (positives, then negatives pair by pair). The catalog
    /// re-encoding is refresh time, not forward time.
    fn forward(
        &mut self,
        step: u64,
        pairs: &[Pair],
        negatives: &[ProductId],
        stats: &mut StepStats,
    ) -> Forward {
        let (k, d) = (self.cfg.k(), self.model.dim());
        let t1 = Instant::now();
        let (queries, q_slot) = distinct(pairs.iter().map(|p| p.query));
        let (products, c_slot) = distinct(
            pairs
                .iter()
                .map(|p| p.product.0)
                .chain(negatives.iter().map(|p| p.0)),
        );
        let q_texts: Vec<&[u32]> = texts_of(&self.data.query_rows, &queries).collect();
        let p_texts: Vec<&[u32]> = texts_of(&self.data.product_rows, &products).collect();
        let towers = &self.model.towers;
        let (q_cache, p_cache) = (&mut self.q_cache, &mut self.p_cache);
        rayon::join(
            || towers.forward(Side::Query, &q_texts, q_cache),
            || towers.forward(Side::Product, &p_texts, p_cache),
        );
        let zq_plain = gather(&self.q_cache, &q_slot, d);
        let items_ms = self.refresh_items(step);
        stats.refresh_ms += items_ms;
        let personal = self.personal_forward(pairs, &zq_plain);
        // Plain runs use the tower output as it is (no copy on the hot path).
        let zq_personal: Option<Vec<f32>> = personal.as_ref().map(|per_pair| {
            per_pair
                .iter()
                .flat_map(|p| p.cache.out.iter().copied())
                .collect()
        });
        let zq: &[f32] = zq_personal.as_deref().unwrap_or(&zq_plain);
        let zc = gather(&self.p_cache, &c_slot, d);
        let data = &self.data;
        let masked = |i: usize, j: usize| {
            pairs[j].product == pairs[i].product
                || data.is_positive(pairs[i].query, pairs[j].product)
        };
        let b = pairs.len();
        stats.masked_in_batch = (0..b)
            .map(|i| (0..b).filter(|&j| j != i && masked(i, j)).count() as u32)
            .sum();
        let loss = mnrl(zq, &zc, d, k, self.model.cfg.scale, &masked);
        stats.loss = loss.loss;
        stats.accuracy = loss.accuracy;
        stats.forward_ms = t1.elapsed().as_secs_f64() * 1e3 - items_ms;
        Forward {
            queries,
            q_slot,
            products,
            c_slot,
            zq_plain,
            personal,
            loss,
        }
    }

    /// Re-encodes the catalog vectors that stand for history items when `refresh` steps have
    /// passed since the last time (personalized runs only). Returns the milliseconds it took
    /// (0 when it was not due).
    fn refresh_items(&mut self, step: u64) -> f64 {
        let (Some(pcfg), Some(_), Some(_)) =
            (&self.cfg.personalize, &self.histories, &self.model.personal)
        else {
            return 0.0;
        };
        // Not yet `refresh` steps since the last encoding.
        if self.items_step.is_some_and(|s| step < s + pcfg.refresh) {
            return 0.0;
        }
        let t = Instant::now();
        self.items = self
            .model
            .encode_rows(Side::Product, &self.data.product_rows);
        self.items_step = Some(step);
        t.elapsed().as_secs_f64() * 1e3
    }

    /// The personalized tower's forward pass: each pair's plain query vector (a row of
    /// `zq_plain`) read with its customer's earlier items and features. `None` for plain runs.
    fn personal_forward(&self, pairs: &[Pair], zq_plain: &[f32]) -> Option<Vec<PairHistory>> {
        let (Some(pcfg), Some(histories), Some(tower)) =
            (&self.cfg.personalize, &self.histories, &self.model.personal)
        else {
            return None;
        };
        let d = self.model.dim();
        let items = &self.items;
        let ds = self.ds;
        let per_pair = pairs
            .par_iter()
            .zip(zq_plain.par_chunks(d))
            .map(|(pair, q)| {
                let before = ds.interactions[pair.event as usize].time;
                let (vectors, weights) = history_of(
                    &ds.interactions,
                    histories,
                    items,
                    d,
                    pair.user,
                    before,
                    pcfg.history,
                );
                let features = pair
                    .user
                    .map_or_else(Vec::new, |u| tower.features(ds.users.get(u)));
                let mut cache = PersonalCache::default();
                tower.forward_with(q, &vectors, &weights, &features, &mut cache);
                PairHistory {
                    vectors,
                    weights,
                    features,
                    cache,
                }
            })
            .collect();
        Some(per_pair)
    }

    /// Phase 3, backward: back through the personalized tower, then the gradients of repeated
    /// texts summed (in batch order), then the towers.
    fn backward(&self, fwd: &Forward) -> Grads {
        let d = self.model.dim();
        let towers = &self.model.towers;
        let (dq_personal, personal) = match (&fwd.personal, &self.model.personal) {
            (Some(per_pair), Some(tower)) => {
                let (dq, grad) = personal_backward(tower, per_pair, &fwd.zq_plain, &fwd.loss, d);
                (Some(dq), Some(grad))
            }
            _ => (None, None),
        };
        let d_query: &[f32] = dq_personal.as_deref().unwrap_or(&fwd.loss.d_query);
        let dzq = scatter(d_query, &fwd.q_slot, fwd.queries.len(), d);
        let dzp = scatter(&fwd.loss.d_candidates, &fwd.c_slot, fwd.products.len(), d);
        let mut heads: Vec<Dense> = towers.heads.iter().map(|_| zero_dense(d)).collect();
        let (mut dx, mut dxp) = (Vec::new(), Vec::new());
        let hq = towers.head_index(Side::Query);
        let hp = towers.head_index(Side::Product);
        towers.backward(Side::Query, &self.q_cache, &dzq, &mut heads[hq], &mut dx);
        towers.backward(Side::Product, &self.p_cache, &dzp, &mut heads[hp], &mut dxp);
        dx.extend_from_slice(&dxp);
        Grads {
            dx,
            heads,
            personal,
        }
    }

    /// Phase 4, updates at optimiser step `opt_step`: the personalized tower, then the touched
    /// embedding rows (sparse), then the heads. Returns the number of embedding rows updated.
    fn update(&mut self, opt_step: u64, fwd: &Forward, grads: &Grads) -> usize {
        let d = self.model.dim();
        if let (Some(g), Some(pcfg), Some(tower)) = (
            &grads.personal,
            &self.cfg.personalize,
            self.model.personal.as_mut(),
        ) {
            let mut flat = tower.to_flat();
            let bc = bias_corrections(&self.cfg.optim, opt_step);
            adam_update(
                &self.cfg.optim,
                pcfg.lr,
                bc,
                &mut flat,
                g,
                &mut self.personal_m,
                &mut self.personal_v,
            );
            tower.set_flat(&flat);
        }
        let data = &self.data;
        let texts: Vec<&[u32]> = texts_of(&data.query_rows, &fwd.queries)
            .chain(texts_of(&data.product_rows, &fwd.products))
            .collect();
        let touched_rows = apply_sparse(
            SparseTarget {
                emb: &mut self.model.towers.emb,
                state: &mut self.sparse,
                touched: &mut self.touched,
                row_slot: &mut self.row_slot,
                d,
                pooling: self.model.cfg.tower.pooling,
                cfg: &self.cfg.optim,
            },
            &texts,
            &grads.dx,
            opt_step,
        );
        for (h, g) in grads.heads.iter().enumerate() {
            self.dense[h].step(
                &self.cfg.optim,
                opt_step,
                &mut self.model.towers.heads[h],
                g,
            );
        }
        touched_rows
    }

    /// Validation Recall@10 of the current model (`None` when the split has no validation part).
    pub fn validate(&self) -> Result<Option<f64>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let personal = match (&self.cfg.personalize, &self.histories) {
            (Some(p), Some(h)) => Some((self.ds, h, p.history)),
            _ => None,
        };
        recall_at_k(
            &self.model,
            &self.data.product_rows,
            &self.validation,
            10,
            personal,
        )
        .map(Some)
    }

    /// The validation set used by [`validate`](Self::validate).
    pub fn validation_set(&self) -> &ValidationSet {
        &self.validation
    }
}

/// What the sparse update writes: the embedding table, its optimiser state, the touched flags,
/// and a scratch `row -> slot` table (all `NO_SLOT` between steps).
struct SparseTarget<'a> {
    emb: &'a mut [f32],
    state: &'a mut SparseState,
    touched: &'a mut [bool],
    row_slot: &'a mut [u32],
    d: usize,
    pooling: Pooling,
    cfg: &'a OptimConfig,
}

const NO_SLOT: u32 = u32::MAX;

/// Sums each touched row's gradient (in text order) and applies the sparse optimiser.
/// Returns the number of distinct rows updated.
fn apply_sparse(target: SparseTarget, texts: &[&[u32]], dx_all: &[f32], opt_step: u64) -> usize {
    let SparseTarget {
        emb,
        state,
        touched,
        row_slot,
        d,
        pooling,
        cfg,
    } = target;
    // Group feature occurrences by row, each row's in text order: a counting pass through the
    // row -> slot table, prefix sums, then a filling pass (linear; a sort of the (row, text)
    // pairs took a tenth of the step).
    let mut rows: Vec<u32> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    for ids in texts {
        for &r in *ids {
            let slot = &mut row_slot[r as usize];
            if *slot == NO_SLOT {
                *slot = rows.len() as u32;
                rows.push(r);
                counts.push(1);
            } else {
                counts[*slot as usize] += 1;
            }
        }
    }
    let mut starts = Vec::with_capacity(rows.len() + 1);
    let mut total = 0usize;
    for &c in &counts {
        starts.push(total);
        total += c as usize;
    }
    starts.push(total);
    let mut fill = starts.clone();
    let mut occ = vec![0u32; total];
    for (t, ids) in texts.iter().enumerate() {
        for &r in *ids {
            let slot = row_slot[r as usize] as usize;
            occ[fill[slot]] = t as u32;
            fill[slot] += 1;
        }
    }
    for &r in &rows {
        row_slot[r as usize] = NO_SLOT;
    }
    let weights: Vec<f32> = texts.iter().map(|ids| pooling.weight(ids.len())).collect();
    let bc = bias_corrections(cfg, opt_step);
    let emb = RowWriter(emb.as_mut_ptr());
    let adam = matches!(state, SparseState::Adam { .. });
    let (m_ptr, v_ptr, acc_ptr) = match state {
        SparseState::Adam { m, v } => (
            RowWriter(m.as_mut_ptr()),
            RowWriter(v.as_mut_ptr()),
            RowWriter(std::ptr::null_mut()),
        ),
        SparseState::RowAdagrad { acc } => (
            RowWriter(std::ptr::null_mut()),
            RowWriter(std::ptr::null_mut()),
            RowWriter(acc.as_mut_ptr()),
        ),
    };
    let (occ, starts, rows_ref) = (&occ, &starts, &rows);
    (0..rows.len())
        .into_par_iter()
        .with_min_len(64)
        .for_each_init(
            || vec![0.0f32; d],
            |g, u| {
                let row = rows_ref[u] as usize;
                if let Some(&ahead) = rows_ref.get(u + PREFETCH_AHEAD) {
                    let at = ahead as usize * d;
                    prefetch_ptr(emb.0.wrapping_add(at), d);
                    if adam {
                        prefetch_ptr(m_ptr.0.wrapping_add(at), d);
                        prefetch_ptr(v_ptr.0.wrapping_add(at), d);
                    }
                }
                g.iter_mut().for_each(|x| *x = 0.0);
                for &t in &occ[starts[u]..starts[u + 1]] {
                    let t = t as usize;
                    axpy(weights[t], &dx_all[t * d..(t + 1) * d], g);
                }
                // SAFETY: `row` is unique to this task (each row has one slot), and the pointers are
                // to `rows x d` (Adam moments, table) or `rows` (Adagrad) buffers that outlive this
                // parallel loop and are not otherwise accessed during it.
                unsafe {
                    let p = emb.row(row, d);
                    if adam {
                        adam_update(
                            cfg,
                            cfg.lr_embedding,
                            bc,
                            p,
                            g,
                            m_ptr.row(row, d),
                            v_ptr.row(row, d),
                        );
                    } else {
                        row_adagrad_update(
                            cfg,
                            cfg.lr_embedding,
                            p,
                            g,
                            &mut acc_ptr.row(row, 1)[0],
                        );
                    }
                }
            },
        );
    for &r in &rows {
        touched[r as usize] = true;
    }
    rows.len()
}

/// Pairs per parallel task of the personalized backward pass (fixed: sums do not depend on the
/// thread count).
const BLOCK_PAIRS: usize = 32;

/// One pair's history and what the personalized forward pass kept.
struct PairHistory {
    vectors: Vec<f32>,
    weights: Vec<f32>,
    features: Vec<Feature>,
    cache: PersonalCache,
}

/// What the forward pass of a step keeps for its backward pass and updates.
struct Forward {
    /// The step's distinct query ids, and each pair's slot among them.
    queries: Vec<u32>,
    q_slot: Vec<u32>,
    /// The step's distinct product ids (positives, then negatives), and each candidate's slot.
    products: Vec<u32>,
    c_slot: Vec<u32>,
    /// `B x d`: each pair's query vector from the query tower, before personalization.
    zq_plain: Vec<f32>,
    /// Each pair's history and personalized forward pass (personalized runs only).
    personal: Option<Vec<PairHistory>>,
    loss: LossOutput,
}

/// The gradients of a step.
struct Grads {
    /// `dL/dx` of every distinct text: the queries', then the products'.
    dx: Vec<f32>,
    /// One per head of the towers.
    heads: Vec<Dense>,
    /// Of the personalized tower's flat parameters (personalized runs only).
    personal: Option<Vec<f32>>,
}

/// The feature ids of each text in `ids`, in order.
fn texts_of<'r>(rows: &'r FeatureRows, ids: &'r [u32]) -> impl Iterator<Item = &'r [u32]> + 'r {
    ids.iter().map(|&i| rows.row(i as usize))
}

/// The cached vector of each slot, one `d`-row after another.
fn gather(cache: &Cache, slots: &[u32], d: usize) -> Vec<f32> {
    let mut m = Vec::with_capacity(slots.len() * d);
    for &s in slots {
        m.extend_from_slice(cache.z_row(s as usize));
    }
    m
}

/// `n x d`: each row of `grads` added into its slot's row, in order.
fn scatter(grads: &[f32], slots: &[u32], n: usize, d: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n * d];
    for (g, &s) in grads.chunks(d).zip(slots) {
        let s = s as usize;
        for (a, x) in m[s * d..(s + 1) * d].iter_mut().zip(g) {
            *a += x;
        }
    }
    m
}

/// Back through the personalized tower: each pair's `dL/dq` before the tower (`B x d`, in pair
/// order), and the tower's parameter gradients, summed over fixed chunks of [`BLOCK_PAIRS`]
/// pairs in chunk order (the same sums whatever the thread count).
fn personal_backward(
    tower: &Personalizer,
    per_pair: &[PairHistory],
    zq_plain: &[f32],
    loss: &LossOutput,
    d: usize,
) -> (Vec<f32>, Vec<f32>) {
    let parts: Vec<(Vec<f32>, Vec<f32>)> = per_pair
        .par_chunks(BLOCK_PAIRS)
        .enumerate()
        .map(|(c, chunk)| {
            let mut grad = tower.zeros_like();
            let mut dqs = Vec::with_capacity(chunk.len() * d);
            let mut dq = Vec::with_capacity(d);
            for (j, ph) in chunk.iter().enumerate() {
                let i = c * BLOCK_PAIRS + j;
                tower.backward_with(
                    &zq_plain[i * d..(i + 1) * d],
                    &ph.vectors,
                    &ph.weights,
                    &ph.features,
                    &ph.cache,
                    &loss.d_query[i * d..(i + 1) * d],
                    &mut grad,
                    &mut dq,
                );
                dqs.extend_from_slice(&dq);
            }
            (dqs, grad.to_flat())
        })
        .collect();
    let mut dq_all = Vec::with_capacity(per_pair.len() * d);
    let mut grad = vec![0.0f32; tower.len()];
    for (dqs, g) in parts {
        dq_all.extend_from_slice(&dqs);
        for (a, x) in grad.iter_mut().zip(&g) {
            *a += x;
        }
    }
    (dq_all, grad)
}

/// Distinct keys in first-seen order, and each key's index among them.
fn distinct(keys: impl Iterator<Item = u32>) -> (Vec<u32>, Vec<u32>) {
    let mut index: HashMap<u32, u32> = HashMap::new();
    let mut uniq = Vec::new();
    let slots = keys
        .map(|k| {
            *index.entry(k).or_insert_with(|| {
                uniq.push(k);
                uniq.len() as u32 - 1
            })
        })
        .collect();
    (uniq, slots)
}

fn zero_dense(d: usize) -> Dense {
    Dense {
        dim: d,
        w: vec![0.0; d * d],
        b: vec![0.0; d],
    }
}
