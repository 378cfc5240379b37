//! The catalog: products spread over the leaves with a Zipf-like skew, made in variant groups so
//! that siblings differ in subtle attributes (size, colour, model number).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{Catalog, Product};
use crate::rng::{cumulative, Rng};

use super::tree::Shop;
use super::vocab::{FamilyDef, Line, FAMILIES};
use super::{ProductTruth, SLOTS};

/// Slot order in `ProductTruth::attrs` and `Constraints::attrs`.
pub(crate) const COLOUR: usize = 0;
pub(crate) const MATERIAL: usize = 1;
pub(crate) const SIZE: usize = 2;
pub(crate) const FEATURE: usize = 3;

/// Interned attribute values (brands, colours, sizes, ...), shared by all families.
#[derive(Default)]
pub(crate) struct Vocab {
    pub strings: Vec<String>,
    pub lower: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.index.insert(s.to_owned(), i);
        self.strings.push(s.to_owned());
        self.lower.push(s.to_lowercase());
        i
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Brand,
    Line,
    Size,
    Colour,
    Material,
    Feature,
    Noun,
}

/// A family with its values interned.
pub(crate) struct Family {
    pub brands: Vec<u32>,
    pub tiers: Vec<u8>,
    /// Values of each slot (colour, material, size, feature), vocab ids.
    pub values: [Vec<u32>; 4],
    /// The shop's name of each slot ("colour", "flavour", "screen size", ...).
    pub labels: [&'static str; 4],
    /// Short codes of the sizes for model numbers ("55", "133").
    size_codes: Vec<String>,
    pub price: (f32, f32),
    pub line: Line,
    line_pool: Vec<&'static str>,
    title: Vec<(&'static str, Slot, &'static str)>,
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

fn parse_title(t: &'static str) -> Result<Vec<(&'static str, Slot, &'static str)>> {
    t.split('|')
        .map(|seg| {
            let open = seg.find('{');
            let close = seg.find('}');
            match (open, close) {
                (Some(o), Some(c)) if c == o + 2 => {
                    let slot = match &seg[o + 1..c] {
                        "b" => Slot::Brand,
                        "l" => Slot::Line,
                        "s" => Slot::Size,
                        "c" => Slot::Colour,
                        "m" => Slot::Material,
                        "f" => Slot::Feature,
                        "n" => Slot::Noun,
                        other => {
                            return Err(Error::Config(format!(
                                "title template `{t}`: unknown placeholder {{{other}}}"
                            )))
                        }
                    };
                    Ok((&seg[..o], slot, &seg[c + 1..]))
                }
                _ => Err(Error::Config(format!(
                    "title template `{t}`: segment `{seg}` needs one placeholder"
                ))),
            }
        })
        .collect()
}

fn size_codes(sizes: &[&str]) -> Vec<String> {
    let mut codes: Vec<String> = sizes
        .iter()
        .map(|s| s.chars().filter(char::is_ascii_digit).take(3).collect())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let unique = codes
        .iter()
        .all(|c| !c.is_empty() && seen.insert(c.clone()));
    if !unique {
        codes = (0..sizes.len()).map(|i| format!("S{}", i + 1)).collect();
    }
    codes
}

impl Family {
    fn new(def: &FamilyDef, vocab: &mut Vocab) -> Result<Family> {
        let mut brands = Vec::new();
        let mut tiers = Vec::new();
        for b in split_list(def.brands) {
            let (name, tier) = match b.rsplit_once(':') {
                Some((n, t)) => (n, t.parse::<u8>().unwrap_or(1).min(2)),
                None => (b, 1),
            };
            brands.push(vocab.intern(name));
            tiers.push(tier);
        }
        if brands.is_empty() {
            return Err(Error::Config(format!("family `{}` has no brands", def.key)));
        }
        let slot_defs = [def.colour, def.material, def.size, def.feature];
        let mut values: [Vec<u32>; 4] = Default::default();
        let mut labels = [""; 4];
        for (i, (label, list)) in slot_defs.iter().enumerate() {
            values[i] = split_list(list).map(|v| vocab.intern(v)).collect();
            labels[i] = if label.is_empty() { SLOTS[i] } else { label };
        }
        let sizes: Vec<&str> = split_list(def.size.1).collect();
        let line_pool = match def.line {
            Line::Named(pool) => split_list(pool).collect(),
            _ => Vec::new(),
        };
        Ok(Family {
            brands,
            tiers,
            values,
            labels,
            size_codes: size_codes(&sizes),
            price: def.price,
            line: def.line,
            line_pool,
            title: parse_title(def.title)?,
        })
    }
}

/// All families, interned.
pub(crate) fn families(vocab: &mut Vocab) -> Result<Vec<Family>> {
    FAMILIES.iter().map(|d| Family::new(d, vocab)).collect()
}

/// Splits `total` into integer parts proportional to `weights` (largest remainder), so that the
/// parts are deterministic and sum exactly to `total`.
pub(crate) fn allocate(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let assigned: usize = parts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(total.saturating_sub(assigned)) {
        parts[i] += 1;
    }
    parts
}

/// The external id of product `i`: seven digits, a bijection of `0..10^7` so that neighbouring
/// products do not get neighbouring ids.
pub(crate) fn product_id(i: usize) -> String {
    let x = (i as u64 * 7_368_787 + 1_234_567) % 10_000_000;
    format!("p{x:07}")
}

/// Products of one leaf before they get strings.
struct Pending {
    brand: usize,
    group: u32,
    attrs: [Option<usize>; 4],
    line: String,
    serial: u32,
    popularity: f32,
}

/// What the catalog generator hands to the session simulator.
pub(crate) struct CatalogIndex {
    /// Products of leaf `l` are `leaf_start[l]..leaf_start[l + 1]`.
    pub leaf_start: Vec<u32>,
    /// Running popularity within each leaf, aligned with product ids.
    pub cum_pop: Vec<f32>,
    /// Per leaf, `(brand, start, end)` product ranges (products of a leaf are grouped by brand).
    pub brand_ranges: Vec<Vec<(u32, u32, u32)>>,
}

fn title_case_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Generates the catalog. Products are numbered leaf by leaf (in pre-order), and within a leaf
/// brand by brand, so that subtrees, leaves and (leaf, brand) pairs are contiguous id ranges.
pub(crate) fn generate(
    shop: &Shop,
    fams: &[Family],
    vocab: &Vocab,
    n_products: usize,
    seed: u64,
) -> Result<(Catalog, Vec<ProductTruth>, CatalogIndex)> {
    let n_leaves = shop.leaves.len();
    // Zipf-like leaf sizes: leaf weights 1/rank^0.9 over a seeded random ranking.
    let mut rng = Rng::stream(seed, 0x11);
    let mut ranks: Vec<usize> = (0..n_leaves).collect();
    rng.shuffle(&mut ranks);
    let weights: Vec<f64> = (0..n_leaves)
        .map(|l| {
            if shop.barren[l] {
                0.0
            } else {
                1.0 / ((ranks[l] + 1) as f64).powf(0.9)
            }
        })
        .collect();
    let mut counts = allocate(n_products, &weights);
    // Every product-bearing leaf gets at least one product when there are enough to go round.
    let fertile = weights.iter().filter(|&&w| w > 0.0).count();
    if n_products >= 4 * fertile {
        for l in 0..n_leaves {
            while weights[l] > 0.0 && counts[l] < 2 {
                // Take from the largest leaf.
                let big = (0..n_leaves)
                    .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
                    .unwrap_or(l);
                if counts[big] <= 2 {
                    break;
                }
                counts[big] -= 1;
                counts[l] += 1;
            }
        }
    }

    let mut catalog = Catalog::with_capacity(n_products);
    let mut truths = Vec::with_capacity(n_products);
    let mut index = CatalogIndex {
        leaf_start: Vec::with_capacity(n_leaves + 1),
        cum_pop: Vec::with_capacity(n_products),
        brand_ranges: Vec::with_capacity(n_leaves),
    };
    let t = &shop.taxonomy;
    let mut title = String::new();
    let mut group_base = 0u32;
    for (l, leaf) in shop.leaves.iter().enumerate() {
        index.leaf_start.push(catalog.len() as u32);
        let fam = &fams[leaf.family];
        let mut rng = Rng::stream(seed ^ 0x5EED_CA7A_1000, l as u64);
        let pending = leaf_products(fam, counts[l], &mut rng, t.id(leaf.node), vocab);
        let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
        let mut acc = 0f32;
        let mut max_group = 0u32;
        for p in pending {
            let i = catalog.len();
            let brand = fam.brands[p.brand];
            match ranges.last_mut() {
                Some(r) if r.0 == brand => r.2 = i as u32 + 1,
                _ => ranges.push((brand, i as u32, i as u32 + 1)),
            }
            let attr = |s: usize| p.attrs[s].map(|k| fam.values[s][k]);
            let attrs = [attr(0), attr(1), attr(2), attr(3)];
            let val = |s: usize| {
                attrs[s]
                    .map(|v| vocab.strings[v as usize].as_str())
                    .unwrap_or("")
            };
            let brand_name = vocab.strings[brand as usize].as_str();
            let model = match fam.line {
                Line::Code => p.line.clone(),
                _ => format!(
                    "{}{:05}-{:02}",
                    initials(brand_name),
                    (l as u32).wrapping_mul(977).wrapping_add(p.group) % 100_000,
                    p.serial
                ),
            };
            // Title from the family's template; a segment with an empty value is left out.
            title.clear();
            for (pre, slot, post) in &fam.title {
                let v = match slot {
                    Slot::Brand => brand_name,
                    Slot::Line => p.line.as_str(),
                    Slot::Size => val(SIZE),
                    Slot::Colour => val(COLOUR),
                    Slot::Material => val(MATERIAL),
                    Slot::Feature => val(FEATURE),
                    Slot::Noun => leaf.noun.as_str(),
                };
                if !v.is_empty() {
                    title.push_str(pre);
                    title.push_str(v);
                    title.push_str(post);
                }
            }
            let mut description = String::with_capacity(96);
            if !val(FEATURE).is_empty() {
                description.push_str(val(FEATURE));
                description.push(' ');
            }
            description.push_str(&leaf.noun);
            description.push_str(" from ");
            description.push_str(brand_name);
            description.push('.');
            for s in [SIZE, COLOUR, MATERIAL] {
                if !val(s).is_empty() {
                    description.push(' ');
                    description.push_str(&title_case_first(fam.labels[s]));
                    description.push_str(": ");
                    description.push_str(val(s));
                    description.push('.');
                }
            }
            let mut attributes: Vec<(String, String)> = Vec::with_capacity(6);
            attributes.push(("brand".to_owned(), brand_name.to_owned()));
            for s in [COLOUR, SIZE, MATERIAL, FEATURE] {
                if !val(s).is_empty() {
                    attributes.push((fam.labels[s].to_owned(), val(s).to_owned()));
                }
            }
            attributes.push(("model".to_owned(), model));
            // Sorted by name, the order the generic format's JSON object reads back in.
            attributes.sort_unstable();
            // Price: brand tier and size set the position in the family's range, with noise.
            let tier = fam.tiers[p.brand];
            let n_sizes = fam.values[SIZE].len();
            let size_rank = match p.attrs[SIZE] {
                Some(k) if n_sizes > 1 => k as f64 / (n_sizes - 1) as f64,
                _ => 0.5,
            };
            let pos = (0.15 + 0.32 * tier as f64 + 0.3 * (size_rank - 0.5) + 0.08 * rng.normal())
                .clamp(0.01, 0.99);
            let (lo, hi) = (fam.price.0 as f64, fam.price.1 as f64);
            let raw = lo * (hi / lo).powf(pos);
            let price = if raw >= 20.0 {
                raw.floor() + 0.99
            } else {
                (raw * 10.0).floor() / 10.0 + 0.09
            };
            acc += p.popularity;
            index.cum_pop.push(acc);
            max_group = max_group.max(p.group + 1);
            truths.push(ProductTruth {
                leaf: leaf.node,
                brand,
                tier,
                group: group_base + p.group,
                attrs,
                price_position: pos as f32,
                popularity: p.popularity,
            });
            let product = Product {
                id: product_id(i),
                title: title.clone(),
                description,
                brand: brand_name.to_owned(),
                price: Some(price as f32),
                attributes,
                category: leaf.node,
            };
            catalog.push(product).map_err(|_| {
                Error::Config(format!("product id {} generated twice", product_id(i)))
            })?;
        }
        group_base += max_group;
        index.brand_ranges.push(ranges);
    }
    index.leaf_start.push(catalog.len() as u32);
    Ok((catalog, truths, index))
}

/// Two capital letters from a brand name, for item numbers.
fn initials(brand: &str) -> String {
    let mut out: String = brand
        .split(|c: char| !c.is_alphanumeric())
        .filter_map(|w| w.chars().next())
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(2)
        .collect();
    for c in brand.chars().skip(1) {
        if out.len() >= 2 {
            break;
        }
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase());
        }
    }
    while out.len() < 2 {
        out.push('X');
    }
    out
}

/// The products of one leaf: groups of variants of one brand and line, differing in size and
/// colour, sorted by brand.
fn leaf_products(
    fam: &Family,
    n: usize,
    rng: &mut Rng,
    leaf_id: &str,
    vocab: &Vocab,
) -> Vec<Pending> {
    let mut out: Vec<Pending> = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    // Brand popularity in this leaf: list order with leaf-specific noise.
    let brand_cum = cumulative(
        (0..fam.brands.len()).map(|i| ((i + 1) as f64).powf(-0.7) * (0.5 * rng.normal()).exp()),
    );
    // Per brand: a model-number prefix and series letter, and a counter of its groups.
    let leaf_hash = leaf_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut brand_groups = vec![0u32; fam.brands.len()];
    let pick = |rng: &mut Rng, slot: usize| -> Option<usize> {
        let k = fam.values[slot].len();
        (k > 0).then(|| rng.index(k))
    };
    let mut group = 0u32;
    while out.len() < n {
        let b = rng.weighted_index(&brand_cum);
        let c = brand_groups[b];
        brand_groups[b] += 1;
        let material = pick(rng, MATERIAL);
        let feature = pick(rng, FEATURE);
        let group_pop = (1.1 * rng.normal()).exp() as f32;
        let n_sizes = fam.values[SIZE].len().max(1);
        let n_colours = fam.values[COLOUR].len().max(1);
        let combos = n_sizes * n_colours;
        let mut k = 1;
        while k < 6 && rng.chance(0.55) {
            k += 1;
        }
        let k = k.min(combos).min(n - out.len());
        // Variant (size, colour) pairs: the first at random, the others change one of the two.
        let mut variants: Vec<(Option<usize>, Option<usize>)> = Vec::with_capacity(k);
        let first = (pick(rng, SIZE), pick(rng, COLOUR));
        variants.push(first);
        let mut tries = 0;
        while variants.len() < k && tries < 40 {
            tries += 1;
            let v = if rng.chance(0.5) {
                (pick(rng, SIZE), first.1)
            } else {
                (first.0, pick(rng, COLOUR))
            };
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        // Line: model base for codes, a product-line name otherwise.
        let brand_name = &vocab.strings[fam.brands[b] as usize];
        let h = leaf_hash ^ (fam.brands[b] as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let prefix_letter = (b'A' + ((h >> 7) % 26) as u8) as char;
        let series_letter = (b'A' + ((h >> 17) % 26) as u8) as char;
        let series_num = 10 * (c + 1) + rng.below(10) as u32;
        let named = match fam.line {
            Line::Named(_) if !fam.line_pool.is_empty() => {
                let w = fam.line_pool[rng.index(fam.line_pool.len())];
                if rng.chance(0.6) {
                    format!("{w} {}", 2 + rng.below(60))
                } else {
                    w.to_owned()
                }
            }
            _ => String::new(),
        };
        for (serial, (size, colour)) in variants.into_iter().enumerate() {
            let line = match fam.line {
                Line::Code => {
                    let mut s = initials(brand_name)[..1].to_owned();
                    s.push(prefix_letter);
                    if let Some(si) = size {
                        s.push_str(&fam.size_codes[si]);
                    }
                    s.push(series_letter);
                    s.push_str(&series_num.to_string());
                    if let Some(ci) = colour {
                        s.push((b'A' + (ci % 26) as u8) as char);
                    }
                    s
                }
                Line::Named(_) => named.clone(),
                Line::Plain => String::new(),
            };
            out.push(Pending {
                brand: b,
                group,
                attrs: [colour, material, size, feature],
                line,
                serial: serial as u32,
                popularity: group_pop * (0.4 * rng.normal()).exp() as f32,
            });
        }
        group += 1;
    }
    out.sort_by_key(|p| p.brand);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_sums_and_follows_weights() {
        let parts = allocate(10, &[1.0, 1.0, 2.0]);
        assert_eq!(parts.iter().sum::<usize>(), 10);
        assert!(parts[2] >= parts[0]);
        assert_eq!(allocate(0, &[1.0]), vec![0]);
        assert_eq!(allocate(5, &[]), Vec::<usize>::new());
    }

    #[test]
    fn product_ids_are_distinct() {
        let mut ids: Vec<String> = (0..100_000).map(product_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn templates_parse() {
        let mut v = Vocab::default();
        let fams = families(&mut v).expect("families");
        assert_eq!(fams.len(), FAMILIES.len());
        assert_eq!(initials("Samsung"), "SA");
        assert_eq!(initials("De'Longhi"), "DL");
        assert_eq!(initials("8BitDo"), "8B");
    }
}
