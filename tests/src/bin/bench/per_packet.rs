//! Section 1: what one frame costs on each path through the program, against the reference
//! program (`eipgw_reference`: parse, route, forward; no translation), both run by
//! BPF_PROG_TEST_RUN on the same frames in the packet tests' gateway namespace.
//!
//! BPF_PROG_TEST_RUN repeats a program on one buffer, so what a run changes the next one
//! sees. The frames are made to hit the same path every time: each translated address is
//! also mapped back (the EIP to the instance, and the instance to the EIP as if it were an
//! EIP too), so that run n + 1 translates back what run n translated. The TTL still falls by
//! one a run, so each call repeats a frame 200 times from TTL 255, and a sample is the mean
//! over many calls: [`PACKETS_PER_SAMPLE`] frames in all.
//!
//! The SNAT paths (the tail-called `eipgw_nat`) are held steady the same way: the EIP that
//! a SNAT source leaves through is itself made a SNAT source, leaving through a NAT gateway
//! "EIP" that is the source's own address. Run n translates the source to the EIP, run
//! n + 1 back, and after the first two runs every run finds its session. A new session
//! cannot be repeated at all, so it is measured one run per call (repeat 1), each call
//! from a port no session holds yet, and set beside the existing session and the
//! reference measured the same way: a call's timing then includes the kernel's clock reads
//! around one run (the same for all three), which repeat 200 spreads thin.

use std::net::Ipv4Addr;

use aya::programs::{TestRun as _, TestRunOptions, Xdp, XdpMode};
use eipgw::dataplane::{Dataplane, DataplaneOptions, EipMapping, load_object};
use eipgw_common::{PIN_DIR_NAME, PROGRAM_REFERENCE, SnatConfig, Verdict};
use eipgw_tests::{Mount, gateway_ns::*, unique_suffix};
use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};

use crate::report::{Figure, Report};

const SECTION: &str = "1. per-packet cost (BPF_PROG_TEST_RUN, ns/packet)";
/// Runs of one frame per BPF_PROG_TEST_RUN call: from TTL 255 it never expires.
const REPEAT: u32 = 200;
const PACKETS_PER_SAMPLE: u64 = 1_000_000;
/// Setups, one sample of every figure each.
const SAMPLES: usize = 7;
/// New SNAT sessions made per setup, one per call (their ports 1024 and up, all free).
const NEW_SESSIONS: u32 = 20_000;
/// The SNAT source's port on the existing-session path: far from the new sessions' ports.
const SNAT_EXISTING_PORT: u16 = 40_000;
/// The names of the repeat-1 figures.
pub const SNAT_NEW_ONE_RUN: &str = "SNAT new session (1 run a call)";
pub const SNAT_EXISTING_ONE_RUN: &str = "SNAT existing session (1 run a call)";
/// The size of the mapping tables: the paths need a handful.
const MAX_MAPPINGS: u32 = 1024;

/// One path: the frame the gateway gets, the frame the reference gets (the same headers,
/// addressed so that it is routed the same way), the ingress side, and the verdict every
/// one of the gateway's runs must end with.
struct FramePath {
    name: &'static str,
    gateway_frame: Vec<u8>,
    reference_frame: Vec<u8>,
    ingress: &'static str,
    verdict: Verdict,
}

fn tcp(eth: ([u8; 6], [u8; 6]), src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    // 64 bytes on the wire without the FCS: the smallest Ethernet frame.
    let payload = [0u8; 10];
    let builder = PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv4(src.octets(), dst.octets(), 255)
        .tcp(40_000, 443, 1, 64_240);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload).expect("a TCP frame");
    frame
}

/// A 64-byte UDP frame from `src` to the Internet host's DNS port, checksum set.
fn udp(eth: ([u8; 6], [u8; 6]), src: (Ipv4Addr, u16)) -> Vec<u8> {
    let payload = [0u8; 22];
    let builder = PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv4(src.0.octets(), INTERNET_HOST.octets(), 255)
        .udp(src.1, 53);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload).expect("a UDP frame");
    frame
}

/// ICMP port unreachable from the Internet host to `to`, quoting UDP that `to` sent.
fn port_unreachable(eth: ([u8; 6], [u8; 6]), to: Ipv4Addr) -> Vec<u8> {
    let quoted = PacketBuilder::ipv4(to.octets(), INTERNET_HOST.octets(), 64).udp(5353, 53);
    let mut quote = Vec::new();
    quoted.write(&mut quote, &[0u8; 8]).expect("the quoted datagram");
    let builder = PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv4(INTERNET_HOST.octets(), to.octets(), 255)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
    let mut frame = Vec::new();
    builder.write(&mut frame, &quote).expect("an ICMP error");
    frame
}

fn paths(wan_mac: [u8; 6], lan_mac: [u8; 6]) -> Vec<FramePath> {
    let from_internet = (INTERNET_HOST_MAC, wan_mac);
    let from_vm = (VM_MAC, lan_mac);
    vec![
        FramePath {
            name: "inbound NAT hit",
            gateway_frame: tcp(from_internet, INTERNET_HOST, EIP_VM),
            reference_frame: tcp(from_internet, INTERNET_HOST, VM),
            ingress: WAN_IF,
            verdict: Verdict::Translated,
        },
        FramePath {
            name: "outbound NAT hit",
            gateway_frame: tcp(from_vm, VM, INTERNET_HOST),
            reference_frame: tcp(from_vm, VM, INTERNET_HOST),
            ingress: LAN_IF,
            verdict: Verdict::Translated,
        },
        FramePath {
            name: "miss (to no EIP)",
            gateway_frame: tcp(from_internet, INTERNET_HOST, UNMAPPED),
            reference_frame: tcp(from_internet, INTERNET_HOST, UNMAPPED),
            ingress: WAN_IF,
            verdict: Verdict::PassNotTranslated,
        },
        FramePath {
            name: "non-IPv4 (ARP)",
            gateway_frame: arp_request(),
            reference_frame: arp_request(),
            ingress: WAN_IF,
            verdict: Verdict::PassNotTranslated,
        },
        FramePath {
            name: "SNAT existing session",
            gateway_frame: udp((SNAT_HOST_MAC, lan_mac), (SNAT_HOST, SNAT_EXISTING_PORT)),
            reference_frame: udp((SNAT_HOST_MAC, lan_mac), (SNAT_HOST, SNAT_EXISTING_PORT)),
            ingress: LAN_IF,
            verdict: Verdict::Translated,
        },
        FramePath {
            name: "ICMP error (quote translated)",
            gateway_frame: port_unreachable(from_internet, EIP_VM),
            reference_frame: port_unreachable(from_internet, VM),
            ingress: WAN_IF,
            verdict: Verdict::Translated,
        },
    ]
}

/// An Internet address that is no EIP.
const UNMAPPED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

pub fn run(quick: bool, report: &mut Report) {
    let (samples, packets) = if quick { (2, 50_000) } else { (SAMPLES, PACKETS_PER_SAMPLE) };
    // Per path: (gateway, reference) samples.
    let mut measured: Vec<(&'static str, Vec<f64>, Vec<f64>)> = Vec::new();
    // Each sample on a gateway set up afresh: the same program on new maps can run some ns
    // faster or slower for the life of the setup (where its maps landed in memory), more
    // than samples within one setup differ. Across setups, the spread shows it.
    for _ in 0..samples {
        for (name, gateway, reference) in one_setup(packets, 0, |_| true) {
            match measured.iter_mut().find(|(n, ..)| *n == name) {
                Some((_, g, r)) => {
                    g.push(gateway);
                    r.push(reference);
                }
                None => measured.push((name, vec![gateway], vec![reference])),
            }
        }
    }
    for (name, gateway, baseline) in measured {
        let reference_name = format!("{name}: reference");
        report.add(Figure {
            section: SECTION,
            name: reference_name.clone(),
            unit: "ns",
            samples: baseline,
            compared_with: None,
            target: None,
        });
        report.add(Figure {
            section: SECTION,
            name: format!("{name}: gateway"),
            unit: "ns",
            samples: gateway,
            compared_with: Some(reference_name),
            target: name.ends_with("NAT hit").then_some(("ratio", 1.4)),
        });
    }
}

/// Sets up the gateway namespace, the gateway (with `extra_mappings` more NAT mappings than
/// the paths need, spread over the table) and the reference program, and measures each path
/// that `wanted` picks once on both: (path, gateway ns, reference ns).
pub fn one_setup(
    packets: u64,
    extra_mappings: u32,
    wanted: fn(&str) -> bool,
) -> Vec<(&'static str, f64, f64)> {
    let suffix = unique_suffix();
    let bpffs = Mount::bpffs(&std::env::temp_dir().join(format!("eipgw-bench-{suffix}")))
        .expect("mounting a bpffs");
    let ns = gateway_netns("eipgw-bench", &suffix);
    let paths = paths(mac_of(&ns, WAN_IF), mac_of(&ns, LAN_IF));
    let options = DataplaneOptions {
        wan: WAN_IF.into(),
        lan: LAN_IF.into(),
        bpffs: bpffs.path().to_owned(),
        xdp_mode: XdpMode::Driver,
        max_mappings: (MAX_MAPPINGS + extra_mappings + extra_mappings / 16).next_power_of_two(),
        snat: SnatConfig::DEFAULT,
    };
    let max_mappings = options.max_mappings;
    ns.run_in(move || {
        // One CPU: every run meets the same per-CPU maps and caches.
        pin_to_cpu(0);
        let mut dataplane = Dataplane::open(&options).expect("opening the data plane");
        let mut desired = desired_maps();
        // The way back, so that every run is a hit (see the module doc).
        desired.eips.insert(VM, EipMapping::Nat { private_ip: EIP_VM });
        desired.eips.insert(SNAT_HOST, EipMapping::NatGateway);
        desired.snat_sources.insert(EIP_SNAT, SNAT_HOST);
        for n in 0..extra_mappings {
            let (eip, private_ip) = spread_mapping(n);
            desired.eips.insert(eip, EipMapping::Nat { private_ip });
        }
        dataplane.reconcile(&desired).expect("writing the maps");
        let reference =
            ReferenceProgram::load(&bpffs.path().join(PIN_DIR_NAME), WAN_PEER, max_mappings);
        let mut measured: Vec<(&'static str, f64, f64)> = paths
            .iter()
            .filter(|path| wanted(path.name))
            .map(|path| {
                let ingress = ifindex(path.ingress);
                check_path(&dataplane, path, ingress);
                let program = dataplane.program().expect("the gateway program");
                let gateway = ns_per_packet(program, &path.gateway_frame, ingress, packets);
                let program = reference.program();
                let baseline = ns_per_packet(program, &path.reference_frame, ingress, packets);
                (path.name, gateway, baseline)
            })
            .collect();
        if wanted(SNAT_NEW_ONE_RUN) {
            let calls = if packets < PACKETS_PER_SAMPLE { NEW_SESSIONS / 10 } else { NEW_SESSIONS };
            let existing = paths.iter().find(|p| p.name == "SNAT existing session");
            let existing = existing.expect("the SNAT existing-session path");
            let one_run = snat_one_run(&dataplane, &reference, existing, calls);
            measured.extend(one_run);
        }
        drop(dataplane);
        measured
    })
    .unwrap_or_else(|e| panic!("per-packet bench: {e:#}"))
}

/// Mapping `n` of the table-scale fill: EIPs from 100.64.0.0/10 (shared address space, to
/// which no frame is ever sent) in an order that scatters them over the whole range, each to
/// a private address of 10.128.0.0/10. None is a path's address.
pub fn spread_mapping(n: u32) -> (Ipv4Addr, Ipv4Addr) {
    // An odd multiplier permutes the 2^22 addresses of the range.
    let offset = n.wrapping_mul(2_654_435_761) & ((1 << 22) - 1);
    let eip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + offset);
    let private_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n);
    (eip, private_ip)
}

/// The reference program, loaded from the same object with the gateway's pinned maps.
struct ReferenceProgram(aya::Ebpf);

impl ReferenceProgram {
    /// Loads it and attaches it to `idle_ifname`, an interface no frame reaches. Attached
    /// in native mode, a program sits in the kernel's XDP dispatcher, as the gateway does:
    /// BPF_PROG_TEST_RUN then calls it directly, as it calls the gateway, instead of adding
    /// it to the dispatcher and taking it out again around every call (two RCU grace
    /// periods a call, and an indirect call in between, which would slow down only the
    /// reference).
    fn load(pin_dir: &std::path::Path, idle_ifname: &str, max_mappings: u32) -> Self {
        let mut ebpf = load_object(pin_dir, max_mappings)
            .expect("loading the object for the reference program");
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_REFERENCE)
            .expect("the reference program in the object")
            .try_into()
            .expect("an XDP program");
        program.load().expect("the verifier accepts the reference program");
        let name = std::ffi::CString::new(idle_ifname).expect("no NUL in an interface name");
        program
            .attach(name.as_c_str(), XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching the reference program to {idle_ifname}: {e}"));
        Self(ebpf)
    }

    fn program(&self) -> &Xdp {
        self.0
            .program(PROGRAM_REFERENCE)
            .expect("the reference program")
            .try_into()
            .expect("an XDP program")
    }
}

/// SNAT one run a call: `calls` new sessions (each call's frame from a port of its own),
/// then as many calls on the existing session's frame, on the gateway and on the
/// reference. Checks that every new-session call made a session and was translated.
fn snat_one_run(
    dataplane: &Dataplane,
    reference: &ReferenceProgram,
    existing: &FramePath,
    calls: u32,
) -> [(&'static str, f64, f64); 2] {
    let ingress = ifindex(LAN_IF);
    let program = dataplane.program().expect("the gateway program");
    // The existing path's frame is addressed to lan0: its destination MAC.
    let lan_mac: [u8; 6] = existing.gateway_frame[..6].try_into().expect("a MAC");
    let frames: Vec<Vec<u8>> = (0..calls)
        .map(|n| udp((SNAT_HOST_2_MAC, lan_mac), (SNAT_HOST_2, 1024 + n as u16)))
        .collect();
    let sessions = || dataplane.snat_sessions().expect("reading the SNAT sessions").len();
    let translated = || translated_count(dataplane);
    let (sessions_before, translated_before) = (sessions(), translated());
    let one_run = |program: &Xdp, frame: &[u8]| -> u128 {
        let ctx = xdp_md(frame.len(), ingress);
        let options =
            TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), ..Default::default() };
        let result =
            program.test_run(options).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
        result.duration.as_nanos()
    };
    let new_total: u128 = frames.iter().map(|frame| one_run(program, frame)).sum();
    let made = sessions() - sessions_before;
    let moved = translated() - translated_before;
    assert!(
        made == calls as usize && moved == u64::from(calls),
        "{SNAT_NEW_ONE_RUN}: {calls} calls made {made} sessions and translated {moved} frames"
    );
    let existing_total: u128 = (0..calls).map(|_| one_run(program, &existing.gateway_frame)).sum();
    let reference_total: u128 =
        (0..calls).map(|_| one_run(reference.program(), &existing.reference_frame)).sum();
    let mean = |total: u128| total as f64 / f64::from(calls);
    [
        (SNAT_NEW_ONE_RUN, mean(new_total), mean(reference_total)),
        (SNAT_EXISTING_ONE_RUN, mean(existing_total), mean(reference_total)),
    ]
}

fn translated_count(dataplane: &Dataplane) -> u64 {
    dataplane
        .verdict_counters()
        .expect("reading the verdict counters")
        .into_iter()
        .find(|(v, _)| *v == Verdict::Translated)
        .map_or(0, |(_, n)| n)
}

/// The mean time per frame over `packets` runs of `frame`, in ns (the kernel's own timing
/// of the repeats, without the system calls).
fn ns_per_packet(program: &Xdp, frame: &[u8], ingress: u32, packets: u64) -> f64 {
    let ctx = xdp_md(frame.len(), ingress);
    let calls = packets.div_ceil(u64::from(REPEAT));
    let mut total_ns = 0u128;
    for _ in 0..calls {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: REPEAT,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
        // The kernel reports the mean of the repeats, in whole ns.
        total_ns += result.duration.as_nanos() * u128::from(REPEAT);
    }
    total_ns as f64 / (calls * u64::from(REPEAT)) as f64
}

/// Refuses to measure a path that does not take the way it is named for: every one of a
/// call's runs must end with the path's verdict.
fn check_path(dataplane: &Dataplane, path: &FramePath, ingress: u32) {
    let count = |verdict: Verdict| {
        dataplane
            .verdict_counters()
            .expect("reading the verdict counters")
            .into_iter()
            .find(|(v, _)| *v == verdict)
            .map_or(0, |(_, n)| n)
    };
    let before = count(path.verdict);
    let program = dataplane.program().expect("the gateway program");
    let ctx = xdp_md(path.gateway_frame.len(), ingress);
    program
        .test_run(TestRunOptions {
            data_in: Some(&path.gateway_frame),
            ctx_in: Some(&ctx),
            repeat: REPEAT,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    let moved = count(path.verdict) - before;
    assert_eq!(
        moved,
        u64::from(REPEAT),
        "{}: only {moved} of {REPEAT} runs ended with {}; the bench would measure another path",
        path.name,
        path.verdict.name()
    );
}
