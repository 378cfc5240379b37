//! The rows an experiment compares: the baselines' names, the kinds of row, and the dense rows
//! to train with their negative samplers.

use serde::Serialize;

use aisle_train::SamplerSpec;

use crate::error::Result;

/// Names of the baseline rows.
pub const BM25: &str = "BM25";
pub const POPULARITY: &str = "popularity";
pub const MEMORISATION: &str = "query memorisation";
pub const REPURCHASE: &str = "per-user re-purchase";
/// Start of the fine-tuned MiniLM rows' names.
pub const MINILM_TUNED: &str = "MiniLM fine-tuned,";
/// The personalized tower fitted over pretrained MiniLM's vectors.
pub const MINILM_PERSONALIZED: &str = "pretrained MiniLM, personalized tower";
/// TB-HNS mix drawing its negatives among every product, bought or not (the paper's rule).
pub const CATALOG_POOL_ROW: &str = "TB-HNS mix, catalog pool";
/// Appended to the personalized row's name for its tower trained without customer features.
pub const HISTORY_ONLY: &str = ", history only";
/// Appended to the re-ranking row's name for its heads reading training interactions only.
pub const WITHOUT_VALIDATION: &str = ", histories without validation";

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Needs no training: BM25, popularity, memorisation, re-purchase.
    Baseline,
    /// A bi-encoder trained with one negative sampler.
    Dense,
    /// The personalized query tower (with the best TB-HNS sampler).
    Personalized,
    /// A trained model fused with BM25.
    Hybrid,
    /// A pretrained model used as it is (MiniLM).
    ZeroShot,
    /// A pretrained transformer fine-tuned on the training pairs (MiniLM with a sampler), or
    /// read by a personalized tower fitted over its vectors; one seed each.
    FineTuned,
}

/// One dense row to train: a name and a negative sampler.
#[derive(Clone, Debug)]
pub struct DenseRow {
    pub name: String,
    pub sampler: SamplerSpec,
    /// A TB-HNS variant: competes for "best TB-HNS", which trains the personalized row.
    pub taxonomy: bool,
}

/// Whether a sampler draws any TB-HNS negatives (alone, in a mixture or a curriculum).
pub fn uses_taxonomy(spec: &SamplerSpec) -> bool {
    match spec {
        SamplerSpec::Taxonomy(_) => true,
        SamplerSpec::Mix { parts } => parts.iter().any(|(w, s)| *w > 0.0 && uses_taxonomy(s)),
        SamplerSpec::Curriculum { from, to, .. } => uses_taxonomy(from) || uses_taxonomy(to),
        _ => false,
    }
}

impl DenseRow {
    /// A row from `NAME=SPEC`, or from a bare `SPEC` (which may itself hold `=`, as in
    /// `ance:refresh=100`: a name holds no `:`), named after it. Its sampler competes for the
    /// best TB-HNS variant when it draws taxonomy negatives ([`uses_taxonomy`]).
    pub fn parse(arg: &str) -> Result<DenseRow> {
        let (name, spec) = match arg.split_once('=') {
            Some((name, spec)) if !name.contains(':') => (name.trim(), spec),
            _ => (arg, arg),
        };
        let sampler = SamplerSpec::parse(spec)?;
        Ok(DenseRow {
            name: name.to_owned(),
            taxonomy: uses_taxonomy(&sampler),
            sampler,
        })
    }

    fn new(name: &str, sampler: &str, taxonomy: bool) -> Result<DenseRow> {
        Ok(DenseRow {
            name: name.to_owned(),
            sampler: SamplerSpec::parse(sampler)?,
            taxonomy,
        })
    }

    /// The paper's rows: in-batch only, random, BM25 and ANCE negatives, and TB-HNS with each
    /// pool alone (same leaf, siblings, cousins) and mixed, drawn among products with training
    /// interactions (aisle's default), and the mix drawn from every product (the paper's rule).
    /// Random, BM25 and ANCE run both ways too (their own rule, the whole catalog, and
    /// TB-HNS's default pool), so that no baseline is held to a pool that handicaps it.
    pub fn standard() -> Result<Vec<DenseRow>> {
        Ok(vec![
            DenseRow::new("in-batch negatives", "in-batch", false)?,
            DenseRow::new("random negatives", "random", false)?,
            DenseRow::new(
                "random negatives, interacted pool",
                "random:pool=interacted",
                false,
            )?,
            DenseRow::new("BM25 negatives", "bm25", false)?,
            DenseRow::new(
                "BM25 negatives, interacted pool",
                "bm25:pool=interacted",
                false,
            )?,
            DenseRow::new("ANCE", "ance", false)?,
            DenseRow::new("ANCE, interacted pool", "ance:pool=interacted", false)?,
            DenseRow::new(
                "TB-HNS same leaf",
                "taxonomy:leaf=1,sibling=0,cousin=0",
                true,
            )?,
            DenseRow::new(
                "TB-HNS siblings",
                "taxonomy:leaf=0,sibling=1,cousin=0",
                true,
            )?,
            DenseRow::new("TB-HNS cousins", "taxonomy:leaf=0,sibling=0,cousin=1", true)?,
            DenseRow::new("TB-HNS mix", "taxonomy:leaf=1,sibling=1,cousin=0.5", true)?,
            DenseRow::new(
                CATALOG_POOL_ROW,
                "taxonomy:leaf=1,sibling=1,cousin=0.5,pool=catalog",
                true,
            )?,
            DenseRow::new("TB-HNS mix + random", "mix:0.5*taxonomy+0.5*random", true)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_rows_are_told_from_the_parsed_spec() {
        let spec = |s: &str| SamplerSpec::parse(s).expect("spec");
        assert!(uses_taxonomy(&spec("tbhns")));
        assert!(uses_taxonomy(&spec("mix: 0.5 * random + 0.5 * tb-hns")));
        assert!(uses_taxonomy(&spec("curriculum:random->taxonomy@1..2")));
        assert!(!uses_taxonomy(&spec("mix:1*random+0*taxonomy")));
        assert!(!uses_taxonomy(&spec("ance")));
    }

    #[test]
    fn a_row_is_named_before_its_first_equals_sign_unless_that_is_in_its_spec() {
        let row = DenseRow::parse("TB leaf=taxonomy:leaf=1,sibling=0,cousin=0").expect("row");
        assert_eq!(row.name, "TB leaf");
        assert!(row.taxonomy);
        let bare = DenseRow::parse("ance:refresh=100").expect("bare spec");
        assert_eq!(bare.name, "ance:refresh=100");
        assert!(!bare.taxonomy);
        assert!(DenseRow::parse("x=nonsense").is_err());
    }

    #[test]
    fn the_standard_rows_parse() {
        let rows = DenseRow::standard().expect("rows");
        assert!(rows.iter().any(|r| r.taxonomy));
        assert!(rows
            .iter()
            .any(|r| matches!(r.sampler, SamplerSpec::Ance { .. })));
    }
}
