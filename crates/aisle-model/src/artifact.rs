//! The model file: versioned, checksummed, written to a temporary path and renamed into place.
//!
//! Layout (little-endian):
//!
//! ```text
//! magic      8 bytes  "AISLEMDL"
//! version    u32      FORMAT_VERSION
//! header     u64 length + JSON: { config, rows, stored_rows, heads, meta }
//! rows       stored_rows x (u32 row id), then stored_rows x dim f32
//! heads      per head: dim*dim f32 (W), dim f32 (b)
//! checksum   u32      CRC-32 of every byte before it
//! ```
//!
//! Only embedding rows that differ from their seeded initial value are stored: the others are
//! regenerated from the seed on load, so a 2^20-row table trained on a small catalog is megabytes,
//! not half a gigabyte.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::meta::ModelMeta;
use crate::model::{Model, ModelConfig};
use crate::personal::Personalizer;
use crate::tower::{init_row, Dense, TwoTower};

pub const MAGIC: &[u8; 8] = b"AISLEMDL";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    config: ModelConfig,
    rows: usize,
    stored_rows: usize,
    heads: usize,
    /// The personalized query tower's parameters, when there is one (few: JSON keeps them
    /// exactly, and the checksum covers the header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    personal: Option<Personalizer>,
    /// Free-form facts about how the model was made (dataset, sampler, steps, ...).
    meta: serde_json::Value,
}

/// Rows that differ from their initial value.
fn changed_rows(t: &TwoTower) -> Vec<u32> {
    let d = t.cfg.dim;
    let changed: Vec<bool> = t
        .emb
        .par_chunks(d)
        .enumerate()
        .map_init(
            || vec![0.0f32; d],
            |init: &mut Vec<f32>, (r, row)| {
                init_row(&t.cfg, r, init);
                init[..] != *row
            },
        )
        .collect();
    (0..changed.len() as u32)
        .filter(|&r| changed[r as usize])
        .collect()
}

/// The bytes of a model file.
pub fn to_bytes(model: &Model, meta: &serde_json::Value) -> Result<Vec<u8>> {
    let t = &model.towers;
    let d = t.cfg.dim;
    let stored = changed_rows(t);
    let header = Header {
        config: model.cfg.clone(),
        rows: t.rows,
        stored_rows: stored.len(),
        heads: t.heads.len(),
        personal: model.personal.clone(),
        meta: meta.clone(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| ModelError::Config(e.to_string()))?;
    let mut buf = Vec::with_capacity(
        64 + header.len() + stored.len() * (4 + 4 * d) + t.heads.len() * 4 * (d * d + d),
    );
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
    buf.extend_from_slice(&header);
    for r in &stored {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    for r in &stored {
        for v in t.row(*r) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    for h in &t.heads {
        for v in h.w.iter().chain(&h.b) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Saves a model through a temporary file renamed into place.
pub fn save(model: &Model, meta: &serde_json::Value, path: &Path) -> Result<()> {
    let bytes = to_bytes(model, meta)?;
    aisle_core::io::write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| ModelError::io(path, e))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ModelError::Corrupt {
                path: self.path.to_path_buf(),
                why: "file ends early".into(),
            }),
        }
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f32s(&mut self, out: &mut [f32]) -> Result<()> {
        let b = self.take(out.len() * 4)?;
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}

/// The model in `bytes`, with the meta it was saved with; `path` is used in messages.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<(Model, serde_json::Value)> {
    let corrupt = |why: &str| ModelError::Corrupt {
        path: path.to_path_buf(),
        why: why.to_owned(),
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(ModelError::NotAModel {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < 16 {
        return Err(corrupt("file ends early"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored_crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let mut r = Reader {
        buf: body,
        pos: 8,
        path,
    };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(ModelError::Version {
            path: path.to_path_buf(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    if crc32fast::hash(body) != stored_crc {
        return Err(corrupt(
            "checksum mismatch: the file was changed or truncated after it was written",
        ));
    }
    let header_len = r.u64()? as usize;
    let header: Header = serde_json::from_slice(r.take(header_len)?)
        .map_err(|e| corrupt(&format!("bad header: {e}")))?;
    let cfg = header.config;
    let d = cfg.tower.dim;
    let buckets = 1usize << cfg.featurizer.buckets_log2.clamp(1, 31);
    let personal_ok = header.personal.as_ref().is_none_or(|p| p.fits(d));
    if header.rows != buckets || d == 0 || header.heads == 0 || header.heads > 2 || !personal_ok {
        return Err(corrupt("header does not describe a valid model"));
    }
    // Sizes from the header are checked before anything is allocated: a crafted header asked
    // for an 8 TiB table, or a `Vec` of 2^62 ids (found by `cargo fuzz`, fuzz/README.md).
    let table = header
        .rows
        .checked_mul(d)
        .filter(|&n| n <= MAX_TABLE_FLOATS);
    if table.is_none() {
        return Err(corrupt(&format!(
            "the header asks for a {} x {d} embedding table, more than {MAX_TABLE_FLOATS} floats",
            header.rows
        )));
    }
    let row_bytes = d.checked_mul(4).and_then(|b| b.checked_add(4));
    let head_bytes = d
        .checked_mul(d)
        .and_then(|n| n.checked_add(d))
        .and_then(|n| n.checked_mul(4 * header.heads));
    let need = row_bytes
        .and_then(|b| b.checked_mul(header.stored_rows))
        .zip(head_bytes)
        .and_then(|(rows, heads)| rows.checked_add(heads));
    let left = body.len() - r.pos;
    if header.stored_rows > header.rows || need != Some(left) {
        return Err(corrupt(&format!(
            "the header describes {} stored rows of {d} and {} heads, which is not the {left} bytes of weights the file holds",
            header.stored_rows, header.heads
        )));
    }
    let mut towers = TwoTower::new(cfg.tower.clone(), header.rows);
    let mut ids = Vec::with_capacity(header.stored_rows);
    for _ in 0..header.stored_rows {
        let id = r.u32()? as usize;
        if id >= header.rows {
            return Err(corrupt("row id out of range"));
        }
        ids.push(id);
    }
    for id in ids {
        r.f32s(&mut towers.emb[id * d..(id + 1) * d])?;
    }
    towers.heads = (0..header.heads)
        .map(|_| {
            let mut h = Dense::identity(d);
            r.f32s(&mut h.w)?;
            r.f32s(&mut h.b)?;
            Ok(h)
        })
        .collect::<Result<_>>()?;
    if r.pos != body.len() {
        return Err(corrupt("trailing bytes after the weights"));
    }
    let featurizer = crate::featurize::Featurizer::new(cfg.featurizer.clone());
    Ok((
        Model {
            cfg,
            featurizer,
            towers,
            personal: header.personal,
        },
        header.meta,
    ))
}

/// The largest embedding table a model file may ask for (16 GiB of f32; the default model's is
/// 2^20 x 128, 512 MiB).
pub const MAX_TABLE_FLOATS: usize = 1 << 32;

/// Loads a model file, refusing a file of another format or version, or a corrupt one.
pub fn load(path: &Path) -> Result<(Model, serde_json::Value)> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Writes a trained model file: the model and how it was made ([`ModelMeta`]).
pub fn save_trained(model: &Model, meta: &ModelMeta, path: &Path) -> Result<()> {
    save(model, &meta.to_json(), path)
}

/// Reads a trained model file, whose metadata must be a complete [`ModelMeta`]; a model with a
/// personalized tower must record the tower's settings (the history window it was trained
/// with is what serving reads).
pub fn load_trained(path: &Path) -> Result<(Model, ModelMeta)> {
    let (model, json) = load(path)?;
    let meta = ModelMeta::from_json(path, &json)?;
    if model.personal.is_some() && meta.personalize.is_none() {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            why: "the model has a personalized tower but its metadata has no `personalize` \
                  (its settings, the history window among them)"
                .into(),
        });
    }
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::featurize::FeaturizerConfig;
    use crate::tower::TowerConfig;

    fn small() -> Model {
        let mut m = Model::new(ModelConfig {
            featurizer: FeaturizerConfig {
                buckets_log2: 10,
                ..Default::default()
            },
            tower: TowerConfig {
                dim: 8,
                ..Default::default()
            },
            ..Default::default()
        });
        // "Train" a few rows and a head.
        m.towers.emb[3 * 8] = 42.0;
        m.towers.emb[700 * 8 + 5] = -1.5;
        m.towers.heads[1].b[2] = 0.25;
        m
    }

    #[test]
    fn round_trip_stores_only_changed_rows() {
        let m = small();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.aisle");
        let meta = serde_json::json!({"dataset": "t"});
        save(&m, &meta, &path).expect("save");
        let size = std::fs::metadata(&path).expect("meta").len();
        assert!(
            size < 4_000,
            "only two rows and two heads are stored: {size} bytes"
        );
        let (back, meta_back) = load(&path).expect("load");
        assert_eq!(back.towers, m.towers);
        assert_eq!(back.cfg, m.cfg);
        assert_eq!(meta_back, meta);
        assert_eq!(back.encode_query("oled tv"), m.encode_query("oled tv"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }

    #[test]
    fn the_personalized_tower_round_trips_exactly() {
        let mut m = small();
        let mut p = Personalizer::new(8, crate::personal::Fusion::Gated);
        p.b0 = 0.1 + 0.2; // not representable exactly: JSON must keep every bit
        p.tau = 1.0 / 3.0;
        p.v_q = (0..8).map(|i| (i as f32).sin() * 1e-7).collect();
        p.v_u = (0..8).map(|i| (i as f32 * 1.7).cos()).collect();
        m.personal = Some(p);
        let bytes = to_bytes(&m, &serde_json::Value::Null).expect("bytes");
        let (back, _) = from_bytes(&bytes, Path::new("m.aisle")).expect("load");
        assert_eq!(back.personal, m.personal);
        // A personalizer of the wrong width is refused.
        m.personal.as_mut().expect("some").v_u.pop();
        let bytes = to_bytes(&m, &serde_json::Value::Null).expect("bytes");
        assert!(from_bytes(&bytes, Path::new("m.aisle")).is_err());
    }

    #[test]
    fn refuses_foreign_corrupt_and_future_files() {
        let m = small();
        let bytes = to_bytes(&m, &serde_json::Value::Null).expect("bytes");
        let p = Path::new("m.aisle");
        assert!(matches!(
            from_bytes(b"hello world, not a model", p),
            Err(ModelError::NotAModel { .. })
        ));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let err = from_bytes(&flipped, p).expect_err("corrupt");
        assert!(err.to_string().contains("checksum"), "{err}");
        let truncated = &bytes[..bytes.len() - 10];
        assert!(from_bytes(truncated, p).is_err());
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&99u32.to_le_bytes());
        let err = from_bytes(&future, p).expect_err("version");
        assert!(
            matches!(err, ModelError::Version { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("version 99"), "{err}");
    }
}
