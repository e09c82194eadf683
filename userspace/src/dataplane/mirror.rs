//! A BPF hash map together with a copy of what it holds. The agent is the maps' only
//! writer, so the copy is the truth about them: changes are planned against it (no
//! per-key lookups into the kernel) and written in batches with BPF_MAP_UPDATE_BATCH, so
//! loading a hundred thousand mappings costs a few dozen syscalls instead of hundreds of
//! thousands.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::Context as _;
use aya::{
    Pod,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError},
};
use eipgw_common::{Endpoint, Ipv6Key};

use super::bucket_order;
use crate::sorted::{RisingKey, RisingMap, extend_sorted};

/// How many elements one BPF_MAP_UPDATE_BATCH call carries.
pub(super) const BATCH: usize = 8192;

/// A map key, and the order a mirror keeps it in.
pub trait MirrorKey: Pod {
    /// What the mirror sorts by, the key itself included (so nothing is lost).
    type Ordered: RisingKey;
    fn ordered(self) -> Self::Ordered;
    fn key(ordered: Self::Ordered) -> Self;
}

/// An IPv4 address in network byte order, as the maps key it. Read as a native integer
/// (its own `Ord`), consecutive addresses would land 2^24 apart; the mirror orders it as
/// the address, so that a change of a run of addresses, which the agent plans in address
/// order, touches its trees at one place after the other instead of all over them.
impl MirrorKey for u32 {
    type Ordered = u32;
    fn ordered(self) -> u32 {
        u32::from_be(self)
    }
    fn key(address: u32) -> u32 {
        address.to_be()
    }
}

/// By address first, for the same reason.
impl MirrorKey for Endpoint {
    type Ordered = (u32, Endpoint);
    fn ordered(self) -> (u32, Endpoint) {
        (u32::from_be(self.addr), self)
    }
    fn key((_, endpoint): (u32, Endpoint)) -> Endpoint {
        endpoint
    }
}

/// The address leads the order, so it is the number; endpoints of one address share it.
impl RisingKey for (u32, Endpoint) {
    fn number(&self) -> Option<u64> {
        Some(u64::from(self.0))
    }
}

/// Searched by halves: IPv6 addresses are few here.
impl RisingKey for Ipv6Key {
    fn number(&self) -> Option<u64> {
        None
    }
}

/// Its bytes are the address, most significant first: already in address order.
impl MirrorKey for Ipv6Key {
    type Ordered = Ipv6Key;
    fn ordered(self) -> Ipv6Key {
        self
    }
    fn key(key: Ipv6Key) -> Ipv6Key {
        key
    }
}

pub struct MirroredMap<K: MirrorKey, V: Pod + PartialEq> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
    mirror: BTreeMap<K::Ordered, V>,
    /// Planned, not yet written: `None` deletes. Planned in the mirror's order, mostly.
    pending: RisingMap<K::Ordered, Option<V>>,
    /// The map's bucket count, when the bucket of a key can be known here (see
    /// [`bucket_order`]): a batch is then written bucket after bucket. `None` for a map
    /// that hashes with a random seed, such as one pinned by an older agent.
    buckets: Option<u32>,
}

impl<K: MirrorKey, V: Pod + PartialEq> MirroredMap<K, V> {
    /// Wraps a map and reads what it holds now (a pinned map may hold entries already).
    pub fn new(name: &'static str, map: HashMap<MapData, K, V>) -> anyhow::Result<Self> {
        let info = map.map().info().with_context(|| format!("reading map {name}'s flags"))?;
        let buckets = bucket_order::known_buckets(
            info.map_flags(),
            info.max_entries(),
            std::mem::size_of::<K>(),
        );
        let mut this =
            Self { name, map, mirror: BTreeMap::new(), pending: RisingMap::default(), buckets };
        this.reload()?;
        Ok(this)
    }

    fn reload(&mut self) -> anyhow::Result<()> {
        // In batches: a restarted agent may find a million entries, two system calls each
        // when read one by one.
        let rows = read_all(&self.map).with_context(|| format!("reading map {}", self.name))?;
        self.mirror = rows.into_iter().map(|(key, value)| (key.ordered(), value)).collect();
        Ok(())
    }

    /// The value as planned (pending changes included).
    pub fn get(&self, key: &K) -> Option<V> {
        let key = key.ordered();
        match self.pending.get(&key) {
            Some(planned) => *planned,
            None => self.mirror.get(&key).copied(),
        }
    }

    pub fn set(&mut self, key: K, value: V) {
        self.pending.insert(key.ordered(), Some(value));
    }

    pub fn delete(&mut self, key: K) {
        // Deleting what is neither there nor planned plans nothing: an apply of a million
        // addresses without SNAT would otherwise queue a million deletions to skip.
        let key = key.ordered();
        if self.pending.contains_key(&key) || self.mirror.contains_key(&key) {
            self.pending.insert(key, None);
        }
    }

    /// Forgets what is planned and not written.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// How many keys have a change planned.
    pub fn planned(&self) -> usize {
        self.pending.len()
    }

    /// Whether it holds nothing, as planned.
    pub fn is_empty(&self) -> bool {
        self.mirror.is_empty() && self.pending.values().all(Option::is_none)
    }

    /// Every key as planned, in the mirror's order.
    pub fn keys(&self) -> Vec<K> {
        self.keys_in(..)
    }

    /// The keys in `range` (of the mirror's order) as planned, without walking the rest.
    pub fn keys_in(&self, range: impl std::ops::RangeBounds<K::Ordered> + Clone) -> Vec<K> {
        let mut keys: Vec<K::Ordered> = self.mirror.range(range.clone()).map(|(k, _)| *k).collect();
        keys.extend(self.pending.range(range).map(|(k, _)| *k));
        keys.sort();
        keys.dedup();
        keys.into_iter().map(K::key).filter(|k| self.get(k).is_some()).collect()
    }

    /// Writes what is planned: deletions one by one (they are few), changed values in
    /// batches. If the kernel refuses part of it, the copy is read back from the kernel, so
    /// it never believes something that is not there.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let result = self.write(&pending);
        if result.is_err() {
            self.reload()?;
        }
        result
    }

    fn write(&mut self, pending: &RisingMap<K::Ordered, Option<V>>) -> anyhow::Result<()> {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (ordered, planned) in pending.iter() {
            match planned {
                None => {
                    if self.mirror.remove(ordered).is_some() {
                        match self.map.remove(&K::key(*ordered)) {
                            Ok(()) | Err(MapError::KeyNotFound) => {}
                            Err(e) => {
                                return Err(e).context(format!("deleting from map {}", self.name));
                            }
                        }
                    }
                }
                Some(value) if self.mirror.get(ordered) != Some(value) => {
                    keys.push(K::key(*ordered));
                    values.push(*value);
                }
                Some(_) => {}
            }
        }
        let fd = self.map.map().fd().as_fd().as_raw_fd();
        let (bucket_keys, bucket_values);
        let (batch_keys, batch_values) = match self.buckets {
            Some(buckets) => {
                (bucket_keys, bucket_values) = in_bucket_order(&keys, &values, buckets);
                (&bucket_keys, &bucket_values)
            }
            None => (&keys, &values),
        };
        update_batches(fd, batch_keys, batch_values)
            .with_context(|| format!("writing map {} in batches", self.name))?;
        // Into the copy, in its order. Should a batch fail, `flush` reads the whole map back
        // instead.
        let written = keys.iter().map(|key| key.ordered()).zip(values.iter().copied());
        extend_sorted(&mut self.mirror, written);
        Ok(())
    }
}

/// `keys` and their `values` sorted by the bucket each key takes among `buckets`.
fn in_bucket_order<K: Pod, V: Pod>(keys: &[K], values: &[V], buckets: u32) -> (Vec<K>, Vec<V>) {
    let mut order: Vec<(u32, usize)> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| (bucket_order::bucket_of(bytes_of(key), buckets), index))
        .collect();
    order.sort_unstable();
    order.iter().map(|&(_, index)| (keys[index], values[index])).unzip()
}

fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: a `Pod` is plain bytes with no padding, alive as long as `value`.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Every entry of a map the program writes to (no copy of it can be kept here), read with
/// BPF_MAP_LOOKUP_BATCH: a few system calls for the whole table, where walking it key by
/// key costs two per entry. Entries added or removed meanwhile may be missed or seen.
pub fn read_all<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> anyhow::Result<Vec<(K, V)>> {
    read_batches(map.map())
}

/// Every element of an array map, by index, read as [`read_all`] reads a hash map.
pub fn read_array<V: Pod>(map: &Array<MapData, V>) -> anyhow::Result<Vec<V>> {
    let rows: Vec<(u32, V)> = read_batches(map.map())?;
    let mut elements = vec![zeroed::<V>(); rows.len()];
    for (index, value) in rows {
        if let Some(element) = elements.get_mut(index as usize) {
            *element = value;
        }
    }
    Ok(elements)
}

pub(super) fn read_batches<K: Pod, V: Pod>(map: &MapData) -> anyhow::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut rows = Vec::new();
    let (mut keys, mut values) = (vec![zeroed::<K>(); BATCH], vec![zeroed::<V>(); BATCH]);
    // Where to resume: the token is a bucket number (hash map) or an index (array), a u32
    // that the kernel writes to `next` and reads back from `resume`.
    let (mut resume, mut next) = (0u64, 0u64);
    let mut from_start = true;
    loop {
        let resume_at = if from_start { std::ptr::null_mut() } else { &mut resume as *mut u64 };
        let (count, done) = lookup_batch(fd, resume_at, &mut next, &mut keys, &mut values)
            .context("reading a map in batches (BPF_MAP_LOOKUP_BATCH, Linux 5.6+)")?;
        rows.extend(keys.iter().copied().zip(values.iter().copied()).take(count));
        if done {
            return Ok(rows);
        }
        resume = next;
        from_start = false;
    }
}

fn zeroed<T: Pod>() -> T {
    // SAFETY: map types are plain integers and arrays of them: all zero is one of them.
    unsafe { std::mem::zeroed() }
}

/// `bpf(BPF_MAP_LOOKUP_BATCH)`: reads up to `keys.len()` entries after `in_batch` (null:
/// from the start); returns how many, and whether the map has no more (ENOENT).
fn lookup_batch<K: Pod, V: Pod>(
    fd: i32,
    in_batch: *mut u64,
    out_batch: *mut u64,
    keys: &mut [K],
    values: &mut [V],
) -> std::io::Result<(usize, bool)> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let mut attr = BatchAttr {
        in_batch: in_batch as u64,
        out_batch: out_batch as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` points at `count` writable keys and values laid out as the map's key
    // and value types, and at two tokens of 8 bytes (the kernel writes 4 for a hash map),
    // all alive across the call.
    match unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        Ok(()) => Ok((attr.count as usize, false)),
        // ENOENT: the last entries are in, `count` says how many (maybe none).
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count as usize, true)),
        Err(error) => Err(error),
    }
}

/// `bpf(command, attr)` for a batch command.
///
/// # Safety
/// Every pointer in `attr` must be valid for what `command` reads or writes through it.
unsafe fn batch_call(command: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller vouches for the pointers in `attr`; its size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys` with their `values` into map `fd`, [`BATCH`] at a time.
pub(super) fn update_batches<K: Pod, V: Pod>(
    fd: i32,
    keys: &[K],
    values: &[V],
) -> std::io::Result<()> {
    keys.chunks(BATCH).zip(values.chunks(BATCH)).try_for_each(|(k, v)| update_batch(fd, k, v))
}

/// `bpf(BPF_MAP_UPDATE_BATCH)` (Linux 5.6+): aya 0.16 has no batch operations.
pub(super) fn update_batch<K: Pod, V: Pod>(
    fd: i32,
    keys: &[K],
    values: &[V],
) -> std::io::Result<()> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` points at `count` keys and values that live across the call, laid out
    // as the map's key and value types.
    unsafe { batch_call(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!(
            "only {} of {} written",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fmt::Debug, net::Ipv4Addr};

    use super::*;

    /// Writes `keys` into a fresh hash map of 64 buckets through a mirror, then reads the
    /// map back. It must hold what was written, and its walk, which goes bucket after
    /// bucket, must meet the keys in the order of the buckets computed here: with any
    /// other hash than the kernel's, 50 keys would come out of order.
    fn check_written_in_bucket_order<K: MirrorKey + Debug>(keys: Vec<K>, flags: u32)
    where
        K::Ordered: Debug,
    {
        let map = HashMap::<MapData, K, u64>::create(64, flags)
            .expect("creating a BPF hash map (the tests run as root)");
        let mut mirror = MirroredMap::new("test", map).expect("an empty map reads");
        let zero_seed = flags & bucket_order::ZERO_SEED != 0;
        assert_eq!(mirror.buckets, zero_seed.then_some(64));
        for (n, &key) in keys.iter().enumerate() {
            mirror.set(key, n as u64);
        }
        mirror.flush().expect("the batch is written");
        let rows = read_all(&mirror.map).expect("the map reads back");
        if zero_seed {
            let buckets: Vec<u32> =
                rows.iter().map(|(key, _)| bucket_order::bucket_of(bytes_of(key), 64)).collect();
            assert!(buckets.is_sorted(), "the kernel walked buckets {buckets:?}");
        }
        let mut held: Vec<(K::Ordered, u64)> =
            rows.into_iter().map(|(key, value)| (key.ordered(), value)).collect();
        held.sort();
        let mut written: Vec<(K::Ordered, u64)> =
            keys.iter().enumerate().map(|(n, key)| (key.ordered(), n as u64)).collect();
        written.sort();
        assert_eq!(held, written);
        assert_eq!(mirror.mirror.into_iter().collect::<Vec<_>>(), written);
    }

    fn addresses() -> impl Iterator<Item = u32> {
        (0..50).map(|n| u32::from(Ipv4Addr::new(203, 0, 113, n)).to_be())
    }

    #[test]
    fn a_zero_seed_map_is_written_bucket_after_bucket() {
        let seed = bucket_order::ZERO_SEED;
        // Keys of one, two and four words: jhash2's tail alone, and one round of its mix.
        check_written_in_bucket_order(addresses().collect(), seed);
        let endpoints = addresses().map(|addr| Endpoint::new(addr, 80u16.to_be(), 6)).collect();
        check_written_in_bucket_order::<Endpoint>(endpoints, seed);
        let ipv6 = (0..50u8).map(|n| Ipv6Key {
            addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n],
        });
        check_written_in_bucket_order::<Ipv6Key>(ipv6.collect(), seed);
    }

    #[test]
    fn the_copy_follows_big_and_small_batches() {
        let map = HashMap::<MapData, u32, u64>::create(64, bucket_order::ZERO_SEED)
            .expect("creating a BPF hash map (the tests run as root)");
        let mut mirror = MirroredMap::new("test", map).expect("an empty map reads");
        let keys: Vec<u32> = addresses().collect();
        // 20 keys into an empty copy; 30 more, 10 of them changed, merged into its 20; one
        // changed and one deleted, inserted into its 40.
        for round in [0..20, 10..40, 39..40] {
            for n in round {
                mirror.set(keys[n], n as u64 * 100 + mirror.mirror.len() as u64);
            }
            mirror.delete(keys[0]);
            mirror.flush().expect("the batch is written");
            let mut held = read_all(&mirror.map).expect("the map reads back");
            held.sort();
            let mut copy: Vec<(u32, u64)> =
                mirror.mirror.iter().map(|(k, v)| (<u32 as MirrorKey>::key(*k), *v)).collect();
            copy.sort();
            assert_eq!(copy, held);
        }
        assert_eq!(mirror.mirror.len(), 39);
    }

    #[test]
    fn a_map_with_a_random_seed_is_written_as_planned() {
        check_written_in_bucket_order(addresses().collect(), 0);
    }
}
