//! MiniLM throughput, measured (the figures of `aisle bench minilm`, never a timed test): encode
//! titles per second, and fine-tuning pairs per second (MultipleNegativesRankingLoss, AdamW), on
//! the same titles and settings as scripts/bench-minilm-peer.py measures sentence-transformers
//! with (scripts/bench-minilm.sh runs both).
//!
//! [`titles`] picks the titles, [`encode`] times [`MiniLm::encode`] over them, and [`fine_tune`]
//! times fine-tuning steps on pairs of a title and its [`pair_query`], through the plain-buffer
//! [`Tuner`] or candle's autograd ([`StepPath`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use candle_nn::{Optimizer, ParamsAdamW};

use crate::{mnrl_loss, MiniLm, Result, TransformerError, Tuner};

/// Fine-tuning steps run, untimed, before the timed ones.
pub const WARMUP_STEPS: usize = 2;
/// AdamW's learning rate in the fine-tuning steps.
pub const LEARNING_RATE: f64 = 2e-5;
/// The MNRL scale (the inverse temperature of the in-batch softmax).
pub const MNRL_SCALE: f64 = 20.0;

/// How the fine-tuning steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPath {
    /// The plain-buffer forward and backward passes ([`Tuner`]) with their own AdamW; a model
    /// the tuner does not cover runs as [`StepPath::Aisle`].
    Tuner,
    /// candle's autograd with aisle's in-place AdamW ([`crate::optim::AdamW`]).
    Aisle,
    /// candle's autograd with candle-nn's AdamW.
    Candle,
}

impl StepPath {
    /// The path `aisle bench minilm`'s flags ask for: the tuner, or with `autograd` candle's
    /// autograd, with candle-nn's AdamW when `candle_adamw`.
    pub fn new(autograd: bool, candle_adamw: bool) -> StepPath {
        match (autograd, candle_adamw) {
            (false, _) => StepPath::Tuner,
            (true, false) => StepPath::Aisle,
            (true, true) => StepPath::Candle,
        }
    }

    /// The path in words, as the bench reports it.
    pub fn describe(self) -> &'static str {
        match self {
            StepPath::Tuner => "plain-buffer passes, aisle's AdamW",
            StepPath::Aisle => "candle autograd, aisle's AdamW",
            StepPath::Candle => "candle autograd, candle-nn's AdamW",
        }
    }
}

/// What to bench.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The model folder.
    pub model: PathBuf,
    /// One title a line; `None`: the distinct titles of the embedded synthetic world.
    pub titles_file: Option<PathBuf>,
    /// Titles to encode (at most; the first distinct ones).
    pub titles: usize,
    /// Texts per batch, in encoding and fine-tuning (at least 2: the other titles of a batch are
    /// a pair's negatives).
    pub batch: usize,
    /// Timed fine-tuning steps (after [`WARMUP_STEPS`]).
    pub steps: usize,
    /// How the fine-tuning steps run.
    pub path: StepPath,
}

/// What [`encode`] measured.
#[derive(Clone, Debug)]
pub struct EncodeFigures {
    /// Titles encoded in the timed pass, and its seconds.
    pub titles: usize,
    pub seconds: f64,
    pub titles_per_s: f64,
    /// Width of the embeddings.
    pub dim: usize,
}

/// What [`fine_tune`] measured.
#[derive(Clone, Debug)]
pub struct TuneFigures {
    /// Timed steps, pairs a step, and their seconds.
    pub steps: usize,
    pub batch: usize,
    pub seconds: f64,
    pub pairs_per_s: f64,
    /// The path the steps ran on (a [`StepPath::Tuner`] request the tuner does not cover ran on
    /// [`StepPath::Aisle`]).
    pub path: StepPath,
    /// The loss of the last timed step (0 when none were timed).
    pub last_loss: f32,
}

/// The line that opens `aisle bench minilm`: the titles, the batch and the threads.
pub fn header(titles: usize, batch: usize, threads: usize) -> String {
    format!(
        "aisle bench minilm: all-MiniLM-L6-v2 in candle, {titles} titles, batch {batch}, {threads} threads"
    )
}

impl EncodeFigures {
    /// `  encode  N titles/s  (...)`.
    pub fn line(&self) -> String {
        format!(
            "  encode      {:>8.1} titles/s  ({} titles in {:.2} s, dim {})",
            self.titles_per_s, self.titles, self.seconds, self.dim
        )
    }
}

impl TuneFigures {
    /// `  fine-tune  N pairs/s  (...)`, with the loss, the optimiser and the path the steps ran on.
    pub fn line(&self) -> String {
        format!(
            "  fine-tune   {:>8.1} pairs/s   ({} steps of {} pairs in {:.2} s, MNRL scale 20, AdamW lr 2e-5, {}, last loss {:.3})",
            self.pairs_per_s,
            self.steps,
            self.batch,
            self.seconds,
            self.path.describe(),
            self.last_loss,
        )
    }
}

/// The query of a fine-tuning pair: the title's first three words (the positive is the title).
pub fn pair_query(title: &str) -> String {
    title
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first `opts.titles` distinct titles of `opts.titles_file` (trimmed, blank lines skipped)
/// or of the embedded synthetic world; at least a batch of them.
pub fn titles(opts: &BenchOptions) -> Result<Vec<String>> {
    let mut out: Vec<String> = match &opts.titles_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|source| TransformerError::Io {
                path: f.clone(),
                source,
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => aisle_core::synth::default_world()?
            .dataset
            .catalog
            .iter()
            .map(|(_, p)| p.title.clone())
            .collect(),
    };
    if opts.batch < 2 {
        return Err(TransformerError::Bench(format!(
            "batch {}: a batch needs at least 2 texts (the other titles are a pair's negatives)",
            opts.batch
        )));
    }
    let mut seen = HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out.truncate(opts.titles);
    if out.len() < opts.batch {
        return Err(TransformerError::Bench(format!(
            "only {} distinct titles, fewer than a batch of {}",
            out.len(),
            opts.batch
        )));
    }
    Ok(out)
}

/// Loads the model of `opts`, encodes one batch of `titles` to warm up, then times encoding all
/// of them, `opts.batch` texts a batch.
pub fn encode(opts: &BenchOptions, titles: &[String]) -> Result<EncodeFigures> {
    let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
    let model = MiniLm::load(&opts.model)?;
    model.encode(&refs[..opts.batch.min(refs.len())], opts.batch)?;
    let start = Instant::now();
    let vectors = model.encode(&refs, opts.batch)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(EncodeFigures {
        titles: vectors.len(),
        seconds,
        titles_per_s: vectors.len() as f64 / seconds,
        dim: model.dim(),
    })
}

/// The optimiser state of a fine-tuning run, by path.
enum Stepper {
    Tuner(Box<Tuner>),
    Aisle(crate::optim::AdamW),
    Candle(candle_nn::AdamW),
}

/// Loads the model of `opts` trainable, runs [`WARMUP_STEPS`] fine-tuning steps, then times
/// `opts.steps` more: each on a batch of `opts.batch` pairs (a [`pair_query`] and its title, the
/// batch's other titles its negatives), cycling through `titles` batch by batch.
pub fn fine_tune(opts: &BenchOptions, titles: &[String]) -> Result<TuneFigures> {
    let (model, varmap) = MiniLm::load_trainable(&opts.model)?;
    let params = ParamsAdamW {
        lr: LEARNING_RATE,
        ..ParamsAdamW::default()
    };
    let tuner = match opts.path {
        StepPath::Tuner => model.tuner(params.clone())?,
        StepPath::Aisle | StepPath::Candle => None,
    };
    let mut stepper = match tuner {
        Some(t) => Stepper::Tuner(Box::new(t)),
        None if opts.path == StepPath::Candle => {
            Stepper::Candle(candle_nn::AdamW::new(varmap.all_vars(), params)?)
        }
        None => Stepper::Aisle(crate::optim::AdamW::new(varmap.all_vars(), params)?),
    };
    let path = match &stepper {
        Stepper::Tuner(_) => StepPath::Tuner,
        Stepper::Aisle(_) => StepPath::Aisle,
        Stepper::Candle(_) => StepPath::Candle,
    };
    let queries: Vec<String> = titles.iter().map(|t| pair_query(t)).collect();
    let batches: Vec<(Vec<&str>, Vec<&str>)> = queries
        .chunks_exact(opts.batch)
        .zip(titles.chunks_exact(opts.batch))
        .map(|(q, t)| {
            (
                q.iter().map(String::as_str).collect(),
                t.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    if batches.is_empty() {
        return Err(TransformerError::Bench(format!(
            "only {} titles, fewer than a batch of {}",
            titles.len(),
            opts.batch
        )));
    }
    let mut step = |i: usize| -> Result<f32> {
        let (q, t) = &batches[i % batches.len()];
        match &mut stepper {
            Stepper::Tuner(tuner) => {
                // Queries and titles in one packed pass: the loss splits the embeddings.
                let texts: Vec<&str> = q.iter().chain(t).copied().collect();
                let n = q.len();
                Ok(tuner
                    .train_step(&texts, |e| {
                        mnrl_loss(&e.narrow(0, 0, n)?, &e.narrow(0, n, n)?, MNRL_SCALE)
                            .map_err(|e| candle_core::Error::Msg(e.to_string()))
                    })?
                    .loss)
            }
            Stepper::Aisle(opt) => {
                let loss = mnrl_loss(&model.embed_batch(q)?, &model.embed_batch(t)?, MNRL_SCALE)?;
                opt.backward_step(&loss)?;
                Ok(loss.to_scalar::<f32>()?)
            }
            Stepper::Candle(opt) => {
                let loss = mnrl_loss(&model.embed_batch(q)?, &model.embed_batch(t)?, MNRL_SCALE)?;
                opt.backward_step(&loss)?;
                Ok(loss.to_scalar::<f32>()?)
            }
        }
    };
    for i in 0..WARMUP_STEPS {
        step(i)?;
    }
    let mut last_loss = 0.0;
    let start = Instant::now();
    for i in 0..opts.steps {
        last_loss = step(i + WARMUP_STEPS)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(TuneFigures {
        steps: opts.steps,
        batch: opts.batch,
        seconds,
        pairs_per_s: (opts.steps * opts.batch) as f64 / seconds,
        path,
        last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_queries_are_the_first_three_words() {
        assert_eq!(pair_query("LG 55 inch OLED TV"), "LG 55 inch");
        assert_eq!(pair_query("  kettle "), "kettle");
    }

    /// A titles file of 7 distinct titles (9 lines: a repeat and a blank one), a tiny model
    /// folder whose vocabulary is their words, and options over them.
    fn tiny(batch: usize, path: StepPath) -> (tempfile::TempDir, BenchOptions) {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = "red shoe desk chair\n blue lamp \n\ngreen tea cup\nred shoe desk chair\n\
                     long text here\ndesk chair red\ncup cup tea lamp\nshoe";
        let file = dir.path().join("titles.txt");
        std::fs::write(&file, lines).expect("titles");
        let vocabulary: Vec<String> = lines.split_whitespace().map(str::to_owned).collect();
        crate::tiny::write_model_folder(dir.path(), &vocabulary).expect("tiny model");
        let opts = BenchOptions {
            model: dir.path().to_path_buf(),
            titles_file: Some(file),
            titles: 6,
            batch,
            steps: 3,
            path,
        };
        (dir, opts)
    }

    #[test]
    fn titles_are_the_first_distinct_trimmed_lines() {
        let (_dir, opts) = tiny(2, StepPath::Tuner);
        let t = titles(&opts).expect("titles");
        assert_eq!(
            t,
            [
                "red shoe desk chair",
                "blue lamp",
                "green tea cup",
                "long text here",
                "desk chair red",
                "cup cup tea lamp"
            ]
        );
    }

    #[test]
    fn titles_refuse_a_batch_below_2_or_above_the_titles() {
        let (_dir, mut opts) = tiny(1, StepPath::Tuner);
        let err = titles(&opts).expect_err("batch 1");
        assert!(err.to_string().contains("at least 2 texts"), "{err}");
        opts.batch = 7;
        let err = titles(&opts).expect_err("batch 7 of 6 titles");
        assert!(err.to_string().contains("only 6 distinct titles"), "{err}");
    }

    #[test]
    fn the_bench_counts_titles_and_pairs_on_every_path() {
        for path in [StepPath::Tuner, StepPath::Aisle, StepPath::Candle] {
            let (_dir, opts) = tiny(4, path);
            let t = titles(&opts).expect("titles");
            let e = encode(&opts, &t).expect("encode");
            assert_eq!((e.titles, e.dim), (6, crate::tiny::DIM));
            assert!(e.titles_per_s > 0.0 && e.seconds > 0.0);
            let f = fine_tune(&opts, &t).expect("fine-tune");
            assert_eq!((f.steps, f.batch, f.path), (3, 4, path));
            assert!(f.pairs_per_s > 0.0 && f.seconds > 0.0);
            // Four pairs, scale 20: the loss starts near ln 4 and stays finite and positive.
            assert!(f.last_loss.is_finite() && f.last_loss > 0.0, "{path:?}");
        }
    }
}
