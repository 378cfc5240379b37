//! What the aisle-core fuzz targets feed the library; the targets in `fuzz/fuzz_targets/` and
//! `crates/aisle-core/tests/fuzz_corpus.rs` (which replays the corpora) both call these.
#![allow(dead_code)]

use aisle_core::adapters::{flipkart, pylit};
use aisle_core::io::generic::{load_bytes, TABLES};
use aisle_core::{Strictness, TaxonomyBuilder};

/// Separates the tables of one input: taxonomy, products, users, interactions, judgments.
pub const TABLE_SEPARATOR: &[u8] = b"\n%%\n";

/// One dataset in the generic format: the input's sections (split at [`TABLE_SEPARATOR`]) are
/// its tables in [`TABLES`] order, as `.EXT` files; loaded strictly and leniently.
fn import(data: &[u8], ext: &str) {
    let mut sections = Vec::new();
    let mut rest = data;
    while sections.len() + 1 < TABLES.len() {
        match rest
            .windows(TABLE_SEPARATOR.len())
            .position(|w| w == TABLE_SEPARATOR)
        {
            Some(at) => {
                sections.push(&rest[..at]);
                rest = &rest[at + TABLE_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    sections.push(rest);
    let names: Vec<String> = TABLES.iter().map(|t| format!("{t}.{ext}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(String::as_str).zip(sections).collect();
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let _ = load_bytes("fuzz", &files, strictness);
    }
}

pub fn import_csv(data: &[u8]) {
    import(data, "csv");
}

pub fn import_jsonl(data: &[u8]) {
    import(data, "jsonl");
}

/// A Flipkart `product_category_tree` or `product_specifications` literal.
pub fn flipkart_literal(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pylit::parse(text);
    let _ = flipkart::parse_tree(text);
}

/// A taxonomy built from the input's lines: `>a>b>c` adds the path a, b, c (each its own id and
/// name); any other line is `id,parent,name` for one node. Built strictly and leniently, then
/// every node is walked.
pub fn taxonomy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut b = TaxonomyBuilder::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = Some(i as u64 + 1);
        if let Some(path) = line.strip_prefix('>') {
            b.add_path(path.split('>').map(|s| (s, s)), line_no);
        } else {
            let mut f = line.splitn(3, ',');
            let id = f.next().unwrap_or("");
            let parent = f.next();
            let name = f.next().unwrap_or(id);
            b.add_node(id, name, parent, line_no);
        }
    }
    let _ = b.clone().build();
    let Ok(lenient) = b.build_lenient() else {
        return;
    };
    let t = &lenient.taxonomy;
    let leaves = t.leaves();
    let far = leaves.last().copied().unwrap_or(t.root());
    for n in t.nodes() {
        let _ = (
            t.depth(n),
            t.path_string(n),
            t.subtree_size(n),
            t.pre_range(n),
        );
        let _ = (
            t.lca(n, far),
            t.distance(n, far),
            t.is_ancestor_or_self(n, far),
        );
        let _ = t.ancestors(n).count() + t.siblings(n).count() + t.children(n).len();
        let _ = t.ancestor_at_depth(n, 1);
        if n != t.root() {
            assert_eq!(t.node(t.id(n)), Some(n), "ids round-trip");
        }
    }
    let _ = t.max_depth();
}
