//! Instacart 2017: the full catalog under department > aisle, and 593 customers' complete order
//! histories as purchase interactions (time = the user's order number, session = the order id).
//! There are no search queries: the protocol builds them from the taxonomy (see
//! [`crate::split::leave_last_order_out`]).

use std::collections::HashMap;
use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{Error, ImportReport, Result, Strictness};
use crate::io::generic::finish_taxonomy;
use crate::io::table::{for_each_record, Encoding, FieldCtx, TableReader};
use crate::model::{Interaction, Kind, Product};
use crate::taxonomy::TaxonomyBuilder;

fn read_names(
    path: &Path,
    id_col: &'static str,
    name_col: &'static str,
    strictness: Strictness,
    report: &mut ImportReport,
) -> Result<HashMap<String, String>> {
    let cols = [id_col, name_col];
    let mut reader = TableReader::open(path, &cols, &cols, Encoding::Utf8)?;
    let mut names = HashMap::new();
    let mut lines: HashMap<String, u64> = HashMap::new();
    for_each_record(&mut reader, &cols, strictness, report, |mut r, _| {
        let ctx = FieldCtx { path, line: r.line };
        let id = ctx.required(r.take(0), id_col, "an id")?;
        let name = ctx.required(r.take(1), name_col, "a name")?;
        if let Some(&first) = lines.get(&id) {
            return Err(Error::Duplicate {
                at: ctx.at(id_col),
                what: name_col,
                id,
                first_line: Some(first),
            });
        }
        lines.insert(id.clone(), r.line);
        names.insert(id, name);
        Ok(())
    })?;
    Ok(names)
}

/// Loads the folder `instacart/` (products.csv, aisles.csv, departments.csv, order_lines.csv).
pub fn load(dir: &Path, strictness: Strictness) -> Result<Dataset> {
    let mut report = ImportReport::new();
    let departments = read_names(
        &dir.join("departments.csv"),
        "department_id",
        "department",
        strictness,
        &mut report,
    )?;
    let aisles = read_names(
        &dir.join("aisles.csv"),
        "aisle_id",
        "aisle",
        strictness,
        &mut report,
    )?;

    // Pass 1: products, checked against aisles and departments; the tree comes from the
    // (department, aisle) pairs the products use.
    let products_path = dir.join("products.csv");
    const PCOLS: [&str; 4] = ["product_id", "product_name", "aisle_id", "department_id"];
    let mut reader = TableReader::open(&products_path, &PCOLS, &PCOLS, Encoding::Utf8)?;
    let mut rows: Vec<(String, String, String)> = Vec::new(); // (id, name, aisle node id)
    let mut tree = TaxonomyBuilder::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for_each_record(&mut reader, &PCOLS, strictness, &mut report, |mut r, _| {
        let ctx = FieldCtx {
            path: &products_path,
            line: r.line,
        };
        let id = ctx.required(r.take(0), "product_id", "a product id")?;
        // Quotes inside names are escaped twice in this file (`9\""x13\""`): undo the backslash.
        let name = ctx
            .required(r.take(1), "product_name", "a product name")?
            .replace("\\\"", "\"");
        let aisle = ctx.required(r.take(2), "aisle_id", "an aisle id")?;
        let dept = ctx.required(r.take(3), "department_id", "a department id")?;
        let aisle_name = aisles.get(&aisle).ok_or_else(|| Error::UnknownRef {
            at: ctx.at("aisle_id"),
            what: "aisle",
            id: aisle.clone(),
            hint: "not in aisles.csv".into(),
        })?;
        let dept_name = departments.get(&dept).ok_or_else(|| Error::UnknownRef {
            at: ctx.at("department_id"),
            what: "department",
            id: dept.clone(),
            hint: "not in departments.csv".into(),
        })?;
        if let Some(&first) = first_line.get(&id) {
            return Err(Error::Duplicate {
                at: ctx.at("product_id"),
                what: "product",
                id,
                first_line: Some(first),
            });
        }
        let (dept_id, aisle_id) = (format!("d{dept}"), format!("a{aisle}"));
        tree.add_path(
            [
                (dept_id.as_str(), dept_name.as_str()),
                (aisle_id.as_str(), aisle_name.as_str()),
            ],
            Some(r.line),
        );
        first_line.insert(id.clone(), r.line);
        rows.push((id, name, aisle_id));
        Ok(())
    })?;
    let taxonomy = finish_taxonomy(tree, &products_path, strictness, &mut report)?;
    let mut ds = Dataset::new("instacart", taxonomy);
    for (id, title, aisle) in rows {
        let Some(category) = ds.taxonomy.node(&aisle) else {
            report.count("product under a dropped category", || {
                format!("product {id}")
            });
            continue;
        };
        let _ = ds.catalog.push(Product {
            id,
            title,
            description: String::new(),
            brand: String::new(),
            price: None,
            attributes: Vec::new(),
            category,
        });
    }

    // Pass 2: order lines.
    let orders_path = dir.join("order_lines.csv");
    const OCOLS: [&str; 4] = ["order_id", "user_id", "order_number", "product_id"];
    let mut reader = TableReader::open(&orders_path, &OCOLS, &OCOLS, Encoding::Utf8)?;
    for_each_record(&mut reader, &OCOLS, strictness, &mut report, |r, _| {
        let ctx = FieldCtx {
            path: &orders_path,
            line: r.line,
        };
        let order = ctx.int(r.get(0), "order_id")?;
        let user = ctx.required(r.get(1).map(str::to_owned), "user_id", "a user id")?;
        let number = ctx.int(r.get(2), "order_number")?;
        let pid = r.get(3).unwrap_or("");
        let product = ds.catalog.find(pid).ok_or_else(|| Error::UnknownRef {
            at: ctx.at("product_id"),
            what: "product",
            id: pid.to_owned(),
            hint: "not in products.csv".into(),
        })?;
        if order < 0 {
            return Err(Error::Field {
                at: ctx.at("order_id"),
                expected: "a non-negative order id".into(),
                found: order.to_string(),
            });
        }
        let user = ds.users.get_or_insert(&user);
        ds.interactions.push(Interaction {
            user,
            product,
            kind: Kind::Purchase,
            time: number,
            session: Some(order as u64),
            query: None,
            price: None,
        });
        Ok(())
    })?;
    ds.report = report;
    ds.notes
        .push("time is the customer's order number (1..N): Instacart publishes no dates".into());
    Ok(ds)
}
