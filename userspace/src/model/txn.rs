//! A transaction over the state: changes are made in place with an undo log, so a request
//! (or a whole `apply` document) sees its own earlier changes, and a refusal anywhere rolls
//! everything back (R29) without ever copying the whole state.

use std::{collections::BTreeMap, net::Ipv4Addr};

use super::{
    resources::{Eip, Key, Kind, Resource},
    state::State,
};

pub struct Txn<'a> {
    state: &'a mut State,
    /// Each key's value before its first change in this transaction.
    before: BTreeMap<Key, Option<Resource>>,
    /// The same for EIPs, by far the most numerous, by address: their keys are formatted
    /// once, when the change is listed, instead of at every put.
    eips_before: BTreeMap<Ipv4Addr, Option<Eip>>,
}

/// What a committed transaction changed: the final value of every touched resource (`None`
/// when deleted) and its value before. Both maps hold the same keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub after: BTreeMap<Key, Option<Resource>>,
    pub before: BTreeMap<Key, Option<Resource>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.after.is_empty()
    }

    /// From (key, after, before) rows in any order.
    fn from_rows(mut rows: Vec<(Key, Option<Resource>, Option<Resource>)>) -> Self {
        // Sorted once, the maps are built in bulk rather than by a million inserts.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut after = Vec::with_capacity(rows.len());
        let mut before = Vec::with_capacity(rows.len());
        for (key, now, previous) in rows {
            after.push((key.clone(), now));
            before.push((key, previous));
        }
        Self { after: after.into_iter().collect(), before: before.into_iter().collect() }
    }
}

impl<'a> Txn<'a> {
    pub fn begin(state: &'a mut State) -> Self {
        Self { state, before: BTreeMap::new(), eips_before: BTreeMap::new() }
    }

    pub fn state(&self) -> &State {
        self.state
    }

    pub fn put(&mut self, resource: Resource) {
        if let Resource::Eip(eip) = resource {
            let address = eip.address;
            let previous = self.state.put_eip(eip);
            self.eips_before.entry(address).or_insert(previous);
            return;
        }
        let key = resource.key();
        let previous = self.state.put(resource);
        self.before.entry(key).or_insert(previous);
    }

    pub fn remove(&mut self, key: &Key) {
        if key.kind == Kind::Eip
            && let Ok(address) = key.id.parse()
        {
            let previous = self.state.remove_eip(address);
            self.eips_before.entry(address).or_insert(previous);
            return;
        }
        let previous = self.state.remove(key);
        self.before.entry(key.clone()).or_insert(previous);
    }

    /// Undoes every change.
    pub fn rollback(self) {
        for (address, previous) in self.eips_before {
            match previous {
                Some(eip) => {
                    self.state.put_eip(eip);
                }
                None => {
                    self.state.remove_eip(address);
                }
            }
        }
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
        let mut rows = Vec::new();
        for (address, previous) in self.eips_before {
            let now = self.state.eips.get(&address);
            if now != previous.as_ref() {
                let key = Key::new(Kind::Eip, address.to_string());
                rows.push((key, now.cloned().map(Resource::Eip), previous.map(Resource::Eip)));
            }
        }
        for (key, previous) in self.before {
            let now = self.state.get(&key);
            if now != previous {
                rows.push((key, now, previous));
            }
        }
        Change::from_rows(rows)
    }

    /// What `commit` would report, without ending the transaction (for dry runs).
    pub fn pending(&self) -> Change {
        let mut rows = Vec::new();
        for (address, previous) in &self.eips_before {
            let now = self.state.eips.get(address);
            if now != previous.as_ref() {
                let key = Key::new(Kind::Eip, address.to_string());
                let previous = previous.clone().map(Resource::Eip);
                rows.push((key, now.cloned().map(Resource::Eip), previous));
            }
        }
        for (key, previous) in &self.before {
            let now = self.state.get(key);
            if now != *previous {
                rows.push((key.clone(), now, previous.clone()));
            }
        }
        Change::from_rows(rows)
    }
}
