//! The XDP program under a million random frames (issue 4, "Robustness"). Valid frames of
//! every kind the gateway meets are generated, then most of them mutated, and each one is
//! run through BPF_PROG_TEST_RUN against the real program, loaded and attached by
//! `Dataplane` in a namespace laid out like the one of `packet_table.rs`. For every frame:
//!
//! - the program never returns XDP_ABORTED, nor anything that is not an `xdp_action`;
//! - a dropped frame is left exactly as it came;
//! - a passed frame is unchanged, or (translated before the kernel resolves a neighbour or
//!   fragments it) well-formed, with its checksums right or wrong exactly as they came in;
//! - a transmitted frame (XDP_TX, XDP_REDIRECT) is well-formed (Ethernet and IPv4 or IPv6,
//!   the IP length within the frame, whole TCP/UDP headers on a whole IPv4 datagram) and its
//!   IPv4 header checksum is right (RFC 1812 §5.2.2: a router discards a packet whose header
//!   checksum is wrong). Its other checksums (TCP and UDP on a whole datagram, UDP unless 0,
//!   ICMP, ICMPv6, the IPv4 header an ICMP error quotes) are right, or wrong by exactly what
//!   the input's were: a router does not verify L4 checksums, and an incremental update
//!   (RFC 1624) carries an error through unchanged, so a change in the error is a change the
//!   program got wrong. A quoted TCP or UDP checksum changes by what the quoted addresses
//!   changed. A forwarded frame keeps its IP length and the bytes after the IP packet, and has
//!   lost one TTL; a frame the gateway generates (an ICMP error of its own) has every
//!   checksum right but the quoted header's, which is the input's.
//!
//! Checksums are summed by etherparse (`checksum::Sum16BitWords`) over the raw bytes that
//! each one covers, never by `eipgw_common::checksum`. Not through etherparse's header
//! types: they drop bits a mutated frame may carry (IPv4's reserved flag, TCP's reserved
//! bits) and would then disagree with the wire. `builder_frames_are_valid` checks the frame
//! builder and these sums against etherparse's header types on unmutated frames.
//!
//! Replay: the seed is printed first; `EIPGW_SEED=<seed>` repeats a run, and since each
//! frame is generated from the seed and its index alone, `EIPGW_FUZZ_ITERATION=<n>` runs
//! just frame `n` of it. `EIPGW_FUZZ_ITERATIONS` changes how many frames run.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::programs::{TestRun as _, TestRunOptions, XdpMode};
use eipgw::dataplane::{Dataplane, DataplaneOptions};
use eipgw_tests::gateway_ns::*;
use eipgw_tests::{Mount, require_root, unique_suffix};
use etherparse::{
    Icmpv4Header, Ipv4HeaderSlice, Ipv6HeaderSlice, NetSlice, SlicedPacket, TcpHeaderSlice,
    TransportSlice, UdpHeaderSlice, checksum::Sum16BitWords,
};

// The addresses of `packet_table.rs`, with the same roles.

const ACTION_NAMES: [&str; 5] = ["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"];

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Type, code, checksum and the 4 type-specific bytes of ICMP and ICMPv6.
const ICMP_LEN: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_IPV6: u16 = 0x86dd;

const PROTO_HOP_BY_HOP: u8 = 0;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6_FRAGMENT: u8 = 44;
const PROTO_ICMPV6: u8 = 58;
const PROTO_IPV6_DEST_OPTIONS: u8 = 60;

/// IPv4 flags and fragment offset (RFC 791).
const DONT_FRAGMENT: u16 = 0x4000;
const MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// ICMP error types whose body starts with the offending IPv4 header (RFC 792): destination
/// unreachable, source quench, redirect, time exceeded, parameter problem.
const ICMP_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
/// Field offsets within the IPv4 header.
const IPV4_TOTAL_LEN: usize = 2;
const IPV4_FRAGMENT: usize = 6;
const IPV4_TTL: usize = 8;
const IPV4_PROTOCOL: usize = 9;
const IPV4_CHECKSUM: usize = 10;
const IPV4_SRC: usize = 12;
/// Field offsets within the IPv6 header.
const IPV6_PAYLOAD_LEN: usize = 4;
const IPV6_NEXT_HEADER: usize = 6;
const IPV6_HOP_LIMIT: usize = 7;
const TCP_DATA_OFFSET: usize = 12;
const TCP_CHECKSUM: usize = 16;
const UDP_LENGTH: usize = 4;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;

const DEFAULT_ITERATIONS: u64 = 1_000_000;
/// Frames shown in full per kind of failure; the rest are only counted.
const FAILURES_SHOWN: u64 = 3;
/// Ample for any frame here, and for one that grew (an ICMP error quoting it).
const OUTPUT_CAPACITY: usize = 8192;

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators,
/// scrambled", 2016): small, fast and good enough to pick frames.
struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64, so that neighbouring seeds (the run's seed mixed with
    /// consecutive frame indexes) give unrelated streams, and the state is never the 0 that
    /// xorshift would stay at.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(z.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` is small here).
    fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// One of `items`, or (as often as any one of them) a value from `random`.
    fn pick_or<T: Copy>(&mut self, items: &[T], random: fn(&mut Rng) -> T) -> T {
        match self.below(items.len() + 1) {
            i if i < items.len() => items[i],
            _ => random(self),
        }
    }

    fn u8(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    fn u16(&mut self) -> u16 {
        (self.next() >> 48) as u16
    }

    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    fn push_bytes(&mut self, out: &mut Vec<u8>, n: usize) {
        out.extend((0..n).map(|_| self.u8()));
    }
}

/// What a frame starts as, before any mutation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tcp,
    Udp,
    IcmpEcho,
    /// Destination unreachable (with fragmentation needed), time exceeded or parameter
    /// problem, quoting an IPv4 header and 8 or more bytes of its TCP, UDP or ICMP.
    IcmpError,
    /// Offset 0 with MF set: the L4 header, whose checksum covers the whole datagram.
    FirstFragment,
    LaterFragment,
    /// GRE, ESP, SCTP, IP-in-IP, or any protocol number.
    OtherIpv4,
    Tcp6,
    Udp6,
    /// Echo, or neighbour discovery.
    Icmp6,
    Icmp6Error,
    /// Hop-by-hop or destination options, or a fragment header, before the L4 header.
    Ipv6Extension,
    Arp,
    /// 802.1Q or 802.1ad tag before an IPv4 or IPv6 packet.
    Vlan,
    Garbage,
}

impl Kind {
    /// With weights: IPv4, and its ICMP errors, get the most.
    const WEIGHTED: [(Kind, usize); 15] = [
        (Kind::Tcp, 14),
        (Kind::Udp, 14),
        (Kind::IcmpEcho, 7),
        (Kind::IcmpError, 12),
        (Kind::FirstFragment, 6),
        (Kind::LaterFragment, 6),
        (Kind::OtherIpv4, 3),
        (Kind::Tcp6, 6),
        (Kind::Udp6, 6),
        (Kind::Icmp6, 5),
        (Kind::Icmp6Error, 5),
        (Kind::Ipv6Extension, 4),
        (Kind::Arp, 3),
        (Kind::Vlan, 4),
        (Kind::Garbage, 5),
    ];

    fn random(rng: &mut Rng) -> Kind {
        let total: usize = Self::WEIGHTED.iter().map(|(_, w)| w).sum();
        let mut ticket = rng.below(total);
        for (kind, weight) in Self::WEIGHTED {
            if ticket < weight {
                return kind;
            }
            ticket -= weight;
        }
        unreachable!("the ticket is below the total weight")
    }

    fn index(self) -> usize {
        Self::WEIGHTED.iter().position(|(kind, _)| *kind == self).expect("every kind is listed")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ingress {
    Wan,
    Lan,
}

/// Where the generator put the headers that mutations aim at (offsets into the frame).
#[derive(Clone, Copy, Default, Debug)]
struct Layout {
    ip: Option<usize>,
    v6: bool,
    /// The L4 header, of protocol `proto`, if the frame has one.
    l4: Option<usize>,
    proto: u8,
    /// The IPv4 header quoted by an ICMP error.
    inner_ip: Option<usize>,
}

/// The interface MACs, which frames to the gateway are addressed to.
struct Macs {
    wan: [u8; 6],
    lan: [u8; 6],
}

/// A generated frame: where it comes in, what it started as, and its headers.
struct Case {
    ingress: Ingress,
    kind: Kind,
    layout: Layout,
}

fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn push_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn get_u16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// What a checksum covers besides its own bytes: nothing (IPv4 header, ICMP), or the IPv4
/// or IPv6 pseudo-header (TCP, UDP, ICMPv6).
#[derive(Clone, Copy, Debug)]
enum Pseudo {
    None,
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// The one's-complement sum of the pseudo-header and `bytes`, complemented (RFC 1071), by
/// etherparse: 0 when `bytes` carries the right checksum, and otherwise how far it is off.
/// An incremental update (RFC 1624) keeps that distance, whatever it is. When the sum has a
/// non-zero word (always, but for an all-zero ICMP message) it is one of 0..=0xfffe, so
/// 0x0000 and 0xffff, the two zeros of one's complement, need no special case.
fn checksum_error(pseudo: Pseudo, proto: u8, bytes: &[u8]) -> u16 {
    let len = bytes.len() as u32;
    let sum = match pseudo {
        Pseudo::None => Sum16BitWords::new(),
        Pseudo::V4(src, dst) => Sum16BitWords::new()
            .add_4bytes(src)
            .add_4bytes(dst)
            .add_2bytes([0, proto])
            .add_2bytes((len as u16).to_be_bytes()),
        Pseudo::V6(src, dst) => Sum16BitWords::new()
            .add_16bytes(src)
            .add_16bytes(dst)
            .add_4bytes(len.to_be_bytes())
            .add_2bytes([0, proto]),
    };
    sum.add_slice(bytes).ones_complement()
}

/// A checksum field and what it covers, in frame offsets.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    field: usize,
    pseudo: Pseudo,
    proto: u8,
}

impl Span {
    fn error(&self, frame: &[u8]) -> u16 {
        checksum_error(self.pseudo, self.proto, &frame[self.start..self.end])
    }

    /// Writes the right checksum; `no_zero` for UDP, where 0 means "none" and a computed 0
    /// is sent as 0xffff (RFC 768).
    fn repair(&self, frame: &mut [u8], no_zero: bool) {
        frame[self.field..self.field + 2].fill(0);
        let mut checksum = self.error(frame);
        if no_zero && checksum == 0 {
            checksum = 0xffff;
        }
        // The sum ran over native-order words, so the result goes back in native order.
        frame[self.field..self.field + 2].copy_from_slice(&checksum.to_ne_bytes());
    }
}

fn ipv4_header_span(ip: usize, header_len: usize) -> Span {
    Span {
        start: ip,
        end: ip + header_len,
        field: ip + IPV4_CHECKSUM,
        pseudo: Pseudo::None,
        proto: 0,
    }
}

// --- Frame generation -------------------------------------------------------------------

fn ethernet(out: &mut Vec<u8>, dst: [u8; 6], src: [u8; 6], ether_type: u16) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    push_u16(out, ether_type);
}

/// 0..=3 options words in most headers, up to the 40 bytes the IHL allows in a few.
fn ipv4_options(rng: &mut Rng, options: &mut [u8; 40]) -> usize {
    if rng.percent(65) {
        return 0;
    }
    let len = 4 * if rng.percent(80) { rng.range(1, 3) } else { rng.range(4, 10) };
    match rng.below(3) {
        // NOPs and an end of options (RFC 791).
        0 => {
            options[..len].fill(1);
            options[len - 1] = 0;
        }
        // An empty record route: type 7, length, pointer 4, room for addresses.
        1 => {
            options[..len].fill(0);
            options[0] = 7;
            options[1] = len as u8;
            options[2] = 4;
        }
        _ => options[..len].iter_mut().for_each(|byte| *byte = rng.u8()),
    }
    len
}

fn ipv4(out: &mut Vec<u8>, proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], options: &[u8]) {
    out.push(0x40 | (5 + options.len() / 4) as u8);
    out.push(0); // DSCP and ECN
    push_u16(out, 0); // total length: `finish_ipv4`
    push_u16(out, 0x2e4d); // identification
    push_u16(out, DONT_FRAGMENT);
    out.extend_from_slice(&[ttl, proto, 0, 0]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend_from_slice(options);
}

/// Sets the total length to the rest of the frame and computes the header checksum.
fn finish_ipv4(out: &mut [u8], ip: usize) {
    put_u16(out, ip + IPV4_TOTAL_LEN, (out.len() - ip) as u16);
    let header_len = usize::from(out[ip] & 0x0f) * 4;
    ipv4_header_span(ip, header_len).repair(out, false);
}

fn ipv6(
    out: &mut Vec<u8>,
    rng: &mut Rng,
    next_header: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    let traffic_class_and_flow = if rng.percent(50) { 0 } else { rng.u32() & 0x0fff_ffff };
    push_u32(out, 0x6000_0000 | traffic_class_and_flow);
    push_u16(out, 0); // payload length: `finish_ipv6`
    out.extend_from_slice(&[next_header, hop_limit]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

fn finish_ipv6(out: &mut [u8], ip: usize) {
    put_u16(out, ip + IPV6_PAYLOAD_LEN, (out.len() - ip - IPV6_LEN) as u16);
}

/// Mostly small, sometimes larger than the 1280-byte MTU of the small-MTU routes.
fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=9 => 0,
        10..=89 => rng.range(1, 64),
        90..=94 => rng.range(65, 600),
        _ => rng.range(1240, 1400),
    }
}

fn tcp(rng: &mut Rng, out: &mut Vec<u8>, payload: usize) {
    push_u16(out, rng.pick_or(&[40_000, 51_234, 443], Rng::u16));
    push_u16(out, rng.pick_or(&[80, 443, 53, 8080], Rng::u16));
    push_u32(out, rng.u32()); // sequence number
    push_u32(out, rng.u32()); // acknowledgment number
    let options = if rng.percent(70) { 0 } else { rng.range(1, 10) };
    out.push(((5 + options) << 4) as u8);
    out.push(rng.pick_or(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x04], Rng::u8));
    push_u16(out, rng.u16()); // window
    push_u16(out, 0); // checksum: `fill_l4_checksum`
    push_u16(out, 0); // urgent pointer
    if options > 0 {
        // MSS 1460, then NOPs, or bytes that may not parse as options at all.
        out.extend_from_slice(&[2, 4, 0x05, 0xb4]);
        for _ in 4..options * 4 {
            let byte = if rng.percent(80) { 1 } else { rng.u8() };
            out.push(byte);
        }
    }
    rng.push_bytes(out, payload);
}

fn udp(rng: &mut Rng, out: &mut Vec<u8>, payload: usize) {
    push_u16(out, rng.pick_or(&[53, 5353, 123, 40_000], Rng::u16));
    push_u16(out, rng.pick_or(&[53, 443, 4789], Rng::u16));
    push_u16(out, (UDP_LEN + payload) as u16);
    push_u16(out, 0); // checksum: `fill_l4_checksum`
    rng.push_bytes(out, payload);
}

/// An echo request or reply (ICMP or ICMPv6), checksum left to `fill_l4_checksum`.
fn echo(rng: &mut Rng, out: &mut Vec<u8>, v6: bool, payload: usize) {
    let types: [u8; 2] = if v6 { [128, 129] } else { [8, 0] };
    out.extend_from_slice(&[rng.pick(&types), 0, 0, 0]);
    push_u16(out, rng.u16()); // identifier
    push_u16(out, rng.u16()); // sequence number
    rng.push_bytes(out, payload);
}

/// Computes the checksum of the L4 segment from `l4` to the end of the frame. UDP is sent
/// without one (0) now and then, as RFC 768 allows over IPv4.
fn fill_l4_checksum(rng: &mut Rng, out: &mut [u8], l4: usize, proto: u8, pseudo: Pseudo) {
    let (field, no_zero, pseudo) = match proto {
        PROTO_TCP => (TCP_CHECKSUM, false, pseudo),
        PROTO_UDP => {
            if matches!(pseudo, Pseudo::V4(..)) && rng.percent(15) {
                return;
            }
            (UDP_CHECKSUM, true, pseudo)
        }
        // ICMPv4 has no pseudo-header (RFC 792); ICMPv6 does (RFC 4443 §2.3).
        PROTO_ICMP => (ICMP_CHECKSUM, false, Pseudo::None),
        PROTO_ICMPV6 => (ICMP_CHECKSUM, false, pseudo),
        _ => return,
    };
    let span = Span { start: l4, end: out.len(), field: l4 + field, pseudo, proto };
    span.repair(out, no_zero);
}

/// An L4 segment of `proto` with a payload of `payload` bytes, checksummed.
fn segment(rng: &mut Rng, out: &mut Vec<u8>, proto: u8, pseudo: Pseudo, payload: usize) {
    let l4 = out.len();
    match proto {
        PROTO_TCP => tcp(rng, out, payload),
        PROTO_UDP => udp(rng, out, payload),
        PROTO_ICMP => echo(rng, out, false, payload),
        PROTO_ICMPV6 => echo(rng, out, true, payload),
        _ => rng.push_bytes(out, payload),
    }
    fill_l4_checksum(rng, out, l4, proto, pseudo);
}

fn v4(address: Ipv4Addr) -> [u8; 4] {
    address.octets()
}

/// Somewhere on the Internet side.
fn internet_v4(rng: &mut Rng) -> [u8; 4] {
    match rng.below(10) {
        0..=3 => v4(INTERNET_HOST),
        4 => v4(INTERNET_UNRESOLVED),
        5 => v4(INTERNET_SMALL_MTU),
        6 => [198, 51, 100, rng.u8()],
        _ => rng.u32().to_be_bytes(),
    }
}

/// An Elastic IP, mapped in any mode or not at all.
fn eip_v4(rng: &mut Rng) -> [u8; 4] {
    match rng.below(10) {
        0..=3 => v4(EIP_VM),
        4 => v4(EIP_UNRESOLVED),
        5 => v4(EIP_UNASSOCIATED),
        6 => v4(EIP_CUT_THROUGH),
        7 => v4(EIP_MULTI),
        8 => v4(EIP_CUT_UNRESOLVED),
        _ => [203, 0, 113, rng.u8()],
    }
}

/// A VPC address, with or without an EIP; the visible-mode EIPs are VPC sources too.
fn vpc_v4(rng: &mut Rng) -> [u8; 4] {
    match rng.below(10) {
        0..=3 => v4(VM),
        4 => v4(VM_UNRESOLVED),
        5 => v4(VM_WITHOUT_EIP),
        6 => v4(rng.pick(&[ENI_CUT, ENI_MULTI, ENI_UNRESOLVED])),
        7 => v4(rng.pick(&[EIP_CUT_THROUGH, EIP_MULTI, EIP_CUT_UNRESOLVED])),
        _ => [10, 0, 1, rng.u8()],
    }
}

/// The gateway's own, broadcast, multicast, unspecified, loopback, or anything.
fn odd_v4(rng: &mut Rng) -> [u8; 4] {
    let any = rng.u32().to_be_bytes();
    rng.pick(&[
        v4(GW_WAN),
        v4(GW_LAN),
        [255, 255, 255, 255],
        [224, 0, 0, 1],
        [0, 0, 0, 0],
        [127, 0, 0, 1],
        any,
    ])
}

fn any_v4(rng: &mut Rng) -> [u8; 4] {
    match rng.below(4) {
        0 => internet_v4(rng),
        1 => eip_v4(rng),
        2 => vpc_v4(rng),
        _ => odd_v4(rng),
    }
}

/// Source and destination: mostly the way traffic crosses the gateway from `ingress`.
fn addresses_v4(rng: &mut Rng, ingress: Ingress) -> ([u8; 4], [u8; 4]) {
    let (src, dst) = match ingress {
        Ingress::Wan => (internet_v4(rng), eip_v4(rng)),
        Ingress::Lan => (vpc_v4(rng), internet_v4(rng)),
    };
    let src = if rng.percent(12) { any_v4(rng) } else { src };
    let dst = if rng.percent(12) { any_v4(rng) } else { dst };
    (src, dst)
}

fn internet_v6(rng: &mut Rng) -> Ipv6Addr {
    match rng.below(4) {
        0 | 1 => INTERNET_HOST6,
        2 => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, rng.u16()),
        _ => Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())),
    }
}

fn vpc_v6(rng: &mut Rng) -> Ipv6Addr {
    match rng.below(6) {
        0 | 1 => VM6_PUBLIC,
        2 => VM6_PRIVATE,
        3 => VM6_UNRESOLVED,
        4 => VM6_SMALL_MTU,
        _ => Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, rng.u16()),
    }
}

/// The gateway's own, link-local, multicast, unspecified, loopback.
fn odd_v6(rng: &mut Rng) -> Ipv6Addr {
    rng.pick(&[
        GW_WAN6,
        GW_LAN6,
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2),
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::LOCALHOST,
    ])
}

fn addresses_v6(rng: &mut Rng, ingress: Ingress) -> (Ipv6Addr, Ipv6Addr) {
    let (src, dst) = match ingress {
        Ingress::Wan => (internet_v6(rng), vpc_v6(rng)),
        Ingress::Lan => (vpc_v6(rng), internet_v6(rng)),
    };
    let src = if rng.percent(10) { odd_v6(rng) } else { src };
    let dst = if rng.percent(10) { odd_v6(rng) } else { dst };
    (src, dst)
}

fn ttl(rng: &mut Rng) -> u8 {
    match rng.below(20) {
        0 => 0,
        1 => 1,
        2 => 255,
        3..=9 => rng.range(2, 255) as u8,
        _ => 64,
    }
}

/// The Ethernet addresses of a frame into `ingress`: mostly from a neighbour to the gateway.
fn link(rng: &mut Rng, macs: &Macs, ingress: Ingress) -> ([u8; 6], [u8; 6]) {
    let (ours, theirs) = match ingress {
        Ingress::Wan => (macs.wan, INTERNET_HOST_MAC),
        Ingress::Lan => {
            (macs.lan, rng.pick(&[VM_MAC, ENI_CUT_MAC, ENI_MULTI_MAC, VM6_PRIVATE_MAC]))
        }
    };
    let mut random = [0; 6];
    random.iter_mut().for_each(|byte| *byte = rng.u8());
    let dst = match rng.below(20) {
        0 => [0xff; 6],
        1 => random,
        _ => ours,
    };
    let src = if rng.percent(90) { theirs } else { random };
    (dst, src)
}

/// One valid frame, of a random kind, into a random interface.
fn generate(rng: &mut Rng, macs: &Macs, out: &mut Vec<u8>) -> Case {
    let ingress = if rng.percent(50) { Ingress::Wan } else { Ingress::Lan };
    let kind = Kind::random(rng);
    let (dst_mac, src_mac) = link(rng, macs, ingress);
    let layout = match kind {
        Kind::Arp => {
            ethernet(out, dst_mac, src_mac, ETHERTYPE_ARP);
            // Ethernet/IPv4, request or reply, then sender and target addresses.
            out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, rng.pick(&[1, 2])]);
            out.extend_from_slice(&src_mac);
            out.extend_from_slice(&any_v4(rng));
            out.extend_from_slice(&[0; 6]);
            out.extend_from_slice(&any_v4(rng));
            Layout::default()
        }
        Kind::Vlan => {
            ethernet(out, dst_mac, src_mac, rng.pick(&[ETHERTYPE_VLAN, ETHERTYPE_QINQ]));
            push_u16(out, rng.u16()); // priority, DEI and VLAN id
            if rng.percent(70) {
                push_u16(out, ETHERTYPE_IPV4);
                let inner = rng.pick(&[Kind::Tcp, Kind::Udp, Kind::IcmpEcho]);
                ipv4_packet(rng, out, inner, ingress)
            } else {
                push_u16(out, ETHERTYPE_IPV6);
                let inner = rng.pick(&[Kind::Tcp6, Kind::Udp6, Kind::Icmp6]);
                ipv6_packet(rng, out, inner, ingress)
            }
        }
        Kind::Garbage => {
            let ether_type = rng.pick_or(
                &[
                    ETHERTYPE_IPV4,
                    ETHERTYPE_IPV6,
                    0x88cc, // LLDP
                    0x0026, // an 802.3 length
                ],
                Rng::u16,
            );
            ethernet(out, dst_mac, src_mac, ether_type);
            let len = rng.range(0, 120);
            rng.push_bytes(out, len);
            Layout::default()
        }
        Kind::Tcp6 | Kind::Udp6 | Kind::Icmp6 | Kind::Icmp6Error | Kind::Ipv6Extension => {
            ethernet(out, dst_mac, src_mac, ETHERTYPE_IPV6);
            ipv6_packet(rng, out, kind, ingress)
        }
        _ => {
            ethernet(out, dst_mac, src_mac, ETHERTYPE_IPV4);
            ipv4_packet(rng, out, kind, ingress)
        }
    };
    Case { ingress, kind, layout }
}

/// An IPv4 packet of `kind` at the end of `out`.
fn ipv4_packet(rng: &mut Rng, out: &mut Vec<u8>, kind: Kind, ingress: Ingress) -> Layout {
    let (src, dst) = addresses_v4(rng, ingress);
    let proto = match kind {
        Kind::Tcp => PROTO_TCP,
        Kind::Udp => PROTO_UDP,
        Kind::IcmpEcho | Kind::IcmpError => PROTO_ICMP,
        Kind::FirstFragment | Kind::LaterFragment => {
            rng.pick(&[PROTO_TCP, PROTO_UDP, PROTO_UDP, PROTO_ICMP])
        }
        _ => rng.pick_or(&[47, 50, 132, 4, 41], Rng::u8),
    };
    let mut options = [0; 40];
    let options_len = ipv4_options(rng, &mut options);
    let ip = out.len();
    ipv4(out, proto, ttl(rng), src, dst, &options[..options_len]);
    let l4 = out.len();
    let pseudo = Pseudo::V4(src, dst);
    let mut layout = Layout { ip: Some(ip), v6: false, l4: Some(l4), proto, inner_ip: None };
    let mut fragment = if rng.percent(70) { DONT_FRAGMENT } else { 0 };
    match kind {
        Kind::IcmpError => {
            layout.inner_ip = Some(icmp_error_v4(rng, out, src, dst));
            fill_l4_checksum(rng, out, l4, proto, pseudo);
        }
        Kind::FirstFragment => {
            // The whole datagram, checksummed, of which the first fragment keeps a multiple
            // of 8 bytes (RFC 791), mostly enough for the whole L4 header.
            let payload = rng.range(17, 200);
            segment(rng, out, proto, pseudo, payload);
            let whole = out.len() - l4;
            let min = if rng.percent(80) { TCP_LEN.div_ceil(8) } else { 1 };
            let keep = 8 * rng.range(min, (whole - 1) / 8);
            out.truncate(l4 + keep);
            fragment = MORE_FRAGMENTS;
        }
        Kind::LaterFragment => {
            let more = rng.percent(50);
            let len = if more { 8 * rng.range(1, 20) } else { rng.range(1, 160) };
            rng.push_bytes(out, len);
            let offset = if rng.percent(80) { rng.range(1, 200) as u16 } else { rng.u16() };
            fragment = (offset & FRAGMENT_OFFSET) | if more { MORE_FRAGMENTS } else { 0 };
            layout.l4 = None;
        }
        _ => {
            let payload = payload_len(rng);
            segment(rng, out, proto, pseudo, payload);
        }
    }
    put_u16(out, ip + IPV4_FRAGMENT, fragment);
    finish_ipv4(out, ip);
    layout
}

/// The body of an ICMP error about a packet that went the other way: from the destination
/// of the error (an EIP, or a VPC instance's peer) to its source or elsewhere. Returns the
/// offset of the quoted IPv4 header; the ICMP checksum is left to the caller.
fn icmp_error_v4(rng: &mut Rng, out: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4]) -> usize {
    let (icmp_type, code) = match rng.below(4) {
        0 => (3, 4), // fragmentation needed
        1 => (3, rng.below(16) as u8),
        2 => (11, rng.below(2) as u8),
        _ => (rng.pick(&[12, 4, 5]), rng.below(3) as u8),
    };
    out.extend_from_slice(&[icmp_type, code, 0, 0]);
    match (icmp_type, code) {
        (3, 4) => {
            push_u16(out, 0);
            push_u16(out, rng.pick_or(&[1280, 1400, 576, 68, 0], Rng::u16));
        }
        // The pointer, for code 0 only (etherparse, rightly, sums the other codes' unused
        // bytes as zeros).
        (12, 0) => out.extend_from_slice(&[rng.below(60) as u8, 0, 0, 0]),
        (5, _) => out.extend_from_slice(&any_v4(rng)),
        _ => push_u32(out, 0),
    }
    let inner_src = if rng.percent(85) { dst } else { any_v4(rng) };
    let inner_dst = match rng.below(10) {
        0..=5 => src,
        6..=8 => internet_v4(rng),
        _ => any_v4(rng),
    };
    let inner_proto = rng.pick(&[PROTO_TCP, PROTO_UDP, PROTO_ICMP]);
    let mut options = [0; 40];
    let options_len = if rng.percent(80) { 0 } else { ipv4_options(rng, &mut options) };
    let inner = out.len();
    ipv4(out, inner_proto, rng.range(1, 64) as u8, inner_src, inner_dst, &options[..options_len]);
    // The original datagram, of which the error quotes the first 8 bytes after the header
    // (RFC 792) or more (RFC 1812 §4.3.2.3).
    let original = rng.range(UDP_LEN, 1400);
    let quoted = if rng.percent(70) { UDP_LEN } else { rng.range(UDP_LEN, original.min(64)) };
    match inner_proto {
        PROTO_TCP => {
            push_u16(out, rng.u16());
            push_u16(out, rng.pick_or(&[80, 443], Rng::u16));
            push_u32(out, rng.u32());
        }
        PROTO_UDP => {
            push_u16(out, rng.u16());
            push_u16(out, rng.pick_or(&[53, 443], Rng::u16));
            push_u16(out, original as u16);
            push_u16(out, rng.u16());
        }
        _ => {
            out.extend_from_slice(&[rng.pick(&[8, 0]), 0]);
            push_u16(out, rng.u16());
            push_u32(out, rng.u32());
        }
    }
    rng.push_bytes(out, quoted - UDP_LEN);
    let header_len = IPV4_LEN + options_len;
    put_u16(out, inner + IPV4_TOTAL_LEN, (header_len + original) as u16);
    ipv4_header_span(inner, header_len).repair(out, false);
    inner
}

/// An IPv6 packet of `kind` at the end of `out`.
fn ipv6_packet(rng: &mut Rng, out: &mut Vec<u8>, kind: Kind, ingress: Ingress) -> Layout {
    let (src, dst) = addresses_v6(rng, ingress);
    let pseudo = Pseudo::V6(src.octets(), dst.octets());
    let ip = out.len();
    let proto = match kind {
        Kind::Tcp6 => PROTO_TCP,
        Kind::Udp6 => PROTO_UDP,
        Kind::Icmp6 | Kind::Icmp6Error => PROTO_ICMPV6,
        _ => rng.pick(&[PROTO_TCP, PROTO_UDP, PROTO_ICMPV6]),
    };
    let next_header = match kind {
        Kind::Ipv6Extension => {
            rng.pick(&[PROTO_HOP_BY_HOP, PROTO_IPV6_DEST_OPTIONS, PROTO_IPV6_FRAGMENT])
        }
        _ => proto,
    };
    let hop_limit = ttl(rng);
    ipv6(out, rng, next_header, hop_limit, src, dst);
    match next_header {
        PROTO_HOP_BY_HOP | PROTO_IPV6_DEST_OPTIONS => {
            // Next header, length 0 (8 bytes), a PadN option filling the rest.
            out.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        }
        PROTO_IPV6_FRAGMENT => {
            // A first fragment (offset 0, M set) or a later one.
            out.extend_from_slice(&[proto, 0]);
            push_u16(out, if rng.percent(50) { 1 } else { (rng.range(1, 100) as u16) << 3 });
            push_u32(out, rng.u32());
        }
        _ => {}
    }
    let l4 = out.len();
    let layout = Layout { ip: Some(ip), v6: true, l4: Some(l4), proto, inner_ip: None };
    match kind {
        Kind::Icmp6 if rng.percent(30) => {
            // Router or neighbour solicitation or advertisement, or redirect: a target
            // address and an option, as good as any here.
            out.extend_from_slice(&[rng.range(133, 137) as u8, 0, 0, 0]);
            push_u32(out, 0);
            out.extend_from_slice(&odd_v6(rng).octets());
            out.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
            fill_l4_checksum(rng, out, l4, proto, pseudo);
        }
        Kind::Icmp6Error => {
            // Destination unreachable, packet too big, time exceeded, parameter problem
            // (RFC 4443), quoting a packet that went the other way.
            let icmp_type = rng.range(1, 4) as u8;
            out.extend_from_slice(&[icmp_type, rng.below(7) as u8, 0, 0]);
            push_u32(out, if icmp_type == 2 { rng.pick_or(&[1280, 1500], Rng::u32) } else { 0 });
            let inner_proto = rng.pick(&[PROTO_TCP, PROTO_UDP, PROTO_ICMPV6]);
            let inner = out.len();
            let hop_limit = rng.range(1, 64) as u8;
            ipv6(out, rng, inner_proto, hop_limit, dst, src);
            let original = rng.range(UDP_LEN, 1400);
            put_u16(out, inner + IPV6_PAYLOAD_LEN, original as u16);
            rng.push_bytes(out, UDP_LEN);
            fill_l4_checksum(rng, out, l4, proto, pseudo);
        }
        _ => {
            let payload = payload_len(rng).min(1300);
            segment(rng, out, proto, pseudo, payload);
        }
    }
    finish_ipv6(out, ip);
    layout
}

// --- Mutation ---------------------------------------------------------------------------

/// 0..=0xffff, mostly near `actual`, or one of the values parsers trip over.
fn near(rng: &mut Rng, actual: usize) -> u16 {
    match rng.below(4) {
        0 | 1 => (actual as i64 + rng.range(0, 32) as i64 - 16).clamp(0, 0xffff) as u16,
        2 => rng.u16(),
        _ => rng.pick(&[0, 1, 7, 8, 19, 20, 39, 40, 0xffff]),
    }
}

/// Changes one header field to a lie: a length, a header length, a fragment field, a TTL,
/// a protocol or a type.
fn edit_field(rng: &mut Rng, frame: &mut Vec<u8>, layout: Layout, log: &mut String) {
    let len = frame.len();
    let Some(ip) = layout.ip.filter(|&ip| ip + IPV4_LEN <= len) else {
        let value = rng.pick_or(&[ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN], Rng::u16);
        put_u16(frame, 12, value);
        let _ = write!(log, " ethertype={value:#06x}");
        return;
    };
    match rng.below(12) {
        0 if !layout.v6 => {
            let ihl = rng.below(16) as u8;
            frame[ip] = (frame[ip] & 0xf0) | ihl;
            let _ = write!(log, " ihl={ihl}");
        }
        1 => {
            let version = rng.pick_or(&[4, 6, 0, 15], |rng| rng.below(16) as u8);
            frame[ip] = (frame[ip] & 0x0f) | (version << 4);
            let _ = write!(log, " version={version}");
        }
        2 | 3 if !layout.v6 => {
            let value = near(rng, len - ip);
            put_u16(frame, ip + IPV4_TOTAL_LEN, value);
            let _ = write!(log, " total_length={value}");
        }
        2 | 3 => {
            let value = near(rng, len.saturating_sub(ip + IPV6_LEN));
            put_u16(frame, ip + IPV6_PAYLOAD_LEN, value);
            let _ = write!(log, " payload_length={value}");
        }
        4 => {
            let value = rng.pick(&[0, 1, 2, 255]);
            frame[ip + if layout.v6 { IPV6_HOP_LIMIT } else { IPV4_TTL }] = value;
            let _ = write!(log, " ttl={value}");
        }
        5 if !layout.v6 => {
            let value = match rng.below(4) {
                0 => MORE_FRAGMENTS,
                1 => MORE_FRAGMENTS | rng.range(1, 200) as u16,
                2 => rng.range(1, 200) as u16,
                _ => rng.u16(),
            };
            put_u16(frame, ip + IPV4_FRAGMENT, value);
            let _ = write!(log, " fragment={value:#06x}");
        }
        6 => {
            let value = rng.pick_or(
                &[
                    PROTO_TCP,
                    PROTO_UDP,
                    PROTO_ICMP,
                    PROTO_ICMPV6,
                    PROTO_HOP_BY_HOP,
                    PROTO_IPV6_FRAGMENT,
                ],
                Rng::u8,
            );
            frame[ip + if layout.v6 { IPV6_NEXT_HEADER } else { IPV4_PROTOCOL }] = value;
            let _ = write!(log, " protocol={value}");
        }
        7..=9 => edit_upper_layer(rng, frame, layout, log),
        10 => {
            // Shorter, with a length that says so: a consistent packet whose headers end
            // early.
            let cut = rng.range(ip + 8, len);
            frame.truncate(cut);
            if layout.v6 {
                put_u16(frame, ip + IPV6_PAYLOAD_LEN, cut.saturating_sub(ip + IPV6_LEN) as u16);
            } else {
                put_u16(frame, ip + IPV4_TOTAL_LEN, (cut - ip) as u16);
            }
            let _ = write!(log, " shortened_to={cut}");
        }
        _ => {
            let at = rng.below(len.min(ip + 80));
            let value = rng.u8();
            frame[at] = value;
            let _ = write!(log, " byte[{at}]={value:#04x}");
        }
    }
}

/// Changes a field past the IP header: the TCP data offset, the UDP length, the ICMP type,
/// or the IPv4 header an ICMP error quotes; a random byte if the frame has none of them.
fn edit_upper_layer(rng: &mut Rng, frame: &mut [u8], layout: Layout, log: &mut String) {
    let len = frame.len();
    let l4 = layout.l4.filter(|&l4| l4 + ICMP_LEN <= len);
    let inner = layout.inner_ip.filter(|&inner| inner + IPV4_LEN <= len && rng.percent(50));
    match (l4, layout.proto, inner) {
        (_, _, Some(inner)) => match rng.below(3) {
            0 => {
                let ihl = rng.below(16) as u8;
                frame[inner] = (frame[inner] & 0xf0) | ihl;
                let _ = write!(log, " inner_ihl={ihl}");
            }
            1 => {
                let value = near(rng, len - inner);
                put_u16(frame, inner + IPV4_TOTAL_LEN, value);
                let _ = write!(log, " inner_total_length={value}");
            }
            _ => {
                let value = rng.pick_or(&[PROTO_TCP, PROTO_UDP, PROTO_ICMP], Rng::u8);
                frame[inner + IPV4_PROTOCOL] = value;
                let _ = write!(log, " inner_protocol={value}");
            }
        },
        (Some(l4), PROTO_TCP, _) if l4 + TCP_LEN <= len => {
            let offset = rng.below(16) as u8;
            frame[l4 + TCP_DATA_OFFSET] = (frame[l4 + TCP_DATA_OFFSET] & 0x0f) | (offset << 4);
            let _ = write!(log, " tcp_data_offset={offset}");
        }
        (Some(l4), PROTO_UDP, _) => {
            let value = near(rng, len - l4);
            put_u16(frame, l4 + UDP_LENGTH, value);
            let _ = write!(log, " udp_length={value}");
        }
        (Some(l4), PROTO_ICMP | PROTO_ICMPV6, _) => {
            let icmp_type = rng.pick_or(&[0, 3, 5, 8, 11, 12, 1, 2, 128, 135], Rng::u8);
            let code = rng.pick_or(&[0, 4], Rng::u8);
            frame[l4] = icmp_type;
            frame[l4 + 1] = code;
            let _ = write!(log, " icmp_type={icmp_type} code={code}");
        }
        _ => {
            let at = rng.below(len);
            let value = rng.u8();
            frame[at] = value;
            let _ = write!(log, " byte[{at}]={value:#04x}");
        }
    }
}

/// Makes the checksums that the field edits spoiled right again, most of the time, so that
/// an edited frame gets past any checksum check to the parsing behind it.
fn repair_checksums(rng: &mut Rng, frame: &mut [u8], layout: Layout, log: &mut String) {
    let valid_ipv4_header = |frame: &[u8], at: usize| {
        let header_len = usize::from(*frame.get(at)? & 0x0f) * 4;
        (frame[at] >> 4 == 4 && header_len >= IPV4_LEN && at + header_len <= frame.len())
            .then_some(header_len)
    };
    if let Some(inner) = layout.inner_ip
        && rng.percent(60)
        && let Some(header_len) = valid_ipv4_header(frame, inner)
    {
        ipv4_header_span(inner, header_len).repair(frame, false);
    }
    if rng.percent(70)
        && let Ok(parsed) = parse(frame)
        && let Some(l4) = parsed.l4
        && !matches!(l4.kind, L4Kind::UdpWithoutChecksum)
    {
        l4.span.repair(frame, matches!(l4.kind, L4Kind::Udp));
        log.push_str(" (l4 checksum fixed)");
    }
    if !layout.v6
        && let Some(ip) = layout.ip
        && rng.percent(85)
        && let Some(header_len) = valid_ipv4_header(frame, ip)
    {
        ipv4_header_span(ip, header_len).repair(frame, false);
        log.push_str(" (ip checksum fixed)");
    }
}

/// Mutates a frame: 0..=4 field edits (mostly with the checksums made right again), then
/// now and then raw damage: flipped bits, a random byte, truncation, bytes appended.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>, layout: Layout, log: &mut String) {
    let edits = match rng.below(10) {
        0..=2 => 0,
        3..=7 => 1,
        _ => rng.range(2, 4),
    };
    for _ in 0..edits {
        edit_field(rng, frame, layout, log);
    }
    if edits > 0 {
        repair_checksums(rng, frame, layout, log);
    }
    if rng.percent(10) {
        for _ in 0..rng.range(1, 3) {
            let reach = if rng.percent(80) { frame.len().min(ETH_LEN + 120) } else { frame.len() };
            let at = rng.below(reach);
            let bit = rng.below(8);
            frame[at] ^= 1 << bit;
            let _ = write!(log, " flip[{at}].{bit}");
        }
    }
    if rng.percent(4) {
        let at = rng.below(frame.len());
        frame[at] = rng.u8();
        let _ = write!(log, " byte[{at}]={:#04x}", frame[at]);
    }
    if rng.percent(10) && frame.len() > ETH_LEN {
        // Not below an Ethernet header: BPF_PROG_TEST_RUN refuses those (bpf_test_init).
        let reach = if rng.percent(70) { frame.len().min(ETH_LEN + 100) } else { frame.len() };
        let cut = rng.range(ETH_LEN, reach - 1);
        frame.truncate(cut);
        let _ = write!(log, " truncated_to={cut}");
    }
    if rng.percent(10) {
        // Ethernet padding (zeros), or trailing garbage.
        let n = rng.range(1, 64);
        if rng.percent(50) {
            frame.resize(frame.len() + n, 0);
        } else {
            rng.push_bytes(frame, n);
        }
        let _ = write!(log, " appended={n}");
    }
}

// --- Checking ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L4Kind {
    Tcp,
    Udp,
    /// IPv4 UDP with checksum 0: none to check (RFC 768).
    UdpWithoutChecksum,
    Icmp,
    Icmpv6,
}

impl L4Kind {
    const ALL: [L4Kind; 5] =
        [L4Kind::Tcp, L4Kind::Udp, L4Kind::UdpWithoutChecksum, L4Kind::Icmp, L4Kind::Icmpv6];
}

#[derive(Clone, Copy, Debug)]
struct L4Sum {
    kind: L4Kind,
    span: Span,
}

/// An Ethernet + IP frame as the checks read it, with the checksums they verify.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    v6: bool,
    /// IP header and payload, as the IP header says.
    ip_len: usize,
    ttl: u8,
    src: [u8; 16],
    proto: u8,
    icmp_type: Option<u8>,
    /// IPv4 only.
    header: Option<Span>,
    /// Only where the frame holds all the checksum covers: a whole datagram, not a fragment.
    l4: Option<L4Sum>,
    /// The IPv4 header quoted by an ICMP error.
    inner: Option<Span>,
    /// The TCP or UDP checksum of the packet an ICMP error quotes, where the quote holds it.
    quoted_l4: Option<QuotedL4>,
}

/// A quoted TCP or UDP checksum. The quote rarely holds all it covers, but a rewrite of the
/// quoted addresses and ports (a NAT gateway's port translation) must change it by what
/// they changed (RFC 5508 §4.2, RFC 1624): the one's-complement sum of the two addresses,
/// the two ports and the checksum stays as it was.
#[derive(Clone, Copy, Debug)]
struct QuotedL4 {
    /// Offset of the quoted source and destination addresses.
    addresses: usize,
    /// Offset of the quoted source and destination ports.
    ports: usize,
    field: usize,
    udp: bool,
}

impl QuotedL4 {
    /// The checksum and that sum.
    fn read(&self, frame: &[u8]) -> (u16, u16) {
        let sum = Sum16BitWords::new()
            .add_slice(&frame[self.addresses..self.addresses + 8])
            .add_slice(&frame[self.ports..self.ports + 4])
            .add_slice(&frame[self.field..self.field + 2])
            .ones_complement();
        (get_u16(frame, self.field), sum)
    }
}

/// Reads an Ethernet + IPv4/IPv6 frame, refusing it unless it is well-formed: an IP header
/// that etherparse accepts, an IP length within the frame and, on a whole IPv4 datagram, a
/// TCP header or UDP length that fits (what the gateway must check before it rewrites the
/// checksums there).
fn parse(frame: &[u8]) -> Result<Parsed, String> {
    if frame.len() < ETH_LEN {
        return Err(format!("{} bytes: no Ethernet header", frame.len()));
    }
    match get_u16(frame, 12) {
        ETHERTYPE_IPV4 => parse_ipv4(frame),
        ETHERTYPE_IPV6 => parse_ipv6(frame),
        other => Err(format!("ethertype {other:#06x}, neither IPv4 nor IPv6")),
    }
}

fn parse_ipv4(frame: &[u8]) -> Result<Parsed, String> {
    let header =
        Ipv4HeaderSlice::from_slice(&frame[ETH_LEN..]).map_err(|e| format!("IPv4 header: {e}"))?;
    let header_len = header.slice().len();
    let ip_len = usize::from(header.total_len());
    if ip_len < header_len {
        return Err(format!("IPv4 total length {ip_len} is shorter than its header"));
    }
    if ETH_LEN + ip_len > frame.len() {
        return Err(format!(
            "IPv4 total length {ip_len} is longer than the {} bytes after Ethernet",
            frame.len() - ETH_LEN
        ));
    }
    let (start, end) = (ETH_LEN + header_len, ETH_LEN + ip_len);
    let payload = &frame[start..end];
    let pseudo = Pseudo::V4(header.source(), header.destination());
    let proto = header.protocol().0;
    let first = header.fragments_offset().value() == 0;
    let whole = first && !header.more_fragments();
    let mut parsed = Parsed {
        v6: false,
        ip_len,
        ttl: header.ttl(),
        src: Ipv4Addr::from(header.source()).to_ipv6_mapped().octets(),
        proto,
        icmp_type: None,
        header: Some(ipv4_header_span(ETH_LEN, header_len)),
        l4: None,
        inner: None,
        quoted_l4: None,
    };
    match proto {
        PROTO_TCP if whole => {
            TcpHeaderSlice::from_slice(payload).map_err(|e| format!("TCP header: {e}"))?;
            let span = Span { start, end, field: start + TCP_CHECKSUM, pseudo, proto };
            parsed.l4 = Some(L4Sum { kind: L4Kind::Tcp, span });
        }
        PROTO_UDP if whole => {
            let udp =
                UdpHeaderSlice::from_slice(payload).map_err(|e| format!("UDP header: {e}"))?;
            let udp_len = usize::from(udp.length());
            if !(UDP_LEN..=payload.len()).contains(&udp_len) {
                return Err(format!("UDP length {udp_len} in a {}-byte payload", payload.len()));
            }
            let span =
                Span { start, end: start + udp_len, field: start + UDP_CHECKSUM, pseudo, proto };
            let kind = if udp.checksum() == 0 { L4Kind::UdpWithoutChecksum } else { L4Kind::Udp };
            parsed.l4 = Some(L4Sum { kind, span });
        }
        PROTO_ICMP if first && payload.len() >= ICMP_LEN => {
            parsed.icmp_type = Some(payload[0]);
            if whole {
                let span =
                    Span { start, end, field: start + ICMP_CHECKSUM, pseudo: Pseudo::None, proto };
                parsed.l4 = Some(L4Sum { kind: L4Kind::Icmp, span });
            }
            if ICMP_ERRORS.contains(&payload[0])
                && let Ok(inner) = Ipv4HeaderSlice::from_slice(&payload[ICMP_LEN..])
            {
                let (at, header_len) = (start + ICMP_LEN, inner.slice().len());
                parsed.inner = Some(ipv4_header_span(at, header_len));
                let field = match inner.protocol().0 {
                    PROTO_TCP => Some(at + header_len + TCP_CHECKSUM),
                    PROTO_UDP => Some(at + header_len + UDP_CHECKSUM),
                    _ => None,
                };
                parsed.quoted_l4 = field
                    .filter(|&field| field + 2 <= end && inner.fragments_offset().value() == 0)
                    .map(|field| QuotedL4 {
                        addresses: at + IPV4_SRC,
                        ports: at + header_len,
                        field,
                        udp: inner.protocol().0 == PROTO_UDP,
                    });
            }
        }
        _ => {}
    }
    Ok(parsed)
}

fn parse_ipv6(frame: &[u8]) -> Result<Parsed, String> {
    let header =
        Ipv6HeaderSlice::from_slice(&frame[ETH_LEN..]).map_err(|e| format!("IPv6 header: {e}"))?;
    let ip_len = IPV6_LEN + usize::from(header.payload_length());
    if ETH_LEN + ip_len > frame.len() {
        return Err(format!(
            "IPv6 payload length {} is longer than the {} bytes after the header",
            header.payload_length(),
            frame.len() - ETH_LEN - IPV6_LEN
        ));
    }
    let (start, end) = (ETH_LEN + IPV6_LEN, ETH_LEN + ip_len);
    let payload = &frame[start..end];
    let pseudo = Pseudo::V6(header.source(), header.destination());
    let proto = header.next_header().0;
    // Extension headers are not walked: the gateway forwards IPv6 as a router, without
    // reading past the fixed header, so an L4 header is checked only where it follows it.
    // Its structure is not required either (the gateway does not read it); the checksum is
    // summed over what it would cover.
    let l4 = match proto {
        PROTO_TCP if payload.len() >= TCP_LEN => {
            Some((L4Kind::Tcp, Span { start, end, field: start + TCP_CHECKSUM, pseudo, proto }))
        }
        PROTO_UDP if payload.len() >= UDP_LEN => {
            let udp_len = usize::from(get_u16(payload, UDP_LENGTH));
            let covered =
                if (UDP_LEN..=payload.len()).contains(&udp_len) { udp_len } else { payload.len() };
            let span =
                Span { start, end: start + covered, field: start + UDP_CHECKSUM, pseudo, proto };
            Some((L4Kind::Udp, span))
        }
        PROTO_ICMPV6 if payload.len() >= ICMP_LEN => {
            Some((L4Kind::Icmpv6, Span { start, end, field: start + ICMP_CHECKSUM, pseudo, proto }))
        }
        _ => None,
    };
    Ok(Parsed {
        v6: true,
        ip_len,
        ttl: header.hop_limit(),
        src: header.source(),
        proto,
        icmp_type: (proto == PROTO_ICMPV6 && !payload.is_empty()).then(|| payload[0]),
        header: None,
        l4: l4.map(|(kind, span)| L4Sum { kind, span }),
        inner: None,
        quoted_l4: None,
    })
}

/// The gateway's own addresses, which an ICMP error it generates comes from.
fn is_gateway_address(src: &[u8; 16]) -> bool {
    let v6 = Ipv6Addr::from(*src);
    [GW_WAN.to_ipv6_mapped(), GW_LAN.to_ipv6_mapped(), GW_WAN6, GW_LAN6].contains(&v6)
}

/// What became of a frame, for the statistics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Judged {
    Unchanged,
    /// Rewritten in place: translated, or forwarded unchanged but for the router hop.
    Rewritten,
    /// A new frame: an ICMP error from the gateway.
    Generated,
}

/// The checksums of a changed frame that were verified, for the statistics.
#[derive(Clone, Copy, Default)]
struct Verified {
    /// Found right.
    right: u64,
    /// Found wrong by exactly what the input's were.
    inherited: u64,
    l4: Option<L4Kind>,
    quoted: bool,
    quoted_l4: bool,
}

struct Failure {
    category: &'static str,
    detail: String,
}

fn fail<T>(category: &'static str, detail: impl Into<String>) -> Result<T, Failure> {
    Err(Failure { category, detail: detail.into() })
}

/// Checks one frame's action and output against its input (see the module doc).
fn judge(input: &[u8], action: u32, output: &[u8]) -> Result<(Judged, Verified), Failure> {
    let unchanged = Ok((Judged::Unchanged, Verified::default()));
    match action {
        XDP_ABORTED => fail("XDP_ABORTED", "the program aborted"),
        XDP_DROP if output == input => unchanged,
        XDP_DROP => fail("dropped frame changed", first_difference(input, output, 0)),
        XDP_PASS if output == input => unchanged,
        XDP_PASS | XDP_TX | XDP_REDIRECT => judge_changed(input, output, action != XDP_PASS),
        other => fail("unknown action", format!("the program returned {other}")),
    }
}

/// Checks one checksum of a changed frame: right, or off by exactly what `before` (the
/// same checksum in the input) was.
fn check_checksum(
    category: &'static str,
    (output, span): (&[u8], Span),
    (input, before): (&[u8], Option<Span>),
    verified: &mut Verified,
) -> Result<(), Failure> {
    let (before, after) = (error_of(input, before), span.error(output));
    if after == 0 {
        verified.right += 1;
        Ok(())
    } else if Some(after) == before {
        verified.inherited += 1;
        Ok(())
    } else {
        fail(category, format!("off by {after:#06x}, was {}", describe(before)))
    }
}

fn judge_changed(
    input: &[u8],
    output: &[u8],
    transmitted: bool,
) -> Result<(Judged, Verified), Failure> {
    let out = match parse(output) {
        Ok(out) => out,
        Err(e) => return fail("malformed output", e),
    };
    let inp = match parse(input) {
        Ok(inp) if !is_generated(input, &inp, output, &out) => inp,
        _ => return judge_generated(input, output, &out),
    };
    if out.ip_len != inp.ip_len {
        return fail("IP length changed", format!("{} bytes, then {}", inp.ip_len, out.ip_len));
    }
    let end = ETH_LEN + out.ip_len;
    if output[end..] != input[end..] {
        return fail("bytes after the IP packet changed", first_difference(input, output, end));
    }
    let mut verified = Verified::default();
    if let Some(span) = out.header {
        let category = "IPv4 header checksum broken";
        check_checksum(category, (output, span), (input, inp.header), &mut verified)?;
        let error = span.error(output);
        if error != 0 && transmitted {
            // RFC 1812 §5.2.2: a router MUST verify the header checksum and discard the
            // packet if it is wrong, as the kernel's ip_rcv does (InCsumErrors).
            return fail(
                "transmitted with a wrong IPv4 header checksum",
                format!("the header checksum came in off by {error:#06x} and went out so"),
            );
        }
    }
    if let Some(after) = out.l4 {
        let before = inp.l4.filter(|before| before.kind == after.kind);
        if before.is_none() {
            let was = inp.l4.map(|before| before.kind);
            return fail("L4 checksum changed kind", format!("{was:?}, then {:?}", after.kind));
        }
        if after.kind != L4Kind::UdpWithoutChecksum {
            let before = before.map(|before| before.span);
            let category = "L4 checksum broken";
            check_checksum(category, (output, after.span), (input, before), &mut verified)?;
        }
        verified.l4 = Some(after.kind);
    }
    if let Some(span) = out.inner {
        let category = "quoted IPv4 header checksum broken";
        check_checksum(category, (output, span), (input, inp.inner), &mut verified)?;
        verified.quoted = true;
    }
    if let (Some(before), Some(after)) = (inp.quoted_l4, out.quoted_l4) {
        let ((check_before, sum_before), (check_after, sum_after)) =
            (before.read(input), after.read(output));
        // A quoted UDP datagram without a checksum (0) keeps none.
        let broken = if before.udp && check_before == 0 {
            check_after != 0
        } else {
            sum_after != sum_before
        };
        if broken {
            return fail(
                "quoted L4 checksum broken",
                format!(
                    "{} checksum {check_before:#06x}, then {check_after:#06x}: not changed by \
                     what the quoted addresses and ports changed",
                    if before.udp { "UDP" } else { "TCP" }
                ),
            );
        }
        verified.quoted_l4 = true;
    }
    // A router takes one off the TTL of what it forwards, and forwards nothing whose TTL
    // expires; what it passes, the kernel forwards and decrements.
    let expected = match transmitted {
        true => inp.ttl.checked_sub(1).filter(|&ttl| ttl > 0),
        false => Some(inp.ttl),
    };
    if Some(out.ttl) != expected {
        let how = if transmitted { "transmitted" } else { "passed" };
        return fail("TTL", format!("{how} with TTL {}, which came in as {}", out.ttl, inp.ttl));
    }
    Ok((Judged::Rewritten, verified))
}

/// Whether the output is a frame of its own rather than the input rewritten: another
/// length, family, protocol or ICMP type, or from the gateway's own address.
fn is_generated(input: &[u8], inp: &Parsed, output: &[u8], out: &Parsed) -> bool {
    output.len() != input.len()
        || out.v6 != inp.v6
        || out.proto != inp.proto
        || out.icmp_type != inp.icmp_type
        || (out.src != inp.src && is_gateway_address(&out.src))
}

/// An ICMP error from the gateway: every checksum right, its length the frame's. Only the
/// quoted header may carry an error: the one the input's header came with.
fn judge_generated(
    input: &[u8],
    output: &[u8],
    out: &Parsed,
) -> Result<(Judged, Verified), Failure> {
    let frame_end = ETH_LEN + out.ip_len;
    // The frame may be padded to Ethernet's 60-byte minimum, nothing more.
    if frame_end != output.len() && !(output.len() == 60 && frame_end < 60) {
        return fail(
            "generated frame has trailing bytes",
            format!("IP length {} in a {}-byte frame", out.ip_len, output.len()),
        );
    }
    let category = "generated frame checksum";
    let mut verified = Verified::default();
    if let Some(span) = out.header {
        check_checksum(category, (output, span), (input, None), &mut verified)?;
    }
    if let Some(l4) = out.l4
        && l4.kind != L4Kind::UdpWithoutChecksum
    {
        check_checksum(category, (output, l4.span), (input, None), &mut verified)?;
        verified.l4 = Some(l4.kind);
    }
    if let Some(span) = out.inner {
        let quoted = parse(input).ok().and_then(|inp| inp.header);
        check_checksum(category, (output, span), (input, quoted), &mut verified)?;
        verified.quoted = true;
    }
    Ok((Judged::Generated, verified))
}

fn error_of(frame: &[u8], span: Option<Span>) -> Option<u16> {
    span.map(|span| span.error(frame))
}

fn describe(error: Option<u16>) -> String {
    match error {
        Some(0) => "right in the input".into(),
        Some(error) => format!("off by {error:#06x} in the input"),
        None => "not in the input".into(),
    }
}

/// Where `output` first differs from `input`, from byte `from` on.
fn first_difference(input: &[u8], output: &[u8], from: usize) -> String {
    match input.iter().zip(output).skip(from).position(|(a, b)| a != b) {
        Some(at) => format!("first difference at byte {}", from + at),
        None => format!("{} bytes, then {}", input.len(), output.len()),
    }
}

/// 16 bytes a line, with offsets.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "  {:04x}:", line * 16);
        for byte in chunk {
            let _ = write!(out, " {byte:02x}");
        }
        out.push('\n');
    }
    out
}

// --- The namespace, as in packet_table.rs -----------------------------------------------

// --- The run ----------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: not a number ({e})")))
}

/// Each frame's generator, from the run's seed and the frame's index alone.
fn frame_rng(seed: u64, iteration: u64) -> Rng {
    Rng::new(seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// What the run saw, printed at the end.
struct Tally {
    actions: [[u64; 6]; Kind::WEIGHTED.len()],
    judged: [u64; 3],
    mutated: u64,
    /// Over the changed frames: checksums found right, and found carrying the input's error.
    right: u64,
    inherited: u64,
    /// Changed frames whose L4 checksum was checked, by kind (as `L4Kind::ALL`).
    l4: [u64; 5],
    /// Changed frames whose quoted IPv4 header, and quoted L4 checksum, were checked.
    quoted: u64,
    quoted_l4: u64,
    failures: Vec<(&'static str, u64)>,
}

impl Tally {
    fn count(&mut self, judged: Judged, verified: Verified) {
        self.judged[judged as usize] += 1;
        self.right += verified.right;
        self.inherited += verified.inherited;
        if let Some(kind) = verified.l4 {
            self.l4[kind as usize] += 1;
        }
        self.quoted += u64::from(verified.quoted);
        self.quoted_l4 += u64::from(verified.quoted_l4);
    }

    /// Counts a failure; true for the first few of its kind, which are shown in full.
    fn count_failure(&mut self, category: &'static str) -> bool {
        let count = match self.failures.iter_mut().find(|(c, _)| *c == category) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                self.failures.push((category, 1));
                1
            }
        };
        count <= FAILURES_SHOWN
    }

    fn print(&self) {
        let mut table = String::from("frames by kind and action:\n");
        let _ = writeln!(
            table,
            "  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "ABORTED", "DROP", "PASS", "TX", "REDIRECT", "other"
        );
        for ((kind, _), row) in Kind::WEIGHTED.iter().zip(&self.actions) {
            let _ = write!(table, "  {:<14}", format!("{kind:?}"));
            for count in row {
                let _ = write!(table, "{count:>10}");
            }
            table.push('\n');
        }
        let totals: Vec<u64> =
            (0..6).map(|a| self.actions.iter().map(|row| row[a]).sum()).collect();
        let _ = writeln!(
            table,
            "  {:<14}{}",
            "all",
            totals.iter().map(|c| format!("{c:>10}")).collect::<String>()
        );
        let [unchanged, rewritten, generated] = self.judged;
        let _ = writeln!(
            table,
            "outputs: {unchanged} unchanged, {rewritten} rewritten in place, {generated} \
             generated by the gateway; {} of the inputs mutated",
            self.mutated
        );
        let l4: Vec<String> =
            L4Kind::ALL.iter().zip(self.l4).map(|(kind, n)| format!("{kind:?} {n}")).collect();
        let _ = writeln!(
            table,
            "checksums of changed frames: {} right, {} wrong as they came in; L4 checked: {}; \
             quoted IPv4 headers checked: {}, quoted L4 checksums: {}",
            self.right,
            self.inherited,
            l4.join(", "),
            self.quoted,
            self.quoted_l4
        );
        eprint!("{table}");
    }
}

/// Shows a failed frame with what it takes to run it again.
fn report(
    (seed, iteration): (u64, u64),
    case: &Case,
    mutations: &str,
    action: u32,
    failure: &Failure,
    input: &[u8],
    output: &[u8],
) {
    eprintln!(
        "\nFAILURE: {}: {}\n  seed {seed:#x}, frame {iteration} (replay: EIPGW_SEED={seed:#x} \
         EIPGW_FUZZ_ITERATION={iteration})\n  {:?} into {:?}, mutations:{}\n  action {}\n\
         input ({} bytes):\n{}output ({} bytes):\n{}",
        failure.category,
        failure.detail,
        case.kind,
        case.ingress,
        if mutations.is_empty() { " none" } else { mutations },
        ACTION_NAMES.get(action as usize).copied().unwrap_or("none (the run failed)"),
        input.len(),
        hex(input),
        output.len(),
        hex(output),
    );
}

#[test]
fn a_million_random_frames() {
    require_root();
    let seed = env_u64("EIPGW_SEED").unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970");
        (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
    });
    let only = env_u64("EIPGW_FUZZ_ITERATION");
    let iterations = env_u64("EIPGW_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS);
    let range = match only {
        Some(n) => n..n + 1,
        None => 0..iterations,
    };
    eprintln!(
        "fuzz: seed {seed:#018x}, frames {range:?} (replay with EIPGW_SEED={seed:#x}, one frame \
         with EIPGW_FUZZ_ITERATION=<n>)"
    );

    let suffix = unique_suffix();
    // Made before the namespace, so dropped after it (see packet_table.rs).
    let bpffs = Mount::bpffs(&std::env::temp_dir().join(format!("eipgw-fz-{suffix}")))
        .expect("mounting a bpffs");
    let ns = gateway_netns("eipgw-fz", &suffix);
    let macs = Macs { wan: mac_of(&ns, WAN_IF), lan: mac_of(&ns, LAN_IF) };
    let options = DataplaneOptions {
        wan: WAN_IF.into(),
        lan: LAN_IF.into(),
        bpffs: bpffs.path().to_owned(),
        xdp_mode: XdpMode::Driver,
        max_mappings: 1024,
        snat: eipgw_common::SnatConfig::DEFAULT,
    };

    // One thread in the namespace runs every frame: ctx_in's ifindex is resolved in the
    // caller's namespace, and bpf_fib_lookup routes in the device's.
    let tally = ns
        .run_in(|| {
            let mut dataplane = Dataplane::open(&options).expect("opening the data plane");
            dataplane.reconcile(&desired_maps()).expect("writing the EIP maps");
            let program = dataplane.program().expect("the loaded program");
            let (wan, lan) = (ifindex(WAN_IF), ifindex(LAN_IF));
            let verdicts_before = dataplane.verdict_counters().expect("reading the verdicts");
            let mut tally = Tally {
                actions: [[0; 6]; Kind::WEIGHTED.len()],
                judged: [0; 3],
                mutated: 0,
                right: 0,
                inherited: 0,
                l4: [0; 5],
                quoted: 0,
                quoted_l4: 0,
                failures: Vec::new(),
            };
            let mut frame = Vec::with_capacity(OUTPUT_CAPACITY);
            let mut original = Vec::with_capacity(OUTPUT_CAPACITY);
            let mut output = vec![0; OUTPUT_CAPACITY];
            let mut log = String::new();
            let started = Instant::now();
            for iteration in range.clone() {
                let mut rng = frame_rng(seed, iteration);
                frame.clear();
                log.clear();
                let case = generate(&mut rng, &macs, &mut frame);
                if only.is_some() {
                    original.clone_from(&frame);
                }
                mutate(&mut rng, &mut frame, case.layout, &mut log);
                if !log.is_empty() {
                    tally.mutated += 1;
                }
                let ingress = match case.ingress {
                    Ingress::Wan => wan,
                    Ingress::Lan => lan,
                };
                let ctx = xdp_md(frame.len(), ingress);
                let result = program.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut output),
                    ctx_in: Some(&ctx),
                    repeat: 1,
                    ..Default::default()
                });
                let (action, out_len, verdict) = match result {
                    Ok(result) => {
                        let out_len = result.data_size_out as usize;
                        let verdict = judge(&frame, result.return_value, &output[..out_len]);
                        (result.return_value, out_len, verdict)
                    }
                    Err(e) => (u32::MAX, 0, fail("BPF_PROG_TEST_RUN failed", e.to_string())),
                };
                tally.actions[case.kind.index()][(action as usize).min(5)] += 1;
                match verdict {
                    Ok((judged, verified)) => tally.count(judged, verified),
                    Err(failure) => {
                        if tally.count_failure(failure.category) || only.is_some() {
                            let run = (seed, iteration);
                            report(run, &case, &log, action, &failure, &frame, &output[..out_len]);
                        }
                    }
                }
                if only.is_some() {
                    eprintln!(
                        "frame {iteration}: {:?} into {:?}, mutations:{log}, action {action}\n\
                         generated ({} bytes):\n{}sent ({} bytes):\n{}",
                        case.kind,
                        case.ingress,
                        original.len(),
                        hex(&original),
                        frame.len(),
                        hex(&frame)
                    );
                }
                let done = iteration - range.start + 1;
                if done % 200_000 == 0 {
                    eprintln!("fuzz: {done} frames in {:.1?}", started.elapsed());
                }
            }
            let elapsed = started.elapsed();
            let frames = range.end - range.start;
            eprintln!(
                "fuzz: {frames} frames in {elapsed:.1?} ({:.1} µs a frame)",
                elapsed.as_secs_f64() * 1e6 / frames as f64
            );
            let verdicts_after = dataplane.verdict_counters().expect("reading the verdicts");
            let moved: Vec<String> = verdicts_before
                .iter()
                .zip(&verdicts_after)
                .filter(|((_, b), (_, a))| a != b)
                .map(|((verdict, b), (_, a))| format!("{} {}", verdict.name(), a - b))
                .collect();
            eprintln!("verdict counters: {}", moved.join(", "));
            tally
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    tally.print();
    assert!(
        tally.failures.is_empty(),
        "seed {seed:#x}: frames failed (the first {FAILURES_SHOWN} of each kind are above): {:?}",
        tally.failures
    );
}

/// The builder makes valid frames and `checksum_error` agrees with etherparse's header
/// types: on unmutated frames, every checksum etherparse computes is the one carried, and
/// `parse` finds none off. No root needed.
#[test]
fn builder_frames_are_valid() {
    let macs = Macs { wan: [2, 0, 0, 0, 0, 0xfe], lan: [2, 0, 0, 0, 0, 0xfd] };
    let mut frame = Vec::new();
    let mut checked = [0u64; 5];
    for iteration in 0..20_000 {
        let mut rng = frame_rng(0x5eed, iteration);
        frame.clear();
        let case = generate(&mut rng, &macs, &mut frame);
        if case.layout.ip != Some(ETH_LEN) {
            continue;
        }
        let context = || format!("frame {iteration}, {:?}:\n{}", case.kind, hex(&frame));
        let parsed = parse(&frame).unwrap_or_else(|e| panic!("{e}: {}", context()));
        let l4 = parsed.l4.filter(|l4| l4.kind != L4Kind::UdpWithoutChecksum);
        for span in [parsed.header, parsed.inner, l4.map(|l4| l4.span)].into_iter().flatten() {
            assert_eq!(span.error(&frame), 0, "{span:?} is off: {}", context());
        }
        let sliced =
            SlicedPacket::from_ethernet(&frame).unwrap_or_else(|e| panic!("{e}: {}", context()));
        let (source, destination) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => {
                let header = ip.header().to_header();
                assert_eq!(header.header_checksum, header.calc_header_checksum(), "{}", context());
                checked[0] += 1;
                let mapped = |a: [u8; 4]| Ipv4Addr::from(a).to_ipv6_mapped().octets();
                (mapped(header.source), mapped(header.destination))
            }
            Some(NetSlice::Ipv6(ip)) => (ip.header().source(), ip.header().destination()),
            other => panic!("not IP: {other:?}: {}", context()),
        };
        let v4 = |a: [u8; 16]| -> [u8; 4] { a[12..].try_into().expect("4 bytes") };
        match (&sliced.net, &sliced.transport) {
            (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Tcp(tcp))) => {
                let computed = tcp
                    .to_header()
                    .calc_checksum_ipv4_raw(v4(source), v4(destination), tcp.payload())
                    .expect("a TCP checksum");
                assert_eq!(tcp.checksum(), computed, "{}", context());
                checked[1] += 1;
            }
            (Some(NetSlice::Ipv6(_)), Some(TransportSlice::Tcp(tcp))) => {
                let computed = tcp
                    .to_header()
                    .calc_checksum_ipv6_raw(source, destination, tcp.payload())
                    .expect("a TCP checksum");
                assert_eq!(tcp.checksum(), computed, "{}", context());
                checked[1] += 1;
            }
            (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Udp(udp))) if udp.checksum() != 0 => {
                let computed = udp
                    .to_header()
                    .calc_checksum_ipv4_raw(v4(source), v4(destination), udp.payload())
                    .expect("a UDP checksum");
                assert_eq!(udp.checksum(), computed, "{}", context());
                checked[2] += 1;
            }
            (Some(NetSlice::Ipv6(_)), Some(TransportSlice::Udp(udp))) => {
                let computed = udp
                    .to_header()
                    .calc_checksum_ipv6_raw(source, destination, udp.payload())
                    .expect("a UDP checksum");
                assert_eq!(udp.checksum(), computed, "{}", context());
                checked[2] += 1;
            }
            (_, Some(TransportSlice::Icmpv4(icmp))) => {
                let computed =
                    Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload()).checksum;
                assert_eq!(icmp.checksum(), computed, "{}", context());
                checked[3] += 1;
            }
            (_, Some(TransportSlice::Icmpv6(icmp))) => {
                assert!(icmp.is_checksum_valid(source, destination), "{}", context());
                checked[4] += 1;
            }
            _ => {}
        }
    }
    // Each check ran on plenty of frames.
    assert!(
        checked.iter().all(|&n| n > 500),
        "checked [IPv4, TCP, UDP, ICMP, ICMPv6]: {checked:?}"
    );
}
