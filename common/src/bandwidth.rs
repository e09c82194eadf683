//! The per-EIP bandwidth cap: a policer in the GCRA form (the virtual-scheduling form of a
//! token bucket, ITU-T I.371). Its whole state per direction is one number, the time at
//! which the traffic admitted so far would have finished at the capped rate (the
//! "theoretical arrival time"). A packet is admitted while that time runs at most a burst
//! ahead of the clock, and pushes it on by the packet's own duration.
//!
//! One number is what lets every CPU share the state without a lock: the program advances
//! it with an atomic add, so no CPU's packets go uncounted and the cap holds for the EIP as
//! a whole, not per CPU.

/// The time one byte takes at `mbps` Mbit/s, in picoseconds (1 Mbit/s: 8 µs). Never 0 (0
/// means "no cap" in the map), however large the cap.
pub const fn picoseconds_per_byte(mbps: u32) -> u64 {
    let ps = 8_000_000 / if mbps == 0 { 1 } else { mbps as u64 };
    if ps == 0 { 1 } else { ps }
}

/// The smallest burst the cap lets through at once: 1 MiB. A policer drops what a shaper
/// would queue, and TCP reads the drops as congestion: with a burst of 64 KiB a TCP flow
/// under a 20 Mbit/s cap got 2.6 Mbit/s, with 256 KiB about half the cap, with 1 MiB 95%
/// of it (iperf3 through the test topology).
pub const MIN_BURST_BYTES: u64 = 1024 * 1024;

/// How far ahead of the clock the cap lets traffic run, in nanoseconds: 50 ms of traffic at
/// the capped rate, and never less than [`MIN_BURST_BYTES`].
pub const fn burst_ns(mbps: u32) -> u64 {
    let bytes_per_second = mbps as u64 * 125_000;
    let fifty_ms = bytes_per_second / 20;
    let bytes = if fifty_ms > MIN_BURST_BYTES { fifty_ms } else { MIN_BURST_BYTES };
    bytes * picoseconds_per_byte(mbps) / 1_000
}

/// How long `bytes` take at the capped rate, in nanoseconds.
#[inline(always)]
pub fn cost_ns(bytes: u64, ps_per_byte: u64) -> u64 {
    bytes * ps_per_byte / 1_000
}

/// Whether a packet that takes `cost_ns` at the capped rate may pass at `now_ns`, given the
/// theoretical arrival time `tat_ns`; if so, the new theoretical arrival time. Time when the
/// EIP sent nothing is not saved up beyond the burst: an idle EIP restarts from the clock.
#[inline(always)]
pub fn admit(tat_ns: u64, now_ns: u64, cost_ns: u64, burst_ns: u64) -> Option<u64> {
    let start = if tat_ns > now_ns { tat_ns } else { now_ns };
    if start - now_ns > burst_ns { None } else { Some(start + cost_ns) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 3_600 * 1_000_000_000;

    /// Offers `packets` packets of `size` bytes evenly over `seconds` at `mbps` and returns
    /// the bytes admitted.
    fn offer(mbps: u32, size: u64, packets: u64, seconds: u64) -> u64 {
        let ps = picoseconds_per_byte(mbps);
        let burst = burst_ns(mbps);
        let gap = seconds * 1_000_000_000 / packets;
        let mut tat = 0;
        let mut admitted = 0;
        for i in 0..packets {
            if let Some(next) = admit(tat, T0 + i * gap, cost_ns(size, ps), burst) {
                tat = next;
                admitted += size;
            }
        }
        admitted
    }

    #[test]
    fn one_megabit_is_eight_microseconds_a_byte() {
        assert_eq!(picoseconds_per_byte(1), 8_000_000);
        assert_eq!(picoseconds_per_byte(1_000), 8_000);
        assert_eq!(picoseconds_per_byte(u32::MAX), 1, "a huge cap must not read as no cap");
    }

    #[test]
    fn the_burst_is_fifty_milliseconds_but_at_least_1_mib() {
        // 1 Gbit/s: 50 ms is 6.25 MB.
        assert_eq!(burst_ns(1_000), 50_000_000);
        // 20 Mbit/s: 50 ms would be 125 kB, so 1 MiB, which takes 419.4 ms.
        assert_eq!(burst_ns(20), 1_048_576 * 400_000 / 1_000);
    }

    #[test]
    fn a_flood_gets_the_cap_and_no_more() {
        // Twice the cap, for ten seconds, in full-size packets.
        let mbps = 20;
        let offered_bytes_per_s = 2 * mbps as u64 * 125_000;
        let packets = 10 * offered_bytes_per_s / 1_500;
        let admitted = offer(mbps, 1_500, packets, 10);
        let expected = 10 * mbps as u64 * 125_000;
        let burst = MIN_BURST_BYTES;
        assert!(
            admitted >= expected - 1_500 && admitted <= expected + burst + 1_500,
            "admitted {admitted} bytes, expected {expected} plus at most one burst"
        );
    }

    #[test]
    fn traffic_under_the_cap_all_passes() {
        let packets = 10 * 10 * 125_000 / 1_500;
        assert_eq!(offer(20, 1_500, packets, 10), packets * 1_500);
    }

    #[test]
    fn an_idle_spell_saves_up_no_more_than_one_burst() {
        let ps = picoseconds_per_byte(10);
        let burst = burst_ns(10);
        let cost = cost_ns(1_500, ps);
        // Long after the last packet, back to back: one burst and one packet more pass.
        let mut tat = T0;
        let later = T0 + 3_600 * 1_000_000_000;
        let mut passed = 0;
        while let Some(next) = admit(tat, later, cost, burst) {
            tat = next;
            passed += 1;
        }
        assert_eq!(passed, burst / cost + 1);
    }
}
