//! Replays the committed fuzz corpora of aisle-serve's targets (fuzz/README.md): every input must
//! come back without a panic, through the same harness functions the fuzz targets call.

#[path = "../../../fuzz/harness/serve.rs"]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn search_request() {
    replay("search_request", harness::search_request);
}
