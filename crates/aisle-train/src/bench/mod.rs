//! Training throughput, measured (the figures of `aisle bench train`, never a timed test).
//!
//! A bench runs `warmup` steps, then `steps` timed steps, with no validation and no files, and
//! reports pairs per second of the timed steps, where their time went (sampling, forward,
//! backward), and the cost of one ANCE refresh, amortised over its interval in pairs per second.
//! [`Table`] lays the runs of `aisle bench train` out as its table. Beside it: the worlds
//! `aisle bench search` serves ([`serving_world`]) and `aisle bench pipeline`, a retailer's
//! data at full size through `aisle train` ([`pipeline`](mod@pipeline)).

pub mod pipeline;
mod world;

use std::time::Instant;

use serde::Serialize;

use aisle_core::stats::{gib, peak_rss_bytes};
use aisle_core::{Dataset, Split};

use crate::error::Result;
use crate::optim::SparseKind;
use crate::sampler::SamplerSpec;
use crate::trainer::{TrainConfig, Trainer};

pub use world::serving_world;

/// The settings every run of `aisle bench train`'s table shares; each run adds its sampler and
/// negatives per pair. With the `cli` feature they are its flags.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Table {
    /// Pairs per step.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 256))]
    pub batch_size: usize,
    /// Embedding dimension.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 128))]
    pub dim: usize,
    /// log2 of the hashed feature buckets.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 20))]
    pub buckets_log2: u8,
    /// Optimiser of the embedding table: row-adagrad or adam.
    #[cfg_attr(feature = "cli", arg(long, default_value = "row-adagrad"))]
    pub optimizer: SparseKind,
    /// Untimed steps before the timed ones.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 20))]
    pub warmup: u64,
    /// Timed steps per run.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 200))]
    pub steps: u64,
}

impl Table {
    /// The lines above the table: the settings, the goals, the column names.
    pub fn header(&self, threads: usize) -> String {
        format!(
            "aisle bench train: batch {}, dim {}, 2^{} buckets, {:?} embedding optimiser, {} warm-up + {} timed steps per run, {threads} threads\n\
             goals: >= 50,000 pairs/s in-batch (k = 0); >= 15,000 pairs/s with k = 4 taxonomy negatives; sampling < 5% of step time; peak < 2 GiB\n\n\
             {:<14} {:<38} {:>2} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>11} {:>7} {:>7}\n",
            self.batch_size,
            self.dim,
            self.buckets_log2,
            self.optimizer,
            self.warmup,
            self.steps,
            "dataset",
            "sampler",
            "k",
            "pairs/s",
            "step ms",
            "sample",
            "forward",
            "backward",
            "sample%",
            "refresh ms",
            "q ids",
            "p ids"
        )
    }

    /// Benches `sampler` with `k` negatives per pair on `split` of `ds` ([`bench`]).
    pub fn run(
        &self,
        sampler: SamplerSpec,
        k: usize,
        ds: &Dataset,
        split: &Split,
    ) -> Result<BenchFigures> {
        let mut cfg = TrainConfig {
            sampler,
            negatives: k,
            batch_size: self.batch_size,
            ..TrainConfig::default()
        };
        cfg.model.tower.dim = self.dim;
        cfg.model.featurizer.buckets_log2 = self.buckets_log2;
        cfg.optim.sparse = self.optimizer;
        bench(cfg, ds, split, self.warmup, self.steps)
    }

    /// The lines below the table: the process's peak memory and what the columns mean.
    pub fn footer(&self) -> String {
        let peak = match peak_rss_bytes() {
            Some(p) => format!(
                "peak memory {:.2} GiB (whole process: every run above, the datasets and the 2^{} x {} table with its optimiser state)",
                gib(p),
                self.buckets_log2,
                self.dim
            ),
            None => "peak memory unknown (no /proc/self/status)".to_owned(),
        };
        format!(
            "\n{peak}\n\
             refresh ms /R: milliseconds of one ANCE re-encode and re-index, done every R steps; pairs/s counts it at that interval\n\
             step ms = sample + forward + backward per step (refresh apart); sample% = sampling's share of it; q ids / p ids: mean hashed features per text\n"
        )
    }
}

/// A run of `aisle bench train --runs`, `SAMPLER/K`: the sampler's spec and its negatives per
/// pair, or what is wrong with it.
pub fn parse_run(run: &str) -> std::result::Result<(&str, usize), String> {
    let (spec, k) = run
        .rsplit_once('/')
        .ok_or_else(|| "expected SAMPLER/K".to_owned())?;
    let k = k
        .parse()
        .map_err(|e| format!("K must be a whole number: {e}"))?;
    Ok((spec, k))
}

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

impl BenchFigures {
    /// This run's row of the table, on the dataset named `dataset`.
    pub fn row(&self, dataset: &str) -> String {
        let refresh = match self.refresh_every {
            Some(r) => format!("{:.0} /{r}", self.refresh_ms),
            None => "-".into(),
        };
        format!(
            "{:<14} {:<38} {:>2} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6.1}% {:>11} {:>7.1} {:>7.1}",
            dataset,
            self.sampler,
            self.negatives,
            self.pairs_per_s,
            self.step_ms,
            self.sample_ms,
            self.forward_ms,
            self.backward_ms,
            100.0 * self.sample_share,
            refresh,
            self.query_ids,
            self.product_ids
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_a_sampler_and_a_whole_k() {
        assert_eq!(parse_run("ance:refresh=200/4"), Ok(("ance:refresh=200", 4)));
        assert_eq!(parse_run("taxonomy"), Err("expected SAMPLER/K".to_owned()));
        assert!(parse_run("taxonomy/x")
            .expect_err("not a number")
            .starts_with("K must be a whole number: "));
    }
}
