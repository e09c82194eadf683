//! `cargo xtask setup | build | test | demo | bench`.
//!
//! xtask depends on nothing of the project itself, so it compiles on a fresh machine before
//! the eBPF toolchain exists; every command installs what is missing first.

mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "eipgw build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, the eBPF nightly, bpf-linker.
    Setup,
    /// Build everything in release mode (binaries in target/release/).
    Build,
    /// Run the unit tests, then the root integration tests one at a time. Needs root.
    Test,
    /// Run the gateway on a throwaway namespace topology with real traffic. Needs root.
    Demo,
    /// Measure the gateway (BENCHMARKS.md says how); figures printed and saved as JSON
    /// under target/bench/. Needs root.
    Bench {
        /// A short run that keeps the harness working (under a minute); its figures are
        /// too rough to compare.
        #[arg(long)]
        quick: bool,
        /// Run only this section (1-5).
        #[arg(long, value_name = "N")]
        section: Option<u8>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            build()
        }
        Task::Test => {
            require_root("cargo xtask test")?;
            setup::run()?;
            test()
        }
        Task::Demo => {
            require_root("cargo xtask demo")?;
            setup::run()?;
            build()?;
            cargo(&["run", "--release", "--quiet", "-p", "eipgw-tests", "--bin", "eipgw-demo"])
        }
        Task::Bench { quick, section } => {
            require_root("cargo xtask bench")?;
            setup::run()?;
            build()?;
            let mut args = vec!["run", "--release", "--quiet", "-p", "eipgw-tests"];
            args.extend(["--bin", "eipgw-bench", "--"]);
            if quick {
                args.push("--quick");
            }
            let section = section.map(|n| n.to_string());
            if let Some(n) = &section {
                args.extend(["--section", n.as_str()]);
            }
            cargo(&args)
        }
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output().context("running id -u")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!(
            "{what} needs root: it creates network namespaces, attaches XDP and uses BPF maps. \
             Run it as root (e.g. `sudo -E cargo xtask ...`)."
        );
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    cargo(&["build", "--release", "--workspace", "--exclude", "eipgw-ebpf"])
}

fn test() -> anyhow::Result<()> {
    // Unit tests of the host crates (rules, store, checksums, CLI pieces), in release so
    // the integration tests below reuse the same build.
    cargo(&["test", "--release"])?;
    cargo(&["build", "--release", "-p", "eipgw"])?;
    // Root integration tests share kernel state (bpffs, namespaces, XDP): one at a time.
    cargo(&["test", "--release", "-p", "eipgw-tests", "--", "--test-threads=1"])
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
