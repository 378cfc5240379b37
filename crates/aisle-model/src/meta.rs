//! What a model file says about how it was made: [`ModelMeta`], typed and versioned.
//!
//! `aisle train` writes it into the model file's header; `eval`, `serve` and `index` read it to
//! refuse a model trained on other data and to read customers' histories as the tower was
//! trained. Every field must be there: a missing or mistyped one is an error that names it,
//! never a default (a guessed history window would serve another model than the one trained).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::personal::PersonalizeConfig;

/// The version of [`ModelMeta`] this aisle writes and reads.
pub const META_VERSION: u32 = 1;

/// Which model a training run kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kept {
    /// The keep policy (`best` or `last`).
    pub policy: String,
    /// What was kept: `best` (an earlier step with higher validation recall) or `last`.
    pub model: String,
    /// The step of the kept model.
    pub step: u64,
}

/// How an n-gram model file was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// [`META_VERSION`] when written.
    pub meta_version: u32,
    /// The dataset's name.
    pub dataset: String,
    /// `aisle_core::Dataset::digest` of the data it was trained on.
    pub dataset_digest: String,
    /// The split whose training part it learnt from.
    pub split: String,
    /// The negative sampler, as `--sampler` spells it.
    pub sampler: String,
    /// Optimiser steps taken.
    pub steps: u64,
    pub seed: u64,
    pub batch_size: usize,
    /// Sampled negatives per pair (0 for in-batch only).
    pub negatives: usize,
    /// Validation Recall@10 of the kept model, when validation ran.
    pub validation_recall_at_10: Option<f64>,
    pub kept: Kept,
    /// Validation Recall@10 of the last step, when validation ran.
    pub last_validation_recall_at_10: Option<f64>,
    /// The personalized tower's settings; `None` for a model without one.
    pub personalize: Option<PersonalizeConfig>,
    /// The aisle version that wrote it.
    pub aisle_version: String,
}

impl ModelMeta {
    /// Reads the metadata of the model file at `path` (for messages) from its header's JSON.
    pub fn from_json(path: &Path, json: &serde_json::Value) -> Result<ModelMeta> {
        let bad = |why: String| ModelError::Corrupt {
            path: path.to_path_buf(),
            why: format!("its metadata: {why}"),
        };
        match json.get("meta_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(META_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "meta_version {v}, but this aisle reads {META_VERSION}: retrain or use a \
                     matching aisle"
                )))
            }
            None => {
                return Err(bad(
                    "no `meta_version` (written before aisle's metadata was typed): retrain it"
                        .into(),
                ))
            }
        }
        // The tower's settings have defaults as a training configuration; in a model file every
        // one of them must have been written.
        if let Some(p) = json.get("personalize").filter(|p| !p.is_null()) {
            let every = serde_json::to_value(PersonalizeConfig::default())
                .map_err(|e| bad(e.to_string()))?;
            for field in every.as_object().into_iter().flat_map(|o| o.keys()) {
                if p.get(field).is_none() {
                    return Err(bad(format!("missing field `personalize.{field}`")));
                }
            }
        }
        // The path names the field that failed, wherever it is.
        serde_path_to_error::deserialize(json.clone()).map_err(|e| {
            let field = e.path().to_string();
            bad(format!("field `{field}`: {}", e.into_inner()))
        })
    }

    /// The metadata as the header's JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // A struct of plain fields always serialises.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelMeta {
        ModelMeta {
            meta_version: META_VERSION,
            dataset: "synthetic".into(),
            dataset_digest: "2bc4e3a9".into(),
            split: "event".into(),
            sampler: "taxonomy".into(),
            steps: 100,
            seed: 42,
            batch_size: 256,
            negatives: 4,
            validation_recall_at_10: Some(0.5),
            kept: Kept {
                policy: "best".into(),
                model: "last".into(),
                step: 100,
            },
            last_validation_recall_at_10: Some(0.5),
            personalize: Some(PersonalizeConfig::default()),
            aisle_version: "0.1.0".into(),
        }
    }

    #[test]
    fn metadata_round_trips_and_every_missing_or_wrong_field_is_named() {
        let path = Path::new("m.aisle");
        let meta = sample();
        let json = meta.to_json();
        assert_eq!(ModelMeta::from_json(path, &json).expect("reads"), meta);
        let plain = ModelMeta {
            personalize: None,
            ..sample()
        };
        assert_eq!(
            ModelMeta::from_json(path, &plain.to_json()).expect("reads"),
            plain
        );
        for field in ["dataset_digest", "split", "kept", "aisle_version"] {
            let mut j = json.clone();
            j.as_object_mut().expect("object").remove(field);
            let e = ModelMeta::from_json(path, &j).expect_err(field).to_string();
            assert!(e.contains(field) && e.contains("m.aisle"), "{field}: {e}");
        }
        for field in ["history", "fusion", "demographics"] {
            let mut j = json.clone();
            j["personalize"]
                .as_object_mut()
                .expect("object")
                .remove(field);
            let e = ModelMeta::from_json(path, &j).expect_err(field).to_string();
            assert!(e.contains(&format!("personalize.{field}")), "{field}: {e}");
        }
        let mut j = json.clone();
        j["steps"] = "many".into();
        let e = ModelMeta::from_json(path, &j)
            .expect_err("a string")
            .to_string();
        assert!(e.contains("field `steps`: invalid type"), "{e}");
        let mut j = json.clone();
        j.as_object_mut().expect("object").remove("meta_version");
        let e = ModelMeta::from_json(path, &j)
            .expect_err("unversioned")
            .to_string();
        assert!(e.contains("meta_version") && e.contains("retrain"), "{e}");
        j["meta_version"] = 99.into();
        let e = ModelMeta::from_json(path, &j)
            .expect_err("newer")
            .to_string();
        assert!(e.contains("meta_version 99"), "{e}");
    }
}
