//! Replays the committed fuzz corpora of aisle-model's targets (fuzz/README.md): every input must
//! come back without a panic, through the same harness functions the fuzz targets call.

#[path = "../../../fuzz/harness/model.rs"]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn model_file() {
    replay("model_file", harness::model_file);
}
