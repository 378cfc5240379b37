//! Checkpoints: the model, the optimiser state and the step, so that `--resume` continues a run
//! exactly where it stopped.
//!
//! Layout (little-endian): magic `AISLECKP`, u32 version, u64-length JSON header, u64-length model
//! file (see `aisle_model::artifact`), the touched rows' ids and optimiser state, each head's Adam
//! moments, the personalized tower's Adam moments (none without one), and a CRC-32 of everything
//! before it. Written to a temporary file and renamed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use aisle_model::artifact;

use crate::error::{Result, TrainError};
use crate::optim::SparseState;
use crate::trainer::{TrainConfig, Trainer};

const MAGIC: &[u8; 8] = b"AISLECKP";
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Header {
    config: TrainConfig,
    step: u64,
    dataset: String,
    split: String,
    touched_rows: usize,
    /// The best validation measurement so far, `(step, Recall@10)`.
    #[serde(default)]
    best_validation: Option<(u64, f64)>,
}

fn put_f32s(buf: &mut Vec<u8>, xs: &[f32]) {
    for x in xs {
        buf.extend_from_slice(&x.to_le_bytes());
    }
}

/// Writes a checkpoint of `trainer` to `path`.
pub fn save(trainer: &Trainer, path: &Path) -> Result<()> {
    let d = trainer.model.dim();
    let touched: Vec<u32> = (0..trainer.touched.len() as u32)
        .filter(|&r| trainer.touched[r as usize])
        .collect();
    let header = Header {
        config: trainer.cfg.clone(),
        step: trainer.step,
        dataset: trainer.ds.name.clone(),
        split: trainer.split.name.clone(),
        touched_rows: touched.len(),
        best_validation: trainer.best_validation,
    };
    let header = serde_json::to_vec(&header).map_err(|e| TrainError::Config(e.to_string()))?;
    let model = artifact::to_bytes(
        &trainer.model,
        &serde_json::json!({"checkpoint_step": trainer.step}),
    )?;
    let mut buf = Vec::with_capacity(model.len() + header.len() + touched.len() * (4 + 8 * d) + 64);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(&(model.len() as u64).to_le_bytes());
    buf.extend_from_slice(&model);
    for r in &touched {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    for &r in &touched {
        let r = r as usize;
        match &trainer.sparse {
            SparseState::Adam { m, v } => {
                put_f32s(&mut buf, &m[r * d..(r + 1) * d]);
                put_f32s(&mut buf, &v[r * d..(r + 1) * d]);
            }
            SparseState::RowAdagrad { acc } => put_f32s(&mut buf, &acc[r..r + 1]),
        }
    }
    for h in &trainer.dense {
        for x in [&h.m.w, &h.m.b, &h.v.w, &h.v.b] {
            put_f32s(&mut buf, x);
        }
    }
    put_f32s(&mut buf, &trainer.personal_m);
    put_f32s(&mut buf, &trainer.personal_v);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    aisle_core::io::write_atomic(path, |w| w.write_all(&buf)).map_err(|e| TrainError::io(path, e))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(a))
    }

    fn f32s(&mut self, out: &mut [f32]) -> Option<()> {
        let b = self.take(out.len() * 4)?;
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Some(())
    }
}

/// Restores a checkpoint into a trainer built with the same configuration (only `steps` and the
/// logging, evaluation and checkpoint intervals may differ) on the same dataset and split.
pub fn restore(trainer: &mut Trainer, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let fail = |why: &str| TrainError::Resume {
        path: path.to_path_buf(),
        why: why.to_owned(),
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(fail("not an aisle checkpoint"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut c = Cursor { buf: body, pos: 8 };
    let version = c
        .take(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if version != Some(VERSION) {
        return Err(fail(&format!(
            "checkpoint version {version:?}, this aisle reads {VERSION}"
        )));
    }
    if crc32fast::hash(body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
        return Err(fail("checksum mismatch: the file is corrupt"));
    }
    let short = || fail("file ends early");
    let header_len = c.u64().ok_or_else(short)? as usize;
    let header: Header = serde_json::from_slice(c.take(header_len).ok_or_else(short)?)
        .map_err(|e| fail(&format!("bad header: {e}")))?;
    let mut saved = header.config.clone();
    let current = &trainer.cfg;
    saved.steps = current.steps;
    saved.log_every = current.log_every;
    saved.eval_every = current.eval_every;
    saved.checkpoint_every = current.checkpoint_every;
    saved.keep = current.keep;
    saved.patience = current.patience;
    if &saved != current {
        return Err(fail("it was made with another configuration (model, optimiser, sampler, batch, negatives or seed)"));
    }
    if header.dataset != trainer.ds.name || header.split != trainer.split.name {
        return Err(fail(&format!(
            "it was made on dataset `{}` split `{}`, not `{}` split `{}`",
            header.dataset, header.split, trainer.ds.name, trainer.split.name
        )));
    }
    let model_len = c.u64().ok_or_else(short)? as usize;
    let (model, _) = artifact::from_bytes(c.take(model_len).ok_or_else(short)?, path)?;
    let d = model.dim();
    let rows = model.towers.rows;
    let mut touched = Vec::with_capacity(header.touched_rows);
    for _ in 0..header.touched_rows {
        let b = c.take(4).ok_or_else(short)?;
        let r = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if r >= rows {
            return Err(fail("row id out of range"));
        }
        touched.push(r);
    }
    trainer.touched = vec![false; rows];
    for &r in &touched {
        trainer.touched[r] = true;
        match &mut trainer.sparse {
            SparseState::Adam { m, v } => {
                c.f32s(&mut m[r * d..(r + 1) * d]).ok_or_else(short)?;
                c.f32s(&mut v[r * d..(r + 1) * d]).ok_or_else(short)?;
            }
            SparseState::RowAdagrad { acc } => c.f32s(&mut acc[r..r + 1]).ok_or_else(short)?,
        }
    }
    for h in &mut trainer.dense {
        for x in [&mut h.m.w, &mut h.m.b, &mut h.v.w, &mut h.v.b] {
            c.f32s(x).ok_or_else(short)?;
        }
    }
    c.f32s(&mut trainer.personal_m).ok_or_else(short)?;
    c.f32s(&mut trainer.personal_v).ok_or_else(short)?;
    if c.pos != body.len() {
        return Err(fail("trailing bytes"));
    }
    trainer.model = model;
    trainer.step = header.step;
    trainer.best_validation = header.best_validation;
    // History items are re-encoded at the next step, as an uninterrupted run does (checkpoints
    // fall on multiples of the refresh interval).
    trainer.items.clear();
    trainer.items_step = None;
    Ok(())
}
