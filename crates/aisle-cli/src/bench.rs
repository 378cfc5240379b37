//! `aisle bench`: benchmarks (not tests) that print measured figures. Their flags; the
//! measuring is the libraries': [`aisle_core::synth::bench`] (generating a world),
//! [`aisle_train::bench`] (training throughput, the serving bench's worlds, the full-size
//! pipeline), [`aisle_serve::bench`] (serving, whose doc says what it measures and how) and
//! [`aisle_transformer::bench`] (all-MiniLM-L6-v2 in candle, on the same titles and settings as
//! scripts/bench-minilm-peer.py measures sentence-transformers with; scripts/bench-minilm.sh
//! runs both).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

use aisle_core::synth;
use aisle_model::Encoder;
use aisle_serve::bench::{BenchOptions, BoxError, OtherTowers, QdrantBench};
use aisle_train::bench::pipeline::{pipeline, Pipeline};
use aisle_train::bench::{parse_run, serving_world, Table};
use aisle_train::SamplerSpec;
use aisle_transformer::bench::{self as minilm_bench, StepPath};

use crate::DataOpts;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time and peak memory of generating and writing a synthetic world.
    Generate {
        #[command(flatten)]
        world: crate::WorldArgs,
        /// Where to write the world [default: a temporary folder, removed afterwards].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Training throughput: pairs/s per sampler, where step time goes, peak memory.
    Train(BenchTrainArgs),
    /// Serving: index build time and bytes, p50 / p99 latency for one client and throughput
    /// under concurrent load, at 10k, 100k and 1M generated products.
    Search(Box<BenchSearchArgs>),
    /// all-MiniLM-L6-v2 in candle: encode titles/s and fine-tuning pairs/s (MNRL, batch 64).
    Minilm(BenchMinilmArgs),
    /// A retailer's data at full size: a generated 100k-product, 2M-purchase world written in
    /// the generic format, then `aisle train --personalized --rerank` on it: wall time per phase
    /// and peak memory against the goal (< 15 min on 2 cores).
    Pipeline(Pipeline),
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Datasets to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "instacart,bestbuy_xbox")]
    pub datasets: Vec<String>,
    #[command(flatten)]
    pub data: DataOpts,
    /// Samplers to measure, each with its k, as SAMPLER/K, separated by spaces.
    #[arg(
        long,
        value_delimiter = ' ',
        default_value = "in-batch/0 taxonomy/4 random/4 bm25/4 ance:refresh=200/4 ance:refresh=200,index=exact/4"
    )]
    pub runs: Vec<String>,
    #[command(flatten)]
    pub table: Table,
}

#[derive(Args)]
pub struct BenchSearchArgs {
    #[command(flatten)]
    pub options: BenchOptions,
    /// Training steps of each size's model.
    #[arg(long, default_value_t = 300)]
    pub train_steps: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also serve each size's world with all-MiniLM-L6-v2 from this model folder (pretrained,
    /// or fine-tuned by `aisle train --tower minilm`) as the query and product tower, through
    /// the same Searcher and server: every request's latency then includes a MiniLM forward
    /// pass. It encodes the whole catalog first (about 500 products/s on 2 cores).
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// `--backend qdrant --url ...` adds, for each size, the same measurements with the vectors
    /// in Qdrant (uploaded first, as `aisle index --backend qdrant` does).
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,
    #[command(flatten)]
    pub upload: crate::backend::UploadArgs,
}

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

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Generate { world, out } => {
            let generated = synth::bench(&world.config()?, out.as_deref())?;
            print!("{}", generated.render_bench());
        }
        BenchCommand::Train(args) => train(args)?,
        BenchCommand::Search(args) => search(*args)?,
        BenchCommand::Minilm(args) => minilm(args)?,
        BenchCommand::Pipeline(mut run) => {
            run.aisle = std::env::current_exe().context("finding the aisle binary")?;
            print!("{}", pipeline(&run, &mut |l| eprintln!("{l}"))?.render());
        }
    }
    Ok(())
}

fn train(args: BenchTrainArgs) -> Result<()> {
    let table = args.table;
    print!("{}", table.header(rayon::current_num_threads()));
    for name in &args.datasets {
        let ds = args.data.load(name)?;
        let split = ds.split_named(None)?;
        for run in &args.runs {
            let (spec, k) = parse_run(run).map_err(|why| anyhow!("--runs {run}: {why}"))?;
            let figures = table.run(SamplerSpec::parse(spec)?, k, &ds, split)?;
            println!("{}", figures.row(&ds.name));
        }
    }
    print!("{}", table.footer());
    Ok(())
}

fn search(args: BenchSearchArgs) -> Result<()> {
    let mut options = args.options;
    options.qdrant = args.backend.qdrant()?.map(|config| QdrantBench {
        config,
        shards: args.upload.shards,
        replicas: args.upload.replicas,
        keep: args.upload.keep,
        batch: args.upload.batch,
    });
    // The folder's MiniLM alone: a personalized tower fitted beside it was fitted on other data
    // than the bench's worlds.
    let minilm = args.minilm.as_ref().map(|dir| OtherTowers {
        name: dir.display().to_string(),
        load: Box::new(move || {
            let encoder: Arc<dyn Encoder> = Arc::new(aisle_transformer::MiniLm::load(dir)?);
            Ok(encoder)
        }),
    });
    let (seed, steps) = (args.seed, args.train_steps);
    let world = &mut |n| serving_world(n, seed, steps, &mut |l| eprintln!("{l}"));
    aisle_serve::bench::run(
        &options,
        &mut |n| world(n).map_err(BoxError::from),
        minilm.as_ref(),
    )?;
    Ok(())
}

fn minilm(args: BenchMinilmArgs) -> Result<()> {
    let opts = minilm_bench::BenchOptions {
        model: args
            .model
            .unwrap_or_else(|| aisle_transformer::default_dir(Path::new("."))),
        titles_file: args.titles_file,
        titles: args.titles,
        batch: args.batch,
        steps: args.steps,
        path: StepPath::new(args.autograd, args.candle_adamw),
    };
    let titles = minilm_bench::titles(&opts)?;
    let threads = rayon::current_num_threads();
    let header = minilm_bench::header(titles.len(), opts.batch, threads);
    println!("{header}");
    println!("{}", minilm_bench::encode(&opts, &titles)?.line());
    println!("{}", minilm_bench::fine_tune(&opts, &titles)?.line());
    Ok(())
}
