//! The head's weights ([`Reranker`]) and the file they are saved in ([`HeadFile`]).

use serde::{Deserialize, Serialize};

use super::features::{Feature, FEATURES, FEATURE_NAMES};
use crate::error::SearchError;

/// The head's weights: a candidate scores `weights . features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reranker {
    pub weights: [f32; FEATURES],
}

impl Reranker {
    /// The towers' order: the dense cosine alone.
    pub fn dense_only() -> Reranker {
        let mut weights = [0.0; FEATURES];
        weights[Feature::Dense.index()] = 1.0;
        Reranker { weights }
    }

    pub fn score(&self, features: &[f32; FEATURES]) -> f32 {
        self.weights.iter().zip(features).map(|(w, f)| w * f).sum()
    }

    /// The weights as `(feature name, weight)`.
    pub fn named(&self) -> Vec<(&'static str, f32)> {
        FEATURE_NAMES.iter().copied().zip(self.weights).collect()
    }
}

/// Version of the head file layout.
pub const HEAD_SCHEMA: &str = "aisle.rerank/1";

/// The file name `aisle train --rerank` writes beside the model, and `aisle serve` reads.
pub const HEAD_FILE: &str = "rerank.json";

/// A head as saved: its weights by feature name, and what it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadFile {
    pub schema: String,
    /// `[name, weight]` for every feature, in [`FEATURE_NAMES`] order.
    pub weights: Vec<(String, f32)>,
    /// CRC-32 (hex) of the model file the head was fitted for: its `dense` weight is tuned to
    /// that model's cosines, so another model is refused ([`HeadFile::check_model`]).
    #[serde(default)]
    pub model_crc32: Option<String>,
    /// Free-form provenance: dataset, split, model file, validation figures.
    #[serde(default)]
    pub fitted: serde_json::Value,
}

impl HeadFile {
    /// Removes the head in the run folder `dir` ([`HEAD_FILE`]): fitted for the model a new
    /// run replaced, it would be served with the new one. Returns the line that says so, `None`
    /// when there was none.
    pub fn remove_stale(dir: &std::path::Path) -> crate::Result<Option<String>> {
        let path = dir.join(HEAD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        std::fs::remove_file(&path).map_err(|e| SearchError::io(&path, e))?;
        Ok(Some(format!(
            "removed              {} (fitted for the previous model; --rerank fits a new one)",
            path.display()
        )))
    }

    pub fn new(
        head: &Reranker,
        model_crc32: Option<String>,
        fitted: serde_json::Value,
    ) -> HeadFile {
        HeadFile {
            schema: HEAD_SCHEMA.into(),
            model_crc32,
            weights: head
                .named()
                .into_iter()
                .map(|(n, w)| (n.to_owned(), w))
                .collect(),
            fitted,
        }
    }

    /// Writes the file atomically (a temporary file renamed into place).
    pub fn save(&self, path: &std::path::Path) -> crate::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SearchError::BadHeadFile {
            path: path.to_path_buf(),
            field: "(whole file)".into(),
            reason: e.to_string(),
        })?;
        aisle_core::io::write_atomic(path, |w| w.write_all(text.as_bytes()))
            .map_err(|e| SearchError::io(path, e))
    }

    /// The digest that names a model in [`HeadFile::model_crc32`], a saved index's header and a
    /// Qdrant collection's metadata, in hex. For a model file: CRC-32 of every byte but the last
    /// four (a model artifact ends with the CRC-32 of the bytes before it, so this is that
    /// checksum; a CRC-32 of the whole file would be CRC-32's residue, 2144df1c, for every
    /// artifact, and told no two models apart). For a MiniLM model folder: CRC-32 of its
    /// weights (`model.safetensors`) followed by its fitted personalized tower (`personal.json`)
    /// when it has one, read in pieces.
    pub fn model_digest(model: &std::path::Path) -> crate::Result<String> {
        if model.is_dir() {
            // The weights, then the personalized tower fitted over them when there is one: a
            // head or an index made with one tower is not the other's.
            let mut hasher = crc32fast::Hasher::new();
            let personal = model.join(aisle_model::personalized::PERSONAL_FILE);
            for (path, required) in [(model.join("model.safetensors"), true), (personal, false)] {
                let mut file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SearchError::io(&path, e)),
                };
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut file, &mut buf)
                        .map_err(|e| SearchError::io(&path, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
            return Ok(format!("{:08x}", hasher.finalize()));
        }
        let bytes = std::fs::read(model).map_err(|e| SearchError::io(model, e))?;
        let body = &bytes[..bytes.len().saturating_sub(4)];
        Ok(format!("{:08x}", crc32fast::hash(body)))
    }

    /// Refuses a head fitted for another model than the file at `model` (a head without a
    /// digest is accepted). `path` is the head file, for the message.
    pub fn check_model(
        &self,
        path: &std::path::Path,
        model: &std::path::Path,
    ) -> crate::Result<()> {
        let Some(want) = &self.model_crc32 else {
            return Ok(());
        };
        let got = Self::model_digest(model)?;
        if &got != want {
            return Err(SearchError::BadHeadFile {
                path: path.to_path_buf(),
                field: "model_crc32".into(),
                reason: format!(
                    "fitted for a model with CRC-32 {want}, but {} has {got}: refit it with \
                     `aisle train --rerank` (or serve without it, --no-rerank)",
                    model.display()
                ),
            });
        }
        Ok(())
    }

    /// Reads a head file and checks it: the schema, and every feature of this aisle, by name
    /// and in order, with a finite weight.
    pub fn load(path: &std::path::Path) -> crate::Result<(Reranker, HeadFile)> {
        let text = std::fs::read_to_string(path).map_err(|e| SearchError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// [`load`](Self::load) over the text of a head file; `path` is used in messages.
    pub fn from_json(text: &str, path: &std::path::Path) -> crate::Result<(Reranker, HeadFile)> {
        let bad = |field: &str, reason: String| SearchError::BadHeadFile {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        let file: HeadFile = serde_json::from_str(text).map_err(|e| {
            bad(
                &format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        if file.schema != HEAD_SCHEMA {
            return Err(bad(
                "schema",
                format!("`{}`, expected `{HEAD_SCHEMA}`", file.schema),
            ));
        }
        if file.weights.len() != FEATURES {
            return Err(bad(
                "weights",
                format!(
                    "{} features, this aisle has {FEATURES}: {}",
                    file.weights.len(),
                    FEATURE_NAMES.join(", ")
                ),
            ));
        }
        let mut weights = [0f32; FEATURES];
        for (i, ((name, w), want)) in file.weights.iter().zip(FEATURE_NAMES).enumerate() {
            if name != want {
                return Err(bad(
                    &format!("weights[{i}]"),
                    format!("feature `{name}`, expected `{want}`"),
                ));
            }
            if !w.is_finite() {
                return Err(bad(
                    &format!("weights[{i}] ({name})"),
                    format!("{w} is not finite"),
                ));
            }
            weights[i] = *w;
        }
        Ok((Reranker { weights }, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_model_artifacts_have_two_digests() {
        let dir = tempfile::tempdir().expect("tmp");
        let digest = |dim: usize| {
            let mut cfg = aisle_model::ModelConfig::default();
            cfg.featurizer.buckets_log2 = 10;
            cfg.tower.dim = dim;
            let path = dir.path().join(format!("model-{dim}.aisle"));
            aisle_model::artifact::save(
                &aisle_model::Model::new(cfg),
                &serde_json::json!({}),
                &path,
            )
            .expect("save");
            HeadFile::model_digest(&path).expect("digest")
        };
        let (a, b) = (digest(8), digest(16));
        assert_ne!(a, b);
        assert_ne!(
            a, "2144df1c",
            "the CRC-32 residue of a file ending in its own CRC"
        );
    }

    #[test]
    fn a_head_file_round_trips_and_bad_ones_name_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(HEAD_FILE);
        let mut head = Reranker::dense_only();
        head.weights[8] = 0.25;
        let model = dir.path().join("model.aisle");
        std::fs::write(&model, b"a model").expect("model");
        let digest = HeadFile::model_digest(&model).expect("digest");
        HeadFile::new(&head, Some(digest), serde_json::json!({"dataset": "shop"}))
            .save(&path)
            .expect("save");
        let (back, file) = HeadFile::load(&path).expect("load");
        assert_eq!(back, head);
        assert_eq!(file.fitted["dataset"], "shop");
        file.check_model(&path, &model).expect("the same model");
        std::fs::write(&model, b"another model").expect("model");
        let err = file.check_model(&path, &model).expect_err("another model");
        assert!(err.to_string().contains("model_crc32"), "{err}");
        let text = std::fs::read_to_string(&path).expect("read");
        for (broken, field) in [
            (text.replace("\"recency\"", "\"freshness\""), "weights[6]"),
            (text.replace(HEAD_SCHEMA, "aisle.rerank/0"), "schema"),
            (text.replace("0.25", "1e999"), "line"),
            ("{".to_owned(), "line"),
        ] {
            std::fs::write(&path, broken).expect("write");
            let err = HeadFile::load(&path).expect_err("refused").to_string();
            assert!(err.contains(field) && err.contains(HEAD_FILE), "{err}");
        }
    }
}
