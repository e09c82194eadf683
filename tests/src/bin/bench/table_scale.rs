//! Section 3, table scale: how the 1:1 NAT path fares as the table fills. Two measures:
//! - **in the program**: section 1's inbound NAT hit (BPF_PROG_TEST_RUN) with 1k, 100k and
//!   1M other mappings installed, their keys spread over the whole table. One key is looked
//!   up, so this shows the lookup itself, with its bucket in the cache;
//! - **as a forwarding rate**: section 2's network, generator and sink, with 1000 flows to
//!   1000 EIPs, among 1k, 100k or 1M mappings installed (the rest spread as above). The
//!   flows' keys sit among all the others in the same buckets' array. Each size is
//!   measured on three setups, the sizes in turn, one window at a time.

use eipgw::dataplane::{DesiredMaps, EipMapping};

use crate::{
    forwarding::{flow_mapping, open_gateway},
    per_packet::{one_setup, spread_mapping},
    report::{Figure, Report},
    traffic::{BenchNet, FIRST_EIP, Sender, Traffic},
};

const SECTION: &str = "3. table scale (inbound NAT hit, ns/packet)";
/// Flows of the forwarding measure, each to an EIP of its own.
const ACTIVE_FLOWS: u32 = 1000;

pub fn run(quick: bool, report: &mut Report) {
    let (sizes, samples, packets): (&[u32], usize, u64) = if quick {
        (&[1_000, 10_000], 1, 50_000)
    } else {
        (&[1_000, 100_000, 1_000_000], 5, 1_000_000)
    };
    let smallest = format!("with {} mappings", sizes[0]);
    for &size in sizes {
        let name = format!("with {size} mappings");
        let samples: Vec<f64> = (0..samples)
            .map(|_| {
                let measured = one_setup(packets, size, |path| path == "inbound NAT hit");
                measured.first().map(|(_, gateway, _)| *gateway).expect("the inbound path")
            })
            .collect();
        let compared = size != sizes[0];
        report.add(Figure {
            section: SECTION,
            name,
            unit: "ns",
            samples,
            compared_with: compared.then(|| smallest.clone()),
            // The target: 1M-entry tables forward at least 0.8x the 1k-entry rate,
            // that is at most 1.25x the time per packet.
            target: (size == 1_000_000).then_some(("ratio", 1.25)),
        });
    }
    forwarding_rate(quick, sizes, report);
}

fn forwarding_rate(quick: bool, sizes: &[u32], report: &mut Report) {
    // As in section 2 (see `forwarding::run`): the machine's speed changes over stretches
    // of seconds, and setups made afresh differ. So each round sets every size up afresh,
    // all at once, and visits them in turn for one window at a time.
    let (rounds, visits, seconds) = if quick { (1, 1, 0.15) } else { (3, 3, 1.0) };
    let name = |size: u32| format!("forwarding, {size} mappings, {ACTIVE_FLOWS} flows: CPU");
    let traffic = Traffic {
        from: Sender::Internet,
        frame_len: 60,
        first_addr: FIRST_EIP,
        first_port: 10_000,
        flows: ACTIVE_FLOWS,
        addresses: ACTIVE_FLOWS,
    };
    let mut measured: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        let mut nets: Vec<BenchNet> = sizes.iter().map(|&size| forwarding_setup(size)).collect();
        for _ in 0..visits {
            for (net, samples) in nets.iter_mut().zip(&mut measured) {
                net.send_frames(&traffic, 1 << 17)
                    .unwrap_or_else(|e| panic!("table-scale bench: warming up: {e:#}"));
                let window = net
                    .send_for(&traffic, seconds)
                    .unwrap_or_else(|e| panic!("table-scale bench: measuring: {e:#}"));
                samples.push(window.ns_per_packet());
            }
        }
    }
    for (&size, samples) in sizes.iter().zip(measured) {
        report.add(Figure {
            section: SECTION,
            name: name(size),
            unit: "ns/pkt",
            samples,
            compared_with: (size != sizes[0]).then(|| name(sizes[0])),
            // As above: the 1M-mapping rate at least 0.8x the 1k-mapping rate.
            target: (size == 1_000_000).then_some(("ratio", 1.25)),
        });
    }
}

/// A network made afresh with the gateway and `size` mappings installed, among them the
/// mappings of the flows.
fn forwarding_setup(size: u32) -> BenchNet {
    let net = BenchNet::create().unwrap_or_else(|e| panic!("table-scale bench: {e:#}"));
    let mut desired = DesiredMaps::default();
    let flows = (0..ACTIVE_FLOWS).map(flow_mapping);
    let others = (0..size.saturating_sub(ACTIVE_FLOWS)).map(spread_mapping);
    for (eip, private_ip) in flows.chain(others) {
        desired.eips.insert(eip, EipMapping::Nat { private_ip });
    }
    open_gateway(&net, &desired, size)
        .unwrap_or_else(|e| panic!("table-scale bench: opening the gateway: {e:#}"));
    net
}
