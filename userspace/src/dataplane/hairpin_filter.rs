//! The agent's side of the hairpin filter ([`MAP_EIP_FILTER`]): per slot, how many NAT-mode
//! EIPs hash there. A slot the program reads as 0 must hold no such EIP, or a hairpin frame
//! would leave for the Internet instead (and come back through the upstream router, which
//! routes EIPs to the gateway: slower, not lost). Counts are kept here and written at flush.

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData};
use eipgw_common::{EIP_FILTER_SLOTS, eip_filter_slot};

use super::mirror::{BATCH, update_batch};

pub struct HairpinFilter {
    map: Array<MapData, u32>,
    counts: Vec<u32>,
    /// By slot: whether its count changed since the last flush (a flag per slot, not a
    /// set: a million EIPs mark each slot many times).
    dirty: Vec<bool>,
    /// Each count as it was before each change since [`HairpinFilter::keep`], for
    /// [`HairpinFilter::undo`].
    journal: Vec<(u32, u32)>,
}

impl HairpinFilter {
    /// Counts `nat_eips` (map keys) and marks every slot for writing, so that the first
    /// flush makes the map exact whatever it held.
    pub fn new(map: Array<MapData, u32>, nat_eips: impl IntoIterator<Item = u32>) -> Self {
        let mut counts = vec![0; EIP_FILTER_SLOTS as usize];
        for key in nat_eips {
            counts[eip_filter_slot(key) as usize] += 1;
        }
        Self { map, counts, dirty: vec![true; EIP_FILTER_SLOTS as usize], journal: Vec::new() }
    }

    pub fn add(&mut self, key: u32) {
        self.change(key, |count| count + 1);
    }

    pub fn remove(&mut self, key: u32) {
        self.change(key, |count| count.saturating_sub(1));
    }

    fn change(&mut self, key: u32, to: impl FnOnce(u32) -> u32) {
        let slot = eip_filter_slot(key);
        let count = &mut self.counts[slot as usize];
        self.journal.push((slot, *count));
        *count = to(*count);
        self.dirty[slot as usize] = true;
    }

    /// Keeps every change so far: they are being written.
    pub fn keep(&mut self) {
        self.journal.clear();
    }

    /// Takes back every change since [`HairpinFilter::keep`] (none of them was written).
    pub fn undo(&mut self) {
        while let Some((slot, count)) = self.journal.pop() {
            self.counts[slot as usize] = count;
        }
    }

    /// Writes the changed slots in batches (an apply of a million EIPs changes them all);
    /// slots a failed write leaves are written at the next flush.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let slots: Vec<u32> = (0..EIP_FILTER_SLOTS).filter(|&s| self.dirty[s as usize]).collect();
        self.dirty.fill(false);
        let counts: Vec<u32> = slots.iter().map(|&slot| self.counts[slot as usize]).collect();
        let fd = self.map.map().fd().as_fd().as_raw_fd();
        for (done, (slots_now, counts_now)) in
            slots.chunks(BATCH).zip(counts.chunks(BATCH)).enumerate()
        {
            if let Err(e) = update_batch(fd, slots_now, counts_now) {
                for &slot in &slots[done * BATCH..] {
                    self.dirty[slot as usize] = true;
                }
                return Err(e).context("writing the hairpin filter in a batch");
            }
        }
        Ok(())
    }
}
