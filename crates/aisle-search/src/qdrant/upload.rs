//! Uploading a catalog's vectors into a Qdrant collection and making it live.
//!
//! 1. The collection is named after the dataset, the model, the catalog and the BM25 settings of
//!    its sparse vectors ([`collection_for`]), so a re-run for the same model finds the same
//!    collection.
//! 2. It is created with `complete: false` in its metadata, and payload indexes on `ancestors`
//!    and `product`.
//! 3. Points go in batches, each acknowledged (`wait=true`) before the next. A point's id is its
//!    product id, so a batch sent twice writes the same points; a resumed upload skips the
//!    batches already whole. The batches follow the embedded index's fixed pseudo-random
//!    insertion order, not catalog order: Qdrant grows its graph in the order points arrive,
//!    and a catalog sorted by category links its clusters poorly (docs/scale-out.md measures
//!    both orders).
//! 4. The collection is checked: the engine's exact count, and sampled products that must find
//!    themselves. Only then is it marked complete and the dataset's alias ([`alias_for`]) moved
//!    to it, in one atomic alias operation. A crash at any earlier point leaves the alias on the
//!    previous, complete collection.
//! 5. The dataset's older collections beyond `keep` are deleted.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use aisle_core::stats::fmt_n;
use aisle_core::Dataset;

use super::{
    ancestry, bad, catalog_digest, collection_meta, count, resolve_alias, Client, CollectionMeta,
    Method, QdrantConfig, QdrantIndex, QdrantTarget, META_FORMAT, SPARSE_VECTOR,
};
use crate::error::{Result, SearchError};
use crate::lexical::{Bm25Index, FieldBoosts, SparseBm25, SparseVector};
use crate::vector::{ann_quality, insertion_order, ExactIndex, VectorIndex};

/// Products sampled to find themselves before a collection goes live.
const PROBES: usize = 16;

/// What to upload and how to lay the collection out.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    pub ds: &'a Dataset,
    /// The catalog's vectors, row `p` for product `p`, `dim` values each, L2-normalised.
    pub vectors: &'a [f32],
    pub dim: usize,
    /// The model file's digest, [`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest).
    pub model_digest: String,
    pub layout: Layout,
}

/// How a new collection is laid out, and the upload's batches.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The collection [default: [`collection_for`]].
    pub collection: Option<String>,
    /// Shards the collection is split into (spread over the cluster's nodes).
    pub shards: u32,
    /// Copies of each shard, on different nodes.
    pub replicas: u32,
    /// Collections of this dataset kept, the new live one included; older ones are deleted.
    pub keep: usize,
    /// Points per request.
    pub batch: usize,
    /// HNSW graph degree (Qdrant's `m`) and candidate list while building (`ef_construct`).
    pub hnsw_m: usize,
    pub ef_construct: usize,
    /// The field boosts of a BM25 whose sparse vectors go beside the dense ones
    /// ([`Bm25Index::sparse_documents`]), so that lexical and hybrid searches of a Searcher with
    /// these boosts run in the engine; `None` uploads the dense vectors only.
    pub bm25: Option<FieldBoosts>,
}

/// Uploads `catalog`'s vectors of `ds` (encoded by the model file at `model_path`) to Qdrant
/// through `config`, laid out as `layout` says ([`upload`]: checked, then made live). With
/// `check` as `(n, hnsw_ef)`, also measures Qdrant's recall@10 against exact search on at most
/// `n` probe queries at that effort. Returns what `aisle index --backend qdrant` prints.
pub fn upload_catalog(
    config: &QdrantConfig,
    layout: &Layout,
    ds: &Dataset,
    model_path: &std::path::Path,
    catalog: &crate::saved_index::CatalogVectors,
    check: Option<(usize, usize)>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<String> {
    let client = Client::connect(config)?;
    let up = Upload {
        ds,
        vectors: &catalog.vectors,
        dim: catalog.encoder.dim(),
        model_digest: crate::model_file::digest(model_path)?,
        layout: layout.clone(),
    };
    let report = upload(&client, &up, progress).map_err(|e| SearchError::Upload {
        dataset: ds.name.clone(),
        source: Box::new(e),
    })?;
    let mut out = report.render();
    if let Some((n, hnsw_ef)) = check {
        let queries = catalog.probes(ds, n)?;
        out += &report.recall_line(config, ds, &catalog.vectors, &queries, hnsw_ef)?;
        out.push('\n');
        out += &report.lexical_line(config, ds, n)?;
        out.push('\n');
    }
    Ok(out)
}

/// A segment smaller than this many points is searched by brute force rather than given an HNSW
/// graph. Qdrant's default threshold (10 MB of vectors per segment, about 20,000 points at 128
/// dimensions) left every segment of a 100,000-product collection split into 3 shards
/// unindexed, so that each query scanned every point (10 ms of server time a query, `aisle bench
/// search --backend qdrant`, docs/scale-out.md).
const INDEX_SEGMENTS_ABOVE: usize = 4096;

/// What an upload did.
#[derive(Clone, Debug)]
pub struct UploadReport {
    pub collection: String,
    pub alias: String,
    /// Where the alias pointed before.
    pub previous: Option<String>,
    /// The collection existed (a resumed or repeated upload).
    pub resumed: bool,
    /// Points sent, and points found already there and skipped.
    pub sent: usize,
    pub skipped: usize,
    /// Sampled products that found themselves, of those sampled.
    pub probes_found: usize,
    pub probes: usize,
    /// Collections deleted because more than `keep` were there.
    pub deleted: Vec<String>,
    /// The nodes' URLs, the points and their dimension, the layout, as asked for.
    pub nodes: Vec<String>,
    pub points: usize,
    pub dim: usize,
    pub shards: u32,
    pub replicas: u32,
    /// The model file's digest the collection records.
    pub model_digest: String,
    /// How the products' text went in as BM25 sparse vectors, if it did.
    pub lexical: Option<crate::lexical::SparseBm25>,
    /// Seconds of the whole upload, the checks and the alias move included.
    pub seconds: f64,
}

impl UploadReport {
    /// What `aisle index --backend qdrant` prints of the upload, a figure a line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "qdrant               {}\ncollection           {}\n",
            self.nodes.join(","),
            self.collection
        );
        out += &format!(
            "alias                {} -> {} (was {})\n",
            self.alias,
            self.collection,
            self.previous.as_deref().unwrap_or("none")
        );
        out += &format!(
            "points               {} x {}: {} sent, {} already there{}\n",
            fmt_n(self.points),
            self.dim,
            fmt_n(self.sent),
            fmt_n(self.skipped),
            if self.resumed { " (resumed)" } else { "" }
        );
        out += &format!(
            "layout               {} shard(s) x {} replica(s)\nupload               {:.1} s\n",
            self.shards, self.replicas, self.seconds
        );
        out += &format!(
            "bm25                 {}\n",
            match &self.lexical {
                Some(_) => format!(
                    "sparse vectors in the engine ({})",
                    describe_lexical(self.lexical.as_ref())
                ),
                None => "none: lexical and hybrid searches run in aisle (tantivy)".into(),
            }
        );
        out += &format!(
            "check                count {}, {} of {} sampled products found themselves\n",
            fmt_n(self.points),
            self.probes_found,
            self.probes
        );
        if !self.deleted.is_empty() {
            out += &format!("deleted              {}\n", self.deleted.join(", "));
        }
        out
    }

    /// Recall@10 of Qdrant's search of the uploaded collection (through `config`, with effort
    /// `hnsw_ef`) against exact search over `vectors`, on `queries`: the line that says it.
    pub fn recall_line(
        &self,
        config: &QdrantConfig,
        ds: &Dataset,
        vectors: &[f32],
        queries: &[f32],
        hnsw_ef: usize,
    ) -> Result<String> {
        let target = QdrantTarget {
            config: config.clone(),
            collection: Some(self.collection.clone()),
            model_digest: Some(self.model_digest.clone()),
        };
        let index = target.open(ds, self.dim)?;
        index.set_search_effort(hnsw_ef);
        let exact = ExactIndex::new(self.dim, vectors.to_vec())?;
        let q = ann_quality(&index, &exact, queries, 10)?;
        Ok(format!(
            "recall@10 vs exact   {:.4} ({} queries, hnsw_ef {hnsw_ef})",
            q.recall,
            fmt_n(queries.len() / self.dim.max(1))
        ))
    }
}

/// The dataset's alias: `aisle-<dataset>`; searches and servers name it.
pub fn alias_for(ds: &Dataset) -> String {
    format!("aisle-{}", aisle_core::io::slug(&ds.name))
}

/// The collection for a model's vectors of this catalog: `aisle-<dataset>-m<model>-c<catalog>`,
/// and `-b<digest>` when it also holds BM25 sparse vectors written as `lexical` says (a CRC-32
/// of those settings), so that two BM25 settings never share a collection.
pub fn collection_for(ds: &Dataset, model_digest: &str, lexical: Option<&SparseBm25>) -> String {
    let mut name = format!("{}-m{model_digest}-c{}", alias_for(ds), catalog_digest(ds));
    if let Some(l) = lexical {
        let settings = serde_json::to_vec(l).unwrap_or_default();
        name += &format!("-b{:08x}", crc32fast::hash(&settings));
    }
    name
}

/// Uploads, checks and makes live (see the module's steps). `progress(done, total)` is called
/// after each batch.
pub fn upload(
    client: &Client,
    up: &Upload,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<UploadReport> {
    let start = std::time::Instant::now();
    let n = up.ds.catalog.len();
    if up.vectors.len() != n * up.dim || up.dim == 0 {
        return Err(SearchError::InvalidArgument(format!(
            "{} values are not {n} products x {} dimensions",
            up.vectors.len(),
            up.dim
        )));
    }
    if up.layout.shards == 0
        || up.layout.replicas == 0
        || up.layout.keep == 0
        || up.layout.batch == 0
        || up.layout.hnsw_m < 2
    {
        return Err(SearchError::InvalidArgument(
            "shards, replicas, keep and batch must each be at least 1, the graph degree at least 2"
                .into(),
        ));
    }
    let lexical = up.layout.bm25.map(SparseBm25::with_boosts);
    let name = up
        .layout
        .collection
        .clone()
        .unwrap_or_else(|| collection_for(up.ds, &up.model_digest, lexical.as_ref()));
    let alias = alias_for(up.ds);
    if name == alias {
        return Err(SearchError::InvalidArgument(format!(
            "the collection cannot be named `{alias}`: that is the dataset's alias"
        )));
    }
    let mut meta = CollectionMeta {
        format: META_FORMAT,
        dataset: up.ds.name.clone(),
        model_digest: up.model_digest.clone(),
        catalog_digest: catalog_digest(up.ds),
        products: n,
        dim: up.dim,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        complete: false,
        lexical,
    };
    let resumed = match collection_meta(client, &name)? {
        Some((old, _)) => {
            if old.lexical != meta.lexical {
                return Err(bad(
                    client,
                    &name,
                    &format!(
                        "it already holds BM25 sparse vectors written otherwise ({}), this upload \
                         writes {}: choose another --collection",
                        describe_lexical(old.lexical.as_ref()),
                        describe_lexical(meta.lexical.as_ref())
                    ),
                ));
            }
            let same = old.model_digest == meta.model_digest
                && old.catalog_digest == meta.catalog_digest
                && old.dim == meta.dim
                && old.products == meta.products;
            if !same {
                return Err(bad(
                    client,
                    &name,
                    &format!(
                        "it already holds other vectors (model {}, catalog {}, {} x {}), this \
                         upload is model {}, catalog {}, {n} x {}: choose another --collection",
                        old.model_digest,
                        old.catalog_digest,
                        old.products,
                        old.dim,
                        meta.model_digest,
                        meta.catalog_digest,
                        up.dim
                    ),
                ));
            }
            meta.created_unix = old.created_unix;
            true
        }
        None => {
            create(client, &name, up, &meta)?;
            false
        }
    };
    let sparse = match &up.layout.bm25 {
        Some(boosts) => {
            Some(Bm25Index::build(&up.ds.catalog, &up.ds.taxonomy, boosts)?.sparse_documents()?)
        }
        None => None,
    };
    let (sent, skipped) = send_points(client, &name, up, sparse.as_deref(), resumed, progress)?;
    let points = count(client, &name)?;
    if points != n {
        return Err(bad(
            client,
            &name,
            &format!("after the upload it counts {points} points, the catalog has {n} products"),
        ));
    }
    let index = QdrantIndex {
        client: client.clone(),
        collection: name.clone(),
        meta: meta.clone(),
        ef: Default::default(),
    };
    index.set_search_effort(128);
    let probes_found = probe(&index, up.vectors, up.dim)?;
    let probes = PROBES.min(n);
    if probes_found + 1 < probes {
        return Err(bad(
            client,
            &name,
            &format!(
                "only {probes_found} of {probes} sampled products found themselves: the alias \
                 stays where it was"
            ),
        ));
    }
    meta.complete = true;
    client.call(
        Method::Patch,
        &format!("/collections/{name}"),
        Some(&json!({"metadata": {"aisle": meta}})),
        &name,
    )?;
    let previous = resolve_alias(client, &alias)?;
    let mut actions = Vec::new();
    if previous.is_some() {
        actions.push(json!({"delete_alias": {"alias_name": alias}}));
    }
    actions.push(json!({"create_alias": {"collection_name": name, "alias_name": alias}}));
    client.call(
        Method::Post,
        "/collections/aliases",
        Some(&json!({ "actions": actions })),
        &name,
    )?;
    let deleted = prune(client, &alias, &name, up.layout.keep)?;
    Ok(UploadReport {
        collection: name,
        alias,
        previous,
        resumed,
        sent,
        skipped,
        probes_found,
        probes,
        deleted,
        nodes: client.urls().to_vec(),
        points: n,
        dim: up.dim,
        shards: up.layout.shards,
        replicas: up.layout.replicas,
        model_digest: up.model_digest.clone(),
        lexical: meta.lexical,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl UploadReport {
    /// How Qdrant's BM25 over the uploaded sparse vectors agrees with `bm25` (tantivy, in this
    /// process) on at most `n` test queries (product titles when the dataset has none): the mean
    /// share of tantivy's top 10 that Qdrant's top 10 holds, counting a product tied in score
    /// with tantivy's 10th (to 1e-4) as held (the engines sum a product's terms in another
    /// order, so a last-bit difference may cut such a near-tie either way), and the largest
    /// relative difference between the scores at the same rank. The line that says it.
    pub fn lexical_line(&self, config: &QdrantConfig, ds: &Dataset, n: usize) -> Result<String> {
        let Some(spec) = &self.lexical else {
            return Ok("bm25 vs tantivy      not measured: no sparse vectors".into());
        };
        let bm25 = Bm25Index::build(&ds.catalog, &ds.taxonomy, &spec.boosts)?;
        let target = QdrantTarget {
            config: config.clone(),
            collection: Some(self.collection.clone()),
            model_digest: Some(self.model_digest.clone()),
        };
        let index = target.open(ds, self.dim)?;
        let mut texts = crate::served::probe_texts(ds, n);
        if texts.is_empty() {
            let step = (ds.catalog.len() / n.max(1)).max(1);
            texts = (0..ds.catalog.len())
                .step_by(step)
                .take(n)
                .map(|p| {
                    ds.catalog
                        .get(aisle_core::ProductId(p as u32))
                        .title
                        .as_str()
                })
                .collect();
        }
        let (mut shared, mut counted, mut worst) = (0usize, 0usize, 0f32);
        let (mut local_s, mut remote_s) = (0f64, 0f64);
        for text in &texts {
            let t = std::time::Instant::now();
            let want = bm25.search(text, 10)?;
            local_s += t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let got = index.lexical_search(&bm25.sparse_query(text)?, 10, None)?;
            remote_s += t.elapsed().as_secs_f64();
            let tied = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs();
            let last = want.last().map_or(f32::INFINITY, |w| w.1);
            shared += got
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.0) || tied(h.1, last))
                .count();
            counted += want.len();
            for (g, w) in got.iter().zip(&want) {
                worst = worst.max((g.1 - w.1).abs() / w.1.abs().max(f32::MIN_POSITIVE));
            }
            if got.len() != want.len() {
                worst = f32::INFINITY;
            }
        }
        let per_query = |s: f64| 1e3 * s / texts.len().max(1) as f64;
        Ok(format!(
            "bm25 vs tantivy      top-10 agreement {:.4} (ties at the 10th counted), scores at \
             each rank within {:.1e} ({} queries; {:.2} ms a query in Qdrant over REST, {:.2} ms \
             in tantivy here)",
            shared as f64 / counted.max(1) as f64,
            worst,
            fmt_n(texts.len()),
            per_query(remote_s),
            per_query(local_s)
        ))
    }
}

/// The BM25 settings of a collection's sparse vectors, in words.
fn describe_lexical(lexical: Option<&crate::lexical::SparseBm25>) -> String {
    lexical.map_or_else(
        || "no sparse vectors".into(),
        |l| {
            format!(
                "BM25 boosts {}, k1 {}, b {}",
                l.boosts.describe(),
                l.k1,
                l.b
            )
        },
    )
}

/// Creates the collection (metadata `complete: false`) and its payload indexes. A create that
/// timed out but went through is found on retry and accepted.
fn create(client: &Client, name: &str, up: &Upload, meta: &CollectionMeta) -> Result<()> {
    // Qdrant counts its indexing threshold in kilobytes of vectors.
    let threshold_kb = (INDEX_SEGMENTS_ABOVE * up.dim * 4).div_ceil(1024);
    let mut body = json!({
        "vectors": {"size": up.dim, "distance": "Dot"},
        "shard_number": up.layout.shards,
        "replication_factor": up.layout.replicas,
        "write_consistency_factor": 1,
        "hnsw_config": {"m": up.layout.hnsw_m, "ef_construct": up.layout.ef_construct},
        "optimizers_config": {"indexing_threshold": threshold_kb},
        "metadata": {"aisle": meta},
    });
    if meta.lexical.is_some() {
        // No IDF modifier: the query's weights carry the IDF over the whole catalog, where
        // Qdrant's would be each shard's (SparseBm25's docs).
        body["sparse_vectors"] = json!({ SPARSE_VECTOR: {} });
    }
    if let Err(e) = client.call(
        Method::Put,
        &format!("/collections/{name}"),
        Some(&body),
        name,
    ) {
        match collection_meta(client, name) {
            Ok(Some((m, _))) if m.model_digest == meta.model_digest => {}
            _ => return Err(e),
        }
    }
    for field in ["ancestors", "product"] {
        client.call(
            Method::Put,
            &format!("/collections/{name}/index?wait=true"),
            Some(&json!({"field_name": field, "field_schema": "integer"})),
            name,
        )?;
    }
    Ok(())
}

/// Sends every batch not already whole in the collection; (points sent, points skipped).
fn send_points(
    client: &Client,
    name: &str,
    up: &Upload,
    sparse: Option<&[SparseVector]>,
    resumed: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(usize, usize)> {
    let n = up.ds.catalog.len();
    let d = up.dim;
    let (mut sent, mut skipped, mut done) = (0, 0, 0);
    for ids in insertion_order(n).chunks(up.layout.batch) {
        let whole = resumed && {
            let there = client.call(
                Method::Post,
                &format!("/collections/{name}/points"),
                Some(&json!({"ids": ids, "with_payload": false, "with_vector": false})),
                name,
            )?;
            there.as_array().map_or(0, Vec::len) == ids.len()
        };
        if whole {
            skipped += ids.len();
        } else {
            let points: Vec<Value> = ids
                .iter()
                .map(|&p| {
                    let product = up.ds.catalog.get(aisle_core::ProductId(p as u32));
                    let ancestors: Vec<u32> = ancestry(up.ds, product.category)
                        .iter()
                        .map(|a| a.0)
                        .collect();
                    let dense = &up.vectors[p * d..(p + 1) * d];
                    let vector = match sparse.and_then(|s| s.get(p)) {
                        Some(s) => json!({
                            "": dense,
                            SPARSE_VECTOR: {"indices": s.indices, "values": s.values},
                        }),
                        None => json!(dense),
                    };
                    json!({
                        "id": p,
                        "vector": vector,
                        "payload": {"product": p, "ancestors": ancestors, "title": product.title},
                    })
                })
                .collect();
            client.call(
                Method::Put,
                &format!("/collections/{name}/points?wait=true"),
                Some(&json!({ "points": points })),
                name,
            )?;
            sent += ids.len();
        }
        done += ids.len();
        progress(done, n);
    }
    Ok((sent, skipped))
}

/// How many of [`PROBES`] evenly spaced products, searched with their own vector, come back
/// first (or tied at similarity about 1 with a twin of the same text).
fn probe(index: &QdrantIndex, vectors: &[f32], d: usize) -> Result<usize> {
    let n = vectors.len() / d;
    let probes = PROBES.min(n);
    let mut found = 0;
    for i in 0..probes {
        let p = i * n / probes;
        let q = &vectors[p * d..(p + 1) * d];
        if let Some((id, s)) = index.search(q, 1)?.first() {
            if id.index() == p || *s > 0.999 {
                found += 1;
            }
        }
    }
    Ok(found)
}

/// Deletes the dataset's collections (named `<alias>-...`, with aisle metadata) beyond the
/// `keep` most recent, never `live`. Returns their names.
fn prune(client: &Client, alias: &str, live: &str, keep: usize) -> Result<Vec<String>> {
    let listed = client.call(Method::Get, "/collections", None, live)?;
    let prefix = format!("{alias}-");
    let mut ours: Vec<(u64, String)> = Vec::new();
    for c in listed
        .get("collections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            continue;
        };
        if name == live || !name.starts_with(&prefix) {
            continue;
        }
        // Collections without aisle metadata are not aisle's to delete.
        if let Ok(Some((m, _))) = collection_meta(client, name) {
            ours.push((m.created_unix, name.to_owned()));
        }
    }
    ours.sort_by(|a, b| b.cmp(a));
    let mut deleted = Vec::new();
    for (_, name) in ours.into_iter().skip(keep.saturating_sub(1)) {
        client.call(Method::Delete, &format!("/collections/{name}"), None, &name)?;
        deleted.push(name);
    }
    Ok(deleted)
}
