//! What the forwarding bench's traffic ends (`ebpf/src/bench.rs`) share with the bench
//! that drives them (`tests/src/bin/bench/traffic.rs`). Never used by the agent.

pub const PROGRAM_BENCH_GENERATOR: &str = "eipgw_bench_gen";
pub const PROGRAM_BENCH_SINK: &str = "eipgw_bench_sink";
/// The generator's [`GenConfig`] (one entry).
pub const MAP_BENCH_GENERATOR: &str = "BENCH_GEN";
/// The generator's run number, per CPU.
pub const MAP_BENCH_SEQUENCE: &str = "BENCH_SEQ";
/// IPv4 UDP frames the sink has seen, per CPU.
pub const MAP_BENCH_SINK: &str = "BENCH_SINK";

/// Ethernet, IPv4 without options, UDP: the header the generator writes.
pub const BENCH_HEADER_LEN: usize = 42;
/// [`GenConfig::addr_offset`]: the IPv4 source address varies (its offset in the frame).
pub const VARY_SOURCE: u32 = 26;
/// [`GenConfig::addr_offset`]: the IPv4 destination address varies.
pub const VARY_DESTINATION: u32 = 30;

/// How the generator makes its frames.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct GenConfig {
    /// Flow 0's headers as sent: Ethernet, IPv4 (no options, valid checksum), UDP
    /// (checksum 0: none, RFC 768).
    pub header: [u8; BENCH_HEADER_LEN],
    pub _pad: [u8; 2],
    /// Run n sends flow `n % flows`.
    pub flows: u32,
    /// Flow f adds `f % addr_count` to the varied address and `f / addr_count` to the UDP
    /// source port (both in host order).
    pub addr_count: u32,
    /// [`VARY_SOURCE`] or [`VARY_DESTINATION`].
    pub addr_offset: u32,
}
const _: () = assert!(core::mem::size_of::<GenConfig>() == 56);

// SAFETY: #[repr(C)], integers and bytes only, the padding an explicit field.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GenConfig {}
