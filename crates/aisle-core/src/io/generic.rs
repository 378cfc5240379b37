//! aisle's generic dataset format: the files a retailer maps its own data to.
//!
//! A dataset is a folder with one file per table, each as `.csv` or `.jsonl`
//! (docs/data-format.md has the full description and an example of each):
//!
//! | file | columns | required |
//! |---|---|---|
//! | `taxonomy` | `id, parent, name` | yes |
//! | `products` | `id, title, description, brand, price, category, attributes` | yes |
//! | `users` | `id, segment`, any other column = a demographic feature | no |
//! | `interactions` | `user, product, kind, time, session, query, price` | no |
//! | `judgments` | `query, product, relevance` | no |

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::Location;
use crate::error::{At, Error, ImportReport, Result, Strictness};
use crate::io::table::{for_each_record, Encoding, FieldCtx, Format, TableReader};
use crate::model::{Interaction, Judgment, Kind, Product, User};
use crate::taxonomy::{Taxonomy, TaxonomyBuilder, TaxonomyError};

/// The tables of the generic format, in load order.
pub const TABLES: [&str; 5] = ["taxonomy", "products", "users", "interactions", "judgments"];

/// Finds `dir/NAME.csv` or `dir/NAME.jsonl`.
pub fn table_path(dir: &Path, name: &str) -> Option<PathBuf> {
    ["csv", "jsonl"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
}

/// True when `dir` looks like a dataset in the generic format.
pub fn is_generic_dir(dir: &Path) -> bool {
    table_path(dir, "taxonomy").is_some() && table_path(dir, "products").is_some()
}

fn required_table(dir: &Path, name: &str) -> Result<PathBuf> {
    table_path(dir, name).ok_or_else(|| {
        Error::Dataset(format!(
            "{}: no {name}.csv or {name}.jsonl (see docs/data-format.md)",
            dir.display()
        ))
    })
}

/// The columns of a table aisle reads, and which of them every row must have.
pub struct Schema {
    pub columns: &'static [&'static str],
    pub required: &'static [&'static str],
}

impl Schema {
    /// Opens the file at `path` as a table of this schema.
    pub fn open(&self, path: &Path) -> Result<TableReader> {
        TableReader::open(path, self.columns, self.required, Encoding::Utf8)
    }

    /// Reads `bytes` as a table of this schema; `name` (e.g. `products.csv`) gives the format by
    /// its extension and is used in messages.
    pub fn from_bytes(&self, name: &Path, bytes: &[u8]) -> Result<TableReader> {
        let format = Format::of(name).ok_or_else(|| Error::Malformed {
            at: Location::file(name),
            message: "unknown file extension: expected .csv or .jsonl".into(),
        })?;
        let input = Box::new(std::io::Cursor::new(bytes.to_vec()));
        TableReader::from_reader(
            input,
            name,
            format,
            self.columns,
            self.required,
            Encoding::Utf8,
        )
    }
}

/// The schema of each table in [`TABLES`], in that order.
pub const SCHEMAS: [Schema; 5] = [
    Schema {
        columns: &["id", "parent", "name"],
        required: &["id"],
    },
    Schema {
        columns: &[
            "id",
            "title",
            "description",
            "brand",
            "price",
            "category",
            "attributes",
        ],
        required: &["id", "title", "category"],
    },
    Schema {
        columns: &["id", "segment"],
        required: &["id"],
    },
    Schema {
        columns: &[
            "user", "product", "kind", "time", "session", "query", "price",
        ],
        required: &["user", "product", "kind", "time"],
    },
    Schema {
        columns: &["query", "product", "relevance"],
        required: &["query", "product", "relevance"],
    },
];

/// Reads a taxonomy table (`id, parent, name`).
pub fn read_taxonomy(
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<Taxonomy> {
    taxonomy_rows(&mut SCHEMAS[0].open(path)?, strictness, report)
}

fn taxonomy_rows(
    reader: &mut TableReader,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<Taxonomy> {
    let path = &reader.path().to_path_buf();
    let mut b = TaxonomyBuilder::new();
    for_each_record(
        reader,
        SCHEMAS[0].required,
        strictness,
        report,
        |mut r, _| {
            let ctx = FieldCtx { path, line: r.line };
            let id = ctx.required(r.take(0), "id", "a category id")?;
            let name = r.take(2).unwrap_or_else(|| id.clone());
            b.add_node(&id, &name, r.get(1), Some(r.line));
            Ok(())
        },
    )?;
    finish_taxonomy(b, path, strictness, report)
}

/// Builds a taxonomy strictly (first problem is an error naming the file and line) or leniently
/// (problem nodes dropped and counted).
pub fn finish_taxonomy(
    b: TaxonomyBuilder,
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<Taxonomy> {
    let to_err = |source: TaxonomyError| Error::Taxonomy {
        file: path.to_path_buf(),
        error: Box::new(source),
    };
    match strictness {
        Strictness::Strict => b.build().map_err(to_err),
        Strictness::Lenient => {
            let l = b.build_lenient().map_err(to_err)?;
            for e in l.dropped {
                let msg = to_err(e.clone()).to_string();
                report.count(e.reason(), || msg);
            }
            Ok(l.taxonomy)
        }
    }
}

/// Parses the `attributes` field: a JSON object of scalar values, e.g. `{"colour":"black"}`.
fn parse_attributes(
    text: &str,
    at: impl Fn() -> crate::error::At,
) -> Result<Vec<(String, String)>> {
    let bad = |found: &str| Error::Field {
        at: at(),
        expected: "a JSON object of names to scalar values, e.g. {\"colour\":\"black\"}".into(),
        found: found.to_owned(),
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad(text))?;
    let serde_json::Value::Object(map) = v else {
        return Err(bad(text));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(bad(&other.to_string())),
        })
        .collect()
}

/// Reads a products table into `ds.catalog`; categories must exist in `ds.taxonomy`.
pub fn read_products(
    ds: &mut Dataset,
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    products_rows(ds, &mut SCHEMAS[1].open(path)?, strictness, report)
}

fn products_rows(
    ds: &mut Dataset,
    reader: &mut TableReader,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    let path = &reader.path().to_path_buf();
    let mut first_line = std::collections::HashMap::new();
    for_each_record(
        reader,
        SCHEMAS[1].required,
        strictness,
        report,
        |mut r, _| {
            let ctx = FieldCtx { path, line: r.line };
            let id = ctx.required(r.take(0), "id", "a product id")?;
            let title = ctx.required(r.take(1), "title", "a product title")?;
            let cat_id = ctx.required(r.take(5), "category", "a category id")?;
            let category = ds.taxonomy.node(&cat_id).ok_or_else(|| Error::UnknownRef {
                at: ctx.at("category"),
                what: "category",
                id: cat_id.clone(),
                hint: "not an id of the taxonomy file".into(),
            })?;
            let price = ctx.opt_f32(r.get(4), "price")?;
            let attributes = match r.get(6) {
                Some(t) => parse_attributes(t, || ctx.at("attributes"))?,
                None => Vec::new(),
            };
            let product = Product {
                id: id.clone(),
                title,
                description: r.take(2).unwrap_or_default(),
                brand: r.take(3).unwrap_or_default(),
                price,
                attributes,
                category,
            };
            let added = ds.catalog.push(product).is_ok();
            first_seen(&mut first_line, added, id, r.line, ctx.at("id"), "product")
        },
    )
}

/// Records where `id` was first defined when it was `added`; otherwise the duplicate error that
/// names the line of the first definition.
fn first_seen(
    first_line: &mut std::collections::HashMap<String, u64>,
    added: bool,
    id: String,
    line: u64,
    at: At,
    what: &'static str,
) -> Result<()> {
    if added {
        first_line.insert(id, line);
        return Ok(());
    }
    Err(Error::Duplicate {
        at,
        what,
        first_line: first_line.get(&id).copied(),
        id,
    })
}

/// Reads a users table into `ds.users`; columns other than `id` and `segment` are demographics.
pub fn read_users(
    ds: &mut Dataset,
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    users_rows(ds, &mut SCHEMAS[2].open(path)?, strictness, report)
}

fn users_rows(
    ds: &mut Dataset,
    reader: &mut TableReader,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    let path = &reader.path().to_path_buf();
    let mut first_line = std::collections::HashMap::new();
    for_each_record(
        reader,
        SCHEMAS[2].required,
        strictness,
        report,
        |mut r, _| {
            let ctx = FieldCtx { path, line: r.line };
            let id = ctx.required(r.take(0), "id", "a user id")?;
            let user = User {
                id: id.clone(),
                segment: r.take(1),
                demographics: std::mem::take(&mut r.extra),
            };
            let added = ds.users.push(user).is_ok();
            first_seen(&mut first_line, added, id, r.line, ctx.at("id"), "user")
        },
    )
}

/// Reads an interactions table. Unknown products are errors; unknown users are errors when the
/// dataset has a users table (`users_known`), and are created otherwise.
pub fn read_interactions(
    ds: &mut Dataset,
    path: &Path,
    users_known: bool,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    let mut reader = SCHEMAS[3].open(path)?;
    interactions_rows(ds, &mut reader, users_known, strictness, report)
}

fn interactions_rows(
    ds: &mut Dataset,
    reader: &mut TableReader,
    users_known: bool,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    let path = &reader.path().to_path_buf();
    for_each_record(reader, SCHEMAS[3].required, strictness, report, |r, _| {
        let ctx = FieldCtx { path, line: r.line };
        let user_id = ctx.required(r.get(0).map(str::to_owned), "user", "a user id")?;
        let product_id = ctx.required(r.get(1).map(str::to_owned), "product", "a product id")?;
        let product = ds
            .catalog
            .find(&product_id)
            .ok_or_else(|| Error::UnknownRef {
                at: ctx.at("product"),
                what: "product",
                id: product_id.clone(),
                hint: "not an id of the products file".into(),
            })?;
        let kind_text = r.get(2).unwrap_or("");
        let kind = Kind::parse(kind_text).ok_or_else(|| Error::Field {
            at: ctx.at("kind"),
            expected: "one of view, click, add_to_cart, purchase".into(),
            found: kind_text.to_owned(),
        })?;
        let time = ctx.int(r.get(3), "time")?;
        let session = match ctx.opt_int(r.get(4), "session")? {
            Some(s) if s < 0 => {
                return Err(Error::Field {
                    at: ctx.at("session"),
                    expected: "a non-negative integer".into(),
                    found: s.to_string(),
                })
            }
            s => s.map(|s| s as u64),
        };
        let price = ctx.opt_f32(r.get(6), "price")?;
        let user = if users_known {
            ds.users.find(&user_id).ok_or_else(|| Error::UnknownRef {
                at: ctx.at("user"),
                what: "user",
                id: user_id.clone(),
                hint: "not an id of the users file".into(),
            })?
        } else {
            ds.users.get_or_insert(&user_id)
        };
        let query = r
            .get(5)
            .filter(|q| !q.trim().is_empty())
            .map(|q| ds.queries.intern(q));
        ds.interactions.push(Interaction {
            user,
            product,
            kind,
            time,
            session,
            query,
            price,
        });
        Ok(())
    })
}

/// Reads a judgments table (`query, product, relevance`).
pub fn read_judgments(
    ds: &mut Dataset,
    path: &Path,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    judgments_rows(ds, &mut SCHEMAS[4].open(path)?, strictness, report)
}

fn judgments_rows(
    ds: &mut Dataset,
    reader: &mut TableReader,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<()> {
    let path = &reader.path().to_path_buf();
    for_each_record(reader, SCHEMAS[4].required, strictness, report, |r, _| {
        let ctx = FieldCtx { path, line: r.line };
        let q = ctx.required(r.get(0).map(str::to_owned), "query", "a query text")?;
        let pid = r.get(1).unwrap_or("");
        let product = ds.catalog.find(pid).ok_or_else(|| Error::UnknownRef {
            at: ctx.at("product"),
            what: "product",
            id: pid.to_owned(),
            hint: "not an id of the products file".into(),
        })?;
        let rel = ctx.int(r.get(2), "relevance")?;
        if !(0..=255).contains(&rel) {
            return Err(Error::Field {
                at: ctx.at("relevance"),
                expected: "an integer grade from 0 to 255".into(),
                found: rel.to_string(),
            });
        }
        let query = ds.queries.intern(&q);
        ds.judgments.push(Judgment {
            query,
            product,
            relevance: rel as u8,
        });
        Ok(())
    })
}

/// Loads a dataset folder in the generic format (no splits are made here).
pub fn load_dir(dir: &Path, name: &str, strictness: Strictness) -> Result<Dataset> {
    // Both forms of one table: reading one and ignoring the other without a word lost data.
    for table in TABLES {
        let [csv, jsonl] = ["csv", "jsonl"].map(|ext| dir.join(format!("{table}.{ext}")));
        if csv.is_file() && jsonl.is_file() {
            return Err(Error::Dataset(format!(
                "{}: both {table}.csv and {table}.jsonl are here; aisle reads one file per table, so keep one (or merge them)",
                dir.display()
            )));
        }
    }
    required_table(dir, "taxonomy")?;
    required_table(dir, "products")?;
    load_tables(name, strictness, |table, schema| {
        table_path(dir, table).map(|p| schema.open(&p)).transpose()
    })
}

/// Loads a dataset in the generic format from files held in memory, as `(file name, bytes)`
/// pairs such as `("products.jsonl", ..)`: what [`load_dir`] does with a folder's files.
pub fn load_bytes(name: &str, files: &[(&str, &[u8])], strictness: Strictness) -> Result<Dataset> {
    load_tables(name, strictness, |table, schema| {
        let file = files
            .iter()
            .find(|(f, _)| Path::new(f).file_stem().and_then(|s| s.to_str()) == Some(table));
        file.map(|(f, bytes)| schema.from_bytes(Path::new(f), bytes))
            .transpose()
    })
}

/// Loads the tables `open` finds (by name in [`TABLES`], with their [`SCHEMAS`]), in load order.
fn load_tables(
    name: &str,
    strictness: Strictness,
    mut open: impl FnMut(&str, &Schema) -> Result<Option<TableReader>>,
) -> Result<Dataset> {
    let mut open = |i: usize| open(TABLES[i], &SCHEMAS[i]);
    let missing = |table: &str| {
        Error::Dataset(format!(
            "{name}: no {table} table (see docs/data-format.md)"
        ))
    };
    let mut report = ImportReport::new();
    let mut taxonomy = open(0)?.ok_or_else(|| missing("taxonomy"))?;
    let taxonomy = taxonomy_rows(&mut taxonomy, strictness, &mut report)?;
    let mut ds = Dataset::new(name, taxonomy);
    let mut products = open(1)?.ok_or_else(|| missing("products"))?;
    products_rows(&mut ds, &mut products, strictness, &mut report)?;
    let users = open(2)?;
    let users_known = users.is_some();
    if let Some(mut r) = users {
        users_rows(&mut ds, &mut r, strictness, &mut report)?;
    }
    if let Some(mut r) = open(3)? {
        interactions_rows(&mut ds, &mut r, users_known, strictness, &mut report)?;
    }
    if let Some(mut r) = open(4)? {
        judgments_rows(&mut ds, &mut r, strictness, &mut report)?;
    }
    ds.report = report;
    Ok(ds)
}

/// Writes `path` through a temporary file renamed into place, so a crash never leaves half a file.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    super::write_atomic(path, fill).map_err(|e| Error::io(path, e))
}

fn csv_writer(w: &mut dyn Write) -> csv::Writer<&mut dyn Write> {
    csv::WriterBuilder::new().from_writer(w)
}

fn csv_io(e: csv::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Writes a dataset to `dir` in the generic format (CSV), one file at a time through temporary
/// files. Splits are not written: they are recomputed from the seed.
pub fn write_dir(ds: &Dataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let t = &ds.taxonomy;
    write_atomically(&dir.join("taxonomy.csv"), |w| {
        let mut c = csv_writer(w);
        c.write_record(["id", "parent", "name"]).map_err(csv_io)?;
        for n in t.nodes().skip(1) {
            let parent = t.parent(n).map(|p| t.id(p)).unwrap_or("");
            c.write_record([t.id(n), parent, t.name(n)])
                .map_err(csv_io)?;
        }
        c.flush()
    })?;
    write_atomically(&dir.join("products.csv"), |w| {
        let mut c = csv_writer(w);
        c.write_record([
            "id",
            "title",
            "description",
            "brand",
            "price",
            "category",
            "attributes",
        ])
        .map_err(csv_io)?;
        for (_, p) in ds.catalog.iter() {
            let price = p.price.map(|x| x.to_string()).unwrap_or_default();
            let attrs = if p.attributes.is_empty() {
                String::new()
            } else {
                let map: serde_json::Map<String, serde_json::Value> = p
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                serde_json::Value::Object(map).to_string()
            };
            c.write_record([
                p.id.as_str(),
                &p.title,
                &p.description,
                &p.brand,
                &price,
                t.id(p.category),
                &attrs,
            ])
            .map_err(csv_io)?;
        }
        c.flush()
    })?;
    if !ds.users.is_empty() {
        let mut demo_cols: Vec<String> = Vec::new();
        for (_, u) in ds.users.iter() {
            for (k, _) in &u.demographics {
                if !demo_cols.contains(k) {
                    demo_cols.push(k.clone());
                }
            }
        }
        write_atomically(&dir.join("users.csv"), |w| {
            let mut c = csv_writer(w);
            let mut header = vec!["id".to_owned(), "segment".to_owned()];
            header.extend(demo_cols.iter().cloned());
            c.write_record(&header).map_err(csv_io)?;
            let mut row: Vec<String> = Vec::with_capacity(header.len());
            for (_, u) in ds.users.iter() {
                row.clear();
                row.push(u.id.clone());
                row.push(u.segment.clone().unwrap_or_default());
                for col in &demo_cols {
                    let v = u.demographics.iter().find(|(k, _)| k == col);
                    row.push(v.map(|(_, v)| v.clone()).unwrap_or_default());
                }
                c.write_record(&row).map_err(csv_io)?;
            }
            c.flush()
        })?;
    }
    if !ds.interactions.is_empty() {
        write_atomically(&dir.join("interactions.csv"), |w| write_interactions(ds, w))?;
    }
    if !ds.judgments.is_empty() {
        write_atomically(&dir.join("judgments.csv"), |w| {
            let mut c = csv_writer(w);
            c.write_record(["query", "product", "relevance"])
                .map_err(csv_io)?;
            for j in &ds.judgments {
                c.write_record([
                    ds.queries.text(j.query),
                    &ds.catalog.get(j.product).id,
                    &j.relevance.to_string(),
                ])
                .map_err(csv_io)?;
            }
            c.flush()
        })?;
    }
    Ok(())
}

/// Interactions as CSV (the largest table: 10M rows at the scale benchmark's size).
fn write_interactions(ds: &Dataset, w: &mut dyn Write) -> std::io::Result<()> {
    let mut c = csv_writer(w);
    c.write_record([
        "user", "product", "kind", "time", "session", "query", "price",
    ])
    .map_err(csv_io)?;
    let (mut time, mut session, mut price) = (String::new(), String::new(), String::new());
    for e in &ds.interactions {
        use std::fmt::Write as _;
        time.clear();
        session.clear();
        price.clear();
        let _ = write!(time, "{}", e.time);
        if let Some(s) = e.session {
            let _ = write!(session, "{s}");
        }
        if let Some(p) = e.price {
            let _ = write!(price, "{p}");
        }
        let query = e.query.map(|q| ds.queries.text(q)).unwrap_or("");
        c.write_record([
            ds.users.get(e.user).id.as_str(),
            ds.catalog.get(e.product).id.as_str(),
            e.kind.as_str(),
            &time,
            &session,
            query,
            &price,
        ])
        .map_err(csv_io)?;
    }
    c.flush()
}
