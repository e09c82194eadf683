//! The rules, one function per request, grouped by resource. Each validates against the
//! transaction's current state and makes its changes through the transaction; a refusal
//! returned from anywhere rolls the whole transaction back (R29).

mod eip;
mod eni;
mod instance;
mod nat_gateway;
mod network;
mod security_group;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::{
    refusal::{Refusal, codes},
    request::Request,
    resources::*,
    state::State,
    txn::Txn,
};

pub use nat_gateway::{Egress, EgressLookup, egress_of};

/// What a request did, for the answer: the resource it was about, and warnings (R11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executed {
    subject: Option<Subject>,
    pub warnings: Vec<String>,
}

/// The resource a request was about. An EIP's key is formatted only when asked for: an
/// apply of a million associations never asks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    Eip(Ipv4Addr),
    Other(Key),
}

impl Executed {
    fn about(kind: Kind, id: impl AsRef<str>) -> Self {
        Self { subject: Some(Subject::Other(Key::new(kind, id))), warnings: Vec::new() }
    }

    fn about_eip(address: Ipv4Addr) -> Self {
        Self { subject: Some(Subject::Eip(address)), warnings: Vec::new() }
    }

    /// The resource the request was about, if one.
    pub fn subject(&self) -> Option<Key> {
        Some(match self.subject.as_ref()? {
            Subject::Eip(address) => Key::new(Kind::Eip, address.to_string()),
            Subject::Other(key) => key.clone(),
        })
    }
}

/// R04: the EIPs of a target that goes stay allocated, unassociated.
fn free_eips(txn: &mut Txn, addresses: Vec<Ipv4Addr>) {
    for address in addresses {
        txn.update_eip(address, |eip| eip.association = None);
    }
}

/// Validates and carries out one request inside `txn`.
pub fn execute(txn: &mut Txn, request: &Request) -> Result<Executed, Refusal> {
    use Request as R;
    match request {
        R::CreateRegion { id } => network::create_region(txn, id),
        R::DeleteRegion { id } => network::delete_region(txn, id),
        R::CreateVpc { id, region, cidr, ipv6_cidr, ipv4_gateway } => {
            network::create_vpc(txn, id, region, *cidr, *ipv6_cidr, *ipv4_gateway)
        }
        R::DeleteVpc { id } => network::delete_vpc(txn, id),
        R::CreateVswitch { id, vpc, zone, cidr, ipv6_cidr } => {
            network::create_vswitch(txn, id, vpc, zone, *cidr, *ipv6_cidr)
        }
        R::DeleteVswitch { id } => network::delete_vswitch(txn, id),
        R::CreateInstanceType { id, max_enis, max_private_ipv4_per_eni, max_ipv6_per_eni } => {
            network::create_instance_type(
                txn,
                id,
                *max_enis,
                *max_private_ipv4_per_eni,
                *max_ipv6_per_eni,
            )
        }
        R::DeleteInstanceType { id } => network::delete_instance_type(txn, id),
        R::CreateInstance { .. } => instance::create(txn, request),
        R::StartInstance { id } => instance::start(txn, id),
        R::StopInstance { id } => instance::stop(txn, id),
        R::ReleaseInstance { id } => instance::release(txn, id),
        R::CreateEni { id, vswitch, primary_ip, security_group } => {
            eni::create(txn, id, vswitch, *primary_ip, security_group.as_deref())
        }
        R::SetEniSecurityGroup { eni, security_group } => {
            security_group::set_eni(txn, eni, security_group.as_deref())
        }
        R::AttachEni { eni, instance } => eni::attach(txn, eni, instance),
        R::DetachEni { eni } => eni::detach(txn, eni),
        R::DeleteEni { eni } => eni::delete(txn, eni),
        R::AssignPrivateIps { eni, ips, count, allow_reassignment } => {
            eni::assign_private_ips(txn, eni, ips, *count, *allow_reassignment)
        }
        R::UnassignPrivateIps { eni, ips } => eni::unassign_private_ips(txn, eni, ips),
        R::AssignIpv6 { eni, ips } => eni::assign_ipv6(txn, eni, ips),
        R::UnassignIpv6 { eni, ips } => eni::unassign_ipv6(txn, eni, ips),
        R::SetIpv6Public { ip, enabled } => eni::set_ipv6_public(txn, *ip, *enabled),
        R::AllocateEip { address, region, bandwidth_mbps } => {
            eip::allocate(txn, *address, region.as_deref(), *bandwidth_mbps)
        }
        R::SetEipBandwidth { eip, bandwidth_mbps } => {
            eip::set_bandwidth(txn, *eip, *bandwidth_mbps)
        }
        R::ReleaseEip { eip } => eip::release(txn, *eip),
        R::AssociateEip { eip, instance, eni, private_ip, mode, allow_reassociation } => {
            let target = eip::Target::from_request(instance, eni, *private_ip, *mode)?;
            eip::associate(txn, *eip, target, *allow_reassociation)
        }
        R::UnassociateEip { eip } => eip::unassociate(txn, *eip),
        R::CreateNatGateway { id, vpc, eip_quota } => nat_gateway::create(txn, id, vpc, *eip_quota),
        R::DeleteNatGateway { id } => nat_gateway::delete(txn, id),
        R::AddNatGatewayEip { nat_gateway, eip } => nat_gateway::add_eip(txn, nat_gateway, *eip),
        R::RemoveNatGatewayEip { nat_gateway, eip } => {
            nat_gateway::remove_eip(txn, nat_gateway, *eip)
        }
        R::AddSnatEntry { nat_gateway, id, source, eips } => {
            nat_gateway::add_snat(txn, nat_gateway, id, source, eips)
        }
        R::RemoveSnatEntry { nat_gateway, id } => nat_gateway::remove_snat(txn, nat_gateway, id),
        R::AddDnatEntry { nat_gateway, id, eip, mapping } => {
            nat_gateway::add_dnat(txn, nat_gateway, id, *eip, mapping)
        }
        R::RemoveDnatEntry { nat_gateway, id } => nat_gateway::remove_dnat(txn, nat_gateway, id),
        R::CreateSecurityGroup { id, vpc } => security_group::create(txn, id, vpc),
        R::DeleteSecurityGroup { id } => security_group::delete(txn, id),
        R::AuthorizeSecurityGroup { id, rule } => security_group::authorize(txn, id, rule),
        R::RevokeSecurityGroup { id, rule } => security_group::revoke(txn, id, rule),
    }
}

/// Identifiers: 1 to 64 of a-z, 0-9, '-', '_', '.'.
fn check_id(kind: Kind, id: &str) -> Result<(), Refusal> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Refusal::invalid(format!(
            "{} id {id:?} must be 1 to 64 of a-z, 0-9, '-', '_' and '.'",
            kind.name().replace('_', " ")
        )))
    }
}

/// A unicast IPv4 that can be an EIP or a private address.
fn check_unicast(what: &str, address: Ipv4Addr) -> Result<(), Refusal> {
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_link_local()
        || address.octets()[0] >= 240
    {
        return Err(Refusal::invalid(format!(
            "{what} {address} is not a unicast address that can be used"
        )));
    }
    Ok(())
}

/// R13: the address lies inside the vSwitch's CIDR and is not one it keeps for itself
/// (network address, the vSwitch gateway at the first host address, broadcast).
fn check_in_vswitch(vswitch: &VSwitch, ip: Ipv4Addr) -> Result<(), Refusal> {
    if !vswitch.cidr.contains(&ip) || reserved_in(vswitch.cidr, ip) {
        return Err(Refusal::rule(
            codes::IP_OUT_OF_RANGE,
            "R13",
            format!("{ip} is not a usable address of vSwitch {} ({})", vswitch.id, vswitch.cidr),
        ));
    }
    Ok(())
}

fn reserved_in(cidr: Ipv4Net, ip: Ipv4Addr) -> bool {
    let first_host = Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1));
    ip == cidr.network() || ip == cidr.broadcast() || ip == first_host
}

/// R13: no other ENI holds the address, and it is not an EIP.
fn check_ipv4_free(state: &State, ip: Ipv4Addr) -> Result<(), Refusal> {
    if let Some(owner) = state.owner_of_ipv4(ip) {
        return Err(Refusal::rule(
            codes::IP_IN_USE,
            "R13",
            format!("{ip} is already assigned to ENI {}", owner.id),
        ));
    }
    if state.eips.contains_key(&ip) {
        return Err(Refusal::invalid(format!("{ip} is an EIP, not a private address")));
    }
    Ok(())
}

/// The lowest usable address of the vSwitch that nobody holds and that is not in `taken`.
fn pick_free_ipv4(
    state: &State,
    vswitch: &VSwitch,
    taken: &[Ipv4Addr],
) -> Result<Ipv4Addr, Refusal> {
    vswitch
        .cidr
        .hosts()
        .find(|ip| {
            !reserved_in(vswitch.cidr, *ip)
                && state.owner_of_ipv4(*ip).is_none()
                && !state.eips.contains_key(ip)
                && !taken.contains(ip)
        })
        .ok_or_else(|| {
            Refusal::plain(
                codes::NO_FREE_IP,
                format!("vSwitch {} has no free address left", vswitch.id),
            )
        })
}

/// A NAT-mode EIP may land on `eni` (associated there, or following its address, R17):
/// no visible-mode EIPs there, and on a primary ENI at most one EIP (R06, the table of
/// 001), that of an instance without a fixed public IP (R07).
fn check_nat_eip_fits(state: &State, eni: &Eni, eip: &Eip) -> Result<(), Refusal> {
    // All the EIPs of an ENI have one mode: this check keeps NAT-mode ones among their own
    // kind, multi-EIP refuses any other mode, and cut-through any other EIP. So one other
    // EIP tells the mode of all, and the check costs the same on an ENI with a thousand
    // (scanning them all made applying many associations quadratic per ENI).
    let other = state.eips_of_eni(&eni.id).find(|e| e.address != eip.address);
    if other.is_some_and(|e| {
        e.association.as_ref().and_then(|a| a.mode()) != Some(AssociationMode::Nat)
    }) {
        return Err(Refusal::plain(
            codes::ENI_MODE_CONFLICT,
            format!(
                "ENI {} carries visible-mode EIPs; EIP {} cannot join in NAT mode",
                eni.id, eip.address
            ),
        ));
    }
    if eni.kind == EniKind::Primary {
        if let Some(other) = other {
            return Err(Refusal::rule(
                codes::ENI_EIP_LIMIT,
                "R06",
                format!(
                    "primary ENI {} already has EIP {}; more EIPs come through secondary ENIs",
                    eni.id, other.address
                ),
            ));
        }
        if let Some(instance) = eni.instance.as_deref().and_then(|i| state.instances.get(i))
            && let Some(fixed) = instance.fixed_public_ip
        {
            return Err(Refusal::rule(
                codes::INSTANCE_HAS_PUBLIC_IP,
                "R07",
                format!("instance {} has the fixed public IP {fixed}", instance.id),
            ));
        }
    }
    Ok(())
}

// Lookups that refuse with `<KIND>_NOT_FOUND`.

fn region<'s>(state: &'s State, id: &str) -> Result<&'s Region, Refusal> {
    state.regions.get(id).ok_or_else(|| Refusal::not_found(Kind::Region, id))
}

fn vpc<'s>(state: &'s State, id: &str) -> Result<&'s Vpc, Refusal> {
    state.vpcs.get(id).ok_or_else(|| Refusal::not_found(Kind::Vpc, id))
}

fn vswitch<'s>(state: &'s State, id: &str) -> Result<&'s VSwitch, Refusal> {
    state.vswitches.get(id).ok_or_else(|| Refusal::not_found(Kind::VSwitch, id))
}

fn instance_type<'s>(state: &'s State, id: &str) -> Result<&'s InstanceType, Refusal> {
    state.instance_types.get(id).ok_or_else(|| Refusal::not_found(Kind::InstanceType, id))
}

fn instance<'s>(state: &'s State, id: &str) -> Result<&'s Instance, Refusal> {
    state.instances.get(id).ok_or_else(|| Refusal::not_found(Kind::Instance, id))
}

fn eni<'s>(state: &'s State, id: &str) -> Result<&'s Eni, Refusal> {
    state.enis.get(id).ok_or_else(|| Refusal::not_found(Kind::Eni, id))
}

fn eip(state: &State, address: Ipv4Addr) -> Result<&Eip, Refusal> {
    state.eips.get(&address).ok_or_else(|| {
        Refusal::plain(
            "EIP_NOT_FOUND",
            format!("EIP {address} is not allocated; `eipctl eip list` shows the EIPs"),
        )
    })
}

fn nat_gateway<'s>(state: &'s State, id: &str) -> Result<&'s NatGateway, Refusal> {
    state.nat_gateways.get(id).ok_or_else(|| Refusal::not_found(Kind::NatGateway, id))
}

/// R15: secondary addresses change only on an ENI of a running or stopped instance, or a
/// detached ENI.
fn check_eni_changeable(state: &State, eni: &Eni) -> Result<(), Refusal> {
    if let Some(id) = &eni.instance {
        let instance = instance(state, id)?;
        if !matches!(instance.state, InstanceState::Running | InstanceState::Stopped) {
            return Err(Refusal::rule(
                codes::INSTANCE_STATE,
                "R15",
                format!(
                    "ENI {} belongs to instance {id}, which is {:?}; wait until it is running or stopped",
                    eni.id, instance.state
                ),
            ));
        }
    }
    Ok(())
}

/// The DNAT entries (gateway, entry) whose private IP is one of `ips`.
fn dnat_targeting<'s>(
    state: &'s State,
    ips: &'s [Ipv4Addr],
) -> impl Iterator<Item = (&'s NatGateway, &'s DnatEntry)> + 's {
    state.nat_gateways.values().flat_map(move |gw| {
        gw.dnat_entries
            .values()
            .filter(move |e| ips.contains(&e.mapping.private_ip()))
            .map(move |e| (gw, e))
    })
}

/// R08: the target of a DNAT entry gets no EIP (`what` names it in the message).
fn check_no_dnat(state: &State, what: &str, ips: &[Ipv4Addr]) -> Result<(), Refusal> {
    check_no_dnat_where(state, &what, &|ip| ips.contains(&ip))
}

/// [`check_no_dnat`] for the addresses `is_target` says yes to: the DNAT entries (few) are
/// asked about, not every address of a large ENI or instance.
/// `what` is formatted only into a refusal: checking a million associations would
/// otherwise format a million names.
fn check_no_dnat_where(
    state: &State,
    what: &dyn std::fmt::Display,
    is_target: &dyn Fn(Ipv4Addr) -> bool,
) -> Result<(), Refusal> {
    let mut targeting = state.nat_gateways.values().flat_map(|gw| {
        gw.dnat_entries.values().filter(|e| is_target(e.mapping.private_ip())).map(move |e| (gw, e))
    });
    if let Some((gw, entry)) = targeting.next() {
        return Err(Refusal::rule(
            codes::DNAT_CONFLICT,
            "R08",
            format!(
                "{what} is the target of DNAT entry {} of NAT gateway {}; remove the entry first",
                entry.id, gw.id
            ),
        ));
    }
    Ok(())
}

/// R08 for an EIP landing on an ENI: neither its instance (any address, when attached) nor
/// the detached ENI may be a DNAT target.
fn check_eni_no_dnat(state: &State, eni: &Eni) -> Result<(), Refusal> {
    match &eni.instance {
        Some(instance) => check_no_dnat_where(
            state,
            &format_args!("instance {instance}"),
            &held_by_instance(state, instance),
        ),
        None => check_no_dnat_where(state, &format_args!("ENI {}", eni.id), &|ip| eni.has_ipv4(ip)),
    }
}

/// Whether an instance has an EIP: directly, or on any of its ENIs.
fn instance_has_eip(state: &State, instance: &str) -> bool {
    state.eip_of_instance(instance).is_some()
        || state.enis_of_instance(instance).any(|e| state.eips_of_eni(&e.id).next().is_some())
}

/// Whether an ENI of `instance` holds an address: [`instance_ipv4s`] as a question.
fn held_by_instance<'s>(state: &'s State, instance: &'s str) -> impl Fn(Ipv4Addr) -> bool + 's {
    move |ip| state.owner_of_ipv4(ip).is_some_and(|eni| eni.instance.as_deref() == Some(instance))
}

/// Every private IPv4 of an instance (all its ENIs).
fn instance_ipv4s(state: &State, instance: &str) -> Vec<Ipv4Addr> {
    state.enis_of_instance(instance).flat_map(|eni| eni.ipv4s()).collect()
}

fn ipv6_in(net: Option<ipnet::Ipv6Net>, ip: Ipv6Addr) -> bool {
    net.is_some_and(|n| n.contains(&ip))
}
