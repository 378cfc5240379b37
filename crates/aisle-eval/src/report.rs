//! Writing an [`Experiment`] out: `report.md` with its tables and plots (PNG and SVG) and
//! `results.json`, each through [`aisle_core::io::write_atomic`] (a temporary file beside it,
//! flushed to disk, renamed into place).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{EvalError, Result};
use crate::evaluate::{Report, Row, REPLAY_NAMES, REPLAY_NOTE};
use crate::experiment::{mean_curve, slug, Experiment, Protocol, RowKind, Run};
use crate::metrics::Estimate;
use crate::online::SimulatedAb;
use crate::plot::{self, IntervalBar, Series, StackedBar};

/// What [`write`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    pub report: PathBuf,
    pub results: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// The error of a file that could not be written, naming it.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `results.json`, the plots and `report.md` into `dir` (created if missing). The JSON
/// goes first, so that a plot that cannot be drawn loses no figure: it is named in the report
/// instead.
pub fn write(exp: &Experiment, dir: &Path) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let results = dir.join("results.json");
    let json = serde_json::to_vec_pretty(exp).map_err(|e| EvalError::Ranker(e.to_string()))?;
    aisle_core::io::write_atomic(&results, |w| w.write_all(&json)).map_err(io(&results))?;
    let mut plots = Vec::new();
    let mut md = String::new();
    header(exp, &mut md);
    for p in &exp.protocols {
        let files = match protocol_plots(exp, p, dir) {
            Ok(files) => files,
            Err(e) => {
                let _ = writeln!(
                    md,
                    "*The plots of protocol `{}` could not be drawn: {e}.*\n",
                    p.split
                );
                Plots::default()
            }
        };
        protocol_section(p, &files, &mut md);
        plots.extend(files.all());
    }
    footer(exp, &mut md);
    let report = dir.join("report.md");
    aisle_core::io::write_atomic(&report, |w| w.write_all(md.as_bytes())).map_err(io(&report))?;
    Ok(Written {
        report,
        results,
        plots,
    })
}

/// Plot files of one protocol (file names relative to the report).
#[derive(Default)]
struct Plots {
    recall: Option<[PathBuf; 2]>,
    steps: Option<[PathBuf; 2]>,
    seconds: Option<[PathBuf; 2]>,
    cost: Option<[PathBuf; 2]>,
}

impl Plots {
    fn all(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for p in [&self.recall, &self.steps, &self.seconds, &self.cost]
            .into_iter()
            .flatten()
        {
            v.extend(p.iter().cloned());
        }
        v
    }
}

fn protocol_plots(exp: &Experiment, p: &Protocol, dir: &Path) -> plot::PlotResult<Plots> {
    let stem = |what: &str| dir.join(format!("{}-{what}", slug(&p.split)));
    let bars: Vec<IntervalBar> = p
        .report
        .rows
        .iter()
        .filter_map(|r| {
            let e = r.micro.get("recall@10")?;
            Some(IntervalBar {
                label: r.system.clone(),
                value: e.mean,
                low: e.low,
                high: e.high,
            })
        })
        .collect();
    let recall = Some(plot::interval_bars(
        &stem("recall"),
        &format!("{} / {}: test Recall@10 (95% CI)", exp.dataset, p.split),
        "Recall@10",
        &bars,
    )?);
    let rows = trained_rows(p);
    let curves: Vec<(String, Vec<crate::experiment::CurvePoint>)> = rows
        .iter()
        .map(|name| {
            let runs: Vec<&Run> = p.runs.iter().filter(|r| &r.row == name).collect();
            (name.clone(), mean_curve(&runs))
        })
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let series = |x: fn(&crate::experiment::CurvePoint) -> f64| -> Vec<Series> {
        curves
            .iter()
            .map(|(name, c)| Series {
                name: name.clone(),
                points: c.iter().map(|pt| (x(pt), pt.recall_at_10)).collect(),
            })
            .collect()
    };
    let title = format!(
        "{} / {}: validation Recall@10 (mean over seeds)",
        exp.dataset, p.split
    );
    let (steps, seconds) = if curves.is_empty() {
        (None, None)
    } else {
        (
            Some(plot::line_chart(
                &stem("convergence-steps"),
                &title,
                "training step",
                "validation Recall@10",
                &series(|pt| pt.step as f64),
            )?),
            Some(plot::line_chart(
                &stem("convergence-seconds"),
                &title,
                "training seconds (validation excluded)",
                "validation Recall@10",
                &series(|pt| pt.train_s),
            )?),
        )
    };
    let cost_bars: Vec<StackedBar> = p
        .rows
        .iter()
        .filter(|r| matches!(r.kind, RowKind::Dense | RowKind::Personalized))
        .filter(|r| rows.contains(&r.name))
        .filter_map(|r| {
            let c = r.cost?;
            Some(StackedBar {
                label: r.name.clone(),
                parts: vec![c.sample_s, c.forward_s, c.backward_s, c.refresh_s],
            })
        })
        .collect();
    let cost = if cost_bars.is_empty() {
        None
    } else {
        Some(plot::stacked_bars(
            &stem("cost"),
            &format!(
                "{} / {}: training seconds by part (mean over seeds)",
                exp.dataset, p.split
            ),
            "seconds",
            &["sampling", "forward", "backward", "refresh"],
            &cost_bars,
        )?)
    };
    Ok(Plots {
        recall,
        steps,
        seconds,
        cost,
    })
}

/// Names of the rows that were trained (have runs), in row order.
fn trained_rows(p: &Protocol) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in &p.runs {
        if !names.contains(&r.row) {
            names.push(r.row.clone());
        }
    }
    names
}

fn header(exp: &Experiment, md: &mut String) {
    let c = &exp.config;
    let _ = writeln!(md, "# aisle experiment: {}\n", exp.dataset);
    let _ = writeln!(
        md,
        "Made by this command (every figure below comes from it):\n"
    );
    let _ = writeln!(md, "```sh\n{}\n```\n", exp.command);
    let _ = writeln!(
        md,
        "aisle {}, {} threads, {:.0} s in all{}. `results.json` beside this file holds every row, \
         metric, interval, seed and training curve (schema `{}`, see docs/experiments.md).\n",
        exp.aisle_version,
        exp.threads,
        exp.wall_s,
        if exp.quick { ", `--quick` budget" } else { "" },
        exp.schema
    );
    let _ = writeln!(
        md,
        "**Budget.** Every dense row trains the same {} steps of {} pairs with {} sampled \
         negatives per pair (in-batch only: none), dimension {}, 2^{} hashed n-gram buckets, \
         seeds {:?}; validation Recall@10 every {} steps on up to {} validation queries. A row of \
         several seeds is the mean of their per-query metrics: its interval and tests are over \
         queries only, and the spread between seeds is the last column of the Recall@K table. The \
         best TB-HNS variant (which trains the personalized row) and the best dense row (which the \
         hybrid row fuses with BM25, `{}`) are chosen on validation Recall@10, never on test.\n",
        c.train.steps,
        c.train.batch_size,
        c.train.negatives,
        c.train.model.tower.dim,
        c.train.model.featurizer.buckets_log2,
        c.seeds,
        c.train.eval_every,
        c.train.eval_queries,
        c.hybrid
    );
    if !exp.absent.is_empty() {
        let _ = writeln!(md, "**Not run here:**\n");
        for (row, why) in &exp.absent {
            let _ = writeln!(md, "- {row}: {why}");
        }
        let _ = writeln!(md);
    }
}

fn footer(exp: &Experiment, md: &mut String) {
    let _ = writeln!(md, "## Notes\n");
    let _ = writeln!(
        md,
        "- R@K: share of a query's relevant products in the top K, mean over test queries \
         (micro); macro: mean over distinct queries. Intervals: 95% bootstrap over queries. \
         p vs best: paired randomization test on per-query Recall@10 against the best row."
    );
    let _ = writeln!(md, "- {REPLAY_NOTE}.");
    for n in &exp.notes {
        let _ = writeln!(md, "- {n}");
    }
}

fn ci(e: &Estimate) -> String {
    if e.mean.is_finite() {
        format!("{:.3} [{:.3}, {:.3}]", e.mean, e.low, e.high)
    } else {
        "-".into()
    }
}

fn mean_of(row: &Row, metric: &str) -> String {
    row.micro
        .get(metric)
        .map_or("-".into(), |e| format!("{:.3}", e.mean))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned()
}

fn image(md: &mut String, alt: &str, files: &[PathBuf; 2]) {
    let _ = writeln!(
        md,
        "![{alt}]({}) ([SVG]({}))\n",
        file_name(&files[0]),
        file_name(&files[1])
    );
}

/// One protocol's section of the report: its tables in order, each with its plot and notes.
fn protocol_section(p: &Protocol, plots: &Plots, md: &mut String) {
    let r = &p.report;
    let _ = writeln!(md, "## Protocol `{}`\n\n{}\n", p.split, p.description);
    let _ = writeln!(
        md,
        "{} test queries ({} without a relevant product left out).\n",
        r.queries, r.skipped
    );
    recall_table(r, md);
    choices(p, md);
    if let Some(recall) = &plots.recall {
        image(md, "test Recall@10 by system", recall);
    }
    verdict(p, md);
    segment_table(r, md);
    if let (Some(steps), Some(seconds)) = (&plots.steps, &plots.seconds) {
        let _ = writeln!(md, "### Convergence\n");
        image(md, "validation Recall@10 against steps", steps);
        image(md, "validation Recall@10 against training seconds", seconds);
    }
    cost_table(p, plots, md);
    fine_tuning_table(p, md);
    replay_table(r, md);
    if let Some(ab) = &p.simulated_ab {
        ab_table(ab, md);
    }
}

/// Every row's test Recall@K, NDCG@10, MRR, macro Recall@10, the paired test against the best
/// row and each seed's Recall@10.
fn recall_table(r: &Report, md: &mut String) {
    let _ = writeln!(md, "### Test Recall@K\n");
    let _ = writeln!(
        md,
        "| system | R@1 | R@5 | R@10 [95% CI] | R@20 | R@50 | R@100 | NDCG@10 | MRR | macro R@10 | p vs best on test | R@10 of each seed |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &r.rows {
        let best = row.system == r.best;
        let name = if best {
            format!("**{}**", row.system)
        } else {
            row.system.clone()
        };
        let seeds = if row.seeds.len() > 1 {
            let v: Vec<String> = row.seeds.iter().map(|x| format!("{x:.3}")).collect();
            v.join(" / ")
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {seeds} |",
            mean_of(row, "recall@1"),
            mean_of(row, "recall@5"),
            row.micro.get("recall@10").map_or("-".into(), ci),
            mean_of(row, "recall@20"),
            mean_of(row, "recall@50"),
            mean_of(row, "recall@100"),
            mean_of(row, "ndcg@10"),
            mean_of(row, "mrr"),
            row.macro_
                .get("recall@10")
                .map_or("-".into(), |e| format!("{:.3}", e.mean)),
            row.p_vs_best.map_or("best".into(), |p| format!("{p:.4}")),
        );
    }
    let _ = writeln!(md);
}

/// The choices made on validation: BM25's field boosts, the history term's weight and the
/// learned re-ranking head.
fn choices(p: &Protocol, md: &mut String) {
    let _ = writeln!(
        md,
        "**BM25** (the BM25 row, and BM25 in hybrid rows): {}.\n",
        p.bm25.note()
    );
    if let Some(h) = &p.history_choice {
        let tried: Vec<String> = h
            .candidates
            .iter()
            .map(|(b, r)| format!("B = {b}: {r:.3}"))
            .collect();
        let outcome = if h.chosen > 0.0 {
            format!("B = {} was kept", h.chosen)
        } else {
            "B = 0 won, so there is no history-term row".to_owned()
        };
        let _ = writeln!(
            md,
            "**History term** (`q'.p + B * max_j h_j.p` over the customer's last {} \
             interactions): B was chosen on validation Recall@10 of the personalized row's models \
             ({} validation queries, mean over seeds): {}; {}.\n",
            h.window,
            h.validation_queries,
            tried.join(", "),
            outcome
        );
    }
    if let Some(c) = &p.rerank {
        rerank_paragraph(c, md);
    }
}

/// Recall@10 by segment (head / torso / tail / unseen queries, users, cold-start products).
fn segment_table(r: &Report, md: &mut String) {
    let names: Vec<&String> = r.segment_sizes.keys().collect();
    if names.is_empty() {
        return;
    }
    let _ = writeln!(md, "### Recall@10 by segment\n");
    let cold_p = r.rows.iter().any(|row| row.p_cold_vs_best.is_some());
    let _ = write!(md, "| system |");
    for n in &names {
        let _ = write!(md, " {n} ({}) |", r.segment_sizes[*n]);
    }
    if cold_p {
        let _ = write!(md, " p vs best on cold-start products |");
    }
    let _ = writeln!(md);
    let columns = names.len() + usize::from(cold_p);
    let _ = writeln!(md, "|---|{}", "---|".repeat(columns));
    for row in &r.rows {
        let _ = write!(md, "| {} |", row.system);
        for n in &names {
            let _ = write!(
                md,
                " {} |",
                row.segments.get(*n).map_or("-".into(), |e| format!(
                    "{:.3} ±{:.3}",
                    e.mean,
                    (e.high - e.low) / 2.0
                ))
            );
        }
        if cold_p {
            let _ = write!(
                md,
                " {} |",
                row.p_cold_vs_best
                    .map_or("best".into(), |p| format!("{p:.4}"))
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\nHead / torso / tail: seen queries by training frequency, each third of the seen \
         training events; unseen: no training pair has the query text (as `aisle dataset \
         stats` counts them); cold-start products: recall over relevant products without a \
         training interaction (count = relevant pairs); ± is half the 95% interval; the p column \
         is the paired randomization test on cold-start products' Recall@10, per query that has \
         any, against the row best there.\n"
    );
}

/// Each trained row's training cost: seconds by part, pairs per second, and the seconds to reach
/// ANCE's best validation Recall@10.
fn cost_table(p: &Protocol, plots: &Plots, md: &mut String) {
    let trained: Vec<_> = p.rows.iter().filter(|r| r.cost.is_some()).collect();
    if trained.is_empty() {
        return;
    }
    let _ = writeln!(md, "### Training cost\n");
    let target = p.reach_ance.first().map(|x| x.target);
    let _ = writeln!(
        md,
        "| row | sampler | validation R@10 | training s | ms / step | sampling s | forward s | backward s | refresh s | pairs/s | s to reach ANCE's best{} |",
        target.map_or(String::new(), |t| format!(" ({t:.3})"))
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for row in trained {
        let Some(c) = row.cost else { continue };
        let runs: Vec<&Run> = p.runs.iter().filter(|r| r.row == row.name).collect();
        let pairs = if runs.is_empty() {
            "-".into()
        } else {
            format!(
                "{:.0}",
                runs.iter().map(|r| r.pairs_per_s).sum::<f64>() / runs.len() as f64
            )
        };
        let steps = runs.first().map_or(0, |r| r.steps).max(1);
        let ms_step = row.train_s.unwrap_or(0.0) * 1e3 / steps as f64;
        let reach = p
            .reach_ance
            .iter()
            .find(|x| x.row == row.name)
            .map_or("-".into(), |x| match (x.step, x.train_s) {
                (Some(step), Some(s)) => format!("{s:.1} (step {step})"),
                _ => "not reached".into(),
            });
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {:.1} | {ms_step:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {pairs} | {reach} |",
            row.name,
            row.sampler.as_deref().unwrap_or("-"),
            row.validation_recall_at_10
                .map_or("-".into(), |v| format!("{v:.3}")),
            row.train_s.unwrap_or(0.0),
            c.sample_s,
            c.forward_s,
            c.backward_s,
            c.refresh_s,
        );
    }
    let _ = writeln!(
        md,
        "\nSeconds are training only (validation excluded), means over seeds; refresh is \
         ANCE's re-indexing (its first index build included) or the personalized tower's \
         catalog re-encodings. Building a sampler before the first step is not counted (BM25 \
         negatives search every training query once then). Reaching ANCE's best is read at \
         the validation points, every {} steps. Rows without training runs of their own \
         (hybrid, history term) reuse a trained row's models.\n",
        exp_eval_every(p)
    );
    if let Some(cost) = &plots.cost {
        image(md, "training seconds by part", cost);
    }
}

/// The fine-tuned MiniLM rows' runs.
fn fine_tuning_table(p: &Protocol, md: &mut String) {
    if p.fine_tuned.is_empty() {
        return;
    }
    let _ = writeln!(md, "### Fine-tuning MiniLM\n");
    let _ = writeln!(
        md,
        "| row | sampler | seed | steps | pairs / step | negatives / pair | AdamW lr | training s | pairs/s | sampling s | forward s | backward + AdamW s | mean loss, first -> last logged window (a twentieth of the steps) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &p.fine_tuned {
        let s = &f.summary;
        let loss = match (s.losses.first(), s.losses.last()) {
            (Some(a), Some(b)) => format!("{:.3} -> {:.3}", a.1, b.1),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {:e} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {loss} |",
            f.row,
            f.sampler,
            f.seed,
            s.steps,
            f.batch_size,
            f.negatives,
            f.lr,
            s.train_s,
            s.pairs_per_s,
            s.sample_s,
            s.forward_s,
            s.backward_s,
        );
    }
    let _ = writeln!(
        md,
        "\nall-MiniLM-L6-v2 fine-tuned in candle on this machine's CPU cores with \
         MultipleNegativesRankingLoss (scale 20): each query against every \
         product of its step (in-batch, plus the sampled negatives), with the batch's other \
         positives of the query masked. A small budget and one seed, because a step costs \
         seconds on CPU; the n-gram rows above train for far more pairs in less time.\n"
    );
}

/// The replayed outcomes of every row (held-out logged sessions).
fn replay_table(r: &Report, md: &mut String) {
    let present: Vec<&str> = REPLAY_NAMES
        .iter()
        .copied()
        .filter(|n| r.rows.iter().any(|row| row.replay.contains_key(*n)))
        .collect();
    if present.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Replayed outcomes (held-out logged sessions, not live)\n"
    );
    let _ = write!(md, "| system |");
    for n in &present {
        let n_q = r
            .rows
            .first()
            .and_then(|row| row.replay.get(*n))
            .map_or(0, |e| e.n);
        let _ = write!(md, " {n} ({n_q}) |");
    }
    let _ = writeln!(md, "\n|---|{}", "---|".repeat(present.len()));
    for row in &r.rows {
        let _ = write!(md, "| {} |", row.system);
        for n in &present {
            let _ = write!(md, " {} |", row.replay.get(*n).map_or("-".into(), ci));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n{REPLAY_NOTE}.\n");
}

/// The simulated A/B test's arms (synthetic customers).
fn ab_table(ab: &SimulatedAb, md: &mut String) {
    let _ = writeln!(
        md,
        "### Simulated A/B test (synthetic customers, not live)\n\n{} held-out search \
         sessions, top {} shown; control: {}.\n",
        ab.sessions, ab.depth, ab.control
    );
    let _ = writeln!(
        md,
        "| arm | seeds | click-through | add to cart | conversion | revenue / session | average order value | conversion lift [95% CI] | add-to-cart lift | revenue lift | p (conversion) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for a in &ab.arms {
        let lift = |e: &Option<Estimate>| e.as_ref().map_or("-".into(), ci);
        let money = |e: &Estimate| {
            if e.mean.is_finite() {
                format!("{:.2} [{:.2}, {:.2}]", e.mean, e.low, e.high)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.name,
            a.seeds,
            ci(&a.click_through),
            ci(&a.add_to_cart),
            ci(&a.conversion),
            money(&a.revenue_per_session),
            money(&a.average_order_value),
            lift(&a.conversion_lift),
            lift(&a.add_to_cart_lift),
            a.revenue_lift.as_ref().map_or("-".into(), money),
            a.p_conversion.map_or("-".into(), |p| format!("{p:.4}")),
        );
    }
    let _ = writeln!(md, "\n{}.\n", ab.note);
}

/// Where the best TB-HNS row stands against every other row, in words.
fn verdict(p: &Protocol, md: &mut String) {
    let Some(tax) = &p.best_taxonomy else {
        return;
    };
    let rows = &p.report.rows;
    let Some(t) = rows.iter().find(|r| &r.system == tax) else {
        return;
    };
    let Some(te) = t.micro.get("recall@10") else {
        return;
    };
    // Ahead / behind only where the paired test says so (p < 0.05); the rest is level.
    let mut ahead = Vec::new();
    let mut behind = Vec::new();
    let mut level = Vec::new();
    for other in rows.iter().filter(|r| r.system != t.system) {
        let Some(oe) = other.micro.get("recall@10") else {
            continue;
        };
        let d = te.mean - oe.mean;
        let p = other.p_vs_reference.unwrap_or(1.0);
        let entry = format!("{} ({:+.3}, p = {p:.4})", other.system, d);
        if p >= 0.05 {
            level.push(entry);
        } else if d > 0.0 {
            ahead.push(entry);
        } else {
            behind.push(entry);
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join("; ")
        }
    };
    let _ = writeln!(
        md,
        "**Where TB-HNS stands.** The best TB-HNS variant on validation, {tax}, has test \
         Recall@10 {:.3}. Differences are its Recall@10 minus the other row's, with the paired \
         randomization test's p-value against it.\n\n- Ahead of (p < 0.05): {}.\n- Behind \
         (p < 0.05): {}.\n- Level with (p >= 0.05): {}.",
        te.mean,
        list(&ahead),
        list(&behind),
        list(&level),
    );
    for seg in ["seen queries", "unseen queries"] {
        let (Some(tv), Some(m), Some(b)) = (
            t.segments.get(seg),
            rows.iter()
                .find(|r| r.system == crate::experiment::MEMORISATION)
                .and_then(|r| r.segments.get(seg)),
            rows.iter()
                .find(|r| r.system == crate::experiment::BM25)
                .and_then(|r| r.segments.get(seg)),
        ) else {
            continue;
        };
        let _ = writeln!(
            md,
            "- On {seg}: {tax} {:.3}, query memorisation {:.3}, BM25 {:.3}.",
            tv.mean, m.mean, b.mean
        );
    }
    let _ = writeln!(md);
}

/// Steps between validation measurements of a protocol's runs.
fn exp_eval_every(p: &Protocol) -> u64 {
    p.runs
        .first()
        .and_then(|r| r.curve.get(1).map(|c| c.step - r.curve[0].step))
        .unwrap_or(0)
}

/// How the learned re-ranking head was fitted, its weights and its held-out ablation.
fn rerank_paragraph(c: &crate::experiment::RerankChoice, md: &mut String) {
    let n = c.fits.len().max(1) as f64;
    let mean =
        |f: fn(&crate::rerank::HeadFit) -> f64| c.fits.iter().map(|(_, x)| f(x)).sum::<f64>() / n;
    let queries = c.fits.first().map_or(String::new(), |(_, f)| {
        if f.validation_queries < f.sampled_from {
            format!(
                "{} (a seeded sample of the {})",
                f.validation_queries, f.sampled_from
            )
        } else {
            f.validation_queries.to_string()
        }
    });
    let weights: Vec<String> = c
        .mean_weights()
        .iter()
        .map(|(name, w)| format!("{name} {w:.2}"))
        .collect();
    let held: Vec<String> = c
        .held_out()
        .iter()
        .map(|(v, r)| format!("{v} {r:.3}"))
        .collect();
    let _ = writeln!(
        md,
        "**Learned re-ranking** (`{}`): the personalized row's models rank the dense top 100, the \
         customer's earlier products and the products chosen before for the query text by \
         `w . phi` over {} features, `w` fitted per seed by softmax cross-entropy on the {} \
         validation queries ({:.1} s for every seed, with the ablation). Mean weights: {}. \
         Validation Recall@10 with weights fitted on the other half of the customers (two folds, \
         mean over seeds): {}; in-sample {:.3}. The candidates hold {:.3} of the relevant \
         validation products.\n",
        c.row,
        aisle_search::rerank::FEATURES,
        queries,
        c.fit_s,
        weights.join(", "),
        held.join("; "),
        mean(|f| f.in_sample_recall_at_10),
        mean(|f| f.candidate_recall),
    );
    let _ = writeln!(
        md,
        "Every row reads the customer's training and validation interactions before the query \
         (one history rule, docs/evaluation.md). Where validation interactions come before test \
         queries (leave-last-order-out: the order before the last), the row `{}{}`, present then, \
         ranks with the same heads reading training interactions only, as every row did before \
         December 2026, so that what the validation order adds is visible.\n",
        c.row,
        crate::experiment::WITHOUT_VALIDATION,
    );
}
