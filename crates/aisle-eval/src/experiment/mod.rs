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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aisle_core::synth::{self, GroundTruth, SynthConfig};
use aisle_core::Dataset;

use crate::error::{EvalError, Result};
use crate::zero_shot::MiniLmRanker;
use protocol::protocol;

pub use aisle_core::io::slug;
pub use config::{Budget, ExperimentConfig};
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

/// The synthetic world `aisle train --dataset synthetic` trains on (seed `seed`), with its
/// default splits and its truth: generated rather than loaded by name, to keep the truth for
/// the simulated A/B test.
pub fn synthetic_world(seed: u64) -> Result<(Dataset, GroundTruth)> {
    let world = synth::generate(&SynthConfig {
        seed,
        ..Default::default()
    })?;
    let mut ds = world.dataset;
    aisle_core::adapters::add_default_splits(&mut ds, seed)?;
    Ok((ds, world.truth))
}

/// Where an experiment on `ds` writes its trained runs when not told: `out/experiment/DATASET`.
pub fn default_runs_dir(ds: &Dataset) -> PathBuf {
    PathBuf::from("out/experiment").join(&ds.name)
}

/// Where an experiment on `ds` writes its report when not told: `reports/DATASET`.
pub fn default_report_dir(ds: &Dataset) -> PathBuf {
    PathBuf::from("reports").join(&ds.name)
}

/// The protocols to run: the `requested` splits of `ds`, each of which it must have, or all
/// of its splits when none is requested.
pub fn protocols(ds: &Dataset, requested: &[String]) -> Result<Vec<String>> {
    let splits: Vec<String> = if requested.is_empty() {
        ds.splits.iter().map(|s| s.name.clone()).collect()
    } else {
        requested.to_vec()
    };
    for s in &splits {
        ds.split_named(Some(s))?;
    }
    if splits.is_empty() {
        return Err(EvalError::NoSplits(ds.name.clone()));
    }
    Ok(splits)
}

/// The MiniLM folder of the zero-shot row, if it runs, and the MiniLM rows that do not run,
/// with why: left out (`wanted` false), its files not in `dir`, fine-tuning off
/// (`tune_steps` 0: minutes per row on a CPU).
pub fn minilm_rows(
    wanted: bool,
    tune_steps: u64,
    dir: &Path,
) -> (Option<PathBuf>, BTreeMap<String, String>) {
    let mut absent = BTreeMap::new();
    let minilm = if !wanted {
        absent.insert(
            crate::zero_shot::MINILM.to_owned(),
            "left out (--no-minilm)".to_owned(),
        );
        None
    } else if aisle_transformer::is_present(dir) {
        Some(dir.to_path_buf())
    } else {
        absent.insert(
            crate::zero_shot::MINILM.to_owned(),
            format!(
                "its files are not in {} (run `bash scripts/fetch-minilm.sh`, or set AISLE_MINILM_DIR)",
                dir.display()
            ),
        );
        None
    };
    let tuned_rows = format!("{MINILM_TUNED} in-batch / TB-HNS");
    if tune_steps == 0 {
        absent.insert(
            tuned_rows,
            "off: fine-tuning a transformer on a CPU takes minutes per row (`--minilm-tune-steps N` turns it on)".to_owned(),
        );
    } else if minilm.is_none() {
        absent.insert(
            tuned_rows,
            "the MiniLM files are not there (see above)".to_owned(),
        );
    }
    (minilm, absent)
}

/// The command line that made an experiment, as the report shows it: `aisle` and `args`, each
/// quoted for a POSIX shell where needed, so that it can be pasted back.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    std::iter::once("aisle".to_owned())
        .chain(args.into_iter().map(|a| shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` as a POSIX shell word: unchanged when it holds only safe characters, else single-quoted.
fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
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

#[cfg(test)]
mod tests {
    use super::{command_line, shell_quote};

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("--dataset"), "--dataset");
        assert_eq!(shell_quote("mix:0.5*taxonomy"), "'mix:0.5*taxonomy'");
        assert_eq!(shell_quote("TB leaf=taxonomy"), "'TB leaf=taxonomy'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            command_line([
                "experiment".to_owned(),
                "--row".to_owned(),
                "a b".to_owned()
            ]),
            "aisle experiment --row 'a b'"
        );
    }
}
