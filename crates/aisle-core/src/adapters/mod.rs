//! Loading datasets by name or path: the bundled real sets, the synthetic world, and folders in
//! aisle's generic format.
//!
//! | name | source | default split |
//! |---|---|---|
//! | `bestbuy_xbox` | Best Buy mobile search logs (query -> click) | `event` 80/10/10, plus `query_disjoint` |
//! | `instacart` | Instacart catalog and 593 customers' orders | `leave_last_order_out`, queries from the taxonomy |
//! | `flipkart_sample` | 1,002 Flipkart products, category trees to depth 7 | none (catalog only) |
//! | `bestbuy_categories` | Best Buy's 4,584-node category tree | none (taxonomy only) |
//! | `synthetic` | the embedded synthetic world, generated in memory | `event` 80/10/10, plus `query_disjoint` |
//!
//! Real data is read from the data folder: `$AISLE_DATA_DIR`, else `../shared/data` from the
//! working directory, else the `shared/data` folder beside this source tree.

pub mod bestbuy;
pub mod flipkart;
pub mod instacart;
pub mod pylit;

// The default protocols live in `split`; re-exported where datasets are loaded.
pub use crate::split::add_default_splits;

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{Error, Result, Strictness};

/// Names of the datasets aisle knows.
pub const NAMES: [&str; 5] = [
    "bestbuy_xbox",
    "instacart",
    "flipkart_sample",
    "bestbuy_categories",
    "synthetic",
];

/// How to load a dataset.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The folder holding the real datasets; see [`data_dir`].
    pub data_dir: Option<PathBuf>,
    pub strictness: Strictness,
    /// Seed of the splits (and of the synthetic world).
    pub seed: u64,
    /// Whether to compute the splits.
    pub splits: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            data_dir: None,
            strictness: Strictness::Strict,
            seed: 42,
            splits: true,
        }
    }
}

/// The folder of the real datasets: the explicit one, `$AISLE_DATA_DIR`, `../shared/data`, or the
/// `shared/data` folder beside this repository (where CI and development checkouts have it).
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("AISLE_DATA_DIR") {
        return PathBuf::from(p);
    }
    let from_cwd = PathBuf::from("../shared/data");
    if from_cwd.is_dir() {
        return from_cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// The folder of a bundled real dataset, or an error saying where it was looked for.
pub fn dataset_dir(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let dir = data_dir.join(name);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::Dataset(format!(
            "dataset `{name}` not found at {} (set AISLE_DATA_DIR or --data-dir to the folder holding {name}/)",
            dir.display()
        )))
    }
}

/// Best Buy's category tree in the data folder ([`data_dir`] of `explicit`), as the synthetic
/// world's taxonomy: `bestbuy_categories/categories.json`, or an error saying where it was
/// looked for.
pub fn best_buy_taxonomy(explicit: Option<&Path>) -> Result<crate::synth::TaxonomySource> {
    let dir = dataset_dir(&data_dir(explicit), "bestbuy_categories")?;
    Ok(crate::synth::TaxonomySource::BestBuy(
        dir.join("categories.json"),
    ))
}

/// [`load`], saying what it does through `say`: a line before (a retailer's export takes a
/// while: 12M interactions, about 25 s), one after with the counts when it took a second or
/// more, and what a lenient import skipped or merged, by reason with the first example, so that
/// the wait and the repairs are never silent.
pub fn load_saying(
    name_or_path: &str,
    opts: &LoadOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Dataset> {
    let start = std::time::Instant::now();
    say(&format!("loading dataset `{name_or_path}` ..."));
    let ds = load(name_or_path, opts)?;
    let took = start.elapsed().as_secs_f64();
    if took >= 1.0 {
        say(&format!(
            "loaded `{name_or_path}`: {} products, {} interactions in {took:.1} s",
            crate::stats::fmt_n(ds.catalog.len()),
            crate::stats::fmt_n(ds.interactions.len())
        ));
    }
    if opts.strictness == Strictness::Lenient && !ds.report.is_empty() {
        say(&format!(
            "lenient import skipped or merged {} rows:",
            ds.report.total()
        ));
        for (reason, n, example) in ds.report.entries() {
            say(&format!("  {n:>8}  {reason}  (first: {example})"));
        }
    }
    Ok(ds)
}

/// Loads a dataset by name (see [`NAMES`]) or from a folder in the generic format, and computes
/// its default splits.
pub fn load(name_or_path: &str, opts: &LoadOptions) -> Result<Dataset> {
    let data = data_dir(opts.data_dir.as_deref());
    let mut ds = match name_or_path {
        "bestbuy_xbox" => bestbuy::load_xbox(&data, opts.strictness)?,
        "instacart" => instacart::load(&dataset_dir(&data, "instacart")?, opts.strictness)?,
        "flipkart_sample" => {
            flipkart::load(&dataset_dir(&data, "flipkart_sample")?, opts.strictness)?
        }
        "bestbuy_categories" => bestbuy::load_categories_dataset(&data)?,
        "synthetic" => {
            let cfg = crate::synth::SynthConfig {
                seed: opts.seed,
                ..Default::default()
            };
            crate::synth::generate(&cfg)?.dataset
        }
        other => {
            let path = Path::new(other);
            if !path.is_dir() {
                return Err(Error::Dataset(format!(
                    "`{other}` is neither a dataset name ({}) nor a folder",
                    NAMES.join(", ")
                )));
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("dataset")
                .to_owned();
            crate::io::generic::load_dir(path, &name, opts.strictness)?
        }
    };
    if opts.splits {
        add_default_splits(&mut ds, opts.seed)?;
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_says_so_before_it_starts() {
        let mut said = Vec::new();
        let opts = LoadOptions {
            splits: false,
            ..LoadOptions::default()
        };
        let ds = load_saying("synthetic", &opts, &mut |l| said.push(l.to_owned())).expect("loads");
        assert_eq!(said[0], "loading dataset `synthetic` ...");
        assert!(!ds.catalog.is_empty());
        let err = best_buy_taxonomy(Some(Path::new("/no/such"))).expect_err("no data folder");
        assert!(
            err.to_string().contains("/no/such/bestbuy_categories"),
            "{err}"
        );
    }
}
