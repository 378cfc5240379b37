//! `aisle bench minilm`: all-MiniLM-L6-v2 in candle, encode throughput and fine-tuning pairs/s
//! (MultipleNegativesRankingLoss, AdamW), on the same titles and settings as
//! scripts/bench-minilm-peer.py measures sentence-transformers with (scripts/bench-minilm.sh runs
//! both).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_nn::{Optimizer, ParamsAdamW};
use clap::Args;

use aisle_transformer::{mnrl_loss, MiniLm};

#[derive(Args)]
pub struct BenchMinilmArgs {
    /// One title a line [default: the first distinct titles of the embedded synthetic world].
    #[arg(long)]
    pub titles_file: Option<PathBuf>,
    /// Titles to encode.
    #[arg(long, default_value_t = 2000)]
    pub titles: usize,
    /// Texts per batch (encoding and fine-tuning; encoding runs each batch as forward passes of
    /// at most 32 texts, side by side; fine-tuning packs the queries and titles of a step into
    /// one pass).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed fine-tuning steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// The model folder [default: $AISLE_MINILM_DIR, else out/models/all-minilm-l6-v2].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Fine-tune through candle's autograd (aisle's fused ops, aisle's in-place AdamW) instead
    /// of the plain-buffer tuner (`aisle_transformer::tune`), for comparison.
    #[arg(long)]
    pub autograd: bool,
    /// With `--autograd`: candle-nn's AdamW instead of aisle's in-place one.
    #[arg(long, requires = "autograd")]
    pub candle_adamw: bool,
}

/// How the fine-tuning steps run.
enum StepPath {
    /// The plain-buffer forward and backward passes with their own AdamW.
    Tuner(Box<aisle_transformer::Tuner>),
    /// candle's autograd with aisle's in-place AdamW.
    Aisle(aisle_transformer::optim::AdamW),
    /// candle's autograd with candle-nn's AdamW.
    Candle(candle_nn::AdamW),
}

/// The query of a fine-tuning pair: the title's first three words (the positive is the title).
pub fn pair_query(title: &str) -> String {
    title
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn titles(args: &BenchMinilmArgs) -> Result<Vec<String>> {
    let mut out: Vec<String> = match &args.titles_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => {
            let world = aisle_core::synth::default_world()?;
            world
                .dataset
                .catalog
                .iter()
                .map(|(_, p)| p.title.clone())
                .collect()
        }
    };
    anyhow::ensure!(
        args.batch >= 2,
        "--batch {}: a batch needs at least 2 texts (the other titles are a pair's negatives)",
        args.batch
    );
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out.truncate(args.titles);
    anyhow::ensure!(
        out.len() >= args.batch.max(2),
        "only {} distinct titles, fewer than a batch of {}",
        out.len(),
        args.batch
    );
    Ok(out)
}

pub fn bench_minilm(args: BenchMinilmArgs) -> Result<()> {
    let dir = args
        .model
        .clone()
        .unwrap_or_else(|| aisle_transformer::default_dir(Path::new(".")));
    let titles = titles(&args)?;
    let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
    let threads = rayon::current_num_threads();
    println!(
        "aisle bench minilm: all-MiniLM-L6-v2 in candle, {} titles, batch {}, {threads} threads",
        titles.len(),
        args.batch
    );

    let model = MiniLm::load(&dir)?;
    model.encode(&refs[..args.batch.min(refs.len())], args.batch)?;
    let start = Instant::now();
    let vectors = model.encode(&refs, args.batch)?;
    let encode_s = start.elapsed().as_secs_f64();
    println!(
        "  encode      {:>8.1} titles/s  ({} titles in {encode_s:.2} s, dim {})",
        vectors.len() as f64 / encode_s,
        vectors.len(),
        model.dim()
    );
    drop(model);

    let (model, varmap) = MiniLm::load_trainable(&dir)?;
    let params = ParamsAdamW {
        lr: 2e-5,
        ..ParamsAdamW::default()
    };
    let tuner = if args.autograd {
        None
    } else {
        model.tuner(params.clone())?
    };
    let mut path = match tuner {
        Some(t) => StepPath::Tuner(Box::new(t)),
        None if args.candle_adamw => {
            StepPath::Candle(candle_nn::AdamW::new(varmap.all_vars(), params)?)
        }
        None => StepPath::Aisle(aisle_transformer::optim::AdamW::new(
            varmap.all_vars(),
            params,
        )?),
    };
    let how = match &path {
        StepPath::Tuner(_) => "plain-buffer passes, aisle's AdamW",
        StepPath::Aisle(_) => "candle autograd, aisle's AdamW",
        StepPath::Candle(_) => "candle autograd, candle-nn's AdamW",
    };
    let queries: Vec<String> = titles.iter().map(|t| pair_query(t)).collect();
    let batches: Vec<(Vec<&str>, Vec<&str>)> = queries
        .chunks_exact(args.batch)
        .zip(titles.chunks_exact(args.batch))
        .map(|(q, t)| {
            (
                q.iter().map(String::as_str).collect(),
                t.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut step = |i: usize| -> Result<f32> {
        let (q, t) = &batches[i % batches.len()];
        match &mut path {
            StepPath::Tuner(tuner) => {
                // Queries and titles in one packed pass: the loss splits the embeddings.
                let texts: Vec<&str> = q.iter().chain(t).copied().collect();
                let n = q.len();
                Ok(tuner
                    .train_step(&texts, |e| {
                        mnrl_loss(&e.narrow(0, 0, n)?, &e.narrow(0, n, n)?, 20.0)
                            .map_err(|e| candle_core::Error::Msg(e.to_string()))
                    })?
                    .loss)
            }
            StepPath::Aisle(opt) => {
                let loss = mnrl_loss(&model.embed_batch(q)?, &model.embed_batch(t)?, 20.0)?;
                opt.backward_step(&loss)?;
                Ok(loss.to_scalar::<f32>()?)
            }
            StepPath::Candle(opt) => {
                let loss = mnrl_loss(&model.embed_batch(q)?, &model.embed_batch(t)?, 20.0)?;
                opt.backward_step(&loss)?;
                Ok(loss.to_scalar::<f32>()?)
            }
        }
    };
    for i in 0..2 {
        step(i)?;
    }
    let start = Instant::now();
    let mut last = 0.0;
    for i in 0..args.steps {
        last = step(i + 2)?;
    }
    let tune_s = start.elapsed().as_secs_f64();
    println!(
        "  fine-tune   {:>8.1} pairs/s   ({} steps of {} pairs in {tune_s:.2} s, MNRL scale 20, AdamW lr 2e-5, {how}, last loss {last:.3})",
        (args.steps * args.batch) as f64 / tune_s,
        args.steps,
        args.batch,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pair_queries_are_the_first_three_words() {
        assert_eq!(super::pair_query("LG 55 inch OLED TV"), "LG 55 inch");
        assert_eq!(super::pair_query("  kettle "), "kettle");
    }
}
