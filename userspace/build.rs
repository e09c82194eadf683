//! Builds the XDP program (ebpf/) for the bpf target and leaves it in OUT_DIR, where
//! `dataplane::PROGRAM_OBJECT` embeds it.

use anyhow::{Context as _, anyhow};

/// The eBPF build needs its own nightly: bpf-linker 0.13 reads LLVM 22 bitcode, and
/// nightlies after this one emit LLVM 23 ("Invalid record"). `cargo xtask setup` installs it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("userspace crate has no parent directory"))?
        .join("ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to ebpf/")?;
    let package =
        aya_build::Package { name: "eipgw-ebpf", root_dir: ebpf_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN)).context(
        "building the XDP program: run `cargo xtask setup` to install the eBPF toolchain \
         (nightly-2026-07-01 with rust-src, bpf-linker 0.13 with LLVM 22)",
    )
}
