//! `aisle`: personalized semantic product search. Thin subcommands over the aisle crates.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use aisle_core::adapters::{self, LoadOptions};
use aisle_core::stats::{fmt_n, DatasetStats};
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::Strictness;

mod backend;
mod bench_minilm;
mod bench_pipeline;
mod bench_search;
mod eval;
mod experiment;
mod out_dir;
mod serve;
mod train;
mod train_minilm;

#[derive(Parser)]
#[command(name = "aisle", version, about = "Personalized semantic product search", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, convert and check datasets.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Generate a synthetic retail world and write it in the generic format.
    Generate(GenerateArgs),
    /// Train the two-tower model (TB-HNS by default) and write model.aisle and train_log.jsonl.
    Train(Box<train::TrainArgs>),
    /// Embed a catalog or a list of queries with a trained model (.npy or .jsonl).
    Encode(train::EncodeArgs),
    /// Recall@K, NDCG@10 and MRR of baselines and trained models, with intervals and segments.
    Eval(eval::EvalArgs),
    /// Every baseline and negative sampler under one budget and several seeds, on every protocol
    /// of a dataset: reports/DATASET/report.md, results.json and plots.
    Experiment(Box<experiment::ExperimentArgs>),
    /// Serve search over HTTP: the API, metrics and the search page (trains a model first when
    /// there is none).
    Serve(Box<serve::ServeArgs>),
    /// Build and save an HNSW index of a model's product vectors; --check measures its recall.
    Index(Box<serve::IndexArgs>),
    /// Benchmarks (not tests): print measured figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// Where datasets are read from and how strictly.
#[derive(Args, Clone)]
pub(crate) struct DataOpts {
    /// Folder of the real datasets [default: $AISLE_DATA_DIR, else ../shared/data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Skip bad rows (counted per reason) instead of stopping at the first.
    #[arg(long)]
    lenient: bool,
    /// Seed of the splits and of the synthetic world.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl DataOpts {
    /// Seed of the splits (and of the synthetic world).
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            data_dir: self.data_dir.clone(),
            strictness: if self.lenient {
                Strictness::Lenient
            } else {
                Strictness::Strict
            },
            seed: self.seed,
            splits: true,
        }
    }

    /// Loads a dataset by name or folder, printing what a lenient import skipped.
    pub(crate) fn load(&self, dataset: &str) -> Result<aisle_core::Dataset> {
        // A retailer's export takes a while to read (12M interactions: about 25 s): say so
        // before and after, on stderr, so that the wait is never silent.
        let start = Instant::now();
        eprintln!("loading dataset `{dataset}` ...");
        let ds = adapters::load(dataset, &self.options())
            .with_context(|| format!("loading dataset `{dataset}`"))?;
        let took = start.elapsed().as_secs_f64();
        if took >= 1.0 {
            eprintln!(
                "loaded `{dataset}`: {} products, {} interactions in {took:.1} s",
                fmt_n(ds.catalog.len()),
                fmt_n(ds.interactions.len())
            );
        }
        if self.lenient && !ds.report.is_empty() {
            eprintln!(
                "lenient import skipped or merged {} rows:",
                ds.report.total()
            );
            for (reason, n, example) in ds.report.entries() {
                eprintln!("  {n:>8}  {reason}  (first: {example})");
            }
        }
        Ok(ds)
    }
}

#[derive(Args)]
struct LoadArgs {
    /// A dataset name (bestbuy_xbox, instacart, flipkart_sample, bestbuy_categories, synthetic)
    /// or a folder in the generic format (docs/data-format.md).
    dataset: String,
    #[command(flatten)]
    opts: DataOpts,
}

impl LoadArgs {
    fn load(&self) -> Result<aisle_core::Dataset> {
        self.opts.load(&self.dataset)
    }
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Counts, taxonomy shape, distributions and splits of a dataset.
    Stats {
        #[command(flatten)]
        load: LoadArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Write a dataset in aisle's generic format (CSV).
    Export {
        #[command(flatten)]
        load: LoadArgs,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TaxonomyChoice {
    /// The hand-written retail tree built into aisle.
    Builtin,
    /// Best Buy's category tree from the data folder (bestbuy_categories/categories.json).
    Bestbuy,
}

#[derive(Args)]
struct WorldArgs {
    /// Number of products.
    #[arg(long, default_value_t = SynthConfig::default().products)]
    products: usize,
    /// Number of customers.
    #[arg(long, default_value_t = SynthConfig::default().users)]
    users: usize,
    /// Number of search sessions.
    #[arg(long, default_value_t = SynthConfig::default().sessions)]
    sessions: usize,
    /// Aim for about this many interactions (sets the number of sessions).
    #[arg(long)]
    interactions: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = TaxonomyChoice::Builtin)]
    taxonomy: TaxonomyChoice,
    /// Folder of the real datasets, for --taxonomy bestbuy.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl WorldArgs {
    fn config(&self) -> Result<SynthConfig> {
        let taxonomy = match self.taxonomy {
            TaxonomyChoice::Builtin => TaxonomySource::BuiltIn,
            TaxonomyChoice::Bestbuy => {
                let dir = adapters::dataset_dir(
                    &adapters::data_dir(self.data_dir.as_deref()),
                    "bestbuy_categories",
                )?;
                TaxonomySource::BestBuy(dir.join("categories.json"))
            }
        };
        let mut cfg = SynthConfig {
            products: self.products,
            users: self.users,
            sessions: self.sessions,
            seed: self.seed,
            taxonomy,
        };
        if let Some(n) = self.interactions {
            cfg.sessions = SynthConfig::sessions_for_interactions(n);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    world: WorldArgs,
    /// Output folder (generic format plus truth/).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time and peak memory of generating and writing a synthetic world.
    Generate {
        #[command(flatten)]
        world: WorldArgs,
        /// Where to write the world [default: a temporary folder, removed afterwards].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Training throughput: pairs/s per sampler, where step time goes, peak memory.
    Train(train::BenchTrainArgs),
    /// Serving: index build time and bytes, p50 / p99 latency for one client and throughput
    /// under concurrent load, at 10k, 100k and 1M generated products.
    Search(bench_search::BenchSearchArgs),
    /// all-MiniLM-L6-v2 in candle: encode titles/s and fine-tuning pairs/s (MNRL, batch 64).
    Minilm(bench_minilm::BenchMinilmArgs),
    /// A retailer's data at full size: a generated 100k-product, 2M-purchase world written in
    /// the generic format, then `aisle train --personalized --rerank` on it: wall time per phase
    /// and peak memory against the goal (< 15 min on 2 cores).
    Pipeline(bench_pipeline::BenchPipelineArgs),
}

fn main() {
    aisle_transformer::alloc::tune();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dataset { command } => match command {
            DatasetCommand::Stats { load, json } => {
                let start = Instant::now();
                let ds = load.load()?;
                let stats = DatasetStats::of(&ds);
                if json {
                    println!("{}", serde_json::to_string_pretty(&stats)?);
                } else {
                    print!("{}", stats.render());
                    println!(
                        "(loaded and split in {:.2} s)",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            DatasetCommand::Export { load, out } => {
                let ds = load.load()?;
                aisle_core::io::generic::write_dir(&ds, &out)
                    .with_context(|| format!("writing {}", out.display()))?;
                println!(
                    "wrote {} ({} products, {} interactions) to {}",
                    ds.name,
                    fmt_n(ds.catalog.len()),
                    fmt_n(ds.interactions.len()),
                    out.display()
                );
            }
        },
        Command::Generate(args) => {
            let cfg = args.world.config()?;
            let start = Instant::now();
            let world = synth::generate(&cfg)?;
            let generated = start.elapsed().as_secs_f64();
            synth::write_world(&world, &args.out)
                .with_context(|| format!("writing {}", args.out.display()))?;
            println!(
                "generated {} products, {} users, {} interactions in {generated:.1} s; written to {} in {:.1} s",
                fmt_n(world.dataset.catalog.len()),
                fmt_n(world.dataset.users.len()),
                fmt_n(world.dataset.interactions.len()),
                args.out.display(),
                start.elapsed().as_secs_f64() - generated
            );
        }
        Command::Train(args) if args.tower == train::Tower::Minilm => {
            train_minilm::train_minilm(*args)?
        }
        Command::Train(args) => train::train(*args)?,
        Command::Encode(args) => train::encode(args)?,
        Command::Eval(args) => eval::eval(args)?,
        Command::Experiment(args) => experiment::experiment(*args)?,
        Command::Serve(args) => serve::serve(*args)?,
        Command::Index(args) => serve::index(*args)?,
        Command::Bench { command } => match command {
            BenchCommand::Generate { world, out } => bench_generate(&world, out)?,
            BenchCommand::Train(args) => train::bench_train(args)?,
            BenchCommand::Search(args) => bench_search::bench_search(args)?,
            BenchCommand::Minilm(args) => bench_minilm::bench_minilm(args)?,
            BenchCommand::Pipeline(args) => bench_pipeline::bench_pipeline(args)?,
        },
    }
    Ok(())
}

fn bench_generate(args: &WorldArgs, out: Option<PathBuf>) -> Result<()> {
    let cfg = args.config()?;
    let (dir, remove) = match out {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("aisle-bench-generate-{}", std::process::id())),
            true,
        ),
    };
    let start = Instant::now();
    let world = synth::generate(&cfg)?;
    let t_gen = start.elapsed().as_secs_f64();
    synth::write_world(&world, &dir).with_context(|| format!("writing {}", dir.display()))?;
    let t_total = start.elapsed().as_secs_f64();
    let bytes = dir_size(&dir);
    if remove {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let peak = peak_rss_bytes();
    println!("aisle bench generate (seed {})", cfg.seed);
    println!(
        "  products         {:>14}",
        fmt_n(world.dataset.catalog.len())
    );
    println!(
        "  users            {:>14}",
        fmt_n(world.dataset.users.len())
    );
    println!(
        "  interactions     {:>14}",
        fmt_n(world.dataset.interactions.len())
    );
    println!(
        "  taxonomy nodes   {:>14}",
        fmt_n(world.dataset.taxonomy.len())
    );
    println!("  generate         {t_gen:>12.1} s");
    println!("  write            {:>12.1} s", t_total - t_gen);
    println!(
        "  total            {t_total:>12.1} s   (goal: < 120 s at 1M products, 10M interactions)"
    );
    match peak {
        Some(p) => println!(
            "  peak memory      {:>12.2} GiB (goal: < 4 GiB)",
            p as f64 / (1u64 << 30) as f64
        ),
        None => println!("  peak memory      unknown (no /proc/self/status)"),
    }
    println!("  bytes on disk    {:>14}", fmt_n(bytes as usize));
    Ok(())
}

/// Peak resident set size of this process (VmHWM), on Linux.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
