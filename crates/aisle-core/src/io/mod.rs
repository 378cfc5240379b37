//! Reading and writing datasets: the generic format and the table reader it is built on.

pub mod generic;
pub mod table;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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

/// What every temporary file aisle writes has in its name, between the target's name and the
/// writing process's id: `.NAME.aisle-tmp-PID`. A run killed mid-write leaves one behind;
/// [`remove_stale_temps`] finds it by this name and removes it on the next write of `NAME`.
const TEMP_MARK: &str = ".aisle-tmp-";

/// The temporary sibling a write of `path` goes through before its rename: same folder (so the
/// rename is atomic), hidden, named after the target and this process.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMP_MARK}{}", std::process::id()))
}

/// Removes the temporary files that writes of `path` by processes no longer running left
/// behind (a kill mid-write; see [`temp_path`]). Returns how many it removed. A process that is
/// still running keeps its file: on Linux that is read from /proc; elsewhere a file is taken as
/// abandoned once it is an hour old. Errors are ignored: this is hygiene, not correctness.
pub fn remove_stale_temps(path: &Path) -> usize {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_may_run(pid, &entry) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether the writer of a temporary file may still be writing it.
fn process_may_run(pid: u32, entry: &std::fs::DirEntry) -> bool {
    if cfg!(target_os = "linux") {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < std::time::Duration::from_secs(3600))
}

/// Writes `path` through a temporary file beside it (same folder, so the rename is atomic),
/// flushed to disk, then renamed into place: a crash or an error never leaves half a file, and
/// the file that was there stays until the new one is complete. Creates missing parent folders,
/// and first removes what killed writes of the same file left ([`remove_stale_temps`]).
/// Every artifact aisle writes (datasets, models, checkpoints, vectors) goes through here.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    remove_stale_temps(path);
    let tmp = temp_path(path);
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

/// A NumPy .npy file (format 1.0) of a row-major `n x d` float32 matrix: every .npy aisle
/// writes (`aisle encode`, `aisle bench search --export`) is these bytes.
pub fn npy_bytes(values: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces so that the data
    // starts at a multiple of 64 bytes, and ended by a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Why [`write_vectors`] wrote nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum WriteVectorsError {
    /// The file name ends in neither `.npy` nor `.jsonl`; nothing was written.
    #[error("{}: use a .npy or .jsonl file name", .0.display())]
    UnknownExtension(PathBuf),
    /// A file could not be written.
    #[error("writing {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`write_vectors`] wrote: `path`, and for `.npy` the ids beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorsWritten {
    pub path: PathBuf,
    /// `PATH.ids.txt` (one id a line) for `.npy`; `None` for `.jsonl`, whose lines carry them.
    pub ids_path: Option<PathBuf>,
}

/// Writes `ids.len()` row-major vectors of `d` floats, in the format `path`'s extension names:
/// `.npy` ([`npy_bytes`]) with the ids one a line in `PATH.ids.txt`, or `.jsonl` with one
/// `{"id", "vector"}` object a line. Any other extension is refused before anything is written.
/// Each file goes through [`write_atomic`].
pub fn write_vectors(
    path: &Path,
    ids: &[String],
    vectors: &[f32],
    d: usize,
) -> Result<VectorsWritten, WriteVectorsError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (files, ids_path) = match ext {
        "npy" => {
            let ids_path = path.with_extension("ids.txt");
            let mut text = ids.join("\n");
            text.push('\n');
            let files = vec![
                (path.to_path_buf(), npy_bytes(vectors, ids.len(), d)),
                (ids_path.clone(), text.into_bytes()),
            ];
            (files, Some(ids_path))
        }
        "jsonl" => {
            let mut buf = Vec::new();
            for (id, v) in ids.iter().zip(vectors.chunks(d.max(1))) {
                serde_json::to_writer(&mut buf, &serde_json::json!({"id": id, "vector": v}))
                    .map_err(|e| WriteVectorsError::Io {
                        path: path.to_path_buf(),
                        source: e.into(),
                    })?;
                buf.push(b'\n');
            }
            (vec![(path.to_path_buf(), buf)], None)
        }
        _ => return Err(WriteVectorsError::UnknownExtension(path.to_path_buf())),
    };
    for (p, bytes) in &files {
        write_atomic(p, |w| w.write_all(bytes)).map_err(|source| WriteVectorsError::Io {
            path: p.clone(),
            source,
        })?;
    }
    Ok(VectorsWritten {
        path: path.to_path_buf(),
        ids_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_writers_temporary_file_is_removed_by_the_next_write() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("model.aisle");
        // pid 0 is never a process's id: a writer that is gone. Our own is running.
        let dead = d.path().join(format!(".model.aisle{TEMP_MARK}0"));
        let ours = temp_path(&target);
        let other = d.path().join(format!(".other.aisle{TEMP_MARK}0"));
        for f in [&dead, &other] {
            std::fs::write(f, b"half a file").expect("write");
        }
        write_atomic(&target, |w| w.write_all(b"whole")).expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"whole");
        assert!(!dead.exists(), "the dead writer's temp file is still there");
        assert!(!ours.exists(), "our own temp file was renamed into place");
        assert!(
            other.exists(),
            "another file's temp file is not ours to remove"
        );
    }

    #[test]
    fn npy_data_starts_at_a_multiple_of_64_after_a_header_naming_the_shape() {
        let bytes = npy_bytes(&[1.0, -2.5, 0.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let start = 10 + len;
        assert_eq!(start % 64, 0);
        let header = std::str::from_utf8(&bytes[10..start]).expect("ascii header");
        assert!(
            header.contains("'shape': (2, 3)") && header.ends_with('\n'),
            "{header}"
        );
        let values: Vec<f32> = bytes[start..]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, [1.0, -2.5, 0.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn write_vectors_writes_npy_with_ids_or_jsonl_and_refuses_other_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let v = [1.0, 2.0, 3.0, -4.0, 0.5, 6.0];

        let npy = dir.path().join("v.npy");
        let wrote = write_vectors(&npy, &ids, &v, 3).expect("npy");
        let ids_path = dir.path().join("v.ids.txt");
        assert_eq!(wrote.ids_path.as_deref(), Some(ids_path.as_path()));
        assert_eq!(std::fs::read(&npy).expect("read npy"), npy_bytes(&v, 2, 3));
        assert_eq!(std::fs::read_to_string(&ids_path).expect("ids"), "a\nb\n");

        let jsonl = dir.path().join("v.jsonl");
        let wrote = write_vectors(&jsonl, &ids, &v, 3).expect("jsonl");
        assert_eq!(wrote.ids_path, None);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
            .expect("read jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(
            lines,
            [
                serde_json::json!({"id": "a", "vector": [1.0, 2.0, 3.0]}),
                serde_json::json!({"id": "b", "vector": [-4.0, 0.5, 6.0]}),
            ]
        );

        let csv = dir.path().join("v.csv");
        let err = write_vectors(&csv, &ids, &v, 3).expect_err("csv");
        assert!(
            matches!(err, WriteVectorsError::UnknownExtension(_)),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("v.csv: use a .npy or .jsonl file name"),
            "{err}"
        );
        assert!(!csv.exists());
    }
}
