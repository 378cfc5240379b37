//! Customers' histories, for personalization, with no leakage by construction.
//!
//! A [`Histories`] holds only the interactions of a split's training part, each user's in time
//! order, and answers "what did this user do strictly before time t". An evaluated query carries
//! its cut-off ([`EvalQuery::before`](crate::EvalQuery)): the held-out order on Instacart, the
//! event itself on Best Buy. Validation and test interactions never enter, so no held-out event
//! can reach a history whatever cut-off is asked for.

use crate::dataset::Dataset;
use crate::model::{Interaction, UserId};
use crate::split::Split;

/// Training interactions per user, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Histories {
    /// Interaction indices per user, sorted by (time, index).
    by_user: Vec<Vec<u32>>,
    /// The time of each entry of `by_user`, for the cut-off search.
    times: Vec<Vec<i64>>,
}

impl Histories {
    /// The histories of `split`'s training part.
    pub fn from_split(ds: &Dataset, split: &Split) -> Histories {
        Self::of(ds, split.train.iter().copied())
    }

    /// Every interaction of the dataset: what a live service knows of its customers (not for
    /// evaluation, where held-out events must stay out).
    pub fn all(ds: &Dataset) -> Histories {
        Self::of(ds, 0..ds.interactions.len() as u32)
    }

    /// The histories of the interactions `events` (indices into `ds.interactions`).
    fn of(ds: &Dataset, events: impl Iterator<Item = u32>) -> Histories {
        let mut by_user: Vec<Vec<u32>> = vec![Vec::new(); ds.users.len()];
        for i in events {
            by_user[ds.interactions[i as usize].user.index()].push(i);
        }
        for h in &mut by_user {
            h.sort_by_key(|&i| (ds.interactions[i as usize].time, i));
        }
        let times = by_user
            .iter()
            .map(|h| {
                h.iter()
                    .map(|&i| ds.interactions[i as usize].time)
                    .collect()
            })
            .collect();
        Histories { by_user, times }
    }

    /// The user's training interactions with `time < before`, oldest first, at most the last
    /// `n`. An unknown user has none.
    pub fn before(&self, user: UserId, before: i64, n: usize) -> &[u32] {
        let (Some(h), Some(t)) = (self.by_user.get(user.index()), self.times.get(user.index()))
        else {
            return &[];
        };
        let end = t.partition_point(|&x| x < before);
        &h[end.saturating_sub(n)..end]
    }

    /// Number of interactions held for the user.
    pub fn count(&self, user: UserId) -> usize {
        self.by_user.get(user.index()).map_or(0, Vec::len)
    }

    /// True when the user has any training interaction.
    pub fn knows(&self, user: UserId) -> bool {
        self.by_user
            .get(user.index())
            .is_some_and(|h| !h.is_empty())
    }

    /// The interactions of [`before`](Self::before), resolved.
    pub fn events<'a>(
        &'a self,
        ds: &'a Dataset,
        user: UserId,
        before: i64,
        n: usize,
    ) -> impl Iterator<Item = &'a Interaction> + 'a {
        self.before(user, before, n)
            .iter()
            .map(move |&i| &ds.interactions[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_hold_only_training_events_before_the_cut_off() {
        let mut ds = crate::synth::small_dataset(400, 40, 600, 8).expect("world");
        // Instacart's protocol too: the held-out orders are the users' last ones.
        let lloo = crate::split::leave_last_order_out(&mut ds).expect("leave last order out");
        ds.set_split(lloo);
        assert_eq!(ds.splits.len(), 3);
        let mut held = vec![false; ds.interactions.len()];
        for split in &ds.splits {
            let h = Histories::from_split(&ds, split);
            let train: std::collections::HashSet<u32> = split.train.iter().copied().collect();
            held.iter_mut().for_each(|x| *x = false);
            for q in split.validation.iter().chain(&split.test) {
                for &e in &q.events {
                    held[e as usize] = true;
                }
            }
            let mut checked = 0;
            for q in split.validation.iter().chain(&split.test) {
                let Some(u) = q.user else { continue };
                let events = h.before(u, q.before, usize::MAX);
                for &i in events {
                    let e = &ds.interactions[i as usize];
                    assert!(
                        train.contains(&i),
                        "{}: a held-out event in a history",
                        split.name
                    );
                    assert!(!held[i as usize]);
                    assert_eq!(e.user, u);
                    assert!(e.time < q.before, "not strictly before the query");
                    checked += 1;
                }
                // Oldest first, and `n` keeps the most recent.
                assert!(events
                    .windows(2)
                    .all(|w| ds.interactions[w[0] as usize].time
                        <= ds.interactions[w[1] as usize].time));
                if events.len() > 3 {
                    assert_eq!(h.before(u, q.before, 3), &events[events.len() - 3..]);
                }
            }
            assert!(
                checked > 100,
                "{}: only {checked} history events",
                split.name
            );
        }
        let h = Histories::from_split(&ds, &ds.splits[0]);
        assert!(h.before(UserId(u32::MAX), i64::MAX, 10).is_empty());
        assert!(!h.knows(UserId(u32::MAX)));
    }
}
