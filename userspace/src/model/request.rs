//! Every mutation an operator can ask for. The API takes these as JSON (`"op": ...`), and
//! `eipctl apply` takes a list of them.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::resources::{
    AssociationMode, DnatMapping, Id, InstanceState, NetworkType, SecurityGroupRule, SnatSource,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    CreateRegion {
        id: Id,
    },
    DeleteRegion {
        id: Id,
    },
    CreateVpc {
        id: Id,
        region: Id,
        cidr: Ipv4Net,
        #[serde(default)]
        ipv6_cidr: Option<Ipv6Net>,
        #[serde(default)]
        ipv4_gateway: bool,
    },
    DeleteVpc {
        id: Id,
    },
    CreateVswitch {
        id: Id,
        vpc: Id,
        zone: String,
        cidr: Ipv4Net,
        #[serde(default)]
        ipv6_cidr: Option<Ipv6Net>,
    },
    DeleteVswitch {
        id: Id,
    },
    CreateInstanceType {
        id: Id,
        max_enis: u32,
        max_private_ipv4_per_eni: u32,
        max_ipv6_per_eni: u32,
    },
    DeleteInstanceType {
        id: Id,
    },
    /// A VPC instance gets its primary ENI in `vswitch`, with `private_ip` or the first free
    /// address (R14), filtered by `security_group` (of the vSwitch's VPC) when one is named.
    /// A classic instance has no ENI.
    CreateInstance {
        id: Id,
        region: Id,
        zone: String,
        instance_type: Id,
        #[serde(default = "default_network")]
        network: NetworkType,
        #[serde(default)]
        vswitch: Option<Id>,
        #[serde(default)]
        private_ip: Option<Ipv4Addr>,
        #[serde(default)]
        security_group: Option<Id>,
        #[serde(default = "default_state")]
        state: InstanceState,
        #[serde(default)]
        fixed_public_ip: Option<Ipv4Addr>,
    },
    StartInstance {
        id: Id,
    },
    StopInstance {
        id: Id,
    },
    /// Deletes the instance and its primary ENI; secondary ENIs are detached and kept, EIPs
    /// return to `available` (R04).
    ReleaseInstance {
        id: Id,
    },
    /// A secondary, detached ENI; `security_group` (of the vSwitch's VPC) filters it when
    /// named.
    CreateEni {
        id: Id,
        vswitch: Id,
        #[serde(default)]
        primary_ip: Option<Ipv4Addr>,
        #[serde(default)]
        security_group: Option<Id>,
    },
    AttachEni {
        eni: Id,
        instance: Id,
    },
    DetachEni {
        eni: Id,
    },
    DeleteEni {
        eni: Id,
    },
    /// Filters the ENI with a security group of its VPC, or (`None`) no longer filters it.
    SetEniSecurityGroup {
        eni: Id,
        #[serde(default)]
        security_group: Option<Id>,
    },
    /// Assigns the listed addresses, plus `count` more picked from the vSwitch; all or none
    /// (R16).
    AssignPrivateIps {
        eni: Id,
        #[serde(default)]
        ips: Vec<Ipv4Addr>,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        allow_reassignment: bool,
    },
    UnassignPrivateIps {
        eni: Id,
        ips: Vec<Ipv4Addr>,
    },
    AssignIpv6 {
        eni: Id,
        ips: Vec<Ipv6Addr>,
    },
    UnassignIpv6 {
        eni: Id,
        ips: Vec<Ipv6Addr>,
    },
    /// Enables or disables public bandwidth for an IPv6 address (R23).
    SetIpv6Public {
        ip: Ipv6Addr,
        enabled: bool,
    },
    AllocateEip {
        address: Ipv4Addr,
        #[serde(default)]
        region: Option<Id>,
        #[serde(default)]
        bandwidth_mbps: Option<u32>,
    },
    SetEipBandwidth {
        eip: Ipv4Addr,
        bandwidth_mbps: Option<u32>,
    },
    ReleaseEip {
        eip: Ipv4Addr,
    },
    /// Exactly one target: `instance` (R06), or `eni` (with `private_ip` in NAT mode, or a
    /// visible `mode`), or a bare `private_ip` (the ENI that holds it, NAT mode).
    AssociateEip {
        eip: Ipv4Addr,
        #[serde(default)]
        instance: Option<Id>,
        #[serde(default)]
        eni: Option<Id>,
        #[serde(default)]
        private_ip: Option<Ipv4Addr>,
        #[serde(default)]
        mode: Option<AssociationMode>,
        #[serde(default)]
        allow_reassociation: bool,
    },
    UnassociateEip {
        eip: Ipv4Addr,
    },
    CreateNatGateway {
        id: Id,
        vpc: Id,
        #[serde(default)]
        eip_quota: Option<u32>,
    },
    DeleteNatGateway {
        id: Id,
    },
    AddNatGatewayEip {
        nat_gateway: Id,
        eip: Ipv4Addr,
    },
    RemoveNatGatewayEip {
        nat_gateway: Id,
        eip: Ipv4Addr,
    },
    AddSnatEntry {
        nat_gateway: Id,
        id: Id,
        source: SnatSource,
        eips: Vec<Ipv4Addr>,
    },
    RemoveSnatEntry {
        nat_gateway: Id,
        id: Id,
    },
    AddDnatEntry {
        nat_gateway: Id,
        id: Id,
        eip: Ipv4Addr,
        mapping: DnatMapping,
    },
    RemoveDnatEntry {
        nat_gateway: Id,
        id: Id,
    },
    /// A security group of a VPC, with no rules yet: it admits nothing inbound.
    CreateSecurityGroup {
        id: Id,
        vpc: Id,
    },
    /// Deletes a security group that no ENI uses.
    DeleteSecurityGroup {
        id: Id,
    },
    /// Adds an inbound rule.
    AuthorizeSecurityGroup {
        id: Id,
        rule: SecurityGroupRule,
    },
    /// Removes an inbound rule.
    RevokeSecurityGroup {
        id: Id,
        rule: SecurityGroupRule,
    },
}

fn default_network() -> NetworkType {
    NetworkType::Vpc
}

fn default_state() -> InstanceState {
    InstanceState::Running
}
