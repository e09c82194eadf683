//! What the maps should hold, independent of how the agent models resources: the agent
//! derives it from its state, the data plane makes the maps equal to it, and tests can
//! state it directly.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use eipgw_common::{EipLimits, SecurityGroupRules, bandwidth};

/// How the data plane treats an allocated EIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EipMapping {
    /// Allocated, not associated (or held by a NAT gateway): inbound traffic is dropped.
    Unassociated,
    /// NAT mode: addresses rewritten to and from `private_ip` (R09).
    Nat { private_ip: Ipv4Addr },
    /// Cut-through: forwarded unchanged to the ENI whose primary address is `next_hop` (R10).
    CutThrough { next_hop: Ipv4Addr },
    /// Multi-EIP visible: forwarded unchanged to the ENI at `next_hop` (R11).
    MultiEip { next_hop: Ipv4Addr },
    /// One of a NAT gateway's EIPs without a DNAT IP mapping (an EIP with one is
    /// [`EipMapping::Nat`]): inbound traffic reaches its DNAT port mappings and the SNAT
    /// sessions that hold its ports (R25, R26).
    NatGateway,
}

impl EipMapping {
    /// The ENI address a visible-mode EIP is routed to.
    pub fn next_hop(self) -> Option<Ipv4Addr> {
        match self {
            EipMapping::CutThrough { next_hop } | EipMapping::MultiEip { next_hop } => {
                Some(next_hop)
            }
            EipMapping::Unassociated | EipMapping::Nat { .. } | EipMapping::NatGateway => None,
        }
    }
}

/// What the data plane enforces on an EIP's traffic besides its mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipPolicy {
    /// The bandwidth cap per direction, Mbit/s; `None`: uncapped.
    pub bandwidth_mbps: Option<u32>,
    /// The number of the security group of the ENI the EIP reaches; `None`: unfiltered.
    pub security_group: Option<u32>,
}

impl EipPolicy {
    /// The map value that says this to the program.
    pub fn limits(self) -> EipLimits {
        let (ps_per_byte, burst_ns) = match self.bandwidth_mbps {
            Some(mbps) => (bandwidth::picoseconds_per_byte(mbps), bandwidth::burst_ns(mbps)),
            None => (0, 0),
        };
        EipLimits {
            ps_per_byte,
            burst_ns,
            security_group: self.security_group.unwrap_or(0),
            _pad: 0,
        }
    }
}

/// A DNAT port mapping's public side (R26): the key of [`DesiredMaps::dnat_ports`]. The
/// order (EIP first) lets one EIP's mappings be read as a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub eip: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub public_port: u16,
}

impl PortMapping {
    /// Every mapping of `eip`, as a range of keys.
    pub fn of_eip(eip: Ipv4Addr) -> std::ops::RangeInclusive<PortMapping> {
        PortMapping { eip, proto: 0, public_port: 0 }..=PortMapping {
            eip,
            proto: u8::MAX,
            public_port: u16::MAX,
        }
    }
}

/// The full (or, for an incremental update, partial) content of the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredMaps {
    pub eips: BTreeMap<Ipv4Addr, EipMapping>,
    /// The policy of EIPs in `eips`; an EIP missing here has none.
    pub policies: BTreeMap<Ipv4Addr, EipPolicy>,
    /// Security groups by number: every group an EIP's policy names must be here.
    pub security_groups: BTreeMap<u32, SecurityGroupRules>,
    /// IPv6 addresses with public bandwidth enabled (R23).
    pub ipv6_public: BTreeSet<Ipv6Addr>,
    /// DNAT port mappings → (private IP, private port), ports in host order. Every EIP
    /// named here is in `eips`.
    pub dnat_ports: BTreeMap<PortMapping, (Ipv4Addr, u16)>,
    /// The security group number of a DNAT port mapping's private IP (its ENI's), for the
    /// private IPs in `dnat_ports` that have one; its rules are in `security_groups` or
    /// already in the map.
    pub dnat_groups: BTreeMap<Ipv4Addr, u32>,
    /// Private IPv4s whose egress is SNAT (R27) → the EIP they leave through. Every EIP
    /// named here is in `eips`.
    pub snat_sources: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// What an incremental update covers: for each of these, the maps are brought to what the
/// [`DesiredMaps`] says, and an entry it does not name is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// EIPs: their mapping, policy and DNAT port mappings.
    pub eips: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// Security group numbers.
    pub groups: Vec<u32>,
    /// Private IPv4s whose SNAT egress may have changed.
    pub snat: Vec<Ipv4Addr>,
}

impl DesiredMaps {
    /// EIP → next hop, for the kernel routes of visible-mode EIPs.
    pub fn visible_routes(&self) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
        self.eips.iter().filter_map(|(eip, m)| Some((*eip, m.next_hop()?))).collect()
    }
}
