//! The paper's evaluation in one run: every baseline and every negative sampler trained under the
//! same budget and seeds, evaluated on the same test queries, with what each training cost.
//!
//! For each protocol (split) of a dataset, [`run`]:
//!
//! 1. trains one two-tower model per dense row and seed, all with the same steps, batch size,
//!    negatives per pair and validation schedule ([`ExperimentConfig`]);
//! 2. picks, on *validation* Recall@10 (never on test), the best TB-HNS variant, which also
//!    trains the personalized row, and the best dense row, which the hybrid row fuses with BM25;
//! 3. evaluates baselines and models on the test queries ([`crate::evaluate_groups`]: a model row is the
//!    mean over its seeds), with segments and replayed outcomes;
//! 4. keeps each run's convergence curve and time split, and the seconds each row took to reach
//!    ANCE's best validation Recall@10.
//!
//! The result ([`Experiment`]) serialises to `results.json` (schema [`SCHEMA`], documented in
//! docs/experiments.md); [`crate::report`] writes it out with its plots.
//!
//! Its files, one concept each (their public items are re-exported here): `rows` (the rows
//! compared and their kinds), `config` (how an experiment trains and evaluates), `results` (what
//! `results.json` holds), `train` (training the rows), `models` (trained models as rankers),
//! `choose` (choices on validation with the personalized row's models) and `protocol` (one
//! split, phase by phase).

mod choose;
mod config;
mod models;
mod protocol;
mod results;
mod rows;
mod train;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aisle_core::Dataset;

use crate::error::{EvalError, Result};
use crate::zero_shot::MiniLmRanker;
use protocol::protocol;

pub use aisle_core::io::slug;
pub use config::ExperimentConfig;
pub use protocol::validation_precedes_test;
pub use results::{
    mean_curve, Cost, CurvePoint, Experiment, FineTuned, HistoryChoice, Protocol, Reach,
    RerankChoice, RowInfo, Run, SCHEMA,
};
pub use rows::{
    uses_taxonomy, DenseRow, RowKind, BM25, CATALOG_POOL_ROW, HISTORY_ONLY, MEMORISATION,
    MINILM_TUNED, POPULARITY, REPURCHASE, WITHOUT_VALIDATION,
};
pub use train::run_dir;

/// What the caller supplies beyond the configuration.
pub struct Inputs<'a> {
    pub ds: Arc<Dataset>,
    /// Protocols to run, by split name.
    pub splits: Vec<String>,
    /// The synthetic world's truth, for the simulated A/B test.
    pub truth: Option<&'a aisle_core::synth::GroundTruth>,
    pub command: String,
    pub quick: bool,
    /// Rows that cannot be run here, with the reason (e.g. MiniLM without its files).
    pub absent: BTreeMap<String, String>,
    /// The all-MiniLM-L6-v2 folder, for the zero-shot row.
    pub minilm: Option<PathBuf>,
}

/// Runs the experiment. `progress` receives one line per step of the work.
pub fn run(
    inputs: Inputs,
    cfg: &ExperimentConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Experiment> {
    let start = Instant::now();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    check(cfg)?;
    let ds = &inputs.ds;
    // The zero-shot model reads the catalog once for every protocol.
    let minilm = match &inputs.minilm {
        Some(dir) => {
            let r = MiniLmRanker::new(ds, dir)?;
            progress(&format!(
                "encoded {} products with all-MiniLM-L6-v2 in {:.1} s",
                ds.catalog.len(),
                r.encode_s
            ));
            Some(r)
        }
        None => None,
    };
    let mut protocols = Vec::new();
    for name in &inputs.splits {
        let split = ds.split(name).ok_or_else(|| {
            EvalError::Empty(format!("dataset `{}` has no split `{name}`", ds.name))
        })?;
        protocols.push(protocol(
            ds,
            split,
            cfg,
            inputs.truth,
            minilm.as_ref().zip(inputs.minilm.as_deref()),
            progress,
        )?);
    }
    let mut notes = vec![format!(
        "every dense row trained for {} steps of {} pairs, {} sampled negatives per pair (0 for in-batch), seeds {:?}",
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.train.negatives,
        cfg.seeds
    )];
    notes.extend(ds.notes.iter().cloned());
    Ok(Experiment {
        schema: SCHEMA,
        dataset: ds.name.clone(),
        command: inputs.command,
        aisle_version: env!("CARGO_PKG_VERSION"),
        started,
        wall_s: start.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
        quick: inputs.quick,
        config: cfg.clone(),
        protocols,
        absent: inputs.absent,
        notes,
    })
}

/// Refuses a configuration an experiment cannot run: no seed, a negative or non-finite
/// history-term candidate, or two rows whose names give the same folder.
fn check(cfg: &ExperimentConfig) -> Result<()> {
    if cfg.seeds.is_empty() {
        return Err(EvalError::Empty(
            "an experiment needs at least one seed".into(),
        ));
    }
    if let Some(b) = cfg
        .history_boosts
        .iter()
        .find(|b| !b.is_finite() || **b < 0.0)
    {
        return Err(EvalError::Ranker(format!(
            "history-term candidate {b} is not a finite number >= 0"
        )));
    }
    let mut slugs: BTreeMap<String, &str> = [BM25, POPULARITY, MEMORISATION, REPURCHASE]
        .iter()
        .map(|n| (slug(n), *n))
        .collect();
    for row in &cfg.rows {
        if let Some(other) = slugs.insert(slug(&row.name), &row.name) {
            return Err(EvalError::Ranker(format!(
                "row names `{}` and `{other}` clash (they name the same row or folder)",
                row.name
            )));
        }
    }
    Ok(())
}
