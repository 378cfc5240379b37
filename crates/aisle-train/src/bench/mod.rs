//! Training throughput, measured (the figures of `aisle bench train`, never a timed test).
//!
//! A bench runs `warmup` steps, then `steps` timed steps, with no validation and no files, and
//! reports pairs per second of the timed steps, where their time went (sampling, forward,
//! backward), and the cost of one ANCE refresh, amortised over its interval in pairs per second.

use std::time::Instant;

use serde::Serialize;

use aisle_core::{Dataset, Split};

use crate::error::Result;
use crate::trainer::{TrainConfig, Trainer};

/// What one bench measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchFigures {
    pub sampler: String,
    pub batch_size: usize,
    pub negatives: usize,
    pub dim: usize,
    pub buckets_log2: u8,
    pub steps: u64,
    /// Pairs per second, ANCE refreshes included at their interval.
    pub pairs_per_s: f64,
    /// Mean milliseconds per timed step (refreshes excluded), and its parts.
    pub step_ms: f64,
    pub sample_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Mean milliseconds of one ANCE refresh (re-encode the catalog and the queries, re-index),
    /// and the steps between refreshes; `None` for samplers without one.
    pub refresh_ms: f64,
    pub refresh_every: Option<u64>,
    /// Sampling's share of step time (refresh excluded, it is reported apart).
    pub sample_share: f64,
    /// Mean feature ids per query and per product text.
    pub query_ids: f64,
    pub product_ids: f64,
    /// Seconds to build the trainer (featurize the catalog, build the sampler).
    pub setup_s: f64,
}

/// Runs `warmup + steps` steps of `cfg` and measures the last `steps`.
pub fn bench(
    cfg: TrainConfig,
    ds: &Dataset,
    split: &Split,
    warmup: u64,
    steps: u64,
) -> Result<BenchFigures> {
    let t = Instant::now();
    let mut cfg = cfg;
    cfg.steps = warmup + steps;
    cfg.eval_every = 0;
    cfg.checkpoint_every = 0;
    let mut trainer = Trainer::new(cfg.clone(), ds, split)?;
    let setup_s = t.elapsed().as_secs_f64();
    // Refreshes are counted over every step, warm-up included (ANCE refreshes at step 0).
    let (mut refresh, mut refreshes) = (0.0, 0u64);
    let mut count_refresh = |ms: f64| {
        if ms > 0.0 {
            refresh += ms;
            refreshes += 1;
        }
    };
    for _ in 0..warmup {
        count_refresh(trainer.train_step()?.refresh_ms);
    }
    let (mut sample, mut forward, mut backward, mut timed_refresh) = (0.0, 0.0, 0.0, 0.0);
    let wall = Instant::now();
    for _ in 0..steps {
        let s = trainer.train_step()?;
        sample += s.sample_ms;
        forward += s.forward_ms;
        backward += s.backward_ms;
        timed_refresh += s.refresh_ms;
        count_refresh(s.refresh_ms);
    }
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    let n = steps.max(1) as f64;
    let train_ms = sample + forward + backward;
    let refresh_ms = if refreshes > 0 {
        refresh / refreshes as f64
    } else {
        0.0
    };
    // Throughput with refreshes at their configured interval, whether or not one fell within
    // the timed steps.
    let step_ms = (wall_ms - timed_refresh) / n;
    let amortized_ms = step_ms
        + cfg
            .sampler
            .ance_refresh()
            .map_or(0.0, |r| refresh_ms / r.max(1) as f64);
    Ok(BenchFigures {
        sampler: trainer.sampler_name(),
        batch_size: cfg.batch_size,
        negatives: cfg.k(),
        dim: cfg.model.tower.dim,
        buckets_log2: cfg.model.featurizer.buckets_log2,
        steps,
        pairs_per_s: cfg.batch_size as f64 / (amortized_ms / 1e3),
        step_ms,
        sample_ms: sample / n,
        forward_ms: forward / n,
        backward_ms: backward / n,
        refresh_ms,
        refresh_every: cfg.sampler.ance_refresh(),
        sample_share: if train_ms > 0.0 {
            sample / train_ms
        } else {
            0.0
        },
        query_ids: trainer.data.query_rows.mean_len(),
        product_ids: trainer.data.product_rows.mean_len(),
        setup_s,
    })
}
