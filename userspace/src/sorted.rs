//! Ordered containers for the agent's big changes. A big apply allocates, associates,
//! plans and writes a million addresses, mostly one after the other in rising order; a
//! tree searched from its root for each of them spends most of the change's time there.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    ops::{Bound, RangeBounds},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

/// A key of a [`RisingMap`].
pub trait RisingKey: Ord + Copy {
    /// A number that rises with the key (never falls as the key rises), if the key has
    /// one: addresses do. A lookup out of order then starts where the number says the key
    /// lies between the first and the last, as in a dense pool of addresses it does,
    /// instead of halving a million keys, a cache miss at each step.
    fn number(&self) -> Option<u64>;
}

impl RisingKey for u32 {
    fn number(&self) -> Option<u64> {
        Some(u64::from(*self))
    }
}

impl RisingKey for Ipv4Addr {
    fn number(&self) -> Option<u64> {
        Some(u64::from(u32::from(*self)))
    }
}

/// An ordered map whose keys mostly arrive in rising order: those are kept in a sorted
/// list, where a new key above the last is pushed after one comparison and a key looked
/// up in rising order is found at once, past the last one found (else by a search of the
/// keys, which are kept apart from the values so that it reads few cache lines). The few
/// keys that come out of that order go in a tree beside it. Iteration merges the two, so
/// it is in key order.
#[derive(Debug)]
pub struct RisingMap<K, V> {
    /// Rising keys, none of them in `others`.
    keys: Vec<K>,
    /// The value of each of `keys`, at the same index.
    values: Vec<V>,
    /// Where in `keys` the last key found there was, plus one. Only a hint, written by
    /// lookups through a shared reference (atomic so that the map can be read from two
    /// threads; any value is safe).
    next: AtomicUsize,
    others: BTreeMap<K, V>,
}

impl<K, V> Default for RisingMap<K, V> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            next: AtomicUsize::new(0),
            others: BTreeMap::new(),
        }
    }
}

impl<K: Clone, V: Clone> Clone for RisingMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            values: self.values.clone(),
            next: AtomicUsize::new(self.next.load(Relaxed)),
            others: self.others.clone(),
        }
    }
}

impl<K: RisingKey, V> RisingMap<K, V> {
    pub fn len(&self) -> usize {
        self.keys.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.others.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Where `key` is in `keys`.
    fn position(&self, key: &K) -> Option<usize> {
        if self.keys.last().is_none_or(|last| key > last) {
            return None;
        }
        let next = self.next.load(Relaxed);
        let found = match self.keys.get(next) {
            Some(at_next) if at_next == key => Some(next),
            _ => search(&self.keys, key),
        };
        if let Some(index) = found {
            self.next.store(index + 1, Relaxed);
        }
        found
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        match self.position(key) {
            Some(index) => Some(&self.values[index]),
            None => self.others.get(key),
        }
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.position(key) {
            Some(index) => Some(&mut self.values[index]),
            None => self.others.get_mut(key),
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`'s value; returns the one it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(held) = self.get_mut(&key) {
            return Some(std::mem::replace(held, value));
        }
        self.insert_new(key, value);
        None
    }

    /// Adds `key`, which must not be here yet: no search for it.
    pub fn insert_new(&mut self, key: K, value: V) {
        debug_assert!(!self.contains_key(&key), "insert_new of a key that is here");
        if self.keys.last().is_none_or(|last| *last < key) {
            self.keys.push(key);
            self.values.push(value);
        } else {
            self.others.insert(key, value);
        }
    }

    /// Removes `key`. The last of the sorted list goes at once (an undo takes back the
    /// keys last first); one out of its middle moves the whole list into the tree first,
    /// so that removing many that way costs one move, not a shift of the list each.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        match self.position(key) {
            Some(index) if index + 1 == self.keys.len() => {
                self.keys.pop();
                self.values.pop()
            }
            Some(_) => {
                self.settle();
                self.others.remove(key)
            }
            None => self.others.remove(key),
        }
    }

    /// Moves the sorted list into the tree.
    fn settle(&mut self) {
        let listed =
            std::mem::take(&mut self.keys).into_iter().zip(std::mem::take(&mut self.values));
        self.next.store(0, Relaxed);
        extend_sorted(&mut self.others, listed);
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        merge(self.keys.iter().zip(&self.values), self.others.iter())
    }

    /// The entries in `range`, in key order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        let start = match range.start_bound() {
            Bound::Included(start) => self.keys.partition_point(|k| k < start),
            Bound::Excluded(start) => self.keys.partition_point(|k| k <= start),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => self.keys.partition_point(|k| k <= end),
            Bound::Excluded(end) => self.keys.partition_point(|k| k < end),
            Bound::Unbounded => self.keys.len(),
        }
        .max(start);
        let listed = self.keys[start..end].iter().zip(&self.values[start..end]);
        merge(listed, self.others.range(range))
    }

    /// Every entry, in key order.
    pub fn into_sorted(self) -> Vec<(K, V)> {
        let Self { keys, values, others, .. } = self;
        let listed = keys.into_iter().zip(values);
        let mut sorted = Vec::with_capacity(listed.len() + others.len());
        sorted.extend(merge(listed, others.into_iter()));
        sorted
    }
}

impl<K: RisingKey, V> std::ops::Index<&K> for RisingMap<K, V> {
    type Output = V;

    /// The value of `key`, which must be here.
    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key in the RisingMap")
    }
}

/// Equal when they hold the same entries, however they are split between list and tree.
impl<K: RisingKey, V: PartialEq> PartialEq for RisingMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: RisingKey, V: Eq> Eq for RisingMap<K, V> {}

impl<K: RisingKey, V> FromIterator<(K, V)> for RisingMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = Self::default();
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

/// Adds `entries`, in key order, to `tree`. As many as a good part of the tree (a million
/// new mappings) are merged in one pass over both (`BTreeMap::append`); a few are inserted
/// one by one, each finding the tree's nodes after the last.
pub fn extend_sorted<K: Ord, V>(
    tree: &mut BTreeMap<K, V>,
    entries: impl ExactSizeIterator<Item = (K, V)>,
) {
    if entries.len() >= tree.len() / 4 {
        tree.append(&mut entries.collect());
    } else {
        tree.extend(entries);
    }
}

/// Where `key` is in `keys` (sorted, not empty). A key with a number starts at the place
/// its number has between the first key's and the last's, then gallops (1, 2, 4, ...
/// steps) towards it and searches the last stretch by halves: one or two reads in a dense
/// run of addresses, and never many more than a binary search's elsewhere.
fn search<K: RisingKey>(keys: &[K], key: &K) -> Option<usize> {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return None;
    };
    let (Some(n), Some(a), Some(b)) = (key.number(), first.number(), last.number()) else {
        return keys.binary_search(key).ok();
    };
    if n < a || n > b {
        return None;
    }
    let span = keys.len() - 1;
    let guess = match b - a {
        0 => 0,
        width => (u128::from(n - a) * span as u128 / u128::from(width)) as usize,
    };
    let (low, high) = if keys[guess] < *key {
        // Every key below `low` is below `key`.
        let (mut low, mut step) = (guess + 1, 1);
        let high = loop {
            let probe = low + step - 1;
            if probe >= keys.len() {
                break keys.len();
            }
            if keys[probe] >= *key {
                break probe + 1;
            }
            low = probe + 1;
            step *= 2;
        };
        (low, high)
    } else {
        // Every key from `high` on is above `key`, but the guess's own may be it.
        let (mut high, mut step) = (guess + 1, 1);
        let low = loop {
            if high < step {
                break 0;
            }
            let probe = high - step;
            if keys[probe] <= *key {
                break probe;
            }
            high = probe;
            step *= 2;
        };
        (low, high)
    };
    keys[low..high].binary_search(key).ok().map(|index| low + index)
}

/// Two iterators of distinct keys, each in key order, as one in key order.
fn merge<Q: Ord, W>(
    a: impl Iterator<Item = (Q, W)>,
    b: impl Iterator<Item = (Q, W)>,
) -> impl Iterator<Item = (Q, W)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the same steps on a `RisingMap` and on a `BTreeMap`, comparing every answer.
    fn same_as_a_tree(steps: &[(char, u32)]) {
        let (mut map, mut tree) = (RisingMap::default(), BTreeMap::new());
        for (at, &(op, key)) in steps.iter().enumerate() {
            let value = at as u32;
            match op {
                'i' => assert_eq!(map.insert(key, value), tree.insert(key, value), "step {at}"),
                'r' => assert_eq!(map.remove(&key), tree.remove(&key), "step {at}"),
                _ => assert_eq!(map.get(&key), tree.get(&key), "step {at}"),
            }
            assert_eq!(map.len(), tree.len());
            assert!(map.iter().eq(tree.iter()), "step {at}");
        }
        for (from, to) in [(0, 100), (3, 7), (7, 3), (5, 6), (50, 60)] {
            assert!(map.range(from..to.max(from)).eq(tree.range(from..to.max(from))));
            assert!(map.range(from..=to.max(from)).eq(tree.range(from..=to.max(from))));
            assert!(map.range(from..).eq(tree.range(from..)));
            assert!(map.range(..to).eq(tree.range(..to)));
        }
        assert_eq!(map.into_sorted(), tree.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_key_out_of_order_is_found_wherever_its_number_puts_it() {
        // A dense run, sparse keys far apart, and keys at both ends of the numbers: the
        // guess from the numbers is right, near, or far off.
        let dense = 1000..3000;
        let sparse = (1..200).map(|k| k * 1_000_003);
        let ends = [0, 1, u32::MAX - 1, u32::MAX];
        let mut keys: Vec<u32> = dense.chain(sparse).chain(ends).collect();
        keys.sort_unstable();
        keys.dedup();
        let map: RisingMap<u32, u32> = keys.iter().map(|&k| (k, k / 2)).collect();
        let tree: BTreeMap<u32, u32> = keys.iter().map(|&k| (k, k / 2)).collect();
        // Each key, its neighbours and a few others, in no order: visited 7919 apart (a
        // prime that does not divide their number, so each is visited once).
        let asked: Vec<u32> = keys
            .iter()
            .flat_map(|&k| [k, k.wrapping_sub(1), k.wrapping_add(1), k.wrapping_mul(7919)])
            .collect();
        assert_ne!(asked.len() % 7919, 0);
        for i in 0..asked.len() {
            let key = asked[i * 7919 % asked.len()];
            assert_eq!(map.get(&key), tree.get(&key), "key {key}");
        }
    }

    #[test]
    fn a_rising_map_answers_as_a_tree_whatever_the_order() {
        // Rising, with lookups and replacements along the run.
        same_as_a_tree(&[('i', 1), ('i', 2), ('i', 5), ('g', 2), ('g', 3), ('i', 2), ('g', 5)]);
        // Falling and mixed: the tree takes those out of order.
        same_as_a_tree(&[('i', 9), ('i', 4), ('i', 7), ('i', 12), ('i', 1), ('g', 4), ('g', 12)]);
        // Removing the last, one out of the middle (the list moves into the tree), and
        // rising again after that.
        same_as_a_tree(&[
            ('i', 1),
            ('i', 3),
            ('i', 6),
            ('i', 2),
            ('r', 6),
            ('r', 3),
            ('i', 8),
            ('i', 3),
            ('r', 1),
            ('r', 9),
            ('i', 4),
            ('g', 4),
        ]);
    }
}
