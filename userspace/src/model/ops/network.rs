//! Regions, VPCs, vSwitches and instance types: the frame the other resources live in.

use ipnet::{Ipv4Net, Ipv6Net};

use super::{Executed, check_id, region, vpc};
use crate::model::{
    refusal::{Refusal, codes},
    resources::*,
    txn::Txn,
};

pub fn create_region(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    check_id(Kind::Region, id)?;
    if txn.state().regions.contains_key(id) {
        return Err(Refusal::exists(Kind::Region, id));
    }
    txn.put(Resource::Region(Region { id: id.into() }));
    Ok(Executed::about(Kind::Region, id))
}

pub fn delete_region(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    region(state, id)?;
    if let Some(vpc) = state.vpcs.values().find(|v| v.region == id) {
        return Err(Refusal::in_use(format!("region {id}"), format!("VPC {}", vpc.id)));
    }
    if let Some(i) = state.instances.values().find(|i| i.region == id) {
        return Err(Refusal::in_use(format!("region {id}"), format!("instance {}", i.id)));
    }
    if let Some(e) = state.eips.values().find(|e| e.region == id) {
        return Err(Refusal::in_use(format!("region {id}"), format!("EIP {}", e.address)));
    }
    txn.remove(&Key::new(Kind::Region, id));
    Ok(Executed::default())
}

pub fn create_vpc(
    txn: &mut Txn,
    id: &str,
    region_id: &str,
    cidr: Ipv4Net,
    ipv6_cidr: Option<Ipv6Net>,
    ipv4_gateway: bool,
) -> Result<Executed, Refusal> {
    check_id(Kind::Vpc, id)?;
    let state = txn.state();
    if state.vpcs.contains_key(id) {
        return Err(Refusal::exists(Kind::Vpc, id));
    }
    region(state, region_id)?;
    if cidr != cidr.trunc() || cidr.prefix_len() > 28 {
        return Err(Refusal::invalid(format!(
            "VPC CIDR {cidr} must be a network address with a prefix of /28 or shorter"
        )));
    }
    // One LAN, one address space: the data plane keys mappings by private address, so the
    // VPCs behind this gateway must not overlap.
    if let Some(other) = state.vpcs.values().find(|v| overlaps(v.cidr, cidr)) {
        return Err(Refusal::plain(
            codes::CIDR_CONFLICT,
            format!("{cidr} overlaps VPC {} ({}) behind this gateway", other.id, other.cidr),
        ));
    }
    if let Some(v6) = ipv6_cidr {
        if v6 != v6.trunc() {
            return Err(Refusal::invalid(format!("IPv6 CIDR {v6} is not a network address")));
        }
        if let Some(other) = state
            .vpcs
            .values()
            .find(|v| v.ipv6_cidr.is_some_and(|o| o.contains(&v6) || v6.contains(&o)))
        {
            return Err(Refusal::plain(
                codes::CIDR_CONFLICT,
                format!("{v6} overlaps the IPv6 CIDR of VPC {}", other.id),
            ));
        }
    }
    txn.put(Resource::Vpc(Vpc {
        id: id.into(),
        region: region_id.into(),
        cidr,
        ipv6_cidr,
        ipv4_gateway,
    }));
    Ok(Executed::about(Kind::Vpc, id))
}

pub fn delete_vpc(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    vpc(state, id)?;
    if let Some(vs) = state.vswitches.values().find(|v| v.vpc == id) {
        return Err(Refusal::in_use(format!("VPC {id}"), format!("vSwitch {}", vs.id)));
    }
    if let Some(gw) = state.nat_gateways.values().find(|g| g.vpc == id) {
        return Err(Refusal::in_use(format!("VPC {id}"), format!("NAT gateway {}", gw.id)));
    }
    if let Some(group) = state.security_groups.values().find(|g| g.vpc == id) {
        return Err(Refusal::in_use(format!("VPC {id}"), format!("security group {}", group.id)));
    }
    txn.remove(&Key::new(Kind::Vpc, id));
    Ok(Executed::default())
}

pub fn create_vswitch(
    txn: &mut Txn,
    id: &str,
    vpc_id: &str,
    zone: &str,
    cidr: Ipv4Net,
    ipv6_cidr: Option<Ipv6Net>,
) -> Result<Executed, Refusal> {
    check_id(Kind::VSwitch, id)?;
    check_id(Kind::VSwitch, zone)
        .map_err(|_| Refusal::invalid(format!("zone {zone:?} is not a valid name")))?;
    let state = txn.state();
    if state.vswitches.contains_key(id) {
        return Err(Refusal::exists(Kind::VSwitch, id));
    }
    let vpc = vpc(state, vpc_id)?;
    if cidr != cidr.trunc() || cidr.prefix_len() > 29 || !vpc.cidr.contains(&cidr) {
        return Err(Refusal::plain(
            codes::CIDR_CONFLICT,
            format!(
                "vSwitch CIDR {cidr} must be a /29 or larger network inside VPC {vpc_id} ({})",
                vpc.cidr
            ),
        ));
    }
    if let Some(other) =
        state.vswitches.values().find(|v| v.vpc == vpc_id && overlaps(v.cidr, cidr))
    {
        return Err(Refusal::plain(
            codes::CIDR_CONFLICT,
            format!("{cidr} overlaps vSwitch {} ({})", other.id, other.cidr),
        ));
    }
    if let Some(v6) = ipv6_cidr
        && (!vpc.ipv6_cidr.is_some_and(|net| net.contains(&v6)) || v6 != v6.trunc())
    {
        return Err(Refusal::plain(
            codes::CIDR_CONFLICT,
            format!("vSwitch IPv6 CIDR {v6} must be a network inside VPC {vpc_id}'s IPv6 CIDR"),
        ));
    }
    txn.put(Resource::VSwitch(VSwitch {
        id: id.into(),
        vpc: vpc_id.into(),
        zone: zone.into(),
        cidr,
        ipv6_cidr,
    }));
    Ok(Executed::about(Kind::VSwitch, id))
}

pub fn delete_vswitch(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    super::vswitch(state, id)?;
    if let Some(eni) = state.enis.values().find(|e| e.vswitch == id) {
        return Err(Refusal::in_use(format!("vSwitch {id}"), format!("ENI {}", eni.id)));
    }
    for gw in state.nat_gateways.values() {
        if let Some(entry) =
            gw.snat_entries.values().find(|e| e.source == SnatSource::VSwitch(id.into()))
        {
            return Err(Refusal::in_use(
                format!("vSwitch {id}"),
                format!("SNAT entry {} of NAT gateway {}", entry.id, gw.id),
            ));
        }
    }
    txn.remove(&Key::new(Kind::VSwitch, id));
    Ok(Executed::default())
}

pub fn create_instance_type(
    txn: &mut Txn,
    id: &str,
    max_enis: u32,
    max_private_ipv4_per_eni: u32,
    max_ipv6_per_eni: u32,
) -> Result<Executed, Refusal> {
    check_id(Kind::InstanceType, id)?;
    if txn.state().instance_types.contains_key(id) {
        return Err(Refusal::exists(Kind::InstanceType, id));
    }
    if max_enis == 0 || max_private_ipv4_per_eni == 0 {
        return Err(Refusal::invalid(
            "an instance type allows at least one ENI and one private IPv4",
        ));
    }
    txn.put(Resource::InstanceType(InstanceType {
        id: id.into(),
        max_enis,
        max_private_ipv4_per_eni,
        max_ipv6_per_eni,
    }));
    Ok(Executed::about(Kind::InstanceType, id))
}

pub fn delete_instance_type(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    super::instance_type(state, id)?;
    if let Some(i) = state.instances.values().find(|i| i.instance_type == id) {
        return Err(Refusal::in_use(format!("instance type {id}"), format!("instance {}", i.id)));
    }
    txn.remove(&Key::new(Kind::InstanceType, id));
    Ok(Executed::default())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b) || b.contains(&a)
}
