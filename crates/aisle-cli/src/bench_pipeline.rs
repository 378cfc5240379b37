//! `aisle bench pipeline`: a retailer's own data at full size, end to end. A world is generated
//! (100k products, 5,000 customers, about 2M purchases by default), written in the generic
//! format as an export would be, and `aisle train --personalized --rerank` runs on that folder
//! in a child process, as a user would run it. The child's own summary lines (its phases and
//! its peak memory) are read back and printed against the goal.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use aisle_core::stats::fmt_n;
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::Kind;

/// The goal of issue 20: the whole run in under 15 minutes on 2 cores.
const GOAL_S: f64 = 900.0;

#[derive(Args)]
pub struct BenchPipelineArgs {
    /// Number of products.
    #[arg(long, default_value_t = 100_000)]
    products: usize,
    /// Number of customers.
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    /// Aim for about this many interactions (11.5M gives about 2M purchases beside clicks and
    /// carts).
    #[arg(long, default_value_t = 11_500_000)]
    interactions: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Training steps [default: `aisle train`'s].
    #[arg(long)]
    steps: Option<u64>,
    /// Where to write the world (DIR/data) and the run (DIR/run) [default: a temporary folder,
    /// removed afterwards].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn bench_pipeline(args: BenchPipelineArgs) -> Result<()> {
    let cfg = SynthConfig {
        products: args.products,
        users: args.users,
        sessions: SynthConfig::sessions_for_interactions(args.interactions),
        seed: args.seed,
        taxonomy: TaxonomySource::BuiltIn,
    };
    cfg.validate()?;
    let (dir, remove) = match &args.out {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("aisle-bench-pipeline-{}", std::process::id())),
            true,
        ),
    };
    let result = run(&args, &cfg, &dir);
    if remove && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    result
}

fn run(args: &BenchPipelineArgs, cfg: &SynthConfig, dir: &std::path::Path) -> Result<()> {
    let data = dir.join("data");
    let start = Instant::now();
    eprintln!("generating the world into {} ...", data.display());
    let (products, users, interactions, purchases) = {
        let world = synth::generate(cfg)?;
        synth::write_world(&world, &data).with_context(|| format!("writing {}", data.display()))?;
        let ds = &world.dataset;
        let purchases = ds
            .interactions
            .iter()
            .filter(|e| e.kind == Kind::Purchase)
            .count();
        (
            ds.catalog.len(),
            ds.users.len(),
            ds.interactions.len(),
            purchases,
        )
    };
    let generate_s = start.elapsed().as_secs_f64();
    let exe = std::env::current_exe().context("finding the aisle binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("train")
        .arg("--dataset")
        .arg(&data)
        .args(["--personalized", "--rerank", "--out"])
        .arg(dir.join("run"));
    if let Some(n) = args.steps {
        cmd.args(["--steps", &n.to_string()]);
    }
    eprintln!("running aisle train --personalized --rerank on it (its progress follows) ...");
    let t = Instant::now();
    // stderr is the child's progress, shown as it comes; stdout is its summary, read back.
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running aisle train")?;
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("aisle train failed ({}):\n{stdout}", out.status);
    }
    let line = |prefix: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .map_or("(not printed)".to_owned(), |l| {
                l[prefix.len()..].trim().to_owned()
            })
    };
    println!("aisle bench pipeline (seed {})", cfg.seed);
    println!("  products         {:>14}", fmt_n(products));
    println!("  customers        {:>14}", fmt_n(users));
    println!(
        "  interactions     {:>14}   ({} purchases)",
        fmt_n(interactions),
        fmt_n(purchases)
    );
    println!("  generate + write {generate_s:>12.1} s   (not part of the goal)");
    println!("  aisle train --personalized --rerank:");
    println!("    wall time      {wall_s:>12.1} s   (goal: < {GOAL_S:.0} s on 2 cores)");
    println!("    phases         {}", line("total "));
    println!("    training       {}", line("training time "));
    println!("    head           {}", line("re-ranking head      fitted"));
    let in_sample = line("  validation R@10 ");
    println!(
        "    head val R@10  {} (in-sample)",
        in_sample
            .split_whitespace()
            .next()
            .unwrap_or("(not printed)")
    );
    println!("    peak memory    {}", line("peak memory "));
    println!(
        "  goal             {}",
        if wall_s < GOAL_S { "met" } else { "NOT met" }
    );
    Ok(())
}
