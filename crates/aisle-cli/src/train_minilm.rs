//! `aisle train --tower minilm`: fine-tunes all-MiniLM-L6-v2 on a dataset's training pairs with
//! one of aisle's samplers, then compares it with the pretrained model on the validation
//! queries ([`aisle_eval::zero_shot::fine_tune_and_compare`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use aisle_eval::zero_shot::fine_tune_and_compare;
use aisle_model::personal::{PersonalizeConfig, HISTORY_WINDOW};
use aisle_search::rerank::HEAD_FILE;
use aisle_train::personal_fit::{fit_into_folder, PersonalFitConfig};
use aisle_train::transformer::{self, TuneConfig};

use crate::train::TrainArgs;

/// Flags of the n-gram tower that mean nothing to a transformer run.
fn refuse_ngram_flags(args: &TrainArgs) -> Result<()> {
    let t = &args.train;
    let given: Vec<&str> = [
        (args.config.is_some(), "--config"),
        (t.dim.is_some(), "--dim"),
        (t.buckets_log2.is_some(), "--buckets-log2"),
        (t.optimizer.is_some(), "--optimizer"),
        (args.resume.is_some(), "--resume"),
        (t.checkpoint_every.is_some(), "--checkpoint-every"),
        (t.eval_every.is_some(), "--eval-every"),
        (t.log_every.is_some(), "--log-every"),
        (t.keep.is_some(), "--keep"),
        (t.patience.is_some(), "--patience"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect();
    if !given.is_empty() {
        bail!(
            "{} {} not apply to --tower minilm (it takes --sampler, --steps, --batch-size, --negatives, --train-seed, --split, --out, --minilm-model, --personalized with --history, --fusion and --no-demographics, --rerank)",
            given.join(", "),
            if given.len() == 1 { "does" } else { "do" }
        );
    }
    if !t.personalized && (t.history.is_some() || t.fusion.is_some() || t.no_demographics) {
        bail!("--history, --fusion and --no-demographics need --personalized");
    }
    Ok(())
}

pub fn train_minilm(args: TrainArgs) -> Result<()> {
    refuse_ngram_flags(&args)?;
    let cfg = TuneConfig::overridden(&args.train);
    let base = args
        .minilm_model
        .clone()
        .unwrap_or_else(|| aisle_transformer::default_dir(Path::new(".")));
    let ds = Arc::new(args.data.load(&args.dataset)?);
    let split = ds.split_named(args.split.as_deref())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| transformer::default_out_dir(&ds, &cfg));
    if args.out.is_none() {
        crate::out_dir::announce_default("run folder", &out, "--out");
    }
    eprintln!("{}", transformer::describe(&base, &ds, split, &cfg));
    let quiet = args.quiet;
    let progress = &mut |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let (model, report) = fine_tune_and_compare(&ds, split, &base, &cfg, &out, progress)?;
    print!("{report}");
    let t = &args.train;
    if t.personalized {
        // The personalized tower, fitted over the fine-tuned model's vectors, into its folder.
        let fit_cfg = PersonalFitConfig {
            personalize: PersonalizeConfig {
                history: t.history.unwrap_or(HISTORY_WINDOW),
                fusion: t.fusion.unwrap_or_default(),
                demographics: !t.no_demographics,
                ..PersonalFitConfig::default().personalize
            },
            seed: cfg.seed,
            ..PersonalFitConfig::default()
        };
        let (fit, file) = fit_into_folder(&ds, split, &model, &fit_cfg, progress)?;
        print!("{}", fit.render(&ds, &fit_cfg, &file));
    }
    if args.rerank {
        // The learned re-ranking head over the fine-tuned towers, beside the model folder,
        // where `aisle serve --model FOLDER` looks for it.
        let head = model.with_file_name(HEAD_FILE);
        crate::train::fit_head(&ds, split, &model, HISTORY_WINDOW, &head, quiet)?;
    }
    Ok(())
}
