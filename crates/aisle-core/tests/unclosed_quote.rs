//! A CSV quote opened and never properly closed (issue 20, item 6): the csv crate reads the lines
//! after it into that one field, so a lenient import counted one skipped row and lost the good rows
//! after it, and a strict one could load a wrong row. Now the row is an error at the line where
//! the quote opened, naming the field, and the lines after it are read again. A quoted field
//! that holds a line break and closes properly (a description of two lines) still loads.

use aisle_core::io::generic::{load_bytes, load_dir};
use aisle_core::{Dataset, Error, Result, Strictness};

const TAXONOMY: &str = "id,parent,name\nel,,Electronics\ntv,el,TVs\n";

fn load(products: &str, strictness: Strictness) -> Result<Dataset> {
    load_bytes(
        "shop",
        &[
            ("taxonomy.csv", TAXONOMY.as_bytes()),
            ("products.csv", products.as_bytes()),
        ],
        strictness,
    )
}

/// Product ids and titles, in load order.
fn products(ds: &Dataset) -> Vec<(String, String)> {
    ds.catalog
        .iter()
        .map(|(_, p)| (p.id.clone(), p.title.clone()))
        .collect()
}

fn ids(ds: &Dataset) -> Vec<String> {
    products(ds).into_iter().map(|p| p.0).collect()
}

fn report(ds: &Dataset) -> Vec<(String, u64)> {
    ds.report
        .entries()
        .map(|(r, n, _)| (r.to_owned(), n))
        .collect()
}

/// The quote of line 2 is never closed: the file ends inside it.
#[test]
fn a_quote_the_file_ends_inside_is_an_error_and_lenient_keeps_the_rows_after_it() {
    let csv = "id,title,category\np1,\"Bad title,tv\np2,Good,tv\np3,Fine,tv\n";
    let err = load(csv, Strictness::Strict).expect_err("unclosed quote");
    assert!(matches!(err, Error::UnclosedQuote { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "products.csv:2: field `title`: a quote opened here is not closed before the next line's \
         record (the file ends inside it)"
    );
    let ds = load(csv, Strictness::Lenient).expect("lenient");
    assert_eq!(ids(&ds), ["p2", "p3"]);
    assert_eq!(report(&ds), [("unclosed quote".to_owned(), 1)]);
}

/// The quote of line 2 "closes" at the opening quote of line 4's title: the record then has the
/// header's three fields, and a strict import loaded `p1` with three lines in its title.
#[test]
fn a_quote_closed_by_a_later_fields_quote_is_an_error_not_a_wrong_row() {
    let csv = "id,title,category\np1,\"Bad title,tv\np2,Good,tv\np3,\"Fine\",tv\np4,Good too,tv\n";
    let err = load(csv, Strictness::Strict).expect_err("unclosed quote");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "products.csv:2: field `title`: a quote opened here is not closed before the next \
             line's record (the quote that ends it, on line 4, is followed by `Fine\"`"
        ),
        "{msg}"
    );
    let ds = load(csv, Strictness::Lenient).expect("lenient");
    assert_eq!(
        products(&ds),
        [
            ("p2".to_owned(), "Good".to_owned()),
            ("p3".to_owned(), "Fine".to_owned()),
            ("p4".to_owned(), "Good too".to_owned()),
        ]
    );
    assert_eq!(report(&ds), [("unclosed quote".to_owned(), 1)]);
}

/// Rows read again after an unclosed quote keep the line numbers they have in a file whose
/// line 2 is good, with LF and with CRLF line ends.
#[test]
fn rows_after_an_unclosed_quote_keep_their_line_numbers() {
    let unknown_category = |ds: &Dataset| -> Vec<String> {
        ds.report
            .entries()
            .filter(|(r, _, _)| *r == "unknown category id")
            .map(|(_, _, ex)| ex.to_owned())
            .collect()
    };
    for eol in ["\n", "\r\n"] {
        let file =
            |row2: &str| ["id,title,category", row2, "p2,Good,tv", "p3,Fine,zz", ""].join(eol);
        let err = load(&file("p1,\"Bad,tv"), Strictness::Strict).expect_err("unclosed quote");
        assert!(
            err.to_string().starts_with("products.csv:2: field `title`"),
            "{err}"
        );
        let ds = load(&file("p1,\"Bad,tv"), Strictness::Lenient).expect("lenient");
        assert_eq!(ids(&ds), ["p2"]);
        let good = load(&file("p1,Ok,tv"), Strictness::Lenient).expect("lenient");
        assert_eq!(ids(&good), ["p1", "p2"]);
        assert_eq!(unknown_category(&ds), unknown_category(&good), "{eol:?}");
        assert_eq!(unknown_category(&ds).len(), 1);
    }
    // With LF line ends, that is the row's own line.
    let ds = load(
        "id,title,category\np1,\"Bad,tv\np2,Good,tv\np3,Fine,zz\n",
        Strictness::Lenient,
    )
    .expect("lenient");
    assert!(
        unknown_category(&ds)[0].starts_with("products.csv:4: field `category`"),
        "{:?}",
        unknown_category(&ds)
    );
}

/// Legal CSV: quoted fields with line breaks (and an escaped quote) that close properly.
#[test]
fn a_quoted_field_of_several_lines_still_loads() {
    let csv = "id,title,description,category\n\
               p1,\"OLED TV\",\"Line one,\nline two, with \"\"quotes\"\"\",tv\n\
               p2,\"Samsung 55\"\" TV\r\nwith stand\" ,\"a\n\nb\",tv\n\
               p3,Plain,,tv\n";
    let ds = load(csv, Strictness::Strict).expect("legal CSV");
    assert_eq!(ids(&ds), ["p1", "p2", "p3"]);
    let p1 = ds.catalog.iter().next().expect("p1").1;
    assert_eq!(p1.description, "Line one,\nline two, with \"quotes\"");
    assert!(ds.report.is_empty(), "{:?}", report(&ds));
}

/// A properly closed multi-line field in a row with too many fields stays a field-count error
/// (the row alone is skipped: its second line is not read again as a record), and says which
/// field spans lines.
#[test]
fn a_closed_multi_line_field_in_a_row_of_the_wrong_width_is_a_field_count_error() {
    let csv = "id,title,category\np1,\"two\nlines, b, c\",tv,extra\np2,Good,tv\n";
    let err = load(csv, Strictness::Strict).expect_err("too many fields");
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "expected 3 fields as in the header, found 4; quoted field `title` spans lines 2-3"
        ),
        "{err}"
    );
    let ds = load(csv, Strictness::Lenient).expect("lenient");
    assert_eq!(ids(&ds), ["p2"]);
    assert_eq!(report(&ds), [("malformed row".to_owned(), 1)]);
}

/// The same from files on disk (the reader seeks in the file rather than in memory), with a file
/// larger than the csv reader's buffer so that the bad record is read back from the file.
#[test]
fn files_on_disk_are_read_again_after_an_unclosed_quote() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("taxonomy.csv"), TAXONOMY).expect("write");
    let mut csv = String::from("id,title,category\n");
    for i in 0..2000 {
        csv.push_str(&format!("a{i},Item {i},tv\n"));
    }
    csv.push_str("p1,\"Bad title,tv\n");
    for i in 0..2000 {
        csv.push_str(&format!("b{i},Item {i},tv\n"));
    }
    std::fs::write(d.path().join("products.csv"), &csv).expect("write");
    let err = load_dir(d.path(), "shop", Strictness::Strict).expect_err("unclosed quote");
    assert!(
        err.to_string()
            .contains("products.csv:2002: field `title`: a quote opened here"),
        "{err}"
    );
    let ds = load_dir(d.path(), "shop", Strictness::Lenient).expect("lenient");
    assert_eq!(ds.catalog.len(), 4000);
    assert_eq!(report(&ds), [("unclosed quote".to_owned(), 1)]);
}
