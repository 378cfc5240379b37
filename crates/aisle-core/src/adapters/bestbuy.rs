//! Best Buy: the open category tree (`bestbuy_categories`) and the Xbox 360 search logs
//! (`bestbuy_xbox`).
//!
//! `categories.json` is an array of `{id, name, path: [{id, name}, ...], subCategories}`. Each
//! `path` runs from a top-level category to the category itself and is taken as the truth: the
//! `subCategories` lists disagree with the paths for 2,738 entries and are ignored, and 139
//! ancestors appear only inside paths.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::dataset::Dataset;
use crate::error::{Error, ImportReport, Location, Result, Strictness};
use crate::io::table::{for_each_record, read_to_string, Encoding, FieldCtx, TableReader};
use crate::model::{Interaction, Kind, Product};
use crate::taxonomy::{NodeId, Taxonomy, TaxonomyBuilder};

/// The category of every product in the Xbox logs: Video Games > Xbox 360 > Xbox 360 Games.
pub const XBOX_GAMES: &str = "abcat0701002";

#[derive(Deserialize)]
struct RawCategory {
    id: String,
    #[serde(default)]
    path: Vec<RawPathElement>,
}

#[derive(Deserialize)]
struct RawPathElement {
    id: String,
    /// A few categories have a null name; their id stands in.
    name: Option<String>,
}

impl RawPathElement {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

fn read_raw_categories(path: &Path) -> Result<Vec<RawCategory>> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        at: Location::line(path, e.line() as u64),
        message: format!(
            "expected a JSON array of {{id, name, path}} categories: {e} (column {})",
            e.column()
        ),
    })
}

fn check_path(path: &Path, c: &RawCategory) -> Result<()> {
    match c.path.last() {
        Some(last) if last.id == c.id => Ok(()),
        _ => Err(Error::Field {
            at: Location::new(path, None, Some(&format!("path of category {}", c.id))),
            expected: "a path from the top-level category ending at the category itself".into(),
            found: c
                .path
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(" > "),
        }),
    }
}

/// The whole Best Buy tree from `categories.json`, built from the `path` of every category.
pub fn read_categories(path: &Path) -> Result<Taxonomy> {
    let cats = read_raw_categories(path)?;
    let mut b = TaxonomyBuilder::new();
    for c in &cats {
        check_path(path, c)?;
        b.add_path(c.path.iter().map(|p| (p.id.as_str(), p.name())), None);
    }
    b.build().map_err(|source| Error::Taxonomy {
        file: path.to_path_buf(),
        error: Box::new(source),
    })
}

/// `bestbuy_categories` as a dataset: the taxonomy alone.
pub fn load_categories_dataset(data_dir: &Path) -> Result<Dataset> {
    let dir = super::dataset_dir(data_dir, "bestbuy_categories")?;
    let taxonomy = read_categories(&dir.join("categories.json"))?;
    Ok(Dataset::new("bestbuy_categories", taxonomy))
}

/// A genre as the leaf name: whitespace collapsed (the hosting repo stripped "&", leaving double
/// spaces), and an empty genre named "Unknown genre".
fn genre_name(raw: &str) -> String {
    let words: Vec<&str> = raw.split_whitespace().collect();
    if words.is_empty() {
        "Unknown genre".into()
    } else {
        words.join(" ")
    }
}

/// `bestbuy_xbox`: products, query -> click events and the taxonomy Video Games > Xbox 360 >
/// Xbox 360 Games > genre.
///
/// Known properties of this copy, handled here and counted in the import report rather than
/// treated as errors: every row of product.csv appears twice (identical rows are merged; rows that
/// differ under one SKU are an error), genres differ in case ("sports  outdoors") and are merged
/// case-insensitively, and 300 clicks name SKUs absent from product.csv (dropped). Events are
/// ordered by their line in train.csv: this copy's timestamps lost their date and hour.
pub fn load_xbox(data_dir: &Path, strictness: Strictness) -> Result<Dataset> {
    let cat_path = super::dataset_dir(data_dir, "bestbuy_categories")?.join("categories.json");
    let dir = super::dataset_dir(data_dir, "bestbuy_xbox")?;
    let cats = read_raw_categories(&cat_path)?;
    let games = cats.iter().find(|c| c.id == XBOX_GAMES).ok_or_else(|| {
        Error::Dataset(format!(
            "{}: category {XBOX_GAMES} (Xbox 360 Games) not found",
            cat_path.display()
        ))
    })?;
    check_path(&cat_path, games)?;
    let mut report = ImportReport::new();
    let products_path = dir.join("product.csv");
    let rows = read_xbox_products(&products_path, strictness, &mut report)?;

    // Taxonomy: the Best Buy path, then one leaf per genre (case-insensitive).
    let mut b = TaxonomyBuilder::new();
    b.add_path(games.path.iter().map(|p| (p.id.as_str(), p.name())), None);
    let mut genre_ids: HashMap<String, String> = HashMap::new();
    for row in &rows {
        let name = genre_name(&row.genre);
        let key = name.to_lowercase();
        if let std::collections::hash_map::Entry::Vacant(slot) = genre_ids.entry(key) {
            let id = format!("{XBOX_GAMES}/{}", slot.key().replace(' ', "-"));
            b.add_node(&id, &name, Some(XBOX_GAMES), None);
            slot.insert(id);
        }
    }
    let taxonomy = b.build().map_err(|source| Error::Taxonomy {
        file: products_path.clone(),
        error: Box::new(source),
    })?;
    let mut ds = Dataset::new("bestbuy_xbox", taxonomy);
    for row in rows {
        let key = genre_name(&row.genre).to_lowercase();
        let category = genre_ids
            .get(&key)
            .and_then(|id| ds.taxonomy.node(id))
            .unwrap_or(NodeId(0));
        let mut attributes = vec![("format".to_owned(), row.format.trim().to_owned())];
        if !row.genre.trim().is_empty() {
            attributes.push(("genre".into(), genre_name(&row.genre)));
        }
        if let Some(r) = row.review {
            attributes.push(("customer_review_average".into(), r.to_string()));
        }
        attributes.push(("active".into(), row.active));
        attributes.retain(|(_, v)| !v.is_empty());
        let product = Product {
            id: row.sku,
            title: row.name,
            description: row.description.trim().to_owned(),
            brand: row.manufacturer,
            price: None,
            attributes,
            category,
        };
        // Duplicates were resolved while reading.
        let _ = ds.catalog.push(product);
    }
    read_xbox_clicks(&mut ds, &dir.join("train.csv"), strictness, &mut report)?;
    ds.report = report;
    ds.notes.push(
        "events are ordered by their line in train.csv (this copy's click times lost date and hour); test.csv has no clicked SKU and is not used".into(),
    );
    ds.notes.push(
        "product names and descriptions are lower-cased, stop-word-stripped, alphabetically sorted bags of words".into(),
    );
    Ok(ds)
}

struct XboxProduct {
    sku: String,
    name: String,
    format: String,
    description: String,
    manufacturer: String,
    genre: String,
    active: String,
    review: Option<f32>,
}

fn read_xbox_products(
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<Vec<XboxProduct>> {
    const COLS: [&str; 8] = [
        "sku",
        "name",
        "format",
        "shortDescription",
        "manufacturer",
        "genre",
        "active",
        "customerReviewAverage",
    ];
    const REQ: [&str; 3] = ["sku", "name", "genre"];
    // product.csv is Latin-1 ("brütal legend" has the single byte 0xFC; its dashes are the
    // Windows-1252 bytes 0x96 and 0x97).
    let mut reader = TableReader::open(path, &COLS, &REQ, Encoding::Latin1)?;
    let mut rows: Vec<XboxProduct> = Vec::new();
    let mut seen: HashMap<String, (usize, u64, Vec<Option<String>>)> = HashMap::new();
    for_each_record(&mut reader, &REQ, strictness, report, |mut r, report| {
        let ctx = FieldCtx { path, line: r.line };
        let fields: Vec<Option<String>> = (0..COLS.len())
            .map(|i| r.get(i).map(str::to_owned))
            .collect();
        let sku = ctx.required(r.take(0), "sku", "a SKU")?;
        if let Some((_, first_line, first_fields)) = seen.get(&sku) {
            if *first_fields == fields {
                report.count("identical duplicate product row (merged)", || {
                    format!(
                        "{}:{}: SKU {sku} repeats line {first_line}",
                        path.display(),
                        r.line
                    )
                });
                return Ok(());
            }
            return Err(Error::Duplicate {
                at: ctx.at("sku"),
                what: "product",
                id: sku,
                first_line: Some(*first_line),
            });
        }
        let name = ctx.required(r.take(1), "name", "a product name")?;
        let review = ctx.opt_f32(r.get(7), "customerReviewAverage")?;
        seen.insert(sku.clone(), (rows.len(), r.line, fields));
        rows.push(XboxProduct {
            sku,
            name,
            format: r.take(2).unwrap_or_default(),
            description: r.take(3).unwrap_or_default(),
            manufacturer: r.take(4).unwrap_or_default(),
            genre: r.take(5).unwrap_or_default(),
            active: r.take(6).unwrap_or_default(),
            review,
        });
        Ok(())
    })?;
    Ok(rows)
}

fn read_xbox_clicks(
    ds: &mut Dataset,
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    const COLS: [&str; 4] = ["user", "sku", "category", "query"];
    const REQ: [&str; 4] = COLS;
    let mut reader = TableReader::open(path, &COLS, &REQ, Encoding::Utf8)?;
    for_each_record(&mut reader, &REQ, strictness, report, |r, report| {
        let ctx = FieldCtx { path, line: r.line };
        let user = ctx.required(r.get(0).map(str::to_owned), "user", "a user id")?;
        let sku = ctx.required(r.get(1).map(str::to_owned), "sku", "a SKU")?;
        let query = ctx.required(r.get(3).map(str::to_owned), "query", "a query text")?;
        let Some(product) = ds.catalog.find(&sku) else {
            // A known gap of this copy (99.3% of clicked SKUs are in product.csv): dropped and
            // counted, in strict mode too.
            report.count("click on a SKU absent from product.csv (dropped)", || {
                format!("{}:{}: SKU {sku}", path.display(), r.line)
            });
            return Ok(());
        };
        let user = ds.users.get_or_insert(&user);
        let query = ds.queries.intern(&query);
        ds.interactions.push(Interaction {
            user,
            product,
            kind: Kind::Click,
            time: r.line as i64,
            session: None,
            query: Some(query),
            price: None,
        });
        Ok(())
    })
}
