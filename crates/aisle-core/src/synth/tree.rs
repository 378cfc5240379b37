//! The shop's category trees: the built-in hand-written retail tree (its lines in `tree.txt`),
//! and the Best Buy tree read from `categories.json`; and for every leaf its product type (title noun, query nouns) and the
//! vocabulary family its products draw on.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::taxonomy::{NodeId, Taxonomy, TaxonomyBuilder};

use super::vocab::{FAMILIES, KEYWORD_FAMILIES};

/// The built-in tree, read from `tree.txt` (compiled in), two spaces of indentation per level. A
/// line is `Name`, optionally followed by `= Title Noun`, `| query noun` and `; family`. A line
/// with deeper lines below it is a category; the others are leaves. A leaf without `= ...` takes
/// its singularised name as its noun; a leaf without `| ...` is searched broadly by the last word
/// of its noun when a sibling shares that word ("OLED TV", "QLED TV" -> "tv"), else by its whole
/// noun. The family is inherited from the nearest line that names one. The clothing department
/// (last) has the same sections for women and men with their own leaves, and kids' clothing one
/// level deeper.
const BUILT_IN: &str = include_str!("tree.txt");

/// A leaf of the shop with what its products are called and which vocabulary they use.
#[derive(Clone, Debug)]
pub(crate) struct LeafSpec {
    pub node: NodeId,
    pub family: usize,
    /// Title noun, e.g. "QLED TV".
    pub noun: String,
    /// Lowercase specific query noun, e.g. "qled tv".
    pub query_noun: String,
    /// Lowercase broad query noun, e.g. "tv" (may equal `query_noun`).
    pub broad_noun: String,
}

/// A tree with its leaves described.
pub(crate) struct Shop {
    pub taxonomy: Taxonomy,
    /// Leaves in pre-order (the order of `Taxonomy::leaves`).
    pub leaves: Vec<LeafSpec>,
    /// Leaves that get no products (Best Buy's non-product pages).
    pub barren: Vec<bool>,
}

fn family_index(key: &str) -> Option<usize> {
    FAMILIES.iter().position(|f| f.key == key)
}

/// "OLED TVs" -> "OLED TV", "Batteries" -> "Battery", "Boxes" -> "Box", "Mice" -> "Mouse".
pub(crate) fn singular(name: &str) -> String {
    let name = name.trim();
    let (head, last) = match name.rfind(' ') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let lower = last.to_lowercase();
    const KEEP: &[&str] = &[
        "jeans",
        "shorts",
        "pants",
        "leggings",
        "headphones",
        "earbuds",
        "glasses",
        "sunglasses",
        "scissors",
        "chips",
        "supplies",
        "accessories",
        "electronics",
        "series",
        "news",
        "games",
        "sports",
        "goods",
        "plus",
        "gps",
        "sos",
        "pc",
        "us",
        "lens",
    ];
    let stem = if lower == "mice" {
        Some("Mouse".to_owned())
    } else if KEEP.contains(&lower.as_str())
        || !last.chars().all(|c| c.is_alphanumeric() || c == '-')
    {
        None
    } else if lower.ends_with("ies") && lower.len() > 4 {
        Some(format!("{}y", &last[..last.len() - 3]))
    } else if lower.ends_with("knives") {
        Some(format!("{}fe", &last[..last.len() - 3]))
    } else if ["sses", "shes", "ches", "xes", "zes"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        Some(last[..last.len() - 2].to_owned())
    } else if lower.ends_with('s')
        && !lower.ends_with("ss")
        && !lower.ends_with("us")
        && !lower.ends_with("is")
        && (lower.len() > 3 || is_acronym(&last[..last.len() - 1]))
    {
        Some(last[..last.len() - 1].to_owned())
    } else {
        None
    };
    match stem {
        Some(s) => format!("{head}{s}"),
        None => name.to_owned(),
    }
}

/// "TV", "PC": the plural of an acronym is its letters plus a lower-case s ("TVs").
fn is_acronym(stem: &str) -> bool {
    stem.len() >= 2 && stem.chars().all(|c| c.is_ascii_uppercase())
}

struct Line<'a> {
    depth: usize,
    name: &'a str,
    noun: Option<&'a str>,
    query: Option<&'a str>,
    family: Option<&'a str>,
}

fn parse_line(raw: &str, line_no: usize) -> Result<Line<'_>> {
    let indent = raw.len() - raw.trim_start_matches(' ').len();
    let bad =
        |why: &str| Error::Config(format!("built-in taxonomy line {line_no}: {why}: {raw:?}"));
    if !indent.is_multiple_of(2) {
        return Err(bad("indentation is not a multiple of two spaces"));
    }
    let mut rest = raw.trim();
    let mut family = None;
    if let Some((a, b)) = rest.split_once(" ; ") {
        rest = a.trim();
        family = Some(b.trim());
    }
    let mut query = None;
    if let Some((a, b)) = rest.split_once(" | ") {
        rest = a.trim();
        query = Some(b.trim());
    }
    let mut noun = None;
    if let Some((a, b)) = rest.split_once(" = ") {
        rest = a.trim();
        noun = Some(b.trim());
    }
    if rest.is_empty() {
        return Err(bad("empty name"));
    }
    Ok(Line {
        depth: indent / 2 + 1,
        name: rest,
        noun,
        query,
        family,
    })
}

/// The built-in tree: departments, categories and leaves with ids `c0001`, `c0002`, ...
pub(crate) fn built_in() -> Result<Shop> {
    let lines: Vec<Line> = BUILT_IN
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l, i + 1))
        .collect::<Result<_>>()?;
    let mut b = TaxonomyBuilder::new();
    // Stack of (depth, id, family) of the open categories.
    let mut stack: Vec<(usize, String, Option<usize>)> = Vec::new();
    // (id, family, noun, query) of each leaf.
    let mut leaf_info: HashMap<String, (usize, String, Option<String>)> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        while stack.last().is_some_and(|(d, _, _)| *d >= line.depth) {
            stack.pop();
        }
        if line.depth != stack.len() + 1 {
            return Err(Error::Config(format!(
                "built-in taxonomy: `{}` is indented {} levels under a category at level {}",
                line.name,
                line.depth,
                stack.len()
            )));
        }
        let id = format!("c{:04}", i + 1);
        let parent = stack.last().map(|(_, p, _)| p.as_str());
        b.add_node(&id, line.name, parent, Some(i as u64 + 1));
        let family = match line.family {
            Some(k) => Some(family_index(k).ok_or_else(|| {
                Error::Config(format!(
                    "built-in taxonomy: unknown family `{k}` at `{}`",
                    line.name
                ))
            })?),
            None => stack.last().and_then(|(_, _, f)| *f),
        };
        let is_leaf = lines.get(i + 1).is_none_or(|next| next.depth <= line.depth);
        if is_leaf {
            let family = family.ok_or_else(|| {
                Error::Config(format!(
                    "built-in taxonomy: leaf `{}` has no family",
                    line.name
                ))
            })?;
            let noun = line
                .noun
                .map(str::to_owned)
                .unwrap_or_else(|| singular(line.name));
            leaf_info.insert(
                id.clone(),
                (family, noun, line.query.map(str::to_lowercase)),
            );
        }
        stack.push((line.depth, id, family));
    }
    let taxonomy = b.build().map_err(|source| Error::Taxonomy {
        file: "<built-in taxonomy>".into(),
        error: source.into(),
    })?;
    let leaves: Vec<LeafSpec> = taxonomy
        .leaves()
        .into_iter()
        .map(|n| {
            let (family, noun, query) = leaf_info.get(taxonomy.id(n)).cloned().unwrap_or((
                0,
                singular(taxonomy.name(n)),
                None,
            ));
            (n, family, noun, query)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(n, family, noun, query)| LeafSpec {
            node: n,
            family,
            query_noun: noun.to_lowercase(),
            broad_noun: query.unwrap_or_default(),
            noun,
        })
        .collect();
    let barren = vec![false; leaves.len()];
    let mut shop = Shop {
        taxonomy,
        leaves,
        barren,
    };
    default_broad_nouns(&mut shop);
    Ok(shop)
}

/// Leaves with no explicit broad noun: the last word of the noun when a sibling leaf shares it,
/// else the whole noun.
fn default_broad_nouns(shop: &mut Shop) {
    let t = &shop.taxonomy;
    let last_word = |s: &str| s.rsplit(' ').next().unwrap_or(s).to_owned();
    let mut by_parent: HashMap<(Option<NodeId>, String), usize> = HashMap::new();
    for l in &shop.leaves {
        *by_parent
            .entry((t.parent(l.node), last_word(&l.query_noun)))
            .or_default() += 1;
    }
    for l in &mut shop.leaves {
        if l.broad_noun.is_empty() {
            let w = last_word(&l.query_noun);
            let shared = by_parent
                .get(&(t.parent(l.node), w.clone()))
                .copied()
                .unwrap_or(0)
                > 1;
            l.broad_noun = if shared && w.chars().count() > 1 {
                w
            } else {
                l.query_noun.clone()
            };
        }
    }
}

/// The family of a Best Buy leaf from keywords of its own name, then of its ancestors.
fn keyword_family(names: &[String]) -> usize {
    for name in names {
        let lower = name.to_lowercase();
        for (keys, family) in KEYWORD_FAMILIES {
            if keys.split(',').any(|k| lower.contains(k)) {
                return family_index(family).unwrap_or(0);
            }
        }
    }
    0
}

/// Best Buy's tree from `categories.json` (through the Best Buy importer, which builds the tree
/// from every category's `path` and ignores `subCategories`).
pub(crate) fn best_buy(path: &Path) -> Result<Shop> {
    let taxonomy = crate::adapters::bestbuy::read_categories(path)?;
    let leaf_nodes = taxonomy.leaves();
    let mut leaves = Vec::with_capacity(leaf_nodes.len());
    let mut barren = Vec::with_capacity(leaf_nodes.len());
    for &n in &leaf_nodes {
        let raw = taxonomy.name(n);
        let mut name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        for prefix in ["All ", "Mdot ", "Shop "] {
            if let Some(rest) = name.strip_prefix(prefix) {
                name = rest.to_owned();
            }
        }
        if name.is_empty() {
            name = raw.trim().to_owned();
        }
        let mut names = vec![name.clone()];
        names.extend(taxonomy.ancestors(n).map(|a| taxonomy.name(a).to_owned()));
        let family = keyword_family(&names);
        let noun = singular(&name);
        // Pages that are not product types: questions, offers, services.
        let lower = raw.to_lowercase();
        barren.push(
            n == taxonomy.root()
                || raw.contains('?')
                || [
                    "offer",
                    "gift card",
                    "protection plan",
                    "service",
                    "deal",
                    "event",
                    "test",
                ]
                .iter()
                .any(|w| lower.contains(w)),
        );
        leaves.push(LeafSpec {
            node: n,
            family,
            query_noun: noun.to_lowercase(),
            broad_noun: String::new(),
            noun,
        });
    }
    let mut shop = Shop {
        taxonomy,
        leaves,
        barren,
    };
    default_broad_nouns(&mut shop);
    if shop.barren.iter().all(|&b| b) {
        shop.barren.iter_mut().for_each(|b| *b = false);
    }
    Ok(shop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_forms() {
        assert_eq!(singular("OLED TVs"), "OLED TV");
        assert_eq!(singular("Camera Batteries"), "Camera Battery");
        assert_eq!(singular("Tool Boxes"), "Tool Box");
        assert_eq!(singular("Gaming Mice"), "Gaming Mouse");
        assert_eq!(singular("Chef's Knives"), "Chef's Knife");
        assert_eq!(singular("Jeans"), "Jeans");
        assert_eq!(singular("Wine Glasses"), "Wine Glasses");
        assert_eq!(singular("Watches"), "Watch");
    }

    #[test]
    fn built_in_tree_is_deep_and_wide() {
        let shop = built_in().expect("built-in tree");
        let t = &shop.taxonomy;
        assert!(shop.leaves.len() >= 300, "{} leaves", shop.leaves.len());
        assert_eq!(t.max_depth(), 5);
        assert!(t.children(t.root()).len() >= 8);
        for l in &shop.leaves {
            assert!(t.is_leaf(l.node));
            assert!(t.depth(l.node) >= 3, "{}", t.path_string(l.node));
            assert!(!l.noun.is_empty() && !l.broad_noun.is_empty());
            assert!(t.id(l.node).starts_with('c'));
        }
        let tv = shop
            .leaves
            .iter()
            .find(|l| t.name(l.node) == "QLED TVs")
            .expect("qled");
        assert_eq!(tv.noun, "QLED TV");
        assert_eq!(tv.broad_noun, "tv");
        assert_eq!(
            t.path_string(tv.node),
            "Electronics > TV & Video > Televisions > QLED TVs"
        );
    }

    /// The tree read from `tree.txt` is the one this file used to spell out in code: its size, a
    /// few nodes and leaves, and a CRC-32 over every node (id, name, path) and leaf spec (noun,
    /// query nouns, family, barren), the value the tree had before it moved to the data file.
    #[test]
    fn built_in_tree_is_the_one_it_was() {
        let shop = built_in().expect("built-in tree");
        let t = &shop.taxonomy;
        assert_eq!((t.len(), shop.leaves.len(), t.max_depth()), (706, 509, 5));
        let path = |id: &str| t.path_string(t.node(id).expect(id));
        assert_eq!(path("c0001"), "Electronics");
        assert_eq!(
            path("c0705"),
            "Clothing, Shoes & Accessories > Accessories > Hats & Sunglasses > Beanies"
        );
        let leaf = |name: &str| {
            let l = shop
                .leaves
                .iter()
                .find(|l| t.path_string(l.node) == name)
                .expect(name);
            (
                l.noun.as_str(),
                l.query_noun.as_str(),
                l.broad_noun.as_str(),
            )
        };
        assert_eq!(
            leaf("Pet Supplies > Cats > Cat Supplies > Cat Litter"),
            ("Clumping Cat Litter", "clumping cat litter", "cat litter")
        );
        assert_eq!(
            leaf("Clothing, Shoes & Accessories > Kids' Clothing > Girls' Clothing > Girls' Everyday Wear > Girls' T-Shirts"),
            ("Girls' T-Shirt", "girls' t-shirt", "t-shirt")
        );
        let mut h = crc32fast::Hasher::new();
        let mut text = |s: &str| {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        for n in t.nodes() {
            text(t.id(n));
            text(t.name(n));
            text(&t.path_string(n));
        }
        for (l, barren) in shop.leaves.iter().zip(&shop.barren) {
            text(t.id(l.node));
            text(&l.noun);
            text(&l.query_noun);
            text(&l.broad_noun);
            text(&format!("{} {barren}", l.family));
        }
        assert_eq!(format!("{:08x}", h.finalize()), "92ad9ac1");
    }
}
