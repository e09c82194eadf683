//! Section 3, table scale: the inbound NAT hit (section 1's frame and method) with 1k,
//! 100k and 1M other mappings installed, their keys spread over the whole table. Measured
//! in the program (BPF_PROG_TEST_RUN), not yet as a forwarding rate through veths
//! (section 2): what grows with the table is the cost of the hash lookups, which this
//! shows.

use crate::{
    per_packet::one_setup,
    report::{Figure, Report},
};

const SECTION: &str = "3. table scale (inbound NAT hit, ns/packet)";

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
}
