//! aisle-train: training the two-tower model.
//!
//! It owns the training data ([`data`]), the loss's entry point ([`loss`]: aisle-model's one
//! multiple-negatives ranking loss, which MiniLM's fine-tuning calls too), the optimisers
//! ([`optim`]), a configuration from its defaults, a TOML file and the flags ([`overrides`]),
//! the negative samplers ([`sampler`]: random, popularity, in-batch, BM25, ANCE, TB-HNS,
//! mixtures and curricula), the loop ([`trainer`]), checkpoints ([`checkpoint`]) and a whole
//! run with its training log and summary, and the default model `aisle serve` trains
//! ([`run`](mod@run)), the throughput [`bench`](mod@bench) (with the worlds the serving bench
//! serves and the full-size pipeline), and the fine-tuning of a transformer tower
//! (all-MiniLM-L6-v2) with the same samplers ([`transformer`]). It builds on aisle-core (data),
//! aisle-model (towers) and aisle-search (BM25 lists, the ANCE index and model files).
//!
//! With the `cli` feature, [`Overrides`] and the benches' [`bench::Table`] and
//! [`bench::pipeline::Pipeline`] derive `clap::Args`: `aisle train`'s and `aisle bench`'s flags
//! are declared once, on the options they set (aisle-cli turns the feature on).

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod loss;
pub mod optim;
pub mod overrides;
pub mod personal_fit;
pub mod run;
pub mod sampler;
pub mod trainer;
pub mod transformer;

pub use error::{Result, TrainError};
pub use overrides::Overrides;
pub use run::{run, LogLine, Observer, RunOptions, RunSummary, RunningFigures, Silent};
pub use sampler::{Sampler, SamplerSpec};
pub use trainer::{Keep, StepStats, TrainConfig, Trainer};
