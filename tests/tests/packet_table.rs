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
//!  wanp ─── wan0 198.51.100.2/24  [eipgw-pt-*]  lan0 10.0.1.1/24 ─── lanp
//!           default via 198.51.100.1            10.0.1.10 at 02:00:00:00:00:0a
//!           198.51.100.1 at 02:00:00:00:00:01   10.0.1.99 with no neighbour entry
//! ```

use std::{
    ffi::CString,
    fmt::Write as _,
    net::Ipv4Addr,
    panic::{self, AssertUnwindSafe},
};

use aya::programs::{TestRun as _, TestRunOptions, XdpMode};
use eipgw::dataplane::{Dataplane, DataplaneOptions, DesiredMaps, EipMapping};
use eipgw_common::Verdict;
use eipgw_tests::{BpffsMount, Netns, require_root, unique_suffix};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IcmpEchoHeader,
    Icmpv4Header, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, TcpHeader,
    UdpHeader,
};

const WAN_IF: &str = "wan0";
const LAN_IF: &str = "lan0";
const WAN_PEER: &str = "wanp";
const LAN_PEER: &str = "lanp";

/// The WAN next hop (the default gateway), and the Internet host of every row.
const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const INTERNET_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The gateway's own WAN address.
const GW_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Associated with [`VM`].
const EIP_VM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Associated with [`VM_UNRESOLVED`].
const EIP_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// Allocated and never associated.
const EIP_UNASSOCIATED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const VM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
/// Has an EIP but no neighbour entry: the kernel has to resolve its MAC.
const VM_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
/// A VPC address without an EIP.
const VM_WITHOUT_EIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 50);

/// `enum xdp_action` (include/uapi/linux/bpf.h).
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Header sizes and the field offsets the malformed rows corrupt.
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV4_VERSION_IHL: usize = 0;
const TCP_DATA_OFFSET: usize = 12;
const UDP_LENGTH: usize = 4;

/// NOP, NOP, NOP, end of options (RFC 791): IHL 6, so the L4 header starts at byte 24.
const IPV4_OPTIONS: [u8; 4] = [1, 1, 1, 0];

const TCP_DATA: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const UDP_DATA: &[u8] = b"a DNS query, or close enough";
const ICMP_DATA: &[u8] = b"ping payload 0123456789";
/// The UDP datagram that [`L4::UdpFirstFragment`] and [`L4::UdpLastFragment`] split.
const FRAGMENTED_DATA: &[u8; 40] = b"fragmented datagram, forty bytes of it..";
/// How much of [`FRAGMENTED_DATA`] the first fragment carries: with the 8-byte UDP header
/// its payload is 24 bytes, a multiple of 8 as every fragment but the last (RFC 791).
const FIRST_FRAGMENT_DATA: usize = 16;
const FRAGMENT_ID: u16 = 0x4d2e;

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
    /// ACK|PSH with data.
    TcpData,
    Udp,
    /// UDP sent without a checksum (0, which RFC 768 allows over IPv4).
    UdpWithoutChecksum,
    IcmpEchoRequest,
    IcmpEchoReply,
    /// The first fragment of [`FRAGMENTED_DATA`] (MF set, offset 0): the UDP header, whose
    /// length and checksum cover the whole datagram, and the first bytes of data.
    UdpFirstFragment,
    /// The rest of [`FRAGMENTED_DATA`] (MF clear, offset 3): data only, no UDP header.
    UdpLastFragment,
}

/// Builds an Ethernet + IPv4 frame with every checksum computed by etherparse.
fn frame(hdr: Hdr, l4: L4) -> Vec<u8> {
    let (src, dst) = (hdr.src.octets(), hdr.dst.octets());
    let (protocol, l4_bytes) = match l4 {
        L4::TcpSyn => {
            let mut tcp = TcpHeader::new(40_000, 443, 0x1000_0000, 64_240);
            tcp.syn = true;
            (IpNumber::TCP, tcp_segment(tcp, src, dst, &[]))
        }
        L4::TcpData => {
            let mut tcp = TcpHeader::new(40_001, 80, 0x2000_0001, 502);
            tcp.acknowledgment_number = 0x3000_0001;
            tcp.ack = true;
            tcp.psh = true;
            (IpNumber::TCP, tcp_segment(tcp, src, dst, TCP_DATA))
        }
        L4::Udp => (IpNumber::UDP, udp_datagram(src, dst, UDP_DATA, true)),
        L4::UdpWithoutChecksum => (IpNumber::UDP, udp_datagram(src, dst, UDP_DATA, false)),
        L4::IcmpEchoRequest => (IpNumber::ICMP, icmp_echo(Icmpv4Type::EchoRequest)),
        L4::IcmpEchoReply => (IpNumber::ICMP, icmp_echo(Icmpv4Type::EchoReply)),
        L4::UdpFirstFragment => {
            let whole = udp_datagram(src, dst, FRAGMENTED_DATA, true);
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

fn udp_datagram(src: [u8; 4], dst: [u8; 4], data: &[u8], with_checksum: bool) -> Vec<u8> {
    let mut udp = UdpHeader::without_ipv4_checksum(5353, 53, data.len()).expect("a UDP header");
    if with_checksum {
        udp.checksum = udp.calc_checksum_ipv4_raw(src, dst, data).expect("a UDP checksum");
    }
    let mut out = udp.to_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn icmp_echo(kind: fn(IcmpEchoHeader) -> Icmpv4Type) -> Vec<u8> {
    let icmp = Icmpv4Header::with_checksum(kind(IcmpEchoHeader { id: 0x1234, seq: 7 }), ICMP_DATA);
    let mut out = icmp.to_bytes().to_vec();
    out.extend_from_slice(ICMP_DATA);
    out
}

/// A broadcast ARP request for the gateway's WAN address.
fn arp_request() -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &INTERNET_HOST_MAC,
        &INTERNET_HOST.octets(),
        &[0; 6],
        &GW_WAN.octets(),
    )
    .expect("an ARP packet");
    let eth = Ethernet2Header {
        source: INTERNET_HOST_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    };
    let mut out = eth.to_bytes().to_vec();
    out.extend_from_slice(&arp.to_bytes());
    out
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

#[derive(Clone, Copy, Debug)]
enum Ingress {
    Wan,
    Lan,
}

/// What the frame must look like after the program ran.
enum Output {
    /// Exactly as it came in: a drop, or a pass that leaves the frame to the kernel as is.
    Unchanged,
    /// Translated: compared byte for byte, and its checksums recomputed by etherparse.
    Translated(Vec<u8>),
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
}

/// A translated frame forwarded to the other interface.
fn forwarded(name: &'static str, ingress: Ingress, l4: L4, input: Hdr, output: Hdr) -> Row {
    Row {
        name,
        ingress,
        input: frame(input, l4),
        action: XDP_REDIRECT,
        output: Output::Translated(frame(output, l4)),
        verdict: Verdict::Translated,
    }
}

/// A frame the program must not modify.
fn untouched(
    name: &'static str,
    ingress: Ingress,
    input: Vec<u8>,
    action: u32,
    verdict: Verdict,
) -> Row {
    Row { name, ingress, input, action, output: Output::Unchanged, verdict }
}

fn rows(wan_mac: [u8; 6], lan_mac: [u8; 6]) -> Vec<Row> {
    use Ingress::{Lan, Wan};

    // A packet from the Internet as it reaches wan0, and the same packet as it must leave
    // through lan0: the private address as destination, TTL - 1 (the gateway is a router
    // hop), and the link addresses of the LAN hop.
    let from_internet = |to: Ipv4Addr| Hdr {
        eth_src: INTERNET_HOST_MAC,
        eth_dst: wan_mac,
        src: INTERNET_HOST,
        dst: to,
        ttl: 64,
        options: &[],
    };
    let to_vm =
        |hdr: Hdr| Hdr { eth_src: lan_mac, eth_dst: VM_MAC, dst: VM, ttl: hdr.ttl - 1, ..hdr };
    // And the other way: from an instance on lan0, leaving wan0 with its EIP as source.
    let from_vm = |from: Ipv4Addr| Hdr {
        eth_src: VM_MAC,
        eth_dst: lan_mac,
        src: from,
        dst: INTERNET_HOST,
        ttl: 64,
        options: &[],
    };
    let to_internet = |hdr: Hdr| Hdr {
        eth_src: wan_mac,
        eth_dst: INTERNET_HOST_MAC,
        src: EIP_VM,
        ttl: hdr.ttl - 1,
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
        // The kernel, as the router, sends ICMP time exceeded; it needs the frame as it came.
        untouched(
            "inbound with TTL 1",
            Wan,
            frame(Hdr { ttl: 1, ..inbound }, L4::Udp),
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
            output: Output::Translated(frame(Hdr { dst: VM_UNRESOLVED, ..unresolved }, L4::Udp)),
            verdict: Verdict::PassNeighbourUnknown,
        },
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
    ]
}

/// The map contents the rows rely on.
fn desired_maps() -> DesiredMaps {
    let mut desired = DesiredMaps::default();
    desired.eips.insert(EIP_VM, EipMapping::Nat { private_ip: VM });
    desired.eips.insert(EIP_UNRESOLVED, EipMapping::Nat { private_ip: VM_UNRESOLVED });
    desired.eips.insert(EIP_UNASSOCIATED, EipMapping::Unassociated);
    desired
}

/// The namespace of the module doc. The guard deletes it, with the veths and the XDP links
/// on them, on drop.
fn gateway_netns(suffix: &str) -> Netns {
    let ns = Netns::create(&format!("eipgw-pt-{suffix}")).expect("creating the namespace");
    let setup = || -> anyhow::Result<()> {
        // No IPv6, so that nothing but the rows reaches the attached program: DAD, router
        // solicitations and MLD reports from the veth peers would move PassNotTranslated.
        // `default` is set first so that the veths made next start without it.
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.ip(&["link", "add", WAN_IF, "type", "veth", "peer", "name", WAN_PEER])?;
        ns.ip(&["link", "add", LAN_IF, "type", "veth", "peer", "name", LAN_PEER])?;
        ns.ip(&["addr", "add", "198.51.100.2/24", "dev", WAN_IF])?;
        ns.ip(&["addr", "add", "10.0.1.1/24", "dev", LAN_IF])?;
        for dev in [WAN_IF, WAN_PEER, LAN_IF, LAN_PEER] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        ns.ip(&["route", "add", "default", "via", &INTERNET_HOST.to_string()])?;
        // bpf_fib_lookup answers BPF_FIB_LKUP_RET_FWD_DISABLED unless the ingress device
        // forwards.
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        for scope in ["all", "default", WAN_IF, LAN_IF] {
            ns.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        // Permanent neighbours: the FIB lookups succeed with MACs the rows know.
        // VM_UNRESOLVED deliberately has none.
        let neighbours = [(INTERNET_HOST, INTERNET_HOST_MAC, WAN_IF), (VM, VM_MAC, LAN_IF)];
        for (address, mac, dev) in neighbours {
            let (address, mac) = (address.to_string(), format_mac(mac));
            ns.ip(&["neigh", "add", &address, "lladdr", &mac, "dev", dev, "nud", "permanent"])?;
        }
        Ok(())
    };
    setup().unwrap_or_else(|e| panic!("setting up namespace {}: {e:#}", ns.name()));
    ns
}

/// The MAC address of an interface in `ns`, as `ip -j link` reports it.
fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let output = ns
        .ip(&["-j", "link", "show", "dev", ifname])
        .unwrap_or_else(|e| panic!("reading the MAC of {ifname}: {e:#}"));
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ip -j output");
    let text = links[0]["address"].as_str().expect("an address in `ip -j link` output");
    let octets: Vec<u8> =
        text.split(':').map(|octet| u8::from_str_radix(octet, 16).expect("a hex octet")).collect();
    octets.try_into().unwrap_or_else(|_| panic!("{ifname} has MAC {text}, not 6 octets"))
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|octet| format!("{octet:02x}")).join(":")
}

/// The ifindex of an interface in the calling thread's namespace.
fn ifindex(ifname: &str) -> u32 {
    let name = CString::new(ifname).expect("no NUL in an interface name");
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no interface {ifname} in this thread's namespace");
    index
}

struct Ifindexes {
    wan: u32,
    lan: u32,
}

/// `struct xdp_md` for `ctx_in`: the frame spans data..data_end with no metadata, and the
/// ingress interface picks both the direction and the namespace whose FIB
/// `bpf_fib_lookup` consults. Fields are u32 in the order of include/uapi/linux/bpf.h.
fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let (data, data_end, data_meta, rx_queue_index, egress_ifindex) =
        (0, frame_len as u32, 0, 0, 0);
    let fields = [data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex];
    fields.map(u32::to_ne_bytes).concat()
}

/// Runs one row and checks everything it states.
#[track_caller]
fn check_row(dataplane: &Dataplane, ifindexes: &Ifindexes, row: &Row) {
    let program = dataplane.program().expect("the loaded program");
    let ingress_ifindex = match row.ingress {
        Ingress::Wan => ifindexes.wan,
        Ingress::Lan => ifindexes.lan,
    };
    let ctx = xdp_md(row.input.len(), ingress_ifindex);
    // Room to spare: a frame that grew would show up as a longer output, not as ENOSPC.
    let mut data_out = vec![0; row.input.len() + 256];

    let before = verdict_counts(dataplane);
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&row.input),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{}: BPF_PROG_TEST_RUN failed: {e}", row.name));
    let after = verdict_counts(dataplane);
    let output = &data_out[..result.data_size_out as usize];

    assert_action(row.name, row.action, result.return_value, output);
    match &row.output {
        Output::Unchanged => assert_frame(row.name, "the input, unchanged", &row.input, output),
        Output::Translated(expected) => {
            assert_frame(row.name, "the translated frame", expected, output);
            assert_checksums(row.name, output);
        }
    }
    assert_counted(row.name, row.verdict, &before, &after);
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
        3 => "XDP_TX".into(),
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
        }
        other => panic!("{row}: no checksum to verify for IP protocol {other:?}"),
    }
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
    let suffix = unique_suffix();
    // Made before the namespace, so dropped after it: by then the veths, and the XDP links
    // pinned here, are gone.
    let bpffs = BpffsMount::create(&std::env::temp_dir().join(format!("eipgw-pt-{suffix}")))
        .expect("mounting a bpffs");
    let ns = gateway_netns(&suffix);
    let rows = rows(mac_of(&ns, WAN_IF), mac_of(&ns, LAN_IF));
    let options = DataplaneOptions {
        wan: WAN_IF.into(),
        lan: LAN_IF.into(),
        bpffs: bpffs.path().to_owned(),
        xdp_mode: XdpMode::Driver,
        max_mappings: 1024,
    };

    // One thread inside the namespace does everything that touches the program: the
    // kernel resolves ctx_in's ingress ifindex in the caller's namespace, and
    // bpf_fib_lookup routes in that device's. The data plane is dropped on this thread too,
    // before the namespace goes. Each row runs to the end even if an earlier one failed, so
    // that one run reports every failing row.
    let failed = ns
        .run_in(|| {
            let mut dataplane = Dataplane::open(&options).expect("opening the data plane");
            dataplane.reconcile(&desired_maps()).expect("writing the EIP maps");
            let ifindexes = Ifindexes { wan: ifindex(WAN_IF), lan: ifindex(LAN_IF) };
            rows.iter()
                .filter(|row| {
                    panic::catch_unwind(AssertUnwindSafe(|| check_row(&dataplane, &ifindexes, row)))
                        .is_err()
                })
                .map(|row| row.name)
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        failed.is_empty(),
        "{} of {} rows failed (each one's message is above): {failed:#?}",
        failed.len(),
        rows.len()
    );
}
