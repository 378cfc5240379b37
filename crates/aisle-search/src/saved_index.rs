//! The HNSW graph `aisle index` builds of a model's product vectors and saves for `aisle serve
//! --index`, stamped with the model file's and the catalog's digests ([`IndexStamp`]), with its
//! recall@10 measured against exact search. The same encoded catalog goes to Qdrant instead
//! with `--backend qdrant` ([`crate::qdrant::upload`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aisle_core::stats::fmt_n;
use aisle_core::Dataset;
use aisle_model::Encoder;

use crate::error::{Result, SearchError};
use crate::vector::{recall_at_k, ExactIndex, HnswIndex, HnswParams, IndexStamp, Quantization};
use crate::{model_file, qdrant, served, QdrantConfig};

/// A catalog's product vectors under a model read from its file.
pub struct CatalogVectors {
    pub encoder: Arc<dyn Encoder>,
    /// Row `p` for product `p`, [`Encoder::dim`] values each.
    pub vectors: Vec<f32>,
    /// Seconds of the encoding.
    pub encode_s: f64,
    /// Set when the model was trained on other data and let through: the line saying so.
    pub other_dataset: Option<String>,
}

/// Loads the model at `model_path` ([`model_file::load`]: one trained on other data is refused
/// unless `allow_other_dataset`) and encodes the catalog of `ds`, timed.
pub fn encode_catalog(
    model_path: &Path,
    ds: &Dataset,
    allow_other_dataset: bool,
) -> Result<CatalogVectors> {
    let file = model_file::load(model_path, ds, "indexed", allow_other_dataset)?;
    let start = Instant::now();
    let vectors = file.encoder.encode_catalog(&ds.catalog, &ds.taxonomy)?;
    Ok(CatalogVectors {
        encoder: file.encoder,
        vectors,
        encode_s: start.elapsed().as_secs_f64(),
        other_dataset: file.other_dataset,
    })
}

impl CatalogVectors {
    /// Query vectors that measure an index of these vectors against exact search, at most `n`
    /// ([`served::probe_queries`]).
    pub fn probes(&self, ds: &Dataset, n: usize) -> Result<Vec<f32>> {
        served::probe_queries(self.encoder.as_ref(), ds, &self.vectors, n)
    }
}

/// Where `aisle index` puts a catalog's vectors.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A usearch graph built with `params`, saved to `out` [default: [`default_path`]].
    File {
        out: Option<PathBuf>,
        params: HnswParams,
    },
    /// A Qdrant collection laid out as `layout` says ([`qdrant::upload_catalog`]), searched
    /// with effort `hnsw_ef` when its recall is checked.
    Qdrant {
        config: QdrantConfig,
        layout: qdrant::Layout,
        hnsw_ef: usize,
    },
}

/// `aisle index`: encodes the catalog of `ds` with the model at `model_path` ([`encode_catalog`])
/// and puts the vectors where `to` says, with `check` measuring recall@10 against exact search
/// on at most that many probe queries. `say` gets the warning of a model from other data let
/// through (and, for Qdrant, the encoding's time); `progress(done, total)` follows an upload.
/// Returns what to print.
pub fn index(
    model_path: &Path,
    ds: &Dataset,
    allow_other_dataset: bool,
    to: Destination,
    check: Option<usize>,
    say: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut(usize, usize),
) -> Result<String> {
    let catalog = encode_catalog(model_path, ds, allow_other_dataset).map_err(|e| {
        SearchError::LoadModel {
            path: model_path.to_path_buf(),
            source: Box::new(e),
        }
    })?;
    if let Some(note) = &catalog.other_dataset {
        say(&format!("warning: {note}"));
    }
    match to {
        Destination::File { out, params } => {
            let out = out.unwrap_or_else(|| default_path(model_path));
            Ok(build_and_save(catalog, ds, model_path, &params, &out, check)?.render())
        }
        Destination::Qdrant {
            config,
            layout,
            hnsw_ef,
        } => {
            say(&format!(
                "encoded {} products in {:.1} s",
                fmt_n(ds.catalog.len()),
                catalog.encode_s
            ));
            let check = check.map(|n| (n, hnsw_ef));
            qdrant::upload_catalog(&config, &layout, ds, model_path, &catalog, check, progress)
        }
    }
}

/// Where `aisle index` writes when not told: `index.usearch` beside the model.
pub fn default_path(model_path: &Path) -> PathBuf {
    model_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("index.usearch")
}

/// What [`build_and_save`] built, and measured.
#[derive(Clone, Debug)]
pub struct SavedIndex {
    pub path: PathBuf,
    pub products: usize,
    pub dim: usize,
    pub quantization: Quantization,
    pub encode_s: f64,
    pub build_s: f64,
    /// Bytes of the file (0 when its size cannot be read).
    pub bytes: u64,
    /// Recall@10 against exact search, the probe queries and the search effort, when asked for.
    pub check: Option<(f64, usize, usize)>,
}

/// Builds the graph of `catalog`'s vectors with `params`, saves it to `out` (creating its
/// folder) stamped with the model file's and the catalog's digests, and with `check` measures
/// its recall@10 against exact search on at most that many probe queries.
pub fn build_and_save(
    catalog: CatalogVectors,
    ds: &Dataset,
    model_path: &Path,
    params: &HnswParams,
    out: &Path,
    check: Option<usize>,
) -> Result<SavedIndex> {
    let d = catalog.encoder.dim();
    let start = Instant::now();
    let index = HnswIndex::build(d, &catalog.vectors, params)?;
    let build_s = start.elapsed().as_secs_f64();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SearchError::io(dir, e))?;
    }
    let stamp = IndexStamp {
        model_digest: model_file::digest(model_path)?,
        catalog_digest: qdrant::catalog_digest(ds),
    };
    index.save(out, &stamp)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let check = match check {
        Some(n) => {
            let queries = catalog.probes(ds, n)?;
            let exact = ExactIndex::new(d, catalog.vectors)?;
            let r = recall_at_k(&index, &exact, &queries, 10)?;
            Some((r, queries.len() / d.max(1), params.expansion_search))
        }
        None => None,
    };
    Ok(SavedIndex {
        path: out.to_path_buf(),
        products: ds.catalog.len(),
        dim: d,
        quantization: params.quantization,
        encode_s: catalog.encode_s,
        build_s,
        bytes,
        check,
    })
}

impl SavedIndex {
    /// What `aisle index` prints, a figure a line.
    pub fn render(&self) -> String {
        let scalar = match self.quantization {
            Quantization::I8 => "i8",
            Quantization::F32 => "f32",
        };
        let mut out = format!(
            "index                {}\nproducts             {} x {} ({scalar})\n",
            self.path.display(),
            fmt_n(self.products),
            self.dim
        );
        out += &format!(
            "encode               {:.1} s\nbuild                {:.1} s\n",
            self.encode_s, self.build_s
        );
        out += &format!(
            "bytes on disk        {} ({:.0} per product)\n",
            fmt_n(self.bytes as usize),
            self.bytes as f64 / self.products.max(1) as f64
        );
        if let Some((r, queries, effort)) = self.check {
            out += &format!(
                "recall@10 vs exact   {r:.4} ({} queries, expansion_search {effort})\n",
                fmt_n(queries)
            );
        }
        out
    }
}
