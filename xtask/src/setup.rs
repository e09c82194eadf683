//! Installs what the build and the tests need, skipping what is there. The recipe is the
//! one verified on this machine kind (../shared/DESIGN.md, Toolchain).

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// bpf-linker 0.13 reads LLVM 22 bitcode; this nightly is the last that emits it. The same
/// name is in userspace/build.rs, which builds with it (xtask cannot depend on that crate).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: LLVM 22 to build bpf-linker, and the tools the tests and demo drive.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iputils-ping",
    "iputils-tracepath",
    "curl",
    "ethtool",
    "nftables",
    "iperf3",
];

pub fn run() -> anyhow::Result<()> {
    debian_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().copied().filter(|p| !debian_package_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (setup needs Debian and root)")?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

fn debian_package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    let has_rust_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src")
        });
    if has_rust_src {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing Rust {EBPF_TOOLCHAIN} with rust-src (builds the XDP program)"
    );
    let status = Command::new("rustup")
        .args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("installing {EBPF_TOOLCHAIN} failed ({status})");
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let present = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("building bpf-linker failed ({status})");
    }
    Ok(())
}
