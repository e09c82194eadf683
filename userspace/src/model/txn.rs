//! A transaction over the state: changes are made in place with an undo log, so a request
//! (or a whole `apply` document) sees its own earlier changes, and a refusal anywhere rolls
//! everything back (R29) without ever copying the whole state.

use std::collections::BTreeMap;

use super::{
    resources::{Key, Resource},
    state::State,
};

pub struct Txn<'a> {
    state: &'a mut State,
    /// Each key's value before its first change in this transaction.
    before: BTreeMap<Key, Option<Resource>>,
}

/// What a committed transaction changed: the final value of every touched resource (`None`
/// when deleted) and its value before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub after: BTreeMap<Key, Option<Resource>>,
    pub before: BTreeMap<Key, Option<Resource>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.after.is_empty()
    }
}

impl<'a> Txn<'a> {
    pub fn begin(state: &'a mut State) -> Self {
        Self { state, before: BTreeMap::new() }
    }

    pub fn state(&self) -> &State {
        self.state
    }

    pub fn put(&mut self, resource: Resource) {
        let key = resource.key();
        let previous = self.state.put(resource);
        self.before.entry(key).or_insert(previous);
    }

    pub fn remove(&mut self, key: &Key) {
        let previous = self.state.remove(key);
        self.before.entry(key.clone()).or_insert(previous);
    }

    /// Undoes every change.
    pub fn rollback(self) {
        for (key, previous) in self.before {
            match previous {
                Some(resource) => {
                    self.state.put(resource);
                }
                None => {
                    self.state.remove(&key);
                }
            }
        }
    }

    /// Keeps the changes and says what they were (keys whose value ended as it began are
    /// left out).
    pub fn commit(self) -> Change {
        let mut change = Change::default();
        for (key, previous) in self.before {
            let now = self.state.get(&key);
            if now != previous {
                change.after.insert(key.clone(), now);
                change.before.insert(key, previous);
            }
        }
        change
    }

    /// What `commit` would report, without ending the transaction (for dry runs).
    pub fn pending(&self) -> Change {
        let mut change = Change::default();
        for (key, previous) in &self.before {
            let now = self.state.get(key);
            if now != *previous {
                change.after.insert(key.clone(), now);
                change.before.insert(key.clone(), previous.clone());
            }
        }
        change
    }
}
