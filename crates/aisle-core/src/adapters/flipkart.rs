//! Flipkart sample: 1,002 products whose `product_category_tree` is a Python-list-like literal
//! such as `['footwear', 'womens footwear', 'ballerinas', 'aw bellies']`, 1 to 7 levels deep.
//!
//! A node's id is its whole path (names repeat under different parents); the product is filed
//! under the last element, which is often the product's own name. `product_specifications`
//! (a Python list of `{'key': .., 'value': ..}` dicts) becomes the attributes.

use std::collections::HashMap;
use std::path::Path;

use super::pylit::{self, PyValue};
use crate::dataset::Dataset;
use crate::error::{Error, ImportReport, Result, Strictness};
use crate::io::generic::finish_taxonomy;
use crate::io::table::{for_each_record, Encoding, FieldCtx, TableReader};
use crate::model::Product;
use crate::taxonomy::TaxonomyBuilder;

/// Separator of path elements inside a node id.
const SEP: &str = " >> ";

/// Parses a category tree literal into its names.
pub fn parse_tree(text: &str) -> std::result::Result<Vec<String>, String> {
    match pylit::parse(text)? {
        PyValue::List(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| match v {
                PyValue::Str(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                other => Err(format!("expected a non-empty quoted name, found {other:?}")),
            })
            .collect(),
        PyValue::List(_) => Err("empty category list".into()),
        other => Err(format!("expected a list, found {other:?}")),
    }
}

fn parse_specs(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    // Usually a list of dicts; a product with one specification has a bare dict.
    let items = match pylit::parse(text)? {
        PyValue::List(items) => items,
        d @ PyValue::Dict(_) => vec![d],
        _ => return Err("expected a list of {'key': .., 'value': ..} dicts".into()),
    };
    let mut out = Vec::new();
    for item in items {
        let value = item.get("value").and_then(PyValue::as_str);
        let key = item.get("key").and_then(PyValue::as_str);
        match (key, value) {
            (Some(k), Some(v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                out.push((k.trim().to_lowercase(), v.trim().to_owned()))
            }
            // Keyless entries ("One Pair Of Shoes") describe the box contents.
            (None, Some(v)) if !v.trim().is_empty() => {
                out.push(("in the box".into(), v.trim().to_owned()))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Loads the folder `flipkart_sample/` (product_subset.csv).
pub fn load(dir: &Path, strictness: Strictness) -> Result<Dataset> {
    let path = dir.join("product_subset.csv");
    const COLS: [&str; 8] = [
        "uniq_id",
        "product_name",
        "product_category_tree",
        "retail_price",
        "discounted_price",
        "brand",
        "description",
        "product_specifications",
    ];
    const REQ: [&str; 3] = ["uniq_id", "product_name", "product_category_tree"];
    let mut report = ImportReport::new();
    let mut reader = TableReader::open(&path, &COLS, &REQ, Encoding::Utf8)?;
    let mut tree = TaxonomyBuilder::new();
    let mut rows: Vec<(Product, String)> = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for_each_record(&mut reader, &REQ, strictness, &mut report, |mut r, _| {
        let ctx = FieldCtx {
            path: &path,
            line: r.line,
        };
        let id = ctx.required(r.take(0), "uniq_id", "a product id")?;
        let title = ctx.required(r.take(1), "product_name", "a product name")?;
        let tree_text = ctx.required(r.take(2), "product_category_tree", "a category list")?;
        let names = parse_tree(&tree_text).map_err(|why| Error::Field {
            at: ctx.at("product_category_tree"),
            expected: format!("a Python-style list of quoted names: {why}"),
            found: tree_text.clone(),
        })?;
        let attributes = match r.get(7) {
            Some(t) => parse_specs(t).map_err(|why| Error::Field {
                at: ctx.at("product_specifications"),
                expected: format!("a Python-style list of {{'key': .., 'value': ..}} dicts: {why}"),
                found: t.to_owned(),
            })?,
            None => Vec::new(),
        };
        let price = match ctx.opt_f32(r.get(4), "discounted_price")? {
            Some(p) => Some(p),
            None => ctx.opt_f32(r.get(3), "retail_price")?,
        };
        if let Some(&first) = first_line.get(&id) {
            return Err(Error::Duplicate {
                at: ctx.at("uniq_id"),
                what: "product",
                id,
                first_line: Some(first),
            });
        }
        let ids: Vec<String> = (1..=names.len()).map(|k| names[..k].join(SEP)).collect();
        let leaf = tree
            .add_path(
                ids.iter()
                    .map(String::as_str)
                    .zip(names.iter().map(String::as_str)),
                Some(r.line),
            )
            .unwrap_or_default();
        first_line.insert(id.clone(), r.line);
        rows.push((
            Product {
                id,
                title,
                description: r.take(6).unwrap_or_default(),
                brand: r.take(5).unwrap_or_default(),
                price,
                attributes,
                category: crate::taxonomy::NodeId(0),
            },
            leaf,
        ));
        Ok(())
    })?;
    let taxonomy = finish_taxonomy(tree, &path, strictness, &mut report)?;
    let mut ds = Dataset::new("flipkart_sample", taxonomy);
    for (mut p, leaf) in rows {
        let Some(node) = ds.taxonomy.node(&leaf) else {
            report.count("product under a dropped category", || {
                format!("product {}", p.id)
            });
            continue;
        };
        p.category = node;
        let _ = ds.catalog.push(p);
    }
    ds.report = report;
    ds.notes
        .push("catalog only: no interactions or queries".into());
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trees() {
        assert_eq!(
            parse_tree("['footwear', \"women's footwear\"]"),
            Ok(vec!["footwear".to_owned(), "women's footwear".to_owned()])
        );
        assert!(parse_tree("[]").is_err());
        assert!(parse_tree("footwear > shoes").is_err());
    }
}
