//! A dataset: catalog, taxonomy, users, queries, interactions, judgments and named splits.

use std::sync::Arc;

use crate::error::{Error, ImportReport, Result};
use crate::model::{Catalog, Interaction, Judgment, ProductId, Queries, QueryId, Users};
use crate::split::types::Split;
use crate::taxonomy::{NodeId, Taxonomy};

/// Length-prefixed fields into a CRC-32, so that `("ab", "c")` and `("a", "bc")` differ.
struct Digest(crc32fast::Hasher);

impl Digest {
    fn num(&mut self, x: u64) {
        self.0.update(&x.to_le_bytes());
    }

    fn text(&mut self, s: &str) {
        self.num(s.len() as u64);
        self.0.update(s.as_bytes());
    }
}

/// Everything aisle knows about one retailer, with its evaluation splits.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// A short name (`bestbuy_xbox`, `instacart`, a folder name, ...).
    pub name: String,
    /// Shared: samplers, metrics and the searcher hold clones of this `Arc`.
    pub taxonomy: Arc<Taxonomy>,
    pub catalog: Catalog,
    pub users: Users,
    pub queries: Queries,
    /// Events in the order they were read.
    pub interactions: Vec<Interaction>,
    pub judgments: Vec<Judgment>,
    /// Named splits; the first is the default protocol of the dataset.
    pub splits: Vec<Split>,
    /// What the import skipped or repaired.
    pub report: ImportReport,
    /// Facts about this dataset that every figure computed on it should carry (e.g. that its
    /// queries were built from the taxonomy).
    pub notes: Vec<String>,
    /// Where queries are built from the taxonomy (`leave_last_order_out`), each category's query
    /// text by node index: its name, made unique where names repeat. Empty otherwise.
    pub category_queries: Vec<Option<QueryId>>,
}

impl Dataset {
    /// An empty dataset over a taxonomy.
    pub fn new(name: impl Into<String>, taxonomy: Taxonomy) -> Self {
        Dataset {
            name: name.into(),
            taxonomy: Arc::new(taxonomy),
            catalog: Catalog::new(),
            users: Users::new(),
            queries: Queries::new(),
            interactions: Vec::new(),
            judgments: Vec::new(),
            splits: Vec::new(),
            report: ImportReport::new(),
            notes: Vec::new(),
            category_queries: Vec::new(),
        }
    }

    /// The query text that stands for `category` where queries are built from the taxonomy:
    /// the text `leave_last_order_out` gave it, else its name.
    pub fn category_query_text(&self, category: NodeId) -> &str {
        match self
            .category_queries
            .get(category.index())
            .copied()
            .flatten()
        {
            Some(q) => self.queries.text(q),
            None => self.taxonomy.name(category),
        }
    }

    /// The split with this name.
    pub fn split(&self, name: &str) -> Option<&Split> {
        self.splits.iter().find(|s| s.name == name)
    }

    /// The default split (the first), if the dataset has interactions to split.
    pub fn default_split(&self) -> Option<&Split> {
        self.splits.first()
    }

    /// The split named `name`, or the default split when `name` is `None`. The error for a
    /// missing name lists the splits the dataset has.
    pub fn split_named(&self, name: Option<&str>) -> Result<&Split> {
        match name {
            Some(n) => self.split(n).ok_or_else(|| Error::UnknownSplit {
                dataset: self.name.clone(),
                name: n.to_owned(),
                available: self.splits.iter().map(|s| s.name.clone()).collect(),
            }),
            None => self.default_split().ok_or_else(|| Error::NoSplits {
                dataset: self.name.clone(),
            }),
        }
    }

    /// Adds or replaces a split by name.
    pub fn set_split(&mut self, split: Split) {
        match self.splits.iter_mut().find(|s| s.name == split.name) {
            Some(s) => *s = split,
            None => self.splits.push(split),
        }
    }

    /// Products filed under each taxonomy node (directly), indexed by node.
    pub fn products_by_node(&self) -> Vec<Vec<ProductId>> {
        let mut v = vec![Vec::new(); self.taxonomy.len()];
        for (id, p) in self.catalog.iter() {
            v[p.category.index()].push(id);
        }
        v
    }

    /// A digest of the data a model learns from: taxonomy, catalog, users, queries,
    /// interactions and judgments (not the name, the splits or the import report, which
    /// follow from the data and the options). Eight hex digits of a CRC-32 over every field,
    /// each length-prefixed; the same files imported again give the same digest, and any
    /// changed product, event or category gives another. `aisle train` records it in the model
    /// file, and `serve`, `eval` and `index` refuse a model whose digest is not the dataset's.
    pub fn digest(&self) -> String {
        let mut h = Digest(crc32fast::Hasher::new());
        let t = &self.taxonomy;
        h.num(t.len() as u64);
        for n in t.nodes() {
            h.text(t.id(n));
            h.text(t.name(n));
            h.num(t.parent(n).map_or(u64::MAX, |p| p.0 as u64));
        }
        h.num(self.catalog.len() as u64);
        for (_, p) in self.catalog.iter() {
            h.text(&p.id);
            h.text(&p.title);
            h.text(&p.description);
            h.text(&p.brand);
            h.num(p.price.map_or(u64::MAX, |x| x.to_bits() as u64));
            h.num(p.attributes.len() as u64);
            for (k, v) in &p.attributes {
                h.text(k);
                h.text(v);
            }
            h.num(p.category.0 as u64);
        }
        h.num(self.users.len() as u64);
        for (_, u) in self.users.iter() {
            h.text(&u.id);
            h.text(u.segment.as_deref().unwrap_or("\u{0}"));
            h.num(u.demographics.len() as u64);
            for (k, v) in &u.demographics {
                h.text(k);
                h.text(v);
            }
        }
        h.num(self.queries.len() as u64);
        for (_, q) in self.queries.iter() {
            h.text(q);
        }
        h.num(self.interactions.len() as u64);
        for e in &self.interactions {
            h.num(e.user.0 as u64);
            h.num(e.product.0 as u64);
            h.text(e.kind.as_str());
            h.num(e.time as u64);
            h.num(e.session.unwrap_or(u64::MAX));
            h.num(e.query.map_or(u64::MAX, |q| q.0 as u64));
            h.num(e.price.map_or(u64::MAX, |x| x.to_bits() as u64));
        }
        h.num(self.judgments.len() as u64);
        for j in &self.judgments {
            h.num(j.query.0 as u64);
            h.num(j.product.0 as u64);
            h.num(j.relevance as u64);
        }
        format!("{:08x}", h.0.finalize())
    }

    /// Interaction indices of each user, in time order (stable for equal times).
    pub fn user_histories(&self) -> Vec<Vec<u32>> {
        let mut v: Vec<Vec<u32>> = vec![Vec::new(); self.users.len()];
        for (i, e) in self.interactions.iter().enumerate() {
            v[e.user.index()].push(i as u32);
        }
        for h in &mut v {
            h.sort_by_key(|&i| self.interactions[i as usize].time);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxonomy::TaxonomyBuilder;

    fn split(name: &str) -> Split {
        Split {
            name: name.to_owned(),
            description: String::new(),
            seed: 0,
            train: Vec::new(),
            validation: Vec::new(),
            test: Vec::new(),
            cold_start: Vec::new(),
        }
    }

    #[test]
    fn split_named_finds_a_split_or_lists_the_ones_there_are() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("food", "Food", None, None);
        let mut ds = Dataset::new("shop", b.build().expect("tree"));
        let err = ds.split_named(None).expect_err("no splits yet");
        assert_eq!(
            err.to_string(),
            "dataset `shop` has no interactions to train on"
        );
        ds.set_split(split("temporal"));
        ds.set_split(split("random"));
        assert_eq!(ds.split_named(None).expect("default").name, "temporal");
        assert_eq!(
            ds.split_named(Some("random")).expect("named").name,
            "random"
        );
        let err = ds.split_named(Some("cold")).expect_err("no such split");
        assert_eq!(
            err.to_string(),
            "dataset `shop` has no split `cold` (it has: temporal, random)"
        );
        assert!(matches!(err, Error::UnknownSplit { available, .. } if available.len() == 2));
    }
}
