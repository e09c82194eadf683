//! The cloud resources the agent is the system of record for (RULES.md vocabulary).
//!
//! Identifiers are chosen by the operator (`vpc-1`, `i-web`, ...); an EIP is identified by
//! its address.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// A resource's id. Ids are short ("eni-web-3"), and a million EIPs each name their
/// region and the ENI they land on: held inline (up to 24 bytes) instead of on the heap,
/// copying and dropping them costs no allocation. Read and written as a plain string.
pub type Id = compact_str::CompactString;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub id: Id,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: Id,
    pub region: Id,
    pub cidr: Ipv4Net,
    pub ipv6_cidr: Option<Ipv6Net>,
    /// An IPv4 gateway owns the VPC's Internet path; cut-through ENIs are refused there (R10).
    pub ipv4_gateway: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSwitch {
    pub id: Id,
    pub vpc: Id,
    pub zone: String,
    pub cidr: Ipv4Net,
    pub ipv6_cidr: Option<Ipv6Net>,
}

/// Limits per instance type (R20).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceType {
    pub id: Id,
    pub max_enis: u32,
    pub max_private_ipv4_per_eni: u32,
    pub max_ipv6_per_eni: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    Vpc,
    Classic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: Id,
    pub region: Id,
    pub zone: String,
    pub network: NetworkType,
    pub instance_type: Id,
    pub state: InstanceState,
    /// A public IP fixed to the instance at creation; lost when it is released (R22).
    pub fixed_public_ip: Option<Ipv4Addr>,
    /// The primary ENI (VPC instances only); it lives and dies with the instance (R14).
    pub primary_eni: Option<Id>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EniKind {
    Primary,
    Secondary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: Id,
    pub kind: EniKind,
    pub vswitch: Id,
    /// The security group filtering the ENI's inbound Internet traffic, in the vSwitch's
    /// VPC; `None` leaves the ENI unfiltered.
    pub security_group: Option<Id>,
    /// Fixed for the ENI's life (R14 for a primary ENI; no in-place edits, R15).
    pub primary_ip: Ipv4Addr,
    pub secondary_ips: BTreeSet<Ipv4Addr>,
    pub ipv6: BTreeSet<Ipv6Addr>,
    /// The IPv6 addresses whose public bandwidth is enabled (R23); a subset of `ipv6`.
    pub ipv6_public: BTreeSet<Ipv6Addr>,
    pub instance: Option<Id>,
}

impl Eni {
    /// Every private IPv4 of the ENI, primary first.
    pub fn ipv4s(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.primary_ip).chain(self.secondary_ips.iter().copied())
    }

    /// Whether `ip` is one of the ENI's IPv4 addresses (without walking them).
    pub fn has_ipv4(&self, ip: Ipv4Addr) -> bool {
        self.primary_ip == ip || self.secondary_ips.contains(&ip)
    }

    pub fn ipv4_count(&self) -> usize {
        1 + self.secondary_ips.len()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip {
    pub address: Ipv4Addr,
    pub region: Id,
    /// Bandwidth cap in Mbit/s; `None` is uncapped.
    pub bandwidth_mbps: Option<u32>,
    pub association: Option<Association>,
}

/// What an EIP serves (R01: one thing at a time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Association {
    /// R06: an instance's one direct EIP, on the primary private IP of its primary ENI.
    Instance { instance: Id, eni: Id, private_ip: Ipv4Addr },
    /// R09: NAT mode on one private IPv4 of an ENI.
    Eni { eni: Id, private_ip: Ipv4Addr },
    /// R10: cut-through; the ENI sees the EIP itself.
    CutThrough { eni: Id },
    /// R11: one of up to ten EIPs visible on a secondary ENI.
    MultiEip { eni: Id },
    /// R24/R28: owned by a NAT gateway for its SNAT and DNAT entries.
    NatGateway { nat_gateway: Id },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssociationMode {
    Nat,
    CutThrough,
    MultiEip,
}

impl Association {
    /// The ENI the EIP lands on, if it lands on one.
    pub fn eni(&self) -> Option<&str> {
        match self {
            Association::Instance { eni, .. }
            | Association::Eni { eni, .. }
            | Association::CutThrough { eni }
            | Association::MultiEip { eni } => Some(eni),
            Association::NatGateway { .. } => None,
        }
    }

    /// The private IPv4 a NAT-mode EIP is translated to.
    pub fn private_ip(&self) -> Option<Ipv4Addr> {
        match self {
            Association::Instance { private_ip, .. } | Association::Eni { private_ip, .. } => {
                Some(*private_ip)
            }
            _ => None,
        }
    }

    pub fn mode(&self) -> Option<AssociationMode> {
        match self {
            Association::Instance { .. } | Association::Eni { .. } => Some(AssociationMode::Nat),
            Association::CutThrough { .. } => Some(AssociationMode::CutThrough),
            Association::MultiEip { .. } => Some(AssociationMode::MultiEip),
            Association::NatGateway { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatGateway {
    pub id: Id,
    pub vpc: Id,
    /// At most this many EIPs (R24; 20 by default).
    pub eip_quota: u32,
    pub snat_entries: BTreeMap<Id, SnatEntry>,
    pub dnat_entries: BTreeMap<Id, DnatEntry>,
}

/// R25: sources without their own public address reach the Internet through these EIPs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatEntry {
    pub id: Id,
    pub source: SnatSource,
    pub eips: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum SnatSource {
    #[serde(rename = "vswitch")]
    VSwitch(Id),
    Instance(Id),
    Cidr(Ipv4Net),
}

/// R26: an EIP's port (or all its ports) forwarded to a private IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnatEntry {
    pub id: Id,
    pub eip: Ipv4Addr,
    pub mapping: DnatMapping,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DnatMapping {
    Port { protocol: Protocol, public_port: u16, private_ip: Ipv4Addr, private_port: u16 },
    Ip { private_ip: Ipv4Addr },
}

impl DnatMapping {
    pub fn private_ip(&self) -> Ipv4Addr {
        match self {
            DnatMapping::Port { private_ip, .. } | DnatMapping::Ip { private_ip } => *private_ip,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A VPC's inbound filter for the ENIs that name it: traffic from the Internet to them
/// passes only when a rule admits it (replies to the instances' own flows always do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: Id,
    pub vpc: Id,
    /// Assigned at creation, the smallest free one in 1..=`MAX_SECURITY_GROUPS`: the data
    /// plane keys the group's rules by it.
    pub number: u32,
    /// Inbound rules, in the order they were authorized; none admits nothing.
    pub rules: Vec<SecurityGroupRule>,
}

/// Admits inbound traffic of `protocol` (to `ports`, for TCP and UDP) from `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    pub protocol: RuleProtocol,
    /// Required for TCP and UDP, absent for ICMP and all.
    #[serde(default)]
    pub ports: Option<PortRange>,
    /// Stored truncated to its network (198.51.100.7/24 is 198.51.100.0/24).
    pub source: Ipv4Net,
}

/// What a security group rule matches (unlike [`Protocol`], which names a DNAT port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleProtocol {
    All,
    Tcp,
    Udp,
    Icmp,
}

/// Destination ports `min..=max`; one port is `min == max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl RuleProtocol {
    pub fn name(self) -> &'static str {
        match self {
            RuleProtocol::All => "all",
            RuleProtocol::Tcp => "tcp",
            RuleProtocol::Udp => "udp",
            RuleProtocol::Icmp => "icmp",
        }
    }

    /// TCP and UDP rules name their ports; ICMP and all have none.
    pub fn has_ports(self) -> bool {
        matches!(self, RuleProtocol::Tcp | RuleProtocol::Udp)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl std::fmt::Display for SecurityGroupRule {
    /// As people write it: `tcp 80 from 0.0.0.0/0`, `icmp from 10.0.0.0/8`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.protocol.name())?;
        if let Some(ports) = self.ports {
            write!(f, " {ports}")?;
        }
        write!(f, " from {}", self.source)
    }
}

/// Any one resource, as the store keeps it (`"resource": "eni"` names the kind; ENIs have
/// a `kind` of their own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "resource", rename_all = "snake_case")]
pub enum Resource {
    Region(Region),
    Vpc(Vpc),
    #[serde(rename = "vswitch")]
    VSwitch(VSwitch),
    InstanceType(InstanceType),
    Instance(Instance),
    Eni(Eni),
    Eip(Eip),
    NatGateway(NatGateway),
    SecurityGroup(SecurityGroup),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Region,
    Vpc,
    #[serde(rename = "vswitch")]
    VSwitch,
    InstanceType,
    Instance,
    Eni,
    Eip,
    NatGateway,
    SecurityGroup,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Region,
        Kind::Vpc,
        Kind::VSwitch,
        Kind::InstanceType,
        Kind::Instance,
        Kind::Eni,
        Kind::Eip,
        Kind::NatGateway,
        Kind::SecurityGroup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Region => "region",
            Kind::Vpc => "vpc",
            Kind::VSwitch => "vswitch",
            Kind::InstanceType => "instance_type",
            Kind::Instance => "instance",
            Kind::Eni => "eni",
            Kind::Eip => "eip",
            Kind::NatGateway => "nat_gateway",
            Kind::SecurityGroup => "security_group",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Names one resource: its kind and id (an EIP's id is its address).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub id: Id,
}

impl Key {
    pub fn new(kind: Kind, id: impl AsRef<str>) -> Self {
        Self { kind, id: Id::from(id.as_ref()) }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.id)
    }
}

impl Resource {
    pub fn key(&self) -> Key {
        match self {
            Resource::Region(r) => Key::new(Kind::Region, &r.id),
            Resource::Vpc(r) => Key::new(Kind::Vpc, &r.id),
            Resource::VSwitch(r) => Key::new(Kind::VSwitch, &r.id),
            Resource::InstanceType(r) => Key::new(Kind::InstanceType, &r.id),
            Resource::Instance(r) => Key::new(Kind::Instance, &r.id),
            Resource::Eni(r) => Key::new(Kind::Eni, &r.id),
            Resource::Eip(r) => Key::new(Kind::Eip, r.address.to_string()),
            Resource::NatGateway(r) => Key::new(Kind::NatGateway, &r.id),
            Resource::SecurityGroup(r) => Key::new(Kind::SecurityGroup, &r.id),
        }
    }
}
