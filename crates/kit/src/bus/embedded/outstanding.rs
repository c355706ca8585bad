//! The fresh deliveries of one attachment: taken from the log, not yet settled, and kept
//! in memory only. The log's `bus_pending` table holds the exceptions (retries, parked,
//! dead letters, releases, acks out of order); these need no row, because a new attachment
//! redelivers everything between the consumer's settled and taken positions that has none.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One fresh delivery: its key and when its ack wait runs out.
#[derive(Debug, Clone)]
struct Fresh {
    key: String,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
pub(super) struct Outstanding {
    by_pos: BTreeMap<u64, Fresh>,
    /// How many fresh deliveries each key has (per-key consumers have at most one).
    keys: HashMap<String, usize>,
}

impl Outstanding {
    pub(super) fn insert(&mut self, pos: u64, key: String, deadline_ms: u64) {
        *self.keys.entry(key.clone()).or_default() += 1;
        self.by_pos.insert(pos, Fresh { key, deadline_ms });
    }

    /// Forgets the delivery at `pos`; returns its key when it was outstanding.
    pub(super) fn remove(&mut self, pos: u64) -> Option<String> {
        let fresh = self.by_pos.remove(&pos)?;
        if let Some(count) = self.keys.get_mut(&fresh.key) {
            *count -= 1;
            if *count == 0 {
                self.keys.remove(&fresh.key);
            }
        }
        Some(fresh.key)
    }

    /// The key of the fresh delivery at `pos`.
    pub(super) fn key(&self, pos: u64) -> Option<&str> {
        self.by_pos.get(&pos).map(|fresh| fresh.key.as_str())
    }

    /// The lowest outstanding position, leaving out `except` (being settled now).
    pub(super) fn lowest_except(&self, except: &HashSet<u64>) -> Option<u64> {
        self.by_pos.keys().find(|pos| !except.contains(pos)).copied()
    }

    /// The deliveries whose ack wait ran out by `now_ms`, as (position, key).
    pub(super) fn expired(&self, now_ms: u64) -> Vec<(u64, String)> {
        self.by_pos
            .iter()
            .filter(|(_, fresh)| fresh.deadline_ms <= now_ms)
            .map(|(pos, fresh)| (*pos, fresh.key.clone()))
            .collect()
    }

    /// When the earliest ack wait runs out.
    pub(super) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_pos.values().map(|fresh| fresh.deadline_ms).min()
    }

    /// The keys with a fresh delivery, for parking later messages of theirs.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Outstanding;

    #[test]
    fn keys_and_the_lowest_position_follow_what_is_outstanding() {
        let mut outstanding = Outstanding::default();
        assert_eq!(outstanding.lowest_except(&HashSet::new()), None);
        outstanding.insert(4, "a".into(), 100);
        outstanding.insert(7, "a".into(), 50);
        assert_eq!(outstanding.lowest_except(&HashSet::new()), Some(4));
        assert_eq!(outstanding.lowest_except(&HashSet::from([4])), Some(7));
        assert_eq!(outstanding.key(7), Some("a"));
        assert_eq!(outstanding.remove(4).as_deref(), Some("a"));
        assert_eq!(outstanding.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(outstanding.expired(60), vec![(7, "a".to_owned())]);
        assert_eq!(outstanding.next_deadline_ms(), Some(50));
        assert_eq!(outstanding.remove(7).as_deref(), Some("a"));
        assert_eq!(outstanding.keys().count(), 0);
        assert_eq!(outstanding.remove(7), None);
    }
}
