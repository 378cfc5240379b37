//! `aisle bench pipeline`: a retailer's data at full size, end to end. A generated world (100k
//! products, 5k customers, about 2M purchases by default) is written in the generic format as
//! an export would be, and `aisle train --personalized --rerank` runs on that folder in a child
//! process, as a user would run it. The child's own summary lines (its phases and its peak
//! memory) are read back and set against the goal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use aisle_core::stats::fmt_n;
use aisle_core::synth::{self, SynthConfig, TaxonomySource};
use aisle_core::Kind;

use crate::error::{Result, TrainError};

/// The goal of issue 20: the whole run in under 15 minutes on 2 cores.
pub const GOAL_S: f64 = 900.0;

/// What to run. With the `cli` feature, `aisle bench pipeline`'s flags.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Pipeline {
    /// Number of products.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 100_000))]
    pub products: usize,
    /// Number of customers.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 5_000))]
    pub users: usize,
    /// Aim for about this many interactions (11.5M gives about 2M purchases beside clicks and
    /// carts).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 11_500_000))]
    pub interactions: usize,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 42))]
    pub seed: u64,
    /// Training steps [default: `aisle train`'s].
    #[cfg_attr(feature = "cli", arg(long))]
    pub steps: Option<u64>,
    /// Where to write the world (DIR/data) and the run (DIR/run) [default: a temporary folder,
    /// removed afterwards].
    #[cfg_attr(feature = "cli", arg(long))]
    pub out: Option<PathBuf>,
    /// The `aisle` binary the run goes through (the caller's own executable).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub aisle: PathBuf,
}

/// What the run measured: the world's counts, the seconds, and the child's summary (stdout).
#[derive(Clone, Debug)]
pub struct PipelineFigures {
    pub seed: u64,
    pub products: usize,
    pub customers: usize,
    pub interactions: usize,
    pub purchases: usize,
    pub generate_s: f64,
    /// Wall seconds of `aisle train`, loading included.
    pub wall_s: f64,
    /// What `aisle train` printed on stdout.
    pub train_stdout: String,
}

/// Generates and writes the world, then runs `aisle train --personalized --rerank` on it;
/// `say` gets what is being done (the child's progress goes to this process's stderr).
pub fn pipeline(p: &Pipeline, say: &mut dyn FnMut(&str)) -> Result<PipelineFigures> {
    let cfg = SynthConfig {
        products: p.products,
        users: p.users,
        sessions: SynthConfig::sessions_for_interactions(p.interactions),
        seed: p.seed,
        taxonomy: TaxonomySource::BuiltIn,
    };
    cfg.validate()?;
    let (dir, remove) = match &p.out {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("aisle-bench-pipeline-{}", std::process::id())),
            true,
        ),
    };
    let result = run(p, &cfg, &dir, say);
    if remove && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    result
}

fn run(
    p: &Pipeline,
    cfg: &SynthConfig,
    dir: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<PipelineFigures> {
    let data = dir.join("data");
    let start = Instant::now();
    say(&format!("generating the world into {} ...", data.display()));
    let (products, customers, interactions, purchases) = {
        let world = synth::generate(cfg)?;
        synth::write_world(&world, &data)?;
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
    let mut cmd = Command::new(&p.aisle);
    cmd.arg("train")
        .arg("--dataset")
        .arg(&data)
        .args(["--personalized", "--rerank", "--out"])
        .arg(dir.join("run"));
    if let Some(n) = p.steps {
        cmd.args(["--steps", &n.to_string()]);
    }
    say("running aisle train --personalized --rerank on it (its progress follows) ...");
    let t = Instant::now();
    // stderr is the child's progress, shown as it comes; stdout is its summary, read back.
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| TrainError::io(&p.aisle, e))?;
    let wall_s = t.elapsed().as_secs_f64();
    let train_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(TrainError::Command {
            command: "aisle train".into(),
            status: out.status.to_string(),
            stdout: train_stdout,
        });
    }
    Ok(PipelineFigures {
        seed: cfg.seed,
        products,
        customers,
        interactions,
        purchases,
        generate_s,
        wall_s,
        train_stdout,
    })
}

impl PipelineFigures {
    /// The report: the world, then `aisle train`'s wall time, phases, head and peak memory
    /// against [`GOAL_S`].
    pub fn render(&self) -> String {
        let line = |prefix: &str| -> String {
            self.train_stdout
                .lines()
                .find(|l| l.starts_with(prefix))
                .map_or("(not printed)".to_owned(), |l| {
                    l[prefix.len()..].trim().to_owned()
                })
        };
        let in_sample = line("  validation R@10 ");
        let lines = [
            format!("aisle bench pipeline (seed {})", self.seed),
            format!("  products         {:>14}", fmt_n(self.products)),
            format!("  customers        {:>14}", fmt_n(self.customers)),
            format!(
                "  interactions     {:>14}   ({} purchases)",
                fmt_n(self.interactions),
                fmt_n(self.purchases)
            ),
            format!(
                "  generate + write {:>12.1} s   (not part of the goal)",
                self.generate_s
            ),
            "  aisle train --personalized --rerank:".to_owned(),
            format!(
                "    wall time      {:>12.1} s   (goal: < {GOAL_S:.0} s on 2 cores)",
                self.wall_s
            ),
            format!("    phases         {}", line("total ")),
            format!("    training       {}", line("training time ")),
            format!("    head           {}", line("re-ranking head      fitted")),
            format!(
                "    head val R@10  {} (in-sample)",
                in_sample
                    .split_whitespace()
                    .next()
                    .unwrap_or("(not printed)")
            ),
            format!("    peak memory    {}", line("peak memory ")),
            format!(
                "  goal             {}",
                if self.wall_s < GOAL_S {
                    "met"
                } else {
                    "NOT met"
                }
            ),
        ];
        lines.map(|l| l + "\n").concat()
    }
}
