//! Which counter slot (index into the per-CPU counter array) each EIP owns. The assignment
//! lives in the pinned EIP map itself, so a restarted agent recovers it from there.

use std::collections::{
    BTreeMap,
    btree_map::{Entry, VacantEntry},
};

pub struct Slots {
    by_key: BTreeMap<u32, u32>,
    free: Vec<u32>,
    next: u32,
    capacity: u32,
}

impl Slots {
    /// The slots that `held` (EIP key, slot) found in a pinned map say are taken; the
    /// others below the highest of them are free, and may hold an earlier EIP's counts.
    /// In one pass: a restarted agent may find a million.
    pub fn holding(capacity: u32, held: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let by_key: BTreeMap<u32, u32> = held.into_iter().collect();
        let next = by_key.values().map(|&slot| slot + 1).max().unwrap_or(0);
        let mut taken = vec![false; next as usize];
        for &slot in by_key.values() {
            taken[slot as usize] = true;
        }
        let free = (0..next).filter(|&slot| !taken[slot as usize]).collect();
        Self { by_key, free, next, capacity }
    }

    pub fn get(&self, key: u32) -> Option<u32> {
        self.by_key.get(&key).copied()
    }

    /// The slot `key` holds, or else a new one for it, and whether that one held another
    /// EIP before (so its counters need zeroing; a slot never handed out is still zero from
    /// the map's creation). `None` when every slot is taken. One search of the tree.
    pub fn get_or_allocate(&mut self, key: u32) -> Option<(u32, bool)> {
        match self.by_key.entry(key) {
            Entry::Occupied(held) => Some((*held.get(), false)),
            Entry::Vacant(vacant) => {
                Self::take(&mut self.free, &mut self.next, self.capacity, vacant)
            }
        }
    }

    fn take(
        free: &mut Vec<u32>,
        next: &mut u32,
        capacity: u32,
        vacant: VacantEntry<'_, u32, u32>,
    ) -> Option<(u32, bool)> {
        let (slot, reused) = match free.pop() {
            Some(slot) => (slot, true),
            None if *next < capacity => {
                *next += 1;
                (*next - 1, false)
            }
            None => return None,
        };
        vacant.insert(slot);
        Some((slot, reused))
    }

    pub fn release(&mut self, key: u32) -> Option<u32> {
        let slot = self.by_key.remove(&key)?;
        self.free.push(slot);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_bounded() {
        let mut slots = Slots::holding(2, []);
        assert_eq!(slots.get_or_allocate(10), Some((0, false)));
        assert_eq!(slots.get_or_allocate(11), Some((1, false)));
        assert_eq!(slots.get_or_allocate(12), None, "capacity reached");
        assert_eq!(slots.get_or_allocate(11), Some((1, false)), "a held slot stays");
        assert_eq!(slots.release(10), Some(0));
        assert_eq!(slots.get_or_allocate(12), Some((0, true)), "a reused slot says so");
    }

    #[test]
    fn adopted_slots_are_not_handed_out_again() {
        let mut slots = Slots::holding(8, [(1, 3), (2, 0)]);
        assert_eq!(slots.get(1), Some(3));
        let mut handed = vec![slots.get_or_allocate(5).unwrap(), slots.get_or_allocate(6).unwrap()];
        handed.sort();
        assert_eq!(
            handed,
            vec![(1, true), (2, true)],
            "free slots below the highest in use may be dirty"
        );
        assert_eq!(slots.get_or_allocate(7), Some((4, false)));
    }
}
