//! The pretrained neural baseline: all-MiniLM-L6-v2, zero-shot (no training on the retailer's
//! data), and the fine-tuned MiniLM rows: a [`DenseRanker`] over MiniLM as its
//! [`Encoder`](aisle_model::Encoder), exact inner-product search over its unit-length product
//! vectors. The same Searcher serves it (`aisle serve --model FOLDER`). [`compare_tuned`] sets a
//! fine-tuned folder against the pretrained one on validation, after
//! [`fine_tune_and_compare`]'s fine-tuning (`aisle train --tower minilm`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use aisle_core::{Dataset, Histories, ProductId};
use aisle_search::{IndexChoice, Mode};
use aisle_train::transformer::{fine_tune, write_summary, TuneConfig};
use aisle_transformer::MiniLm;

use crate::error::Result;
use crate::evaluate::{evaluate_groups, EvalConfig, Group, Member, Part};
use crate::rankers::{Case, DenseOptions, DenseRanker, HistoryRule, Ranker};

/// Row name of the zero-shot baseline.
pub const MINILM: &str = "pretrained MiniLM (zero-shot)";

/// all-MiniLM-L6-v2 over a catalog.
pub struct MiniLmRanker {
    ranker: DenseRanker,
    /// Seconds spent loading the model and encoding the catalog.
    pub encode_s: f64,
}

impl MiniLmRanker {
    /// Loads the model in `dir` and encodes every product of `ds`.
    pub fn new(ds: &std::sync::Arc<Dataset>, dir: &Path) -> Result<MiniLmRanker> {
        Self::with_name(ds, dir, MINILM.into())
    }

    /// The same, for a row named `name` (a fine-tuned model folder).
    pub fn with_name(
        ds: &std::sync::Arc<Dataset>,
        dir: &Path,
        name: String,
    ) -> Result<MiniLmRanker> {
        let start = Instant::now();
        let encoder = MiniLm::load(dir)?;
        // No personalized tower and no history term: histories would not be read, and none
        // makes the ranker the same for every protocol (it is built once for all of them).
        let options = DenseOptions {
            history: 0,
            history_rule: HistoryRule::Hidden,
            mode: Mode::Dense,
            history_boost: 0.0,
            bm25: Default::default(),
        };
        let ranker = DenseRanker::over(
            name,
            encoder,
            ds,
            Histories::default(),
            &options,
            IndexChoice::Exact,
        )?;
        Ok(MiniLmRanker {
            ranker,
            encode_s: start.elapsed().as_secs_f64(),
        })
    }
}

impl Ranker for MiniLmRanker {
    fn name(&self) -> String {
        self.ranker.name()
    }

    fn rank(&self, cases: &[Case], depth: usize) -> Result<Vec<Vec<ProductId>>> {
        self.ranker.rank(cases, depth)
    }
}

/// Validation Recall@10 of the pretrained MiniLM in `base` against the fine-tuned one in
/// `tuned`, through the same evaluation code, with 95% intervals and the paired test: the line
/// `aisle train --tower minilm` prints, with the seconds the encoding and ranking took.
pub fn compare_tuned(
    ds: &std::sync::Arc<Dataset>,
    split: &aisle_core::Split,
    base: &Path,
    tuned: &Path,
) -> Result<String> {
    let start = Instant::now();
    let pretrained = MiniLmRanker::new(ds, base)?;
    let tuned = MiniLmRanker::with_name(ds, tuned, "fine-tuned".into())?;
    let groups = [
        Group {
            name: "pretrained".into(),
            members: vec![Member::Ready(&pretrained)],
        },
        Group {
            name: "fine-tuned".into(),
            members: vec![Member::Ready(&tuned)],
        },
    ];
    let report = evaluate_groups(
        ds,
        split,
        &groups,
        &EvalConfig {
            part: Part::Validation,
            ks: vec![10],
            resamples: 500,
            rounds: 2000,
            ..EvalConfig::default()
        },
    )?;
    let r10 = |name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.system == name)
            .and_then(|r| r.micro.get("recall@10"))
            .map_or("-".to_owned(), |e| {
                format!("{:.3} [{:.3}, {:.3}]", e.mean, e.low, e.high)
            })
    };
    let p = report
        .rows
        .iter()
        .find_map(|r| r.p_vs_best)
        .map_or(String::new(), |p| format!(", paired p = {p:.4}"));
    Ok(format!(
        "validation R@10      pretrained {} -> fine-tuned {} ({} queries{p}; {:.1} s to encode and rank)",
        r10("pretrained"),
        r10("fine-tuned"),
        report.queries,
        start.elapsed().as_secs_f64()
    ))
}

/// `aisle train --tower minilm`'s run: fine-tunes the MiniLM in `base` on `split` with `cfg`
/// into `out/model` ([`fine_tune`]; `progress` gets its lines) with the run's summary beside
/// it ([`write_summary`]), then compares it with the pretrained one on validation
/// ([`compare_tuned`]). Returns the fine-tuned model folder and what to print: the run's
/// figures, the comparison, where the model and the run's summary are.
pub fn fine_tune_and_compare(
    ds: &std::sync::Arc<Dataset>,
    split: &aisle_core::Split,
    base: &Path,
    cfg: &TuneConfig,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathBuf, String)> {
    let summary = fine_tune(base, ds, split, cfg, &out.join("model"), progress)?;
    let summary_path = write_summary(out, cfg, &summary)?;
    let compared = compare_tuned(ds, split, base, &summary.model)?;
    let report = format!(
        "{}{compared}\nmodel                {}\nsummary              {}\n",
        summary.render(cfg, base),
        summary.model.display(),
        summary_path.display()
    );
    Ok((summary.model, report))
}
