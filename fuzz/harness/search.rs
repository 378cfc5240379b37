//! What the aisle-search fuzz targets feed the library; the targets in `fuzz/fuzz_targets/` and
//! `crates/aisle-search/tests/fuzz_corpus.rs` (which replays the corpora) both call these.
#![allow(dead_code)]

use std::path::Path;

use aisle_search::rerank::HeadFile;
use aisle_search::vector::{INDEX_FORMAT, INDEX_MAGIC};
use aisle_search::{HnswIndex, IndexStamp, VectorIndex};

/// The dimension `index_file` opens its input with.
pub const INDEX_FILE_DIM: usize = 4;

/// Searches a loaded index, so that a graph that loads but is broken is walked too.
fn exercise(index: &HnswIndex, dim: usize) {
    let query: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.7).sin()).collect();
    let _ = index.search(&query, 10);
    let _ = index.search_filtered(&query, 5, |p| p.0 % 2 == 0);
}

/// A whole index file (header, checksums and usearch graph), opened with dimension 4.
pub fn index_file(data: &[u8]) {
    let stamp = IndexStamp {
        model_digest: String::new(),
        catalog_digest: String::new(),
    };
    if let Ok(index) =
        HnswIndex::from_bytes(data, Path::new("fuzz.idx"), INDEX_FILE_DIM, Some(&stamp))
    {
        exercise(&index, INDEX_FILE_DIM);
    }
}

/// A usearch graph behind a header the harness writes to match it (length, CRC-32s, dimension
/// and count from the graph's own metadata), so every input reaches usearch's loader.
pub fn index_payload(payload: &[u8]) {
    // Read by hand, not with `usearch::Index::metadata_from_buffer`: on a crafted head that
    // function's error frees an invalid pointer (found by this target; aisle no longer calls it).
    let (dim, count) = payload_shape(payload).unwrap_or((INDEX_FILE_DIM, 0));
    let header = serde_json::json!({
        "format": INDEX_FORMAT,
        "dim": dim,
        "count": count,
        "model_digest": "",
        "catalog_digest": "",
        "payload_bytes": payload.len(),
        "payload_crc32": format!("{:08x}", crc32fast::hash(payload)),
    });
    let json = header.to_string().into_bytes();
    let mut file = Vec::with_capacity(json.len() + payload.len() + 16);
    file.extend_from_slice(INDEX_MAGIC);
    file.extend_from_slice(&(json.len() as u32).to_le_bytes());
    file.extend_from_slice(&json);
    file.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    file.extend_from_slice(payload);
    // Searched too: a graph that passes aisle's check must be one usearch can walk.
    if let Ok(index) = HnswIndex::from_bytes(&file, Path::new("fuzz.idx"), dim, None) {
        exercise(&index, dim);
    }
}

/// The dimension and vector count a usearch payload's head states: the vector count and size
/// (two `u32`), the vectors, then the 64-byte head with its dimensions at byte 33.
fn payload_shape(payload: &[u8]) -> Option<(usize, usize)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let (rows, row_bytes) = (word(0)? as usize, word(4)? as usize);
    let head = rows.checked_mul(row_bytes)?.checked_add(8)?;
    let dims = payload.get(head + 33..head + 41)?;
    let dims = u64::from_le_bytes(dims.try_into().ok()?);
    (1..=4096).contains(&dims).then_some((dims as usize, rows))
}

/// A re-ranking head file (`rerank.json`).
pub fn rerank_head(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = HeadFile::from_json(text, Path::new("rerank.json"));
}
