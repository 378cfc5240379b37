//! A world generated and written to a folder, timed: the line `aisle generate` prints and the
//! figures of `aisle bench generate` (time, peak memory and bytes on disk against the goal).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{generate, write_world, SynthConfig};
use crate::error::{Error, Result};
use crate::stats::{fmt_n, gib, peak_rss_bytes};

/// What generating a world and writing it took.
#[derive(Clone, Debug)]
pub struct Generated {
    pub seed: u64,
    pub products: usize,
    pub users: usize,
    pub interactions: usize,
    pub taxonomy_nodes: usize,
    /// Seconds to generate the world in memory, and to write it out.
    pub generate_s: f64,
    pub write_s: f64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// The process's peak resident memory once written ([`peak_rss_bytes`]).
    pub peak_rss: Option<u64>,
}

/// Generates the world of `cfg` and writes it to `dir` ([`write_world`]), timing both.
pub fn generate_into(cfg: &SynthConfig, dir: &Path) -> Result<Generated> {
    let start = Instant::now();
    let world = generate(cfg)?;
    let generate_s = start.elapsed().as_secs_f64();
    write_world(&world, dir)?;
    let write_s = start.elapsed().as_secs_f64() - generate_s;
    let ds = &world.dataset;
    Ok(Generated {
        seed: cfg.seed,
        products: ds.catalog.len(),
        users: ds.users.len(),
        interactions: ds.interactions.len(),
        taxonomy_nodes: ds.taxonomy.len(),
        generate_s,
        write_s,
        bytes: dir_size(dir),
        peak_rss: peak_rss_bytes(),
    })
}

/// `aisle bench generate`: [`generate_into`] `out`, or into a temporary folder that is removed
/// afterwards.
pub fn bench(cfg: &SynthConfig, out: Option<&Path>) -> Result<Generated> {
    let (dir, remove) = match out {
        Some(d) => (d.to_path_buf(), false),
        None => (
            std::env::temp_dir().join(format!("aisle-bench-generate-{}", std::process::id())),
            true,
        ),
    };
    let generated = generate_into(cfg, &dir)?;
    if remove {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(generated)
}

impl Generated {
    /// `aisle generate`'s line: the counts, and the seconds of each part.
    pub fn line(&self, dir: &Path) -> String {
        format!(
            "generated {} products, {} users, {} interactions in {:.1} s; written to {} in {:.1} s",
            fmt_n(self.products),
            fmt_n(self.users),
            fmt_n(self.interactions),
            self.generate_s,
            dir.display(),
            self.write_s
        )
    }

    /// `aisle bench generate`'s figures, one a line, with the goals.
    pub fn render_bench(&self) -> String {
        let mut out = format!("aisle bench generate (seed {})\n", self.seed);
        let total = self.generate_s + self.write_s;
        for (name, n) in [
            ("products", self.products),
            ("users", self.users),
            ("interactions", self.interactions),
            ("taxonomy nodes", self.taxonomy_nodes),
        ] {
            let _ = writeln!(out, "  {name:<16} {:>14}", fmt_n(n));
        }
        let _ = writeln!(out, "  generate         {:>12.1} s", self.generate_s);
        let _ = writeln!(out, "  write            {:>12.1} s", self.write_s);
        let _ = writeln!(
            out,
            "  total            {total:>12.1} s   (goal: < 120 s at 1M products, 10M interactions)"
        );
        let _ = match self.peak_rss {
            Some(p) => writeln!(
                out,
                "  peak memory      {:>12.2} GiB (goal: < 4 GiB)",
                gib(p)
            ),
            None => writeln!(out, "  peak memory      unknown (no /proc/self/status)"),
        };
        let _ = writeln!(out, "  bytes on disk    {:>14}", fmt_n(self.bytes as usize));
        out
    }
}

/// Bytes of the files under `dir` (unreadable entries count as none).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_world_is_counted_and_measured_on_disk() {
        let dir = std::env::temp_dir().join(format!("aisle-generated-test-{}", std::process::id()));
        let cfg = SynthConfig {
            products: 50,
            users: 5,
            sessions: 50,
            ..SynthConfig::default()
        };
        let g = generate_into(&cfg, &dir).expect("generated");
        assert_eq!(g.products, 50);
        assert!(g.bytes > 0);
        assert!(g.line(&dir).starts_with("generated 50 products, 5 users"));
        assert!(g
            .render_bench()
            .contains("  products                     50\n"));
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
