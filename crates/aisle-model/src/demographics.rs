//! Customer features for the personalized query tower: what is known of a customer besides what
//! they bought (a segment, an age band, a region, a numeric score).
//!
//! Each feature becomes one vector that the tower's attention reads beside the history items
//! (see [`crate::personal`]):
//!
//! * a categorical feature `field = value` is a row of a hashed table, chosen by hashing both;
//! * a numeric feature `field = x` is the row of `field` scaled by `(x - mean) / sd`, with the
//!   mean and standard deviation of the customers the model was trained on, clipped to +-5.
//!
//! A field is numeric when every customer who has it gives a finite number and at least two
//! distinct values; otherwise it is categorical. A customer's `segment` is the categorical field
//! `segment`. A value that was never seen in training hashes to a row that training did not move:
//! it reads as an untrained direction, weighed by the attention like any other slot.
//!
//! A dataset whose customers have no feature at all gets no table ([`Demographics::fit`] returns
//! `None`), so its personalized tower is the history-only tower, bit for bit.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use aisle_core::{User, Users};

use crate::featurize::hash_bytes;

/// Salt of the feature hash (apart from the text features' salts).
const SALT_CUSTOMER: u64 = 0x4355_5354_4f4d_0004;

/// Rows of the hashed table unless configured otherwise: 256, for the handful of fields and
/// values a customer table has; collisions among a few dozen values are rare.
pub const DEFAULT_BUCKETS_LOG2: u32 = 8;

/// Clip of a standardised numeric value.
const CLIP: f32 = 5.0;

/// One customer feature as the tower reads it: a table row and its scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// `field=value` (categorical) or `field` (numeric), for explanations.
    pub name: String,
    pub row: u32,
    /// 1 for a categorical feature, the standardised value for a numeric one.
    pub scale: f32,
}

/// A numeric field's standardisation, from the training customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericField {
    pub name: String,
    pub mean: f32,
    pub sd: f32,
}

/// The customer-feature part of a personalized tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Demographics {
    /// log2 of the table's rows.
    pub buckets_log2: u32,
    /// Fields read as numbers, with their standardisation; every other field is categorical.
    pub numeric: Vec<NumericField>,
    /// Log-weight of a feature slot in the attention, as `ln w_j` is a history item's.
    pub bias: f32,
    /// The table: `2^buckets_log2 x dim`, row-major.
    pub table: Vec<f32>,
}

impl Demographics {
    /// True when at least one customer has a feature (a segment or a non-empty column).
    pub fn any(users: &Users) -> bool {
        users.iter().any(|(_, u)| {
            u.segment.is_some() || u.demographics.iter().any(|(_, v)| !v.trim().is_empty())
        })
    }

    /// The customer features of `users`, or `None` when no customer has any. The table starts
    /// at zero: a feature slot then adds nothing until training moves its row.
    pub fn fit(users: &Users, dim: usize, buckets_log2: u32) -> Option<Demographics> {
        let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut any = false;
        for (_, u) in users.iter() {
            if u.segment.is_some() {
                any = true;
            }
            for (k, v) in &u.demographics {
                if !v.trim().is_empty() {
                    values.entry(k.as_str()).or_default().push(v.as_str());
                    any = true;
                }
            }
        }
        if !any {
            return None;
        }
        let numeric = values
            .iter()
            .filter_map(|(name, vs)| {
                let xs: Vec<f64> = vs
                    .iter()
                    .map(|v| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
                    .collect::<Option<Vec<f64>>>()?;
                let distinct: BTreeSet<u64> = xs.iter().map(|x| x.to_bits()).collect();
                if distinct.len() < 2 {
                    return None;
                }
                let n = xs.len() as f64;
                let mean = xs.iter().sum::<f64>() / n;
                let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                Some(NumericField {
                    name: (*name).to_owned(),
                    mean: mean as f32,
                    sd: var.sqrt().max(1e-6) as f32,
                })
            })
            .collect();
        Some(Demographics {
            buckets_log2,
            numeric,
            bias: 0.0,
            table: vec![0.0; (1usize << buckets_log2) * dim],
        })
    }

    /// Zero gradients of this shape (the standardisation is copied, it is not trained).
    pub fn zeros_like(&self) -> Demographics {
        Demographics {
            buckets_log2: self.buckets_log2,
            numeric: self.numeric.clone(),
            bias: 0.0,
            table: vec![0.0; self.table.len()],
        }
    }

    /// True when the table fits vectors of `dim` and every standardisation is usable (a model
    /// file is refused otherwise: a zero deviation would put NaN into queries).
    pub fn fits(&self, dim: usize) -> bool {
        self.buckets_log2 <= 24
            && self.table.len() == (1usize << self.buckets_log2) * dim
            && self
                .numeric
                .iter()
                .all(|f| f.mean.is_finite() && f.sd.is_finite() && f.sd > 0.0)
    }

    fn row(&self, parts: &[&[u8]]) -> u32 {
        (hash_bytes(SALT_CUSTOMER, parts) & ((1u64 << self.buckets_log2) - 1)) as u32
    }

    /// The features of one customer, in a fixed order (segment, then fields as the data lists
    /// them). Empty values and numeric values that are not numbers are left out.
    pub fn features(&self, user: &User) -> Vec<Feature> {
        let mut out = Vec::new();
        if let Some(s) = &user.segment {
            out.push(Feature {
                name: format!("segment={s}"),
                row: self.row(&[b"segment", s.as_bytes()]),
                scale: 1.0,
            });
        }
        for (k, v) in &user.demographics {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match self.numeric.iter().find(|f| &f.name == k) {
                Some(f) => {
                    let Some(x) = v.parse::<f64>().ok().filter(|x| x.is_finite()) else {
                        continue;
                    };
                    let z = ((x as f32 - f.mean) / f.sd).clamp(-CLIP, CLIP);
                    out.push(Feature {
                        name: k.clone(),
                        row: self.row(&[k.as_bytes()]),
                        scale: z,
                    });
                }
                None => out.push(Feature {
                    name: format!("{k}={v}"),
                    row: self.row(&[k.as_bytes(), v.as_bytes()]),
                    scale: 1.0,
                }),
            }
        }
        out
    }

    /// The slot vectors of `features` (`m x dim`, row-major): each row of the table times its
    /// scale.
    pub fn slots(&self, features: &[Feature], dim: usize, out: &mut Vec<f32>) {
        out.clear();
        for f in features {
            let r = f.row as usize * dim;
            out.extend(self.table[r..r + dim].iter().map(|x| x * f.scale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A customer's segment and `(column, value)` features.
    type Row<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)]);

    fn users(rows: &[Row]) -> Users {
        let mut us = Users::new();
        for (i, (segment, demo)) in rows.iter().enumerate() {
            us.push(User {
                id: format!("u{i}"),
                segment: segment.map(str::to_owned),
                demographics: demo
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            })
            .expect("unique");
        }
        us
    }

    #[test]
    fn no_feature_no_table() {
        assert!(Demographics::fit(&users(&[(None, &[]), (None, &[("age", " ")])]), 4, 8).is_none());
    }

    #[test]
    fn numbers_are_standardised_and_the_rest_is_categorical() {
        let us = users(&[
            (Some("premium"), &[("age", "20"), ("region", "north")]),
            (Some("budget"), &[("age", "40"), ("region", "7")]),
            (None, &[("age", "30"), ("region", "south")]),
        ]);
        let d = Demographics::fit(&us, 4, 8).expect("features");
        assert!(d.fits(4) && !d.fits(5));
        assert_eq!(
            d.numeric.len(),
            1,
            "age only: region mixes numbers and words"
        );
        assert_eq!(d.numeric[0].name, "age");
        assert!((d.numeric[0].mean - 30.0).abs() < 1e-5);
        let f = d.features(us.get(aisle_core::UserId(1)));
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["segment=budget", "age", "region=7"]);
        // (40 - 30) / sd(20, 40, 30) = 10 / 8.165
        assert!((f[1].scale - 1.2247).abs() < 1e-3, "{}", f[1].scale);
        assert_eq!(f[0].scale, 1.0);
        // The same field and value give the same row; another value, another row here.
        let g = d.features(us.get(aisle_core::UserId(0)));
        assert_eq!(g[1].row, f[1].row, "a numeric field has one row");
        assert_ne!(g[0].row, f[0].row);
        let mut slots = Vec::new();
        d.slots(&f, 4, &mut slots);
        assert_eq!(slots, vec![0.0; 12], "the table starts at zero");
        // A file whose standardisation cannot be used is refused.
        let mut bad = d.clone();
        bad.numeric[0].sd = 0.0;
        assert!(!bad.fits(4));
    }
}
