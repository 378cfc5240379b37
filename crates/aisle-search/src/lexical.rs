//! Lexical retrieval: BM25 over product text, with one tantivy field per kind of text.
//!
//! Each product becomes one document with the fields `title`, `brand`, `taxonomy` (the names on
//! the path from the top-level category to the product's node), `attributes` (attribute values),
//! `description` and `combined` (title, brand, path names and attribute values in one field: a
//! single-field BM25, whose length normalisation and term frequencies see the product's text as
//! a whole), plus its [`ProductId`] as a fast `u64` field. A query is tokenized with the
//! same analyzer as the documents and becomes a disjunction of one BM25 term query per (token,
//! field), each weighted by the field's boost: user text is never parsed as tantivy query syntax,
//! so no input can cause a syntax error.

use aisle_core::{Catalog, NodeId, ProductId, Taxonomy};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::indexer::{IndexWriterOptions, NoMergePolicy};
use tantivy::postings::Postings;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{
    DocSet, Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term, TERMINATED,
};

use crate::error::{Result, SearchError};

/// Name under which the product-text analyzer is registered in the index.
const ANALYZER: &str = "aisle_en";
/// Name of the fast field holding the product id.
const PRODUCT_ID_FIELD: &str = "product_id";
/// Name of the indexed field holding the pre-order rank of the product's category, so that a
/// taxonomy subtree (a rank range) filters inside the query, not after it.
const CATEGORY_RANK_FIELD: &str = "category_rank";
/// Tokens longer than this (bytes) are dropped: they are hashes, URLs or garbage, not words.
const MAX_TOKEN_BYTES: usize = 40;
/// Distinct query tokens beyond this are ignored, bounding the cost of a pasted paragraph.
pub const MAX_QUERY_TERMS: usize = 32;

/// How much of a product's text an explanation reads ([`Bm25Index::matching_terms`]): past it, a
/// match is not named. Bounds the cost of one explained hit whatever the catalog holds.
pub const MAX_EXPLAINED_BYTES: usize = 64 * 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
/// Indexing buffer before tantivy flushes a segment; large enough that catalogs of a few million
/// titles stay in one segment, so document order (and score ties) follow catalog order.
const WRITER_MEMORY_BYTES: usize = 256 << 20;

/// How much a query term matching each field counts (BM25 score multipliers). A boost of 0 leaves
/// the field out of the index altogether.
///
/// Serialised with defaults for missing keys, so a config file may set only some of them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldBoosts {
    pub title: f32,
    pub brand: f32,
    /// Names of the taxonomy path (e.g. "Video Games", "Xbox 360", "Shooter").
    pub taxonomy: f32,
    /// Attribute values (not names).
    pub attributes: f32,
    pub description: f32,
    /// Title, brand, path names and attribute values as one field (0 by default: the fields
    /// above are scored separately and summed).
    pub combined: f32,
}

impl Default for FieldBoosts {
    fn default() -> Self {
        FieldBoosts {
            title: 2.0,
            brand: 1.5,
            taxonomy: 1.0,
            attributes: 1.0,
            description: 0.5,
            combined: 0.0,
        }
    }
}

impl FieldBoosts {
    /// `(name, boost)` for each field, in schema order.
    pub fn as_pairs(&self) -> [(&'static str, f32); 6] {
        [
            ("title", self.title),
            ("brand", self.brand),
            ("taxonomy", self.taxonomy),
            ("attributes", self.attributes),
            ("description", self.description),
            ("combined", self.combined),
        ]
    }

    /// The boosts written the short way: `title 2, brand 1.5, ...` (fields at 0 left out).
    pub fn describe(&self) -> String {
        let on: Vec<String> = self
            .as_pairs()
            .iter()
            .filter(|(_, b)| *b > 0.0)
            .map(|(n, b)| format!("{n} {b}"))
            .collect();
        if on.is_empty() {
            "no field".into()
        } else {
            on.join(", ")
        }
    }

    fn validate(&self) -> Result<()> {
        for (name, boost) in self.as_pairs() {
            if !boost.is_finite() || boost < 0.0 {
                return Err(SearchError::InvalidArgument(format!(
                    "BM25 boost of field `{name}` must be a finite number >= 0, got {boost}"
                )));
            }
        }
        if self.as_pairs().iter().all(|(_, b)| *b == 0.0) {
            return Err(SearchError::InvalidArgument(
                "BM25 needs at least one field with a boost above 0".into(),
            ));
        }
        Ok(())
    }
}

/// The text fields of the schema, in the order of [`FieldBoosts::as_pairs`].
#[derive(Clone, Copy, Debug)]
struct TextFields {
    title: Field,
    brand: Field,
    taxonomy: Field,
    attributes: Field,
    description: Field,
    combined: Field,
}

/// A BM25 index over a catalog, held in RAM. Cheap to query from many threads at once (`&self`).
pub struct Bm25Index {
    searcher: Searcher,
    analyzer: TextAnalyzer,
    /// `(field, boost)` for the fields with a boost above 0.
    weighted_fields: Vec<(Field, f32)>,
    boosts: FieldBoosts,
    /// `products[segment_ord][doc_id]`: the product of each document, read back from the fast
    /// field once after indexing.
    products: Vec<Vec<ProductId>>,
    len: usize,
    category_rank: Field,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("len", &self.len)
            .field("segments", &self.products.len())
            .field("boosts", &self.boosts)
            .finish()
    }
}

/// The analyzer for both documents and queries: split on non-alphanumerics, drop very long
/// tokens, lowercase, fold accents to ASCII, English Snowball stemming ("games" -> "game").
fn product_text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

fn schema() -> (Schema, TextFields, Field, Field) {
    let mut builder = Schema::builder();
    // Frequencies but no positions: queries are bags of terms, never phrases.
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = TextFields {
        title: builder.add_text_field("title", text.clone()),
        brand: builder.add_text_field("brand", text.clone()),
        taxonomy: builder.add_text_field("taxonomy", text.clone()),
        attributes: builder.add_text_field("attributes", text.clone()),
        description: builder.add_text_field("description", text.clone()),
        combined: builder.add_text_field("combined", text),
    };
    let product_id = builder.add_u64_field(PRODUCT_ID_FIELD, FAST);
    let category_rank = builder.add_u64_field(CATEGORY_RANK_FIELD, INDEXED);
    (builder.build(), fields, product_id, category_rank)
}

/// The names on the taxonomy path of each node (root excluded), computed once per node.
struct PathNames<'t> {
    taxonomy: &'t Taxonomy,
    cache: Vec<Option<Vec<&'t str>>>,
}

impl<'t> PathNames<'t> {
    fn new(taxonomy: &'t Taxonomy) -> Self {
        PathNames {
            taxonomy,
            cache: vec![None; taxonomy.len()],
        }
    }

    /// Empty when the node is not in this taxonomy (a catalog paired with another taxonomy).
    fn get(&mut self, node: NodeId) -> &[&'t str] {
        let Some(slot) = self.cache.get_mut(node.index()) else {
            return &[];
        };
        let taxonomy = self.taxonomy;
        slot.get_or_insert_with(|| {
            taxonomy
                .path(node)
                .into_iter()
                .map(|n| taxonomy.name(n))
                .filter(|name| !name.is_empty())
                .collect()
        })
    }
}

impl Bm25Index {
    /// Indexes every product of the catalog (in catalog order, on one indexing thread: 100k
    /// titles take well under a second).
    pub fn build(catalog: &Catalog, taxonomy: &Taxonomy, boosts: &FieldBoosts) -> Result<Self> {
        boosts.validate()?;
        let (schema, fields, product_id, category_rank) = schema();
        let index = Index::create_in_ram(schema);
        index
            .tokenizers()
            .register(ANALYZER, product_text_analyzer());

        let options = IndexWriterOptions::builder()
            .num_worker_threads(1)
            .memory_budget_per_thread(WRITER_MEMORY_BYTES)
            .build();
        let mut writer: IndexWriter<TantivyDocument> = index.writer_with_options(options)?;
        writer.set_merge_policy(Box::new(NoMergePolicy));

        let mut paths = PathNames::new(taxonomy);
        for (pid, p) in catalog.iter() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(product_id, u64::from(pid.0));
            if p.category.index() < taxonomy.len() {
                doc.add_u64(
                    category_rank,
                    u64::from(taxonomy.pre_range(p.category).start),
                );
            }
            let mut add = |field: Field, boost: f32, text: &str| {
                if boost > 0.0 && !text.is_empty() {
                    doc.add_text(field, text);
                }
            };
            let path = paths.get(p.category);
            let texts = [
                (fields.title, boosts.title, p.title.as_str()),
                (fields.brand, boosts.brand, &p.brand),
            ]
            .into_iter()
            .chain(path.iter().map(|n| (fields.taxonomy, boosts.taxonomy, *n)))
            .chain(
                p.attributes
                    .iter()
                    .map(|(_, v)| (fields.attributes, boosts.attributes, v.as_str())),
            );
            for (field, boost, text) in texts {
                add(field, boost, text);
                // The same texts again as one field: tantivy counts a field's values as one text.
                add(fields.combined, boosts.combined, text);
            }
            add(fields.description, boosts.description, &p.description);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;

        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let products = Self::read_product_ids(&searcher)?;

        let weighted_fields = [
            (fields.title, boosts.title),
            (fields.brand, boosts.brand),
            (fields.taxonomy, boosts.taxonomy),
            (fields.attributes, boosts.attributes),
            (fields.description, boosts.description),
            (fields.combined, boosts.combined),
        ]
        .into_iter()
        .filter(|&(_, b)| b > 0.0)
        .collect();

        Ok(Bm25Index {
            searcher,
            analyzer: product_text_analyzer(),
            weighted_fields,
            boosts: *boosts,
            products,
            len: catalog.len(),
            category_rank,
        })
    }

    /// The product of every document, per segment, from the fast field.
    fn read_product_ids(searcher: &Searcher) -> Result<Vec<Vec<ProductId>>> {
        let mut out = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64(PRODUCT_ID_FIELD)?;
            let ids = (0..segment.max_doc())
                .map(|doc| {
                    let raw = column.first(doc).ok_or_else(|| {
                        SearchError::InvalidArgument(format!(
                            "document {doc} of the BM25 index has no product id"
                        ))
                    })?;
                    u32::try_from(raw).map(ProductId).map_err(|_| {
                        SearchError::InvalidArgument(format!("product id {raw} exceeds u32"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(ids);
        }
        Ok(out)
    }

    /// Number of indexed products.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The boosts the index was built with.
    pub fn boosts(&self) -> &FieldBoosts {
        &self.boosts
    }

    /// The distinct analyzed terms of a query (lowercased, folded, stemmed), in order of first
    /// appearance, at most [`MAX_QUERY_TERMS`].
    pub fn query_terms(&self, query: &str) -> Vec<String> {
        self.analyze(query, MAX_QUERY_TERMS)
    }

    /// The distinct analyzed terms of any text, as the index sees them, at most `max`, in order
    /// of first appearance. Linear in the text's tokens (a set keeps them distinct).
    pub fn analyze(&self, text: &str, max: usize) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut terms: Vec<String> = Vec::new();
        while terms.len() < max && stream.advance() {
            let text = &stream.token().text;
            if !text.is_empty() && !seen.contains(text) {
                seen.insert(text.clone());
                terms.push(text.clone());
            }
        }
        terms
    }

    /// Which of `terms` (already analyzed: [`query_terms`](Self::query_terms)) occur in `text`
    /// as the index sees it: what BM25 matched in a product ([`Searcher`](crate::Searcher)'s
    /// explanations). One pass over the text's tokens that stops as soon as every term is found;
    /// only the first [`MAX_EXPLAINED_BYTES`] of the text are read, so a product with a
    /// megabyte of text costs what one with 64 KiB does. In the order of `terms`.
    pub fn matching_terms(&self, text: &str, terms: &[String]) -> Vec<String> {
        let text = truncate_at_char(text, MAX_EXPLAINED_BYTES);
        let mut found = vec![false; terms.len()];
        let mut left = terms.len();
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        while left > 0 && stream.advance() {
            let token = &stream.token().text;
            // At most MAX_QUERY_TERMS terms: a scan of them is cheaper than hashing the token.
            for (i, t) in terms.iter().enumerate() {
                if !found[i] && t == token {
                    found[i] = true;
                    left -= 1;
                }
            }
        }
        terms
            .iter()
            .zip(found)
            .filter(|(_, f)| *f)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// The `k` products with the highest BM25 score for `query`, best first (ties broken by
    /// product id). Products matching no query term are never returned, so the list may be
    /// shorter than `k`; a query with no word characters returns nothing.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(ProductId, f32)>> {
        self.search_in(query, k, None)
    }

    /// Like [`search`](Self::search), over only the products whose category's pre-order rank
    /// is in `ranks` ([`Taxonomy::pre_range`] of a node: its subtree). The filter is part of the
    /// query, so a small category's matches are found however low they rank in the whole
    /// catalog; it adds nothing to the scores.
    pub fn search_in(
        &self,
        query: &str,
        k: usize,
        ranks: Option<std::ops::Range<u32>>,
    ) -> Result<Vec<(ProductId, f32)>> {
        let k = k.min(self.len);
        if k == 0 || self.weighted_fields.is_empty() {
            return Ok(Vec::new());
        }
        let terms = self.query_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            Vec::with_capacity(terms.len() * self.weighted_fields.len());
        for term in &terms {
            for &(field, boost) in &self.weighted_fields {
                let tq = TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(tq), boost)),
                ));
            }
        }
        let text: Box<dyn Query> = Box::new(BooleanQuery::new(clauses));
        let query: Box<dyn Query> = match ranks {
            None => text,
            Some(r) => {
                let term = |v: u32| Term::from_field_u64(self.category_rank, u64::from(v));
                let within = RangeQuery::new(
                    std::ops::Bound::Included(term(r.start)),
                    std::ops::Bound::Excluded(term(r.end)),
                );
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, text),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(Box::new(within), 0.0)),
                    ),
                ]))
            }
        };
        let top = self
            .searcher
            .search(query.as_ref(), &TopDocs::with_limit(k).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let pid = self
                .products
                .get(addr.segment_ord as usize)
                .and_then(|seg| seg.get(addr.doc_id as usize))
                .copied()
                .ok_or_else(|| {
                    SearchError::InvalidArgument(format!(
                        "BM25 hit {addr:?} is not a known document"
                    ))
                })?;
            hits.push((pid, score));
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }

    /// [`search`](Self::search) for many queries, in parallel over rayon's pool; results in query
    /// order.
    pub fn search_many(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<(ProductId, f32)>>> {
        use rayon::prelude::*;
        queries.par_iter().map(|q| self.search(q, k)).collect()
    }

    /// How this index's BM25 is written as sparse vectors ([`SparseBm25`]).
    pub fn sparse_spec(&self) -> SparseBm25 {
        SparseBm25::with_boosts(self.boosts)
    }

    /// A query as a sparse vector: on the dimension of each of its terms in each field with a
    /// boost, the term's IDF in that field over this index, `ln(1 + (N - n + 0.5) / (n + 0.5))`
    /// ([`SparseBm25`]); terms no product holds are left out. Empty when no term is left.
    pub fn sparse_query(&self, query: &str) -> Result<SparseVector> {
        let docs = self.searcher.num_docs();
        let mut pairs = Vec::new();
        for term in self.query_terms(query) {
            for &(field, _) in &self.weighted_fields {
                let n = self
                    .searcher
                    .doc_freq(&Term::from_field_text(field, &term))?;
                if n > 0 {
                    let idf = (1.0 + (docs.saturating_sub(n) as f32 + 0.5) / (n as f32 + 0.5)).ln();
                    pairs.push((sparse_dim(field, term.as_bytes()), idf));
                }
            }
        }
        Ok(SparseVector::from_pairs(pairs))
    }

    /// Every product's text as a sparse vector, row `p` for product `p`: on the dimension of each
    /// (field, term) it holds, `boost * (k1 + 1) * tf / (tf + k1 * (1 - b + b * len / avg_len))`,
    /// read back from this index's own postings and field lengths (quantized as tantivy stores
    /// them), so that its dot product with [`sparse_query`](Self::sparse_query) is this index's
    /// BM25 score ([`SparseBm25`]).
    pub fn sparse_documents(&self) -> Result<Vec<SparseVector>> {
        let mut pairs: Vec<Vec<(u32, f32)>> = vec![Vec::new(); self.len];
        let segments = self.searcher.segment_readers();
        let docs: u64 = segments.iter().map(|s| u64::from(s.max_doc())).sum();
        for &(field, boost) in &self.weighted_fields {
            let mut tokens = 0u64;
            for segment in segments {
                tokens += segment.inverted_index(field)?.total_num_tokens();
            }
            let avg = tokens as f32 / docs.max(1) as f32;
            for (ord, segment) in segments.iter().enumerate() {
                let norms = segment.get_fieldnorms_reader(field)?;
                let inverted = segment.inverted_index(field)?;
                let mut terms = inverted
                    .terms()
                    .stream()
                    .map_err(tantivy::TantivyError::from)?;
                while terms.advance() {
                    let dim = sparse_dim(field, terms.key());
                    let mut postings = inverted
                        .read_postings_from_terminfo(terms.value(), IndexRecordOption::WithFreqs)
                        .map_err(tantivy::TantivyError::from)?;
                    let mut doc = postings.doc();
                    while doc != TERMINATED {
                        let product = self
                            .products
                            .get(ord)
                            .and_then(|seg| seg.get(doc as usize))
                            .copied()
                            .ok_or_else(|| {
                                SearchError::InvalidArgument(format!(
                                    "BM25 document {doc} of segment {ord} has no product"
                                ))
                            })?;
                        let tf = postings.term_freq() as f32;
                        let len = norms.fieldnorm(doc) as f32;
                        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len / avg);
                        let value = boost * (1.0 + BM25_K1) * tf / (tf + norm);
                        if let Some(row) = pairs.get_mut(product.index()) {
                            row.push((dim, value));
                        }
                        doc = postings.advance();
                    }
                }
            }
        }
        Ok(pairs.into_iter().map(SparseVector::from_pairs).collect())
    }
}

/// tantivy's BM25 constants (`tantivy::query::bm25`, not exported).
const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;
/// How a (field, term) pair becomes a sparse dimension ([`sparse_dim`]).
const SPARSE_DIMS: &str = "fnv1a32(field id byte, term bytes)";

/// The sparse dimension of `term` in `field`: FNV-1a (32 bits) over the field's id and the term.
/// Two pairs may share a dimension; with some 10^5 distinct pairs a handful do, and their
/// products then share that term's weight.
fn sparse_dim(field: Field, term: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &byte in std::iter::once(&(field.field_id() as u8)).chain(term) {
        h ^= u32::from(byte);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// How an index's BM25 is written as sparse vectors, so that an engine scoring a plain sparse dot
/// product computes the index's own BM25 score. Each (field, term) is a dimension
/// ([`Bm25Index::sparse_documents`], [`Bm25Index::sparse_query`]). A product's value there
/// carries the field's boost and the term frequency saturated by `k1` and normalised by the
/// field's length with `b`; the query's carries the term's IDF in that field, from this process's
/// index.
///
/// The IDF is the query's, not the engine's: Qdrant 1.17's `modifier: idf` counts document
/// frequencies per shard, and over a collection of 3 shards that gave tantivy's top 10 for only
/// 0.77 (Instacart) and 0.90 (Best Buy) of the products, with scores up to 76% off
/// (`aisle index --backend qdrant --shards 3 --check`, docs/scale-out.md), against 1.0000 here on
/// one shard or three. Kept with the vectors, so that a searcher with other settings knows not to
/// use them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparseBm25 {
    pub boosts: FieldBoosts,
    pub k1: f32,
    pub b: f32,
    /// How a (field, term) pair becomes a dimension.
    pub dims: String,
    /// Where the IDF is computed: `query` (the query's weights carry it).
    pub idf: String,
}

impl SparseBm25 {
    /// How an index built with `boosts` writes its sparse vectors.
    pub fn with_boosts(boosts: FieldBoosts) -> SparseBm25 {
        SparseBm25 {
            boosts,
            k1: BM25_K1,
            b: BM25_B,
            dims: SPARSE_DIMS.into(),
            idf: "query".into(),
        }
    }
}

/// A sparse vector: distinct dimensions in increasing order, and their values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    /// From `(dimension, value)` pairs in any order; values on the same dimension add up.
    fn from_pairs(mut pairs: Vec<(u32, f32)>) -> SparseVector {
        pairs.sort_by_key(|&(d, _)| d);
        let mut out = SparseVector::default();
        for (d, v) in pairs {
            if out.indices.last() == Some(&d) {
                if let Some(last) = out.values.last_mut() {
                    *last += v;
                }
            } else {
                out.indices.push(d);
                out.values.push(v);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::{Product, TaxonomyBuilder};

    fn product(id: &str, title: &str, brand: &str, description: &str, category: NodeId) -> Product {
        Product {
            id: id.into(),
            title: title.into(),
            description: description.into(),
            brand: brand.into(),
            price: None,
            attributes: vec![],
            category,
        }
    }

    /// A tiny catalog: games and accessories under a two-level taxonomy.
    fn fixture() -> (Catalog, Taxonomy) {
        let mut tb = TaxonomyBuilder::new();
        tb.add_path([("vg", "Video Games"), ("shooter", "Shooter")], None);
        tb.add_path([("vg", "Video Games"), ("racing", "Racing")], None);
        tb.add_path([("acc", "Accessories"), ("ctrl", "Controllers")], None);
        let tax = tb.build().expect("valid taxonomy");
        let n = |id: &str| tax.node(id).expect("node");
        let mut c = Catalog::new();
        let items = [
            product(
                "p0",
                "Gears of War 3",
                "Microsoft",
                "A third-person shooter with chainsaws.",
                n("shooter"),
            ),
            product(
                "p1",
                "Halo Reach",
                "Microsoft",
                "The prequel to Halo, a war story.",
                n("shooter"),
            ),
            product(
                "p2",
                "Forza Motorsport 4",
                "Microsoft",
                "Racing simulation with 500 cars.",
                n("racing"),
            ),
            product(
                "p3",
                "Need for Speed Hot Pursuit",
                "Electronic Arts",
                "Police chases and racing.",
                n("racing"),
            ),
            product(
                "p4",
                "Wireless Controller Black",
                "Microsoft",
                "Pad for the console.",
                n("ctrl"),
            ),
            product(
                "p5",
                "Charging Kit",
                "Nyko",
                "Keeps your Sony controller charged.",
                n("ctrl"),
            ),
            product(
                "p6",
                "Battery Pack",
                "Generic",
                "Works with Nyko and other chargers.",
                n("ctrl"),
            ),
        ];
        for p in items {
            c.push(p).expect("unique ids");
        }
        (c, tax)
    }

    fn build(boosts: &FieldBoosts) -> (Bm25Index, Catalog) {
        let (c, t) = fixture();
        let idx = Bm25Index::build(&c, &t, boosts).expect("index builds");
        (idx, c)
    }

    fn ids(hits: &[(ProductId, f32)], c: &Catalog) -> Vec<String> {
        hits.iter().map(|(p, _)| c.get(*p).id.clone()).collect()
    }

    #[test]
    fn exact_title_ranks_first() {
        let (idx, c) = build(&FieldBoosts::default());
        assert_eq!(idx.len(), 7);
        for (pid, p) in c.iter() {
            let hits = idx.search(&p.title, 3).expect("search");
            assert_eq!(
                hits[0].0,
                pid,
                "title {:?} -> {:?}",
                p.title,
                ids(&hits, &c)
            );
            assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by score");
        }
    }

    #[test]
    fn stemming_and_case_folding_match() {
        let (idx, c) = build(&FieldBoosts::default());
        let hits = idx.search("CONTROLLERS", 10).expect("search");
        assert!(ids(&hits, &c).contains(&"p4".to_string()));
        let hits = idx.search("Motórsport", 1).expect("search");
        assert_eq!(ids(&hits, &c), ["p2"]);
    }

    #[test]
    fn brand_match_outranks_description_match() {
        // "nyko" is p5's brand and appears in p6's description.
        let (idx, c) = build(&FieldBoosts::default());
        let hits = idx.search("nyko", 10).expect("search");
        assert_eq!(ids(&hits, &c), ["p5", "p6"]);

        // With the description weighted above the brand, the order flips.
        let flipped = FieldBoosts {
            brand: 0.1,
            description: 5.0,
            ..FieldBoosts::default()
        };
        let (idx, c) = build(&flipped);
        let hits = idx.search("nyko", 10).expect("search");
        assert_eq!(ids(&hits, &c), ["p6", "p5"]);

        // A zero boost removes the field.
        let no_brand = FieldBoosts {
            brand: 0.0,
            ..FieldBoosts::default()
        };
        let (idx, c) = build(&no_brand);
        let hits = idx.search("nyko", 10).expect("search");
        assert_eq!(ids(&hits, &c), ["p6"]);
    }

    /// The combined field alone finds what the separate fields find (title, brand, path
    /// names), but not the description, which it leaves out; no field at all is refused.
    #[test]
    fn the_combined_field_holds_title_brand_and_path() {
        let only = FieldBoosts {
            title: 0.0,
            brand: 0.0,
            taxonomy: 0.0,
            attributes: 0.0,
            description: 0.0,
            combined: 1.0,
        };
        let (idx, c) = build(&only);
        let mut got = ids(&idx.search("video games", 10).expect("search"), &c);
        got.sort();
        assert_eq!(got, ["p0", "p1", "p2", "p3"]);
        // "nyko" is p5's brand and in p6's description only.
        assert_eq!(ids(&idx.search("nyko", 10).expect("search"), &c), ["p5"]);
        let (c, t) = fixture();
        let none = FieldBoosts {
            combined: 0.0,
            ..only
        };
        let Err(err) = Bm25Index::build(&c, &t, &none) else {
            panic!("an index with no field was built");
        };
        assert!(err.to_string().contains("at least one field"), "{err}");
    }

    #[test]
    fn taxonomy_names_are_searchable() {
        let (idx, c) = build(&FieldBoosts::default());
        // "Racing" is in p2's description too, but "video games" only in the path names.
        let hits = idx.search("video games", 10).expect("search");
        let mut got = ids(&hits, &c);
        got.sort();
        assert_eq!(got, ["p0", "p1", "p2", "p3"]);
        let hits = idx.search("accessories", 10).expect("search");
        assert_eq!(hits.len(), 3);
    }

    #[test]
    fn attribute_values_are_searchable() {
        let (mut c, t) = fixture();
        let mut p = product("p7", "Headset", "Turtle Beach", "", NodeId(0));
        p.attributes = vec![("colour".into(), "crimson".into())];
        c.push(p).expect("unique");
        let idx = Bm25Index::build(&c, &t, &FieldBoosts::default()).expect("builds");
        let hits = idx.search("crimson", 10).expect("search");
        assert_eq!(ids(&hits, &c), ["p7"]);
        // The attribute name is not indexed.
        assert!(idx.search("colour", 10).expect("search").is_empty());
    }

    #[test]
    fn query_syntax_is_never_an_error() {
        let (idx, c) = build(&FieldBoosts::default());
        let nasty = [
            "\"gears of war",
            "title:halo",
            "(forza",
            "-racing",
            "halo*",
            "AND",
            "OR NOT AND",
            "halo AND",
            "[1 TO 5}",
            "^2 ~ \\ / : ! { }",
            "gears~2 OR \"",
            "*",
            "\u{0}\u{7f}\u{200b}",
            "ｈａｌｏ",
        ];
        for q in nasty {
            let hits = idx.search(q, 5).unwrap_or_else(|e| panic!("{q:?}: {e}"));
            assert!(hits.len() <= 5);
        }
        assert_eq!(ids(&idx.search("title:halo", 1).expect("ok"), &c), ["p1"]);
        assert_eq!(ids(&idx.search("(forza", 1).expect("ok"), &c), ["p2"]);
    }

    #[test]
    fn empty_and_degenerate_queries_return_nothing() {
        let (idx, _) = build(&FieldBoosts::default());
        assert!(idx.search("", 10).expect("ok").is_empty());
        assert!(idx.search("   \t ", 10).expect("ok").is_empty());
        assert!(idx.search("!!! ???", 10).expect("ok").is_empty());
        assert!(idx.search("halo", 0).expect("ok").is_empty());
        assert!(idx.search("zzzunknownzzz", 10).expect("ok").is_empty());
        // A k larger than the catalog is fine.
        assert_eq!(idx.search("microsoft", usize::MAX).expect("ok").len(), 4);
    }

    #[test]
    fn long_queries_are_capped() {
        let (idx, _) = build(&FieldBoosts::default());
        let long: String = (0..1000).map(|i| format!("w{i} ")).collect();
        assert_eq!(idx.query_terms(&long).len(), MAX_QUERY_TERMS);
        assert!(idx.search(&long, 10).expect("ok").is_empty());
    }

    #[test]
    fn ties_are_broken_by_product_id() {
        let mut tb = TaxonomyBuilder::new();
        tb.add_path([("a", "A")], None);
        let t = tb.build().expect("taxonomy");
        let mut c = Catalog::new();
        for i in 0..20 {
            c.push(product(&format!("p{i}"), "same title", "", "", NodeId(1)))
                .expect("unique");
        }
        let idx = Bm25Index::build(&c, &t, &FieldBoosts::default()).expect("builds");
        let hits = idx.search("same", 5).expect("ok");
        let got: Vec<u32> = hits.iter().map(|h| h.0 .0).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn search_many_matches_search() {
        let (idx, _) = build(&FieldBoosts::default());
        let qs = ["halo", "racing", "", "controller"];
        let many = idx.search_many(&qs, 3).expect("ok");
        for (q, got) in qs.iter().zip(&many) {
            assert_eq!(got, &idx.search(q, 3).expect("ok"));
        }
    }

    #[test]
    fn bad_boosts_and_foreign_categories_are_handled() {
        let (c, t) = fixture();
        let bad = FieldBoosts {
            title: f32::NAN,
            ..FieldBoosts::default()
        };
        assert!(Bm25Index::build(&c, &t, &bad).is_err());
        // A product filed under a node this taxonomy lacks is still indexed, without path names.
        let mut c2 = Catalog::new();
        c2.push(product("x", "orphan item", "", "", NodeId(999)))
            .expect("unique");
        let idx = Bm25Index::build(&c2, &t, &FieldBoosts::default()).expect("builds");
        assert_eq!(idx.search("orphan", 1).expect("ok").len(), 1);
    }

    #[test]
    fn boosts_round_trip_through_serde() {
        let b: FieldBoosts = serde_json::from_str(r#"{"title": 3.0}"#).expect("partial config");
        assert_eq!(b.title, 3.0);
        assert_eq!(b.brand, FieldBoosts::default().brand);
        let s = serde_json::to_string(&b).expect("serialises");
        assert_eq!(serde_json::from_str::<FieldBoosts>(&s).expect("parses"), b);
        assert!(serde_json::from_str::<FieldBoosts>(r#"{"titel": 1}"#).is_err());
    }

    /// BM25 scored as a plain sparse dot product ranks and scores as tantivy does.
    #[test]
    fn sparse_vectors_score_what_tantivy_scores() {
        let ds = aisle_core::synth::small_dataset(1500, 20, 200, 3).expect("world");
        let combined = FieldBoosts {
            combined: 1.0,
            title: 0.5,
            ..FieldBoosts::default()
        };
        for boosts in [FieldBoosts::default(), combined] {
            let idx = Bm25Index::build(&ds.catalog, &ds.taxonomy, &boosts).expect("index");
            let docs = idx.sparse_documents().expect("sparse");
            assert_eq!(docs.len(), ds.catalog.len());
            assert!(docs.iter().all(|d| !d.is_empty()
                && d.indices.windows(2).all(|w| w[0] < w[1])
                && d.values.iter().all(|v| v.is_finite() && *v > 0.0)));

            let titles: Vec<&str> = (0..40)
                .map(|i| ds.catalog.get(ProductId(i * 37)).title.as_str())
                .collect();
            let path = ds.taxonomy.name(ds.catalog.get(ProductId(5)).category);
            for q in titles
                .iter()
                .copied()
                .chain([path, "organic red", "zzz nothing"])
            {
                let query = idx.sparse_query(q).expect("query");
                let mut scored: Vec<(ProductId, f32)> = docs
                    .iter()
                    .enumerate()
                    .filter_map(|(p, d)| {
                        let mut s = 0.0;
                        for (&i, &qv) in query.indices.iter().zip(&query.values) {
                            if let Ok(j) = d.indices.binary_search(&i) {
                                s += qv * d.values[j];
                            }
                        }
                        (s > 0.0).then_some((ProductId(p as u32), s))
                    })
                    .collect();
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                scored.truncate(10);
                let want = idx.search(q, 10).expect("search");
                assert_eq!(scored.len(), want.len(), "{q}");
                for (i, (got, exp)) in scored.iter().zip(&want).enumerate() {
                    assert!(
                        (got.1 - exp.1).abs() <= 1e-4 * exp.1.max(1.0),
                        "{q} #{i}: {got:?} against tantivy's {exp:?}"
                    );
                    // Products may swap only where their scores tie.
                    if got.0 != exp.0 {
                        assert!((got.1 - exp.1).abs() <= 1e-4 * exp.1, "{q} #{i}");
                    }
                }
            }
        }
    }
}
