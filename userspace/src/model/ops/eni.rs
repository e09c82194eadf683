//! ENIs and their addresses: R12-R21 and R23.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use super::{
    Executed, check_eni_changeable, check_id, check_in_vswitch, check_ipv4_free, check_no_dnat,
    dnat_targeting, eni, instance, instance_has_eip, instance_ipv4s, instance_type, ipv6_in,
    pick_free_ipv4, vswitch,
};
use crate::model::{
    refusal::{Refusal, codes},
    resources::*,
    state::State,
    txn::Txn,
};

pub fn create(
    txn: &mut Txn,
    id: &str,
    vswitch_id: &str,
    primary_ip: Option<Ipv4Addr>,
    security_group: Option<&str>,
) -> Result<Executed, Refusal> {
    check_id(Kind::Eni, id)?;
    let state = txn.state();
    if state.enis.contains_key(id) {
        return Err(Refusal::exists(Kind::Eni, id));
    }
    let vswitch = vswitch(state, vswitch_id)?;
    let ip = match primary_ip {
        Some(ip) => {
            check_in_vswitch(vswitch, ip)?;
            check_ipv4_free(state, ip)?;
            ip
        }
        None => pick_free_ipv4(state, vswitch, &[])?,
    };
    if let Some(group) = security_group {
        super::security_group::check_fits_vswitch(state, group, vswitch_id)?;
    }
    txn.put(Resource::Eni(Eni {
        id: id.into(),
        kind: EniKind::Secondary,
        vswitch: vswitch_id.into(),
        security_group: security_group.map(Into::into),
        primary_ip: ip,
        secondary_ips: BTreeSet::new(),
        ipv6: BTreeSet::new(),
        ipv6_public: BTreeSet::new(),
        instance: None,
    }));
    Ok(Executed::about(Kind::Eni, id))
}

/// Attaches a detached secondary ENI; it brings its addresses and EIPs along (R21).
pub fn attach(txn: &mut Txn, eni_id: &str, instance_id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    let eni = detached_secondary(state, eni_id)?;
    let instance = instance(state, instance_id)?;
    if instance.network == NetworkType::Classic {
        return Err(Refusal::plain(
            codes::INSTANCE_NETWORK_CLASSIC,
            format!("instance {instance_id} is in the classic network and takes no ENI"),
        ));
    }
    if !matches!(instance.state, InstanceState::Running | InstanceState::Stopped) {
        return Err(Refusal::plain(
            codes::INSTANCE_STATE,
            format!(
                "instance {instance_id} is {:?}; attach once it is running or stopped",
                instance.state
            ),
        ));
    }
    // R12: same region and zone.
    if state.region_of_eni(eni) != Some(instance.region.as_str()) {
        return Err(Refusal::rule(
            codes::REGION_MISMATCH,
            "R12",
            format!("ENI {eni_id} and instance {instance_id} are in different regions"),
        ));
    }
    if state.zone_of_eni(eni) != Some(instance.zone.as_str()) {
        return Err(Refusal::rule(
            codes::ZONE_MISMATCH,
            "R12",
            format!(
                "ENI {eni_id} is in zone {}, instance {instance_id} in zone {}",
                state.zone_of_eni(eni).unwrap_or("?"),
                instance.zone
            ),
        ));
    }
    let primary_vpc = instance
        .primary_eni
        .as_deref()
        .and_then(|p| state.enis.get(p))
        .and_then(|p| state.vpc_of_eni(p));
    if primary_vpc.map(|v| &v.id) != state.vpc_of_eni(eni).map(|v| &v.id) {
        return Err(Refusal::plain(
            codes::NETWORK_MISMATCH,
            format!("ENI {eni_id} is not in the VPC of instance {instance_id}"),
        ));
    }
    // R20: ENIs per instance, and the ENI's addresses within the type's limits.
    let limits = instance_type(state, &instance.instance_type)?;
    let attached = state.enis_of_instance(instance_id).count() as u32;
    if attached >= limits.max_enis {
        return Err(Refusal::rule(
            codes::INSTANCE_ENI_LIMIT,
            "R20",
            format!(
                "instance type {} allows {} ENIs; instance {instance_id} has {attached}",
                limits.id, limits.max_enis
            ),
        ));
    }
    check_address_limits(limits, eni, eni.ipv4_count(), eni.ipv6.len())?;
    // R08: the ENI brings its EIPs and its addresses along (R21); an EIP and a DNAT entry
    // must not meet on the instance.
    let eni_ips: Vec<Ipv4Addr> = eni.ipv4s().collect();
    if state.eips_of_eni(eni_id).next().is_some() {
        check_no_dnat(
            state,
            &format!("instance {instance_id}"),
            &instance_ipv4s(state, instance_id),
        )?;
    }
    if instance_has_eip(state, instance_id) {
        check_no_dnat(
            state,
            &format!("ENI {eni_id} (instance {instance_id} has an EIP)"),
            &eni_ips,
        )?;
    }
    let mut eni = eni.clone();
    eni.instance = Some(instance_id.into());
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// Detaches a secondary ENI, keeping its addresses and EIPs (R21).
pub fn detach(txn: &mut Txn, eni_id: &str) -> Result<Executed, Refusal> {
    let eni = eni(txn.state(), eni_id)?;
    if eni.kind == EniKind::Primary {
        return Err(Refusal::rule(
            codes::ENI_KIND,
            "R14",
            format!("ENI {eni_id} is the primary ENI of its instance and cannot be detached"),
        ));
    }
    if eni.instance.is_none() {
        return Err(Refusal::plain(
            codes::ENI_NOT_ATTACHED,
            format!("ENI {eni_id} is not attached"),
        ));
    }
    let mut eni = eni.clone();
    eni.instance = None;
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// Deletes a detached secondary ENI; its EIPs return to `available` (R04).
pub fn delete(txn: &mut Txn, eni_id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    let eni = detached_secondary(state, eni_id)?;
    let ips: Vec<Ipv4Addr> = eni.ipv4s().collect();
    if let Some((gw, entry)) = dnat_targeting(state, &ips).next() {
        return Err(Refusal::in_use(
            format!("ENI {eni_id}"),
            format!("DNAT entry {} of NAT gateway {}", entry.id, gw.id),
        ));
    }
    let freed = state.eips_of_eni(eni_id).map(|eip| eip.address).collect();
    super::free_eips(txn, freed);
    txn.remove(&Key::new(Kind::Eni, eni_id));
    Ok(Executed::default())
}

/// Assigns secondary private IPv4s: all or none (R16), inside the vSwitch and unique
/// (R13), within the type's limit (R20), moving an address from another ENI only when
/// allowed, together with its EIP (R17).
pub fn assign_private_ips(
    txn: &mut Txn,
    eni_id: &str,
    ips: &[Ipv4Addr],
    count: u32,
    allow_reassignment: bool,
) -> Result<Executed, Refusal> {
    if ips.is_empty() && count == 0 {
        return Err(Refusal::invalid("name the addresses to assign, or a count to pick"));
    }
    let unique: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    if unique.len() != ips.len() {
        return Err(Refusal::invalid("an address is listed twice"));
    }
    let state = txn.state();
    let target = eni(state, eni_id)?.clone();
    check_eni_changeable(state, &target)?;
    let vswitch = vswitch(state, &target.vswitch)?.clone();
    let mut moves: Vec<(Eni, Ipv4Addr)> = Vec::new();
    for &ip in ips {
        check_in_vswitch(&vswitch, ip)?;
        match state.owner_of_ipv4(ip) {
            Some(owner) if owner.id == target.id => {
                return Err(Refusal::plain(
                    codes::IP_IN_USE,
                    format!("{ip} is already on ENI {eni_id}"),
                ));
            }
            Some(owner) if owner.primary_ip == ip => {
                return Err(Refusal::rule(
                    codes::PRIMARY_IP,
                    "R14",
                    format!("{ip} is the primary address of ENI {}; it cannot move", owner.id),
                ));
            }
            Some(owner) if !allow_reassignment => {
                return Err(Refusal::rule(
                    codes::IP_IN_USE,
                    "R17",
                    format!(
                        "{ip} is assigned to ENI {}; pass --allow-reassignment to move it",
                        owner.id
                    ),
                ));
            }
            Some(owner) => {
                check_eni_changeable(state, owner)?;
                moves.push((owner.clone(), ip));
            }
            None => {
                if state.eips.contains_key(&ip) {
                    return Err(Refusal::invalid(format!("{ip} is an EIP, not a private address")));
                }
            }
        }
    }
    let mut new_ips = unique.clone();
    for _ in 0..count {
        let taken: Vec<Ipv4Addr> = new_ips.iter().copied().collect();
        new_ips.insert(pick_free_ipv4(state, &vswitch, &taken)?);
    }
    if let Some(limits) = limits_of(state, &target)? {
        check_address_limits(
            limits,
            &target,
            target.ipv4_count() + new_ips.len(),
            target.ipv6.len(),
        )?;
    }
    // The moved addresses' EIPs follow them to the new ENI (R17).
    let moved_eips: Vec<Eip> =
        moves.iter().filter_map(|(_, ip)| state.eip_of_private_ip(*ip).cloned()).collect();
    // R08: moved EIPs, and moved DNAT targets, must not meet the other on the new holder.
    let (holder, holder_ips, holder_has_eip) = match &target.instance {
        Some(i) => (format!("instance {i}"), instance_ipv4s(state, i), instance_has_eip(state, i)),
        None => (
            format!("ENI {eni_id}"),
            target.ipv4s().collect(),
            state.eips_of_eni(eni_id).next().is_some(),
        ),
    };
    if !moved_eips.is_empty() {
        check_no_dnat(state, &holder, &holder_ips)?;
    }
    if holder_has_eip {
        let moved: Vec<Ipv4Addr> = moves.iter().map(|(_, ip)| *ip).collect();
        check_no_dnat(state, &format!("an address moving to {holder}, which has an EIP,"), &moved)?;
    }
    for (mut owner, ip) in moves {
        owner.secondary_ips.remove(&ip);
        txn.put(Resource::Eni(owner));
    }
    let mut target = target;
    target.secondary_ips.extend(new_ips);
    txn.put(Resource::Eni(target));
    for mut eip in moved_eips {
        if let Some(Association::Eni { private_ip, .. }) = eip.association {
            eip.association = Some(Association::Eni { eni: eni_id.into(), private_ip });
            super::check_nat_eip_fits(txn.state(), eni(txn.state(), eni_id)?, &eip)?;
            txn.put(Resource::Eip(eip));
        }
    }
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// Unassigns secondary private IPv4s, all or none; each one's EIP is disassociated (R18).
/// The primary address stays (R14).
pub fn unassign_private_ips(
    txn: &mut Txn,
    eni_id: &str,
    ips: &[Ipv4Addr],
) -> Result<Executed, Refusal> {
    if ips.is_empty() {
        return Err(Refusal::invalid("name the addresses to unassign"));
    }
    let state = txn.state();
    let mut eni = eni(state, eni_id)?.clone();
    check_eni_changeable(state, &eni)?;
    for ip in ips {
        if *ip == eni.primary_ip {
            return Err(Refusal::rule(
                codes::PRIMARY_IP,
                "R14",
                format!("{ip} is the primary address of ENI {eni_id} and cannot be unassigned"),
            ));
        }
        if !eni.secondary_ips.contains(ip) {
            return Err(Refusal::plain(
                codes::IP_NOT_ASSIGNED,
                format!("{ip} is not on ENI {eni_id}"),
            ));
        }
    }
    if let Some((gw, entry)) = dnat_targeting(state, ips).next() {
        return Err(Refusal::in_use(
            format!("address {}", entry.mapping.private_ip()),
            format!("DNAT entry {} of NAT gateway {}", entry.id, gw.id),
        ));
    }
    let freed = ips.iter().filter_map(|ip| Some(state.eip_of_private_ip(*ip)?.address)).collect();
    super::free_eips(txn, freed);
    for ip in ips {
        eni.secondary_ips.remove(ip);
    }
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// Assigns IPv6 addresses: inside the vSwitch's IPv6 CIDR and unique (R13), never taken
/// from another ENI (R19), within the type's limit (R20).
pub fn assign_ipv6(txn: &mut Txn, eni_id: &str, ips: &[Ipv6Addr]) -> Result<Executed, Refusal> {
    if ips.is_empty() {
        return Err(Refusal::invalid("name the IPv6 addresses to assign"));
    }
    let state = txn.state();
    let mut eni = eni(state, eni_id)?.clone();
    check_eni_changeable(state, &eni)?;
    let vswitch = vswitch(state, &eni.vswitch)?;
    let unique: BTreeSet<Ipv6Addr> = ips.iter().copied().collect();
    if unique.len() != ips.len() {
        return Err(Refusal::invalid("an address is listed twice"));
    }
    for ip in &unique {
        if !ipv6_in(vswitch.ipv6_cidr, *ip) {
            return Err(Refusal::rule(
                codes::IP_OUT_OF_RANGE,
                "R13",
                format!("{ip} is not inside the IPv6 CIDR of vSwitch {}", vswitch.id),
            ));
        }
        if let Some(owner) = state.owner_of_ipv6(*ip) {
            return Err(Refusal::rule(
                codes::IP_IN_USE,
                "R19",
                format!("{ip} is assigned to ENI {}; unassign it there first", owner.id),
            ));
        }
    }
    if let Some(limits) = limits_of(state, &eni)? {
        check_address_limits(limits, &eni, eni.ipv4_count(), eni.ipv6.len() + unique.len())?;
    }
    eni.ipv6.extend(unique);
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

pub fn unassign_ipv6(txn: &mut Txn, eni_id: &str, ips: &[Ipv6Addr]) -> Result<Executed, Refusal> {
    let state = txn.state();
    let mut eni = eni(state, eni_id)?.clone();
    check_eni_changeable(state, &eni)?;
    for ip in ips {
        if !eni.ipv6.remove(ip) {
            return Err(Refusal::plain(
                codes::IP_NOT_ASSIGNED,
                format!("{ip} is not on ENI {eni_id}"),
            ));
        }
        eni.ipv6_public.remove(ip);
    }
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// R23: an IPv6 address carries Internet traffic only once public bandwidth is enabled.
pub fn set_ipv6_public(txn: &mut Txn, ip: Ipv6Addr, enabled: bool) -> Result<Executed, Refusal> {
    let mut eni = txn
        .state()
        .owner_of_ipv6(ip)
        .ok_or_else(|| Refusal::plain(codes::IP_NOT_ASSIGNED, format!("no ENI holds {ip}")))?
        .clone();
    if enabled {
        eni.ipv6_public.insert(ip);
    } else {
        eni.ipv6_public.remove(&ip);
    }
    let id = eni.id.clone();
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, id))
}

/// The instance type limits that apply to an ENI: its instance's, or none while detached.
fn limits_of<'s>(state: &'s State, eni: &Eni) -> Result<Option<&'s InstanceType>, Refusal> {
    let Some(instance_id) = &eni.instance else {
        return Ok(None);
    };
    let instance = instance(state, instance_id)?;
    instance_type(state, &instance.instance_type).map(Some)
}

/// R20: an ENI holding `ipv4` private IPv4s and `ipv6` IPv6 addresses fits the type.
fn check_address_limits(
    limits: &InstanceType,
    eni: &Eni,
    ipv4: usize,
    ipv6: usize,
) -> Result<(), Refusal> {
    if ipv4 > limits.max_private_ipv4_per_eni as usize {
        return Err(Refusal::rule(
            codes::ENI_PRIVATE_IP_LIMIT,
            "R20",
            format!(
                "instance type {} allows {} private IPv4s per ENI; ENI {} would have {ipv4}",
                limits.id, limits.max_private_ipv4_per_eni, eni.id
            ),
        ));
    }
    if ipv6 > limits.max_ipv6_per_eni as usize {
        return Err(Refusal::rule(
            codes::ENI_IPV6_LIMIT,
            "R20",
            format!(
                "instance type {} allows {} IPv6 addresses per ENI; ENI {} would have {ipv6}",
                limits.id, limits.max_ipv6_per_eni, eni.id
            ),
        ));
    }
    Ok(())
}

/// An ENI that may be attached or deleted: a secondary one (a primary ENI lives and dies
/// with its instance, R14) that is not attached now.
fn detached_secondary<'s>(state: &'s State, eni_id: &str) -> Result<&'s Eni, Refusal> {
    let eni = eni(state, eni_id)?;
    if eni.kind == EniKind::Primary {
        return Err(Refusal::rule(
            codes::ENI_KIND,
            "R14",
            format!("ENI {eni_id} is a primary ENI; it lives and dies with its instance"),
        ));
    }
    if let Some(current) = &eni.instance {
        return Err(Refusal::plain(
            codes::ENI_ATTACHED,
            format!("ENI {eni_id} is attached to instance {current}; detach it first"),
        ));
    }
    Ok(eni)
}
