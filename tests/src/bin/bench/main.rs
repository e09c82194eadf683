//! `cargo xtask bench`: what the gateway costs, measured on this machine. Not a test: it
//! asserts nothing, it reports. Every figure is the median of several runs with their
//! minimum and maximum, and each ratio compares two figures measured in the same run.
//!
//! Sections (BENCHMARKS.md explains the method and the latest figures):
//! 1. per-packet cost of each path through the program, against a reference program that
//!    parses and forwards the same way but translates nothing (BPF_PROG_TEST_RUN);
//! 2. forwarding throughput through veths: a live-frames generator, the gateway (or a pure
//!    XDP forward, the kernel's forwarding, nftables stateless and conntrack NAT) and a
//!    counting sink, with 1, 1k and 100k flows;
//! 3. table scale: an inbound NAT hit with 1k, 100k and 1M mappings installed, in the
//!    program (section 1's method) and as a forwarding rate of 1000 flows (section 2's);
//! 4. the control plane: applying many associations, and how soon an association takes
//!    effect;
//! 5. SNAT through the gateway against nftables masquerade: new sessions per second and
//!    the rate of established flows (section 2's generator and sink).
//!
//! `--quick` runs each section briefly, to keep the harness working (under a minute);
//! `--section N` runs only section N.

mod control_plane;
mod forwarding;
mod per_packet;
mod report;
mod snat;
mod table_scale;
mod traffic;

use report::Report;

fn main() {
    eipgw_tests::require_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--section").map(|i| {
        args.get(i + 1).map(String::as_str).unwrap_or_else(|| {
            eprintln!("eipgw-bench: --section needs a number (1 to 5)");
            std::process::exit(2);
        })
    });
    if let Some(section) = only
        && !["1", "2", "3", "4", "5"].contains(&section)
    {
        eprintln!("eipgw-bench: there is no section {section}; sections are 1 to 5");
        std::process::exit(2);
    }
    let mut report = Report::default();
    if only.is_none_or(|s| s == "1") {
        per_packet::run(quick, &mut report);
    }
    if only.is_none_or(|s| s == "2") {
        forwarding::run(quick, &mut report);
    }
    if only.is_none_or(|s| s == "3") {
        table_scale::run(quick, &mut report);
    }
    if only.is_none_or(|s| s == "4") {
        control_plane::run(quick, &mut report);
    }
    if only.is_none_or(|s| s == "5") {
        snat::run(quick, &mut report);
    }
    report.print();
    // Beside the build, whatever directory the bench was started from.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    match report.save(&dir) {
        Ok(path) => println!("\nfigures saved as JSON: {}", path.display()),
        Err(e) => {
            eprintln!("eipgw-bench: saving the figures: {e:#}");
            std::process::exit(1);
        }
    }
}
