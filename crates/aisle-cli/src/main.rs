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
mod bench;
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
        command: bench::BenchCommand,
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
    pub(crate) seed: u64,
}

impl DataOpts {
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

    /// Loads a dataset by name or folder, saying on stderr that it does, how long it took and
    /// what a lenient import skipped ([`adapters::load_saying`]).
    pub(crate) fn load(&self, dataset: &str) -> Result<aisle_core::Dataset> {
        adapters::load_saying(dataset, &self.options(), &mut |l| eprintln!("{l}"))
            .with_context(|| format!("loading dataset `{dataset}`"))
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
pub(crate) struct WorldArgs {
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
    pub(crate) fn config(&self) -> Result<SynthConfig> {
        let taxonomy = match self.taxonomy {
            TaxonomyChoice::Builtin => TaxonomySource::BuiltIn,
            TaxonomyChoice::Bestbuy => adapters::best_buy_taxonomy(self.data_dir.as_deref())?,
        };
        let cfg = SynthConfig {
            products: self.products,
            users: self.users,
            sessions: self
                .interactions
                .map_or(self.sessions, SynthConfig::sessions_for_interactions),
            seed: self.seed,
            taxonomy,
        };
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
                let ds = load.opts.load(&load.dataset)?;
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
                let ds = load.opts.load(&load.dataset)?;
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
            let generated = synth::generate_into(&args.world.config()?, &args.out)?;
            println!("{}", generated.line(&args.out));
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
        Command::Bench { command } => bench::run(command)?,
    }
    Ok(())
}
