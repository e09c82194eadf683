//! BPF map names, keys and values.
//!
//! IPv4 addresses in keys and values are stored exactly as they sit in the packet header
//! (network byte order). On the user side `u32::from_ne_bytes(addr.octets())` produces that
//! value; see [`ipv4_key`].

/// Pin directory name under the bpffs mount (`<bpffs>/eipgw/`).
pub const PIN_DIR_NAME: &str = "eipgw";

/// EIP address → [`EipEntry`]. Every allocated EIP has an entry, associated or not, so that
/// traffic to an allocated but unassociated EIP is recognised and dropped.
pub const MAP_EIPS: &str = "EIPS";
/// Private IPv4 → [`PrivateEntry`], for the outbound direction.
pub const MAP_PRIVATE_IPS: &str = "PRIVATE_IPS";
/// Per-CPU array of [`EipCounters`], indexed by [`EipEntry::stats_slot`].
pub const MAP_EIP_COUNTERS: &str = "EIP_COUNTERS";
/// Per-CPU array of `u64`, indexed by [`Verdict`] counter index.
pub const MAP_VERDICT_COUNTERS: &str = "VERDICT_COUNTERS";
/// IPv6 address ([`Ipv6Key`]) → `u32` (1): addresses whose public bandwidth is enabled
/// (R23). Only these are forwarded between the Internet and the VPC; IPv6 is never
/// translated.
pub const MAP_IPV6_PUBLIC: &str = "IPV6_PUBLIC";
/// Array with one [`GatewayConfig`] at index 0.
pub const MAP_CONFIG: &str = "CONFIG";
/// Device map (hash, keyed by ifindex) used for XDP_REDIRECT to the egress interface.
pub const MAP_EGRESS_DEVICES: &str = "EGRESS_DEVICES";
/// Array of [`EipLimits`], indexed by [`EipEntry::stats_slot`]: what the agent asks of each
/// EIP's traffic (bandwidth cap, security group). Written only by the agent.
pub const MAP_EIP_LIMITS: &str = "EIP_LIMITS";
/// Array of [`EipBuckets`], indexed like [`MAP_EIP_LIMITS`]: the bandwidth policer's state.
/// Written only by the program (the agent zeroes a slot it hands to another EIP).
pub const MAP_EIP_BUCKETS: &str = "EIP_BUCKETS";
/// Array of `u32`, [`EIP_FILTER_SLOTS`] long: at [`eip_filter_slot`] of an address, how
/// many NAT-mode EIPs hash there. An outbound frame whose destination's slot holds 0 is
/// for no EIP, so the program skips the hash lookup of the hairpin check (an array lookup
/// costs a few ns; the hash lookup was a tenth of the outbound path).
pub const MAP_EIP_FILTER: &str = "EIP_FILTER";
pub const EIP_FILTER_SLOTS: u32 = 65_536;

/// The slot of [`MAP_EIP_FILTER`] for an address (as a map key): a multiplicative hash, so
/// that EIPs from one prefix spread over the array.
#[inline(always)]
pub const fn eip_filter_slot(addr: u32) -> u32 {
    addr.wrapping_mul(0x9E37_79B1) >> 16
}

/// Security group number ([`EipLimits::security_group`]) → [`SecurityGroupRules`].
pub const MAP_SECURITY_GROUPS: &str = "SECURITY_GROUPS";
/// LRU hash [`FlowKey`] → `u64` (`bpf_ktime_get_ns()` when last seen): the flows that
/// instances behind a security group opened towards the Internet, whose replies the group
/// lets in whatever its rules say.
pub const MAP_GROUP_FLOWS: &str = "GROUP_FLOWS";

/// The name of the XDP program in the object file.
pub const PROGRAM_GATEWAY: &str = "eipgw";
/// The benchmark's reference program: forwards IPv4 like a router and translates nothing.
pub const PROGRAM_REFERENCE: &str = "eipgw_reference";
/// A program that passes every frame; attached to veth peers so that XDP_REDIRECT into a
/// veth works (the kernel delivers redirected frames to a veth only when its peer runs XDP).
pub const PROGRAM_PASS: &str = "eipgw_pass";

/// Default capacity of the EIP and private-IP maps and the counter array.
pub const DEFAULT_MAX_MAPPINGS: u32 = 65_536;
/// Flags of [`MAP_EIPS`] and [`MAP_PRIVATE_IPS`]: `BPF_F_ZERO_SEED`, a fixed hash seed, so
/// that the agent can write a big batch into them bucket after bucket
/// (userspace/src/dataplane/bucket_order.rs says why, and why that is safe for their keys).
pub const MAPPING_MAP_FLAGS: u32 = 1 << 6;
/// Capacity of [`MAP_SECURITY_GROUPS`]; group numbers are 1..=this.
pub const MAX_SECURITY_GROUPS: u32 = 4_096;
/// The most rules one security group holds (the program checks them all, in a bounded loop).
pub const MAX_SECURITY_GROUP_RULES: usize = 32;
/// Capacity of [`MAP_GROUP_FLOWS`]; the least recently seen flow makes room for a new one.
pub const MAX_GROUP_FLOWS: u32 = 262_144;

/// [`EipEntry::mode`]: the EIP is allocated but not associated; its traffic is dropped.
pub const MODE_UNASSOCIATED: u32 = 0;
/// [`EipEntry::mode`]: NAT mode, addresses are rewritten (R09).
pub const MODE_NAT: u32 = 1;

/// [`EipEntry::mode`]: cut-through ("EIP visible", R10): packets reach the ENI with the EIP
/// unchanged. The agent routes the EIP (/32) to the ENI's primary private address in the
/// kernel, so the FIB lookup on the EIP itself finds the next hop.
pub const MODE_CUT_THROUGH: u32 = 2;
/// [`EipEntry::mode`]: multi-EIP visible (R11): forwarded unchanged like cut-through.
pub const MODE_MULTI_EIP: u32 = 3;
/// [`EipEntry::mode`]: one of a NAT gateway's EIPs without a DNAT IP mapping (an IP
/// mapping is [`MODE_NAT`] to its private IP): inbound frames reach a DNAT port mapping
/// ([`crate::MAP_DNAT_PORTS`]) or the SNAT session that holds their port
/// ([`crate::MAP_SNAT_PORTS`]), and are dropped otherwise. `private_addr` is 0.
pub const MODE_NAT_GATEWAY: u32 = 4;

/// Key of [`MAP_IPV6_PUBLIC`]: the 16 address bytes as they sit in the header.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv6Key {
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Ipv6Key>() == 16);

/// Value of [`MAP_EIPS`].
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EipEntry {
    /// NAT mode: the private IPv4 address (network byte order). Visible modes: the ENI's
    /// primary private address (the next hop). 0 when unassociated.
    pub private_addr: u32,
    /// Index into [`MAP_EIP_COUNTERS`].
    pub stats_slot: u32,
    /// One of the `MODE_*` constants.
    pub mode: u32,
    /// [`EIP_LIMITED`] or 0.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<EipEntry>() == 16);

/// In [`EipEntry::flags`] and [`PrivateEntry::flags`]: the EIP's slot in `EIP_LIMITS` holds
/// a security group or a bandwidth cap, so the policy functions run for its traffic.
/// Without it they are not called, and an EIP without limits costs no read of its limits
/// (a cache miss per packet when many EIPs are busy). The agent sets it after writing the
/// limits and clears it before clearing them.
pub const EIP_LIMITED: u32 = 1;

/// Value of [`MAP_PRIVATE_IPS`].
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivateEntry {
    /// The EIP (network byte order) that this private address leaves through.
    pub eip_addr: u32,
    /// Index into [`MAP_EIP_COUNTERS`] (the EIP's slot).
    pub stats_slot: u32,
    /// The EIP's [`EipEntry::flags`] (`PRIVATE_IPS` only; the NAT gateway's paths always
    /// run the policy).
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PrivateEntry>() == 16);

/// Per-EIP traffic counters (one copy per CPU; the agent sums them). Bytes are IPv4 total
/// lengths, so they do not depend on the link layer.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct EipCounters {
    pub inbound_packets: u64,
    pub inbound_bytes: u64,
    pub outbound_packets: u64,
    pub outbound_bytes: u64,
    /// Dropped for going over the EIP's bandwidth cap ([`Verdict::DropBandwidthCap`]).
    pub inbound_over_cap_packets: u64,
    pub inbound_over_cap_bytes: u64,
    pub outbound_over_cap_packets: u64,
    pub outbound_over_cap_bytes: u64,
    /// Dropped by the security group ([`Verdict::DropSecurityGroup`]).
    pub inbound_denied_packets: u64,
    pub inbound_denied_bytes: u64,
    /// A NAT gateway EIP's new SNAT flows refused: no free port, or the session table full
    /// ([`Verdict::SnatRefused`]).
    pub snat_refused_packets: u64,
}
const _: () = assert!(core::mem::size_of::<EipCounters>() == 88);

/// Value of [`MAP_EIP_LIMITS`]: what the agent asks of one EIP's traffic. All zero: no cap,
/// no security group.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EipLimits {
    /// The bandwidth cap as the time one byte takes at the capped rate, in picoseconds
    /// ([`crate::bandwidth::picoseconds_per_byte`]); 0: no cap.
    pub ps_per_byte: u64,
    /// How far ahead of the clock the cap lets a burst run, in nanoseconds
    /// ([`crate::bandwidth::burst_ns`]).
    pub burst_ns: u64,
    /// The number of the security group of the ENI the EIP reaches, a key of
    /// [`MAP_SECURITY_GROUPS`]; 0: none, inbound traffic is not filtered.
    pub security_group: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EipLimits>() == 24);

impl EipLimits {
    /// Whether these limits ask anything of the EIP's traffic: a cap or a group.
    pub const fn limited(&self) -> bool {
        self.security_group != 0 || self.ps_per_byte != 0
    }

    /// The [`EIP_LIMITED`] flag these limits call for.
    pub const fn flags(&self) -> u32 {
        if self.limited() { EIP_LIMITED } else { 0 }
    }
}

/// Value of [`MAP_EIP_BUCKETS`]: per direction, the time at which the traffic sent so far
/// would have finished at the capped rate (the "theoretical arrival time" of GCRA, RFC 2697's
/// single-rate idea in one number; see [`crate::bandwidth`]). Shared by all CPUs.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EipBuckets {
    pub inbound_tat_ns: u64,
    pub outbound_tat_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EipBuckets>() == 16);

/// [`SecurityGroupRule::proto`] for a rule that matches every protocol.
pub const RULE_ANY_PROTOCOL: u8 = 0;

/// One inbound rule of a security group: traffic of `proto` from `src_net`/`src_mask` to a
/// destination port in `port_min..=port_max` is allowed.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityGroupRule {
    /// The source network (network byte order, like addresses in the header), already
    /// masked.
    pub src_net: u32,
    /// The source netmask (network byte order); 0 matches every source.
    pub src_mask: u32,
    /// Destination port range (host byte order), for TCP and UDP; ignored for other
    /// protocols.
    pub port_min: u16,
    pub port_max: u16,
    /// IP protocol number, or [`RULE_ANY_PROTOCOL`].
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<SecurityGroupRule>() == 16);

/// Value of [`MAP_SECURITY_GROUPS`]: a group's rules, the first `count` of `rules`.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroupRules {
    pub count: u32,
    pub _pad: u32,
    pub rules: [SecurityGroupRule; MAX_SECURITY_GROUP_RULES],
}
const _: () =
    assert!(core::mem::size_of::<SecurityGroupRules>() == 8 + 16 * MAX_SECURITY_GROUP_RULES);

impl Default for SecurityGroupRules {
    fn default() -> Self {
        Self { count: 0, _pad: 0, rules: [SecurityGroupRule::default(); MAX_SECURITY_GROUP_RULES] }
    }
}

/// Key of [`MAP_GROUP_FLOWS`]: a flow as the EIP side sees it. For ICMP echo, `eip_port` is
/// the echo identifier and `remote_port` is 0.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The EIP (network byte order).
    pub eip: u32,
    /// The Internet host (network byte order).
    pub remote: u32,
    /// Ports in network byte order, as in the header.
    pub eip_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// Value of [`MAP_CONFIG`] at index 0: which interface is which, and the gateway's own
/// address on each.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Interface facing the Internet.
    pub wan_ifindex: u32,
    /// Interface facing the VPC.
    pub lan_ifindex: u32,
    /// The gateway's IPv4 address on the WAN interface (network byte order): the source of
    /// the ICMP errors it sends as a router to the Internet. 0: none; the program then
    /// sends none from this side (a TTL that expires goes to the kernel, an oversized DF
    /// packet is dropped).
    pub wan_addr: u32,
    /// The same on the LAN interface, for the errors it sends into the VPC.
    pub lan_addr: u32,
}
const _: () = assert!(core::mem::size_of::<GatewayConfig>() == 16);

/// At most this many ICMP errors per second and CPU does the program send as a router
/// (time exceeded, fragmentation needed), so that a flood of expiring or oversized packets
/// cannot turn the gateway into an amplifier (RFC 1812 §4.3.2.8)...
pub const ICMP_ERRORS_PER_SECOND: u64 = 100;
/// ...and at most this many at once, after a quiet second.
pub const ICMP_ERROR_BURST: u64 = 100;

/// The value of the program's per-CPU ICMP error budget (one entry): a token bucket kept as
/// nanoseconds of credit, so that refilling it needs no division. Only the program uses it;
/// it lives here so that its arithmetic is tested on the host.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IcmpErrorBudget {
    /// Credit saved up: each error costs [`IcmpErrorBudget::COST_NS`], and the credit never
    /// exceeds [`IcmpErrorBudget::CAPACITY_NS`].
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns()` when `credit_ns` was last brought up to date.
    pub updated_ns: u64,
}
const _: () = assert!(core::mem::size_of::<IcmpErrorBudget>() == 16);

impl IcmpErrorBudget {
    /// What one error costs.
    pub const COST_NS: u64 = 1_000_000_000 / ICMP_ERRORS_PER_SECOND;
    /// The most credit there can be: a full burst.
    pub const CAPACITY_NS: u64 = ICMP_ERROR_BURST * Self::COST_NS;

    /// Whether one more error may be sent at `now_ns` (a monotonic clock); if so, its cost
    /// is spent. A budget never used before (all zero) starts full.
    #[inline(always)]
    pub fn spend(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.updated_ns);
        let credit = match self.credit_ns.saturating_add(elapsed) {
            credit if credit > Self::CAPACITY_NS => Self::CAPACITY_NS,
            credit => credit,
        };
        self.updated_ns = now_ns;
        if credit >= Self::COST_NS {
            self.credit_ns = credit - Self::COST_NS;
            true
        } else {
            self.credit_ns = credit;
            false
        }
    }
}

/// Why a frame was dropped, or passed to the kernel without translation. The discriminant is
/// the index into [`MAP_VERDICT_COUNTERS`].
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Drop: an IPv4 header or L4 header that is truncated or inconsistent, or an IPv6
    /// fixed header that is (extension headers are not parsed).
    DropMalformed = 0,
    /// Drop: the destination is an allocated EIP that is not associated.
    DropEipNotAssociated = 1,
    /// Drop: from the VPC, a source with no Internet egress (no EIP, no DNAT mapping, no
    /// SNAT), or SNAT traffic of a protocol it cannot translate (not TCP, UDP or ICMP echo).
    DropNoEgress = 2,
    /// Drop: the route lookup said blackhole, unreachable or prohibited.
    DropUnroutable = 3,
    /// Drop: IPv4 with DF set, larger than the egress MTU, that the program does not answer
    /// itself ([`Verdict::IcmpFragNeededSent`]): a visible-mode EIP's, or one that must get
    /// no ICMP error (RFC 1812 §4.3.2.7), or when the gateway has no address on the ingress
    /// interface.
    DropFragmentationNeeded = 4,
    /// Drop: the egress interface is not one the gateway can redirect to.
    DropNoEgressDevice = 5,
    /// Pass: TTL (IPv6: hop limit) would expire here, and the program does not answer itself
    /// ([`Verdict::IcmpTimeExceededSent`]): IPv6, a visible-mode EIP, a packet that must get
    /// no ICMP error (RFC 1812 §4.3.2.7), or no gateway address on the ingress interface. The
    /// kernel, as the router, answers or drops it.
    PassTtlExpired = 6,
    /// Pass: the next hop's MAC address is unknown; the kernel resolves it and forwards.
    PassNeighbourUnknown = 7,
    /// Pass: addressed to the gateway itself, or neither IPv4 nor IPv6, or not for an EIP;
    /// IPv6 that does not cross the gateway (link-local, multicast, unspecified or loopback
    /// addresses, as ND, RS/RA and MLD use; routed elsewhere, or unroutable).
    PassNotTranslated = 8,
    /// Forwarded after translation, by XDP_REDIRECT or XDP_TX.
    Translated = 9,
    /// Forwarded without any rewrite: an EIP in a visible mode (cut-through, multi-EIP), or
    /// a public IPv6 address.
    ForwardedUnchanged = 10,
    /// Drop: IPv6 between the Internet and a VPC address whose public bandwidth is not
    /// enabled (R23).
    DropIpv6NotPublic = 11,
    /// Pass: larger than the egress MTU; the kernel fragments it (IPv4 without DF, after
    /// translation) or answers ICMPv6 Packet Too Big.
    PassTooBig = 12,
    /// Drop: an ICMP error for an EIP's traffic whose quoted packet is not that EIP's flow
    /// (inbound: its source is not the EIP; outbound: its destination is not the private
    /// address), so there is no mapping to translate it by (RFC 5508).
    DropIcmpErrorUnmatched = 13,
    /// XDP_TX: a NAT-mode EIP's IPv4 packet with TTL <= 1, answered with ICMP time exceeded
    /// from the gateway's address on the ingress interface.
    IcmpTimeExceededSent = 14,
    /// XDP_TX: a NAT-mode EIP's IPv4 packet with DF set and larger than the egress MTU,
    /// answered with ICMP fragmentation needed and the next-hop MTU (RFC 1191).
    IcmpFragNeededSent = 15,
    /// Drop: the packet called for one of those ICMP errors, but this CPU's error budget
    /// ([`ICMP_ERRORS_PER_SECOND`], burst [`ICMP_ERROR_BURST`]) is spent.
    DropIcmpRateLimited = 16,
    /// Drop: over the EIP's bandwidth cap in this direction.
    DropBandwidthCap = 17,
    /// Drop: inbound to an EIP whose ENI's security group has no rule that allows it, and
    /// not a reply to a flow the instance opened.
    DropSecurityGroup = 18,
    /// Drop: inbound to a NAT gateway's EIP, to no DNAT port mapping and no live SNAT
    /// session's port (or an ICMP error about no such packet).
    DropNoNatMapping = 19,
    /// A new SNAT flow refused: the EIP has no free port, or the session table is full.
    /// Answered with ICMP destination unreachable, administratively prohibited (XDP_TX;
    /// RFC 5508 REQ-8 style), or dropped when no error may be sent.
    SnatRefused = 20,
    /// Drop: a later fragment of a port-translated datagram whose first fragment came more
    /// than 30 s before, or one that could not be held (too large, or the agent's ring full).
    DropFragmentUnmatched = 21,
    /// An inbound later fragment of a port-translated datagram that came before its first
    /// fragment: handed to the agent (`HELD_FRAGMENTS`), which runs it through the program
    /// again once the first fragment has passed (counted again then).
    FragmentHeld = 22,
}

impl Verdict {
    pub const COUNT: u32 = 23;
    pub const ALL: [Verdict; Self::COUNT as usize] = [
        Verdict::DropMalformed,
        Verdict::DropEipNotAssociated,
        Verdict::DropNoEgress,
        Verdict::DropUnroutable,
        Verdict::DropFragmentationNeeded,
        Verdict::DropNoEgressDevice,
        Verdict::PassTtlExpired,
        Verdict::PassNeighbourUnknown,
        Verdict::PassNotTranslated,
        Verdict::Translated,
        Verdict::ForwardedUnchanged,
        Verdict::DropIpv6NotPublic,
        Verdict::PassTooBig,
        Verdict::DropIcmpErrorUnmatched,
        Verdict::IcmpTimeExceededSent,
        Verdict::IcmpFragNeededSent,
        Verdict::DropIcmpRateLimited,
        Verdict::DropBandwidthCap,
        Verdict::DropSecurityGroup,
        Verdict::DropNoNatMapping,
        Verdict::SnatRefused,
        Verdict::DropFragmentUnmatched,
        Verdict::FragmentHeld,
    ];

    /// Stable name used by the API and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::DropMalformed => "drop_malformed",
            Verdict::DropEipNotAssociated => "drop_eip_not_associated",
            Verdict::DropNoEgress => "drop_no_egress",
            Verdict::DropUnroutable => "drop_unroutable",
            Verdict::DropFragmentationNeeded => "drop_fragmentation_needed",
            Verdict::DropNoEgressDevice => "drop_no_egress_device",
            Verdict::PassTtlExpired => "pass_ttl_expired",
            Verdict::PassNeighbourUnknown => "pass_neighbour_unknown",
            Verdict::PassNotTranslated => "pass_not_translated",
            Verdict::Translated => "translated",
            Verdict::ForwardedUnchanged => "forwarded_unchanged",
            Verdict::DropIpv6NotPublic => "drop_ipv6_not_public",
            Verdict::PassTooBig => "pass_too_big",
            Verdict::DropIcmpErrorUnmatched => "drop_icmp_error_unmatched",
            Verdict::IcmpTimeExceededSent => "icmp_time_exceeded_sent",
            Verdict::IcmpFragNeededSent => "icmp_frag_needed_sent",
            Verdict::DropIcmpRateLimited => "drop_icmp_rate_limited",
            Verdict::DropBandwidthCap => "drop_bandwidth_cap",
            Verdict::DropSecurityGroup => "drop_security_group",
            Verdict::DropNoNatMapping => "drop_no_nat_mapping",
            Verdict::SnatRefused => "snat_refused",
            Verdict::DropFragmentUnmatched => "drop_fragment_unmatched",
            Verdict::FragmentHeld => "fragment_held",
        }
    }
}

/// The map key for an IPv4 address: its four octets as they sit in the header.
pub const fn ipv4_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of a map key made by [`ipv4_key`].
pub const fn ipv4_octets(key: u32) -> [u8; 4] {
    key.to_ne_bytes()
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], made only of integers, with no implicit padding
    // (the size asserts above prove it).
    unsafe impl aya::Pod for super::EipEntry {}
    unsafe impl aya::Pod for super::PrivateEntry {}
    unsafe impl aya::Pod for super::EipCounters {}
    unsafe impl aya::Pod for super::GatewayConfig {}
    unsafe impl aya::Pod for super::Ipv6Key {}
    unsafe impl aya::Pod for super::EipLimits {}
    unsafe impl aya::Pod for super::EipBuckets {}
    unsafe impl aya::Pod for super::SecurityGroupRule {}
    unsafe impl aya::Pod for super::SecurityGroupRules {}
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some time after boot, as `bpf_ktime_get_ns()` would say.
    const T0: u64 = 3_600 * 1_000_000_000;

    fn spend_all(budget: &mut IcmpErrorBudget, now_ns: u64, tries: u64) -> u64 {
        (0..tries).filter(|_| budget.spend(now_ns)).count() as u64
    }

    #[test]
    fn a_fresh_budget_allows_one_burst_and_then_nothing() {
        let mut budget = IcmpErrorBudget::default();
        assert_eq!(spend_all(&mut budget, T0, 1_000), ICMP_ERROR_BURST);
        assert!(!budget.spend(T0 + IcmpErrorBudget::COST_NS - 1));
    }

    #[test]
    fn credit_comes_back_at_the_configured_rate() {
        let mut budget = IcmpErrorBudget::default();
        spend_all(&mut budget, T0, 1_000);
        // One error's worth of time, one error; half a second, half the rate.
        assert!(budget.spend(T0 + IcmpErrorBudget::COST_NS));
        assert!(!budget.spend(T0 + IcmpErrorBudget::COST_NS));
        let later = T0 + IcmpErrorBudget::COST_NS + 500_000_000;
        assert_eq!(spend_all(&mut budget, later, 1_000), ICMP_ERRORS_PER_SECOND / 2);
    }

    #[test]
    fn a_long_quiet_spell_saves_up_no_more_than_one_burst() {
        let mut budget = IcmpErrorBudget::default();
        spend_all(&mut budget, T0, 1_000);
        assert_eq!(spend_all(&mut budget, T0 + 3_600 * 1_000_000_000, 1_000), ICMP_ERROR_BURST);
    }

    #[test]
    fn a_clock_that_seems_to_go_back_refills_nothing() {
        // Per-CPU state and one clock, but be safe: no underflow, no credit.
        let mut budget = IcmpErrorBudget::default();
        spend_all(&mut budget, T0, 1_000);
        assert!(!budget.spend(T0 - 1_000_000_000));
    }

    #[test]
    fn verdict_table_is_complete_and_in_index_order() {
        assert_eq!(Verdict::ALL.len(), Verdict::COUNT as usize);
        for (index, verdict) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*verdict as usize, index, "{}", verdict.name());
        }
        let mut names: Vec<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Verdict::ALL.len(), "verdict names are not unique");
    }
}
