//! Which counter slot (index into the per-CPU counter array) each EIP owns. The assignment
//! lives in the pinned EIP map itself, so a restarted agent recovers it from there.
//!
//! EIPs are held by address ([`MirrorKey`]), not by their keys in network byte order: a
//! change of a run of addresses then takes their slots one after the other, as it does in
//! the mirrors, which a [`RisingMap`] keeps without searching a tree.

use super::mirror::MirrorKey;
use crate::sorted::RisingMap;

pub struct Slots {
    /// Slot by EIP address (the key, ordered).
    by_address: RisingMap<u32, u32>,
    free: Vec<u32>,
    next: u32,
    capacity: u32,
    /// What changed since [`Slots::keep`], so that [`Slots::undo`] can take it back.
    journal: Vec<Step>,
}

/// One change to the slots, as the journal keeps it.
enum Step {
    Allocated { key: u32, slot: u32, reused: bool },
    Released { key: u32, slot: u32 },
}

impl Slots {
    /// The slots that `held` (EIP key, slot) found in a pinned map say are taken; the
    /// others below the highest of them are free, and may hold an earlier EIP's counts.
    /// In one pass: a restarted agent may find a million.
    pub fn holding(capacity: u32, held: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut held: Vec<(u32, u32)> =
            held.into_iter().map(|(key, slot)| (key.ordered(), slot)).collect();
        held.sort_unstable();
        let by_address: RisingMap<u32, u32> = held.into_iter().collect();
        let next = by_address.values().map(|&slot| slot + 1).max().unwrap_or(0);
        let mut taken = vec![false; next as usize];
        for &slot in by_address.values() {
            taken[slot as usize] = true;
        }
        let free = (0..next).filter(|&slot| !taken[slot as usize]).collect();
        Self { by_address, free, next, capacity, journal: Vec::new() }
    }

    pub fn get(&self, key: u32) -> Option<u32> {
        self.by_address.get(&key.ordered()).copied()
    }

    /// The slot `key` holds, or else a new one for it, and whether that one held another
    /// EIP before (so its counters need zeroing; a slot never handed out is still zero from
    /// the map's creation). `None` when every slot is taken.
    pub fn get_or_allocate(&mut self, key: u32) -> Option<(u32, bool)> {
        if let Some(&held) = self.by_address.get(&key.ordered()) {
            return Some((held, false));
        }
        let (slot, reused) = match self.free.pop() {
            Some(slot) => (slot, true),
            None if self.next < self.capacity => {
                self.next += 1;
                (self.next - 1, false)
            }
            None => return None,
        };
        self.by_address.insert_new(key.ordered(), slot);
        self.journal.push(Step::Allocated { key, slot, reused });
        Some((slot, reused))
    }

    pub fn release(&mut self, key: u32) -> Option<u32> {
        let slot = self.by_address.remove(&key.ordered())?;
        self.free.push(slot);
        self.journal.push(Step::Released { key, slot });
        Some(slot)
    }

    /// Keeps every change so far: the maps have them now.
    pub fn keep(&mut self) {
        self.journal.clear();
    }

    /// Takes back every change since [`Slots::keep`], last first, so that each EIP holds
    /// the slot it held then and the free slots are handed out in the same order again.
    pub fn undo(&mut self) {
        while let Some(step) = self.journal.pop() {
            match step {
                Step::Allocated { key, slot, reused } => {
                    self.by_address.remove(&key.ordered());
                    if reused {
                        self.free.push(slot);
                    } else {
                        self.next -= 1;
                    }
                }
                Step::Released { key, slot } => {
                    let freed = self.free.pop();
                    debug_assert_eq!(freed, Some(slot), "the journal is out of step");
                    self.by_address.insert(key.ordered(), slot);
                }
            }
        }
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
    fn undo_gives_every_key_its_slot_back_and_frees_the_same_slots() {
        let mut slots = Slots::holding(8, [(1, 0), (2, 1), (3, 2)]);
        slots.release(2);
        slots.get_or_allocate(4);
        slots.keep();
        // 4 holds 1 now; then 1 goes, 5 and 6 come, and 4 goes.
        slots.release(1);
        assert_eq!(slots.get_or_allocate(5), Some((0, true)));
        assert_eq!(slots.get_or_allocate(6), Some((3, false)));
        slots.release(4);
        slots.undo();
        assert_eq!(
            [1, 2, 3, 4, 5, 6].map(|k| slots.get(k)),
            [Some(0), None, Some(2), Some(1), None, None]
        );
        // As if nothing had happened since `keep`: the next new key gets slot 3.
        assert_eq!(slots.get_or_allocate(7), Some((3, false)));
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
