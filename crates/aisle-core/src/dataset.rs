//! A dataset: catalog, taxonomy, users, queries, interactions, judgments and named splits.

use std::sync::Arc;

use crate::error::ImportReport;
use crate::model::{Catalog, Interaction, Judgment, ProductId, Queries, Users};
use crate::split::Split;
use crate::taxonomy::Taxonomy;

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
