//! A transaction over the state: changes are made in place with an undo log, so a request
//! (or a whole `apply` document) sees its own earlier changes, and a refusal anywhere rolls
//! everything back (R29) without ever copying the whole state.

use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::sorted::RisingMap;

use super::{
    resources::{Eip, Key, Kind, Resource},
    state::State,
};

pub struct Txn<'a> {
    state: &'a mut State,
    /// Each key's value before its first change in this transaction.
    before: BTreeMap<Key, Option<Box<Resource>>>,
    /// The same for EIPs, by far the most numerous, by address: their keys are formatted
    /// once, when the change is listed, instead of at every put. Boxed: a big change
    /// mostly creates EIPs, and a log of a million `None`s the size of an EIP took 100 MB.
    /// A big apply touches them mostly in rising order of address (a pool allocated, then
    /// associated), which a [`RisingMap`] keeps without searching a tree.
    eips_before: RisingMap<Ipv4Addr, Option<Box<Eip>>>,
}

/// What a committed transaction changed: each resource that ended otherwise than it began,
/// with its value before and after. EIPs, by far the most numerous, are kept by address:
/// no key is formatted for them, and both lists come out of the transaction already in
/// order, so a million-EIP change is neither sorted nor copied into maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// By address.
    pub eips: Vec<Changed<Ipv4Addr, Eip>>,
    /// Every other kind, by key.
    pub others: Vec<Changed<Key, Resource>>,
}

/// One changed resource (`None`: it did not exist). What was there before is boxed: a big
/// change mostly creates resources, and its list is then half the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed<K, V> {
    pub key: K,
    pub before: Option<Box<V>>,
    pub after: Option<V>,
}

impl<K, V> Changed<K, V> {
    /// "create", "update" or "delete".
    pub fn action(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, Some(_)) => "create",
            (Some(_), None) => "delete",
            _ => "update",
        }
    }

    /// Each side of the change, with a borrowed value.
    fn values(&self) -> impl Iterator<Item = &V> {
        self.before.as_deref().into_iter().chain(&self.after)
    }
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.eips.is_empty() && self.others.is_empty()
    }

    /// How many resources changed.
    pub fn len(&self) -> usize {
        self.eips.len() + self.others.len()
    }

    /// Every value before or after the change, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = ResourceRef<'_>> {
        let eips = self.eips.iter().flat_map(Changed::values).map(ResourceRef::Eip);
        eips.chain(self.others.iter().flat_map(Changed::values).map(ResourceRef::Other))
    }

    /// The kind and action of each change, in no particular order.
    pub fn actions(&self) -> impl Iterator<Item = (Kind, &'static str)> + '_ {
        let eips = self.eips.iter().map(|c| (Kind::Eip, c.action()));
        eips.chain(self.others.iter().map(|c| (c.key.kind, c.action())))
    }

    /// Every change by key (kind, then id; EIPs by address), made with `other` and `eip`.
    pub fn in_order<'a, T>(
        &'a self,
        other: impl FnMut(&'a Changed<Key, Resource>) -> T + Clone + 'a,
        eip: impl FnMut(&'a Changed<Ipv4Addr, Eip>) -> T + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        let (head, tail) =
            self.others.split_at(self.others.partition_point(|c| c.key.kind < Kind::Eip));
        head.iter()
            .map(other.clone())
            .chain(self.eips.iter().map(eip))
            .chain(tail.iter().map(other))
    }

    /// Every change as one kind of row, by key (copies every value).
    #[cfg(test)]
    pub fn resources(&self) -> Vec<Changed<Key, Resource>> {
        self.in_order(Changed::clone, |c| Changed {
            key: Key::new(Kind::Eip, c.key.to_string()),
            before: c.before.clone().map(|eip| Box::new(Resource::Eip(*eip))),
            after: c.after.clone().map(Resource::Eip),
        })
        .collect()
    }
}

/// A resource borrowed from a [`Change`].
#[derive(Clone, Copy, Debug)]
pub enum ResourceRef<'a> {
    Eip(&'a Eip),
    Other(&'a Resource),
}

impl<'a> Txn<'a> {
    pub fn begin(state: &'a mut State) -> Self {
        Self { state, before: BTreeMap::new(), eips_before: RisingMap::default() }
    }

    pub fn state(&self) -> &State {
        self.state
    }

    pub fn put(&mut self, resource: Resource) {
        if let Resource::Eip(eip) = resource {
            let address = eip.address;
            let previous = self.state.put_eip(eip);
            self.log_first(address, previous);
            return;
        }
        let key = resource.key();
        let previous = self.state.put(resource);
        self.before.entry(key).or_insert_with(|| previous.map(Box::new));
    }

    /// Changes an EIP in place: no copy of it, unless this is its first change in the
    /// transaction (for the undo log). Does nothing if it is not there.
    pub fn update_eip(&mut self, address: Ipv4Addr, change: impl FnOnce(&mut Eip)) {
        if self.eips_before.contains_key(&address) {
            self.state.update_eip(address, false, change);
        } else {
            let before = self.state.update_eip(address, true, change);
            self.eips_before.insert_new(address, before.map(Box::new));
        }
    }

    pub fn remove(&mut self, key: &Key) {
        if key.kind == Kind::Eip
            && let Ok(address) = key.id.parse()
        {
            return self.remove_eip(address);
        }
        let previous = self.state.remove(key);
        self.before.entry(key.clone()).or_insert_with(|| previous.map(Box::new));
    }

    /// [`Txn::remove`] for an EIP, by its address.
    pub fn remove_eip(&mut self, address: Ipv4Addr) {
        let previous = self.state.remove_eip(address);
        self.log_first(address, previous);
    }

    /// Logs an EIP's value before this change, unless an earlier change logged it.
    fn log_first(&mut self, address: Ipv4Addr, before: Option<Eip>) {
        if !self.eips_before.contains_key(&address) {
            self.eips_before.insert_new(address, before.map(Box::new));
        }
    }

    /// Undoes every change.
    pub fn rollback(self) {
        // EIPs last first, as `State::revert` puts them back.
        for (address, before) in self.eips_before.into_sorted().into_iter().rev() {
            self.state.restore_eip(address, before.map(|eip| *eip));
        }
        for (key, before) in self.before {
            self.state.restore(&key, before.map(|resource| *resource));
        }
    }

    /// Keeps the changes and says what they were (keys whose value ended as it began are
    /// left out).
    pub fn commit(self) -> Change {
        let state = &*self.state;
        Change {
            eips: eip_rows(state, self.eips_before.into_sorted()),
            others: self.before.into_iter().filter_map(|(k, p)| row(state, k, p)).collect(),
        }
    }

    /// What `commit` would report, without ending the transaction (for dry runs).
    pub fn pending(&self) -> Change {
        let state = &*self.state;
        let others = self.before.iter().filter_map(|(k, p)| row(state, k.clone(), p.clone()));
        let eips = eip_rows(state, self.eips_before.clone().into_sorted());
        Change { eips, others: others.collect() }
    }
}

/// The changes of the EIPs in `befores` (their values before, in address order) that
/// ended otherwise than they began, in address order. The state's EIPs are found in that
/// order, each just past the last where they are a run.
fn eip_rows(
    state: &State,
    befores: impl IntoIterator<Item = (Ipv4Addr, Option<Box<Eip>>)>,
) -> Vec<Changed<Ipv4Addr, Eip>> {
    let befores = befores.into_iter();
    let mut rows = Vec::with_capacity(befores.size_hint().0);
    for (address, before) in befores {
        let now = state.eips.get(&address);
        if now != before.as_deref() {
            rows.push(Changed { key: address, before, after: now.cloned() });
        }
    }
    rows
}

/// The change of one other resource, if it ended otherwise than it began.
fn row(state: &State, key: Key, before: Option<Box<Resource>>) -> Option<Changed<Key, Resource>> {
    let after = state.get(&key);
    (after.as_ref() != before.as_deref()).then_some(Changed { key, before, after })
}
