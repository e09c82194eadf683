//! What the root integration tests and `cargo xtask demo` share: network namespaces and a
//! gateway topology with RAII guards that remove everything they made, even on panic, and
//! a handle on a running `eipgwd`.
//!
//! All traffic stays inside namespaces made here: documentation ranges on the Internet side
//! (198.51.100.0/24 hosts, 203.0.113.0/24 EIPs) and 10.0.1.0/24 in the VPC. Nothing is ever
//! routed to the host's own interfaces.

pub mod agent;
pub mod gateway_ns;
pub mod netns;
pub mod scale;
pub mod servers;
pub mod topology;

use std::sync::atomic::{AtomicU32, Ordering};

pub use agent::AgentProcess;
pub use netns::{Mount, Netns};
pub use topology::Topology;

/// A short suffix unique to this process and call, for names that must not collide with a
/// concurrent run (interface names are limited to 15 bytes).
pub fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The value, or a panic with the whole error chain: for test steps that must work.
#[track_caller]
pub fn must<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A finished command's exit status and output, for a failure message.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `curl` from `ns`, for at most 3 s: `Ok(body)`, or `Err(diagnostics)`. `--globoff` takes
/// an IPv6 URL's brackets as they are.
pub fn curl(ns: &Netns, url: &str) -> Result<String, String> {
    let output = ns
        .command("curl")
        .args(["--silent", "--show-error", "--max-time", "3", "--globoff", url])
        .output()
        .expect("running curl (installed by `cargo xtask setup`)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(output_text(&output))
    }
}

/// `count` pings from `ns` to `target`, 0.2 s apart, each answered within 1 s: `Ok`, or
/// `Err(diagnostics)`.
pub fn ping(ns: &Netns, target: std::net::Ipv4Addr, count: u32) -> Result<(), String> {
    let output = ns
        .command("ping")
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "1", &target.to_string()])
        .output()
        .expect("running ping");
    if output.status.success() { Ok(()) } else { Err(output_text(&output)) }
}

/// Fails with a clear message unless running as root: the tests need namespaces, XDP and
/// BPF maps, and must not silently skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("these tests need root (namespaces, XDP, BPF maps): run `sudo cargo xtask test`");
    }
}

/// Where the release binaries are: next to the test executable's `deps/` directory, or
/// `EIPGW_BIN_DIR`.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("EIPGW_BIN_DIR") {
        return std::path::Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --release -p eipgw`, which `cargo xtask test` does)",
        path.display()
    );
    path
}
