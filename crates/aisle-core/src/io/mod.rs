//! Reading and writing datasets: the generic format and the table reader it is built on.

pub mod generic;
pub mod table;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// A file- and collection-name-safe form of a name: lower-case ASCII letters and digits, each
/// run of anything else one `-`, none at either end ("TB-HNS mix + random" gives
/// "tb-hns-mix-random").
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for part in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&part.to_ascii_lowercase());
    }
    out
}

/// Writes `path` through a temporary file beside it (same folder, so the rename is atomic),
/// flushed to disk, then renamed into place: a crash or an error never leaves half a file, and
/// the file that was there stays until the new one is complete. Creates missing parent folders.
/// Every artifact aisle writes (datasets, models, checkpoints, vectors) goes through here.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
