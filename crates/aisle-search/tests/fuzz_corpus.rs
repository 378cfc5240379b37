//! Replays the committed fuzz corpora of aisle-search's targets (fuzz/README.md): every input must
//! come back without a panic, through the same harness functions the fuzz targets call.

#[path = "../../../fuzz/harness/search.rs"]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn index_file() {
    replay("index_file", harness::index_file);
}

#[test]
fn index_payload() {
    replay("index_payload", harness::index_payload);
}

#[test]
fn rerank_head() {
    replay("rerank_head", harness::rerank_head);
}
