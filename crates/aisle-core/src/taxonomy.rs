//! The product taxonomy: a rooted tree of categories, built once and shared.
//!
//! Every node has an external id (the retailer's category id), a display name and a parent. A single
//! implicit root (depth 0, id [`ROOT_ID`]) sits above the retailer's top-level categories, so that a
//! forest of departments is still one tree and any two nodes have a lowest common ancestor.
//!
//! Queries are cheap: `parent`, `depth` and `children` are array lookups, `ancestors` and
//! `lca` walk at most `depth` parents, and `is_ancestor` is O(1) through pre-order intervals.

use std::collections::HashMap;
use std::fmt;

/// The external id of the implicit root.
pub const ROOT_ID: &str = "";

/// A node of a [`Taxonomy`], an index valid only for the taxonomy that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The index as `usize`.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

const NO_PARENT: u32 = u32::MAX;

/// A rooted category tree. See the module documentation.
#[derive(Clone, Debug)]
pub struct Taxonomy {
    ids: Vec<String>,
    names: Vec<String>,
    parent: Vec<u32>,
    depth: Vec<u16>,
    /// Children of node `i` are `child_list[child_start[i]..child_start[i + 1]]`.
    child_start: Vec<u32>,
    child_list: Vec<NodeId>,
    /// Pre-order number of each node and one past the last pre-order number of its subtree.
    pre: Vec<u32>,
    pre_end: Vec<u32>,
    by_id: HashMap<String, NodeId>,
}

/// What is wrong with a set of taxonomy nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxonomyError {
    /// Two nodes carry the same id.
    #[error("duplicate category id `{id}`{}", at(*.line, *.first_line, "first defined"))]
    DuplicateId {
        id: String,
        line: Option<u64>,
        first_line: Option<u64>,
    },
    /// A node names a parent that does not exist.
    #[error("category `{id}`{} names parent `{parent}`, which is not a category id", at(*.line, None, ""))]
    Orphan {
        id: String,
        parent: String,
        line: Option<u64>,
    },
    /// Following parents from a node comes back to it.
    #[error("category `{id}`{} is part of a parent cycle: {}", at(*.line, None, ""), .cycle.join(" -> "))]
    Cycle {
        id: String,
        cycle: Vec<String>,
        line: Option<u64>,
    },
    /// Two paths disagree about a node's parent.
    #[error("category `{id}`{} has parent `{parent}` here but `{other_parent}` in an earlier path", at(*.line, None, ""))]
    ConflictingParent {
        id: String,
        parent: String,
        other_parent: String,
        line: Option<u64>,
    },
    /// An id that is empty or reserved.
    #[error("category id must not be empty{}", at(*.line, None, ""))]
    EmptyId { line: Option<u64> },
    /// More nodes than a `u32` index holds.
    #[error("taxonomy has more than {} nodes", u32::MAX - 1)]
    TooLarge,
}

impl TaxonomyError {
    /// The source line the error refers to, when the node came from a file.
    pub fn line(&self) -> Option<u64> {
        match self {
            TaxonomyError::DuplicateId { line, .. }
            | TaxonomyError::Orphan { line, .. }
            | TaxonomyError::Cycle { line, .. }
            | TaxonomyError::ConflictingParent { line, .. }
            | TaxonomyError::EmptyId { line } => *line,
            TaxonomyError::TooLarge => None,
        }
    }

    /// A short stable reason, used to count skipped rows in lenient imports.
    pub fn reason(&self) -> &'static str {
        match self {
            TaxonomyError::DuplicateId { .. } => "duplicate category id",
            TaxonomyError::Orphan { .. } => "category with unknown parent",
            TaxonomyError::Cycle { .. } => "category in a parent cycle",
            TaxonomyError::ConflictingParent { .. } => "category with conflicting parents",
            TaxonomyError::EmptyId { .. } => "empty category id",
            TaxonomyError::TooLarge => "taxonomy too large",
        }
    }
}

fn at(line: Option<u64>, first: Option<u64>, first_label: &str) -> String {
    match (line, first) {
        (Some(l), Some(f)) => format!(" on line {l} ({first_label} on line {f})"),
        (Some(l), None) => format!(" on line {l}"),
        (None, Some(f)) => format!(" ({first_label} on line {f})"),
        (None, None) => String::new(),
    }
}

#[derive(Clone, Debug)]
struct PendingNode {
    id: String,
    name: String,
    parent: Option<String>,
    line: Option<u64>,
}

/// Collects nodes (by parent id or by root-to-leaf path) and validates them into a [`Taxonomy`].
#[derive(Clone, Debug, Default)]
pub struct TaxonomyBuilder {
    nodes: Vec<PendingNode>,
    index: HashMap<String, usize>,
    /// Errors found while adding (duplicates, conflicting paths); reported by `build`.
    errors: Vec<TaxonomyError>,
}

/// A taxonomy built leniently, with the nodes that had to be dropped.
#[derive(Debug)]
pub struct LenientTaxonomy {
    pub taxonomy: Taxonomy,
    /// Every problem found; the nodes they name (and their descendants) are not in the taxonomy.
    pub dropped: Vec<TaxonomyError>,
}

impl TaxonomyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes added so far (the root excluded).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether a node with this id was added.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Adds one node with its parent id (`None` or `Some("")` for a top-level category).
    /// A second node with the same id is an error, reported by [`build`](Self::build).
    pub fn add_node(&mut self, id: &str, name: &str, parent: Option<&str>, line: Option<u64>) {
        if id.is_empty() {
            self.errors.push(TaxonomyError::EmptyId { line });
            return;
        }
        let parent = parent.filter(|p| !p.is_empty()).map(str::to_owned);
        if let Some(&first) = self.index.get(id) {
            self.errors.push(TaxonomyError::DuplicateId {
                id: id.to_owned(),
                line,
                first_line: self.nodes[first].line,
            });
            return;
        }
        self.index.insert(id.to_owned(), self.nodes.len());
        self.nodes.push(PendingNode {
            id: id.to_owned(),
            name: name.to_owned(),
            parent,
            line,
        });
    }

    /// Adds a root-to-leaf path of `(id, name)` pairs. Nodes already present are shared; a path
    /// that gives an existing node another parent is an error. Returns the id of the last node.
    pub fn add_path<'a, I>(&mut self, path: I, line: Option<u64>) -> Option<String>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut parent: Option<String> = None;
        for (id, name) in path {
            if id.is_empty() {
                self.errors.push(TaxonomyError::EmptyId { line });
                return None;
            }
            match self.index.get(id) {
                Some(&i) => {
                    if self.nodes[i].parent != parent {
                        self.errors.push(TaxonomyError::ConflictingParent {
                            id: id.to_owned(),
                            parent: parent.clone().unwrap_or_default(),
                            other_parent: self.nodes[i].parent.clone().unwrap_or_default(),
                            line,
                        });
                        return None;
                    }
                }
                None => {
                    self.index.insert(id.to_owned(), self.nodes.len());
                    self.nodes.push(PendingNode {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        parent: parent.clone(),
                        line,
                    });
                }
            }
            parent = Some(id.to_owned());
        }
        parent
    }

    /// Validates and builds: the first problem found is returned as an error.
    pub fn build(self) -> Result<Taxonomy, TaxonomyError> {
        let lenient = self.build_lenient()?;
        match lenient.dropped.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(lenient.taxonomy),
        }
    }

    /// Validates and builds, dropping duplicate ids, orphans, cycles and everything below them.
    pub fn build_lenient(self) -> Result<LenientTaxonomy, TaxonomyError> {
        let TaxonomyBuilder {
            nodes,
            index,
            mut errors,
        } = self;
        if nodes.len() >= (u32::MAX - 1) as usize {
            return Err(TaxonomyError::TooLarge);
        }
        let n = nodes.len();
        // Parent of each pending node as a pending index; n stands for the root.
        let mut parent = vec![n; n];
        let mut ok = vec![true; n];
        for (i, node) in nodes.iter().enumerate() {
            if let Some(p) = &node.parent {
                match index.get(p.as_str()) {
                    Some(&pi) => parent[i] = pi,
                    None => {
                        ok[i] = false;
                        errors.push(TaxonomyError::Orphan {
                            id: node.id.clone(),
                            parent: p.clone(),
                            line: node.line,
                        });
                    }
                }
            }
        }
        // Cycle detection by colouring: 0 = unseen, 1 = on the current walk, 2 = done.
        let mut state = vec![0u8; n];
        let mut walk = Vec::new();
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            walk.clear();
            let mut cur = start;
            while cur != n && state[cur] == 0 {
                state[cur] = 1;
                walk.push(cur);
                cur = parent[cur];
            }
            if cur != n && state[cur] == 1 {
                let pos = walk.iter().position(|&w| w == cur).unwrap_or(0);
                let members = &walk[pos..];
                let mut cycle: Vec<String> = members.iter().map(|&m| nodes[m].id.clone()).collect();
                cycle.push(nodes[cur].id.clone());
                let first = members
                    .iter()
                    .copied()
                    .min_by_key(|&m| nodes[m].line.unwrap_or(u64::MAX))
                    .unwrap_or(cur);
                errors.push(TaxonomyError::Cycle {
                    id: nodes[first].id.clone(),
                    cycle,
                    line: nodes[first].line,
                });
                for &m in members {
                    ok[m] = false;
                    parent[m] = n;
                }
            }
            for &w in &walk {
                state[w] = 2;
            }
        }
        // Children lists (in insertion order), then a pre-order walk from the root; a node whose
        // ancestor was dropped is never reached and is dropped too.
        let mut kids: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        for i in 0..n {
            if ok[i] {
                kids[parent[i]].push(i);
            }
        }
        let mut order = Vec::with_capacity(n + 1); // pending indices in pre-order, root first
        let mut stack = vec![n];
        while let Some(v) = stack.pop() {
            order.push(v);
            for &c in kids[v].iter().rev() {
                stack.push(c);
            }
        }
        // New ids: root 0, others in insertion order, so NodeIds are stable and readable.
        let mut new_id = vec![NO_PARENT; n + 1];
        new_id[n] = 0;
        let mut reached = vec![false; n + 1];
        for &v in &order {
            reached[v] = true;
        }
        let mut next = 1u32;
        for i in 0..n {
            if reached[i] {
                new_id[i] = next;
                next += 1;
            }
        }
        let total = next as usize;
        let mut t = Taxonomy {
            ids: vec![String::new(); total],
            names: vec![String::new(); total],
            parent: vec![NO_PARENT; total],
            depth: vec![0; total],
            child_start: vec![0; total + 1],
            child_list: Vec::with_capacity(total.saturating_sub(1)),
            pre: vec![0; total],
            pre_end: vec![0; total],
            by_id: HashMap::with_capacity(total),
        };
        t.names[0] = "All".to_owned();
        for (i, node) in nodes.into_iter().enumerate() {
            if !reached[i] {
                continue;
            }
            let id = new_id[i] as usize;
            t.by_id.insert(node.id.clone(), NodeId(id as u32));
            t.ids[id] = node.id;
            t.names[id] = node.name;
            t.parent[id] = new_id[parent[i]];
        }
        // Children in the order they were added.
        let mut counts = vec![0u32; total];
        for id in 1..total {
            counts[t.parent[id] as usize] += 1;
        }
        let mut acc = 0u32;
        for (start, count) in t.child_start.iter_mut().zip(&counts) {
            *start = acc;
            acc += count;
        }
        t.child_start[total] = acc;
        let mut fill = t.child_start.clone();
        t.child_list = vec![NodeId(0); acc as usize];
        for id in 1..total {
            let p = t.parent[id] as usize;
            t.child_list[fill[p] as usize] = NodeId(id as u32);
            fill[p] += 1;
        }
        // Depth and pre-order intervals.
        let mut counter = 0u32;
        let mut stack: Vec<(u32, bool)> = vec![(0, false)];
        while let Some((v, leaving)) = stack.pop() {
            let vi = v as usize;
            if leaving {
                t.pre_end[vi] = counter;
                continue;
            }
            t.pre[vi] = counter;
            counter += 1;
            if vi != 0 {
                t.depth[vi] = t.depth[t.parent[vi] as usize] + 1;
            }
            stack.push((v, true));
            let (s, e) = (t.child_start[vi] as usize, t.child_start[vi + 1] as usize);
            for c in t.child_list[s..e].iter().rev() {
                stack.push((c.0, false));
            }
        }
        // Errors in source order, so the first one reported is the first in the file.
        errors.sort_by_key(|e| e.line().unwrap_or(u64::MAX));
        Ok(LenientTaxonomy {
            taxonomy: t,
            dropped: errors,
        })
    }
}

impl Taxonomy {
    /// The implicit root.
    #[inline]
    pub fn root(&self) -> NodeId {
        NodeId(0)
    }

    /// Number of nodes, the root included.
    #[inline]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the taxonomy has no node but the root.
    pub fn is_empty(&self) -> bool {
        self.ids.len() <= 1
    }

    /// All nodes, the root first.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = NodeId> + '_ {
        (0..self.ids.len() as u32).map(NodeId)
    }

    /// The node with this external id.
    pub fn node(&self, id: &str) -> Option<NodeId> {
        self.by_id.get(id).copied()
    }

    /// The external id of a node ([`ROOT_ID`] for the root).
    pub fn id(&self, n: NodeId) -> &str {
        &self.ids[n.index()]
    }

    /// The display name of a node.
    pub fn name(&self, n: NodeId) -> &str {
        &self.names[n.index()]
    }

    /// The parent, `None` for the root.
    #[inline]
    pub fn parent(&self, n: NodeId) -> Option<NodeId> {
        match self.parent[n.index()] {
            NO_PARENT => None,
            p => Some(NodeId(p)),
        }
    }

    /// Depth: 0 for the root, 1 for a top-level category.
    #[inline]
    pub fn depth(&self, n: NodeId) -> usize {
        self.depth[n.index()] as usize
    }

    /// The greatest depth of any node.
    pub fn max_depth(&self) -> usize {
        self.depth.iter().copied().max().unwrap_or(0) as usize
    }

    /// Children in the order they were added.
    #[inline]
    pub fn children(&self, n: NodeId) -> &[NodeId] {
        let i = n.index();
        &self.child_list[self.child_start[i] as usize..self.child_start[i + 1] as usize]
    }

    /// True when the node has no children (the root of an empty taxonomy is a leaf).
    #[inline]
    pub fn is_leaf(&self, n: NodeId) -> bool {
        self.children(n).is_empty()
    }

    /// All leaves, in pre-order.
    pub fn leaves(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.nodes().filter(|&n| self.is_leaf(n)).collect();
        v.sort_by_key(|n| self.pre[n.index()]);
        v
    }

    /// The other children of this node's parent (empty for the root).
    pub fn siblings(&self, n: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let kids = match self.parent(n) {
            Some(p) => self.children(p),
            None => &[],
        };
        kids.iter().copied().filter(move |&c| c != n)
    }

    /// Proper ancestors from the parent up to the root (the root included).
    pub fn ancestors(&self, n: NodeId) -> Ancestors<'_> {
        Ancestors {
            taxonomy: self,
            next: self.parent(n),
        }
    }

    /// The ancestor at `depth` (the node itself when `depth` equals its depth).
    pub fn ancestor_at_depth(&self, mut n: NodeId, depth: usize) -> Option<NodeId> {
        if depth > self.depth(n) {
            return None;
        }
        while self.depth(n) > depth {
            n = self.parent(n)?;
        }
        Some(n)
    }

    /// The nodes from the top-level category down to `n` (the root excluded).
    pub fn path(&self, n: NodeId) -> Vec<NodeId> {
        let mut p: Vec<NodeId> = std::iter::once(n)
            .chain(self.ancestors(n))
            .filter(|&a| a != self.root())
            .collect();
        p.reverse();
        p
    }

    /// The names from the top-level category down to `n`, joined by " > ".
    pub fn path_string(&self, n: NodeId) -> String {
        self.path(n)
            .into_iter()
            .map(|a| self.name(a))
            .collect::<Vec<_>>()
            .join(" > ")
    }

    /// True when `a` is `b` or an ancestor of `b`. O(1).
    #[inline]
    pub fn is_ancestor_or_self(&self, a: NodeId, b: NodeId) -> bool {
        let (pa, pb) = (self.pre[a.index()], self.pre[b.index()]);
        pa <= pb && pb < self.pre_end[a.index()]
    }

    /// Lowest common ancestor, in O(depth).
    pub fn lca(&self, mut a: NodeId, mut b: NodeId) -> NodeId {
        while self.depth(a) > self.depth(b) {
            a = NodeId(self.parent[a.index()]);
        }
        while self.depth(b) > self.depth(a) {
            b = NodeId(self.parent[b.index()]);
        }
        while a != b {
            a = NodeId(self.parent[a.index()]);
            b = NodeId(self.parent[b.index()]);
        }
        a
    }

    /// Number of edges on the tree path between two nodes.
    pub fn distance(&self, a: NodeId, b: NodeId) -> usize {
        let l = self.lca(a, b);
        self.depth(a) + self.depth(b) - 2 * self.depth(l)
    }

    /// Number of nodes in the subtree of `n`, `n` included.
    pub fn subtree_size(&self, n: NodeId) -> usize {
        (self.pre_end[n.index()] - self.pre[n.index()]) as usize
    }

    /// Pre-order rank of a node; the subtree of `n` is the rank range `pre_range(n)`.
    pub fn pre_range(&self, n: NodeId) -> std::ops::Range<u32> {
        self.pre[n.index()]..self.pre_end[n.index()]
    }
}

/// Iterator over proper ancestors, nearest first.
pub struct Ancestors<'a> {
    taxonomy: &'a Taxonomy,
    next: Option<NodeId>,
}

impl Iterator for Ancestors<'_> {
    type Item = NodeId;
    fn next(&mut self) -> Option<NodeId> {
        let cur = self.next?;
        self.next = self.taxonomy.parent(cur);
        Some(cur)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// electronics > tv > {oled, qled}; electronics > audio > headphones; grocery > dairy
    fn shop() -> Taxonomy {
        let mut b = TaxonomyBuilder::new();
        b.add_node("el", "Electronics", None, Some(2));
        b.add_node("tv", "TV", Some("el"), Some(3));
        b.add_node("oled", "OLED", Some("tv"), Some(4));
        b.add_node("qled", "QLED", Some("tv"), Some(5));
        b.add_node("au", "Audio", Some("el"), Some(6));
        b.add_node("hp", "Headphones", Some("au"), Some(7));
        b.add_node("gr", "Grocery", Some(""), Some(8));
        b.add_node("da", "Dairy", Some("gr"), Some(9));
        b.build().expect("valid tree")
    }

    fn n(t: &Taxonomy, id: &str) -> NodeId {
        t.node(id).expect("node exists")
    }

    #[test]
    fn structure_queries() {
        let t = shop();
        assert_eq!(t.len(), 9);
        assert_eq!(t.depth(t.root()), 0);
        assert_eq!(t.depth(n(&t, "el")), 1);
        assert_eq!(t.depth(n(&t, "oled")), 3);
        assert_eq!(t.max_depth(), 3);
        assert_eq!(t.parent(n(&t, "oled")), Some(n(&t, "tv")));
        assert_eq!(t.parent(t.root()), None);
        assert_eq!(t.parent(n(&t, "gr")), Some(t.root()));
        assert_eq!(t.children(n(&t, "tv")), &[n(&t, "oled"), n(&t, "qled")]);
        assert_eq!(t.children(t.root()), &[n(&t, "el"), n(&t, "gr")]);
        let sib: Vec<_> = t.siblings(n(&t, "oled")).collect();
        assert_eq!(sib, vec![n(&t, "qled")]);
        let sib: Vec<_> = t.siblings(n(&t, "el")).collect();
        assert_eq!(sib, vec![n(&t, "gr")]);
        assert_eq!(t.siblings(t.root()).count(), 0);
        let anc: Vec<_> = t.ancestors(n(&t, "qled")).collect();
        assert_eq!(anc, vec![n(&t, "tv"), n(&t, "el"), t.root()]);
        assert_eq!(t.path_string(n(&t, "qled")), "Electronics > TV > QLED");
        assert!(t.is_leaf(n(&t, "hp")) && !t.is_leaf(n(&t, "au")));
        let leaves: Vec<&str> = t.leaves().into_iter().map(|l| t.id(l)).collect();
        assert_eq!(leaves, vec!["oled", "qled", "hp", "da"]);
        assert_eq!(t.ancestor_at_depth(n(&t, "qled"), 1), Some(n(&t, "el")));
        assert_eq!(t.ancestor_at_depth(n(&t, "el"), 2), None);
        assert_eq!(t.subtree_size(n(&t, "el")), 6);
    }

    #[test]
    fn lca_and_distance() {
        let t = shop();
        let (o, q, h, d) = (n(&t, "oled"), n(&t, "qled"), n(&t, "hp"), n(&t, "da"));
        assert_eq!(t.lca(o, q), n(&t, "tv"));
        assert_eq!(t.distance(o, q), 2);
        assert_eq!(t.lca(o, h), n(&t, "el"));
        assert_eq!(t.distance(o, h), 4);
        assert_eq!(t.lca(o, d), t.root());
        assert_eq!(t.distance(o, d), 5);
        assert_eq!(t.lca(o, o), o);
        assert_eq!(t.distance(o, o), 0);
        assert_eq!(t.lca(n(&t, "tv"), o), n(&t, "tv"));
        assert_eq!(t.distance(n(&t, "tv"), o), 1);
        assert!(t.is_ancestor_or_self(n(&t, "el"), q));
        assert!(t.is_ancestor_or_self(q, q));
        assert!(!t.is_ancestor_or_self(q, n(&t, "el")));
        assert!(!t.is_ancestor_or_self(n(&t, "gr"), q));
        assert!(t.is_ancestor_or_self(t.root(), d));
    }

    #[test]
    fn flipkart_depth_seven_path() {
        let names = [
            "clothing",
            "women's clothing",
            "lingerie, sleep & swimwear",
            "bras",
            "alisha bras",
            "alisha solid women's",
            "alisha solid women's full coverage bra",
        ];
        let mut b = TaxonomyBuilder::new();
        let ids: Vec<String> = (0..names.len()).map(|i| names[..=i].join(">")).collect();
        let last = b.add_path(ids.iter().map(String::as_str).zip(names), Some(1));
        // A sibling branch that leaves the path below "bras" (depth 4).
        let mut other: Vec<String> = ids[..4].to_vec();
        other.push(format!("{}>x", ids[3]));
        let onames = [
            "clothing",
            "women's clothing",
            "lingerie, sleep & swimwear",
            "bras",
            "x",
        ];
        b.add_path(other.iter().map(String::as_str).zip(onames), Some(2));
        let t = b.build().expect("valid");
        let leaf = t.node(&last.expect("path added")).expect("leaf");
        assert_eq!(t.depth(leaf), 7);
        assert_eq!(t.path(leaf).len(), 7);
        assert_eq!(t.ancestors(leaf).count(), 7);
        let x = t.node(&other[4]).expect("x");
        assert_eq!(t.depth(x), 5);
        assert_eq!(t.name(t.lca(leaf, x)), "bras");
        assert_eq!(t.distance(leaf, x), 3 + 1);
        assert_eq!(t.len(), 1 + 7 + 1);
        assert_eq!(t.max_depth(), 7);
    }

    #[test]
    fn rejects_duplicate_ids() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("a", "A", None, Some(2));
        b.add_node("a", "A again", None, Some(5));
        let err = b.build().expect_err("duplicate");
        assert_eq!(
            err,
            TaxonomyError::DuplicateId {
                id: "a".into(),
                line: Some(5),
                first_line: Some(2)
            }
        );
        assert!(err.to_string().contains("line 5"), "{err}");
    }

    #[test]
    fn rejects_orphans() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("a", "A", None, Some(2));
        b.add_node("b", "B", Some("zz"), Some(3));
        let err = b.build().expect_err("orphan");
        assert!(
            matches!(err, TaxonomyError::Orphan { ref id, ref parent, line: Some(3) } if id == "b" && parent == "zz")
        );
    }

    #[test]
    fn rejects_cycles_and_lenient_drops_them() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("ok", "Ok", None, Some(2));
        b.add_node("a", "A", Some("c"), Some(3));
        b.add_node("b", "B", Some("a"), Some(4));
        b.add_node("c", "C", Some("b"), Some(5));
        b.add_node("below", "Below", Some("a"), Some(6));
        let err = b.clone().build().expect_err("cycle");
        match &err {
            TaxonomyError::Cycle { cycle, line, .. } => {
                assert_eq!(*line, Some(3));
                assert_eq!(cycle.len(), 4, "{cycle:?}");
            }
            other => panic!("expected a cycle, got {other}"),
        }
        assert!(err.to_string().contains("->"));
        let l = b.build_lenient().expect("lenient");
        assert_eq!(l.dropped.len(), 1);
        assert_eq!(
            l.taxonomy.len(),
            2,
            "root and `ok`; the cycle and its subtree are gone"
        );
        assert!(l.taxonomy.node("below").is_none());
    }

    #[test]
    fn self_parent_is_a_cycle() {
        let mut b = TaxonomyBuilder::new();
        b.add_node("a", "A", Some("a"), Some(2));
        assert!(matches!(b.build(), Err(TaxonomyError::Cycle { .. })));
    }

    #[test]
    fn conflicting_paths_are_rejected() {
        let mut b = TaxonomyBuilder::new();
        b.add_path([("a", "A"), ("b", "B")], Some(1));
        b.add_path([("c", "C"), ("b", "B")], Some(2));
        assert!(matches!(
            b.build(),
            Err(TaxonomyError::ConflictingParent { line: Some(2), .. })
        ));
    }

    #[test]
    fn empty_taxonomy_is_just_the_root() {
        let t = TaxonomyBuilder::new().build().expect("empty is valid");
        assert_eq!(t.len(), 1);
        assert!(t.is_empty());
        assert_eq!(t.leaves(), vec![t.root()]);
        assert_eq!(t.lca(t.root(), t.root()), t.root());
    }
}
