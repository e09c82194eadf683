//! Incremental Internet checksum updates (RFC 1624).
//!
//! Every value here is a 16-bit word or 32-bit field exactly as it sits in packet memory,
//! read with native byte order. One's-complement addition commutes with byte swapping, so a
//! checksum updated from raw memory words is correct without converting to host order, and
//! the XDP program never swaps bytes on the hot path.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

/// The checksum after a 32-bit field (an IPv4 address) changed from `old` to `new`.
#[inline(always)]
pub const fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u32)
        + (!(old as u16) as u32)
        + (!((old >> 16) as u16) as u32)
        + (new & 0xffff)
        + (new >> 16);
    !fold(sum)
}

/// Like [`replace_u32`], for a UDP checksum: 0 means "no checksum" and stays 0 (RFC 768), and
/// a computed 0 is sent as 0xFFFF, its one's-complement equivalent.
#[inline(always)]
pub const fn udp_replace_u32(check: u16, old: u32, new: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace_u32(check, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4Header, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// Reads a 16-bit word the way the XDP program does: native order, from memory.
    fn word(bytes: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([bytes[at], bytes[at + 1]])
    }

    fn addr(octets: [u8; 4]) -> u32 {
        u32::from_ne_bytes(octets)
    }

    /// 0x0000 and 0xFFFF are the two representations of zero in one's complement; the
    /// incremental formula may produce either where a full computation produces the other.
    fn same_checksum(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(udp_replace_u32(0, addr([10, 0, 1, 5]), addr([203, 0, 113, 7])), 0);
    }

    #[test]
    fn udp_computed_zero_is_sent_as_ffff() {
        // Choose `check` so that the plain update produces 0: replace_u32(c, o, n) == 0
        // exactly when ~c + ~o + n folds to 0xFFFF.
        let old = addr([10, 0, 1, 5]);
        let new = addr([203, 0, 113, 7]);
        let check = (0..=u16::MAX)
            .find(|&c| c != 0 && replace_u32(c, old, new) == 0)
            .expect("some checksum updates to zero");
        assert_eq!(udp_replace_u32(check, old, new), 0xffff);
    }

    #[test]
    fn ttl_decrement_matches_recomputation() {
        let mut h =
            Ipv4Header::new(40, 64, etherparse::IpNumber::TCP, [1, 2, 3, 4], [5, 6, 7, 8]).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let before = h.to_bytes();
        h.time_to_live -= 1;
        let expected = h.calc_header_checksum();
        let after = h.to_bytes();
        let updated = replace_u16(word(&before, 10), word(&before, 8), word(&after, 8));
        assert!(same_checksum(u16::from_be(updated), expected));
    }

    fn rewrite_case(
        udp: bool,
        src: [u8; 4],
        dst: [u8; 4],
        new_dst: [u8; 4],
        payload: Vec<u8>,
        ports: (u16, u16),
    ) {
        let build = |d: [u8; 4]| {
            let b = PacketBuilder::ipv4(src, d, 64);
            let mut out = Vec::new();
            if udp {
                let b = b.udp(ports.0, ports.1);
                b.write(&mut out, &payload).unwrap();
            } else {
                let b = b.tcp(ports.0, ports.1, 7, 1024);
                b.write(&mut out, &payload).unwrap();
            }
            out
        };
        let before = build(dst);
        let after = build(new_dst);
        let l4_check_at = 20 + if udp { 6 } else { 16 };

        let ip_check = replace_u32(word(&before, 10), addr(dst), addr(new_dst));
        assert!(same_checksum(ip_check, word(&after, 10)), "IPv4 header checksum");

        let l4_before = word(&before, l4_check_at);
        let l4_updated = if udp {
            udp_replace_u32(l4_before, addr(dst), addr(new_dst))
        } else {
            replace_u32(l4_before, addr(dst), addr(new_dst))
        };
        assert!(same_checksum(l4_updated, word(&after, l4_check_at)), "L4 checksum");

        // And the rewritten packet verifies with an independent implementation.
        let mut rewritten = after.clone();
        rewritten[l4_check_at..l4_check_at + 2].copy_from_slice(&l4_updated.to_ne_bytes());
        let sliced = SlicedPacket::from_ip(&rewritten).unwrap();
        let (src_ip, dst_ip) = (src, new_dst);
        match sliced.transport.unwrap() {
            TransportSlice::Udp(u) => {
                let expected =
                    u.to_header().calc_checksum_ipv4_raw(src_ip, dst_ip, u.payload()).unwrap();
                assert!(same_checksum(u.checksum(), expected));
            }
            TransportSlice::Tcp(t) => {
                let expected =
                    t.to_header().calc_checksum_ipv4_raw(src_ip, dst_ip, t.payload()).unwrap();
                assert!(same_checksum(t.checksum(), expected));
            }
            other => panic!("unexpected transport {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn address_rewrite_matches_full_recomputation(
            udp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            new_dst in any::<[u8; 4]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            ports in any::<(u16, u16)>(),
        ) {
            rewrite_case(udp, src, dst, new_dst, payload, ports);
        }

        #[test]
        fn u16_replace_matches_full_recomputation(data in proptest::collection::vec(any::<u16>(), 1..32), at in any::<prop::sample::Index>(), new in any::<u16>()) {
            let full = |d: &[u16]| !fold(d.iter().map(|&w| w as u32).sum());
            let i = at.index(data.len());
            let mut changed = data.clone();
            changed[i] = new;
            prop_assert!(same_checksum(replace_u16(full(&data), data[i], new), full(&changed)));
        }
    }
}
