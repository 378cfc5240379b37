//! What the aisle-model fuzz target feeds the library; `fuzz/fuzz_targets/model_file.rs` and
//! `crates/aisle-model/tests/fuzz_corpus.rs` (which replays the corpus) both call this.
#![allow(dead_code)]

use std::path::Path;

use aisle_model::artifact::{from_bytes, FORMAT_VERSION, MAGIC};

/// A model file. The input is the body after the magic and version: the harness adds those and
/// the trailing CRC-32, so the fuzzer gets past the checksum to the header and weights parser.
/// The input as a whole file is tried too.
pub fn model_file(data: &[u8]) {
    let path = Path::new("fuzz.aisle");
    let _ = from_bytes(data, path);
    let mut file = Vec::with_capacity(data.len() + 16);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(data);
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    let _ = from_bytes(&file, path);
}
