//! EIPs: allocation, release (R04) and association (R01-R12, R28).

use std::net::Ipv4Addr;

use super::{
    Executed, check_eni_no_dnat, check_no_dnat_where, check_unicast, eip, eni, held_by_instance,
    instance, region,
};
use crate::model::{
    refusal::{Refusal, codes},
    resources::*,
    state::State,
    txn::Txn,
};

/// The most EIPs one ENI shows in multi-EIP visible mode (R11).
pub const MULTI_EIP_LIMIT: usize = 10;

pub fn allocate(
    txn: &mut Txn,
    address: Ipv4Addr,
    region_id: Option<&str>,
    bandwidth_mbps: Option<u32>,
) -> Result<Executed, Refusal> {
    check_unicast("EIP", address)?;
    let state = txn.state();
    if state.eips.contains_key(&address) {
        return Err(Refusal::plain(
            codes::EIP_ALREADY_ALLOCATED,
            format!("EIP {address} is already allocated"),
        ));
    }
    if let Some(eni) = state.owner_of_ipv4(address) {
        return Err(Refusal::invalid(format!("{address} is a private address of ENI {}", eni.id)));
    }
    // A fixed public IP belongs to its instance until the instance is released (R22).
    if let Some(instance) = state.instance_with_fixed_ip(address) {
        return Err(Refusal::invalid(format!(
            "{address} is the fixed public IP of instance {}",
            instance.id
        )));
    }
    if let Some(vpc) = state.vpcs.values().find(|v| v.cidr.contains(&address)) {
        return Err(Refusal::invalid(format!("{address} is inside VPC {} ({})", vpc.id, vpc.cidr)));
    }
    check_bandwidth(bandwidth_mbps)?;
    let region_id = match region_id {
        Some(id) => region(state, id)?.id.clone(),
        None => {
            let mut regions = state.regions.keys();
            match (regions.next(), regions.next()) {
                (Some(only), None) => only.clone(),
                (None, _) => {
                    return Err(Refusal::invalid(
                        "create a region first (`eipctl region create ID`)",
                    ));
                }
                _ => {
                    return Err(Refusal::invalid(
                        "there are several regions: name one with --region",
                    ));
                }
            }
        }
    };
    txn.put(Resource::Eip(Eip { address, region: region_id, bandwidth_mbps, association: None }));
    Ok(Executed::about_eip(address))
}

pub fn set_bandwidth(
    txn: &mut Txn,
    address: Ipv4Addr,
    bandwidth_mbps: Option<u32>,
) -> Result<Executed, Refusal> {
    check_bandwidth(bandwidth_mbps)?;
    eip(txn.state(), address)?;
    txn.update_eip(address, |eip| eip.bandwidth_mbps = bandwidth_mbps);
    Ok(Executed::about_eip(address))
}

fn check_bandwidth(bandwidth_mbps: Option<u32>) -> Result<(), Refusal> {
    if bandwidth_mbps == Some(0) {
        return Err(Refusal::invalid("a bandwidth cap is at least 1 Mbit/s; omit it for no cap"));
    }
    Ok(())
}

/// R04: an EIP is released only explicitly, and only when it serves nothing.
pub fn release(txn: &mut Txn, address: Ipv4Addr) -> Result<Executed, Refusal> {
    let eip = eip(txn.state(), address)?;
    if let Some(association) = &eip.association {
        return Err(Refusal::rule(
            codes::EIP_ASSOCIATED,
            "R04",
            format!(
                "EIP {address} is associated with {}; unassociate it before releasing it",
                describe_target(association)
            ),
        ));
    }
    txn.remove_eip(address);
    Ok(Executed::default())
}

/// What an association request points at.
pub enum Target {
    Instance(Id),
    Eni { eni: Id, private_ip: Option<Ipv4Addr>, mode: AssociationMode },
    PrivateIp(Ipv4Addr),
}

impl Target {
    pub fn from_request(
        instance: &Option<Id>,
        eni: &Option<Id>,
        private_ip: Option<Ipv4Addr>,
        mode: Option<AssociationMode>,
    ) -> Result<Self, Refusal> {
        match (instance, eni, private_ip) {
            (Some(instance), None, None) if matches!(mode, None | Some(AssociationMode::Nat)) => {
                Ok(Target::Instance(instance.clone()))
            }
            (Some(_), _, _) => Err(Refusal::invalid(
                "an instance takes its EIP in NAT mode on its primary address (R06): give --instance alone",
            )),
            (None, Some(eni), private_ip) => Ok(Target::Eni {
                eni: eni.clone(),
                private_ip,
                mode: mode.unwrap_or(AssociationMode::Nat),
            }),
            (None, None, Some(ip)) if matches!(mode, None | Some(AssociationMode::Nat)) => {
                Ok(Target::PrivateIp(ip))
            }
            (None, None, Some(_)) => {
                Err(Refusal::invalid("a visible mode applies to an ENI: give --eni"))
            }
            (None, None, None) => {
                Err(Refusal::invalid("give one target: --instance, --eni or --private-ip"))
            }
        }
    }
}

pub fn associate(
    txn: &mut Txn,
    address: Ipv4Addr,
    target: Target,
    allow_reassociation: bool,
) -> Result<Executed, Refusal> {
    let state = txn.state();
    let current = eip(state, address)?;
    // R28: a NAT gateway's EIP serves nothing else, whatever the flag says.
    if let Some(Association::NatGateway { nat_gateway }) = &current.association {
        return Err(Refusal::rule(
            codes::EIP_USED_BY_NAT_GATEWAY,
            "R28",
            format!("EIP {address} belongs to NAT gateway {nat_gateway}; remove it there first"),
        ));
    }
    let mut warnings = Vec::new();
    let wanted = match target {
        Target::Instance(id) => for_instance(state, current, &id)?,
        Target::PrivateIp(ip) => {
            let owner = state.owner_of_ipv4(ip).ok_or_else(|| {
                Refusal::plain(
                    codes::IP_NOT_ASSIGNED,
                    format!("no ENI holds the private address {ip}"),
                )
            })?;
            for_eni_nat(state, current, &owner.id.clone(), Some(ip))?
        }
        Target::Eni { eni, private_ip, mode } => match mode {
            AssociationMode::Nat => for_eni_nat(state, current, &eni, private_ip)?,
            AssociationMode::CutThrough => for_cut_through(state, current, &eni, private_ip)?,
            AssociationMode::MultiEip => {
                warnings.push(
                    "multi-EIP visible mode is deprecated for new use; prefer NAT mode (R11)"
                        .to_owned(),
                );
                for_multi_eip(state, current, &eni, private_ip)?
            }
        },
    };
    if current.association.as_ref() == Some(&wanted) {
        return Ok(Executed::about_eip(address));
    }
    // R01/R05: an EIP serves one thing; moving it must be asked for.
    if let Some(existing) = &current.association
        && !allow_reassociation
    {
        return Err(Refusal::rule(
            codes::EIP_IN_USE,
            "R05",
            format!(
                "EIP {address} is associated with {}; pass --allow-reassociation to move it",
                describe_target(existing)
            ),
        ));
    }
    txn.update_eip(address, |eip| eip.association = Some(wanted));
    Ok(Executed { warnings, ..Executed::about_eip(address) })
}

pub fn unassociate(txn: &mut Txn, address: Ipv4Addr) -> Result<Executed, Refusal> {
    match &eip(txn.state(), address)?.association {
        None => {
            return Err(Refusal::plain(
                codes::EIP_NOT_ASSOCIATED,
                format!("EIP {address} is not associated"),
            ));
        }
        Some(Association::NatGateway { nat_gateway }) => {
            return Err(Refusal::rule(
                codes::EIP_USED_BY_NAT_GATEWAY,
                "R28",
                format!(
                    "EIP {address} belongs to NAT gateway {nat_gateway}: use `eipctl nat-gateway remove-eip`"
                ),
            ));
        }
        Some(_) => {}
    }
    txn.update_eip(address, |eip| eip.association = None);
    Ok(Executed::about_eip(address))
}

/// R06/R07/R08: an instance's one direct EIP, on its primary ENI's primary address.
fn for_instance(state: &State, eip: &Eip, id: &str) -> Result<Association, Refusal> {
    let instance = instance(state, id)?;
    check_same_region(eip, &instance.region, &format_args!("instance {id}"), "R07")?;
    if instance.network == NetworkType::Classic {
        return Err(Refusal::rule(
            codes::INSTANCE_NETWORK_CLASSIC,
            "R07",
            format!("instance {id} is in the classic network; EIPs serve VPC instances"),
        ));
    }
    if !matches!(instance.state, InstanceState::Running | InstanceState::Stopped) {
        return Err(Refusal::rule(
            codes::INSTANCE_STATE,
            "R07",
            format!(
                "instance {id} is {:?}; associate once it is running or stopped",
                instance.state
            ),
        ));
    }
    check_no_public_ip(state, eip, instance)?;
    let primary = instance
        .primary_eni
        .as_deref()
        .and_then(|e| state.enis.get(e))
        .ok_or_else(|| Refusal::invalid(format!("instance {id} has no primary ENI")))?;
    check_private_ip_free(state, eip, primary.primary_ip)?;
    // R07: an EIP on another address of the primary ENI is the instance's EIP too.
    if let Some(other) = state.eips_of_eni(&primary.id).find(|o| o.address != eip.address) {
        return Err(Refusal::rule(
            codes::INSTANCE_HAS_PUBLIC_IP,
            "R07",
            format!(
                "instance {id} already has EIP {} on its primary ENI {}",
                other.address, primary.id
            ),
        ));
    }
    check_no_dnat_where(state, &id, &held_by_instance(state, id))?;
    Ok(Association::Instance {
        instance: id.into(),
        eni: primary.id.clone(),
        private_ip: primary.primary_ip,
    })
}

/// R07: an instance with a fixed public IP, or another direct EIP, gets no EIP.
fn check_no_public_ip(state: &State, eip: &Eip, instance: &Instance) -> Result<(), Refusal> {
    if let Some(fixed) = instance.fixed_public_ip {
        return Err(Refusal::rule(
            codes::INSTANCE_HAS_PUBLIC_IP,
            "R07",
            format!("instance {} has the fixed public IP {fixed}", instance.id),
        ));
    }
    if let Some(other) = state.eip_of_instance(&instance.id).filter(|o| o.address != eip.address) {
        return Err(Refusal::rule(
            codes::INSTANCE_HAS_PUBLIC_IP,
            "R06",
            format!(
                "instance {} already has EIP {}; more EIPs come through secondary ENIs",
                instance.id, other.address
            ),
        ));
    }
    Ok(())
}

/// R09 (NAT mode on an ENI address) with R02, R03/R12 and R08.
fn for_eni_nat(
    state: &State,
    eip: &Eip,
    eni_id: &str,
    private_ip: Option<Ipv4Addr>,
) -> Result<Association, Refusal> {
    let eni = eni(state, eni_id)?;
    check_eni_region(state, eip, eni)?;
    let private_ip = private_ip.unwrap_or(eni.primary_ip);
    if !eni.has_ipv4(private_ip) {
        return Err(Refusal::rule(
            codes::IP_NOT_ASSIGNED,
            "R09",
            format!("{private_ip} is not an address of ENI {eni_id}"),
        ));
    }
    check_private_ip_free(state, eip, private_ip)?;
    super::check_nat_eip_fits(state, eni, eip)?;
    if let Some(instance_id) = &eni.instance {
        let instance = instance(state, instance_id)?;
        if eni.kind == EniKind::Primary {
            // R07: the primary ENI's EIP is the instance's EIP.
            if !matches!(instance.state, InstanceState::Running | InstanceState::Stopped) {
                return Err(Refusal::rule(
                    codes::INSTANCE_STATE,
                    "R07",
                    format!(
                        "instance {instance_id} is {:?}; associate once it is running or stopped",
                        instance.state
                    ),
                ));
            }
            check_no_public_ip(state, eip, instance)?;
        }
    }
    check_eni_no_dnat(state, eni)?;
    Ok(Association::Eni { eni: eni_id.into(), private_ip })
}

/// R10: one EIP, seen by a detached secondary ENI, in a VPC without an IPv4 gateway.
fn for_cut_through(
    state: &State,
    eip: &Eip,
    eni_id: &str,
    private_ip: Option<Ipv4Addr>,
) -> Result<Association, Refusal> {
    let eni = visible_mode_eni(state, eip, eni_id, private_ip, "cut-through", "R10")?;
    if let Some(instance) = &eni.instance {
        return Err(Refusal::rule(
            codes::ENI_ATTACHED,
            "R10",
            format!(
                "ENI {eni_id} is attached to instance {instance}; cut-through needs it detached at association"
            ),
        ));
    }
    if let Some(vpc) = state.vpc_of_eni(eni).filter(|v| v.ipv4_gateway) {
        return Err(Refusal::rule(
            codes::VPC_HAS_IPV4_GATEWAY,
            "R10",
            format!("VPC {} has an IPv4 gateway; cut-through is not available there", vpc.id),
        ));
    }
    if let Some(other) = state.eips_of_eni(eni_id).find(|e| e.address != eip.address) {
        return Err(Refusal::rule(
            codes::ENI_EIP_LIMIT,
            "R10",
            format!(
                "ENI {eni_id} already has EIP {}; cut-through takes exactly one",
                other.address
            ),
        ));
    }
    Ok(Association::CutThrough { eni: eni_id.into() })
}

/// R11: up to ten EIPs seen by a secondary ENI.
fn for_multi_eip(
    state: &State,
    eip: &Eip,
    eni_id: &str,
    private_ip: Option<Ipv4Addr>,
) -> Result<Association, Refusal> {
    visible_mode_eni(state, eip, eni_id, private_ip, "multi-EIP", "R11")?;
    let others: Vec<&Eip> =
        state.eips_of_eni(eni_id).filter(|e| e.address != eip.address).collect();
    if others
        .iter()
        .any(|e| e.association.as_ref().and_then(|a| a.mode()) != Some(AssociationMode::MultiEip))
    {
        return Err(Refusal::plain(
            codes::ENI_MODE_CONFLICT,
            format!("ENI {eni_id} carries EIPs in another mode; multi-EIP cannot be added"),
        ));
    }
    if others.len() >= MULTI_EIP_LIMIT {
        return Err(Refusal::rule(
            codes::ENI_EIP_LIMIT,
            "R11",
            format!(
                "ENI {eni_id} already shows {MULTI_EIP_LIMIT} EIPs, the most multi-EIP mode allows"
            ),
        ));
    }
    Ok(Association::MultiEip { eni: eni_id.into() })
}

/// Checks shared by the visible modes: a secondary ENI in the EIP's region, no address.
fn visible_mode_eni<'s>(
    state: &'s State,
    eip: &Eip,
    eni_id: &str,
    private_ip: Option<Ipv4Addr>,
    mode: &str,
    rule: &str,
) -> Result<&'s Eni, Refusal> {
    if private_ip.is_some() {
        return Err(Refusal::invalid(format!(
            "{mode} mode puts the EIP on the ENI itself: omit --private-ip"
        )));
    }
    let eni = eni(state, eni_id)?;
    check_eni_region(state, eip, eni)?;
    if eni.kind == EniKind::Primary {
        return Err(Refusal::rule(
            codes::ENI_KIND,
            rule,
            format!("{mode} mode needs a secondary ENI; {eni_id} is a primary ENI"),
        ));
    }
    check_eni_no_dnat(state, eni)?;
    Ok(eni)
}

/// R03/R12: an EIP and the ENI it lands on are in one region.
fn check_eni_region(state: &State, eip: &Eip, eni: &Eni) -> Result<(), Refusal> {
    let region = state.region_of_eni(eni).unwrap_or_default();
    check_same_region(eip, region, &format_args!("ENI {}", eni.id), "R12")
}

/// `what` is formatted only into a refusal.
fn check_same_region(
    eip: &Eip,
    region: &str,
    what: &dyn std::fmt::Display,
    rule: &str,
) -> Result<(), Refusal> {
    if eip.region != region {
        return Err(Refusal::rule(
            codes::REGION_MISMATCH,
            rule,
            format!("EIP {} is in region {}, {what} in region {region}", eip.address, eip.region),
        ));
    }
    Ok(())
}

/// R02: a private IPv4 has at most one EIP.
fn check_private_ip_free(state: &State, eip: &Eip, private_ip: Ipv4Addr) -> Result<(), Refusal> {
    if let Some(other) = state.eip_of_private_ip(private_ip).filter(|o| o.address != eip.address) {
        return Err(Refusal::rule(
            codes::PRIVATE_IP_HAS_EIP,
            "R02",
            format!(
                "private IP {private_ip} already has EIP {}; unassociate it first",
                other.address
            ),
        ));
    }
    Ok(())
}

pub fn describe_target(association: &Association) -> String {
    match association {
        Association::Instance { instance, private_ip, .. } => {
            format!("instance {instance} ({private_ip})")
        }
        Association::Eni { eni, private_ip } => format!("ENI {eni} ({private_ip})"),
        Association::CutThrough { eni } => format!("ENI {eni} (cut-through)"),
        Association::MultiEip { eni } => format!("ENI {eni} (multi-EIP)"),
        Association::NatGateway { nat_gateway } => format!("NAT gateway {nat_gateway}"),
    }
}
