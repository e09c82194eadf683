//! Instances: creation with their primary ENI (R14), start/stop (R22), release (R04).

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::{
    Executed, check_id, check_in_vswitch, check_ipv4_free, check_unicast, dnat_targeting, instance,
    instance_ipv4s, instance_type, pick_free_ipv4, region, vswitch,
};
use crate::model::{
    refusal::{Refusal, codes},
    request::Request,
    resources::*,
    txn::Txn,
};

pub fn create(txn: &mut Txn, request: &Request) -> Result<Executed, Refusal> {
    let Request::CreateInstance {
        id,
        region: region_id,
        zone,
        instance_type: type_id,
        network,
        vswitch: vswitch_id,
        private_ip,
        security_group,
        state: initial_state,
        fixed_public_ip,
    } = request
    else {
        unreachable!("dispatched on CreateInstance");
    };
    check_id(Kind::Instance, id)?;
    let state = txn.state();
    if state.instances.contains_key(id) {
        return Err(Refusal::exists(Kind::Instance, id));
    }
    region(state, region_id)?;
    instance_type(state, type_id)?;
    if let Some(ip) = fixed_public_ip {
        check_unicast("fixed public IP", *ip)?;
        if state.eips.contains_key(ip) {
            return Err(Refusal::invalid(format!("{ip} is an EIP; a fixed public IP is not one")));
        }
        if let Some(other) = state.instance_with_fixed_ip(*ip) {
            return Err(Refusal::invalid(format!(
                "{ip} is the fixed public IP of instance {}",
                other.id
            )));
        }
    }
    let primary_eni = match (network, vswitch_id) {
        (NetworkType::Classic, None) if security_group.is_some() => {
            return Err(Refusal::invalid(
                "a classic-network instance has no ENI for a security group to filter",
            ));
        }
        (NetworkType::Classic, None) => None,
        (NetworkType::Classic, Some(_)) => {
            return Err(Refusal::invalid("a classic-network instance has no vSwitch"));
        }
        (NetworkType::Vpc, None) => {
            return Err(Refusal::invalid("a VPC instance needs --vswitch for its primary ENI"));
        }
        (NetworkType::Vpc, Some(vswitch_id)) => {
            let vswitch = vswitch(state, vswitch_id)?;
            let vpc = super::vpc(state, &vswitch.vpc)?;
            // R12: an ENI and its instance are in the same region and zone.
            if vpc.region != *region_id {
                return Err(Refusal::rule(
                    codes::REGION_MISMATCH,
                    "R12",
                    format!(
                        "vSwitch {vswitch_id} is in region {}, the instance in {region_id}",
                        vpc.region
                    ),
                ));
            }
            if vswitch.zone != *zone {
                return Err(Refusal::rule(
                    codes::ZONE_MISMATCH,
                    "R12",
                    format!(
                        "vSwitch {vswitch_id} is in zone {}, the instance in {zone}",
                        vswitch.zone
                    ),
                ));
            }
            // R14: the primary private IP is given or picked from the vSwitch.
            let ip = match private_ip {
                Some(ip) => {
                    check_in_vswitch(vswitch, *ip)?;
                    check_ipv4_free(state, *ip)?;
                    *ip
                }
                None => pick_free_ipv4(state, vswitch, &[])?,
            };
            let eni_id = Id::from(format!("{id}-eni0"));
            if state.enis.contains_key(&eni_id) {
                return Err(Refusal::exists(Kind::Eni, &eni_id));
            }
            if let Some(group) = security_group {
                super::security_group::check_fits_vswitch(state, group, vswitch_id)?;
            }
            Some(Eni {
                id: eni_id,
                kind: EniKind::Primary,
                vswitch: vswitch_id.clone(),
                security_group: security_group.clone(),
                primary_ip: ip,
                secondary_ips: BTreeSet::new(),
                ipv6: BTreeSet::new(),
                ipv6_public: BTreeSet::new(),
                instance: Some(id.clone()),
            })
        }
    };
    if private_ip.is_some() && primary_eni.is_none() {
        return Err(Refusal::invalid("a classic-network instance has no private IP here"));
    }
    txn.put(Resource::Instance(Instance {
        id: id.clone(),
        region: region_id.clone(),
        zone: zone.clone(),
        network: *network,
        instance_type: type_id.clone(),
        state: *initial_state,
        fixed_public_ip: *fixed_public_ip,
        primary_eni: primary_eni.as_ref().map(|e| e.id.clone()),
    }));
    if let Some(eni) = primary_eni {
        txn.put(Resource::Eni(eni));
    }
    Ok(Executed::about(Kind::Instance, id))
}

/// R22: starting and stopping keep the private IPs and the EIPs; only the state changes.
pub fn start(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    set_state(txn, id, InstanceState::Running)
}

pub fn stop(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let current = instance(txn.state(), id)?.state;
    if current == InstanceState::Pending {
        return Err(Refusal::plain(
            codes::INSTANCE_STATE,
            format!("instance {id} is pending; it can be stopped once it runs"),
        ));
    }
    set_state(txn, id, InstanceState::Stopped)
}

fn set_state(txn: &mut Txn, id: &str, wanted: InstanceState) -> Result<Executed, Refusal> {
    let mut instance = instance(txn.state(), id)?.clone();
    instance.state = wanted;
    txn.put(Resource::Instance(instance));
    Ok(Executed::about(Kind::Instance, id))
}

/// Releases an instance: its direct EIP and the EIPs on its primary ENI return to
/// `available` (R04, never released with it), the primary ENI goes with it (R14), and its
/// secondary ENIs are detached and keep their addresses and EIPs (R21).
pub fn release(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    let instance = instance(state, id)?.clone();
    let ips = instance_ipv4s(state, id);
    if let Some((gw, entry)) = dnat_targeting(state, &ips).next() {
        return Err(Refusal::in_use(
            format!("instance {id}"),
            format!("DNAT entry {} of NAT gateway {}", entry.id, gw.id),
        ));
    }
    for gw in state.nat_gateways.values() {
        if let Some(entry) =
            gw.snat_entries.values().find(|e| e.source == SnatSource::Instance(id.into()))
        {
            return Err(Refusal::in_use(
                format!("instance {id}"),
                format!("SNAT entry {} of NAT gateway {}", entry.id, gw.id),
            ));
        }
    }
    let mut freed: Vec<Ipv4Addr> =
        state.eip_of_instance(id).map(|eip| eip.address).into_iter().collect();
    if let Some(primary) = &instance.primary_eni {
        freed.extend(state.eips_of_eni(primary).map(|eip| eip.address));
    }
    let secondaries: Vec<Eni> =
        state.enis_of_instance(id).filter(|e| e.kind == EniKind::Secondary).cloned().collect();
    super::free_eips(txn, freed);
    for mut eni in secondaries {
        eni.instance = None;
        txn.put(Resource::Eni(eni));
    }
    if let Some(primary) = &instance.primary_eni {
        txn.remove(&Key::new(Kind::Eni, primary));
    }
    txn.remove(&Key::new(Kind::Instance, id));
    Ok(Executed::default())
}
