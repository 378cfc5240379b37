//! Approximate inner-product search over an HNSW graph that usearch builds. An `f32` graph is then
//! copied into aisle's flat layout and walked by aisle (`vector::flat`, [`Walker::Flat`]);
//! usearch keeps and searches `i8` graphs, and any graph asked for with [`Walker::Usearch`].
//!
//! usearch serves each call from one of a fixed number of per-thread contexts and *fails* a call
//! that finds none free ("Reserve capacity ahead of searches!"). [`HnswIndex`] therefore reserves
//! a known number of contexts and admits at most that many usearch calls at once through a small
//! gate, so a server with more request threads than cores waits instead of erroring. The flat
//! walk needs no gate: each search running takes its own small state from a pool.
//!
//! ## The index file
//!
//! `aisle index` writes `MAGIC`, a little-endian `u32` length, a JSON header ([`IndexStamp`]:
//! format version, dimensions, vector count, the model's and the catalog's digests, the
//! payload's length and CRC-32), the header's own CRC-32 (`u32`), then usearch's serialized
//! graph. Opening a file reads it whole into memory, checks both checksums and the digests the
//! caller expects, checks the graph's structure (usearch trusts its input: see
//! [`graph_check`](super::graph_check)), and copies the graph into the flat layout (`f32`) or
//! into usearch (`i8`). It is never
//! memory-mapped: a file that another process truncates or overwrites under a mapping kills the
//! server with SIGBUS on its next search, which a copy cannot suffer (the cost: opening reads the
//! whole file, and holds it twice in memory for a moment).

use std::fs;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use aisle_core::ProductId;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::flat::{self, FlatGraph};
use super::{check_ids, check_query, check_rows, graph_check, Filter, VectorIndex};
use crate::error::{Result, SearchError};

/// How vectors are stored in the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full precision: 4 bytes per value.
    #[default]
    F32,
    /// One signed byte per value: each vector is scaled to unit norm and rounded to
    /// `round(127 x)`, a quarter of the memory at some cost in recall. Reported similarities are
    /// the cosine of the rounded vectors.
    I8,
}

impl Quantization {
    fn scalar_kind(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

/// The order `n` products go into an HNSW graph, the embedded one or Qdrant's: a fixed
/// pseudo-random permutation, not catalog order. Catalogs come sorted by category, and a graph
/// grown one cluster after another links the clusters poorly. Measured with `aisle bench search`
/// (M = 16, ef 256), recall@10 against exact: 0.948 -> 0.995 at 100k synthetic products, 0.668
/// -> 0.894 at 1M, for a build about 1.5-2x longer (scattered memory access).
pub(crate) fn insertion_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    aisle_core::rng::Rng::new(0x5eed_6a1d ^ n as u64).shuffle(&mut order);
    order
}

/// Graph and search parameters. The defaults are usearch's own, which reach recall@10 above
/// 0.95 on embedding-like data at 100k vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Neighbours per node (HNSW's M); more is better recall, more memory, slower build.
    pub connectivity: usize,
    /// Candidate list size while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidate list size while searching (ef); the main recall / speed knob.
    pub expansion_search: usize,
    pub quantization: Quantization,
    /// Threads adding vectors while building; 0 means rayon's pool. 1 makes the graph the same
    /// on every build.
    pub build_threads: usize,
    /// What walks the graph of an `f32` index built here ([`Walker`]); an opened `f32` file is
    /// always walked flat, an `i8` graph always by usearch.
    pub walker: Walker,
}

/// What searches an `f32` graph: usearch builds it either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Walker {
    /// aisle's flat copy of the graph (`vector::flat`): 2.3-2.4x usearch's queries/s on the same
    /// 1M graph, with the same results (docs/scale-out.md#every-new-neighbour-asked-for-at-once).
    /// Building holds usearch's graph, its serialization and the copy at once for a moment.
    #[default]
    Flat,
    /// usearch's own search: to measure the flat walker against, and for ANCE's index in
    /// training, whose reported rows were made with it (`aisle_train::sampler::ance`).
    Usearch,
}

impl Walker {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Walker::Flat => "flat",
            Walker::Usearch => "usearch",
        }
    }
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: Quantization::F32,
            build_threads: 0,
            walker: Walker::Flat,
        }
    }
}

/// Counts free usearch thread contexts; callers wait for one.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'g>(&'g Gate);

impl Gate {
    fn new(slots: usize) -> Self {
        Gate {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    fn enter(&self) -> Slot<'_> {
        // Nothing panics while holding the lock, so a poisoned mutex still holds a valid count.
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// Number of concurrent calls the index serves: every core, and at least rayon's pool.
fn context_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.max(rayon::current_num_threads()).max(1)
}

/// Scales to unit norm and rounds to `i8` (usearch's own cast truncates, which biases every
/// value towards zero).
fn quantize_i8(v: &[f32]) -> Vec<i8> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm <= 0.0 {
        return vec![0; v.len()];
    }
    let scale = 127.0 / norm;
    v.iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// An HNSW graph over product vectors, built in memory or opened from a file.
pub struct HnswIndex {
    engine: Engine,
    dim: usize,
    quantization: Quantization,
    /// What its file's header said, for an index opened from a file.
    stamp: Option<IndexStamp>,
}

/// What holds and searches the graph.
enum Engine {
    /// usearch itself: `i8` graphs, empty ones, and [`Walker::Usearch`].
    Usearch { index: Index, gate: Gate },
    /// aisle's flat copy of usearch's graph (`vector::flat`); usearch is gone.
    Flat(Box<FlatGraph>),
}

/// The first bytes of every index file aisle writes.
pub const INDEX_MAGIC: &[u8; 8] = b"AISLEIDX";

/// The index file format this build writes and reads.
pub const INDEX_FORMAT: u32 = 1;

/// What an index file was built from: the model that encoded the vectors and the catalog they
/// are rows of. Written into the file's header, checked when it is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStamp {
    /// The model file's digest ([`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest)).
    pub model_digest: String,
    /// The catalog's digest ([`catalog_digest`](crate::qdrant::catalog_digest)): row `i` of the
    /// index is product `i` of that catalog.
    pub catalog_digest: String,
}

/// An index file's JSON header.
#[derive(Debug, Serialize, Deserialize)]
struct FileHeader {
    format: u32,
    dim: usize,
    count: usize,
    #[serde(flatten)]
    stamp: IndexStamp,
    payload_bytes: u64,
    payload_crc32: String,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("quantization", &self.quantization)
            .field("walker", &self.walker())
            .field("connectivity", &self.connectivity())
            .field("expansion_search", &self.expansion_search())
            .field("stamp", &self.stamp)
            .finish()
    }
}

impl HnswIndex {
    fn options(dim: usize, params: &HnswParams) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: params.quantization.scalar_kind(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            multi: false,
        }
    }

    /// Builds over `rows` (row-major, `dim` values each); row `i` is product `ProductId(i)`.
    pub fn build(dim: usize, rows: &[f32], params: &HnswParams) -> Result<Self> {
        let n = check_rows(rows, dim)?;
        let n32 = u32::try_from(n).map_err(|_| {
            SearchError::InvalidArgument(format!("{n} rows exceed the ProductId range"))
        })?;
        let ids: Vec<ProductId> = (0..n32).map(ProductId).collect();
        Self::build_with_ids(dim, rows, &ids, params)
    }

    /// Builds over `rows`; row `i` is product `ids[i]` (each product at most once). Vectors are
    /// added from `params.build_threads` threads at once.
    pub fn build_with_ids(
        dim: usize,
        rows: &[f32],
        ids: &[ProductId],
        params: &HnswParams,
    ) -> Result<Self> {
        use rayon::prelude::*;

        let n = check_rows(rows, dim)?;
        // Checked here: usearch's own duplicate check races between parallel adds.
        check_ids(ids, n)?;
        let index = Index::new(&Self::options(dim, params))
            .map_err(|e| SearchError::usearch("create index", e))?;
        let contexts = context_count();
        index
            .reserve_capacity_and_threads(n, contexts)
            .map_err(|e| SearchError::usearch(format!("reserve {n} vectors"), e))?;
        let gate = Gate::new(contexts);
        let quantization = params.quantization;
        let add = |&i: &usize| {
            let (id, row) = (ids[i], &rows[i * dim..(i + 1) * dim]);
            let key = u64::from(id.0);
            let _slot = gate.enter();
            match quantization {
                Quantization::F32 => index.add(key, row),
                Quantization::I8 => index.add(key, &quantize_i8(row)),
            }
            .map_err(|e| SearchError::usearch(format!("add product {}", id.0), e))
        };
        let order = insertion_order(n);
        match params.build_threads {
            1 => order.iter().try_for_each(add)?,
            0 => order.par_iter().try_for_each(add)?,
            t => rayon::ThreadPoolBuilder::new()
                .num_threads(t.min(contexts))
                .build()
                .map_err(|e| SearchError::InvalidArgument(format!("thread pool: {e}")))?
                .install(|| order.par_iter().try_for_each(add))?,
        }
        let mut engine = Engine::Usearch { index, gate };
        if quantization == Quantization::F32 && params.walker == Walker::Flat && n > 0 {
            // usearch's serialization is the one way out of it: checked and copied, as a file is.
            let payload = engine.payload("flatten the graph")?;
            let graph = flatten(&payload, dim, n, params.expansion_search)
                .map_err(|e| SearchError::usearch("flatten the graph", e))?;
            if let Some(graph) = graph {
                engine = Engine::Flat(Box::new(graph));
            }
        }
        Ok(HnswIndex {
            engine,
            dim,
            quantization,
            stamp: None,
        })
    }

    /// How vectors are stored.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// What searches the graph.
    pub fn walker(&self) -> Walker {
        match self.engine {
            Engine::Usearch { .. } => Walker::Usearch,
            Engine::Flat(_) => Walker::Flat,
        }
    }

    /// Neighbours per node above level 0 (HNSW's M).
    pub fn connectivity(&self) -> usize {
        match &self.engine {
            Engine::Usearch { index, .. } => index.connectivity(),
            Engine::Flat(g) => g.connectivity(),
        }
    }

    /// The search-time candidate list size.
    pub fn expansion_search(&self) -> usize {
        match &self.engine {
            Engine::Usearch { index, .. } => index.expansion_search(),
            Engine::Flat(g) => g.expansion(),
        }
    }

    /// Sets the search-time candidate list size (trading speed for recall); safe while other
    /// threads search.
    pub fn set_expansion_search(&self, n: usize) {
        match &self.engine {
            Engine::Usearch { index, .. } => index.change_expansion_search(n.max(1)),
            Engine::Flat(g) => g.set_expansion(n),
        }
    }

    /// Approximate bytes held in memory.
    pub fn memory_usage(&self) -> usize {
        match &self.engine {
            Engine::Usearch { index, .. } => index.memory_usage(),
            Engine::Flat(g) => g.memory_bytes(),
        }
    }

    /// Converts usearch's IP distance back to a similarity.
    fn similarity(&self, distance: f32) -> f32 {
        match self.quantization {
            Quantization::F32 => 1.0 - distance,
            // usearch's i8 inner product sums raw byte products: undo the 127 x 127 scale.
            Quantization::I8 => (1.0 - distance) / (127.0 * 127.0),
        }
    }

    fn hits(&self, keys: &[u64], distances: &[f32]) -> Result<Vec<(ProductId, f32)>> {
        let mut hits = keys
            .iter()
            .zip(distances)
            .map(|(&key, &d)| {
                u32::try_from(key)
                    .map(|k| (ProductId(k), self.similarity(d)))
                    .map_err(|_| {
                        SearchError::usearch("search", format!("key {key} is not a ProductId"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }

    /// Like [`search`](VectorIndex::search), over only the products `keep` accepts. The graph
    /// walk skips rejected nodes, so a very selective filter may return fewer than `k` hits;
    /// prefer [`ExactIndex::search_filtered`](super::ExactIndex::search_filtered) when it keeps
    /// only a few thousand products.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(ProductId) -> bool,
    ) -> Result<Vec<(ProductId, f32)>> {
        check_query(query, self.dim)?;
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let (index, gate) = match &self.engine {
            Engine::Flat(g) => {
                return Ok(g.search(query, k, Some(&keep as &dyn Fn(ProductId) -> bool)))
            }
            Engine::Usearch { index, gate } => (index, gate),
        };
        let filter = |key: u64| u32::try_from(key).is_ok_and(|k| keep(ProductId(k)));
        let matches = {
            let _slot = gate.enter();
            match self.quantization {
                Quantization::F32 => index.filtered_search(query, k, filter),
                Quantization::I8 => index.filtered_search(&quantize_i8(query), k, filter),
            }
        }
        .map_err(|e| SearchError::usearch("filtered search", e))?;
        self.hits(&matches.keys, &matches.distances)
    }

    /// What the header of the file it was opened from said (`None` for a graph built here).
    pub fn stamp(&self) -> Option<&IndexStamp> {
        self.stamp.as_ref()
    }

    /// Writes the index to `path` with a header saying what it was built from (see the module
    /// docs), atomically: into a temporary file beside it, flushed, then renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>, stamp: &IndexStamp) -> Result<()> {
        let path = path.as_ref();
        let payload = self.payload_bytes(&format!("serialize for {}", path.display()))?;
        let header = FileHeader {
            format: INDEX_FORMAT,
            dim: self.dim,
            count: self.len(),
            stamp: stamp.clone(),
            payload_bytes: payload.len() as u64,
            payload_crc32: format!("{:08x}", crc32fast::hash(&payload)),
        };
        let json = serde_json::to_vec(&header).map_err(|e| SearchError::BadIndexFile {
            path: path.to_path_buf(),
            reason: format!("encoding the header: {e}"),
        })?;
        let json_len = u32::try_from(json.len()).map_err(|_| SearchError::BadIndexFile {
            path: path.to_path_buf(),
            reason: "header over 4 GiB".into(),
        })?;
        aisle_core::io::write_atomic(path, |w| {
            w.write_all(INDEX_MAGIC)?;
            w.write_all(&json_len.to_le_bytes())?;
            w.write_all(&json)?;
            w.write_all(&crc32fast::hash(&json).to_le_bytes())?;
            w.write_all(&payload)
        })
        .map_err(|e| SearchError::io(path, e))
    }

    /// usearch's serialization of the graph and its vectors: the payload of an index file.
    /// `context` names the work in an error.
    pub(crate) fn payload_bytes(&self, context: &str) -> Result<Vec<u8>> {
        self.engine.payload(context)
    }

    /// Reads a saved index into memory, checking its header and checksums.
    pub fn load(path: impl AsRef<Path>, dim: usize) -> Result<Self> {
        Self::open(path.as_ref(), dim, None)
    }

    /// Like [`load`](Self::load), and refuses a file whose header names another model or
    /// catalog than `expected` (an empty digest there is not checked).
    pub fn load_checked(path: impl AsRef<Path>, dim: usize, expected: &IndexStamp) -> Result<Self> {
        Self::open(path.as_ref(), dim, Some(expected))
    }

    fn open(path: &Path, dim: usize, expected: Option<&IndexStamp>) -> Result<Self> {
        // Read whole, never mapped (see the module docs).
        let bytes = fs::read(path).map_err(|e| SearchError::io(path, e))?;
        Self::from_bytes(&bytes, path, dim, expected)
    }

    /// The index in `bytes`, a whole index file as [`save`](Self::save) writes it, checked as
    /// [`load_checked`](Self::load_checked) checks a file (`expected: None` checks no digests);
    /// `path` is used in messages.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        dim: usize,
        expected: Option<&IndexStamp>,
    ) -> Result<Self> {
        let bad = |reason: String| SearchError::BadIndexFile {
            path: path.to_path_buf(),
            reason,
        };
        let (header, payload) = split_file(bytes).map_err(bad)?;
        if header.format != INDEX_FORMAT {
            return Err(bad(format!(
                "index file format {}; this build reads format {INDEX_FORMAT} (rebuild it with `aisle index`)",
                header.format
            )));
        }
        if let Some(want) = expected {
            for (what, want, got) in [
                ("model", &want.model_digest, &header.stamp.model_digest),
                (
                    "catalog",
                    &want.catalog_digest,
                    &header.stamp.catalog_digest,
                ),
            ] {
                if !want.is_empty() && want != got {
                    return Err(bad(format!(
                        "built for another {what}: its header says {what} digest {got}, the one \
                         served has {want} (rebuild it with `aisle index`)"
                    )));
                }
            }
        }
        if header.dim != dim {
            return Err(SearchError::DimensionMismatch {
                expected: dim,
                actual: header.dim,
                path: Some(path.to_path_buf()),
            });
        }
        // usearch trusts what it loads: check the graph first (see graph_check's docs). An f32
        // graph is copied flat as it is checked, and usearch never sees it.
        let expansion = HnswParams::default().expansion_search;
        let mut builder = flat::Builder::new(dim);
        let quantization = graph_check::check_visiting(
            payload,
            graph_check::Expected::file(dim, header.count),
            Some(&mut builder),
        )
        .map_err(|e| bad(e.to_string()))?;
        if let Some(graph) = builder.finish(expansion) {
            return Ok(HnswIndex {
                engine: Engine::Flat(Box::new(graph)),
                dim,
                quantization,
                stamp: Some(header.stamp),
            });
        }

        let engine = Engine::usearch_from(payload, dim, header.count, quantization).map_err(
            |e| match e {
                SearchError::Usearch { message, .. } => bad(message),
                SearchError::DimensionMismatch {
                    expected, actual, ..
                } => SearchError::DimensionMismatch {
                    expected,
                    actual,
                    path: Some(path.to_path_buf()),
                },
                other => other,
            },
        )?;
        Ok(HnswIndex {
            engine,
            dim,
            quantization,
            stamp: Some(header.stamp),
        })
    }

    /// A copy of this index whose graph is walked by `walker`: the same graph, for measuring
    /// one walker against the other (`aisle bench search --export-vectors`). An `i8` graph has
    /// no flat walker and stays with usearch.
    pub fn with_walker(&self, walker: Walker) -> Result<Self> {
        let payload = self.payload_bytes("copy the graph")?;
        let n = self.len();
        let flat = match walker {
            Walker::Flat if n > 0 => flatten(&payload, self.dim, n, self.expansion_search())
                .map_err(|e| SearchError::usearch("flatten the graph", e))?,
            _ => None,
        };
        let engine = match flat {
            Some(graph) => Engine::Flat(Box::new(graph)),
            None => {
                let engine = Engine::usearch_from(&payload, self.dim, n, self.quantization)?;
                if let Engine::Usearch { index, .. } = &engine {
                    index.change_expansion_search(self.expansion_search());
                }
                engine
            }
        };
        Ok(HnswIndex {
            engine,
            dim: self.dim,
            quantization: self.quantization,
            stamp: self.stamp.clone(),
        })
    }
}

impl Engine {
    /// usearch holding the checked graph in `payload`: `count` vectors of `dim` values.
    fn usearch_from(
        payload: &[u8],
        dim: usize,
        count: usize,
        quantization: Quantization,
    ) -> Result<Self> {
        let params = HnswParams {
            quantization,
            ..HnswParams::default()
        };
        // connectivity and expansion_add come from the graph; 0 means "as stored".
        let options = IndexOptions {
            connectivity: 0,
            expansion_add: 0,
            ..HnswIndex::options(dim, &params)
        };
        let index = Index::new(&options).map_err(|e| SearchError::usearch("create index", e))?;
        // Reserving before loading fixes the number of thread contexts.
        let contexts = context_count();
        index
            .reserve_capacity_and_threads(0, contexts)
            .map_err(|e| SearchError::usearch("reserve thread contexts", e))?;
        index
            .load_from_buffer(payload)
            .map_err(|e| SearchError::usearch("load the graph", e))?;
        if index.dimensions() != dim {
            return Err(SearchError::DimensionMismatch {
                expected: dim,
                actual: index.dimensions(),
                path: None,
            });
        }
        if index.size() != count {
            return Err(SearchError::usearch(
                "load the graph",
                format!("header says {count} vectors, graph holds {}", index.size()),
            ));
        }
        index.change_expansion_search(params.expansion_search);
        Ok(Engine::Usearch {
            index,
            gate: Gate::new(contexts),
        })
    }

    /// usearch's serialization of the graph; `context` names the work in an error.
    fn payload(&self, context: &str) -> Result<Vec<u8>> {
        match self {
            Engine::Usearch { index, .. } => {
                let mut payload = vec![0u8; index.serialized_length()];
                index
                    .save_to_buffer(&mut payload)
                    .map_err(|e| SearchError::usearch(context, e))?;
                Ok(payload)
            }
            Engine::Flat(g) => Ok(g.payload()),
        }
    }
}

/// The flat copy of the `count`-node graph that usearch serialized into `payload`, checked as
/// a file is except that its keys may be any distinct product ids; `None` where it stays with
/// usearch (`i8` vectors).
fn flatten(
    payload: &[u8],
    dim: usize,
    count: usize,
    expansion: usize,
) -> std::result::Result<Option<FlatGraph>, graph_check::Refused> {
    let mut builder = flat::Builder::new(dim);
    graph_check::check_visiting(
        payload,
        graph_check::Expected {
            dim,
            count,
            dense_keys: false,
        },
        Some(&mut builder),
    )?;
    Ok(builder.finish(expansion))
}

/// An index file's header and payload, both checked against their checksums.
fn split_file(bytes: &[u8]) -> std::result::Result<(FileHeader, &[u8]), String> {
    let Some(rest) = bytes.strip_prefix(INDEX_MAGIC.as_slice()) else {
        return Err(
            "no aisle index header: a file from before index files had one, or not an aisle \
             index (rebuild it with `aisle index`)"
                .into(),
        );
    };
    let cut = |what: &str| format!("cut short in the {what} ({} bytes in all)", bytes.len());
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(|| cut("header"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len + 4 {
        return Err(cut("header"));
    }
    let (json, rest) = rest.split_at(len);
    let (crc, payload) = rest.split_first_chunk::<4>().ok_or_else(|| cut("header"))?;
    if crc32fast::hash(json) != u32::from_le_bytes(*crc) {
        return Err("the header's checksum does not match: the file is damaged".into());
    }
    let header: FileHeader =
        serde_json::from_slice(json).map_err(|e| format!("unreadable header: {e}"))?;
    if payload.len() as u64 != header.payload_bytes {
        return Err(format!(
            "the header says {} bytes of graph, the file holds {}: it was cut short or added to",
            header.payload_bytes,
            payload.len()
        ));
    }
    let crc = format!("{:08x}", crc32fast::hash(payload));
    if crc != header.payload_crc32 {
        return Err(format!(
            "the graph's CRC-32 is {crc}, its header says {}: the file is damaged",
            header.payload_crc32
        ));
    }
    Ok((header, payload))
}

impl VectorIndex for HnswIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        match &self.engine {
            Engine::Usearch { index, .. } => index.size(),
            Engine::Flat(g) => g.len(),
        }
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(ProductId, f32)>> {
        check_query(query, self.dim)?;
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let (index, gate) = match &self.engine {
            Engine::Flat(g) => return Ok(g.search(query, k, None)),
            Engine::Usearch { index, gate } => (index, gate),
        };
        let matches = {
            let _slot = gate.enter();
            match self.quantization {
                Quantization::F32 => index.search(query, k),
                Quantization::I8 => index.search(&quantize_i8(query), k),
            }
        }
        .map_err(|e| SearchError::usearch("search", e))?;
        self.hits(&matches.keys, &matches.distances)
    }

    fn memory_bytes(&self) -> usize {
        self.memory_usage()
    }

    fn set_search_effort(&self, effort: usize) {
        self.set_expansion_search(effort);
    }

    fn as_hnsw(&self) -> Option<&HnswIndex> {
        Some(self)
    }

    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(ProductId, f32)>> {
        self.search_filtered(query, k, filter.keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::testdata::low_rank;
    use crate::vector::{recall_at_k, ExactIndex};

    const DIM: usize = 64;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        low_rank(n, DIM, 8, 0.1, seed)
    }

    #[test]
    fn one_build_thread_builds_the_same_graph_every_time() {
        let rows = data(3000, 21);
        let params = HnswParams {
            build_threads: 1,
            expansion_search: 16,
            ..HnswParams::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let saved: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let hnsw = HnswIndex::build(DIM, &rows, &params).expect("hnsw");
                let path = dir.path().join(format!("{i}.usearch"));
                hnsw.save(&path, &stamp()).expect("save");
                fs::read(&path).expect("read")
            })
            .collect();
        assert!(saved[0].len() > rows.len() * 4, "the file holds the graph");
        assert!(
            saved[0] == saved[1],
            "two one-thread builds wrote different graphs"
        );
    }

    #[test]
    fn recall_at_10_on_low_rank_data() {
        let rows = data(5000, 7);
        let queries = data(200, 8);
        let exact = ExactIndex::new(DIM, rows.clone()).expect("exact");
        let hnsw = HnswIndex::build(DIM, &rows, &HnswParams::default()).expect("hnsw");
        assert_eq!(hnsw.len(), 5000);
        assert_eq!(hnsw.dim(), DIM);
        let recall = recall_at_k(&hnsw, &exact, &queries, 10).expect("recall");
        println!("HNSW f32 recall@10 on 5k x {DIM} low-rank vectors: {recall:.4}");
        assert!(recall >= 0.95, "recall@10 {recall}");

        // Similarities are inner products.
        let q = &queries[..DIM];
        let hits = hnsw.search(q, 10).expect("search");
        assert_eq!(hits.len(), 10);
        for (p, s) in &hits {
            let row = exact.row(p.index()).expect("row");
            assert!((s - crate::vector::dot(q, row)).abs() < 1e-4);
        }
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn i8_quantization_works() {
        let rows = data(5000, 11);
        let queries = data(200, 12);
        let exact = ExactIndex::new(DIM, rows.clone()).expect("exact");
        let params = HnswParams {
            quantization: Quantization::I8,
            ..HnswParams::default()
        };
        let hnsw = HnswIndex::build(DIM, &rows, &params).expect("hnsw");
        assert_eq!(hnsw.quantization(), Quantization::I8);
        let recall = recall_at_k(&hnsw, &exact, &queries, 10).expect("recall");
        println!("HNSW i8 recall@10 on 5k x {DIM} low-rank vectors: {recall:.4}");
        assert!(recall >= 0.8, "i8 recall@10 {recall}");
        // Reported similarities approximate the f32 inner product.
        let q = &queries[..DIM];
        for (p, s) in hnsw.search(q, 10).expect("search") {
            let row = exact.row(p.index()).expect("row");
            let truth = crate::vector::dot(q, row);
            assert!((s - truth).abs() < 0.03, "i8 similarity {s} vs {truth}");
        }
    }

    fn stamp() -> IndexStamp {
        IndexStamp {
            model_digest: "0badcafe".into(),
            catalog_digest: "12345678".into(),
        }
    }

    #[test]
    fn save_load_round_trip() {
        let rows = data(2000, 3);
        let queries = data(50, 4);
        let params = HnswParams {
            build_threads: 1,
            ..HnswParams::default()
        };
        let hnsw = HnswIndex::build(DIM, &rows, &params).expect("hnsw");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("products.usearch");
        hnsw.save(&path, &stamp()).expect("save");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");

        let loaded = HnswIndex::load_checked(&path, DIM, &stamp()).expect("load");
        assert_eq!(loaded.len(), hnsw.len());
        assert_eq!(loaded.stamp(), Some(&stamp()));
        for q in queries.chunks_exact(DIM) {
            let a = hnsw.search(q, 10).expect("search");
            assert_eq!(a, loaded.search(q, 10).expect("loaded search"));
        }
        // The file is not mapped: truncating it, or writing another over it, under a loaded
        // index changes nothing (a mapped file killed the process with SIGBUS here).
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(4096))
            .expect("truncate");
        assert_eq!(
            loaded.search(&queries[..DIM], 5).expect("search"),
            hnsw.search(&queries[..DIM], 5).expect("search")
        );
        fs::write(&path, vec![0u8; 100]).expect("overwrite");
        assert_eq!(
            loaded.search(&queries[DIM..2 * DIM], 5).expect("search"),
            hnsw.search(&queries[DIM..2 * DIM], 5).expect("search")
        );
    }

    #[test]
    fn damaged_cut_foreign_and_headerless_files_are_refused() {
        let rows = data(800, 7);
        let hnsw = HnswIndex::build(DIM, &rows, &HnswParams::default()).expect("hnsw");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.usearch");
        hnsw.save(&path, &stamp()).expect("save");
        let good = fs::read(&path).expect("read");
        let refused = |bytes: &[u8], expected: &IndexStamp, what: &str| -> String {
            let p = dir.path().join("probe.usearch");
            fs::write(&p, bytes).expect("write");
            let err = HnswIndex::load_checked(&p, DIM, expected).expect_err(what);
            assert!(
                matches!(err, SearchError::BadIndexFile { .. }),
                "{what}: {err}"
            );
            err.to_string()
        };
        // 200 bytes overwritten in the graph, as the probe did: each position refused.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let header_end = good.len() - hnsw.payload_bytes("test").expect("payload").len();
        for _ in 0..20 {
            let mut damaged = good.clone();
            let at = header_end + (next() as usize) % (good.len() - header_end - 200);
            for b in &mut damaged[at..at + 200] {
                *b = next() as u8;
            }
            if damaged != good {
                let msg = refused(&damaged, &stamp(), "damaged");
                assert!(msg.contains("damaged"), "{msg}");
            }
        }
        // One flipped bit in the header.
        let mut flipped = good.clone();
        flipped[INDEX_MAGIC.len() + 10] ^= 1;
        assert!(refused(&flipped, &stamp(), "header bit").contains("checksum"));
        // Cut short, and added to.
        let msg = refused(&good[..good.len() - 1], &stamp(), "cut");
        assert!(msg.contains("cut short"), "{msg}");
        let msg = refused(&good[..20], &stamp(), "cut in the header");
        assert!(msg.contains("cut short"), "{msg}");
        let mut longer = good.clone();
        longer.push(0);
        refused(&longer, &stamp(), "added to");
        // Another model's or catalog's index.
        let other_model = IndexStamp {
            model_digest: "deadbeef".into(),
            ..stamp()
        };
        let msg = refused(&good, &other_model, "other model");
        assert!(
            msg.contains("another model") && msg.contains("0badcafe"),
            "{msg}"
        );
        let other_catalog = IndexStamp {
            catalog_digest: "87654321".into(),
            ..stamp()
        };
        assert!(refused(&good, &other_catalog, "other catalog").contains("another catalog"));
        // A plain usearch file (what `aisle index` wrote before the header).
        let plain = dir.path().join("plain.usearch");
        fs::write(&plain, hnsw.payload_bytes("test").expect("payload")).expect("write");
        let msg = refused(&fs::read(&plain).expect("read"), &stamp(), "plain usearch");
        assert!(msg.contains("no aisle index header"), "{msg}");
        // The intact file still opens.
        HnswIndex::load_checked(&path, DIM, &stamp()).expect("intact");
    }

    #[test]
    fn wrong_dimension_and_bad_files_are_refused() {
        let rows = data(500, 5);
        let hnsw = HnswIndex::build(DIM, &rows, &HnswParams::default()).expect("hnsw");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.usearch");
        hnsw.save(&path, &stamp()).expect("save");

        let err = HnswIndex::load(&path, 32).expect_err("dim mismatch");
        assert!(
            matches!(
                err,
                SearchError::DimensionMismatch {
                    expected: 32,
                    actual: 64,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("expected 32, got 64") && msg.contains("i.usearch"),
            "{msg}"
        );
        let missing = HnswIndex::load(dir.path().join("nope"), DIM).expect_err("missing");
        assert!(matches!(missing, SearchError::Io { .. }), "{missing}");

        let junk = dir.path().join("junk.usearch");
        fs::write(
            &junk,
            b"definitely not an index, but long enough to have a header......",
        )
        .expect("write");
        let err = HnswIndex::load(&junk, DIM).expect_err("junk");
        println!("junk file: {err}");

        // Queries of the wrong length are errors too.
        assert!(matches!(
            hnsw.search(&[0.0; 3], 5),
            Err(SearchError::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn more_concurrent_searches_than_contexts_wait_instead_of_failing() {
        let rows = data(2000, 9);
        let hnsw = HnswIndex::build(DIM, &rows, &HnswParams::default()).expect("hnsw");
        let threads = 4 * context_count() + 3;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (hnsw, rows) = (&hnsw, &rows);
                s.spawn(move || {
                    for i in 0..50 {
                        let r = (t * 50 + i) % 2000;
                        let q = &rows[r * DIM..(r + 1) * DIM];
                        let hits = hnsw.search(q, 5).expect("search never fails");
                        assert_eq!(hits.len(), 5);
                    }
                });
            }
        });
    }

    #[test]
    fn filtered_search_and_edge_cases() {
        let rows = data(1000, 13);
        let hnsw = HnswIndex::build(DIM, &rows, &HnswParams::default()).expect("hnsw");
        let q = &rows[..DIM];
        let hits = hnsw
            .search_filtered(q, 10, |p| p.0 % 2 == 1)
            .expect("filtered");
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(p, _)| p.0 % 2 == 1));
        // The query is row 0, so the unfiltered top hit is product 0 itself.
        assert_eq!(hnsw.search(q, 1).expect("search")[0].0, ProductId(0));
        assert!(hnsw.search(q, 0).expect("k = 0").is_empty());
        // k > len: at most every product, each once. A graph walk need not reach every node
        // (a run here found 998 of 1000), so completeness is not promised.
        let all = hnsw.search(q, 5000).expect("k > len");
        let distinct: std::collections::HashSet<ProductId> = all.iter().map(|h| h.0).collect();
        assert!(all.len() <= 1000 && all.len() > 900, "{}", all.len());
        assert_eq!(distinct.len(), all.len());

        let empty = HnswIndex::build(DIM, &[], &HnswParams::default()).expect("empty");
        assert!(empty.is_empty());
        assert!(empty.search(q, 10).expect("search").is_empty());

        let ids = [ProductId(4), ProductId(4)];
        assert!(
            HnswIndex::build_with_ids(DIM, &rows[..2 * DIM], &ids, &HnswParams::default()).is_err()
        );
        hnsw.set_expansion_search(200);
        assert_eq!(hnsw.expansion_search(), 200);
    }

    #[test]
    fn flat_and_usearch_walkers_agree_on_one_graph() {
        let rows = data(4000, 31);
        let queries = data(150, 32);
        let exact = ExactIndex::new(DIM, rows.clone()).expect("exact");
        let params = HnswParams {
            walker: Walker::Usearch,
            build_threads: 1,
            ..HnswParams::default()
        };
        let usearch = HnswIndex::build(DIM, &rows, &params).expect("hnsw");
        let flat = usearch.with_walker(Walker::Flat).expect("flat copy");
        assert_eq!(
            (usearch.walker(), flat.walker()),
            (Walker::Usearch, Walker::Flat)
        );
        assert_eq!(flat.len(), usearch.len());
        assert_eq!(flat.connectivity(), usearch.connectivity());
        // The same graph, plus the reverse links the flat copy adds: copied back to usearch and
        // flat again, it is written the same.
        let bytes = flat.payload_bytes("test").expect("payload");
        assert!(bytes != usearch.payload_bytes("test").expect("payload"));
        let back = flat.with_walker(Walker::Usearch).expect("back");
        assert!(back.payload_bytes("test").expect("payload") == bytes);
        let again = back.with_walker(Walker::Flat).expect("flat again");
        assert!(again.payload_bytes("test").expect("payload") == bytes);
        for ef in [8, 64] {
            usearch.set_expansion_search(ef);
            flat.set_expansion_search(ef);
            assert_eq!(flat.expansion_search(), ef);
            let a = recall_at_k(&usearch, &exact, &queries, 10).expect("recall");
            let b = recall_at_k(&flat, &exact, &queries, 10).expect("recall");
            println!("ef {ef}: recall@10 usearch {a:.4}, flat {b:.4}");
            assert!((a - b).abs() <= 0.02, "ef {ef}: usearch {a}, flat {b}");
            if ef == 64 {
                assert!(b >= 0.95, "flat recall@10 {b}");
            }
        }
        // Each row finds itself first, and a filter keeps what it accepts, in both.
        for r in [0usize, 17, 999, 3999] {
            let q = &rows[r * DIM..(r + 1) * DIM];
            for index in [&usearch, &flat] {
                assert_eq!(
                    index.search(q, 1).expect("search")[0].0,
                    ProductId(r as u32)
                );
                let hits = index
                    .search_filtered(q, 10, |p| p.0 % 4 == 1)
                    .expect("filtered");
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|(p, _)| p.0 % 4 == 1));
            }
        }
    }

    #[test]
    fn a_graph_over_some_products_is_walked_flat() {
        let rows = data(600, 51);
        let ids: Vec<ProductId> = (0..600).map(|i| ProductId(7 * i + 3)).collect();
        let hnsw =
            HnswIndex::build_with_ids(DIM, &rows, &ids, &HnswParams::default()).expect("hnsw");
        assert_eq!(hnsw.walker(), Walker::Flat);
        for r in [0usize, 599] {
            let hits = hnsw
                .search(&rows[r * DIM..(r + 1) * DIM], 5)
                .expect("search");
            assert_eq!(hits[0].0, ids[r]);
            assert!(hits.iter().all(|(p, _)| p.0 % 7 == 3));
        }
    }

    #[test]
    fn i8_graphs_stay_with_usearch_and_f32_files_open_flat() {
        let rows = data(1500, 41);
        let dir = tempfile::tempdir().expect("tempdir");
        for (quantization, walker) in [
            (Quantization::F32, Walker::Flat),
            (Quantization::I8, Walker::Usearch),
        ] {
            let params = HnswParams {
                quantization,
                ..HnswParams::default()
            };
            let built = HnswIndex::build(DIM, &rows, &params).expect("hnsw");
            assert_eq!(built.walker(), walker, "{quantization:?}");
            let path = dir.path().join(format!("{quantization:?}.usearch"));
            built.save(&path, &stamp()).expect("save");
            let opened = HnswIndex::load(&path, DIM).expect("load");
            assert_eq!(opened.walker(), walker, "{quantization:?} opened");
            assert_eq!(
                opened.with_walker(Walker::Flat).expect("copy").walker(),
                walker,
                "an i8 graph has no flat walker"
            );
            let q = &rows[5 * DIM..6 * DIM];
            assert_eq!(opened.search(q, 1).expect("search")[0].0, ProductId(5));
        }
    }

    #[test]
    fn i8_rounding() {
        assert_eq!(quantize_i8(&[3.0, 4.0]), vec![76, 102]);
        assert_eq!(quantize_i8(&[0.0, 0.0]), vec![0, 0]);
        assert_eq!(quantize_i8(&[-1.0]), vec![-127]);
    }
}
