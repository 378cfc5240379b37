//! Qdrant as aisle's distributed vector index: a catalog's product vectors in a Qdrant
//! collection (one node or a cluster of shards and replicas), searched through the same
//! [`VectorIndex`] trait as the embedded indexes, so the [`Searcher`](crate::Searcher) and
//! everything above it do not know where the vectors live.
//!
//! - [`Client`]: REST over every node, with timeouts, retries on another node and errors that
//!   name the node and the collection.
//! - [`QdrantIndex`]: a collection as a [`VectorIndex`]. A taxonomy-filtered search is a Qdrant
//!   payload filter on the products' ancestor ids, run inside the engine.
//! - [`upload`]: a model's product vectors into a collection named after the model and the
//!   catalog, resumable and idempotent (a point's id is its product id), checked, and only then
//!   made live by moving the dataset's alias to it in one atomic step.
//!
//! Each point's payload: `product` (its id), `ancestors` (the ids of its category and every
//! category above it) and `title`. Beside the dense vector, each point holds the product's text
//! as a BM25 sparse vector ([`SPARSE_VECTOR`]; the query carries the IDF), so that lexical and
//! hybrid searches run in the engine as well and give tantivy's BM25 scores
//! ([`SparseBm25`](crate::lexical::SparseBm25)). The collection's metadata records what
//! the vectors are ([`CollectionMeta`]); a collection of another model, catalog or dimension is
//! refused, never searched.

mod client;
mod upload;

pub use client::{Client, Method, QdrantConfig, QDRANT_VERSION};
pub use upload::{alias_for, collection_for, upload, upload_catalog, Layout, Upload, UploadReport};

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use aisle_core::{Dataset, NodeId, ProductId};

use crate::error::{Result, SearchError};
use crate::lexical::{Bm25Index, SparseBm25, SparseVector};
use crate::vector::{check_query, Filter, VectorIndex};

/// The version of [`CollectionMeta`]'s layout.
pub const META_FORMAT: u32 = 1;

/// Queries per batch request in [`VectorIndex::search_many`].
const QUERY_BATCH: usize = 64;

/// Products scoring at least the `k`-th's that a lexical search orders by id to cut a tie at the
/// `k`-th place as tantivy does ([`QdrantIndex::lexical_search`]).
const TIE_FETCH: usize = 10_000;

/// The named sparse vector holding a product's text as BM25 weights ([`SparseBm25`]); the
/// dense vector is the collection's unnamed one.
pub const SPARSE_VECTOR: &str = "bm25";

/// The Qdrant collection a [`Searcher`](crate::Searcher) searches
/// ([`IndexChoice::Qdrant`](crate::IndexChoice::Qdrant)).
#[derive(Clone, Debug)]
pub struct QdrantTarget {
    pub config: QdrantConfig,
    /// An alias or a collection [default: the dataset's alias, [`alias_for`]].
    pub collection: Option<String>,
    /// The served model's digest ([`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest)):
    /// a collection of another model is refused. `None` skips the check (the probes still catch
    /// vectors of another model).
    pub model_digest: Option<String>,
}

impl QdrantTarget {
    /// How the collection (or the collection the alias names) holds the products' text as BM25
    /// sparse vectors, if it does: a Searcher whose BM25 is built that way runs its lexical and
    /// hybrid searches there.
    pub fn lexical(&self, ds: &Dataset) -> Result<Option<SparseBm25>> {
        let client = Client::connect(&self.config)?;
        let name = self.collection.clone().unwrap_or_else(|| alias_for(ds));
        let collection = resolve_alias(&client, &name)?.unwrap_or(name);
        Ok(collection_meta(&client, &collection)?.and_then(|(meta, _)| meta.lexical))
    }

    /// Connects, resolves the alias and checks the collection against `ds` and `dim`
    /// ([`QdrantIndex::open`]), and counts its points.
    pub fn open(&self, ds: &Dataset, dim: usize) -> Result<QdrantIndex> {
        let client = Client::connect(&self.config)?;
        let name = self.collection.clone().unwrap_or_else(|| alias_for(ds));
        let index = QdrantIndex::open(client, &name, ds, dim, self.model_digest.as_deref())?;
        let points = index.count()?;
        if points != index.meta.products {
            return Err(bad(
                &index.client,
                &index.collection,
                &format!(
                    "it counts {points} points, its metadata says {} products",
                    index.meta.products
                ),
            ));
        }
        Ok(index)
    }
}

/// What a collection's vectors are, kept in the collection's metadata under `aisle`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// [`META_FORMAT`].
    pub format: u32,
    /// The dataset's name.
    pub dataset: String,
    /// The model file's digest, [`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest)
    /// (as `rerank.json` records it).
    pub model_digest: String,
    /// [`catalog_digest`] of the catalog the vectors encode.
    pub catalog_digest: String,
    pub products: usize,
    pub dim: usize,
    /// Seconds since the epoch when the upload began.
    pub created_unix: u64,
    /// Set once every point is in and the collection has been checked; an alias only ever
    /// points to a complete collection.
    pub complete: bool,
    /// How the products' text is held as BM25 sparse vectors (the named vector
    /// [`SPARSE_VECTOR`]), when it is: lexical and hybrid searches with these settings then run
    /// in the engine too. Absent in collections uploaded before aisle wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<SparseBm25>,
}

/// CRC-32 over every product's title and category ancestry, in product order: two catalogs
/// with the same digest give the same points and payloads.
pub fn catalog_digest(ds: &Dataset) -> String {
    let mut h = crc32fast::Hasher::new();
    for (_, p) in ds.catalog.iter() {
        h.update(p.title.as_bytes());
        h.update(&[0]);
        for a in ancestry(ds, p.category) {
            h.update(&a.0.to_le_bytes());
        }
        h.update(&[0xff]);
    }
    format!("{:08x}", h.finalize())
}

/// A category and every category above it, the root included (a filter on the root keeps
/// every product, as the Searcher's own subtree does): what a filter on any of them matches.
pub(crate) fn ancestry(ds: &Dataset, category: NodeId) -> Vec<NodeId> {
    std::iter::once(category)
        .chain(ds.taxonomy.ancestors(category))
        .collect()
}

/// Reads a collection's [`CollectionMeta`], `None` when the collection does not exist.
pub fn collection_meta(client: &Client, name: &str) -> Result<Option<(CollectionMeta, Value)>> {
    let info = match client.call(Method::Get, &format!("/collections/{name}"), None, name) {
        Ok(v) => v,
        Err(SearchError::Qdrant {
            status: Some(404), ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = info
        .pointer("/config/metadata/aisle")
        .cloned()
        .ok_or_else(|| {
            bad(
                client,
                name,
                "it has no aisle metadata: not a collection aisle wrote",
            )
        })?;
    let meta: CollectionMeta = serde_json::from_value(meta).map_err(|e| {
        bad(
            client,
            name,
            &format!("its aisle metadata is unreadable: {e}"),
        )
    })?;
    if meta.format != META_FORMAT {
        return Err(bad(
            client,
            name,
            &format!(
                "its aisle metadata is format {}, this aisle reads {META_FORMAT}",
                meta.format
            ),
        ));
    }
    Ok(Some((meta, info)))
}

/// The collection an alias points to, `None` when there is no such alias.
pub fn resolve_alias(client: &Client, alias: &str) -> Result<Option<String>> {
    let all = client.call(Method::Get, "/aliases", None, alias)?;
    Ok(all
        .get("aliases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("alias_name").and_then(Value::as_str) == Some(alias))
        .and_then(|a| a.get("collection_name").and_then(Value::as_str))
        .map(str::to_owned))
}

fn bad(client: &Client, collection: &str, message: &str) -> SearchError {
    SearchError::Qdrant {
        node: client.urls().join(","),
        collection: collection.to_owned(),
        status: None,
        message: message.to_owned(),
    }
}

/// A Qdrant collection of product vectors, searched as a [`VectorIndex`].
pub struct QdrantIndex {
    client: Client,
    /// The concrete collection (an alias is resolved once, at open, so that one index never
    /// mixes two collections; a reload opens the alias again).
    collection: String,
    meta: CollectionMeta,
    /// HNSW `ef` sent with each query (0: the collection's default).
    ef: AtomicUsize,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantIndex")
            .field("urls", &self.client.urls())
            .field("collection", &self.collection)
            .finish()
    }
}

impl QdrantIndex {
    /// Opens `name` (an alias or a collection) on the deployment `client` reaches, and checks
    /// that it is complete and holds `ds`'s catalog as `dim`-long vectors. `model_digest`, when
    /// given, must be the one the collection was uploaded from.
    pub fn open(
        client: Client,
        name: &str,
        ds: &Dataset,
        dim: usize,
        model_digest: Option<&str>,
    ) -> Result<QdrantIndex> {
        let collection = resolve_alias(&client, name)?.unwrap_or_else(|| name.to_owned());
        let Some((meta, info)) = collection_meta(&client, &collection)? else {
            return Err(bad(
                &client,
                name,
                "no such collection or alias (upload one with `aisle index --backend qdrant`)",
            ));
        };
        let stored_dim = info
            .pointer("/config/params/vectors/size")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let refuse = |why: String| Err(bad(&client, &collection, &why));
        if stored_dim != dim || meta.dim != dim {
            return refuse(format!(
                "its vectors have {stored_dim} dimensions, the model's have {dim} (expected a \
                 collection uploaded from this model by `aisle index --backend qdrant`)"
            ));
        }
        if !meta.complete {
            return refuse(
                "its upload never finished (run `aisle index --backend qdrant` again to resume it)"
                    .into(),
            );
        }
        let digest = catalog_digest(ds);
        if meta.catalog_digest != digest || meta.products != ds.catalog.len() {
            return refuse(format!(
                "it holds {} products of catalog {} ({}), this catalog ({}) has {} products with \
                 digest {digest}: upload this catalog with `aisle index --backend qdrant`",
                meta.products,
                meta.catalog_digest,
                meta.dataset,
                ds.name,
                ds.catalog.len()
            ));
        }
        if let Some(want) = model_digest {
            if meta.model_digest != want {
                return refuse(format!(
                    "it holds vectors of the model with CRC-32 {}, the model in use has {want}: \
                     upload this model with `aisle index --backend qdrant`",
                    meta.model_digest
                ));
            }
        }
        Ok(QdrantIndex {
            client,
            collection,
            meta,
            ef: AtomicUsize::new(0),
        })
    }

    /// The concrete collection searched.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// What the collection holds.
    pub fn meta(&self) -> &CollectionMeta {
        &self.meta
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Points in the collection, counted exactly by the engine.
    pub fn count(&self) -> Result<usize> {
        count(&self.client, &self.collection)
    }

    fn query_body(&self, query: &[f32], k: usize, category: Option<NodeId>) -> Value {
        let mut body = json!({"query": query, "limit": k, "with_payload": false});
        let ef = self.ef.load(Ordering::Relaxed);
        if ef > 0 {
            body["params"] = json!({"hnsw_ef": ef.max(k)});
        }
        if let Some(c) = category {
            body["filter"] = json!({"must": [{"key": "ancestors", "match": {"value": c.0}}]});
        }
        body
    }

    fn hits(&self, points: &Value) -> Result<Vec<(ProductId, f32)>> {
        let list = points
            .get("points")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                bad(
                    &self.client,
                    &self.collection,
                    "a query reply has no points",
                )
            })?;
        list.iter()
            .map(|p| {
                let id = p.get("id").and_then(Value::as_u64);
                let score = p.get("score").and_then(Value::as_f64);
                match (id, score) {
                    (Some(id), Some(s)) if (id as usize) < self.meta.products => {
                        Ok((ProductId(id as u32), s as f32))
                    }
                    _ => Err(bad(
                        &self.client,
                        &self.collection,
                        &format!("a query returned a point aisle did not write: {p}"),
                    )),
                }
            })
            .collect()
    }

    fn query(
        &self,
        query: &[f32],
        k: usize,
        category: Option<NodeId>,
    ) -> Result<(Vec<(ProductId, f32)>, f64)> {
        check_query(query, self.meta.dim)?;
        if k == 0 {
            return Ok((Vec::new(), 0.0));
        }
        let (reply, time) = self.client.call_timed(
            Method::Post,
            &format!("/collections/{}/points/query", self.collection),
            Some(&self.query_body(query, k, category)),
            &self.collection,
        )?;
        Ok((self.hits(&reply)?, time))
    }

    /// [`VectorIndex::search`], with the seconds the server says the search took.
    pub fn search_timed(&self, query: &[f32], k: usize) -> Result<(Vec<(ProductId, f32)>, f64)> {
        self.query(query, k, None)
    }

    /// Whether the collection holds the products' text as BM25 sparse vectors written as
    /// `bm25` writes them: then [`lexical_search`](Self::lexical_search) ranks as `bm25` does.
    pub fn has_lexical(&self, bm25: &Bm25Index) -> bool {
        self.meta.lexical.as_ref() == Some(&bm25.sparse_spec())
    }

    /// BM25 in the engine: the `k` products whose sparse vectors score highest against `query`
    /// ([`Bm25Index::sparse_query`]), within `category` when given. Products sharing no term
    /// with the query are not returned, so the list may be shorter than `k`.
    ///
    /// Products tied in score at the `k`-th place are cut as tantivy cuts them, keeping the
    /// lowest product ids: Qdrant orders ties its own way, and short queries over similar titles
    /// tie by the hundred (on Instacart, cutting them otherwise moved hybrid Recall@10 by 0.004).
    /// When the `k`-th and the next score tie, a second query orders the products scoring at
    /// least that much (at most [`TIE_FETCH`] of them, by the payload index on `product`) and
    /// takes the tied ones from the lowest id up.
    pub fn lexical_search(
        &self,
        query: &SparseVector,
        k: usize,
        category: Option<NodeId>,
    ) -> Result<Vec<(ProductId, f32)>> {
        if k == 0 || query.is_empty() {
            return Ok(Vec::new());
        }
        let sparse = json!({"indices": query.indices, "values": query.values});
        let filter =
            category.map(|c| json!({"must": [{"key": "ancestors", "match": {"value": c.0}}]}));
        let ask = |mut body: Value| -> Result<Vec<(ProductId, f32)>> {
            if let Some(f) = &filter {
                body["filter"] = f.clone();
            }
            let reply = self.client.call(
                Method::Post,
                &format!("/collections/{}/points/query", self.collection),
                Some(&body),
                &self.collection,
            )?;
            self.hits(&reply)
        };
        let mut hits = ask(json!({
            "query": sparse, "using": SPARSE_VECTOR, "limit": k + 1, "with_payload": false,
        }))?;
        if hits.len() > k && hits[k].1 >= hits[k - 1].1 {
            let floor = hits[k - 1].1;
            hits.retain(|h| h.1 > floor);
            // The threshold sits just below the tie (Qdrant keeps scores above it, and rounds
            // them as it did the first time); what it lets in beyond the tie scores within a
            // millionth of it.
            let lowest = ask(json!({
                "prefetch": {
                    "query": sparse,
                    "using": SPARSE_VECTOR,
                    "limit": TIE_FETCH,
                    "score_threshold": floor - floor.abs() * 1e-6,
                    "filter": filter,
                },
                "query": {"order_by": {"key": "product", "direction": "asc"}},
                "limit": k,
                "with_payload": false,
            }))?;
            let above: Vec<ProductId> = hits.iter().map(|h| h.0).collect();
            for (p, _) in lowest {
                if hits.len() < k && !above.contains(&p) {
                    hits.push((p, floor));
                }
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        Ok(hits)
    }
}

/// Waits until every node has finished indexing `collection` (its status `green` on every node
/// for two seconds in a row: the optimiser may start a moment after the last write; until the
/// HNSW graphs are built Qdrant answers from unindexed segments by brute force, correct but
/// slow); returns the seconds waited. Benchmarks wait, so that they measure the index and not
/// the build.
pub fn wait_indexed(client: &Client, collection: &str, limit: std::time::Duration) -> Result<f64> {
    let start = std::time::Instant::now();
    let nodes: Vec<Client> = client
        .urls()
        .iter()
        .map(|u| Client::connect(&QdrantConfig::new(&[u.as_str()])))
        .collect::<Result<_>>()?;
    let mut green_since: Option<std::time::Instant> = None;
    loop {
        let mut pending = None;
        for node in &nodes {
            let info = node.call(
                Method::Get,
                &format!("/collections/{collection}"),
                None,
                collection,
            )?;
            let status = info
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            if status != "green" {
                pending = Some((node.urls()[0].clone(), status.to_owned()));
                break;
            }
        }
        let Some((node, status)) = pending else {
            let since = *green_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= std::time::Duration::from_secs(2) {
                return Ok((since - start).as_secs_f64());
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            continue;
        };
        green_since = None;
        if start.elapsed() > limit {
            return Err(SearchError::Qdrant {
                node,
                collection: collection.to_owned(),
                status: None,
                message: format!(
                    "still {status} (indexing) after {:.0} s",
                    limit.as_secs_f64()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Exact point count of a collection.
pub(crate) fn count(client: &Client, collection: &str) -> Result<usize> {
    let r = client.call(
        Method::Post,
        &format!("/collections/{collection}/points/count"),
        Some(&json!({"exact": true})),
        collection,
    )?;
    Ok(r.get("count").and_then(Value::as_u64).unwrap_or(0) as usize)
}

impl VectorIndex for QdrantIndex {
    fn dim(&self) -> usize {
        self.meta.dim
    }

    fn len(&self) -> usize {
        self.meta.products
    }

    /// Nothing in this process: the vectors and graph live in the engine.
    fn memory_bytes(&self) -> usize {
        0
    }

    fn set_search_effort(&self, effort: usize) {
        self.ef.store(effort, Ordering::Relaxed);
    }

    fn filters_natively(&self) -> bool {
        true
    }

    fn source(&self) -> Option<String> {
        Some(format!(
            "qdrant {} collection {}{}",
            self.client.urls().join(","),
            self.collection,
            if self.meta.lexical.is_some() {
                " (dense and BM25 sparse vectors)"
            } else {
                ""
            }
        ))
    }

    fn holds_lexical(&self, bm25: &Bm25Index) -> bool {
        self.has_lexical(bm25)
    }

    fn lexical_where(
        &self,
        bm25: &Bm25Index,
        query: &str,
        k: usize,
        category: Option<NodeId>,
    ) -> Option<Result<Vec<(ProductId, f32)>>> {
        self.has_lexical(bm25)
            .then(|| self.lexical_search(&bm25.sparse_query(query)?, k, category))
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(ProductId, f32)>> {
        self.query(query, k, None).map(|(hits, _)| hits)
    }

    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(ProductId, f32)>> {
        self.query(query, k, Some(filter.category))
            .map(|(hits, _)| hits)
    }

    /// Batch requests of 64 queries, a few in flight at once.
    fn search_many(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(ProductId, f32)>>> {
        let d = self.meta.dim;
        for q in queries.chunks(d) {
            check_query(q, d)?;
        }
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len() / d]);
        }
        let blocks: Vec<Vec<Vec<(ProductId, f32)>>> = queries
            .par_chunks(d * QUERY_BATCH)
            .map(|block| {
                let searches: Vec<Value> = block
                    .chunks_exact(d)
                    .map(|q| self.query_body(q, k, None))
                    .collect();
                let reply = self.client.call(
                    Method::Post,
                    &format!("/collections/{}/points/query/batch", self.collection),
                    Some(&json!({ "searches": searches })),
                    &self.collection,
                )?;
                let lists = reply.as_array().ok_or_else(|| {
                    bad(
                        &self.client,
                        &self.collection,
                        "a batch reply is not a list",
                    )
                })?;
                if lists.len() != searches.len() {
                    return Err(bad(
                        &self.client,
                        &self.collection,
                        &format!("{} queries got {} answers", searches.len(), lists.len()),
                    ));
                }
                lists.iter().map(|l| self.hits(l)).collect()
            })
            .collect::<Result<_>>()?;
        Ok(blocks.into_iter().flatten().collect())
    }
}
