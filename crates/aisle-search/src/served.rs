//! The Searcher that `aisle serve` serves, assembled from files: the model ([`crate::model_file`]),
//! the learned re-ranking head (a given file, or `rerank.json` beside the model), the vector
//! index of choice ([`index_choice`], or the vectors in Qdrant: [`Vectors`]) and every
//! customer's history. Built again, from the files as they are then, at each reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aisle_core::{Dataset, Histories};
use aisle_model::Encoder;

use crate::error::{Result, SearchError};
use crate::model_file;
use crate::qdrant::{QdrantConfig, QdrantTarget};
use crate::rerank::{HeadFile, Signals, HEAD_FILE};
use crate::searcher::{IndexChoice, Searcher, SearcherOptions};
use crate::vector::HnswParams;

/// Earlier interactions the towers of a personalized model read when a re-ranking head ranks
/// their candidates: the head was fitted with them reading this many (its own history features
/// read up to [`crate::RERANK_HISTORY`]).
pub const HEAD_TOWER_HISTORY: usize = 1000;

/// Above this many products [`Ann::Auto`] builds an HNSW graph; below it exact search is fast
/// enough (about 1 ms a query at 20k x 128 on one core) and has no recall cost.
pub const AUTO_HNSW_ABOVE: usize = 20_000;

/// The HNSW search effort `aisle serve` uses: at 100k products it lifts recall@10 against exact
/// from 0.86 (usearch's default of 64) to 0.95 for about 0.1 ms more per query (`aisle bench
/// search`, docs/serving.md).
pub const SERVE_EXPANSION_SEARCH: usize = 256;

/// Which vector index a served model gets when no saved one is given (with the `cli` feature,
/// the values of `--ann`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Ann {
    /// HNSW above 20,000 products, exact below.
    Auto,
    Exact,
    Hnsw,
}

/// The index to serve a catalog of `products` products with: the `saved` graph when there is
/// one, else as `ann` says, an HNSW graph searching with `expansion_search`.
pub fn index_choice(
    ann: Ann,
    saved: Option<&Path>,
    products: usize,
    expansion_search: usize,
) -> IndexChoice {
    if let Some(p) = saved {
        return IndexChoice::Saved(p.to_path_buf());
    }
    let hnsw = IndexChoice::Hnsw(HnswParams {
        expansion_search,
        ..HnswParams::default()
    });
    match ann {
        Ann::Exact => IndexChoice::Exact,
        Ann::Hnsw => hnsw,
        Ann::Auto if products > AUTO_HNSW_ABOVE => hnsw,
        Ann::Auto => IndexChoice::Exact,
    }
}

/// Where a served or evaluated model's product vectors live.
#[derive(Clone, Debug)]
pub enum Vectors {
    /// In this process, in this index.
    Embedded(IndexChoice),
    /// In a Qdrant collection or alias [default: the dataset's alias,
    /// [`alias_for`](crate::qdrant::alias_for)].
    Qdrant {
        config: QdrantConfig,
        collection: Option<String>,
    },
}

impl Vectors {
    /// The index for the model file at `model_path` now. A Qdrant collection is checked
    /// against the model file's digest, read again at each call: at a reload, a retrained
    /// model goes with the collection its `aisle index` moved the alias to.
    pub fn index_for(&self, model_path: &Path) -> Result<IndexChoice> {
        Ok(match self {
            Vectors::Embedded(index) => index.clone(),
            Vectors::Qdrant { config, collection } => IndexChoice::Qdrant(QdrantTarget {
                config: config.clone(),
                collection: collection.clone(),
                model_digest: Some(model_file::digest(model_path)?),
            }),
        })
    }
}

/// Where the learned re-ranking head comes from.
#[derive(Clone, Debug)]
pub enum HeadChoice {
    /// None: the towers' order.
    None,
    /// This file, which must exist.
    Given(PathBuf),
    /// `rerank.json` beside the model when there is one (looked for again at every reload).
    BesideModel,
}

impl HeadChoice {
    /// The head asked for: none when `none`, else the `given` file, else the one beside the
    /// model.
    pub fn new(given: Option<PathBuf>, none: bool) -> HeadChoice {
        match (given, none) {
            (_, true) => HeadChoice::None,
            (Some(p), false) => HeadChoice::Given(p),
            (None, false) => HeadChoice::BesideModel,
        }
    }

    /// The head file to serve with `model_path` now.
    pub fn file(&self, model_path: &Path) -> Result<Option<PathBuf>> {
        match self {
            HeadChoice::None => Ok(None),
            HeadChoice::Given(p) if !p.exists() => Err(SearchError::BadHeadFile {
                path: p.clone(),
                field: "file".into(),
                reason: "does not exist (fit one with `aisle train --rerank`)".into(),
            }),
            HeadChoice::Given(p) => Ok(Some(p.clone())),
            HeadChoice::BesideModel => {
                let beside = model_path.with_file_name(HEAD_FILE);
                Ok(beside.exists().then_some(beside))
            }
        }
    }
}

/// How the served Searcher uses its model: the histories it reads, the head, and whether a
/// model trained on another dataset is let through.
#[derive(Clone, Debug)]
pub struct ModelUse {
    /// Earlier interactions read [default: as the model was trained, or
    /// [`HEAD_TOWER_HISTORY`] for a personalized model with a head].
    pub history: Option<usize>,
    /// `beta` of the history term ([`SearcherOptions::history_boost`]).
    pub history_boost: f32,
    pub head: HeadChoice,
    /// Serve a model trained on other data, saying so in every answer
    /// ([`Searcher::notes`]).
    pub allow_other_dataset: bool,
}

/// Builds the Searcher `aisle serve` serves: the model at `model_path` over `index`, reading
/// `histories`, used as `uses` says. A model trained on other data that `uses` lets through
/// leaves its note in [`Searcher::notes`].
pub fn build(
    ds: &Arc<Dataset>,
    model_path: &Path,
    index: &IndexChoice,
    histories: Histories,
    uses: &ModelUse,
) -> Result<Searcher> {
    let file = model_file::load(model_path, ds, "served", uses.allow_other_dataset)?;
    let head = uses.head.file(model_path)?;
    // A head was fitted with the towers reading the head's own history window.
    let tower_history = if head.is_some() && file.encoder.personal().is_some() {
        uses.history.unwrap_or(HEAD_TOWER_HISTORY)
    } else {
        uses.history.unwrap_or(file.history)
    };
    // A saved index's header must name this model (read again at each reload).
    let model_digest = match index {
        IndexChoice::Saved(_) => Some(model_file::digest(model_path)?),
        _ => None,
    };
    // Over a Qdrant collection that holds BM25 as sparse vectors, the BM25 built as they were,
    // so that lexical and hybrid searches run there too.
    let lexical = match index {
        IndexChoice::Qdrant(target) => target.lexical(ds)?.map(|l| l.boosts),
        _ => None,
    };
    let opts = SearcherOptions {
        index: index.clone(),
        history: tower_history,
        history_boost: uses.history_boost,
        model_digest,
        lexical: Some(lexical.unwrap_or_default()),
        ..SearcherOptions::default()
    };
    let mut searcher = Searcher::build(Arc::clone(ds), file.encoder, histories, &opts)?;
    if let Some(note) = file.other_dataset {
        searcher.add_note(note);
    }
    if let Some(path) = &head {
        let (head, saved) = HeadFile::load(path)?;
        saved.check_model(path, model_path)?;
        searcher.set_signals(Some(Arc::new(Signals::of_all(ds))));
        searcher.set_reranker(Some(head))?;
    }
    Ok(searcher)
}

/// At most `n` distinct test queries of the dataset's first split, in split order: what
/// measures an index against exact search (none when the dataset has no split).
pub fn probe_texts(ds: &Dataset, n: usize) -> Vec<&str> {
    ds.default_split()
        .map(|s| {
            let mut seen = std::collections::HashSet::new();
            s.test
                .iter()
                .map(|q| ds.queries.text(q.query))
                .filter(|t| seen.insert(*t))
                .take(n)
                .collect()
        })
        .unwrap_or_default()
}

/// Query vectors that measure an index of `vectors` (the catalog encoded by `encoder`) against
/// exact search: at most `n` distinct test queries of the dataset's first split through the
/// query tower, or evenly spaced product vectors when it has none.
pub fn probe_queries(
    encoder: &dyn Encoder,
    ds: &Dataset,
    vectors: &[f32],
    n: usize,
) -> Result<Vec<f32>> {
    let d = encoder.dim();
    let texts = probe_texts(ds, n);
    if texts.is_empty() {
        let products = vectors.len() / d.max(1);
        let step = (products / n.max(1)).max(1);
        return Ok((0..products)
            .step_by(step)
            .take(n)
            .flat_map(|p| vectors[p * d..(p + 1) * d].iter().copied())
            .collect());
    }
    Ok(encoder.encode_queries(&texts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_the_head_follow_what_was_asked() {
        let at = |ann, saved, products| index_choice(ann, saved, products, 64);
        assert!(matches!(
            at(Ann::Auto, None, AUTO_HNSW_ABOVE),
            IndexChoice::Exact
        ));
        assert!(matches!(
            at(Ann::Auto, None, AUTO_HNSW_ABOVE + 1),
            IndexChoice::Hnsw(p) if p.expansion_search == 64
        ));
        assert!(matches!(
            at(Ann::Exact, Some(Path::new("g.usearch")), 5),
            IndexChoice::Saved(_)
        ));
        let embedded = Vectors::Embedded(IndexChoice::Exact);
        assert!(matches!(
            embedded.index_for(Path::new("no/such/model.aisle")),
            Ok(IndexChoice::Exact)
        ));
        assert!(matches!(
            HeadChoice::new(Some("h.json".into()), true),
            HeadChoice::None
        ));
        assert!(matches!(
            HeadChoice::new(None, false),
            HeadChoice::BesideModel
        ));
    }
}
