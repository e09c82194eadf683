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

/// The checksum of data whose 16-bit words (as they sit in memory) add up to `sum`: for a
/// header built from scratch, which has no old checksum to update.
#[inline(always)]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The word that a trailing odd byte counts as: padded with a zero byte after it (RFC 1071).
#[inline(always)]
pub const fn odd_byte(byte: u8) -> u16 {
    u16::from_ne_bytes([byte, 0])
}

/// The Internet checksum of `bytes`, in memory order, computed in full: for a header built
/// from scratch on the stack. Fine for anything shorter than 128 KiB (the accumulator
/// cannot overflow).
#[inline(always)]
pub fn checksum(bytes: &[u8]) -> u16 {
    let (words, rest) = bytes.as_chunks::<2>();
    let mut sum = 0u32;
    for word in words {
        sum += u16::from_ne_bytes(*word) as u32;
    }
    if let [byte] = rest {
        sum += odd_byte(*byte) as u32;
    }
    finish(sum)
}

/// The checksum in the L4 header of the packet an ICMP error quotes, if the quote holds it,
/// as it sits in memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QuotedL4 {
    /// Not in the quote: ICMP (its checksum does not cover the addresses), a later
    /// fragment, any other protocol, or a quote that ends before the field (a TCP checksum
    /// is at bytes 16..18, beyond the 8 bytes RFC 792 requires).
    None,
    Tcp(u16),
    /// 0 means "no checksum" and stays 0.
    Udp(u16),
}

/// The checksums an address change in an ICMP error's quoted packet touches, each as it
/// sits in memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct QuotedChecksums {
    /// The ICMP error's own checksum. It covers the whole quote, so it follows every word
    /// that changes there; it does not cover the outer IP header.
    pub icmp: u16,
    /// The quoted IPv4 header's checksum.
    pub ip: u16,
    /// The quoted L4 header's checksum, whose pseudo-header holds the address.
    pub l4: QuotedL4,
}

/// The checksums after an address of the packet quoted in an ICMP error changed from `old`
/// to `new` (RFC 5508 §4.2): the quoted IPv4 header's, the quoted L4 header's (its
/// pseudo-header), and the ICMP checksum, which must follow the address and both of those
/// changes, since all of them lie inside the ICMP message.
///
/// Each changed field is a whole number of 16-bit words of the ICMP checksum: the ICMP
/// header is 8 bytes, so the quoted IPv4 header starts at an even offset in the message,
/// and its addresses (+12, +16), its checksum (+10), the quoted L4 header (+IHL×4) and the
/// UDP (+6) or TCP (+16) checksum in it all sit at even offsets too. Word-wise incremental
/// updates are therefore exact; no byte-shifted variant is needed.
#[inline(always)]
pub const fn quoted_address_change(sums: QuotedChecksums, old: u32, new: u32) -> QuotedChecksums {
    let ip = replace_u32(sums.ip, old, new);
    let icmp = replace_u32(sums.icmp, old, new);
    let icmp = replace_u16(icmp, sums.ip, ip);
    let (icmp, l4) = match sums.l4 {
        QuotedL4::None => (icmp, QuotedL4::None),
        QuotedL4::Tcp(check) => {
            let updated = replace_u32(check, old, new);
            (replace_u16(icmp, check, updated), QuotedL4::Tcp(updated))
        }
        QuotedL4::Udp(check) => {
            let updated = udp_replace_u32(check, old, new);
            (replace_u16(icmp, check, updated), QuotedL4::Udp(updated))
        }
    };
    QuotedChecksums { icmp, ip, l4 }
}

/// Like [`replace_u16`], for a UDP checksum (0 stays 0, a computed 0 is sent as 0xFFFF).
#[inline(always)]
pub const fn udp_replace_u16(check: u16, old: u16, new: u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace_u16(check, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// The checksums after a port (or ICMP query identifier) of the packet quoted in an ICMP
/// error changed from `old` to `new`, both as they sit in memory: the quoted L4 checksum
/// covers the port (for a quoted ICMP echo, `l4` is its checksum given as
/// [`QuotedL4::Tcp`]: no pseudo-header, no zero rule), and the ICMP error's checksum covers
/// both changed fields. The quoted IPv4 header is untouched. Ports sit at even offsets of
/// the message, like everything [`quoted_address_change`] updates.
#[inline(always)]
pub const fn quoted_port_change(sums: QuotedChecksums, old: u16, new: u16) -> QuotedChecksums {
    let icmp = replace_u16(sums.icmp, old, new);
    let (icmp, l4) = match sums.l4 {
        QuotedL4::None => (icmp, QuotedL4::None),
        QuotedL4::Tcp(check) => {
            let updated = replace_u16(check, old, new);
            (replace_u16(icmp, check, updated), QuotedL4::Tcp(updated))
        }
        QuotedL4::Udp(check) => {
            let updated = udp_replace_u16(check, old, new);
            (replace_u16(icmp, check, updated), QuotedL4::Udp(updated))
        }
    };
    QuotedChecksums { icmp, ip: sums.ip, l4 }
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

    /// An ICMP destination unreachable (port) message that quotes `quote`, as etherparse
    /// builds it, with its checksum computed in full.
    fn icmp_error(quote: &[u8]) -> Vec<u8> {
        let kind = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        );
        let mut out = etherparse::Icmpv4Header::with_checksum(kind, quote).to_bytes().to_vec();
        out.extend_from_slice(quote);
        out
    }

    /// The ICMP-error case: the source of a quoted UDP or TCP packet changes from `old` to
    /// `new` (as in an error about a packet a VPC host sent through its EIP), with the
    /// quote cut after `quoted_len` bytes. Rewriting the address and applying
    /// `quoted_address_change` to the words as they sit in memory must give exactly the
    /// message etherparse builds about the packet with the new address.
    fn quoted_case(
        proto: u8,
        udp_checksum: bool,
        old: [u8; 4],
        new: [u8; 4],
        dst: [u8; 4],
        payload: &[u8],
        quoted_len: usize,
    ) {
        let packet = |src: [u8; 4]| {
            let b = PacketBuilder::ipv4(src, dst, 64);
            let mut out = Vec::new();
            if proto == 17 {
                b.udp(5353, 53).write(&mut out, payload).unwrap();
                if !udp_checksum {
                    out[26..28].copy_from_slice(&[0, 0]);
                }
            } else {
                b.tcp(40_000, 443, 7, 1024).write(&mut out, payload).unwrap();
            }
            let end = quoted_len.min(out.len());
            out.truncate(end);
            out
        };
        let before = icmp_error(&packet(old));
        let expected = icmp_error(&packet(new));

        // The quote starts after the 8-byte ICMP header; no IPv4 options here.
        const Q: usize = 8;
        let l4 = match proto {
            17 if before.len() >= Q + 28 => QuotedL4::Udp(word(&before, Q + 26)),
            6 if before.len() >= Q + 38 => QuotedL4::Tcp(word(&before, Q + 36)),
            _ => QuotedL4::None,
        };
        let sums = QuotedChecksums { icmp: word(&before, 2), ip: word(&before, Q + 10), l4 };
        let updated = quoted_address_change(sums, addr(old), addr(new));
        let mut got = before.clone();
        got[Q + 12..Q + 16].copy_from_slice(&new);
        got[2..4].copy_from_slice(&updated.icmp.to_ne_bytes());
        got[Q + 10..Q + 12].copy_from_slice(&updated.ip.to_ne_bytes());
        match updated.l4 {
            QuotedL4::Udp(c) => got[Q + 26..Q + 28].copy_from_slice(&c.to_ne_bytes()),
            QuotedL4::Tcp(c) => got[Q + 36..Q + 38].copy_from_slice(&c.to_ne_bytes()),
            QuotedL4::None => {}
        }
        if !udp_checksum && proto == 17 && matches!(l4, QuotedL4::Udp(_)) {
            assert_eq!(updated.l4, QuotedL4::Udp(0), "a UDP checksum of 0 must stay 0");
        }
        for (at, what) in [(2, "ICMP"), (Q + 10, "quoted IPv4"), (Q + 26, "UDP"), (Q + 36, "TCP")] {
            if at + 2 <= got.len() {
                assert!(
                    same_checksum(word(&got, at), word(&expected, at)),
                    "{what} checksum: got {:#06x}, full computation {:#06x}",
                    word(&got, at),
                    word(&expected, at)
                );
            }
        }
        let (mut got_norm, mut expected_norm) = (got.clone(), expected.clone());
        for at in [2, Q + 10, Q + 26, Q + 36] {
            if at + 2 <= got.len() {
                got_norm[at..at + 2].copy_from_slice(&[0, 0]);
                expected_norm[at..at + 2].copy_from_slice(&[0, 0]);
            }
        }
        assert_eq!(got_norm, expected_norm, "bytes other than the checksums differ");
    }

    #[test]
    fn quoted_udp_full_datagram() {
        let payload = b"a DNS query, or close enough";
        quoted_case(17, true, [203, 0, 113, 10], [10, 0, 1, 10], [198, 51, 100, 1], payload, 512);
    }

    #[test]
    fn quoted_udp_first_8_bytes_and_checksum_0() {
        let payload = b"a DNS query, or close enough";
        for udp_checksum in [true, false] {
            let (eip, private, peer) = ([203, 0, 113, 10], [10, 0, 1, 10], [198, 51, 100, 1]);
            quoted_case(17, udp_checksum, eip, private, peer, payload, 28);
        }
    }

    #[test]
    fn quoted_tcp_first_8_bytes_leaves_the_tcp_checksum_alone() {
        let (eip, private, peer) = ([203, 0, 113, 10], [10, 0, 1, 10], [198, 51, 100, 1]);
        quoted_case(6, true, eip, private, peer, b"GET / HTTP/1.0\r\n\r\n", 28);
    }

    #[test]
    fn checksum_of_a_fresh_header_matches_etherparse() {
        let mut h = Ipv4Header::new(
            36,
            64,
            etherparse::IpNumber::ICMP,
            [198, 51, 100, 2],
            [198, 51, 100, 1],
        )
        .unwrap();
        let bytes = h.to_bytes();
        h.header_checksum = h.calc_header_checksum();
        assert_eq!(u16::from_be(checksum(&bytes)), h.header_checksum);
    }

    /// An ICMP error quoting a whole UDP or TCP packet whose source port changes from
    /// `old_port` to `new_port` (as in an error about a SNAT'ed packet): the port rewritten
    /// in memory with `quoted_port_change` must give exactly what etherparse builds about
    /// the packet with the new port.
    fn quoted_port_case(
        udp: bool,
        udp_checksum: bool,
        src: [u8; 4],
        dst: [u8; 4],
        old_port: u16,
        new_port: u16,
        payload: &[u8],
    ) {
        let packet = |port: u16| {
            let b = PacketBuilder::ipv4(src, dst, 64);
            let mut out = Vec::new();
            if udp {
                b.udp(port, 53).write(&mut out, payload).unwrap();
                if !udp_checksum {
                    out[26..28].copy_from_slice(&[0, 0]);
                }
            } else {
                b.tcp(port, 443, 7, 1024).write(&mut out, payload).unwrap();
            }
            out
        };
        let before = icmp_error(&packet(old_port));
        let expected = icmp_error(&packet(new_port));
        const Q: usize = 8;
        let check_at = Q + 20 + if udp { 6 } else { 16 };
        let l4 = word(&before, check_at);
        let sums = QuotedChecksums {
            icmp: word(&before, 2),
            ip: word(&before, Q + 10),
            l4: if udp { QuotedL4::Udp(l4) } else { QuotedL4::Tcp(l4) },
        };
        let (old, new) = (old_port.to_be(), new_port.to_be());
        let updated = quoted_port_change(sums, old, new);
        let mut got = before.clone();
        got[Q + 20..Q + 22].copy_from_slice(&new_port.to_be_bytes());
        got[2..4].copy_from_slice(&updated.icmp.to_ne_bytes());
        match updated.l4 {
            QuotedL4::Udp(c) | QuotedL4::Tcp(c) => {
                got[check_at..check_at + 2].copy_from_slice(&c.to_ne_bytes())
            }
            QuotedL4::None => unreachable!(),
        }
        if udp && !udp_checksum {
            assert_eq!(updated.l4, QuotedL4::Udp(0), "a UDP checksum of 0 must stay 0");
        }
        for at in [2, check_at] {
            assert!(same_checksum(word(&got, at), word(&expected, at)), "checksum at {at}");
        }
        let (mut got_norm, mut expected_norm) = (got, expected);
        for at in [2, check_at] {
            got_norm[at..at + 2].copy_from_slice(&[0, 0]);
            expected_norm[at..at + 2].copy_from_slice(&[0, 0]);
        }
        assert_eq!(got_norm, expected_norm, "bytes other than the checksums differ");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn quoted_rewrite_matches_full_recomputation(
            udp in any::<bool>(),
            udp_checksum in any::<bool>(),
            old in any::<[u8; 4]>(),
            new in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            quoted_len in 20usize..128,
        ) {
            let proto = if udp { 17 } else { 6 };
            // A quote that ends inside the L4 checksum holds half of a field that is not
            // updated (nor is there a whole one to update): no expectation to state.
            let split_at = if udp { 20 + 7 } else { 20 + 17 };
            prop_assume!(quoted_len != split_at);
            quoted_case(proto, udp_checksum, old, new, dst, &payload, quoted_len);
        }

        #[test]
        fn quoted_port_rewrite_matches_full_recomputation(
            udp in any::<bool>(),
            udp_checksum in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            old_port in any::<u16>(),
            new_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            quoted_port_case(udp, udp_checksum, src, dst, old_port, new_port, &payload);
        }

        #[test]
        fn full_checksum_matches_etherparse(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let reference = etherparse::checksum::Sum16BitWords::new().add_slice(&bytes).ones_complement();
            prop_assert_eq!(checksum(&bytes), reference, "both as they sit in memory");
        }

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
