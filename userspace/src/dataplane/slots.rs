//! Which counter slot (index into the per-CPU counter array) each EIP owns. The assignment
//! lives in the pinned EIP map itself, so a restarted agent recovers it from there.

use std::collections::BTreeMap;

pub struct Slots {
    by_key: BTreeMap<u32, u32>,
    free: Vec<u32>,
    next: u32,
    capacity: u32,
}

impl Slots {
    pub fn new(capacity: u32) -> Self {
        Self { by_key: BTreeMap::new(), free: Vec::new(), next: 0, capacity }
    }

    pub fn get(&self, key: u32) -> Option<u32> {
        self.by_key.get(&key).copied()
    }

    /// Records a slot found in a pinned map. Call for every entry before `allocate`.
    pub fn adopt(&mut self, key: u32, slot: u32) {
        self.by_key.insert(key, slot);
        self.next = self.next.max(slot + 1);
        self.free.retain(|&s| s != slot);
        // Slots below `next` that nobody holds are free.
        let held: std::collections::BTreeSet<u32> = self.by_key.values().copied().collect();
        self.free = (0..self.next).filter(|s| !held.contains(s)).collect();
    }

    /// A slot for `key`, and whether it held another EIP before (so its counters need
    /// zeroing); a slot never handed out is still zero from the map's creation.
    pub fn allocate(&mut self, key: u32) -> Option<(u32, bool)> {
        let (slot, reused) = match self.free.pop() {
            Some(slot) => (slot, true),
            None if self.next < self.capacity => {
                self.next += 1;
                (self.next - 1, false)
            }
            None => return None,
        };
        self.by_key.insert(key, slot);
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
        let mut slots = Slots::new(2);
        assert_eq!(slots.allocate(10), Some((0, false)));
        assert_eq!(slots.allocate(11), Some((1, false)));
        assert_eq!(slots.allocate(12), None, "capacity reached");
        assert_eq!(slots.release(10), Some(0));
        assert_eq!(slots.allocate(12), Some((0, true)), "a reused slot says so");
    }

    #[test]
    fn adopted_slots_are_not_handed_out_again() {
        let mut slots = Slots::new(8);
        slots.adopt(1, 3);
        slots.adopt(2, 0);
        let mut handed = vec![slots.allocate(5).unwrap(), slots.allocate(6).unwrap()];
        handed.sort();
        assert_eq!(
            handed,
            vec![(1, true), (2, true)],
            "free slots below the highest in use may be dirty"
        );
        assert_eq!(slots.allocate(7), Some((4, false)));
    }
}
