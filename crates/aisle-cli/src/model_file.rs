//! Loading a model file for `aisle eval`, `aisle serve` and `aisle index`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use aisle_core::Dataset;
use aisle_model::Model;

/// A model file's model and what its metadata says.
pub(crate) struct ModelFile {
    pub model: Model,
    pub meta: serde_json::Value,
    /// Earlier interactions its personalized tower reads, as it was trained (recorded in the
    /// file); for a plain model, [`aisle_model::personal::HISTORY_WINDOW`], what the history
    /// term reads.
    pub history: usize,
    /// Set when the model was trained on other data and `--allow-other-dataset` let it through:
    /// one line saying so, which every answer made with the model must carry.
    pub other_dataset: Option<String>,
}

/// Loads `path` and checks that it was trained on `ds` (`used` says what for: "evaluated",
/// "served"). A model trained on other data is refused unless `allow_other_dataset`, and then
/// carries a note saying so.
pub(crate) fn load(
    path: &Path,
    ds: &Dataset,
    used: &str,
    allow_other_dataset: bool,
) -> Result<ModelFile> {
    let (model, meta) = aisle_model::artifact::load(path)
        .with_context(|| format!("loading model {}", path.display()))?;
    let other_dataset = match other_dataset(path, &meta, ds, used) {
        None => None,
        Some(why) if allow_other_dataset => {
            let note = format!("{why} (allowed by --allow-other-dataset)");
            eprintln!("warning: {note}");
            Some(note)
        }
        Some(why) => bail!(
            "{why}: its figures would not be this dataset's (train on it, or pass \
             --allow-other-dataset to use it anyway)"
        ),
    };
    let history = if model.personal.is_some() {
        // The tower was trained reading this many items: a guess would serve another model.
        meta.get("personalize")
            .and_then(|p| p.get("history"))
            .and_then(|h| h.as_u64())
            .and_then(|h| usize::try_from(h).ok())
            .with_context(|| {
                format!(
                    "{}: the model has a personalized tower but its metadata has no \
                     `personalize.history` (a whole number): the file is damaged or not \
                     aisle's",
                    path.display()
                )
            })?
    } else {
        aisle_model::personal::HISTORY_WINDOW
    };
    Ok(ModelFile {
        model,
        meta,
        history,
        other_dataset,
    })
}

/// Why the model at `path`, with metadata `meta`, was not trained on `ds`; `None` when it was.
/// A model file from before `dataset_digest` was recorded is compared by dataset name only.
pub(crate) fn other_dataset(
    path: &Path,
    meta: &serde_json::Value,
    ds: &Dataset,
    used: &str,
) -> Option<String> {
    let name = meta.get("dataset").and_then(|d| d.as_str());
    let Some(trained) = meta.get("dataset_digest").and_then(|d| d.as_str()) else {
        return match name {
            Some(n) if n == ds.name => None,
            Some(n) => Some(format!(
                "{} was trained on `{n}`, {used} on `{}`",
                path.display(),
                ds.name
            )),
            None => Some(format!(
                "{} does not say which dataset it was trained on (no `dataset` in its metadata), \
                 {used} on `{}`",
                path.display(),
                ds.name
            )),
        };
    };
    let here = ds.digest();
    (trained != here).then(|| {
        format!(
            "{} was trained on `{}` with dataset digest {trained}, {used} on `{}` whose digest is \
             {here}",
            path.display(),
            name.unwrap_or("?"),
            ds.name
        )
    })
}
