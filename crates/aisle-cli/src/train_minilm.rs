//! `aisle train --tower minilm`: fine-tunes all-MiniLM-L6-v2 on a dataset's training pairs with
//! one of aisle's samplers (aisle_train::transformer), then compares it with the pretrained
//! model on the validation queries.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use aisle_core::io::{slug, write_atomic};
use aisle_eval::evaluate::{evaluate_groups, EvalConfig, Group, Member, Part};
use aisle_eval::zero_shot::MiniLmRanker;
use aisle_train::transformer::{fine_tune, TuneConfig};
use aisle_train::SamplerSpec;

use crate::train::TrainArgs;

/// Flags of the n-gram tower that mean nothing to a transformer run.
fn refuse_ngram_flags(args: &TrainArgs) -> Result<()> {
    let t = &args.train;
    let given: Vec<&str> = [
        (t.config.is_some(), "--config"),
        (t.dim.is_some(), "--dim"),
        (t.buckets_log2.is_some(), "--buckets-log2"),
        (t.personalized, "--personalized"),
        (t.history.is_some(), "--history"),
        (t.fusion.is_some(), "--fusion"),
        (t.optimizer.is_some(), "--optimizer"),
        (args.resume.is_some(), "--resume"),
        (args.checkpoint_every.is_some(), "--checkpoint-every"),
        (args.eval_every.is_some(), "--eval-every"),
        (args.log_every.is_some(), "--log-every"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect();
    if !given.is_empty() {
        bail!(
            "{} {} not apply to --tower minilm (it takes --sampler, --steps, --batch-size, --negatives, --train-seed, --split, --out, --minilm-model, --rerank)",
            given.join(", "),
            if given.len() == 1 { "does" } else { "do" }
        );
    }
    Ok(())
}

pub fn train_minilm(args: TrainArgs) -> Result<()> {
    refuse_ngram_flags(&args)?;
    let t = &args.train;
    let sampler = match &t.sampler {
        Some(s) => SamplerSpec::parse(s).with_context(|| format!("--sampler {s}"))?,
        None => TuneConfig::default().sampler,
    };
    let defaults = TuneConfig::default();
    let cfg = TuneConfig {
        steps: t.steps.unwrap_or(defaults.steps),
        batch_size: t.batch_size.unwrap_or(16),
        negatives: t.negatives.unwrap_or(1),
        seed: t.train_seed.unwrap_or(defaults.seed),
        sampler,
        ..defaults
    };
    let base = args
        .minilm_model
        .clone()
        .unwrap_or_else(|| aisle_transformer::default_dir(Path::new(".")));
    let ds = std::sync::Arc::new(args.data.load(&args.dataset)?);
    let split = ds.split_named(args.split.as_deref())?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("out/train").join(format!(
            "{}-{}-minilm",
            slug(&ds.name),
            slug(&cfg.sampler.to_string())
        ))
    });
    if args.out.is_none() {
        crate::out_dir::announce_default("run folder", &out, "--out");
    }
    let model_dir = out.join("model");
    eprintln!(
        "fine-tuning {} on {} (split `{}`: {}), sampler {}, {} steps of {} pairs, {} negatives per pair, seed {}",
        base.display(),
        ds.name,
        split.name,
        split.description,
        cfg.sampler,
        cfg.steps,
        cfg.batch_size,
        if cfg.sampler.is_in_batch() { 0 } else { cfg.negatives },
        cfg.seed
    );
    let quiet = args.quiet;
    let summary = fine_tune(&base, &ds, split, &cfg, &model_dir, &mut |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    let summary_path = out.join("tune_summary.json");
    let json = serde_json::json!({ "config": cfg, "summary": summary });
    let bytes = serde_json::to_vec_pretty(&json)?;
    write_atomic(&summary_path, |w| w.write_all(&bytes))
        .with_context(|| format!("writing {}", summary_path.display()))?;

    // Validation Recall@10, pretrained against fine-tuned, through the same evaluation code.
    let start = std::time::Instant::now();
    let pretrained = MiniLmRanker::new(&ds, &base)?;
    let tuned = MiniLmRanker::with_name(&ds, &model_dir, "fine-tuned".into())?;
    let groups = [
        Group {
            name: "pretrained".into(),
            members: vec![Member::Ready(&pretrained)],
        },
        Group {
            name: "fine-tuned".into(),
            members: vec![Member::Ready(&tuned)],
        },
    ];
    let report = evaluate_groups(
        &ds,
        split,
        &groups,
        &EvalConfig {
            part: Part::Validation,
            ks: vec![10],
            resamples: 500,
            rounds: 2000,
            ..EvalConfig::default()
        },
    )?;
    let r10 = |name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.system == name)
            .and_then(|r| r.micro.get("recall@10"))
            .map_or("-".to_owned(), |e| {
                format!("{:.3} [{:.3}, {:.3}]", e.mean, e.low, e.high)
            })
    };
    let p = report
        .rows
        .iter()
        .find_map(|r| r.p_vs_best)
        .map_or(String::new(), |p| format!(", paired p = {p:.4}"));
    let (first, last) = (summary.losses.first(), summary.losses.last());
    println!(
        "tower                all-MiniLM-L6-v2, fine-tuned from {}",
        base.display()
    );
    println!("sampler              {}", cfg.sampler);
    println!(
        "steps                {} of {} pairs ({} pairs in all)",
        summary.steps, cfg.batch_size, summary.pairs
    );
    println!(
        "training time        {:.1} s ({:.1} pairs/s; sampling {:.1} s, forward {:.1} s, backward + AdamW {:.1} s)",
        summary.train_s, summary.pairs_per_s, summary.sample_s, summary.forward_s, summary.backward_s
    );
    if let (Some(a), Some(b)) = (first, last) {
        println!(
            "mean loss            {:.4} (steps to {}) -> {:.4} (steps to {})",
            a.1, a.0, b.1, b.0
        );
    }
    println!(
        "validation R@10      pretrained {} -> fine-tuned {} ({} queries{p}; {:.1} s to encode and rank)",
        r10("pretrained"),
        r10("fine-tuned"),
        report.queries,
        start.elapsed().as_secs_f64()
    );
    println!("model                {}", model_dir.display());
    println!("summary              {}", summary_path.display());
    if args.rerank {
        // The learned re-ranking head over the fine-tuned towers, beside the model folder,
        // where `aisle serve --model FOLDER` looks for it.
        let head = model_dir.with_file_name(aisle_search::rerank::HEAD_FILE);
        crate::train::fit_head(
            &ds,
            split,
            &model_dir,
            aisle_model::personal::HISTORY_WINDOW,
            &head,
            args.quiet,
        )?;
    }
    Ok(())
}
