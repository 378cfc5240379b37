//! The model a Searcher is built over, read from where `aisle train` left it: an n-gram model
//! file, or a MiniLM model folder (`aisle train --tower minilm`'s `model/`, or the pretrained
//! all-MiniLM-L6-v2), each as an [`Encoder`]. `aisle eval`, `serve`, `index` and `encode` all
//! read models here, and refuse one trained on other data here.

use std::path::Path;
use std::sync::Arc;

use aisle_core::Dataset;
use aisle_model::personalized::{PersonalFile, Personalized, PERSONAL_FILE};
use aisle_model::{Encoder, ModelMeta};
use aisle_transformer::{MiniLm, TunedOn};

use crate::error::{Result, SearchError};

/// How a model was made, as it says itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Made {
    /// An n-gram model file from `aisle train`.
    Trained(Box<ModelMeta>),
    /// A MiniLM folder that `aisle train --tower minilm` fine-tuned.
    Tuned(TunedOn),
    /// A MiniLM folder without aisle's record: pretrained, on no retailer's data.
    Pretrained,
}

impl Made {
    /// The dataset it learnt from, and that dataset's digest; `None` for a pretrained model.
    pub fn dataset(&self) -> Option<(&str, &str)> {
        match self {
            Made::Trained(m) => Some((&m.dataset, &m.dataset_digest)),
            Made::Tuned(t) => Some((&t.dataset, &t.dataset_digest)),
            Made::Pretrained => None,
        }
    }

    /// `model trained on DATASET, sampler SAMPLER`; `None` for a pretrained model.
    pub fn trained_on(&self) -> Option<String> {
        let ((ds, _), sampler) = (self.dataset()?, self.sampler()?);
        Some(format!("model trained on {ds}, sampler {sampler}"))
    }

    /// The negative sampler it was trained with; `None` for a pretrained model.
    pub fn sampler(&self) -> Option<&str> {
        match self {
            Made::Trained(m) => Some(&m.sampler),
            Made::Tuned(t) => Some(&t.sampler),
            Made::Pretrained => None,
        }
    }
}

/// A model's encoder and what its metadata says.
pub struct ModelFile {
    pub encoder: Arc<dyn Encoder>,
    pub made: Made,
    /// Earlier interactions its personalized tower reads, as it was trained (recorded in the
    /// file); for a model without one, [`aisle_model::personal::HISTORY_WINDOW`], what the
    /// history term reads.
    pub history: usize,
    /// Set when the model was trained on other data and `--allow-other-dataset` let it through:
    /// one line saying so, which every answer made with the model must carry.
    pub other_dataset: Option<String>,
}

/// Loads `path` and checks that it was trained on `ds` (`used` says what for: "evaluated",
/// "served"). A model trained on other data is refused unless `allow_other_dataset`, and then
/// carries a note saying so ([`ModelFile::other_dataset`]), which the caller must show.
pub fn load(path: &Path, ds: &Dataset, used: &str, allow_other_dataset: bool) -> Result<ModelFile> {
    let (encoder, made) = read(path)?;
    let other_dataset = match other_dataset(path, &made, ds, used) {
        None => None,
        Some(why) if allow_other_dataset => {
            Some(format!("{why} (allowed by --allow-other-dataset)"))
        }
        Some(why) => return Err(SearchError::OtherDataset { why }),
    };
    // `read` refused a personalized model file without its tower's settings, and a folder's
    // personal.json that does not fit the folder.
    let history = match &made {
        Made::Trained(meta) => meta.personalize.as_ref().map(|p| p.history),
        Made::Tuned(_) => PersonalFile::read(path)?.map(|p| p.personalize.history),
        Made::Pretrained => None,
    }
    .unwrap_or(aisle_model::personal::HISTORY_WINDOW);
    Ok(ModelFile {
        encoder,
        made,
        history,
        other_dataset,
    })
}

/// Reads the model at `path`: a MiniLM model folder when it is a folder (with the personalized
/// tower fitted over it when the folder holds [`PERSONAL_FILE`]), an n-gram model file
/// otherwise; with what it says of how it was made.
pub fn read(path: &Path) -> Result<(Arc<dyn Encoder>, Made)> {
    if path.is_dir() {
        let model: Arc<dyn Encoder> = Arc::new(MiniLm::load(path)?);
        let made = match TunedOn::read(path)? {
            Some(tuned) => Made::Tuned(tuned),
            None => Made::Pretrained,
        };
        let Some(personal) = PersonalFile::read(path)? else {
            return Ok((model, made));
        };
        // The tower was fitted over this folder's vectors on one dataset: the folder must say it
        // was tuned on that dataset, so that the other-dataset check covers the tower too.
        let fitted = (&personal.dataset, &personal.dataset_digest);
        let consistent = match &made {
            Made::Tuned(t) => (&t.dataset, &t.dataset_digest) == fitted,
            _ => false,
        };
        if !consistent {
            return Err(aisle_model::ModelError::Corrupt {
                path: path.join(PERSONAL_FILE),
                why: format!(
                    "fitted on `{}` (digest {}), but the folder {}: fit it again with `aisle \
                     train --tower minilm --personalized`",
                    personal.dataset,
                    personal.dataset_digest,
                    match made.dataset() {
                        Some((name, digest)) => format!("was tuned on `{name}` (digest {digest})"),
                        None => format!("has no {}", aisle_transformer::TUNED_FILE),
                    }
                ),
            }
            .into());
        }
        let model = Personalized::new(model, personal.tower)?;
        return Ok((Arc::new(model), made));
    }
    let (model, meta) = aisle_model::artifact::load_trained(path)?;
    Ok((Arc::new(model), Made::Trained(Box::new(meta))))
}

/// What names the model at `path` in a saved index's header, a Qdrant collection's metadata and
/// a re-ranking head ([`HeadFile::model_digest`](crate::rerank::HeadFile::model_digest)).
pub fn digest(path: &Path) -> Result<String> {
    crate::rerank::HeadFile::model_digest(path)
}

/// Why the model at `path`, made as `made` says, was not trained on `ds`; `None` when it was,
/// or when it is a pretrained model (trained on no retailer's data).
pub fn other_dataset(path: &Path, made: &Made, ds: &Dataset, used: &str) -> Option<String> {
    let (name, trained) = made.dataset()?;
    let here = ds.digest();
    (trained != here).then(|| {
        format!(
            "{} was trained on `{name}` with dataset digest {trained}, {used} on `{}` whose \
             digest is {here}",
            path.display(),
            ds.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisle_core::synth::small_dataset;
    use aisle_model::{Model, ModelConfig};

    #[test]
    fn a_folder_is_minilm_a_file_is_n_gram_and_each_says_what_it_learnt_from() {
        let ds = small_dataset(200, 10, 100, 3).expect("world");
        let dir = tempfile::tempdir().expect("tempdir");
        // A pretrained folder: no record, taken on any dataset.
        let folder = dir.path().join("bert");
        std::fs::create_dir_all(&folder).expect("dir");
        aisle_transformer::tiny::write_model_folder(&folder, &["tv".into()]).expect("tiny bert");
        let file = load(&folder, &ds, "served", false).expect("a pretrained folder");
        assert_eq!(file.encoder.kind(), "MiniLM");
        assert_eq!(file.made, Made::Pretrained);
        assert!(file.other_dataset.is_none());
        // Tuned on other data: refused, or let through with a note.
        TunedOn {
            dataset: "elsewhere".into(),
            dataset_digest: "00000000".into(),
            base: "bert".into(),
            sampler: "taxonomy".into(),
            steps: 3,
        }
        .write(&folder)
        .expect("aisle.json");
        let e = load(&folder, &ds, "served", false).err().expect("refused");
        assert!(e.to_string().contains("was trained on `elsewhere`"), "{e}");
        let file = load(&folder, &ds, "served", true).expect("allowed");
        assert!(file
            .other_dataset
            .is_some_and(|n| n.contains("--allow-other-dataset")));
        assert_eq!(digest(&folder).expect("digest").len(), 8);
        // A model file whose metadata is not a ModelMeta is refused, naming what is missing.
        let path = dir.path().join("model.aisle");
        let mut cfg = ModelConfig::default();
        cfg.featurizer.buckets_log2 = 8;
        cfg.tower.dim = 8;
        let model = Model::new(cfg);
        aisle_model::artifact::save(&model, &serde_json::json!({"dataset": "x"}), &path)
            .expect("save");
        let e = read(&path).err().expect("untyped metadata");
        assert!(e.to_string().contains("meta_version"), "{e}");
        // A folder without the model's files says which is missing.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).expect("dir");
        assert!(read(&empty).is_err());
    }
    #[test]
    fn a_folder_with_a_fitted_tower_serves_it_and_one_fitted_elsewhere_is_refused() {
        use aisle_model::personal::{Fusion, PersonalizeConfig, Personalizer};
        use aisle_model::personalized::PERSONAL_FORMAT;

        let ds = small_dataset(200, 10, 100, 3).expect("world");
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("tuned");
        std::fs::create_dir_all(&folder).expect("dir");
        aisle_transformer::tiny::write_model_folder(&folder, &["tv".into()]).expect("tiny bert");
        let dim = read(&folder).expect("plain folder").0.dim();
        let before = digest(&folder).expect("digest");
        let tuned = TunedOn {
            dataset: ds.name.clone(),
            dataset_digest: ds.digest(),
            base: "bert".into(),
            sampler: "taxonomy".into(),
            steps: 3,
        };
        let personal = PersonalFile {
            format: PERSONAL_FORMAT,
            dataset: ds.name.clone(),
            dataset_digest: ds.digest(),
            split: "event".into(),
            encoder: "MiniLM".into(),
            dim,
            personalize: PersonalizeConfig {
                history: 7,
                ..PersonalizeConfig::default()
            },
            steps: 5,
            kept_step: 5,
            validation_plain: 0.1,
            validation_personalized: 0.2,
            tower: Personalizer::new(dim, Fusion::Gated),
        };
        personal.write(&folder).expect("personal.json");
        // Without aisle.json the folder says it learnt from nothing, the tower from `ds`.
        let e = read(&folder).err().expect("pretrained folder with a tower");
        assert!(e.to_string().contains("has no aisle.json"), "{e}");
        tuned.write(&folder).expect("aisle.json");
        let file = load(&folder, &ds, "served", false).expect("tuned + tower");
        assert!(file.encoder.personal().is_some());
        assert_eq!(file.encoder.kind(), "MiniLM");
        assert_eq!(file.history, 7);
        assert_ne!(
            digest(&folder).expect("digest"),
            before,
            "the tower is part of the digest"
        );
        // A tower fitted on other data than the folder was tuned on.
        PersonalFile {
            dataset_digest: "00000000".into(),
            ..personal
        }
        .write(&folder)
        .expect("personal.json");
        let e = read(&folder).err().expect("fitted elsewhere");
        assert!(e.to_string().contains("fit it again"), "{e}");
    }
}
