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
    fn from_rows(mut rows: Vec<Row>) -> Self {
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
        let state = &*self.state;
        let eips = self.eips_before.into_iter().filter_map(|(a, p)| eip_row(state, a, p));
        let others = self.before.into_iter().filter_map(|(k, p)| row(state, k, p));
        Change::from_rows(eips.chain(others).collect())
    }

    /// What `commit` would report, without ending the transaction (for dry runs).
    pub fn pending(&self) -> Change {
        let state = &*self.state;
        let eips = self.eips_before.iter().filter_map(|(a, p)| eip_row(state, *a, p.clone()));
        let others = self.before.iter().filter_map(|(k, p)| row(state, k.clone(), p.clone()));
        Change::from_rows(eips.chain(others).collect())
    }
}

type Row = (Key, Option<Resource>, Option<Resource>);

/// The change of one EIP, if it ended otherwise than it began.
fn eip_row(state: &State, address: Ipv4Addr, previous: Option<Eip>) -> Option<Row> {
    let now = state.eips.get(&address);
    (now != previous.as_ref()).then(|| {
        let key = Key::new(Kind::Eip, address.to_string());
        (key, now.cloned().map(Resource::Eip), previous.map(Resource::Eip))
    })
}

/// The change of one other resource, if it ended otherwise than it began.
fn row(state: &State, key: Key, previous: Option<Resource>) -> Option<Row> {
    let now = state.get(&key);
    (now != previous).then_some((key, now, previous))
}
