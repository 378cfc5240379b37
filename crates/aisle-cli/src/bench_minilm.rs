//! `aisle bench minilm`: all-MiniLM-L6-v2 in candle, encode throughput and fine-tuning pairs/s
//! (MultipleNegativesRankingLoss, AdamW), on the same titles and settings as
//! scripts/bench-minilm-peer.py measures sentence-transformers with (scripts/bench-minilm.sh runs
//! both). The work is `aisle_transformer::bench`'s; this parses the arguments and prints.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use aisle_transformer::bench::{self, BenchOptions, StepPath};

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

impl BenchMinilmArgs {
    fn options(self) -> BenchOptions {
        BenchOptions {
            model: self
                .model
                .unwrap_or_else(|| aisle_transformer::default_dir(Path::new("."))),
            titles_file: self.titles_file,
            titles: self.titles,
            batch: self.batch,
            steps: self.steps,
            path: match (self.autograd, self.candle_adamw) {
                (false, _) => StepPath::Tuner,
                (true, false) => StepPath::Aisle,
                (true, true) => StepPath::Candle,
            },
        }
    }
}

pub fn bench_minilm(args: BenchMinilmArgs) -> Result<()> {
    let opts = args.options();
    let titles = bench::titles(&opts)?;
    println!(
        "aisle bench minilm: all-MiniLM-L6-v2 in candle, {} titles, batch {}, {} threads",
        titles.len(),
        opts.batch,
        rayon::current_num_threads()
    );
    let e = bench::encode(&opts, &titles)?;
    println!(
        "  encode      {:>8.1} titles/s  ({} titles in {:.2} s, dim {})",
        e.titles_per_s, e.titles, e.seconds, e.dim
    );
    let f = bench::fine_tune(&opts, &titles)?;
    println!(
        "  fine-tune   {:>8.1} pairs/s   ({} steps of {} pairs in {:.2} s, MNRL scale 20, AdamW lr 2e-5, {}, last loss {:.3})",
        f.pairs_per_s,
        f.steps,
        f.batch,
        f.seconds,
        f.path.describe(),
        f.last_loss,
    );
    Ok(())
}
