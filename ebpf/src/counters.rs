//! Per-CPU counters: no locks and no atomics on the packet path; the agent sums the CPUs.

use eipgw_common::Verdict;

use crate::{EIP_COUNTERS, VERDICT_COUNTERS};

#[inline(always)]
pub fn count_verdict(verdict: Verdict) {
    if let Some(counter) = VERDICT_COUNTERS.get_ptr_mut(verdict as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and XDP does not preempt itself.
        unsafe { *counter += 1 };
    }
}

#[derive(Copy, Clone)]
pub enum Direction {
    Inbound = 0,
    Outbound = 1,
}

#[inline(always)]
pub fn count_eip(slot: u32, direction: Direction, bytes: u64) {
    let Some(counters) = EIP_COUNTERS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: as in `count_verdict`, this CPU's copy.
    let counters = unsafe { &mut *counters };
    match direction {
        Direction::Inbound => {
            counters.inbound_packets += 1;
            counters.inbound_bytes += bytes;
        }
        Direction::Outbound => {
            counters.outbound_packets += 1;
            counters.outbound_bytes += bytes;
        }
    }
}

/// Why an EIP's frame was dropped, for its own counters.
#[derive(Copy, Clone)]
pub enum EipDrop {
    OverCap(Direction),
    Denied,
    /// A new SNAT flow refused; its bytes are not counted.
    SnatRefused,
}

#[inline(always)]
pub fn count_eip_drop(slot: u32, drop: EipDrop, bytes: u64) {
    let Some(counters) = EIP_COUNTERS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: as in `count_verdict`, this CPU's copy.
    let counters = unsafe { &mut *counters };
    match drop {
        EipDrop::OverCap(Direction::Inbound) => {
            counters.inbound_over_cap_packets += 1;
            counters.inbound_over_cap_bytes += bytes;
        }
        EipDrop::OverCap(Direction::Outbound) => {
            counters.outbound_over_cap_packets += 1;
            counters.outbound_over_cap_bytes += bytes;
        }
        EipDrop::Denied => {
            counters.inbound_denied_packets += 1;
            counters.inbound_denied_bytes += bytes;
        }
        EipDrop::SnatRefused => counters.snat_refused_packets += 1,
    }
}
