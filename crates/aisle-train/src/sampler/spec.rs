//! Sampler specifications: what a config file or `--sampler` names, and building the sampler.
//!
//! The command-line syntax:
//!
//! ```text
//! in-batch                          no sampled negatives (k = 0)
//! random[:pool=catalog]             uniform over the catalog
//! popularity[:alpha=0.75]           by training popularity
//! bm25[:top=50,pool=catalog]        from the query's BM25 top list
//! ance[:refresh=200,top=50,index=hnsw,pool=catalog]   from the model's own top list,
//!                                   re-indexed every 200 steps in an HNSW graph (or
//!                                   index=exact: brute force)
//! taxonomy[:leaf=1,sibling=1,cousin=0.5,pool=interacted]    TB-HNS; pool=catalog is the
//!                                   paper's (every product), pool=popularity by interactions
//! mix:0.5*taxonomy+0.5*random       a weighted mixture ('+' between parts)
//! curriculum:random->taxonomy@500..1500     from the first to the second over steps 500..1500
//! ```
//!
//! `pool=interacted` makes random, BM25 and ANCE draw only among the products with a training
//! interaction, as TB-HNS does by default; their default stays the whole catalog, their rule
//! before pools existed ([`NegativePool`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::pool::{catalog_pool, is_catalog};
use super::{
    AnceIndex, AnceSampler, Bm25Sampler, Curriculum, Mixture, NegativePool, PopularitySampler,
    Sampler, TaxonomySampler, TaxonomyWeights, UniformSampler,
};
use crate::data::TrainData;
use crate::error::{Result, TrainError};

/// A sampler, as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SamplerSpec {
    InBatch,
    Random {
        #[serde(default = "catalog_pool", skip_serializing_if = "is_catalog")]
        pool: NegativePool,
    },
    Popularity {
        alpha: f64,
    },
    Bm25 {
        top: usize,
        #[serde(default = "catalog_pool", skip_serializing_if = "is_catalog")]
        pool: NegativePool,
    },
    Ance {
        refresh: u64,
        top: usize,
        #[serde(default)]
        index: AnceIndex,
        #[serde(default = "catalog_pool", skip_serializing_if = "is_catalog")]
        pool: NegativePool,
    },
    Taxonomy(TaxonomyWeights),
    Mix {
        parts: Vec<(f64, SamplerSpec)>,
    },
    Curriculum {
        from: Box<SamplerSpec>,
        to: Box<SamplerSpec>,
        start: u64,
        end: u64,
    },
}

fn params(text: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for kv in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            TrainError::Config(format!("sampler parameter `{kv}` is not name=value"))
        })?;
        map.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(map)
}

fn take<T: std::str::FromStr>(
    map: &mut BTreeMap<String, String>,
    key: &str,
    default: T,
) -> Result<T> {
    match map.remove(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            TrainError::Config(format!("sampler parameter `{key}`: cannot read `{v}`"))
        }),
    }
}

/// The `pool` of a sampler that draws from a list of candidates (random, BM25, ANCE): the
/// catalog unless told otherwise, or the products with a training interaction.
fn list_pool(name: &str, map: &mut BTreeMap<String, String>) -> Result<NegativePool> {
    match map.remove("pool") {
        None => Ok(NegativePool::Catalog),
        Some(v) => match v.parse().map_err(TrainError::Config)? {
            NegativePool::Popularity => Err(TrainError::Config(format!(
                "sampler `{name}`: pool=popularity is for taxonomy only (expected catalog or \
                 interacted; `popularity:alpha=1` draws by interactions)"
            ))),
            pool => Ok(pool),
        },
    }
}

fn no_more(name: &str, map: BTreeMap<String, String>) -> Result<()> {
    match map.keys().next() {
        None => Ok(()),
        Some(k) => Err(TrainError::Config(format!(
            "sampler `{name}` has no parameter `{k}`"
        ))),
    }
}

impl SamplerSpec {
    /// Parses the command-line syntax (see the module documentation).
    pub fn parse(text: &str) -> Result<SamplerSpec> {
        let text = text.trim();
        let (name, rest) = match text.split_once(':') {
            Some((n, r)) => (n.trim(), r),
            None => (text, ""),
        };
        match name {
            "mix" => {
                let parts = rest
                    .split('+')
                    .map(|part| {
                        let (w, spec) = part.split_once('*').ok_or_else(|| {
                            TrainError::Config(format!(
                                "mixture part `{part}` is not weight*sampler"
                            ))
                        })?;
                        let w: f64 = w.trim().parse().map_err(|_| {
                            TrainError::Config(format!("mixture weight `{w}` is not a number"))
                        })?;
                        if !(w.is_finite() && w >= 0.0) {
                            return Err(TrainError::Config(format!(
                                "mixture weight {w} must be >= 0"
                            )));
                        }
                        Ok((w, SamplerSpec::parse(spec)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if parts.iter().all(|(w, _)| *w == 0.0) {
                    return Err(TrainError::Config(
                        "a mixture needs a positive weight".into(),
                    ));
                }
                return Ok(SamplerSpec::Mix { parts });
            }
            "curriculum" => {
                let bad = || {
                    TrainError::Config(format!(
                        "curriculum `{rest}` is not FIRST->SECOND@START..END (e.g. random->taxonomy@500..1500)"
                    ))
                };
                let (samplers, steps) = rest.rsplit_once('@').ok_or_else(bad)?;
                let (from, to) = samplers.split_once("->").ok_or_else(bad)?;
                let (start, end) = steps.split_once("..").ok_or_else(bad)?;
                return Ok(SamplerSpec::Curriculum {
                    from: Box::new(SamplerSpec::parse(from)?),
                    to: Box::new(SamplerSpec::parse(to)?),
                    start: start.trim().parse().map_err(|_| bad())?,
                    end: end.trim().parse().map_err(|_| bad())?,
                });
            }
            _ => {}
        }
        let mut p = params(rest)?;
        let spec = match name {
            "in-batch" | "in_batch" | "inbatch" => SamplerSpec::InBatch,
            "random" | "uniform" => SamplerSpec::Random {
                pool: list_pool(name, &mut p)?,
            },
            "popularity" => SamplerSpec::Popularity {
                alpha: take(&mut p, "alpha", 0.75)?,
            },
            "bm25" => SamplerSpec::Bm25 {
                top: take(&mut p, "top", 50)?,
                pool: list_pool(name, &mut p)?,
            },
            "ance" => SamplerSpec::Ance {
                refresh: take(&mut p, "refresh", 200)?,
                top: take(&mut p, "top", 50)?,
                index: take(&mut p, "index", AnceIndex::default())?,
                pool: list_pool(name, &mut p)?,
            },
            "taxonomy" | "tbhns" | "tb-hns" => {
                let d = TaxonomyWeights::default();
                SamplerSpec::Taxonomy(TaxonomyWeights {
                    leaf: take(&mut p, "leaf", d.leaf)?,
                    sibling: take(&mut p, "sibling", d.sibling)?,
                    cousin: take(&mut p, "cousin", d.cousin)?,
                    pool: match p.remove("pool") {
                        None => d.pool,
                        Some(v) => v.parse().map_err(TrainError::Config)?,
                    },
                })
            }
            other => {
                return Err(TrainError::Config(format!(
                    "unknown sampler `{other}`: expected in-batch, random, popularity, bm25, ance, taxonomy, mix:..., curriculum:..."
                )))
            }
        };
        no_more(name, p)?;
        Ok(spec)
    }

    /// True when the spec draws no negatives (in-batch only).
    pub fn is_in_batch(&self) -> bool {
        matches!(self, SamplerSpec::InBatch)
    }

    /// The ANCE refresh interval anywhere in the spec (checkpoints must fall on it).
    pub fn ance_refresh(&self) -> Option<u64> {
        match self {
            SamplerSpec::Ance { refresh, .. } => Some(*refresh),
            SamplerSpec::Mix { parts } => parts.iter().find_map(|(_, s)| s.ance_refresh()),
            SamplerSpec::Curriculum { from, to, .. } => from.ance_refresh().or(to.ance_refresh()),
            _ => None,
        }
    }
}

impl fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerSpec::InBatch => write!(f, "in-batch"),
            SamplerSpec::Random { pool } => match pool {
                NegativePool::Catalog => write!(f, "random"),
                pool => write!(f, "random:pool={pool}"),
            },
            SamplerSpec::Popularity { alpha } => write!(f, "popularity:alpha={alpha}"),
            SamplerSpec::Bm25 { top, pool } => {
                write!(f, "bm25:top={top}")?;
                write_pool(f, *pool)
            }
            SamplerSpec::Ance {
                refresh,
                top,
                index,
                pool,
            } => {
                write!(f, "ance:refresh={refresh},top={top},index={index}")?;
                write_pool(f, *pool)
            }
            SamplerSpec::Taxonomy(w) => write!(
                f,
                "taxonomy:leaf={},sibling={},cousin={},pool={}",
                w.leaf, w.sibling, w.cousin, w.pool
            ),
            SamplerSpec::Mix { parts } => {
                write!(f, "mix:")?;
                for (i, (w, s)) in parts.iter().enumerate() {
                    if i > 0 {
                        write!(f, "+")?;
                    }
                    write!(f, "{w}*{s}")?;
                }
                Ok(())
            }
            SamplerSpec::Curriculum {
                from,
                to,
                start,
                end,
            } => {
                write!(f, "curriculum:{from}->{to}@{start}..{end}")
            }
        }
    }
}

/// `,pool=...` after a list sampler's other parameters, unless it is the catalog (the default).
fn write_pool(f: &mut fmt::Formatter<'_>, pool: NegativePool) -> fmt::Result {
    match pool {
        NegativePool::Catalog => Ok(()),
        pool => write!(f, ",pool={pool}"),
    }
}

/// Builds the sampler a spec names (`None` for in-batch only); BM25 negatives come from an index
/// with `bm25`'s field boosts.
pub fn build(
    spec: &SamplerSpec,
    ds: &aisle_core::Dataset,
    data: &TrainData,
    bm25: &aisle_search::FieldBoosts,
) -> Result<Option<Box<dyn Sampler>>> {
    Ok(Some(match spec {
        SamplerSpec::InBatch => return Ok(None),
        SamplerSpec::Random { pool } => Box::new(UniformSampler::new(data, *pool)),
        SamplerSpec::Popularity { alpha } => Box::new(PopularitySampler::new(data, *alpha)),
        SamplerSpec::Bm25 { top, pool } => Box::new(Bm25Sampler::new(ds, data, *top, bm25, *pool)?),
        SamplerSpec::Ance {
            refresh,
            top,
            index,
            pool,
        } => Box::new(AnceSampler::new(*refresh, *top, *index, *pool)),
        SamplerSpec::Taxonomy(w) => Box::new(TaxonomySampler::new(ds, *w, &data.popularity)),
        SamplerSpec::Mix { parts } => {
            let mut built = Vec::new();
            for (w, s) in parts {
                let s = build(s, ds, data, bm25)?.ok_or_else(|| {
                    TrainError::Config("in-batch cannot be part of a mixture".into())
                })?;
                built.push((*w, s));
            }
            Box::new(Mixture::new(built))
        }
        SamplerSpec::Curriculum {
            from,
            to,
            start,
            end,
        } => {
            let in_batch = || TrainError::Config("in-batch cannot be part of a curriculum".into());
            let from = build(from, ds, data, bm25)?.ok_or_else(in_batch)?;
            let to = build(to, ds, data, bm25)?.ok_or_else(in_batch)?;
            Box::new(Curriculum::new(from, to, *start, *end))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_round_trips() {
        for text in [
            "in-batch",
            "random",
            "popularity:alpha=0.5",
            "bm25:top=30",
            "ance:refresh=100,top=20,index=exact",
            "ance:refresh=100,top=20,index=hnsw",
            "ance:refresh=100,top=20,index=exact,pool=interacted",
            "random:pool=interacted",
            "bm25:top=30,pool=interacted",
            "taxonomy:leaf=1,sibling=0.5,cousin=0",
            "taxonomy:leaf=1,sibling=0.5,cousin=0,pool=catalog",
            "taxonomy:pool=popularity",
            "mix:0.5*taxonomy:leaf=1,sibling=1,cousin=0.5+0.5*random",
            "curriculum:random->taxonomy:leaf=1,sibling=1,cousin=0.5@500..1500",
        ] {
            let spec = SamplerSpec::parse(text).expect(text);
            assert_eq!(
                SamplerSpec::parse(&spec.to_string()).expect("again"),
                spec,
                "{text}"
            );
        }
        assert_eq!(
            SamplerSpec::parse("taxonomy").expect("defaults"),
            SamplerSpec::Taxonomy(TaxonomyWeights::default())
        );
        assert_eq!(
            SamplerSpec::parse("ance:refresh=50")
                .expect("ance")
                .ance_refresh(),
            Some(50)
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "nope",
            "bm25:depth=3",
            "bm25:top=x",
            "mix:taxonomy",
            "mix:0*random",
            "curriculum:random",
            "taxonomy:leaf",
            "taxonomy:pool=all",
            "random:pool=popularity",
            "bm25:pool=nope",
            "ance:pool=popularity",
        ] {
            assert!(SamplerSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_samplers_read_and_write_their_catalog_pool_as_before_pools_existed() {
        // A config or model written before `pool` existed still reads, as the catalog pool, and
        // the catalog pool is written as it was then (so digests over it do not move).
        for (old, spec) in [
            (
                r#"{"kind":"random"}"#,
                SamplerSpec::Random {
                    pool: NegativePool::Catalog,
                },
            ),
            (
                r#"{"kind":"bm25","top":50}"#,
                SamplerSpec::Bm25 {
                    top: 50,
                    pool: NegativePool::Catalog,
                },
            ),
            (
                r#"{"kind":"ance","refresh":200,"top":50,"index":"hnsw"}"#,
                SamplerSpec::Ance {
                    refresh: 200,
                    top: 50,
                    index: AnceIndex::Hnsw,
                    pool: NegativePool::Catalog,
                },
            ),
        ] {
            let read: SamplerSpec = serde_json::from_str(old).expect(old);
            assert_eq!(read, spec);
            assert_eq!(serde_json::to_string(&spec).expect("json"), old);
        }
        let interacted = SamplerSpec::parse("random:pool=interacted").expect("spec");
        assert_eq!(
            serde_json::to_string(&interacted).expect("json"),
            r#"{"kind":"random","pool":"interacted"}"#
        );
        assert_eq!(
            SamplerSpec::parse("random").expect("spec").to_string(),
            "random"
        );
    }
}
