//! A training configuration in its three layers: the defaults, a TOML file
//! ([`TrainConfig::from_file`], fields as in docs/training.md) and the values given over both
//! ([`Overrides`]: `aisle train`'s flags).

use std::path::Path;

use aisle_model::personal::{Fusion, PersonalizeConfig};

use crate::error::{Result, TrainError};
use crate::optim::SparseKind;
use crate::sampler::SamplerSpec;
use crate::trainer::{Keep, TrainConfig};

/// Values that replace a configuration's own ([`TrainConfig::overridden`]); `None` (or
/// `false`) leaves the setting as it is. With the `cli` feature they are `aisle train`'s flags,
/// and these comments its `--help`.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Overrides {
    /// Negative sampler: in-batch, random, popularity, bm25, ance, taxonomy, mix:..., curriculum:...,
    /// with parameters after a colon, e.g. `ance:pool=interacted` (see docs/training.md)
    /// [default: taxonomy]
    #[cfg_attr(feature = "cli", arg(long, value_parser = SamplerSpec::parse))]
    pub sampler: Option<SamplerSpec>,
    /// Sampled negatives per pair [default: 4].
    #[cfg_attr(feature = "cli", arg(long))]
    pub negatives: Option<usize>,
    /// Training steps [default: 2000].
    #[cfg_attr(feature = "cli", arg(long))]
    pub steps: Option<u64>,
    /// Pairs per step [default: 256].
    #[cfg_attr(feature = "cli", arg(long))]
    pub batch_size: Option<usize>,
    /// Embedding dimension [default: 128].
    #[cfg_attr(feature = "cli", arg(long))]
    pub dim: Option<usize>,
    /// log2 of the hashed feature buckets [default: 20].
    #[cfg_attr(feature = "cli", arg(long))]
    pub buckets_log2: Option<u8>,
    /// Seed of the model and the training order [default: 42].
    #[cfg_attr(feature = "cli", arg(long = "train-seed"))]
    pub seed: Option<u64>,
    /// Train the personalized query tower too: each query read with the customer's earlier
    /// interactions (the last 50, or --history).
    #[cfg_attr(feature = "cli", arg(long))]
    pub personalized: bool,
    /// Earlier interactions the personalized tower reads [default: 50].
    #[cfg_attr(feature = "cli", arg(long))]
    pub history: Option<usize>,
    /// How the personalized tower joins history and query: gated or concat [default: gated].
    #[cfg_attr(feature = "cli", arg(long))]
    pub fusion: Option<Fusion>,
    /// The personalized tower reads the customers' history only, not their features (segment
    /// and the other `users` columns, which it reads by default where the data has them).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_demographics: bool,
    /// Optimiser of the embedding table: row-adagrad (one accumulator per row) or adam (lazy,
    /// per element) [default: row-adagrad].
    #[cfg_attr(feature = "cli", arg(long))]
    pub optimizer: Option<SparseKind>,
    /// Steps between training-log lines [default: 50].
    #[cfg_attr(feature = "cli", arg(long))]
    pub log_every: Option<u64>,
    /// Steps between validation Recall@10 measurements; 0 measures only at the end [default: 250].
    #[cfg_attr(feature = "cli", arg(long))]
    pub eval_every: Option<u64>,
    /// Steps between checkpoints (0 = none) [default: 0].
    #[cfg_attr(feature = "cli", arg(long))]
    pub checkpoint_every: Option<u64>,
    /// The model to save: `best`, the one with the highest validation Recall@10 among the
    /// measurements (every --eval-every steps and at the end), or `last` [default: best].
    #[cfg_attr(feature = "cli", arg(long))]
    pub keep: Option<Keep>,
    /// Stop after this many validation measurements in a row without a new best (0 = never)
    /// [default: 0].
    #[cfg_attr(feature = "cli", arg(long))]
    pub patience: Option<u64>,
}

impl TrainConfig {
    /// The configuration in the TOML file at `path`; the fields it leaves out keep their
    /// defaults, a field it does not know is refused.
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| TrainError::ConfigFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// This configuration with the values of `o` in place of its own, validated. The
    /// personalized tower's settings without the tower (neither in this configuration nor
    /// asked for by `o.personalized`) are refused ([`TrainError::NotPersonalized`]). A seed
    /// seeds both the run and the towers.
    pub fn overridden(mut self, o: &Overrides) -> Result<TrainConfig> {
        if let Some(s) = &o.sampler {
            self.sampler = s.clone();
        }
        set(&mut self.negatives, o.negatives);
        set(&mut self.steps, o.steps);
        set(&mut self.batch_size, o.batch_size);
        set(&mut self.model.tower.dim, o.dim);
        set(&mut self.model.featurizer.buckets_log2, o.buckets_log2);
        if o.personalized && self.personalize.is_none() {
            self.personalize = Some(PersonalizeConfig::default());
        }
        if o.history.is_some() || o.fusion.is_some() || o.no_demographics {
            let p = self
                .personalize
                .as_mut()
                .ok_or(TrainError::NotPersonalized)?;
            if o.no_demographics {
                p.demographics = false;
            }
            set(&mut p.history, o.history);
            set(&mut p.fusion, o.fusion);
        }
        set(&mut self.optim.sparse, o.optimizer);
        if let Some(s) = o.seed {
            self.seed = s;
            self.model.tower.seed = s;
        }
        set(&mut self.log_every, o.log_every);
        set(&mut self.eval_every, o.eval_every);
        set(&mut self.checkpoint_every, o.checkpoint_every);
        set(&mut self.keep, o.keep);
        set(&mut self.patience, o.patience);
        self.validate()?;
        Ok(self)
    }
}

/// `*slot = v` when `v` is given.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_give_and_refuse_personal_settings_without_the_tower() {
        let o = Overrides {
            steps: Some(7),
            seed: Some(3),
            keep: Some(Keep::Last),
            ..Overrides::default()
        };
        let cfg = TrainConfig::default().overridden(&o).expect("valid");
        assert_eq!((cfg.steps, cfg.seed, cfg.model.tower.seed), (7, 3, 3));
        assert_eq!(cfg.keep, Keep::Last);
        assert_eq!(cfg.batch_size, TrainConfig::default().batch_size);
        assert!(cfg.personalize.is_none());

        let history = Overrides {
            history: Some(9),
            ..Overrides::default()
        };
        assert!(matches!(
            TrainConfig::default().overridden(&history),
            Err(TrainError::NotPersonalized)
        ));
        let personal = Overrides {
            personalized: true,
            no_demographics: true,
            ..history
        };
        let p = TrainConfig::default()
            .overridden(&personal)
            .expect("valid")
            .personalize
            .expect("personalized");
        assert_eq!((p.history, p.demographics), (9, false));
    }

    #[test]
    fn a_config_file_with_an_unknown_field_is_refused_with_its_path() {
        let path =
            std::env::temp_dir().join(format!("aisle-overrides-{}.toml", std::process::id()));
        std::fs::write(&path, "negativs = 3\n").expect("written");
        let err = TrainConfig::from_file(&path).expect_err("unknown field");
        std::fs::remove_file(&path).expect("removed");
        assert!(err
            .to_string()
            .contains("not a valid training configuration"));
        let missing =
            TrainConfig::from_file(Path::new("/no/such/train.toml")).expect_err("missing");
        assert!(missing
            .to_string()
            .starts_with("reading /no/such/train.toml"));
    }
}
