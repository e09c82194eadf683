//! The XDP program as a packet table. Each row is one frame run through BPF_PROG_TEST_RUN
//! against the real program, loaded and attached by `Dataplane` with maps written by
//! `reconcile`, and states the action it must return, the frame it must leave behind (built
//! independently with etherparse and compared byte for byte) and the one verdict counter
//! it must move.
//!
//! The program routes with `bpf_fib_lookup`, which consults the tables of the namespace the
//! ingress device lives in, so the rows run in a namespace laid out like a gateway, with
//! static neighbours whose MACs the rows know:
//!
//! ```text
//!  wanp ─── wan0 198.51.100.2/24  [eipgw-pt-*]  lan0 10.0.1.1/24 ─────────── lanp
//!                2001:db8:100::2/64                  2001:db8:1::1/64
//!   default via 198.51.100.1                    10.0.1.10 at 02:00:00:00:00:0a
//!   192.0.2.1/32 via 198.51.100.3               10.0.1.20 at 02:00:00:00:00:14
//!   default via 2001:db8:100::1                 10.0.1.21 at 02:00:00:00:00:15
//!   198.51.100.1 at 02:00:00:00:00:01           2001:db8:1::10 at 02:00:00:00:00:0a
//!   2001:db8:100::1 at 02:00:00:00:00:01        2001:db8:1::11 at 02:00:00:00:00:0b
//!   198.51.100.3 with no neighbour entry        10.0.1.98, 10.0.1.99, 2001:db8:1::12
//!   192.0.2.200/32 via 198.51.100.1             with no neighbour entry
//!     mtu lock 1280                             2001:db8:1::13/128 dev lan0 mtu lock 1280
//!                                               10.0.1.13/32 dev lan0 mtu lock 1280
//!                                               10.0.1.40 to .43 (NAT gateway) at
//!                                               02:00:00:00:00:28 to :2b
//! ```
//!
//! The gateway's own addresses, 198.51.100.2 and 10.0.1.1, are where the ICMP errors it
//! sends as a router come from; the test writes them into the CONFIG map itself.
//!
//! `reconcile` adds the routes of the visible-mode EIPs itself (`203.0.113.20/32 via
//! 10.0.1.20 dev lan0` and so on).
//!
//! The NAT gateway (issue 5) has tables of its own, each on a data plane of its own: DNAT
//! and SNAT rows that run in order, since a SNAT row depends on the sessions the rows
//! before it made (`nat_table`), and a two-port range that runs out
//! (`snat_port_exhaustion`).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    panic::{self, AssertUnwindSafe},
};

use aya::{
    maps::{Array, MapData},
    programs::{TestRun as _, TestRunOptions, XdpMode},
};
use eipgw::dataplane::{Dataplane, DataplaneOptions, monotonic_now_ns};
use eipgw_common::{
    EipCounters, GatewayConfig, ICMP_ERROR_BURST, ICMP_ERRORS_PER_SECOND, MAP_CONFIG, PIN_DIR_NAME,
    SnatConfig, Verdict, bandwidth, ipv4_key,
};
use eipgw_tests::gateway_ns::*;
use eipgw_tests::{Mount, Netns, require_root, unique_suffix};
use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type,
    IpDscp, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header, TcpHeader,
    UdpHeader,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};

/// Another address of [`VM`]'s subnet, without an EIP: what an ICMP error about someone
/// else's flow names.
const VM_OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);

/// A link-local address of the Internet host.
const INTERNET_HOST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Header sizes and the field offsets the malformed rows corrupt.
const ETH_LEN: usize = 14;
const ETHER_TYPE: usize = 12;
const IPV4_LEN: usize = 20;
const IPV4_VERSION_IHL: usize = 0;
const IPV6_PAYLOAD_LENGTH: usize = 4;
const TCP_DATA_OFFSET: usize = 12;
const UDP_LENGTH: usize = 4;

/// NOP, NOP, NOP, end of options (RFC 791): IHL 6, so the L4 header starts at byte 24.
const IPV4_OPTIONS: [u8; 4] = [1, 1, 1, 0];
/// RFC 792: an ICMP error quotes the IPv4 header and (at least) the first 8 bytes after it.
const QUOTED_L4_BYTES: usize = 8;
/// TTL of a packet that crossed one router on the way to the host that quotes it.
const TTL_AT_HOST: u8 = 63;

const TCP_DATA: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const UDP_DATA: &[u8] = b"a DNS query, or close enough";
const ICMP_DATA: &[u8] = b"ping payload 0123456789";
/// The identifier of every ICMP echo of the 1:1 NAT rows.
const ECHO_ID: u16 = 0x1234;
/// Larger than [`SMALL_MTU`] once in a packet.
const LARGE_DATA: &[u8] = &[0x5a; 1300];
/// The UDP datagram that [`L4::UdpFirstFragment`] and [`L4::UdpLastFragment`] split.
const FRAGMENTED_DATA: &[u8; 40] = b"fragmented datagram, forty bytes of it..";
/// How much of [`FRAGMENTED_DATA`] the first fragment carries: with the 8-byte UDP header
/// its payload is 24 bytes, a multiple of 8 as every fragment but the last (RFC 791).
const FIRST_FRAGMENT_DATA: usize = 16;
const FRAGMENT_ID: u16 = 0x4d2e;
/// Traffic class and flow label of every IPv6 row: non-zero, so that the byte comparison
/// shows that the gateway leaves them alone.
const IPV6_TRAFFIC_CLASS: u8 = 0x28;
const IPV6_FLOW_LABEL: u32 = 0x5_4321;

/// The link and IPv4 fields that the gateway reads or rewrites. A row describes its input
/// with one and derives the expected output by changing exactly the fields the gateway is
/// meant to change, so every other byte is checked to stay as it was.
#[derive(Clone, Copy, Debug)]
struct Hdr {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    /// IPv4 options, a multiple of 4 bytes.
    options: &'static [u8],
}

/// What follows the IPv4 header (payloads are fixed per kind).
#[derive(Clone, Copy, Debug)]
enum L4 {
    TcpSyn,
    /// The answer to a SYN: SYN|ACK.
    TcpSynAck,
    /// ACK|PSH with data.
    TcpData,
    Udp,
    /// UDP with [`LARGE_DATA`] (and DF set, as on every unfragmented row).
    UdpLarge,
    /// The same without DF: a router may fragment it.
    UdpLargeMayFragment,
    /// UDP sent without a checksum (0, which RFC 768 allows over IPv4).
    UdpWithoutChecksum,
    /// The answer to [`L4::Udp`]: the ports the other way round.
    UdpReply,
    IcmpEchoRequest,
    IcmpEchoReply,
    /// The first fragment of [`FRAGMENTED_DATA`] (MF set, offset 0): the UDP header, whose
    /// length and checksum cover the whole datagram, and the first bytes of data.
    UdpFirstFragment,
    /// The rest of [`FRAGMENTED_DATA`] (MF clear, offset 3): data only, no UDP header.
    UdpLastFragment,
}

/// The ports of a TCP or UDP header; for an ICMP echo, `src` is the identifier (what a NAT
/// translates like the source port of a request and the destination port of its reply)
/// and `dst` is unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    src: u16,
    dst: u16,
}

const fn ports(src: u16, dst: u16) -> Ports {
    Ports { src, dst }
}

impl L4 {
    /// The ports of the 1:1 NAT rows, which never change them.
    fn ports(self) -> Ports {
        match self {
            L4::TcpSyn | L4::TcpSynAck => ports(40_000, 443),
            L4::TcpData => ports(40_001, 80),
            L4::UdpReply => ports(53, 5353),
            L4::IcmpEchoRequest | L4::IcmpEchoReply => ports(ECHO_ID, 0),
            L4::Udp
            | L4::UdpLarge
            | L4::UdpLargeMayFragment
            | L4::UdpWithoutChecksum
            | L4::UdpFirstFragment
            | L4::UdpLastFragment => ports(5353, 53),
        }
    }

    /// Where the field a NAT translates as the source port sits in a frame without IPv4
    /// options: the TCP or UDP source port, or the echo identifier.
    fn port_offset(self) -> usize {
        match self {
            L4::IcmpEchoRequest | L4::IcmpEchoReply => ETH_LEN + IPV4_LEN + 4,
            _ => ETH_LEN + IPV4_LEN,
        }
    }
}

/// Builds an Ethernet + IPv4 frame with every checksum computed by etherparse.
fn frame(hdr: Hdr, l4: L4) -> Vec<u8> {
    frame_with(hdr, l4, l4.ports())
}

/// [`frame`] with the ports (or echo identifier) of `ports`.
fn frame_with(hdr: Hdr, l4: L4, ports: Ports) -> Vec<u8> {
    let (src, dst) = (hdr.src.octets(), hdr.dst.octets());
    let (protocol, l4_bytes) = match l4 {
        L4::TcpSyn => {
            let mut tcp = TcpHeader::new(ports.src, ports.dst, 0x1000_0000, 64_240);
            tcp.syn = true;
            (IpNumber::TCP, tcp_segment(tcp, src, dst, &[]))
        }
        L4::TcpSynAck => {
            let mut tcp = TcpHeader::new(ports.src, ports.dst, 0x5000_0000, 65_160);
            tcp.acknowledgment_number = 0x1000_0001;
            tcp.syn = true;
            tcp.ack = true;
            (IpNumber::TCP, tcp_segment(tcp, src, dst, &[]))
        }
        L4::TcpData => {
            let mut tcp = TcpHeader::new(ports.src, ports.dst, 0x2000_0001, 502);
            tcp.acknowledgment_number = 0x3000_0001;
            tcp.ack = true;
            tcp.psh = true;
            (IpNumber::TCP, tcp_segment(tcp, src, dst, TCP_DATA))
        }
        L4::Udp | L4::UdpReply => (IpNumber::UDP, udp_datagram(ports, src, dst, UDP_DATA, true)),
        L4::UdpLarge | L4::UdpLargeMayFragment => {
            (IpNumber::UDP, udp_datagram(ports, src, dst, LARGE_DATA, true))
        }
        L4::UdpWithoutChecksum => (IpNumber::UDP, udp_datagram(ports, src, dst, UDP_DATA, false)),
        L4::IcmpEchoRequest => (IpNumber::ICMP, icmp_echo(Icmpv4Type::EchoRequest, ports.src)),
        L4::IcmpEchoReply => (IpNumber::ICMP, icmp_echo(Icmpv4Type::EchoReply, ports.src)),
        L4::UdpFirstFragment => {
            let whole = udp_datagram(ports, src, dst, FRAGMENTED_DATA, true);
            (IpNumber::UDP, whole[..UdpHeader::LEN + FIRST_FRAGMENT_DATA].to_vec())
        }
        L4::UdpLastFragment => (IpNumber::UDP, FRAGMENTED_DATA[FIRST_FRAGMENT_DATA..].to_vec()),
    };
    let mut ip = Ipv4Header::new(0, hdr.ttl, protocol, src, dst).expect("an IPv4 header");
    ip.options = Ipv4Options::try_from(hdr.options).expect("options: 4-byte multiple, <= 40");
    match l4 {
        L4::UdpFirstFragment => {
            ip.identification = FRAGMENT_ID;
            ip.dont_fragment = false;
            ip.more_fragments = true;
        }
        L4::UdpLargeMayFragment => ip.dont_fragment = false,
        L4::UdpLastFragment => {
            ip.identification = FRAGMENT_ID;
            ip.dont_fragment = false;
            let offset = (UdpHeader::LEN + FIRST_FRAGMENT_DATA) / 8;
            ip.fragment_offset = IpFragOffset::try_new(offset as u16).expect("a fragment offset");
        }
        _ => {}
    }
    ip.set_payload_len(l4_bytes.len()).expect("an IPv4 payload length");

    let eth = Ethernet2Header {
        source: hdr.eth_src,
        destination: hdr.eth_dst,
        ether_type: EtherType::IPV4,
    };
    let mut out = eth.to_bytes().to_vec();
    ip.write(&mut out).expect("writing to a Vec"); // `write` computes the header checksum
    out.extend_from_slice(&l4_bytes);
    out
}

fn tcp_segment(mut tcp: TcpHeader, src: [u8; 4], dst: [u8; 4], data: &[u8]) -> Vec<u8> {
    tcp.checksum = tcp.calc_checksum_ipv4_raw(src, dst, data).expect("a TCP checksum");
    let mut out = tcp.to_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn udp_datagram(
    ports: Ports,
    src: [u8; 4],
    dst: [u8; 4],
    data: &[u8],
    with_checksum: bool,
) -> Vec<u8> {
    let mut udp =
        UdpHeader::without_ipv4_checksum(ports.src, ports.dst, data.len()).expect("a UDP header");
    if with_checksum {
        udp.checksum = udp.calc_checksum_ipv4_raw(src, dst, data).expect("a UDP checksum");
    }
    let mut out = udp.to_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn icmp_echo(kind: fn(IcmpEchoHeader) -> Icmpv4Type, id: u16) -> Vec<u8> {
    let icmp = Icmpv4Header::with_checksum(kind(IcmpEchoHeader { id, seq: 7 }), ICMP_DATA);
    let mut out = icmp.to_bytes().to_vec();
    out.extend_from_slice(ICMP_DATA);
    out
}

fn port_unreachable() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
}

fn ttl_exceeded() -> Icmpv4Type {
    Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
}

fn fragmentation_needed(next_hop_mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu })
}

/// The IPv4 packet of [`frame`] without its Ethernet header: what an ICMP error quotes.
fn ip_packet(hdr: Hdr, l4: L4) -> Vec<u8> {
    ip_packet_with(hdr, l4, l4.ports())
}

/// [`ip_packet`] with the ports of `ports`.
fn ip_packet_with(hdr: Hdr, l4: L4, ports: Ports) -> Vec<u8> {
    frame_with(hdr, l4, ports)[ETH_LEN..].to_vec()
}

/// The first `len` bytes of `packet`, as the sender of an ICMP error may cut its quote.
fn cut(mut packet: Vec<u8>, len: usize) -> Vec<u8> {
    packet.truncate(len);
    packet
}

/// An Ethernet + IPv4 frame carrying an ICMP error of `kind` that quotes `quote`, with every
/// checksum computed by etherparse.
fn icmp_error(hdr: Hdr, kind: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Header::with_checksum(kind, quote);
    let (src, dst) = (hdr.src.octets(), hdr.dst.octets());
    let mut ip = Ipv4Header::new(0, hdr.ttl, IpNumber::ICMP, src, dst).expect("an IPv4 header");
    ip.options = Ipv4Options::try_from(hdr.options).expect("options: 4-byte multiple, <= 40");
    ip.set_payload_len(icmp.header_len() + quote.len()).expect("an IPv4 payload length");
    let eth = Ethernet2Header {
        source: hdr.eth_src,
        destination: hdr.eth_dst,
        ether_type: EtherType::IPV4,
    };
    let mut out = eth.to_bytes().to_vec();
    ip.write(&mut out).expect("writing to a Vec");
    out.extend_from_slice(&icmp.to_bytes());
    out.extend_from_slice(quote);
    out
}

/// The ICMP error the gateway sends as a router about the frame `input`: from its address
/// `from` back to the sender over the link the frame came from (the MACs swapped), with
/// precedence 6 (CS6, RFC 1812 §4.3.2.5), TTL 64, DF set and ID 0 (an atomic datagram, RFC
/// 6864), quoting the packet as it arrived: its IPv4 header and the 8 bytes after it.
fn router_error(input: &[u8], from: Ipv4Addr, kind: Icmpv4Type) -> Vec<u8> {
    let (eth, _) = Ethernet2Header::from_slice(input).expect("an Ethernet header");
    let (ip, _) = Ipv4Header::from_slice(&input[ETH_LEN..]).expect("an IPv4 header");
    let quote_len = (ip.header_len() + QUOTED_L4_BYTES).min(usize::from(ip.total_len));
    let quote = &input[ETH_LEN..ETH_LEN + quote_len];
    let icmp = Icmpv4Header::with_checksum(kind, quote);
    let mut error =
        Ipv4Header::new(0, 64, IpNumber::ICMP, from.octets(), ip.source).expect("an IPv4 header");
    error.dscp = IpDscp::CS6;
    error.set_payload_len(icmp.header_len() + quote.len()).expect("an IPv4 payload length");
    let eth = Ethernet2Header {
        source: eth.destination,
        destination: eth.source,
        ether_type: EtherType::IPV4,
    };
    let mut out = eth.to_bytes().to_vec();
    error.write(&mut out).expect("writing to a Vec");
    out.extend_from_slice(&icmp.to_bytes());
    out.extend_from_slice(quote);
    out
}

/// A frame whose IPv4 payload is `payload` bytes of IP protocol 253 (RFC 3692, for
/// experiments): a protocol the gateway knows nothing of, with a length of its choosing.
fn experimental_frame(hdr: Hdr, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (hdr.src.octets(), hdr.dst.octets());
    let mut ip = Ipv4Header::new(0, hdr.ttl, IpNumber(253), src, dst).expect("an IPv4 header");
    ip.set_payload_len(payload.len()).expect("an IPv4 payload length");
    let eth = Ethernet2Header {
        source: hdr.eth_src,
        destination: hdr.eth_dst,
        ether_type: EtherType::IPV4,
    };
    let mut out = eth.to_bytes().to_vec();
    ip.write(&mut out).expect("writing to a Vec");
    out.extend_from_slice(payload);
    out
}

/// The IPv6 fields that the gateway reads or rewrites, as [`Hdr`] for IPv4.
#[derive(Clone, Copy, Debug)]
struct Hdr6 {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
}

/// What follows the IPv6 header.
#[derive(Clone, Copy, Debug)]
enum L4v6 {
    TcpSyn,
    Udp,
    /// UDP with [`LARGE_DATA`].
    UdpLarge,
    EchoRequest,
    /// A neighbour solicitation for [`GW_WAN6`] (RFC 4861 §4.3), with the source link-layer
    /// address option unless the source is unspecified (duplicate address detection).
    NeighbourSolicitation,
}

/// Builds an Ethernet + IPv6 frame with every checksum computed by etherparse.
fn frame6(hdr: Hdr6, l4: L4v6) -> Vec<u8> {
    let (src, dst) = (hdr.src.octets(), hdr.dst.octets());
    let (protocol, l4_bytes) = match l4 {
        L4v6::TcpSyn => {
            let mut tcp = TcpHeader::new(40_002, 443, 0x4000_0000, 64_800);
            tcp.syn = true;
            tcp.checksum = tcp.calc_checksum_ipv6_raw(src, dst, &[]).expect("a TCP checksum");
            (IpNumber::TCP, tcp.to_bytes().to_vec())
        }
        L4v6::Udp | L4v6::UdpLarge => {
            let data = if let L4v6::Udp = l4 { UDP_DATA } else { LARGE_DATA };
            let mut udp =
                UdpHeader::without_ipv4_checksum(5353, 53, data.len()).expect("a UDP header");
            udp.checksum = udp.calc_checksum_ipv6_raw(src, dst, data).expect("a UDP checksum");
            let mut out = udp.to_bytes().to_vec();
            out.extend_from_slice(data);
            (IpNumber::UDP, out)
        }
        L4v6::EchoRequest => {
            let kind = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 0x5678, seq: 9 });
            (IpNumber::IPV6_ICMP, icmpv6(kind, src, dst, ICMP_DATA))
        }
        L4v6::NeighbourSolicitation => {
            let mut body = GW_WAN6.octets().to_vec();
            if !hdr.src.is_unspecified() {
                // Option type 1 (source link-layer address), length 1 (8 bytes).
                body.extend_from_slice(&[1, 1]);
                body.extend_from_slice(&hdr.eth_src);
            }
            (IpNumber::IPV6_ICMP, icmpv6(Icmpv6Type::NeighborSolicitation, src, dst, &body))
        }
    };
    let ip = Ipv6Header {
        traffic_class: IPV6_TRAFFIC_CLASS,
        flow_label: Ipv6FlowLabel::try_new(IPV6_FLOW_LABEL).expect("a 20-bit flow label"),
        payload_length: l4_bytes.len().try_into().expect("an IPv6 payload length"),
        next_header: protocol,
        hop_limit: hdr.hop_limit,
        source: src,
        destination: dst,
    };
    let eth = Ethernet2Header {
        source: hdr.eth_src,
        destination: hdr.eth_dst,
        ether_type: EtherType::IPV6,
    };
    let mut out = eth.to_bytes().to_vec();
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&l4_bytes);
    out
}

fn icmpv6(kind: Icmpv6Type, src: [u8; 16], dst: [u8; 16], body: &[u8]) -> Vec<u8> {
    let icmp = Icmpv6Header::with_checksum(kind, src, dst, body).expect("an ICMPv6 checksum");
    let mut out = icmp.to_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7).
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast group of an address: its last 24 bits in ff02::1:ff00:0/104
/// (RFC 4291 §2.7.1).
fn solicited_node(address: Ipv6Addr) -> Ipv6Addr {
    let prefix = u128::from(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0));
    Ipv6Addr::from(prefix | (u128::from(address) & 0xff_ffff))
}

/// `frame` with its IPv4 header edited and the header checksum recomputed, so that the
/// edit is the only thing wrong with it.
fn edit_ipv4(mut frame: Vec<u8>, edit: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut ip, _) = Ipv4Header::from_slice(&frame[ETH_LEN..]).expect("a valid IPv4 header");
    edit(&mut ip);
    ip.header_checksum = ip.calc_header_checksum();
    let bytes = ip.to_bytes();
    frame[ETH_LEN..ETH_LEN + bytes.len()].copy_from_slice(&bytes);
    frame
}

/// `frame` with `bytes` written at `offset`: for header fields etherparse refuses to build.
fn patch(mut frame: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
    frame[offset..offset + bytes.len()].copy_from_slice(bytes);
    frame
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ingress {
    Wan,
    Lan,
}

/// What the frame must look like after the program ran.
enum Output {
    /// Exactly as it came in: a drop, or a pass that leaves the frame to the kernel as is.
    Unchanged,
    /// Rewritten (addresses, TTL or hop limit, link addresses): compared byte for byte, and
    /// its checksums recomputed by etherparse.
    Rewritten(Vec<u8>),
}

/// One frame through the program and everything it must produce.
struct Row {
    name: &'static str,
    ingress: Ingress,
    input: Vec<u8>,
    /// The XDP action the program returns.
    action: u32,
    output: Output,
    /// The verdict counter that must go up by one (and no other may move).
    verdict: Verdict,
    /// The EIP whose counters must count the frame (inbound from the WAN, outbound from the
    /// LAN: one packet, its IPv4 total length in bytes; for [`Verdict::SnatRefused`], one
    /// refused packet); no other EIP's may move.
    counted_eip: Option<Ipv4Addr>,
}

/// A translated frame forwarded to the other interface.
fn forwarded(name: &'static str, ingress: Ingress, l4: L4, input: Hdr, output: Hdr) -> Row {
    forwarded_with(name, ingress, l4, (input, l4.ports()), (output, l4.ports()))
}

/// [`forwarded`] with the ports (or echo identifier) of each side: a frame whose ports the
/// gateway translates too.
fn forwarded_with(
    name: &'static str,
    ingress: Ingress,
    l4: L4,
    (input, input_ports): (Hdr, Ports),
    (output, output_ports): (Hdr, Ports),
) -> Row {
    let eip = match ingress {
        Ingress::Wan => input.dst,
        Ingress::Lan => output.src,
    };
    Row {
        name,
        ingress,
        input: frame_with(input, l4, input_ports),
        action: XDP_REDIRECT,
        output: Output::Rewritten(frame_with(output, l4, output_ports)),
        verdict: Verdict::Translated,
        counted_eip: Some(eip),
    }
}

/// A frame of a visible-mode EIP forwarded to the other interface: only the TTL and the
/// link addresses change.
fn forwarded_unchanged(
    name: &'static str,
    ingress: Ingress,
    l4: L4,
    input: Hdr,
    output: Hdr,
) -> Row {
    assert!((input.src, input.dst) == (output.src, output.dst), "{name}: addresses changed");
    Row { verdict: Verdict::ForwardedUnchanged, ..forwarded(name, ingress, l4, input, output) }
}

/// An IPv6 frame forwarded to the other interface: only the hop limit and the link
/// addresses change, and no EIP counts it.
fn forwarded6(name: &'static str, ingress: Ingress, l4: L4v6, input: Hdr6, output: Hdr6) -> Row {
    assert!((input.src, input.dst) == (output.src, output.dst), "{name}: addresses changed");
    Row {
        name,
        ingress,
        input: frame6(input, l4),
        action: XDP_REDIRECT,
        output: Output::Rewritten(frame6(output, l4)),
        verdict: Verdict::ForwardedUnchanged,
        counted_eip: None,
    }
}

/// An ICMP error crossing the gateway: the outer header translated as any frame's, and the
/// quoted packet from `quote_in` to `quote_out` (built independently), with the quoted
/// IPv4 and L4 checksums and the ICMP checksum fixed.
fn translated_error(
    name: &'static str,
    ingress: Ingress,
    (input, output): (Hdr, Hdr),
    kind: Icmpv4Type,
    quote_in: &[u8],
    quote_out: &[u8],
) -> Row {
    let eip = match ingress {
        Ingress::Wan => input.dst,
        Ingress::Lan => output.src,
    };
    Row {
        name,
        ingress,
        input: icmp_error(input, kind.clone(), quote_in),
        action: XDP_REDIRECT,
        output: Output::Rewritten(icmp_error(output, kind, quote_out)),
        verdict: Verdict::Translated,
        counted_eip: Some(eip),
    }
}

/// A frame the gateway answers as a router with an ICMP error from `from`, sent back out
/// of the interface it came in on; no EIP counts it, as nothing crossed.
fn answered(
    name: &'static str,
    ingress: Ingress,
    input: Vec<u8>,
    from: Ipv4Addr,
    kind: Icmpv4Type,
    verdict: Verdict,
) -> Row {
    let output = Output::Rewritten(router_error(&input, from, kind));
    Row { name, ingress, input, action: XDP_TX, output, verdict, counted_eip: None }
}

/// A frame the program must not modify.
fn untouched(
    name: &'static str,
    ingress: Ingress,
    input: Vec<u8>,
    action: u32,
    verdict: Verdict,
) -> Row {
    Row { name, ingress, input, action, output: Output::Unchanged, verdict, counted_eip: None }
}

/// The gateway's own MACs, and the headers of packets crossing it.
#[derive(Clone, Copy, Debug)]
struct Link {
    wan_mac: [u8; 6],
    lan_mac: [u8; 6],
}

impl Link {
    /// A packet from the Internet host to `to` as it reaches wan0.
    fn inbound(self, to: Ipv4Addr) -> Hdr {
        Hdr {
            eth_src: INTERNET_HOST_MAC,
            eth_dst: self.wan_mac,
            src: INTERNET_HOST,
            dst: to,
            ttl: 64,
            options: &[],
        }
    }

    /// `hdr` as it must leave through lan0 to `mac`: TTL - 1 (the gateway is a router hop)
    /// and the link addresses of the LAN hop. A NAT row also changes the destination.
    fn to_lan(self, hdr: Hdr, mac: [u8; 6]) -> Hdr {
        Hdr { eth_src: self.lan_mac, eth_dst: mac, ttl: hdr.ttl - 1, ..hdr }
    }

    /// A packet from `from` (an instance, or an ENI's EIP) at `mac` on lan0 to the Internet
    /// host.
    fn outbound(self, from: Ipv4Addr, mac: [u8; 6]) -> Hdr {
        Hdr {
            eth_src: mac,
            eth_dst: self.lan_mac,
            src: from,
            dst: INTERNET_HOST,
            ttl: 64,
            options: &[],
        }
    }

    /// `hdr` as it must leave through wan0 (to the default next hop, the Internet host's
    /// MAC): TTL - 1 and the link addresses. A NAT row also changes the source.
    fn to_wan(self, hdr: Hdr) -> Hdr {
        Hdr { eth_src: self.wan_mac, eth_dst: INTERNET_HOST_MAC, ttl: hdr.ttl - 1, ..hdr }
    }
}

fn rows(link: Link) -> Vec<Row> {
    use Ingress::{Lan, Wan};
    let Link { wan_mac, lan_mac } = link;

    // A packet from the Internet as it reaches wan0, and the same packet as it must leave
    // through lan0; in NAT mode also with the private address as destination.
    let from_internet = |to: Ipv4Addr| link.inbound(to);
    let to_lan = |hdr: Hdr, mac: [u8; 6]| link.to_lan(hdr, mac);
    let to_vm = |hdr: Hdr| Hdr { dst: VM, ..to_lan(hdr, VM_MAC) };
    // And the other way: from an instance on lan0, leaving wan0 with its EIP as source (NAT
    // mode) or as it came (visible modes, whose instances use the EIP itself).
    let from_lan = |from: Ipv4Addr, mac: [u8; 6]| link.outbound(from, mac);
    let from_vm = |from: Ipv4Addr| from_lan(from, VM_MAC);
    let to_wan = |hdr: Hdr| link.to_wan(hdr);
    let to_internet = |hdr: Hdr| Hdr { src: EIP_VM, ..to_wan(hdr) };

    // The same for IPv6, which is never translated (R23).
    let from_internet6 = |to: Ipv6Addr| Hdr6 {
        eth_src: INTERNET_HOST_MAC,
        eth_dst: wan_mac,
        src: INTERNET_HOST6,
        dst: to,
        hop_limit: 64,
    };
    let to_lan6 = |hdr: Hdr6, mac: [u8; 6]| Hdr6 {
        eth_src: lan_mac,
        eth_dst: mac,
        hop_limit: hdr.hop_limit - 1,
        ..hdr
    };
    let from_lan6 = |from: Ipv6Addr, mac: [u8; 6]| Hdr6 {
        eth_src: mac,
        eth_dst: lan_mac,
        src: from,
        dst: INTERNET_HOST6,
        hop_limit: 64,
    };
    let to_wan6 = |hdr: Hdr6| Hdr6 {
        eth_src: wan_mac,
        eth_dst: INTERNET_HOST_MAC,
        hop_limit: hdr.hop_limit - 1,
        ..hdr
    };

    let inbound = from_internet(EIP_VM);
    let outbound = from_vm(VM);
    let with_options = Hdr { options: &IPV4_OPTIONS, ..inbound };
    let unresolved = from_internet(EIP_UNRESOLVED);
    let inbound_udp = frame(inbound, L4::Udp);
    let inbound_syn = frame(inbound, L4::TcpSyn);
    // Where the L4 header of `inbound_udp` and `inbound_syn` starts (no IPv4 options).
    let l4_at = ETH_LEN + IPV4_LEN;
    let cut_through = from_internet(EIP_CUT_THROUGH);
    let from_cut_through = from_lan(EIP_CUT_THROUGH, ENI_CUT_MAC);
    let multi = from_internet(EIP_MULTI);
    let from_multi = from_lan(EIP_MULTI, ENI_MULTI_MAC);
    let inbound6 = from_internet6(VM6_PUBLIC);
    let outbound6 = from_lan6(VM6_PUBLIC, VM_MAC);
    let inbound6_udp = frame6(inbound6, L4v6::Udp);
    // A payload length 8 bytes longer than what `inbound6_udp` carries.
    let overlong6 = (inbound6_udp.len() - ETH_LEN - Ipv6Header::LEN + 8) as u16;

    // What ICMP errors quote: a packet the instance sent, as the Internet host received it
    // (with the EIP as its source) and as the instance sent it; and a packet for the
    // instance, as the Internet host sent it (to the EIP) and as the instance received it.
    let sent_by_vm = |src: Ipv4Addr, l4: L4| {
        ip_packet(Hdr { src, dst: INTERNET_HOST, ttl: TTL_AT_HOST, ..outbound }, l4)
    };
    let sent_to_vm = |dst: Ipv4Addr, l4: L4| {
        ip_packet(Hdr { src: INTERNET_HOST, dst, ttl: TTL_AT_HOST, ..inbound }, l4)
    };
    // The least an ICMP error quotes (RFC 792).
    let header_and_8 = IPV4_LEN + QUOTED_L4_BYTES;
    let quoting_options = |src: Ipv4Addr| {
        let hdr =
            Hdr { src, dst: INTERNET_HOST, ttl: TTL_AT_HOST, options: &IPV4_OPTIONS, ..outbound };
        ip_packet(hdr, L4::Udp)
    };

    let to_guarded = from_internet(EIP_GUARDED);
    let guarded_in = |hdr: Hdr| Hdr { dst: VM_GUARDED, ..to_lan(hdr, VM_GUARDED_MAC) };
    let from_guarded = from_lan(VM_GUARDED, VM_GUARDED_MAC);
    let to_capped = from_internet(EIP_CAPPED);
    let from_capped = from_lan(VM_CAPPED, VM_CAPPED_MAC);

    vec![
        // Translated both ways, for each protocol whose checksum the rewrite must fix
        // (TCP, UDP) or must leave alone (ICMP: its checksum does not cover IP addresses).
        forwarded("inbound TCP SYN", Wan, L4::TcpSyn, inbound, to_vm(inbound)),
        forwarded("inbound UDP", Wan, L4::Udp, inbound, to_vm(inbound)),
        // RFC 768: a UDP checksum of 0 means "none" and must stay 0 after the rewrite.
        forwarded("inbound UDP, checksum 0", Wan, L4::UdpWithoutChecksum, inbound, to_vm(inbound)),
        forwarded("inbound ICMP echo request", Wan, L4::IcmpEchoRequest, inbound, to_vm(inbound)),
        forwarded("outbound TCP", Lan, L4::TcpData, outbound, to_internet(outbound)),
        forwarded("outbound UDP", Lan, L4::Udp, outbound, to_internet(outbound)),
        forwarded(
            "outbound ICMP echo reply",
            Lan,
            L4::IcmpEchoReply,
            outbound,
            to_internet(outbound),
        ),
        // ICMP errors crossing the gateway (RFC 5508): the quoted packet is translated the
        // other way round from the outer one, and its IPv4 checksum, its L4 checksum (when
        // the quote holds it) and the ICMP checksum follow. Linux hosts and routers quote
        // as much as fits in 576 bytes, so the whole datagram; RFC 792 asks only for the
        // header and 8 bytes.
        translated_error(
            "inbound ICMP port unreachable about UDP the instance sent",
            Wan,
            (inbound, to_vm(inbound)),
            port_unreachable(),
            &sent_by_vm(EIP_VM, L4::Udp),
            &sent_by_vm(VM, L4::Udp),
        ),
        // The quoted UDP checksum 0 ("none") stays 0.
        translated_error(
            "inbound ICMP port unreachable about UDP without checksum, 8 bytes quoted",
            Wan,
            (inbound, to_vm(inbound)),
            port_unreachable(),
            &cut(sent_by_vm(EIP_VM, L4::UdpWithoutChecksum), header_and_8),
            &cut(sent_by_vm(VM, L4::UdpWithoutChecksum), header_and_8),
        ),
        // The TCP checksum lies beyond the 8 bytes: not in the quote, nothing to fix.
        translated_error(
            "inbound ICMP time exceeded about TCP, 8 bytes quoted",
            Wan,
            (inbound, to_vm(inbound)),
            ttl_exceeded(),
            &cut(sent_by_vm(EIP_VM, L4::TcpSyn), header_and_8),
            &cut(sent_by_vm(VM, L4::TcpSyn), header_and_8),
        ),
        // A quote that holds it has its TCP checksum fixed like a UDP one.
        translated_error(
            "inbound ICMP fragmentation needed about TCP, whole segment quoted",
            Wan,
            (inbound, to_vm(inbound)),
            fragmentation_needed(1400),
            &sent_by_vm(EIP_VM, L4::TcpData),
            &sent_by_vm(VM, L4::TcpData),
        ),
        // The quoted header's own IHL places its L4 header.
        translated_error(
            "inbound ICMP port unreachable quoting a header with options",
            Wan,
            (inbound, to_vm(inbound)),
            port_unreachable(),
            &quoting_options(EIP_VM),
            &quoting_options(VM),
        ),
        translated_error(
            "outbound ICMP port unreachable from the instance about an inbound flow",
            Lan,
            (outbound, to_internet(outbound)),
            port_unreachable(),
            &sent_to_vm(VM, L4::Udp),
            &sent_to_vm(EIP_VM, L4::Udp),
        ),
        // An error for the EIP about a packet it did not send has no mapping to translate
        // it by; the same for one from the instance about a packet it was not sent.
        untouched(
            "inbound ICMP error about another address's packet",
            Wan,
            icmp_error(inbound, port_unreachable(), &sent_by_vm(EIP_UNRESOLVED, L4::Udp)),
            XDP_DROP,
            Verdict::DropIcmpErrorUnmatched,
        ),
        untouched(
            "outbound ICMP error about a packet to another address",
            Lan,
            icmp_error(outbound, port_unreachable(), &sent_to_vm(VM_OTHER, L4::Udp)),
            XDP_DROP,
            Verdict::DropIcmpErrorUnmatched,
        ),
        // The L4 header is found past the options, not at a fixed 20 bytes.
        forwarded("inbound TCP, IPv4 options", Wan, L4::TcpSyn, with_options, to_vm(with_options)),
        // A later fragment has no UDP header: only the IPv4 header may change.
        forwarded("inbound UDP, later fragment", Wan, L4::UdpLastFragment, inbound, to_vm(inbound)),
        // The first fragment's UDP checksum covers the whole datagram: the expected frame
        // carries the checksum etherparse computes over all of it with the new address.
        forwarded(
            "inbound UDP, first fragment",
            Wan,
            L4::UdpFirstFragment,
            inbound,
            to_vm(inbound),
        ),
        untouched(
            "inbound to an unassociated EIP",
            Wan,
            frame(from_internet(EIP_UNASSOCIATED), L4::TcpSyn),
            XDP_DROP,
            Verdict::DropEipNotAssociated,
        ),
        untouched("ARP request", Wan, arp_request(), XDP_PASS, Verdict::PassNotTranslated),
        untouched(
            "inbound to the gateway itself",
            Wan,
            frame(from_internet(GW_WAN), L4::TcpSyn),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        untouched(
            "outbound from an address without an EIP",
            Lan,
            frame(from_vm(VM_WITHOUT_EIP), L4::TcpData),
            XDP_DROP,
            Verdict::DropNoEgress,
        ),
        // The gateway is the router hop where the TTL runs out: it answers from its own
        // address on that side, quoting the packet as it came (untranslated).
        answered(
            "inbound with TTL 1",
            Wan,
            frame(Hdr { ttl: 1, ..inbound }, L4::Udp),
            GW_WAN,
            ttl_exceeded(),
            Verdict::IcmpTimeExceededSent,
        ),
        answered(
            "outbound with TTL 1",
            Lan,
            frame(Hdr { ttl: 1, ..outbound }, L4::TcpData),
            GW_LAN,
            ttl_exceeded(),
            Verdict::IcmpTimeExceededSent,
        ),
        // The quote is the header with its options and 8 bytes more.
        answered(
            "inbound with TTL 1, IPv4 options",
            Wan,
            frame(Hdr { ttl: 1, ..with_options }, L4::TcpSyn),
            GW_WAN,
            ttl_exceeded(),
            Verdict::IcmpTimeExceededSent,
        ),
        // Less than 8 bytes after the header: the quote ends with the packet, at an odd
        // length that the ICMP checksum pads.
        answered(
            "inbound with TTL 1, 3 bytes of payload",
            Wan,
            experimental_frame(Hdr { ttl: 1, ..inbound }, b"odd"),
            GW_WAN,
            ttl_exceeded(),
            Verdict::IcmpTimeExceededSent,
        ),
        // No ICMP error about an ICMP error (RFC 1122 §3.2.2), nor to a multicast group
        // (RFC 1812 §4.3.2.7): the kernel gets them, and drops them without a word.
        untouched(
            "inbound ICMP error with TTL 1",
            Wan,
            icmp_error(Hdr { ttl: 1, ..inbound }, port_unreachable(), &sent_by_vm(EIP_VM, L4::Udp)),
            XDP_PASS,
            Verdict::PassTtlExpired,
        ),
        untouched(
            "outbound to a multicast group with TTL 1",
            Lan,
            frame(
                Hdr {
                    eth_dst: [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb],
                    dst: Ipv4Addr::new(224, 0, 0, 251),
                    ttl: 1,
                    ..outbound
                },
                L4::Udp,
            ),
            XDP_PASS,
            Verdict::PassTtlExpired,
        ),
        // Translated, but the kernel resolves the MAC, forwards it and decrements the TTL
        // itself: TTL and link addresses must stay as they came.
        Row {
            name: "inbound to an instance with no neighbour entry",
            ingress: Wan,
            input: frame(unresolved, L4::Udp),
            action: XDP_PASS,
            output: Output::Rewritten(frame(Hdr { dst: VM_UNRESOLVED, ..unresolved }, L4::Udp)),
            verdict: Verdict::PassNeighbourUnknown,
            counted_eip: Some(EIP_UNRESOLVED),
        },
        // The same on the way out, through a WAN next hop with no neighbour entry.
        Row {
            name: "outbound through a next hop with no neighbour entry",
            ingress: Lan,
            input: frame(Hdr { dst: INTERNET_UNRESOLVED, ..outbound }, L4::Udp),
            action: XDP_PASS,
            output: Output::Rewritten(frame(
                Hdr { src: EIP_VM, dst: INTERNET_UNRESOLVED, ..outbound },
                L4::Udp,
            )),
            verdict: Verdict::PassNeighbourUnknown,
            counted_eip: Some(EIP_VM),
        },
        // DF set and larger than the route's MTU: the first lookup names no interface, and
        // the program must still find out that the packet was leaving through wan0. The
        // sender learns the MTU of the next hop (RFC 1191) about the packet it sent.
        answered(
            "outbound larger than the MTU, DF set",
            Lan,
            frame(Hdr { dst: INTERNET_SMALL_MTU, ..outbound }, L4::UdpLarge),
            GW_LAN,
            fragmentation_needed(1280),
            Verdict::IcmpFragNeededSent,
        ),
        // And inbound, about the packet sent to the EIP, so that the Internet host lowers
        // its path MTU to the EIP.
        answered(
            "inbound larger than the MTU, DF set",
            Wan,
            frame(from_internet(EIP_SMALL_MTU), L4::UdpLarge),
            GW_WAN,
            fragmentation_needed(1280),
            Verdict::IcmpFragNeededSent,
        ),
        // Without DF the kernel may fragment it: translated, then passed (TTL untouched,
        // the kernel's forwarding takes it off).
        Row {
            name: "outbound larger than the MTU, DF clear",
            ingress: Lan,
            input: frame(Hdr { dst: INTERNET_SMALL_MTU, ..outbound }, L4::UdpLargeMayFragment),
            action: XDP_PASS,
            output: Output::Rewritten(frame(
                Hdr { src: EIP_VM, dst: INTERNET_SMALL_MTU, ..outbound },
                L4::UdpLargeMayFragment,
            )),
            verdict: Verdict::PassTooBig,
            counted_eip: Some(EIP_VM),
        },
        // Hairpin (issue 4): the instance to an EIP, here its own. Both addresses change,
        // so the answer comes back through the gateway too; it leaves where it came in.
        Row {
            name: "hairpin: from the instance to an EIP",
            ingress: Lan,
            input: frame(Hdr { dst: EIP_VM, ..outbound }, L4::TcpSyn),
            action: XDP_TX,
            output: Output::Rewritten(frame(
                Hdr {
                    eth_src: lan_mac,
                    eth_dst: VM_MAC,
                    src: EIP_VM,
                    dst: VM,
                    ttl: outbound.ttl - 1,
                    ..outbound
                },
                L4::TcpSyn,
            )),
            verdict: Verdict::Translated,
            counted_eip: Some(EIP_VM),
        },
        // Visible modes (R10, R11): no rewrite at all, the EIP is routed to its ENI.
        forwarded_unchanged(
            "cut-through inbound TCP SYN",
            Wan,
            L4::TcpSyn,
            cut_through,
            to_lan(cut_through, ENI_CUT_MAC),
        ),
        forwarded_unchanged(
            "cut-through inbound UDP",
            Wan,
            L4::Udp,
            cut_through,
            to_lan(cut_through, ENI_CUT_MAC),
        ),
        forwarded_unchanged(
            "cut-through outbound TCP from the EIP",
            Lan,
            L4::TcpData,
            from_cut_through,
            to_wan(from_cut_through),
        ),
        forwarded_unchanged(
            "multi-EIP inbound ICMP echo request",
            Wan,
            L4::IcmpEchoRequest,
            multi,
            to_lan(multi, ENI_MULTI_MAC),
        ),
        forwarded_unchanged(
            "multi-EIP outbound UDP from the EIP",
            Lan,
            L4::Udp,
            from_multi,
            to_wan(from_multi),
        ),
        untouched(
            "cut-through inbound with TTL 1",
            Wan,
            frame(Hdr { ttl: 1, ..cut_through }, L4::Udp),
            XDP_PASS,
            Verdict::PassTtlExpired,
        ),
        // The kernel forwards it along the same route once it has resolved the ENI's MAC.
        Row {
            name: "cut-through inbound to an ENI with no neighbour entry",
            ingress: Wan,
            input: frame(from_internet(EIP_CUT_UNRESOLVED), L4::Udp),
            action: XDP_PASS,
            output: Output::Unchanged,
            verdict: Verdict::PassNeighbourUnknown,
            counted_eip: Some(EIP_CUT_UNRESOLVED),
        },
        // An EIP as source gives egress only in a visible mode.
        untouched(
            "outbound from an unassociated EIP",
            Lan,
            frame(from_lan(EIP_UNASSOCIATED, VM_MAC), L4::TcpData),
            XDP_DROP,
            Verdict::DropNoEgress,
        ),
        untouched(
            "outbound from a NAT-mode EIP",
            Lan,
            frame(from_vm(EIP_VM), L4::TcpData),
            XDP_DROP,
            Verdict::DropNoEgress,
        ),
        // IPv6 (R23): forwarded unchanged for a public address, dropped for any other.
        forwarded6(
            "IPv6 inbound TCP SYN to a public address",
            Wan,
            L4v6::TcpSyn,
            inbound6,
            to_lan6(inbound6, VM_MAC),
        ),
        forwarded6(
            "IPv6 inbound UDP to a public address",
            Wan,
            L4v6::Udp,
            inbound6,
            to_lan6(inbound6, VM_MAC),
        ),
        forwarded6(
            "IPv6 inbound ICMPv6 echo request to a public address",
            Wan,
            L4v6::EchoRequest,
            inbound6,
            to_lan6(inbound6, VM_MAC),
        ),
        forwarded6(
            "IPv6 outbound UDP from a public address",
            Lan,
            L4v6::Udp,
            outbound6,
            to_wan6(outbound6),
        ),
        untouched(
            "IPv6 inbound to an address without public bandwidth",
            Wan,
            frame6(from_internet6(VM6_PRIVATE), L4v6::TcpSyn),
            XDP_DROP,
            Verdict::DropIpv6NotPublic,
        ),
        untouched(
            "IPv6 outbound from an address without public bandwidth",
            Lan,
            frame6(from_lan6(VM6_PRIVATE, VM6_PRIVATE_MAC), L4v6::Udp),
            XDP_DROP,
            Verdict::DropIpv6NotPublic,
        ),
        untouched(
            "IPv6 inbound with hop limit 1",
            Wan,
            frame6(Hdr6 { hop_limit: 1, ..inbound6 }, L4v6::Udp),
            XDP_PASS,
            Verdict::PassTtlExpired,
        ),
        untouched(
            "IPv6 inbound to a public address with no neighbour entry",
            Wan,
            frame6(from_internet6(VM6_UNRESOLVED), L4v6::Udp),
            XDP_PASS,
            Verdict::PassNeighbourUnknown,
        ),
        untouched(
            // The kernel answers Packet Too Big; nothing here to translate back.
            "IPv6 inbound larger than the MTU",
            Wan,
            frame6(from_internet6(VM6_SMALL_MTU), L4v6::UdpLarge),
            XDP_PASS,
            Verdict::PassTooBig,
        ),
        untouched(
            "IPv6 inbound to the gateway itself",
            Wan,
            frame6(from_internet6(GW_WAN6), L4v6::EchoRequest),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        // Between two VPC hosts: the route leads back out of lan0, not to the Internet.
        untouched(
            "IPv6 routed back into the VPC",
            Lan,
            frame6(Hdr6 { dst: VM6_PRIVATE, ..outbound6 }, L4v6::Udp),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        // Neighbour discovery is the kernel's: link-local source, multicast destination.
        untouched(
            "IPv6 neighbour solicitation",
            Wan,
            frame6(
                Hdr6 {
                    eth_dst: multicast_mac(solicited_node(GW_WAN6)),
                    src: INTERNET_HOST_LINK_LOCAL,
                    dst: solicited_node(GW_WAN6),
                    hop_limit: 255,
                    ..inbound6
                },
                L4v6::NeighbourSolicitation,
            ),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        untouched(
            "IPv6 duplicate address detection, from the unspecified address",
            Lan,
            frame6(
                Hdr6 {
                    eth_dst: multicast_mac(solicited_node(GW_WAN6)),
                    src: Ipv6Addr::UNSPECIFIED,
                    dst: solicited_node(GW_WAN6),
                    hop_limit: 255,
                    ..outbound6
                },
                L4v6::NeighbourSolicitation,
            ),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        // A link-local destination is never forwarded, whatever the source.
        untouched(
            "IPv6 to a link-local address",
            Lan,
            frame6(Hdr6 { dst: INTERNET_HOST_LINK_LOCAL, ..outbound6 }, L4v6::EchoRequest),
            XDP_PASS,
            Verdict::PassNotTranslated,
        ),
        // Malformed frames, all addressed to an associated EIP so that only the defect can
        // explain the drop.
        // Ethertype IPv4, then 12 of the header's 20 bytes.
        untouched(
            "malformed: truncated IPv4 header",
            Wan,
            inbound_udp[..ETH_LEN + 12].to_vec(),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: IHL 4",
            Wan,
            patch(inbound_udp.clone(), ETH_LEN + IPV4_VERSION_IHL, &[0x44]),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: IPv4 total length beyond the frame",
            Wan,
            edit_ipv4(inbound_udp.clone(), |ip| ip.total_len += 8),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: TCP data offset 4",
            Wan,
            patch(inbound_syn.clone(), l4_at + TCP_DATA_OFFSET, &[4 << 4]),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: TCP data offset beyond the packet",
            Wan,
            patch(inbound_syn, l4_at + TCP_DATA_OFFSET, &[15 << 4]),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: UDP length 4",
            Wan,
            patch(inbound_udp.clone(), l4_at + UDP_LENGTH, &4u16.to_be_bytes()),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: UDP length beyond an unfragmented packet",
            Wan,
            patch(inbound_udp, l4_at + UDP_LENGTH, &1000u16.to_be_bytes()),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: ICMP error quoting 12 bytes of an IPv4 header",
            Wan,
            icmp_error(inbound, port_unreachable(), &cut(sent_by_vm(EIP_VM, L4::Udp), 12)),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        // Ethertype IPv6, then 20 of the fixed header's 40 bytes.
        untouched(
            "malformed: truncated IPv6 header",
            Wan,
            inbound6_udp[..ETH_LEN + 20].to_vec(),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: IPv6 payload length beyond the frame",
            Wan,
            patch(inbound6_udp.clone(), ETH_LEN + IPV6_PAYLOAD_LENGTH, &overlong6.to_be_bytes()),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        untouched(
            "malformed: IPv6 ethertype, IPv4 header",
            Wan,
            patch(frame(inbound, L4::Udp), ETHER_TYPE, &EtherType::IPV6.0.to_be_bytes()),
            XDP_DROP,
            Verdict::DropMalformed,
        ),
        // The security group of the ENI behind EIP_GUARDED lets in TCP port 80 only, and the
        // replies to flows the instance opened. These rows run in this order: the reply is
        // let in only after the instance sent.
        forwarded(
            "security group: inbound TCP to the port a rule allows",
            Wan,
            L4::TcpData,
            to_guarded,
            guarded_in(to_guarded),
        ),
        untouched(
            "security group: inbound TCP SYN to a port no rule allows",
            Wan,
            frame(to_guarded, L4::TcpSyn),
            XDP_DROP,
            Verdict::DropSecurityGroup,
        ),
        untouched(
            "security group: inbound UDP before the instance sent any",
            Wan,
            frame(to_guarded, L4::UdpReply),
            XDP_DROP,
            Verdict::DropSecurityGroup,
        ),
        forwarded(
            "security group: the instance sends UDP out",
            Lan,
            L4::Udp,
            from_guarded,
            Hdr { src: EIP_GUARDED, ..to_wan(from_guarded) },
        ),
        forwarded(
            "security group: the answer to that UDP comes in",
            Wan,
            L4::UdpReply,
            to_guarded,
            guarded_in(to_guarded),
        ),
        untouched(
            "security group: UDP from another port of that host stays out",
            Wan,
            frame(to_guarded, L4::Udp),
            XDP_DROP,
            Verdict::DropSecurityGroup,
        ),
        // Hairpin to EIP_GUARDED: its group sees the sender's EIP as the source.
        Row {
            name: "security group: hairpin to the port a rule allows",
            ingress: Lan,
            input: frame(Hdr { dst: EIP_GUARDED, ..outbound }, L4::TcpData),
            action: XDP_TX,
            output: Output::Rewritten(frame(
                Hdr {
                    eth_src: lan_mac,
                    eth_dst: VM_GUARDED_MAC,
                    src: EIP_VM,
                    dst: VM_GUARDED,
                    ttl: outbound.ttl - 1,
                    ..outbound
                },
                L4::TcpData,
            )),
            verdict: Verdict::Translated,
            counted_eip: Some(EIP_VM),
        },
        untouched(
            "security group: hairpin to a port no rule allows",
            Lan,
            frame(Hdr { dst: EIP_GUARDED, ..outbound }, L4::TcpSyn),
            XDP_DROP,
            Verdict::DropSecurityGroup,
        ),
        // EIP_CAPPED's cap: single frames pass within the burst (check_bandwidth_cap runs it
        // out).
        forwarded(
            "bandwidth cap: inbound within the burst",
            Wan,
            L4::Udp,
            to_capped,
            Hdr { dst: VM_CAPPED, ..to_lan(to_capped, VM_CAPPED_MAC) },
        ),
        forwarded(
            "bandwidth cap: outbound within the burst",
            Lan,
            L4::Udp,
            from_capped,
            Hdr { src: EIP_CAPPED, ..to_wan(from_capped) },
        ),
    ]
}

struct Ifindexes {
    wan: u32,
    lan: u32,
}

/// Runs one row and checks everything it states.
#[track_caller]
fn check_row(dataplane: &Dataplane, ifindexes: &Ifindexes, eips: &[Ipv4Addr], row: &Row) {
    let ran = run_frame(dataplane, ifindexes, eips, row.ingress, &row.input);
    check_ran(row, &ran, eips);
}

/// One frame's run through the program: what it returned and left, and the counters
/// around it.
struct Ran {
    action: u32,
    output: Vec<u8>,
    before: Vec<(Verdict, u64)>,
    after: Vec<(Verdict, u64)>,
    eips_before: Vec<(Ipv4Addr, EipCounters)>,
    eips_after: Vec<(Ipv4Addr, EipCounters)>,
}

fn run_frame(
    dataplane: &Dataplane,
    ifindexes: &Ifindexes,
    eips: &[Ipv4Addr],
    ingress: Ingress,
    input: &[u8],
) -> Ran {
    let program = dataplane.program().expect("the loaded program");
    let ingress_ifindex = match ingress {
        Ingress::Wan => ifindexes.wan,
        Ingress::Lan => ifindexes.lan,
    };
    let ctx = xdp_md(input.len(), ingress_ifindex);
    // Room to spare: a frame that grew would show up as a longer output, not as ENOSPC.
    let mut data_out = vec![0; input.len() + 256];

    let before = verdict_counts(dataplane);
    let eips_before = eip_counts(dataplane, eips);
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    let after = verdict_counts(dataplane);
    let eips_after = eip_counts(dataplane, eips);
    data_out.truncate(result.data_size_out as usize);
    Ran { action: result.return_value, output: data_out, before, after, eips_before, eips_after }
}

/// Checks everything `row` states against what its run left.
#[track_caller]
fn check_ran(row: &Row, ran: &Ran, eips: &[Ipv4Addr]) {
    let Ran { action, output, before, after, eips_before, eips_after } = ran;
    let (output, eips_before) = (output.as_slice(), eips_before.clone());

    assert_action(row.name, row.action, *action, output);
    match &row.output {
        Output::Unchanged => assert_frame(row.name, "the input, unchanged", &row.input, output),
        Output::Rewritten(expected) => {
            assert_frame(row.name, "the rewritten frame", expected, output);
            assert_checksums(row.name, output);
        }
    }
    assert_counted(row.name, row.verdict, before, after);
    let mut expected_eips = eips_before;
    if let Some(eip) = row.counted_eip {
        let (_, counters) = expected_eips
            .iter_mut()
            .find(|(address, _)| *address == eip)
            .unwrap_or_else(|| panic!("{}: {eip} is not in the desired maps", row.name));
        let bytes = (row.input.len() - ETH_LEN) as u64;
        match row.ingress {
            _ if row.verdict == Verdict::SnatRefused => counters.snat_refused_packets += 1,
            Ingress::Wan => {
                counters.inbound_packets += 1;
                counters.inbound_bytes += bytes;
            }
            Ingress::Lan => {
                counters.outbound_packets += 1;
                counters.outbound_bytes += bytes;
            }
        }
    }
    // A security group's drop is counted under the EIP it was for.
    if row.verdict == Verdict::DropSecurityGroup {
        let dst =
            Ipv4Addr::from(<[u8; 4]>::try_from(&row.input[ETH_LEN + 16..ETH_LEN + 20]).unwrap());
        let (_, counters) = expected_eips
            .iter_mut()
            .find(|(address, _)| *address == dst)
            .unwrap_or_else(|| panic!("{}: {dst} is not in the desired maps", row.name));
        counters.inbound_denied_packets += 1;
        counters.inbound_denied_bytes += (row.input.len() - ETH_LEN) as u64;
    }
    // Hairpin: a frame from the VPC to an EIP also arrives at that EIP, as if from the
    // Internet.
    let dst_at = ETH_LEN + 16;
    let hairpin_target = (row.ingress == Ingress::Lan
        && matches!(row.verdict, Verdict::Translated | Verdict::PassNeighbourUnknown)
        && row.input.len() >= dst_at + 4)
        .then(|| Ipv4Addr::from(<[u8; 4]>::try_from(&row.input[dst_at..dst_at + 4]).unwrap()))
        .filter(|dst| eips.contains(dst));
    if let Some(target) = hairpin_target
        && let Some((_, counters)) =
            expected_eips.iter_mut().find(|(address, _)| *address == target)
    {
        counters.inbound_packets += 1;
        counters.inbound_bytes += (row.input.len() - ETH_LEN) as u64;
    }
    assert!(
        *eips_after == expected_eips,
        "{}: EIP counters are not as expected ({:?} to count it);\nexpected: {expected_eips:?}\n\
         got: {eips_after:?}",
        row.name,
        row.counted_eip
    );
}

#[track_caller]
fn assert_action(row: &str, expected: u32, got: u32, output: &[u8]) {
    assert!(
        expected == got,
        "{row}: expected {}, the program returned {}; output frame:\n{}",
        action_name(expected),
        action_name(got),
        hex(output)
    );
}

fn action_name(action: u32) -> String {
    match action {
        0 => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("unknown action {other}"),
    }
}

#[track_caller]
fn assert_frame(row: &str, what: &str, expected: &[u8], got: &[u8]) {
    if expected == got {
        return;
    }
    let first_difference =
        expected.iter().zip(got).position(|(a, b)| a != b).unwrap_or(expected.len().min(got.len()));
    panic!(
        "{row}: output frame is not {what}; first difference at byte {first_difference}\n\
         expected ({} bytes):\n{}\ngot ({} bytes):\n{}",
        expected.len(),
        hex(expected),
        got.len(),
        hex(got)
    );
}

/// Recomputes the checksums of an output frame with etherparse, independently of the
/// program's incremental arithmetic.
#[track_caller]
fn assert_checksums(row: &str, frame: &[u8]) {
    let check = |what: &str, carried: u16, computed: u16| {
        assert!(
            carried == computed,
            "{row}: {what} checksum is {carried:#06x}, etherparse computes {computed:#06x}:\n{}",
            hex(frame)
        );
    };
    if frame[ETHER_TYPE..ETH_LEN] == EtherType::IPV6.0.to_be_bytes() {
        return assert_checksums_ipv6(row, frame, check);
    }
    let (ip, rest) = Ipv4Header::from_slice(&frame[ETH_LEN..]).unwrap_or_else(|e| {
        panic!("{row}: output IPv4 header does not parse ({e}):\n{}", hex(frame))
    });
    check("IPv4 header", ip.header_checksum, ip.calc_header_checksum());
    // A fragment's L4 checksum covers the whole datagram, which one frame does not hold: the
    // first fragment's is compared with the expected frame, built from the whole datagram.
    if ip.is_fragmenting_payload() {
        return;
    }
    let payload = &rest[..ip.payload_len().expect("a consistent IPv4 length") as usize];
    match ip.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(payload).expect("a TCP header");
            let computed = tcp.calc_checksum_ipv4(&ip, data).expect("a TCP checksum");
            check("TCP", tcp.checksum, computed);
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(payload).expect("a UDP header");
            // 0 is "no checksum" (RFC 768): nothing to verify, and the byte comparison has
            // already shown that it stayed 0.
            if udp.checksum != 0 {
                let computed = udp.calc_checksum_ipv4(&ip, data).expect("a UDP checksum");
                check("UDP", udp.checksum, computed);
            }
        }
        IpNumber::ICMP => {
            let (icmp, data) = Icmpv4Header::from_slice(payload).expect("an ICMP header");
            let computed = Icmpv4Header::with_checksum(icmp.icmp_type.clone(), data).checksum;
            check("ICMP", icmp.checksum, computed);
            if matches!(
                icmp.icmp_type,
                Icmpv4Type::DestinationUnreachable(_)
                    | Icmpv4Type::TimeExceeded(_)
                    | Icmpv4Type::ParameterProblem(_)
            ) {
                assert_quote_checksums(row, frame, data, check);
            }
        }
        other => panic!("{row}: no checksum to verify for IP protocol {other:?}"),
    }
}

/// The checksums inside an ICMP error's quote: the quoted IPv4 header's, and the quoted
/// TCP or UDP checksum when the quote holds the whole segment or datagram (a cut quote's
/// covers bytes that are not there; the byte comparison shows it is what it should be).
#[track_caller]
fn assert_quote_checksums(row: &str, frame: &[u8], quote: &[u8], check: impl Fn(&str, u16, u16)) {
    let (ip, rest) = Ipv4Header::from_slice(quote).unwrap_or_else(|e| {
        panic!("{row}: the quoted IPv4 header does not parse ({e}):\n{}", hex(frame))
    });
    check("quoted IPv4 header", ip.header_checksum, ip.calc_header_checksum());
    let Ok(payload_len) = ip.payload_len() else { return };
    if ip.is_fragmenting_payload() || rest.len() < usize::from(payload_len) {
        return;
    }
    let payload = &rest[..usize::from(payload_len)];
    match ip.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(payload).expect("a quoted TCP header");
            let computed = tcp.calc_checksum_ipv4(&ip, data).expect("a TCP checksum");
            check("quoted TCP", tcp.checksum, computed);
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(payload).expect("a quoted UDP header");
            if udp.checksum != 0 {
                let computed = udp.calc_checksum_ipv4(&ip, data).expect("a UDP checksum");
                check("quoted UDP", udp.checksum, computed);
            }
        }
        _ => {}
    }
}

/// The IPv6 part of [`assert_checksums`]: no header checksum, but the L4 ones cover the
/// addresses through the pseudo-header, so they show that nothing else changed them.
#[track_caller]
fn assert_checksums_ipv6(row: &str, frame: &[u8], check: impl Fn(&str, u16, u16)) {
    let (ip, rest) = Ipv6Header::from_slice(&frame[ETH_LEN..]).unwrap_or_else(|e| {
        panic!("{row}: output IPv6 header does not parse ({e}):\n{}", hex(frame))
    });
    let payload = &rest[..ip.payload_length as usize];
    match ip.next_header {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(payload).expect("a TCP header");
            check("TCP", tcp.checksum, tcp.calc_checksum_ipv6(&ip, data).expect("a checksum"));
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(payload).expect("a UDP header");
            check("UDP", udp.checksum, udp.calc_checksum_ipv6(&ip, data).expect("a checksum"));
        }
        IpNumber::IPV6_ICMP => {
            let (icmp, data) = Icmpv6Header::from_slice(payload).expect("an ICMPv6 header");
            let computed =
                icmp.icmp_type.calc_checksum(ip.source, ip.destination, data).expect("a checksum");
            check("ICMPv6", icmp.checksum, computed);
        }
        other => panic!("{row}: no checksum to verify for IPv6 next header {other:?}"),
    }
}

/// Every EIP's counters, summed over the CPUs.
fn eip_counts(dataplane: &Dataplane, eips: &[Ipv4Addr]) -> Vec<(Ipv4Addr, EipCounters)> {
    eips.iter()
        .map(|&eip| {
            let counters = dataplane
                .eip_counters(eip)
                .expect("reading the EIP counters")
                .unwrap_or_else(|| panic!("{eip} has no counters"));
            (eip, counters)
        })
        .collect()
}

fn verdict_counts(dataplane: &Dataplane) -> Vec<(Verdict, u64)> {
    dataplane.verdict_counters().expect("reading the verdict counters")
}

#[track_caller]
fn assert_counted(
    row: &str,
    expected: Verdict,
    before: &[(Verdict, u64)],
    after: &[(Verdict, u64)],
) {
    let moved: Vec<(&str, u64)> = before
        .iter()
        .zip(after)
        .filter(|((_, b), (_, a))| a != b)
        .map(|((verdict, b), (_, a))| (verdict.name(), a.wrapping_sub(*b)))
        .collect();
    assert!(
        moved == [(expected.name(), 1)],
        "{row}: expected {} to count one frame and no other counter to move; moved: {moved:?}",
        expected.name()
    );
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

#[test]
fn packet_table() {
    require_root();
    let gateway = Gateway::new("eipgw-pt");
    let link = gateway.link;
    let rows = rows(link);
    let flood = frame(Hdr { ttl: 1, ..link.inbound(EIP_VM) }, L4::Udp);
    let capped_flood = frame(link.inbound(EIP_CAPPED), L4::UdpLarge);
    let (failed, checked) = gateway.run(SnatConfig::DEFAULT, |dataplane, ifindexes, eips| {
        let dataplane: &Dataplane = dataplane;
        let mut failed: Vec<String> = rows
            .iter()
            .filter(|row| {
                panic::catch_unwind(AssertUnwindSafe(|| check_row(dataplane, ifindexes, eips, row)))
                    .is_err()
            })
            .map(|row| row.name.to_owned())
            .collect();
        let rate_limit = panic::catch_unwind(AssertUnwindSafe(|| {
            check_rate_limit(dataplane, ifindexes, &flood)
        }));
        if rate_limit.is_err() {
            failed.push("rate limit of the ICMP errors the gateway sends".into());
        }
        let cap = panic::catch_unwind(AssertUnwindSafe(|| {
            check_bandwidth_cap(dataplane, ifindexes, &capped_flood)
        }));
        if cap.is_err() {
            failed.push("bandwidth cap of an EIP".into());
        }
        (failed, rows.len() + 2)
    });
    assert_none_failed(&failed, checked);
}

#[track_caller]
fn assert_none_failed(failed: &[String], checked: usize) {
    assert!(
        failed.is_empty(),
        "{} of {checked} rows failed (each one's message is above): {failed:#?}",
        failed.len(),
    );
}

/// A gateway namespace ([`gateway_netns`]) with a bpffs of its own, and its MACs.
struct Gateway {
    /// Declared before the bpffs, so dropped before it: by then the veths, and the XDP
    /// links pinned in the bpffs, are gone.
    ns: Netns,
    bpffs: Mount,
    link: Link,
}

impl Gateway {
    fn new(prefix: &str) -> Self {
        let suffix = unique_suffix();
        let bpffs = Mount::bpffs(&std::env::temp_dir().join(format!("{prefix}-{suffix}")))
            .expect("mounting a bpffs");
        let ns = gateway_netns(prefix, &suffix);
        let link = Link { wan_mac: mac_of(&ns, WAN_IF), lan_mac: mac_of(&ns, LAN_IF) };
        Gateway { ns, bpffs, link }
    }

    /// Runs `f` with the program loaded and attached, SNAT configured as `snat`, the maps
    /// written from [`desired_maps`] and the gateway's own addresses in CONFIG; `f` gets the
    /// interfaces and every EIP of the maps.
    ///
    /// One thread inside the namespace does everything that touches the program: the
    /// kernel resolves ctx_in's ingress ifindex in the caller's namespace, and
    /// bpf_fib_lookup routes in that device's. The data plane is dropped on this thread too,
    /// before the namespace goes.
    fn run<T: Send>(
        &self,
        snat: SnatConfig,
        f: impl FnOnce(&mut Dataplane, &Ifindexes, &[Ipv4Addr]) -> T + Send,
    ) -> T {
        let options = DataplaneOptions {
            wan: WAN_IF.into(),
            lan: LAN_IF.into(),
            bpffs: self.bpffs.path().to_owned(),
            xdp_mode: XdpMode::Driver,
            max_mappings: 1024,
            snat,
        };
        let desired = desired_maps();
        let eips: Vec<Ipv4Addr> = desired.eips.keys().copied().collect();
        self.ns
            .run_in(|| {
                let mut dataplane = Dataplane::open(&options).expect("opening the data plane");
                dataplane.reconcile(&desired).expect("writing the maps");
                write_own_addresses(self.bpffs.path());
                let ifindexes = Ifindexes { wan: ifindex(WAN_IF), lan: ifindex(LAN_IF) };
                f(&mut dataplane, &ifindexes, &eips)
            })
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Runs `input` through the program `count` times as if it came in on the WAN; returns how
/// much each verdict counter moved, and how long it took.
fn flood_wan(
    dataplane: &Dataplane,
    ifindexes: &Ifindexes,
    input: &[u8],
    count: u64,
) -> (impl Fn(Verdict) -> u64, std::time::Duration) {
    let program = dataplane.program().expect("the loaded program");
    let ctx = xdp_md(input.len(), ifindexes.wan);
    let before = verdict_counts(dataplane);
    let started = std::time::Instant::now();
    for _ in 0..count {
        let mut data_out = vec![0; input.len() + 256];
        program
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    }
    let elapsed = started.elapsed();
    let after = verdict_counts(dataplane);
    let moved = move |verdict: Verdict| {
        let count = |counts: &[(Verdict, u64)]| {
            counts.iter().find(|(v, _)| *v == verdict).map(|(_, n)| *n).unwrap_or(0)
        };
        count(&after) - count(&before)
    };
    (moved, elapsed)
}

/// Floods [`EIP_CAPPED`] with `input` until the cap drops frames: about one burst passes
/// (what the rows before took of it aside), the rest is dropped and counted, per EIP too.
fn check_bandwidth_cap(dataplane: &Dataplane, ifindexes: &Ifindexes, input: &[u8]) {
    let frame_bytes = (input.len() - ETH_LEN) as u64;
    let burst_frames = bandwidth::burst_ns(CAP_MBPS) * 1_000
        / bandwidth::picoseconds_per_byte(CAP_MBPS)
        / frame_bytes;
    let flood = 3 * burst_frames;
    let eip_before = dataplane.eip_counters(EIP_CAPPED).expect("counters").expect("a slot");
    let (moved, elapsed) = flood_wan(dataplane, ifindexes, input, flood);
    let eip_after = dataplane.eip_counters(EIP_CAPPED).expect("counters").expect("a slot");
    let (passed, dropped) = (moved(Verdict::Translated), moved(Verdict::DropBandwidthCap));
    assert_eq!(passed + dropped, flood, "every frame of the flood is forwarded or dropped");
    // What the clock gave back while the flood ran, in frames.
    let refilled = (elapsed.as_nanos() as u64 * 1_000 / bandwidth::picoseconds_per_byte(CAP_MBPS))
        / frame_bytes;
    assert!(
        // One more than a burst's worth: the last frame is admitted while the backlog is
        // still within the burst; and one for what refilled in fractions of a frame.
        passed <= burst_frames + refilled + 2 && passed + 2 >= burst_frames,
        "{passed} of {flood} frames of {frame_bytes} bytes passed in {elapsed:?}: expected \
         about one burst ({burst_frames} frames) and at most {refilled} more"
    );
    assert_eq!(
        eip_after.inbound_over_cap_packets - eip_before.inbound_over_cap_packets,
        dropped,
        "the EIP counts what its cap dropped"
    );
    assert_eq!(
        eip_after.inbound_over_cap_bytes - eip_before.inbound_over_cap_bytes,
        dropped * frame_bytes
    );
    assert_eq!(eip_after.inbound_packets - eip_before.inbound_packets, passed);
}

/// Writes the gateway's own addresses into the CONFIG map that `Dataplane::open` made, so
/// that the rows do not depend on how the agent learns them.
fn write_own_addresses(bpffs: &std::path::Path) {
    let pin = bpffs.join(PIN_DIR_NAME).join(MAP_CONFIG);
    let map = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("opening {}: {e}", pin.display()));
    let map = aya::maps::Map::from_map_data(map).expect("the CONFIG map");
    let mut config: Array<MapData, GatewayConfig> = Array::try_from(map).expect("an array");
    let current = config.get(&0, 0).expect("reading CONFIG");
    let wan_addr = ipv4_key(GW_WAN.octets());
    let lan_addr = ipv4_key(GW_LAN.octets());
    config.set(0, &GatewayConfig { wan_addr, lan_addr, ..current }, 0).expect("writing CONFIG");
}

/// A flood of frames that each call for time exceeded, on one CPU whose budget has had a
/// quiet second to fill: a burst of errors goes out, then only as many as the rate lets
/// back in while the flood lasts, and every other frame is dropped and counted.
#[track_caller]
fn check_rate_limit(dataplane: &Dataplane, ifindexes: &Ifindexes, input: &[u8]) {
    const FLOOD: u64 = 3 * ICMP_ERROR_BURST;
    pin_to_cpu(0);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (moved, elapsed) = flood_wan(dataplane, ifindexes, input, FLOOD);
    let (sent, limited) =
        (moved(Verdict::IcmpTimeExceededSent), moved(Verdict::DropIcmpRateLimited));
    assert_eq!(sent + limited, FLOOD, "every frame of the flood is answered or dropped");
    // Credit comes back continuously: one error's worth per 1/rate seconds.
    let refilled = (elapsed.as_nanos() * u128::from(ICMP_ERRORS_PER_SECOND) / 1_000_000_000) as u64;
    assert!(
        (ICMP_ERROR_BURST..=ICMP_ERROR_BURST + refilled + 1).contains(&sent),
        "{sent} errors sent for {FLOOD} frames in {elapsed:?}: expected the burst of \
         {ICMP_ERROR_BURST} and at most {refilled} more"
    );
}

// The NAT gateway (issue 5): DNAT port and IP mappings, and SNAT with its session table.
// The SNAT rows depend on the sessions the rows before them made, so they run in order
// on one data plane of their own; the public ports the program picks at random are read
// from its output and checked to lie in the range, and the rows after use them.

/// The SNAT port range of [`nat_table`]: [`KEPT_PORT`] lies inside it, the default UDP
/// source port (5353), [`ECHO_ID`] and [`FRAGMENT_PORT`] outside, so those are translated.
const SNAT_PORTS: SnatConfig =
    SnatConfig { port_min: 20_000, port_max: 29_999, ..SnatConfig::DEFAULT };

/// The two ports of [`snat_port_exhaustion`].
const SNAT_TWO_PORTS: SnatConfig =
    SnatConfig { port_min: 20_000, port_max: 20_001, ..SnatConfig::DEFAULT };

/// A private source port inside [`SNAT_PORTS`]: kept while no other session holds it.
const KEPT_PORT: u16 = 20_053;

/// The private source port of the fragmented datagram, outside [`SNAT_PORTS`].
const FRAGMENT_PORT: u16 = 7777;

/// An Internet host other than [`INTERNET_HOST`], behind the same next hop (the default
/// route).
const INTERNET_OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);

/// Far enough ahead that every session has expired, even an established TCP one (7440 s).
const LONG_AFTER_NS: u64 = 10_000 * 1_000_000_000;

fn admin_prohibited() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FilterProhibited)
}

#[test]
fn nat_table() {
    require_root();
    let gateway = Gateway::new("eipgw-nat");
    let link = gateway.link;
    let (failed, checked) = gateway.run(SNAT_PORTS, |dataplane, ifindexes, eips| {
        let mut table = Table::new(dataplane, ifindexes, eips, link, SNAT_PORTS);
        dnat_rows(&mut table);
        snat_rows(&mut table);
        (table.failed, table.checked)
    });
    assert_none_failed(&failed, checked);
}

/// Two ports for [`EIP_SNAT`] per protocol: two UDP flows take them, the third is refused
/// (RFC 5508 REQ-8 style: ICMP administratively prohibited back to the host), counted for
/// the EIP; an expiry frees the ports again.
#[test]
fn snat_port_exhaustion() {
    require_root();
    let gateway = Gateway::new("eipgw-snx");
    let link = gateway.link;
    let (failed, checked) = gateway.run(SNAT_TWO_PORTS, |dataplane, ifindexes, eips| {
        let mut table = Table::new(dataplane, ifindexes, eips, link, SNAT_TWO_PORTS);
        exhaustion_rows(&mut table);
        (table.failed, table.checked)
    });
    assert_none_failed(&failed, checked);
}

/// Rows (and checks of the session table) run in order on one data plane. A failing one
/// is recorded and the run goes on, so that one run reports every failure.
struct Table<'a> {
    dataplane: &'a mut Dataplane,
    ifindexes: &'a Ifindexes,
    eips: &'a [Ipv4Addr],
    link: Link,
    snat: SnatConfig,
    checked: usize,
    failed: Vec<String>,
}

impl<'a> Table<'a> {
    fn new(
        dataplane: &'a mut Dataplane,
        ifindexes: &'a Ifindexes,
        eips: &'a [Ipv4Addr],
        link: Link,
        snat: SnatConfig,
    ) -> Self {
        Table { dataplane, ifindexes, eips, link, snat, checked: 0, failed: Vec::new() }
    }

    /// Runs `check` under `name`, and records `name` if it panics.
    fn step<T>(&mut self, name: &str, check: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.checked += 1;
        let result = panic::catch_unwind(AssertUnwindSafe(|| check(self)));
        if result.is_err() {
            self.failed.push(name.to_owned());
        }
        result.ok()
    }

    fn row(&mut self, row: Row) {
        self.step(row.name, |t| check_row(t.dataplane, t.ifindexes, t.eips, &row));
    }

    /// The first outbound frame of a SNAT flow whose public port (or echo identifier) the
    /// program picks: `input` with `ports` must leave as `output` with the same ports but
    /// for the source port, which must be one of the range that none of `taken` holds.
    /// Returns that port, or 0 if the row failed (so that the rows using it fail too,
    /// after it in the report).
    fn snat_new(
        &mut self,
        name: &'static str,
        l4: L4,
        (input, ports): (Hdr, Ports),
        output: Hdr,
        taken: &[u16],
    ) -> u16 {
        let checked = self.step(name, |t| {
            let input = frame_with(input, l4, ports);
            let ran = run_frame(t.dataplane, t.ifindexes, t.eips, Ingress::Lan, &input);
            let at = l4.port_offset();
            let port = ran.output.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let expected = frame_with(output, l4, Ports { src: port, ..ports });
            let row = Row {
                name,
                ingress: Ingress::Lan,
                input,
                action: XDP_REDIRECT,
                output: Output::Rewritten(expected),
                verdict: Verdict::Translated,
                counted_eip: Some(output.src),
            };
            check_ran(&row, &ran, t.eips);
            let range = t.snat.port_min..=t.snat.port_max;
            assert!(
                range.contains(&port) && !taken.contains(&port),
                "{name}: public port {port} is not one of {range:?} that is free (taken: {taken:?})"
            );
            port
        });
        checked.unwrap_or(0)
    }

    /// Checks that the session of `private` (address, port) of `protocol` is listed with
    /// `public_port` on [`EIP_SNAT`], last to `remote` (its port unless ICMP, which has
    /// none), in `state`.
    fn session(
        &mut self,
        name: &str,
        protocol: &str,
        private: (Ipv4Addr, u16),
        public_port: u16,
        remote: (Ipv4Addr, u16),
        state: &str,
    ) {
        self.step(name, |t| {
            let sessions = t.dataplane.snat_sessions().expect("listing the SNAT sessions");
            let session = sessions
                .iter()
                .find(|s| {
                    (s.protocol, s.private_ip, s.private_port) == (protocol, private.0, private.1)
                })
                .unwrap_or_else(|| {
                    panic!("{name}: no {protocol} session of {private:?} in {sessions:#?}")
                });
            let remote_port = if protocol == "icmp" { remote.1 } else { session.remote_port };
            let got = (session.eip, session.public_port, session.remote_ip, remote_port);
            assert!(
                got == (EIP_SNAT, public_port, remote.0, remote.1) && session.state == state,
                "{name}: expected {EIP_SNAT}:{public_port} to {remote:?}, {state}; got \
                 {session:#?}"
            );
        });
    }

    /// Runs the agent's expiry at `now_ns` and checks that it removed `removed` sessions
    /// and left `left`.
    fn expire(&mut self, name: &str, now_ns: u64, removed: usize, left: usize) {
        self.step(name, |t| {
            let got = t.dataplane.expire_snat_sessions(now_ns).expect("expiring SNAT sessions");
            let sessions = t.dataplane.snat_sessions().expect("listing the SNAT sessions");
            assert!(
                (got, sessions.len()) == (removed, left),
                "{name}: expected {removed} sessions removed and {left} left; {got} removed, \
                 left: {sessions:#?}"
            );
        });
    }

    fn session_count(&mut self) -> usize {
        self.step("listing the SNAT sessions", |t| {
            t.dataplane.snat_sessions().expect("listing the SNAT sessions").len()
        })
        .unwrap_or(0)
    }
}

/// DNAT (R26): [`EIP_DNAT`]'s port mappings to [`NAT_SERVER`] both ways, stateless, and
/// [`EIP_DNAT_IP`]'s IP mapping, which is the 1:1 path.
fn dnat_rows(table: &mut Table) {
    use Ingress::{Lan, Wan};
    let link = table.link;
    let inbound = link.inbound(EIP_DNAT);
    let to_server = Hdr { dst: NAT_SERVER, ..link.to_lan(inbound, NAT_SERVER_MAC) };
    let from_server = link.outbound(NAT_SERVER, NAT_SERVER_MAC);
    let to_internet = Hdr { src: EIP_DNAT, ..link.to_wan(from_server) };
    let (tcp, udp) = (DNAT_TCP_PORT, DNAT_UDP_PORT);
    let (server_tcp, server_udp) = (NAT_SERVER_TCP_PORT, NAT_SERVER_UDP_PORT);
    // What the server sent, as the Internet host received it (from the EIP's port) and as
    // the server sent it: what an ICMP error about it quotes.
    let sent_by_server = |src: Ipv4Addr, port: u16| {
        let hdr = Hdr { src, dst: INTERNET_HOST, ttl: TTL_AT_HOST, ..from_server };
        ip_packet_with(hdr, L4::Udp, ports(port, 5353))
    };
    // What reached the server, as the Internet host sent it (to the EIP's port) and as the
    // server received it: what an error the server sends about it quotes.
    let received_by_server = |dst: Ipv4Addr, l4: L4, port: u16| {
        let hdr = Hdr { src: INTERNET_HOST, dst, ttl: TTL_AT_HOST, ..inbound };
        ip_packet_with(hdr, l4, ports(5353, port))
    };
    let ip_inbound = link.inbound(EIP_DNAT_IP);
    let to_ip_host = Hdr { dst: NAT_IP_HOST, ..link.to_lan(ip_inbound, NAT_IP_HOST_MAC) };
    let from_ip_host = link.outbound(NAT_IP_HOST, NAT_IP_HOST_MAC);
    let ip_to_internet = Hdr { src: EIP_DNAT_IP, ..link.to_wan(from_ip_host) };

    let rows = vec![
        // Destination address and port rewritten, and both checksums that cover them.
        forwarded_with(
            "DNAT: inbound TCP SYN to a mapped port",
            Wan,
            L4::TcpSyn,
            (inbound, ports(40_000, tcp)),
            (to_server, ports(40_000, server_tcp)),
        ),
        forwarded_with(
            "DNAT: the server's SYN-ACK leaves from the EIP's port",
            Lan,
            L4::TcpSynAck,
            (from_server, ports(server_tcp, 40_000)),
            (to_internet, ports(tcp, 40_000)),
        ),
        forwarded_with(
            "DNAT: inbound UDP to a mapped port",
            Wan,
            L4::Udp,
            (inbound, ports(5353, udp)),
            (to_server, ports(5353, server_udp)),
        ),
        forwarded_with(
            "DNAT: the server's UDP answer leaves from the EIP's port",
            Lan,
            L4::Udp,
            (from_server, ports(server_udp, 5353)),
            (to_internet, ports(udp, 5353)),
        ),
        // RFC 768: no checksum stays no checksum.
        forwarded_with(
            "DNAT: inbound UDP without checksum to a mapped port",
            Wan,
            L4::UdpWithoutChecksum,
            (inbound, ports(5353, udp)),
            (to_server, ports(5353, server_udp)),
        ),
        // The quoted packet left from the EIP's port: translated back to the server's.
        translated_error(
            "DNAT: inbound ICMP port unreachable about the server's UDP answer",
            Wan,
            (inbound, to_server),
            port_unreachable(),
            &sent_by_server(EIP_DNAT, udp),
            &sent_by_server(NAT_SERVER, server_udp),
        ),
        // And the other way: the server's error about what reached it. The quoted
        // destination (the server and its port) becomes the EIP and its port.
        translated_error(
            "DNAT: outbound ICMP port unreachable from the server about a mapped datagram",
            Lan,
            (from_server, to_internet),
            port_unreachable(),
            &received_by_server(NAT_SERVER, L4::Udp, server_udp),
            &received_by_server(EIP_DNAT, L4::Udp, udp),
        ),
        translated_error(
            "DNAT: outbound ICMP error from the server about a TCP segment, 8 bytes quoted",
            Lan,
            (from_server, to_internet),
            port_unreachable(),
            &cut(
                received_by_server(NAT_SERVER, L4::TcpSyn, server_tcp),
                IPV4_LEN + QUOTED_L4_BYTES,
            ),
            &cut(received_by_server(EIP_DNAT, L4::TcpSyn, tcp), IPV4_LEN + QUOTED_L4_BYTES),
        ),
        untouched(
            "DNAT: outbound ICMP error from the server about a port no mapping holds",
            Lan,
            icmp_error(
                from_server,
                port_unreachable(),
                &received_by_server(NAT_SERVER, L4::Udp, server_udp + 1),
            ),
            XDP_DROP,
            Verdict::DropIcmpErrorUnmatched,
        ),
        // The server's security group lets in its TCP and UDP ports (the ones it sees,
        // not the EIP's: the rows above pass), and not this one.
        untouched(
            "DNAT: inbound to a mapped port the target's security group does not allow",
            Wan,
            frame_with(inbound, L4::TcpSyn, ports(40_000, DNAT_SSH_PORT)),
            XDP_DROP,
            Verdict::DropSecurityGroup,
        ),
        untouched(
            "DNAT: inbound to a port with no mapping",
            Wan,
            frame_with(inbound, L4::TcpSyn, ports(40_000, tcp + 1)),
            XDP_DROP,
            Verdict::DropNoNatMapping,
        ),
        // A mapping is for one protocol.
        untouched(
            "DNAT: inbound UDP to the TCP mapping's port",
            Wan,
            frame_with(inbound, L4::Udp, ports(5353, tcp)),
            XDP_DROP,
            Verdict::DropNoNatMapping,
        ),
        // The server has no egress but its mappings (no SNAT entry covers it).
        untouched(
            "DNAT: outbound from the server's port with no mapping",
            Lan,
            frame_with(from_server, L4::Udp, ports(5353, 53)),
            XDP_DROP,
            Verdict::DropNoEgress,
        ),
        // An IP mapping claims every port (R28): all of them, and ICMP, both ways.
        forwarded("DNAT IP mapping: inbound TCP SYN", Wan, L4::TcpSyn, ip_inbound, to_ip_host),
        forwarded("DNAT IP mapping: inbound UDP", Wan, L4::Udp, ip_inbound, to_ip_host),
        forwarded(
            "DNAT IP mapping: inbound ICMP echo request",
            Wan,
            L4::IcmpEchoRequest,
            ip_inbound,
            to_ip_host,
        ),
        forwarded(
            "DNAT IP mapping: outbound TCP leaves from the EIP",
            Lan,
            L4::TcpData,
            from_ip_host,
            ip_to_internet,
        ),
        forwarded(
            "DNAT IP mapping: outbound UDP leaves from the EIP",
            Lan,
            L4::Udp,
            from_ip_host,
            ip_to_internet,
        ),
    ];
    for row in rows {
        table.row(row);
    }
}

/// SNAT (R25) through [`EIP_SNAT`]: new flows, existing ones, replies, ICMP errors and
/// fragments, then expiry.
fn snat_rows(table: &mut Table) {
    use Ingress::{Lan, Wan};
    let link = table.link;
    // From a SNAT host, as it leaves wan0; to the EIP, as it leaves lan0 for a host.
    let host = link.outbound(SNAT_HOST, SNAT_HOST_MAC);
    let host_out = Hdr { src: EIP_SNAT, ..link.to_wan(host) };
    let host_2 = link.outbound(SNAT_HOST_2, SNAT_HOST_2_MAC);
    let host_2_out = Hdr { src: EIP_SNAT, ..link.to_wan(host_2) };
    let inbound = link.inbound(EIP_SNAT);
    let to_host = Hdr { dst: SNAT_HOST, ..link.to_lan(inbound, SNAT_HOST_MAC) };
    let to_host_2 = Hdr { dst: SNAT_HOST_2, ..link.to_lan(inbound, SNAT_HOST_2_MAC) };
    let kept = KEPT_PORT;

    // A new UDP flow whose source port is free and in the range keeps it (RFC 4787 REQ-3
    // prefers port preservation), and the session says so.
    table.row(forwarded_with(
        "SNAT: a new UDP flow keeps its source port, free and in the range",
        Lan,
        L4::Udp,
        (host, ports(kept, 53)),
        (host_out, ports(kept, 53)),
    ));
    table.session(
        "SNAT: the new UDP flow's session is listed",
        "udp",
        (SNAT_HOST, kept),
        kept,
        (INTERNET_HOST, 53),
        "open",
    );
    table.row(forwarded_with(
        "SNAT: the UDP flow's next frame uses its session",
        Lan,
        L4::Udp,
        (host, ports(kept, 53)),
        (host_out, ports(kept, 53)),
    ));
    // Endpoint-independent mapping (RFC 4787 REQ-1).
    let other = Hdr { dst: INTERNET_OTHER, ..host };
    table.row(forwarded_with(
        "SNAT: the same source to another destination keeps its public port",
        Lan,
        L4::Udp,
        (other, ports(kept, 123)),
        (Hdr { dst: INTERNET_OTHER, ..host_out }, ports(kept, 123)),
    ));
    table.session(
        "SNAT: the session names the last destination",
        "udp",
        (SNAT_HOST, kept),
        kept,
        (INTERNET_OTHER, 123),
        "open",
    );
    table.row(forwarded_with(
        "SNAT: the UDP reply to the public port goes back to the host",
        Wan,
        L4::Udp,
        (inbound, ports(53, kept)),
        (to_host, ports(53, kept)),
    ));

    // TCP, with ports of its own: the same private port is kept for it too.
    table.row(forwarded_with(
        "SNAT: a new TCP flow (SYN) keeps its source port",
        Lan,
        L4::TcpSyn,
        (host, ports(kept, 443)),
        (host_out, ports(kept, 443)),
    ));
    table.session(
        "SNAT: the TCP session is in its handshake",
        "tcp",
        (SNAT_HOST, kept),
        kept,
        (INTERNET_HOST, 443),
        "handshake",
    );
    table.row(forwarded_with(
        "SNAT: the SYN-ACK goes back to the host",
        Wan,
        L4::TcpSynAck,
        (inbound, ports(443, kept)),
        (to_host, ports(443, kept)),
    ));
    table.session(
        "SNAT: the answered TCP session is established",
        "tcp",
        (SNAT_HOST, kept),
        kept,
        (INTERNET_HOST, 443),
        "established",
    );
    table.row(forwarded_with(
        "SNAT: the TCP flow's data uses its session",
        Lan,
        L4::TcpData,
        (host, ports(kept, 443)),
        (host_out, ports(kept, 443)),
    ));

    // ICMP echo: the identifier is the port; ECHO_ID is outside the range.
    let echo_id = table.snat_new(
        "SNAT: an echo request's identifier outside the range is translated into it",
        L4::IcmpEchoRequest,
        (host, ports(ECHO_ID, 0)),
        host_out,
        &[],
    );
    table.session(
        "SNAT: the ICMP session is listed",
        "icmp",
        (SNAT_HOST, ECHO_ID),
        echo_id,
        (INTERNET_HOST, 0), // not compared
        "open",
    );
    table.row(forwarded_with(
        "SNAT: the echo reply goes back to the host with its identifier",
        Wan,
        L4::IcmpEchoReply,
        (inbound, ports(echo_id, 0)),
        (to_host, ports(ECHO_ID, 0)),
    ));

    // A source port outside the range, and one another host's session holds, each get
    // another port from the range.
    let outside = table.snat_new(
        "SNAT: a source port outside the range gets one from it",
        L4::Udp,
        (host, ports(5353, 53)),
        host_out,
        &[kept],
    );
    table.row(forwarded_with(
        "SNAT: the reply to that port goes back to the host's port",
        Wan,
        L4::Udp,
        (inbound, ports(53, outside)),
        (to_host, ports(53, 5353)),
    ));
    let moved = table.snat_new(
        "SNAT: a source port another host's session holds gets another",
        L4::Udp,
        (host_2, ports(kept, 53)),
        host_2_out,
        &[kept, outside],
    );
    table.row(forwarded_with(
        "SNAT: the reply to that port goes back to the second host",
        Wan,
        L4::Udp,
        (inbound, ports(53, moved)),
        (to_host_2, ports(53, kept)),
    ));
    table.row(forwarded_with(
        "SNAT: the first host's reply still goes to the first host",
        Wan,
        L4::Udp,
        (inbound, ports(53, kept)),
        (to_host, ports(53, kept)),
    ));

    // ICMP errors about SNAT'ed flows (RFC 5508 REQ-3): the quoted source (EIP and public
    // port) translated back, with the quoted checksums.
    let sent_by_host = |src: Ipv4Addr, l4: L4, ports: Ports| {
        let hdr = Hdr { src, dst: INTERNET_HOST, ttl: TTL_AT_HOST, ..host };
        ip_packet_with(hdr, l4, ports)
    };
    table.row(translated_error(
        "SNAT: inbound ICMP port unreachable about a port-translated UDP flow",
        Wan,
        (inbound, to_host),
        port_unreachable(),
        &sent_by_host(EIP_SNAT, L4::Udp, ports(outside, 53)),
        &sent_by_host(SNAT_HOST, L4::Udp, ports(5353, 53)),
    ));
    table.row(translated_error(
        "SNAT: inbound ICMP time exceeded about the TCP flow, 8 bytes quoted",
        Wan,
        (inbound, to_host),
        ttl_exceeded(),
        &cut(sent_by_host(EIP_SNAT, L4::TcpSyn, ports(kept, 443)), IPV4_LEN + QUOTED_L4_BYTES),
        &cut(sent_by_host(SNAT_HOST, L4::TcpSyn, ports(kept, 443)), IPV4_LEN + QUOTED_L4_BYTES),
    ));
    // And the host's own error about a reply that came back on its session: the quoted
    // destination (the host and its private port) becomes the EIP and the public port.
    let received_by_host = |dst: Ipv4Addr, l4: L4, ports: Ports| {
        let hdr = Hdr { src: INTERNET_HOST, dst, ttl: TTL_AT_HOST, ..inbound };
        ip_packet_with(hdr, l4, ports)
    };
    table.row(translated_error(
        "SNAT: outbound ICMP port unreachable from the host about a reply on its session",
        Lan,
        (host, host_out),
        port_unreachable(),
        &received_by_host(SNAT_HOST, L4::Udp, ports(53, 5353)),
        &received_by_host(EIP_SNAT, L4::Udp, ports(53, outside)),
    ));

    // Nothing holds a UDP port of the range that no row was given.
    let udp_taken = [kept, outside, moved];
    let free = (SNAT_PORTS.port_min..=SNAT_PORTS.port_max)
        .rev()
        .find(|port| !udp_taken.contains(port))
        .expect("a free port");
    table.row(untouched(
        "SNAT: outbound ICMP error from the host about a port no session holds",
        Lan,
        icmp_error(
            host,
            port_unreachable(),
            &received_by_host(SNAT_HOST, L4::Udp, ports(53, free)),
        ),
        XDP_DROP,
        Verdict::DropIcmpErrorUnmatched,
    ));
    table.row(untouched(
        "SNAT: inbound to a port no session holds",
        Wan,
        frame_with(inbound, L4::Udp, ports(53, free)),
        XDP_DROP,
        Verdict::DropNoNatMapping,
    ));
    table.row(untouched(
        "SNAT: outbound of a protocol without ports",
        Lan,
        experimental_frame(host, b"no ports"),
        XDP_DROP,
        Verdict::DropNoEgress,
    ));

    // Fragments (RFC 791): the first creates the session and the fragment state, the
    // later one follows it by IP id. An inbound later fragment with no state is dropped;
    // an outbound one from a SNAT host that came ahead of its first gets the host's EIP,
    // the same for every datagram it sends (paired pooling, RFC 4787 REQ-2).
    let fragment_port = table.snat_new(
        "SNAT: the first fragment of a new UDP flow gets a port",
        L4::UdpFirstFragment,
        (host, ports(FRAGMENT_PORT, 53)),
        host_out,
        &udp_taken,
    );
    table.row(forwarded(
        "SNAT: the last fragment gets the first's address",
        Lan,
        L4::UdpLastFragment,
        host,
        host_out,
    ));
    // Where it goes is in the first fragment, which has not passed: the frame is handed to
    // the agent to wait for it (the topology test follows it through).
    table.row(untouched(
        "SNAT: inbound later fragment with no fragment state is held",
        Wan,
        frame(inbound, L4::UdpLastFragment),
        XDP_DROP,
        Verdict::FragmentHeld,
    ));
    table.step("SNAT: the held fragment waits with the agent", |t| {
        let report = t.dataplane.release_held_fragments().expect("releasing held fragments");
        assert_eq!((report.sent, report.dropped, report.waiting), (0, 0, 1), "{report:?}");
    });
    table.row(forwarded(
        "SNAT: an outbound later fragment ahead of its first gets the host's EIP",
        Lan,
        L4::UdpLastFragment,
        host_2,
        host_2_out,
    ));
    table.session(
        "SNAT: the fragmented flow's session is listed",
        "udp",
        (SNAT_HOST, FRAGMENT_PORT),
        fragment_port,
        (INTERNET_HOST, 53),
        "open",
    );

    // Expiry: an agent's pass at the present removes no live session; one far ahead
    // removes them all, and their replies have nowhere to go. DNAT mappings stay.
    let sessions = table.session_count();
    table.expire(
        "SNAT: an expiry pass now removes no live session",
        monotonic_now_ns(),
        0,
        sessions,
    );
    table.row(forwarded_with(
        "SNAT: after a pass now the reply still goes back",
        Wan,
        L4::Udp,
        (inbound, ports(53, kept)),
        (to_host, ports(53, kept)),
    ));
    table.expire(
        "SNAT: an expiry pass long after removes every session",
        monotonic_now_ns() + LONG_AFTER_NS,
        sessions,
        0,
    );
    table.row(untouched(
        "SNAT: after expiry the reply is dropped",
        Wan,
        frame_with(inbound, L4::Udp, ports(53, kept)),
        XDP_DROP,
        Verdict::DropNoNatMapping,
    ));
    table.row(untouched(
        "SNAT: after expiry the echo reply is dropped",
        Wan,
        frame_with(inbound, L4::IcmpEchoReply, ports(echo_id, 0)),
        XDP_DROP,
        Verdict::DropNoNatMapping,
    ));
    // The port the first host held is free again: the second host keeps it now.
    table.row(forwarded_with(
        "SNAT: after expiry a freed source port is kept by a new flow",
        Lan,
        L4::Udp,
        (host_2, ports(kept, 53)),
        (host_2_out, ports(kept, 53)),
    ));
    table.row(forwarded_with(
        "DNAT: a port mapping outlives the SNAT expiry",
        Wan,
        L4::Udp,
        (link.inbound(EIP_DNAT), ports(5353, DNAT_UDP_PORT)),
        (
            Hdr { dst: NAT_SERVER, ..link.to_lan(link.inbound(EIP_DNAT), NAT_SERVER_MAC) },
            ports(5353, NAT_SERVER_UDP_PORT),
        ),
    ));
}

/// [`snat_port_exhaustion`]'s rows, with [`SNAT_TWO_PORTS`].
fn exhaustion_rows(table: &mut Table) {
    use Ingress::Lan;
    let link = table.link;
    let host = link.outbound(SNAT_HOST, SNAT_HOST_MAC);
    let host_out = Hdr { src: EIP_SNAT, ..link.to_wan(host) };
    let host_2 = link.outbound(SNAT_HOST_2, SNAT_HOST_2_MAC);
    let host_2_out = Hdr { src: EIP_SNAT, ..link.to_wan(host_2) };
    let first = SNAT_TWO_PORTS.port_min;

    table.row(forwarded_with(
        "exhaustion: a first UDP flow keeps its port, the range's first",
        Lan,
        L4::Udp,
        (host, ports(first, 53)),
        (host_out, ports(first, 53)),
    ));
    table.snat_new(
        "exhaustion: a second UDP flow gets the range's other port",
        L4::Udp,
        (host, ports(5353, 53)),
        host_out,
        &[first],
    );
    // Refused, and told so: from the gateway's LAN address, quoting the packet as sent.
    table.row(Row {
        counted_eip: Some(EIP_SNAT),
        ..answered(
            "exhaustion: a third UDP flow is refused with ICMP administratively prohibited",
            Lan,
            frame(host_2, L4::Udp),
            GW_LAN,
            admin_prohibited(),
            Verdict::SnatRefused,
        )
    });
    table.step("exhaustion: the EIP counts one refused packet", |t| {
        let counters = t.dataplane.eip_counters(EIP_SNAT).expect("counters").expect("a slot");
        assert_eq!(counters.snat_refused_packets, 1, "{counters:?}");
    });
    table.row(forwarded_with(
        "exhaustion: an existing flow still passes",
        Lan,
        L4::Udp,
        (host, ports(first, 53)),
        (host_out, ports(first, 53)),
    ));
    table.snat_new(
        "exhaustion: TCP has ports of its own",
        L4::TcpSyn,
        (host_2, ports(40_000, 443)),
        host_2_out,
        &[],
    );
    table.expire(
        "exhaustion: an expiry pass long after removes every session",
        monotonic_now_ns() + LONG_AFTER_NS,
        3,
        0,
    );
    table.snat_new(
        "exhaustion: once the sessions expired, the refused flow gets a port",
        L4::Udp,
        (host_2, ports(5353, 53)),
        host_2_out,
        &[],
    );
}
