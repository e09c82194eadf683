//! Section 5: SNAT through `gw`, from the VPC to the Internet host (the network, generator
//! and sink of `traffic`, sending from `vm`): the gateway's SNAT (one NAT gateway EIP, the
//! session table in XDP) against nftables masquerade with conntrack.
//!
//! - **New sessions per second.** Every frame is a flow of its own (one source, a new port
//!   each), so every frame that gets through made a session; the rate is the frames the
//!   sink counted per second. Each source port is free on the public side too, so both
//!   keep it (port preservation) and neither searches for a port. Each sample runs on a
//!   network made afresh, with empty tables.
//! - **Established flows.** 1000 flows are sent once each first (their sessions made),
//!   then measured like section 2: the rate at the sink and the polling thread's CPU time.

use std::net::Ipv4Addr;

use eipgw::dataplane::{DesiredMaps, EipMapping};
use eipgw_tests::topology::WAN_IF;

use crate::{
    forwarding::{nft, open_gateway},
    report::{Figure, Report},
    traffic::{BenchNet, Sender, Traffic, Window},
};

const SECTION: &str = "5. SNAT (veth, vm -> gw -> inet)";
/// The private host every flow comes from.
const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
/// The NAT gateway EIP it leaves through.
const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 42);
/// The first source port; flow n comes from port FIRST_PORT + n.
const FIRST_PORT: u16 = 1024;
const ESTABLISHED_FLOWS: u32 = 1000;
/// 64 bytes on the wire.
const FRAME_LEN: usize = 60;

#[derive(Copy, Clone, PartialEq, Eq)]
enum Variant {
    Gateway,
    Masquerade,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Gateway => "eipgw SNAT",
            Variant::Masquerade => "nftables masquerade",
        }
    }
}

const VARIANTS: [Variant; 2] = [Variant::Gateway, Variant::Masquerade];

fn traffic(flows: u32) -> Traffic {
    Traffic {
        from: Sender::Vpc,
        frame_len: FRAME_LEN,
        first_addr: SOURCE,
        first_port: FIRST_PORT,
        flows,
        addresses: 1,
    }
}

pub fn run(quick: bool, report: &mut Report) {
    // New flows a sample: within one EIP's ports (1024-65535), all free.
    let (new_flows, samples, seconds) = if quick { (5_000, 1, 0.15) } else { (60_000, 5, 1.0) };
    let name = |variant: Variant, what: &str| format!("{} {what}", variant.name());
    for variant in VARIANTS {
        let windows: Vec<Window> = (0..samples)
            .map(|_| {
                let mut net = set_up(variant);
                net.send_frames(&traffic(new_flows), new_flows)
                    .unwrap_or_else(|e| panic!("new sessions through {}: {e:#}", variant.name()))
            })
            .collect();
        add(report, name(variant, "new sessions"), "k/s", &windows, |w| w.mpps() * 1e3);
        add(report, name(variant, "new sessions offered"), "k/s", &windows, |w| {
            w.offered_mpps() * 1e3
        });
        add(report, name(variant, "new session: forwarding CPU"), "ns", &windows, |w| {
            w.ns_per_packet()
        });
        add(report, name(variant, "new sessions: forwarding CPU busy"), "share", &windows, |w| {
            w.forwarding_busy()
        });
    }
    for variant in VARIANTS {
        let mut net = set_up(variant);
        let established = traffic(ESTABLISHED_FLOWS);
        net.send_frames(&established, ESTABLISHED_FLOWS * 4)
            .unwrap_or_else(|e| panic!("opening flows through {}: {e:#}", variant.name()));
        let windows = net
            .windows(&established, samples, seconds)
            .unwrap_or_else(|e| panic!("established flows via {}: {e:#}", variant.name()));
        let flows = ESTABLISHED_FLOWS;
        add(
            report,
            name(variant, &format!("{flows} established flows")),
            "Mpps",
            &windows,
            Window::mpps,
        );
        add(report, name(variant, "established: forwarding CPU"), "ns/pkt", &windows, |w| {
            w.ns_per_packet()
        });
        add(report, name(variant, "established: forwarding CPU busy"), "share", &windows, |w| {
            w.forwarding_busy()
        });
    }
    // The gateway against masquerade, measured in this run.
    for figure in report.figures.iter_mut().filter(|f| f.section == SECTION) {
        if let Some(what) = figure.name.strip_prefix(Variant::Gateway.name()) {
            figure.compared_with = Some(format!("{}{what}", Variant::Masquerade.name()));
        }
    }
}

fn add(
    report: &mut Report,
    name: String,
    unit: &'static str,
    windows: &[Window],
    f: impl Fn(&Window) -> f64,
) {
    report.add(Figure {
        section: SECTION,
        name,
        unit,
        samples: windows.iter().map(f).collect(),
        compared_with: None,
        target: None,
    });
}

/// A fresh network with `variant`'s SNAT in place on `gw`.
fn set_up(variant: Variant) -> BenchNet {
    let net = BenchNet::create().unwrap_or_else(|e| panic!("SNAT bench: {e:#}"));
    let result = match variant {
        Variant::Gateway => {
            let mut desired = DesiredMaps::default();
            desired.eips.insert(EIP, EipMapping::NatGateway);
            desired.snat_sources.insert(SOURCE, EIP);
            open_gateway(&net, &desired, 1)
        }
        Variant::Masquerade => nft(
            &net.gw,
            &format!(
                "table ip eipgw_bench {{\n chain post {{ type nat hook postrouting priority srcnat; \
                 oifname \"{WAN_IF}\" masquerade; }}\n}}\n"
            ),
        ),
    };
    result.unwrap_or_else(|e| panic!("setting up {}: {e:#}", variant.name()));
    net
}
