//! Section 2: forwarding throughput through veths (see `traffic` for the network, the
//! generator and the sink). The same generator and sink measure five ways of forwarding
//! the same inbound flows at `gw`: this gateway with 1:1 NAT mappings, a pure XDP forward
//! (the reference program), the kernel's IPv4 forwarding, nftables stateless 1:1 NAT, and
//! nftables stateful dnat/snat with conntrack.
//!
//! Each flow goes to an EIP of its own, so a NAT variant looks up as many keys as there are
//! flows; each NAT variant holds exactly that many mappings. In each of two rounds, every
//! variant gets a network made afresh, and the variants are measured in turn, one window
//! at a time, each after a warm-up that passes every flow (conntrack then holds an entry
//! for each).

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{MapData, xdp::DevMapHash},
    programs::{Xdp, XdpMode},
};
use eipgw::dataplane::{Dataplane, DataplaneOptions, DesiredMaps, EipMapping, load_object};
use eipgw_common::{MAP_EGRESS_DEVICES, PROGRAM_REFERENCE, SnatConfig};
use eipgw_tests::{
    Netns,
    gateway_ns::ifindex,
    netns::run_with_input,
    scale::private_ip,
    topology::{LAN_IF, WAN_IF},
};

use crate::{
    report::{Figure, Report},
    traffic::{BenchNet, FIRST_EIP, Sender, Traffic, Window},
};

const SECTION: &str = "2. forwarding throughput (veth, inet -> gw -> vm)";
/// The frames: 64 bytes on the wire (60 without the FCS, which a veth does not carry), and
/// full-size (an IPv4 packet of 1500 bytes, the MTU).
const FRAME_LENS: [(usize, &str); 2] = [(60, "64 B"), (1514, "1500 B")];

#[derive(Copy, Clone, PartialEq, Eq)]
enum Variant {
    Gateway,
    XdpForward,
    Kernel,
    NftStateless,
    NftStateful,
}

const VARIANTS: [Variant; 5] = [
    Variant::Gateway,
    Variant::XdpForward,
    Variant::Kernel,
    Variant::NftStateless,
    Variant::NftStateful,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Gateway => "eipgw 1:1 NAT",
            Variant::XdpForward => "pure XDP forward",
            Variant::Kernel => "kernel forwarding",
            Variant::NftStateless => "nftables stateless NAT",
            Variant::NftStateful => "nftables conntrack NAT",
        }
    }
}

/// What keeps a variant in place while it is measured.
enum Setup {
    /// The gateway's links are pinned in the network's bpffs: nothing to hold.
    Pinned,
    Program {
        _attached: Ebpf,
    },
    Nothing,
}

/// EIP `n` of the flows and the private address it is mapped to.
pub fn flow_mapping(n: u32) -> (Ipv4Addr, Ipv4Addr) {
    (Ipv4Addr::from(u32::from(FIRST_EIP) + n), private_ip(n))
}

pub fn run(quick: bool, report: &mut Report) {
    // The machine has two speeds: over stretches of seconds, every XDP path costs about
    // 100 ns more per packet, and then less again, whatever runs. Setups made afresh also
    // differ. So in each round every variant is set up afresh, all at once, and visited in
    // turn for one window at a time: a variant and the one it is compared with share the
    // machine's fast and slow stretches. A cell's figure is the median of all its windows.
    let (flow_counts, frame_lens, rounds, visits, seconds): (&[u32], &[(usize, &str)], _, _, _) =
        if quick {
            (&[1, 1000], &FRAME_LENS[..1], 1, 1, 0.15)
        } else {
            (&[1, 1000, 100_000], &FRAME_LENS, 2, 3, 1.0)
        };
    for &flows in flow_counts {
        // Per variant, per frame size: the windows.
        let mut measured: Vec<(Variant, &str, Vec<Window>)> = VARIANTS
            .iter()
            .flat_map(|&variant| frame_lens.iter().map(move |&(_, label)| (variant, label, vec![])))
            .collect();
        for _ in 0..rounds {
            // The setup before its network: a tuple drops its fields in order.
            let mut setups: Vec<(Variant, Setup, BenchNet)> = VARIANTS
                .into_iter()
                .map(|variant| {
                    let net =
                        BenchNet::create().unwrap_or_else(|e| panic!("forwarding bench: {e:#}"));
                    let setup = set_up(&net, variant, flows);
                    (variant, setup, net)
                })
                .collect();
            for _ in 0..visits {
                let mut cells = measured.iter_mut();
                for (variant, _, net) in &mut setups {
                    for &(frame_len, _) in frame_lens {
                        let traffic = Traffic {
                            from: Sender::Internet,
                            frame_len,
                            first_addr: FIRST_EIP,
                            first_port: 10_000,
                            flows,
                            addresses: flows,
                        };
                        // Every flow once at least (conntrack's entries made, caches warm).
                        net.send_frames(&traffic, flows.max(1 << 16) * 2)
                            .unwrap_or_else(|e| panic!("warming up {}: {e:#}", variant.name()));
                        let window = net
                            .send_for(&traffic, seconds)
                            .unwrap_or_else(|e| panic!("measuring {}: {e:#}", variant.name()));
                        let (_, _, cell) = cells.next().expect("a cell per variant and frame");
                        cell.push(window);
                    }
                }
            }
        }
        add_figures(report, flows, &measured);
    }
}

fn add_figures(report: &mut Report, flows: u32, measured: &[(Variant, &str, Vec<Window>)]) {
    let name = |label: &str, variant: Variant, what: &str| {
        format!("{label}, {flows} flows: {} {what}", variant.name())
    };
    for (variant, label, windows) in measured {
        let (variant, label) = (*variant, *label);
        // A rate (Mpps), against nftables stateless NAT (≥ 3×) and, for the gateway, also
        // against the pure XDP forward (≥ 0.85×).
        let add_compared = |report: &mut Report, what: &str, samples: Vec<f64>| {
            let figure = name(label, variant, what);
            let gateway = variant == Variant::Gateway;
            report.add(Figure {
                section: SECTION,
                name: figure.clone(),
                unit: "Mpps",
                samples: samples.clone(),
                compared_with: gateway.then(|| name(label, Variant::NftStateless, what)),
                target: gateway.then_some(("ratio_at_least", 3.0)),
            });
            if gateway {
                report.add(Figure {
                    section: SECTION,
                    name: format!("{figure} (against pure XDP forward)"),
                    unit: "Mpps",
                    samples,
                    compared_with: Some(name(label, Variant::XdpForward, what)),
                    target: Some(("ratio_at_least", 0.85)),
                });
            }
        };
        add_compared(report, "rate", windows.iter().map(Window::mpps).collect());
        report.add(Figure {
            section: SECTION,
            name: name(label, variant, "forwarding CPU"),
            unit: "ns/pkt",
            samples: windows.iter().map(Window::ns_per_packet).collect(),
            compared_with: None,
            target: None,
        });
        // What one forwarding CPU kept busy all the time would forward at that cost: the
        // rate the generator could not show on two CPUs (see BENCHMARKS.md).
        add_compared(report, "capacity", windows.iter().map(|w| 1e3 / w.ns_per_packet()).collect());
        report.add(Figure {
            section: SECTION,
            name: name(label, variant, "offered by the generator"),
            unit: "Mpps",
            samples: windows.iter().map(Window::offered_mpps).collect(),
            compared_with: None,
            target: None,
        });
        report.add(Figure {
            section: SECTION,
            name: name(label, variant, "forwarding CPU busy"),
            unit: "share",
            samples: windows.iter().map(Window::forwarding_busy).collect(),
            compared_with: None,
            target: None,
        });
    }
}

fn set_up(net: &BenchNet, variant: Variant, flows: u32) -> Setup {
    let mappings = (0..flows).map(flow_mapping);
    let result = match variant {
        Variant::Gateway => {
            let mut desired = DesiredMaps::default();
            for (eip, private_ip) in mappings {
                desired.eips.insert(eip, EipMapping::Nat { private_ip });
            }
            open_gateway(net, &desired, flows).map(|()| Setup::Pinned)
        }
        Variant::XdpForward => attach_reference(net).map(|ebpf| Setup::Program { _attached: ebpf }),
        Variant::Kernel => Ok(Setup::Nothing),
        Variant::NftStateless => nft(&net.gw, &stateless_nat(mappings)).map(|_| Setup::Nothing),
        Variant::NftStateful => nft(&net.gw, &stateful_nat(mappings)).map(|_| Setup::Nothing),
    };
    result.unwrap_or_else(|e| panic!("setting up {}: {e:#}", variant.name()))
}

/// Opens the gateway's data plane on `gw`'s interfaces with `desired` in its maps, sized
/// for `mappings` of them. Its links are pinned in the network's bpffs, so it stays
/// attached until the network goes.
pub fn open_gateway(net: &BenchNet, desired: &DesiredMaps, mappings: u32) -> anyhow::Result<()> {
    let options = DataplaneOptions {
        wan: WAN_IF.into(),
        lan: LAN_IF.into(),
        bpffs: net.bpffs().to_owned(),
        xdp_mode: XdpMode::Driver,
        max_mappings: (mappings + 64).next_power_of_two().max(1024),
        snat: SnatConfig::DEFAULT,
    };
    net.gw.run_in(|| {
        let mut dataplane = Dataplane::open(&options)?;
        dataplane.reconcile(desired)
    })?
}

/// The reference program (`ebpf/src/reference.rs`) on `gw`'s WAN interface, with its
/// egress devices in its device map.
fn attach_reference(net: &BenchNet) -> anyhow::Result<Ebpf> {
    let pins = net.bpffs().join("reference");
    std::fs::create_dir_all(&pins)?;
    net.gw.run_in(move || -> anyhow::Result<Ebpf> {
        let mut ebpf = load_object(&pins, 1024)?;
        let mut devices: DevMapHash<MapData> = ebpf
            .take_map(MAP_EGRESS_DEVICES)
            .ok_or_else(|| anyhow::anyhow!("{MAP_EGRESS_DEVICES} missing"))?
            .try_into()?;
        for ifindex in [ifindex(WAN_IF), ifindex(LAN_IF)] {
            devices.insert(ifindex, ifindex, None, 0)?;
        }
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_REFERENCE)
            .ok_or_else(|| anyhow::anyhow!("{PROGRAM_REFERENCE} missing"))?
            .try_into()?;
        program.load()?;
        let name = std::ffi::CString::new(WAN_IF)?;
        program.attach(name.as_c_str(), XdpMode::Driver)?;
        Ok(ebpf)
    })?
}

/// Runs an nftables script in `ns`.
pub fn nft(ns: &Netns, script: &str) -> anyhow::Result<()> {
    run_with_input("ip", &["netns", "exec", ns.name(), "nft", "-f", "-"], script).map(|_| ())
}

/// `name { type ipv4_addr : ipv4_addr; elements = { ... } }` both ways.
fn nat_maps(mappings: impl Iterator<Item = (Ipv4Addr, Ipv4Addr)>) -> String {
    let (mut inbound, mut outbound) = (String::new(), String::new());
    for (eip, private_ip) in mappings {
        inbound.push_str(&format!("{eip} : {private_ip},\n"));
        outbound.push_str(&format!("{private_ip} : {eip},\n"));
    }
    format!(
        "map eip_to_private {{ type ipv4_addr : ipv4_addr; elements = {{ {inbound} }} }}\n\
         map private_to_eip {{ type ipv4_addr : ipv4_addr; elements = {{ {outbound} }} }}\n"
    )
}

/// 1:1 NAT without state: the addresses rewritten in raw-priority chains, before
/// conntrack would see the packet (`notrack`), and routed after the rewrite.
fn stateless_nat(mappings: impl Iterator<Item = (Ipv4Addr, Ipv4Addr)>) -> String {
    format!(
        "table ip eipgw_bench {{\n{}\
         chain pre {{ type filter hook prerouting priority raw; notrack; \
         ip daddr set ip daddr map @eip_to_private; }}\n\
         chain post {{ type filter hook postrouting priority raw; \
         ip saddr set ip saddr map @private_to_eip; }}\n}}\n",
        nat_maps(mappings)
    )
}

/// The same mappings as conntrack NAT: the first packet of a flow picks the translation,
/// the flow's conntrack entry applies it to the rest.
fn stateful_nat(mappings: impl Iterator<Item = (Ipv4Addr, Ipv4Addr)>) -> String {
    format!(
        "table ip eipgw_bench {{\n{}\
         chain pre {{ type nat hook prerouting priority dstnat; \
         dnat to ip daddr map @eip_to_private; }}\n\
         chain post {{ type nat hook postrouting priority srcnat; \
         snat to ip saddr map @private_to_eip; }}\n}}\n",
        nat_maps(mappings)
    )
}
