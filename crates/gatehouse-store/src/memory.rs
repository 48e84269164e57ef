//! [`MemoryStore`]: a [`Store`] in memory, for tests and examples. It keeps the same
//! promises as the SQL store (compare-and-set versions, dead letters kept) for as
//! long as the process lives, and nothing after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{DeadLetter, Outcome, Record, Store, StoreError, Write};

/// A [`Store`] in memory; clones share it, so a test can read what a server saved.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Contents>>,
}

#[derive(Debug, Default)]
struct Contents {
    records: HashMap<String, Record>,
    dead_letters: Vec<DeadLetter>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn contents(&self) -> MutexGuard<'_, Contents> {
        // Nothing under the lock can panic halfway through a change.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest record of `key`, read directly (not through a writer).
    pub fn get(&self, key: &str) -> Option<Record> {
        self.contents().records.get(key).cloned()
    }

    /// The saves that did not land, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.contents().dead_letters.clone()
    }
}

impl Store for MemoryStore {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.get(key))
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        let mut contents = self.contents();
        let outcomes = writes
            .iter()
            .map(|write| {
                let stored = contents.records.get(&write.record.key);
                let stored_version = stored.map_or(0, |r| r.version);
                if stored == Some(&write.record) {
                    // The very same save again (a retried batch): already applied.
                    return Outcome::Applied;
                }
                if stored_version != write.expected {
                    return Outcome::Conflict {
                        stored: stored_version,
                    };
                }
                contents
                    .records
                    .insert(write.record.key.clone(), write.record.clone());
                Outcome::Applied
            })
            .collect();
        Ok(outcomes)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.contents().dead_letters.push(letter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn write(version: u64, expected: u64, data: &'static str) -> Write {
        Write {
            record: Record {
                key: "ada".into(),
                version,
                data: Bytes::from(data),
            },
            expected,
        }
    }

    #[tokio::test]
    async fn a_save_lands_only_over_the_version_it_was_built_on() {
        let store = MemoryStore::new();
        let first = store.save_batch(&[write(1, 0, "a")]).await.unwrap();
        assert_eq!(first, vec![Outcome::Applied]);
        // Built on a version that is not the stored one: refused, the stored one stays.
        let stale = store.save_batch(&[write(2, 0, "b")]).await.unwrap();
        assert_eq!(stale, vec![Outcome::Conflict { stored: 1 }]);
        // The same save again (a retry) is applied, not a conflict.
        let again = store.save_batch(&[write(1, 0, "a")]).await.unwrap();
        assert_eq!(again, vec![Outcome::Applied]);
        let next = store.save_batch(&[write(2, 1, "c")]).await.unwrap();
        assert_eq!(next, vec![Outcome::Applied]);
        assert_eq!(store.load("ada").await.unwrap().unwrap().data, "c");
    }
}
