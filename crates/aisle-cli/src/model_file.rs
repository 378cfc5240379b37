//! Loading a model file for `aisle eval`, `aisle serve` and `aisle index`.

use std::path::Path;

use anyhow::{Context, Result};

use aisle_core::Dataset;
use aisle_model::Model;

/// A model file's model and what its metadata says.
pub(crate) struct ModelFile {
    pub model: Model,
    pub meta: serde_json::Value,
    /// Earlier interactions its personalized tower reads, as it was trained [50].
    pub history: usize,
}

/// Loads `path`, warning when the model was trained on another dataset than `ds` (`used`
/// says what for: "evaluated", "served").
pub(crate) fn load(path: &Path, ds: &Dataset, used: &str) -> Result<ModelFile> {
    let (model, meta) = aisle_model::artifact::load(path)
        .with_context(|| format!("loading model {}", path.display()))?;
    if let Some(trained_on) = meta.get("dataset").and_then(|d| d.as_str()) {
        if trained_on != ds.name {
            eprintln!(
                "warning: {} was trained on `{trained_on}`, {used} on `{}`",
                path.display(),
                ds.name
            );
        }
    }
    let history = meta
        .get("personalize")
        .and_then(|p| p.get("history"))
        .and_then(|h| h.as_u64())
        .unwrap_or(50) as usize;
    Ok(ModelFile {
        model,
        meta,
        history,
    })
}
