//! The NAT gateway's maps (DNAT port mappings, SNAT sessions, fragment state) and the pure
//! rules of a SNAT session's life: when it expires, and how TCP moves it between states.
//! The XDP program creates and refreshes sessions; the agent reads them, and deletes the
//! expired ones with the same [`SnatConfig::expired`] the program would use.
//!
//! Ports (and ICMP query identifiers) in keys and values are in network byte order, as they
//! sit in the header; addresses too, like everywhere in the maps.

use crate::policy::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// [`Endpoint`] (EIP side: EIP, public port, protocol) → [`NatTarget`] (private address and
/// port): the DNAT port mappings (R26), written by the agent. Inbound frames to the EIP's
/// port are forwarded to the target.
pub const MAP_DNAT_PORTS: &str = "DNAT_PORTS";
/// [`Endpoint`] (private side) → [`NatTarget`] (EIP and public port): the same mappings the
/// other way round, so that the private service's replies leave from the EIP's port. The
/// model keeps one mapping per private endpoint, so the reverse is unambiguous.
pub const MAP_DNAT_REVERSE: &str = "DNAT_REVERSE";
/// Private IPv4 (as in the header) → [`crate::PrivateEntry`]: the addresses whose egress is
/// SNAT (R25, R27), with the EIP they leave through (the agent picks one of the entry's EIPs
/// per address, so that all of a host's sessions share it: paired pooling, RFC 4787 REQ-2)
/// and its counter slot. Written by the agent.
pub const MAP_SNAT_SOURCES: &str = "SNAT_SOURCES";
/// [`Endpoint`] (private side) → [`SnatSession`]: the live SNAT sessions, one per private
/// (address, port, protocol): endpoint-independent mapping (RFC 4787 REQ-1). Created by
/// the program; expired ones are deleted by the agent.
pub const MAP_SNAT_SESSIONS: &str = "SNAT_SESSIONS";
/// [`Endpoint`] (EIP side) → [`Endpoint`] (private side): which session holds a public
/// port. Claimed by the program with BPF_NOEXIST, so two CPUs never hand out one port.
pub const MAP_SNAT_PORTS: &str = "SNAT_PORTS";
/// Array with one [`SnatConfig`]: the port range and the idle timeouts.
pub const MAP_SNAT_CONFIG: &str = "SNAT_CONFIG";
/// LRU [`FragmentKey`] → [`FragmentTarget`]: how the first fragment of a port-translated
/// datagram was translated, so that its later fragments (which carry no ports) follow it.
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";

/// Program array holding the NAT gateway program ([`PROGRAM_NAT`]) at
/// [`NAT_PROGRAM_INDEX`]: the gateway program tail-calls it for NAT gateway traffic.
pub const MAP_NAT_PROGRAMS: &str = "NAT_PROGRAMS";
pub const NAT_PROGRAM_INDEX: u32 = 0;
/// The NAT gateway program's name in the object file. Loaded by the agent, never attached.
pub const PROGRAM_NAT: &str = "eipgw_nat";

/// Capacity of [`MAP_SNAT_SESSIONS`] and [`MAP_SNAT_PORTS`]. A full table refuses new
/// flows (counted); it never evicts a live one.
pub const MAX_SNAT_SESSIONS: u32 = 262_144;
/// Capacity of the DNAT maps and of [`MAP_SNAT_SOURCES`].
pub const MAX_DNAT_PORTS: u32 = 65_536;
pub const MAX_SNAT_SOURCES: u32 = 65_536;
/// Capacity of [`MAP_FRAGMENTS`].
pub const MAX_FRAGMENTS: u32 = 16_384;
/// How long fragment state lives: Linux's default reassembly time (`ipfrag_time`).
pub const FRAGMENT_TIMEOUT_NS: u64 = 30 * NS_PER_SECOND;

/// How many ports the program tries for a new session, after the private port itself.
/// With a small range every port is tried; with a large one, a range so full that this many
/// random probes all hit live sessions counts as exhausted.
pub const SNAT_PORT_PROBES: u32 = 64;

const NS_PER_SECOND: u64 = 1_000_000_000;

/// A transport endpoint: a map key.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 address (network byte order).
    pub addr: u32,
    /// TCP or UDP port, or ICMP query identifier (network byte order).
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 8);

impl Endpoint {
    pub const fn new(addr: u32, port: u16, proto: u8) -> Self {
        Self { addr, port, proto, _pad: 0 }
    }
}

/// Value of the DNAT maps: where the endpoint is translated to.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NatTarget {
    /// IPv4 address (network byte order).
    pub addr: u32,
    /// The EIP's counter slot.
    pub stats_slot: u32,
    /// Port (network byte order).
    pub port: u16,
    pub _pad: u16,
    /// `DNAT_PORTS`: the number of the target's security group (its ENI's), whose rules
    /// decide what reaches it through the mapping; 0: none. `DNAT_REVERSE`: 0.
    pub security_group: u32,
}
const _: () = assert!(core::mem::size_of::<NatTarget>() == 16);

/// [`SnatSession::state`] of a UDP or ICMP session, which lives by idle time only.
pub const SESSION_OPEN: u8 = 0;
/// TCP: the handshake is under way (SYN seen, no reply yet): the transitory timeout.
pub const SESSION_TCP_HANDSHAKE: u8 = 1;
/// TCP: the Internet side answered: the established timeout.
pub const SESSION_TCP_ESTABLISHED: u8 = 2;
/// TCP: FIN or RST seen: the transitory timeout (RFC 5382 REQ-5).
pub const SESSION_TCP_CLOSING: u8 = 3;

/// Value of [`MAP_SNAT_SESSIONS`].
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SnatSession {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when a packet of the session was last seen.
    pub last_seen_ns: u64,
    /// When the session was created.
    pub created_ns: u64,
    /// The EIP (network byte order) and its counter slot.
    pub eip: u32,
    pub stats_slot: u32,
    /// The last remote host the private endpoint sent to (network byte order), for display.
    pub remote_addr: u32,
    /// The public port (network byte order).
    pub public_port: u16,
    /// The last remote port (network byte order), for display.
    pub remote_port: u16,
    /// One of the `SESSION_*` constants.
    pub state: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<SnatSession>() == 40);

/// Value of [`MAP_SNAT_CONFIG`]. All zero (never written): the defaults.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SnatConfig {
    /// Public ports handed out, `port_min..=port_max` (host byte order).
    pub port_min: u16,
    pub port_max: u16,
    pub _pad: u32,
    pub tcp_established_ns: u64,
    pub tcp_transitory_ns: u64,
    pub udp_ns: u64,
    pub icmp_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SnatConfig>() == 40);

impl SnatConfig {
    /// The defaults: the common references' idle times (RFC 5382 REQ-5: 2 h 4 min
    /// established, 4 min transitory; RFC 4787 REQ-5: UDP 5 min; RFC 5508 REQ-1: ICMP 60 s),
    /// and every port above the well-known ones.
    pub const DEFAULT: SnatConfig = SnatConfig {
        port_min: 1024,
        port_max: 65535,
        _pad: 0,
        tcp_established_ns: 7_440 * NS_PER_SECOND,
        tcp_transitory_ns: 240 * NS_PER_SECOND,
        udp_ns: 300 * NS_PER_SECOND,
        icmp_ns: 60 * NS_PER_SECOND,
    };

    /// `self`, or the defaults if the agent has written nothing.
    #[inline(always)]
    pub fn or_default(self) -> SnatConfig {
        if self.port_min == 0 { Self::DEFAULT } else { self }
    }

    /// How many ports the range holds.
    #[inline(always)]
    pub fn port_count(&self) -> u32 {
        (self.port_max as u32).saturating_sub(self.port_min as u32) + 1
    }

    /// How long a session of `proto` in `state` may stay idle.
    #[inline(always)]
    pub fn idle_timeout_ns(&self, proto: u8, state: u8) -> u64 {
        match (proto, state) {
            (PROTO_TCP, SESSION_TCP_ESTABLISHED) => self.tcp_established_ns,
            (PROTO_TCP, _) => self.tcp_transitory_ns,
            (PROTO_UDP, _) => self.udp_ns,
            (PROTO_ICMP, _) => self.icmp_ns,
            _ => self.udp_ns,
        }
    }

    /// Whether `session` of `proto` has been idle for longer than it may be at `now_ns`.
    #[inline(always)]
    pub fn expired(&self, proto: u8, session: &SnatSession, now_ns: u64) -> bool {
        now_ns.saturating_sub(session.last_seen_ns) > self.idle_timeout_ns(proto, session.state)
    }
}

/// TCP flags, as in the 14th byte of the header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The state a TCP session moves to when a segment with `flags` passes, `outbound` from the
/// private host or inbound from the Internet. FIN or RST (either way) start the closing
/// timeout; an inbound segment that acknowledges (the SYN-ACK, or anything later) makes a
/// handshake established; a new SYN from inside on a closing session reopens it.
#[inline(always)]
pub const fn tcp_next_state(state: u8, flags: u8, outbound: bool) -> u8 {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        return SESSION_TCP_CLOSING;
    }
    match state {
        SESSION_TCP_HANDSHAKE if !outbound && flags & TCP_ACK != 0 => SESSION_TCP_ESTABLISHED,
        SESSION_TCP_CLOSING if outbound && flags & TCP_SYN != 0 && flags & TCP_ACK == 0 => {
            SESSION_TCP_HANDSHAKE
        }
        state => state,
    }
}

/// The state a new session starts in.
#[inline(always)]
pub const fn initial_state(proto: u8) -> u8 {
    if proto == PROTO_TCP { SESSION_TCP_HANDSHAKE } else { SESSION_OPEN }
}

/// The `probe`th port (0-based) tried for a new session in `config`'s range, starting from
/// `start` (any number: the program passes a random one), stepping through the range and
/// wrapping, in host byte order.
#[inline(always)]
pub fn probe_port(config: &SnatConfig, start: u32, probe: u32) -> u16 {
    let count = config.port_count();
    (config.port_min as u32 + (start.wrapping_add(probe)) % count) as u16
}

/// Key of [`MAP_FRAGMENTS`]: a datagram as its fragments show it before translation (RFC
/// 791: source, destination, protocol and identification name one datagram).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: u32,
    pub dst: u32,
    /// IPv4 identification (network byte order).
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 12);

/// Value of [`MAP_FRAGMENTS`].
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FragmentTarget {
    /// The address that replaces the destination (inbound) or the source (outbound).
    pub addr: u32,
    /// The EIP's counter slot.
    pub stats_slot: u32,
    /// When the first fragment passed.
    pub created_ns: u64,
}
const _: () = assert!(core::mem::size_of::<FragmentTarget>() == 16);

/// The ring buffer through which the program hands the agent what it cannot finish alone:
/// inbound later fragments that came before their first fragment ([`HeldFrame`]), and word
/// that a first fragment some of them wait for has passed ([`HeldRelease`]). XDP cannot keep
/// a frame; the agent keeps it and runs it through the program again (BPF_PROG_TEST_RUN in
/// live-frames mode, from the interface it came in on) once the first fragment has passed.
pub const MAP_HELD_FRAGMENTS: &str = "HELD_FRAGMENTS";
/// The datagrams ([`FragmentKey`]) that have frames held: the first fragment of one of
/// these says so on [`MAP_HELD_FRAGMENTS`]. LRU: the agent forgets held frames in time too.
pub const MAP_HELD_KEYS: &str = "HELD_KEYS";
/// Size of [`MAP_HELD_FRAGMENTS`]: about 2000 frames in flight to the agent.
pub const HELD_RING_BYTES: u32 = 4 << 20;
/// Capacity of [`MAP_HELD_KEYS`].
pub const MAX_HELD_KEYS: u32 = 4096;
/// The largest frame that is held (an Ethernet frame of a 1500-byte MTU fits; larger later
/// fragments that come early are dropped as [`crate::Verdict::DropFragmentUnmatched`]).
pub const HELD_FRAME_BYTES: usize = 2048;
/// [`HeldFrame::kind`].
pub const HELD_KIND_FRAME: u32 = 1;
/// [`HeldRelease::kind`].
pub const HELD_KIND_RELEASE: u32 = 2;

/// A later fragment the program could not translate yet, as it arrived.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct HeldFrame {
    /// [`HELD_KIND_FRAME`].
    pub kind: u32,
    /// The interface it came in on.
    pub ifindex: u32,
    /// How many bytes of `frame` it has.
    pub len: u32,
    pub key: FragmentKey,
    pub frame: [u8; HELD_FRAME_BYTES],
}
const _: () = assert!(core::mem::size_of::<HeldFrame>() == 24 + HELD_FRAME_BYTES);

/// The first fragment of `key`'s datagram has passed, so its held frames can follow.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldRelease {
    /// [`HELD_KIND_RELEASE`].
    pub kind: u32,
    pub key: FragmentKey,
}
const _: () = assert!(core::mem::size_of::<HeldRelease>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no implicit padding (the size asserts prove it).
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::NatTarget {}
    unsafe impl aya::Pod for super::SnatSession {}
    unsafe impl aya::Pod for super::SnatConfig {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentTarget {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 3_600 * NS_PER_SECOND;

    fn session(state: u8, last_seen_ns: u64) -> SnatSession {
        SnatSession { state, last_seen_ns, ..Default::default() }
    }

    #[test]
    fn unwritten_config_means_the_defaults() {
        assert_eq!(SnatConfig::default().or_default(), SnatConfig::DEFAULT);
        let custom = SnatConfig { port_min: 2000, port_max: 2001, ..SnatConfig::DEFAULT };
        assert_eq!(custom.or_default(), custom);
        assert_eq!(custom.port_count(), 2);
        assert_eq!(SnatConfig::DEFAULT.port_count(), 64_512);
    }

    #[test]
    fn timeouts_follow_protocol_and_tcp_state() {
        let c = SnatConfig::DEFAULT;
        assert_eq!(c.idle_timeout_ns(PROTO_UDP, SESSION_OPEN), 300 * NS_PER_SECOND);
        assert_eq!(c.idle_timeout_ns(PROTO_ICMP, SESSION_OPEN), 60 * NS_PER_SECOND);
        assert_eq!(c.idle_timeout_ns(PROTO_TCP, SESSION_TCP_HANDSHAKE), 240 * NS_PER_SECOND);
        assert_eq!(c.idle_timeout_ns(PROTO_TCP, SESSION_TCP_ESTABLISHED), 7_440 * NS_PER_SECOND);
        assert_eq!(c.idle_timeout_ns(PROTO_TCP, SESSION_TCP_CLOSING), 240 * NS_PER_SECOND);
    }

    #[test]
    fn a_session_expires_only_after_its_idle_time() {
        let c = SnatConfig::DEFAULT;
        let udp = session(SESSION_OPEN, T0);
        assert!(!c.expired(PROTO_UDP, &udp, T0 + 300 * NS_PER_SECOND));
        assert!(c.expired(PROTO_UDP, &udp, T0 + 300 * NS_PER_SECOND + 1));
        let tcp = session(SESSION_TCP_ESTABLISHED, T0);
        assert!(!c.expired(PROTO_TCP, &tcp, T0 + 7_000 * NS_PER_SECOND));
        // A clock read before the last packet (another CPU) is not an expiry.
        assert!(!c.expired(PROTO_UDP, &udp, T0 - NS_PER_SECOND));
    }

    #[test]
    fn tcp_moves_from_handshake_to_established_to_closing() {
        let s = initial_state(PROTO_TCP);
        assert_eq!(s, SESSION_TCP_HANDSHAKE);
        // More SYNs from inside leave it in the handshake.
        assert_eq!(tcp_next_state(s, TCP_SYN, true), SESSION_TCP_HANDSHAKE);
        let s = tcp_next_state(s, TCP_SYN | TCP_ACK, false);
        assert_eq!(s, SESSION_TCP_ESTABLISHED);
        assert_eq!(tcp_next_state(s, TCP_ACK, true), SESSION_TCP_ESTABLISHED);
        assert_eq!(tcp_next_state(s, TCP_FIN | TCP_ACK, false), SESSION_TCP_CLOSING);
        assert_eq!(tcp_next_state(SESSION_TCP_HANDSHAKE, TCP_RST, false), SESSION_TCP_CLOSING);
        // A closing session reopened by a fresh SYN from inside.
        assert_eq!(tcp_next_state(SESSION_TCP_CLOSING, TCP_SYN, true), SESSION_TCP_HANDSHAKE);
        assert_eq!(tcp_next_state(SESSION_TCP_CLOSING, TCP_ACK, true), SESSION_TCP_CLOSING);
        assert_eq!(initial_state(PROTO_UDP), SESSION_OPEN);
    }

    #[test]
    fn probes_cover_a_small_range_and_wrap() {
        let c = SnatConfig { port_min: 2000, port_max: 2003, ..SnatConfig::DEFAULT };
        let ports: Vec<u16> = (0..4).map(|p| probe_port(&c, 7, p)).collect();
        assert_eq!(ports, [2003, 2000, 2001, 2002]);
        assert_eq!(probe_port(&SnatConfig::DEFAULT, u32::MAX, 1), 1024);
        assert_eq!(probe_port(&SnatConfig::DEFAULT, 64_511, 0), 65_535);
    }
}
