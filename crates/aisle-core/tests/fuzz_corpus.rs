//! Replays the committed fuzz corpora of aisle-core's targets (fuzz/README.md): every input must
//! come back without a panic, through the same harness functions the fuzz targets call.

#[path = "../../../fuzz/harness/core.rs"]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn import_csv() {
    replay("import_csv", harness::import_csv);
}

#[test]
fn import_jsonl() {
    replay("import_jsonl", harness::import_jsonl);
}

#[test]
fn flipkart_literal() {
    replay("flipkart_literal", harness::flipkart_literal);
}

#[test]
fn taxonomy() {
    replay("taxonomy", harness::taxonomy);
}
