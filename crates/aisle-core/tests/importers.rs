//! The generic-format importer on good files (CSV and JSONL) and on one file per kind of bad input.

use std::path::Path;

use aisle_core::io::generic::{load_dir, write_dir};
use aisle_core::{Error, Kind, Strictness, TaxonomyError};

const TAXONOMY: &str =
    "id,parent,name\nel,,Electronics\ntv,el,TVs\noled,tv,OLED TVs\nqled,tv,QLED TVs\n";
const PRODUCTS: &str = "id,title,description,brand,price,category,attributes\n\
p1,LG OLED55C3 55 inch OLED TV,Self-lit pixels,LG,1299.99,oled,\"{\"\"size\"\":\"\"55 inch\"\",\"\"colour\"\":\"\"black\"\"}\"\n\
p2,Samsung QN65Q80C 65 inch QLED TV,,Samsung,999,qled,\n\
p3,Sony Bravia 55 inch OLED,,Sony,,oled,\n";
const USERS: &str = "id,segment,age_band\nu1,premium,35-44\nu2,budget,\n";
const INTERACTIONS: &str = "user,product,kind,time,session,query,price\n\
u1,p1,click,1700000000,1,oled tv,\n\
u1,p1,purchase,1700000100,1,oled tv,1299.99\n\
u2,p2,click,1700000200,2,Samsung TV,\n\
u2,p3,view,1700000300,,,\n";
const JUDGMENTS: &str = "query,product,relevance\noled tv,p1,3\noled tv,p3,2\n";

fn write(dir: &Path, name: &str, text: &[u8]) {
    std::fs::write(dir.join(name), text).expect("write test file");
}

fn good_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "taxonomy.csv", TAXONOMY.as_bytes());
    write(d.path(), "products.csv", PRODUCTS.as_bytes());
    write(d.path(), "users.csv", USERS.as_bytes());
    write(d.path(), "interactions.csv", INTERACTIONS.as_bytes());
    write(d.path(), "judgments.csv", JUDGMENTS.as_bytes());
    d
}

fn strict(dir: &Path) -> Result<aisle_core::Dataset, Error> {
    load_dir(dir, "t", Strictness::Strict)
}

#[test]
fn good_csv_files_load() {
    let d = good_dir();
    let ds = strict(d.path()).expect("loads");
    assert_eq!(ds.catalog.len(), 3);
    assert_eq!(ds.taxonomy.len(), 5);
    assert_eq!(ds.users.len(), 2);
    assert_eq!(ds.interactions.len(), 4);
    assert_eq!(ds.judgments.len(), 2);
    let p1 = ds.catalog.get(ds.catalog.find("p1").expect("p1"));
    assert_eq!(p1.price, Some(1299.99));
    assert_eq!(p1.brand, "LG");
    assert!(p1.attributes.contains(&("size".into(), "55 inch".into())));
    assert_eq!(
        ds.taxonomy.path_string(p1.category),
        "Electronics > TVs > OLED TVs"
    );
    let u1 = ds.users.get(ds.users.find("u1").expect("u1"));
    assert_eq!(u1.segment.as_deref(), Some("premium"));
    assert_eq!(
        u1.demographics,
        vec![("age_band".to_owned(), "35-44".to_owned())]
    );
    assert_eq!(ds.interactions[1].kind, Kind::Purchase);
    assert_eq!(ds.interactions[1].session, Some(1));
    assert_eq!(ds.interactions[3].query, None);
    // "Samsung TV" is interned in normalised form; "oled tv" is shared with the judgments.
    assert_eq!(ds.queries.len(), 2);
    assert!(ds.queries.find("samsung tv").is_some());
    assert!(ds.report.is_empty());
}

#[test]
fn good_jsonl_files_load_the_same() {
    let d = tempfile::tempdir().expect("tempdir");
    write(
        d.path(),
        "taxonomy.jsonl",
        b"{\"id\":\"el\",\"name\":\"Electronics\"}\n{\"id\":\"tv\",\"parent\":\"el\",\"name\":\"TVs\"}\n\n",
    );
    write(
        d.path(),
        "products.jsonl",
        b"{\"id\":\"p1\",\"title\":\"LG OLED TV\",\"price\":1299.5,\"category\":\"tv\",\"attributes\":{\"size\":\"55 inch\",\"hdr\":true}}\n",
    );
    write(
        d.path(),
        "interactions.jsonl",
        b"{\"user\":\"u1\",\"product\":\"p1\",\"kind\":\"purchase\",\"time\":5,\"query\":\"OLED\"}\n",
    );
    let ds = strict(d.path()).expect("loads");
    assert_eq!(ds.catalog.len(), 1);
    let p = ds.catalog.get(aisle_core::ProductId(0));
    assert_eq!(p.price, Some(1299.5));
    assert!(p.attributes.contains(&("hdr".into(), "true".into())));
    assert_eq!(
        ds.users.len(),
        1,
        "users are created from interactions when there is no users file"
    );
    assert_eq!(
        ds.queries.text(ds.interactions[0].query.expect("query")),
        "oled"
    );
}

#[test]
fn round_trip_through_the_writer() {
    let d = good_dir();
    let ds = strict(d.path()).expect("loads");
    let out = tempfile::tempdir().expect("tempdir");
    write_dir(&ds, out.path()).expect("writes");
    let back = strict(out.path()).expect("reloads");
    assert_eq!(back.catalog.products(), ds.catalog.products());
    assert_eq!(back.interactions, ds.interactions);
    assert_eq!(back.judgments, ds.judgments);
    assert_eq!(back.taxonomy.len(), ds.taxonomy.len());
    for (_, u) in ds.users.iter() {
        let b = back.users.get(back.users.find(&u.id).expect("user"));
        assert_eq!(b, u);
    }
    // No temporary file is left behind.
    for e in std::fs::read_dir(out.path()).expect("list") {
        let name = e.expect("entry").file_name();
        assert!(!name.to_string_lossy().contains(".tmp"), "{name:?}");
    }
}

/// Replaces one file of the good dataset and returns the strict error.
fn error_with(file: &str, text: &[u8]) -> Error {
    let d = good_dir();
    write(d.path(), file, text);
    strict(d.path()).expect_err("bad input must be refused")
}

fn assert_located(err: &Error, file: &str, line: u64, field: Option<&str>) {
    let msg = err.to_string();
    assert!(msg.contains(&format!("{file}:{line}")), "{msg}");
    if let Some(f) = field {
        assert!(msg.contains(&format!("field `{f}`")), "{msg}");
    }
}

#[test]
fn malformed_row() {
    let text = format!("{PRODUCTS}p4,Too few fields\n");
    let err = error_with("products.csv", text.as_bytes());
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert_located(&err, "products.csv", 5, None);
    assert!(err.to_string().contains("expected 7 fields"), "{err}");
}

#[test]
fn malformed_jsonl_line() {
    let d = good_dir();
    std::fs::remove_file(d.path().join("interactions.csv")).expect("rm");
    write(
        d.path(),
        "interactions.jsonl",
        b"{\"user\":\"u1\",\"product\":\"p1\",\"kind\":\"click\",\"time\":1}\n{\"user\": \"u1\",\n",
    );
    let err = strict(d.path()).expect_err("bad json");
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert_located(&err, "interactions.jsonl", 2, None);
}

#[test]
fn missing_column() {
    let err = error_with("products.csv", b"id,description,category\np1,x,oled\n");
    assert!(
        matches!(err, Error::MissingColumn { ref column, .. } if column == "title"),
        "{err}"
    );
    assert!(err.to_string().contains("products.csv:1"), "{err}");
}

#[test]
fn bad_field_values() {
    let text = INTERACTIONS.replace("u2,p2,click", "u2,p2,wishlist");
    let err = error_with("interactions.csv", text.as_bytes());
    assert_located(&err, "interactions.csv", 4, Some("kind"));
    assert!(
        err.to_string()
            .contains("one of view, click, add_to_cart, purchase"),
        "{err}"
    );
    let text = PRODUCTS.replace(",999,", ",cheap,");
    let err = error_with("products.csv", text.as_bytes());
    assert_located(&err, "products.csv", 3, Some("price"));
    let text = INTERACTIONS.replace("1700000200", "yesterday");
    let err = error_with("interactions.csv", text.as_bytes());
    assert_located(&err, "interactions.csv", 4, Some("time"));
    let text = PRODUCTS.replace(",qled,", ",qled,[1]");
    let err = error_with("products.csv", text.as_bytes());
    assert_located(&err, "products.csv", 3, Some("attributes"));
}

#[test]
fn unknown_product_in_interaction() {
    let text = format!("{INTERACTIONS}u1,p99,click,1700000400,3,tv,\n");
    let err = error_with("interactions.csv", text.as_bytes());
    assert!(
        matches!(
            err,
            Error::UnknownRef {
                what: "product",
                ..
            }
        ),
        "{err}"
    );
    assert_located(&err, "interactions.csv", 6, Some("product"));
    assert!(err.to_string().contains("`p99`"), "{err}");
}

#[test]
fn unknown_user_and_category() {
    let text = format!("{INTERACTIONS}u9,p1,click,1700000400,3,tv,\n");
    let err = error_with("interactions.csv", text.as_bytes());
    assert!(
        matches!(err, Error::UnknownRef { what: "user", .. }),
        "{err}"
    );
    let text = format!("{PRODUCTS}p4,Thing,,,,nowhere,\n");
    let err = error_with("products.csv", text.as_bytes());
    assert!(
        matches!(
            err,
            Error::UnknownRef {
                what: "category",
                ..
            }
        ),
        "{err}"
    );
    assert_located(&err, "products.csv", 5, Some("category"));
}

#[test]
fn duplicate_ids() {
    let text = format!("{PRODUCTS}p2,Another p2,,,,qled,\n");
    let err = error_with("products.csv", text.as_bytes());
    assert!(
        matches!(
            err,
            Error::Duplicate {
                what: "product",
                first_line: Some(3),
                ..
            }
        ),
        "{err}"
    );
    assert_located(&err, "products.csv", 5, Some("id"));
    let text = format!("{TAXONOMY}tv,el,TVs again\n");
    let err = error_with("taxonomy.csv", text.as_bytes());
    assert!(
        matches!(err, Error::Taxonomy { ref error, .. } if matches!(**error, TaxonomyError::DuplicateId { line: Some(6), first_line: Some(3), .. })),
        "{err}"
    );
    assert!(err.to_string().contains("taxonomy.csv"), "{err}");
}

#[test]
fn taxonomy_cycle_and_orphan() {
    let text =
        "id,parent,name\nel,qled,Electronics\ntv,el,TVs\noled,tv,OLED TVs\nqled,tv,QLED TVs\n";
    let err = error_with("taxonomy.csv", text.as_bytes());
    match &err {
        Error::Taxonomy { error, .. } if matches!(**error, TaxonomyError::Cycle { .. }) => {
            let TaxonomyError::Cycle { cycle, line, .. } = &**error else {
                unreachable!()
            };
            assert_eq!(*line, Some(2));
            assert!(cycle.contains(&"qled".to_owned()) && cycle.contains(&"el".to_owned()));
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(err.to_string().contains("taxonomy.csv"), "{err}");
    let text = format!("{TAXONOMY}x,missing,X\n");
    let err = error_with("taxonomy.csv", text.as_bytes());
    assert!(
        matches!(err, Error::Taxonomy { ref error, .. } if matches!(**error, TaxonomyError::Orphan { line: Some(6), .. })),
        "{err}"
    );
}

#[test]
fn invalid_utf8() {
    let mut text = PRODUCTS.as_bytes().to_vec();
    let pos = text.windows(4).position(|w| w == b"Sony").expect("Sony");
    text[pos + 1] = 0xF6; // a Latin-1 "ö" in a UTF-8 file
    let err = error_with("products.csv", &text);
    assert!(matches!(err, Error::InvalidUtf8 { .. }), "{err}");
    assert_located(&err, "products.csv", 4, Some("title"));
}

#[test]
fn lenient_skips_and_counts_per_reason() {
    let d = good_dir();
    let products = format!("{PRODUCTS}p4,Too few\np2,Dup,,,,qled,\np5,Ok product,,,,qled,\n");
    write(d.path(), "products.csv", products.as_bytes());
    let interactions =
        format!("{INTERACTIONS}u1,p99,click,1,,,\nu1,p4,click,2,,,\nu1,p5,click,3,,,\n");
    write(d.path(), "interactions.csv", interactions.as_bytes());
    let ds = load_dir(d.path(), "t", Strictness::Lenient).expect("lenient load");
    assert_eq!(ds.catalog.len(), 4);
    assert_eq!(ds.interactions.len(), 5);
    let counts: Vec<(String, u64)> = ds
        .report
        .entries()
        .map(|(r, n, _)| (r.to_owned(), n))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("duplicate product id".to_owned(), 1),
            ("malformed row".to_owned(), 1),
            ("unknown product id".to_owned(), 2),
        ]
    );
}

#[test]
fn missing_required_file() {
    let d = good_dir();
    std::fs::remove_file(d.path().join("products.csv")).expect("rm");
    let err = strict(d.path()).expect_err("no products");
    assert!(
        err.to_string().contains("products.csv or products.jsonl"),
        "{err}"
    );
}
