//! NAT gateways: their EIPs (R24, R28), SNAT (R25) and DNAT (R26, R08, R28) entries, and
//! the egress precedence they take part in (R27).

use std::{collections::BTreeMap, net::Ipv4Addr};

use super::{Executed, check_id, eip, nat_gateway, vpc};
use crate::model::{
    refusal::{Refusal, codes},
    resources::*,
    state::State,
    txn::Txn,
};

/// R24: EIPs per NAT gateway unless the gateway says otherwise.
pub const DEFAULT_EIP_QUOTA: u32 = 20;

pub fn create(
    txn: &mut Txn,
    id: &str,
    vpc_id: &str,
    eip_quota: Option<u32>,
) -> Result<Executed, Refusal> {
    check_id(Kind::NatGateway, id)?;
    let state = txn.state();
    if state.nat_gateways.contains_key(id) {
        return Err(Refusal::exists(Kind::NatGateway, id));
    }
    vpc(state, vpc_id)?;
    if eip_quota == Some(0) {
        return Err(Refusal::invalid("a NAT gateway's EIP quota is at least 1"));
    }
    txn.put(Resource::NatGateway(NatGateway {
        id: id.into(),
        vpc: vpc_id.into(),
        eip_quota: eip_quota.unwrap_or(DEFAULT_EIP_QUOTA),
        snat_entries: BTreeMap::new(),
        dnat_entries: BTreeMap::new(),
    }));
    Ok(Executed::about(Kind::NatGateway, id))
}

/// Deletes a gateway with its entries; its EIPs return to `available` (R04).
pub fn delete(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    nat_gateway(state, id)?;
    let freed = state.eips_of_nat_gateway(id).map(|eip| eip.address).collect();
    super::free_eips(txn, freed);
    txn.remove(&Key::new(Kind::NatGateway, id));
    Ok(Executed::default())
}

pub fn add_eip(txn: &mut Txn, id: &str, address: Ipv4Addr) -> Result<Executed, Refusal> {
    let state = txn.state();
    let gateway = nat_gateway(state, id)?;
    let eip = eip(state, address)?;
    let region = &vpc(state, &gateway.vpc)?.region;
    if eip.region != *region {
        return Err(Refusal::rule(
            codes::REGION_MISMATCH,
            "R03",
            format!("EIP {address} is in region {}, NAT gateway {id} in {region}", eip.region),
        ));
    }
    match &eip.association {
        Some(Association::NatGateway { nat_gateway }) if nat_gateway == id => {
            return Ok(Executed::about(Kind::NatGateway, id));
        }
        Some(other) => {
            return Err(Refusal::rule(
                codes::EIP_IN_USE,
                "R28",
                format!(
                    "EIP {address} is associated with {}; a NAT gateway's EIP serves nothing else",
                    super::eip::describe_target(other)
                ),
            ));
        }
        None => {}
    }
    let count = state.eips_of_nat_gateway(id).count() as u32;
    if count >= gateway.eip_quota {
        return Err(Refusal::rule(
            codes::NAT_GATEWAY_EIP_QUOTA,
            "R24",
            format!("NAT gateway {id} has its quota of {} EIPs", gateway.eip_quota),
        ));
    }
    let association = Association::NatGateway { nat_gateway: id.into() };
    txn.update_eip(address, |eip| eip.association = Some(association));
    Ok(Executed::about(Kind::NatGateway, id))
}

pub fn remove_eip(txn: &mut Txn, id: &str, address: Ipv4Addr) -> Result<Executed, Refusal> {
    let state = txn.state();
    let gateway = nat_gateway(state, id)?;
    let eip = eip(state, address)?;
    if eip.association != Some(Association::NatGateway { nat_gateway: id.into() }) {
        return Err(Refusal::plain(
            codes::EIP_NOT_ASSOCIATED,
            format!("EIP {address} does not belong to NAT gateway {id}"),
        ));
    }
    if let Some(entry) = gateway.snat_entries.values().find(|e| e.eips.contains(&address)) {
        return Err(Refusal::in_use(format!("EIP {address}"), format!("SNAT entry {}", entry.id)));
    }
    if let Some(entry) = gateway.dnat_entries.values().find(|e| e.eip == address) {
        return Err(Refusal::in_use(format!("EIP {address}"), format!("DNAT entry {}", entry.id)));
    }
    txn.update_eip(address, |eip| eip.association = None);
    Ok(Executed::about(Kind::NatGateway, id))
}

/// R25: a source inside the gateway's VPC reaches the Internet through the gateway's EIPs.
pub fn add_snat(
    txn: &mut Txn,
    gateway_id: &str,
    id: &str,
    source: &SnatSource,
    eips: &[Ipv4Addr],
) -> Result<Executed, Refusal> {
    check_id(Kind::NatGateway, id)?;
    let state = txn.state();
    let gateway = nat_gateway(state, gateway_id)?;
    if gateway.snat_entries.contains_key(id) {
        return Err(Refusal::plain(
            "SNAT_ENTRY_ALREADY_EXISTS",
            format!("SNAT entry {id} already exists"),
        ));
    }
    let vpc = vpc(state, &gateway.vpc)?;
    let in_vpc = match source {
        SnatSource::VSwitch(v) => super::vswitch(state, v)?.vpc == vpc.id,
        SnatSource::Instance(i) => {
            let instance = super::instance(state, i)?;
            let primary = instance.primary_eni.as_deref().and_then(|e| state.enis.get(e));
            primary.and_then(|e| state.vpc_of_eni(e)).is_some_and(|v| v.id == vpc.id)
        }
        SnatSource::Cidr(net) => vpc.cidr.contains(net),
    };
    if !in_vpc {
        return Err(Refusal::rule(
            codes::NETWORK_MISMATCH,
            "R25",
            format!("the SNAT source is not inside VPC {} of NAT gateway {gateway_id}", vpc.id),
        ));
    }
    check_gateway_eips(state, gateway_id, eips)?;
    // R28: an IP mapping claims every port of its EIP, so none is left to translate to.
    if let Some(entry) = ip_mapping_on(state, eips) {
        return Err(Refusal::rule(
            codes::DNAT_CONFLICT,
            "R28",
            format!(
                "EIP {} has the DNAT IP mapping {}, which claims every port; SNAT needs ports of its own",
                entry.eip, entry.id
            ),
        ));
    }
    let mut gateway = gateway.clone();
    gateway.snat_entries.insert(
        id.into(),
        SnatEntry { id: id.into(), source: source.clone(), eips: eips.to_vec() },
    );
    txn.put(Resource::NatGateway(gateway));
    Ok(Executed::about(Kind::NatGateway, gateway_id))
}

pub fn remove_snat(txn: &mut Txn, gateway_id: &str, id: &str) -> Result<Executed, Refusal> {
    let mut gateway = nat_gateway(txn.state(), gateway_id)?.clone();
    if gateway.snat_entries.remove(id).is_none() {
        return Err(Refusal::plain(
            "SNAT_ENTRY_NOT_FOUND",
            format!("NAT gateway {gateway_id} has no SNAT entry {id}"),
        ));
    }
    txn.put(Resource::NatGateway(gateway));
    Ok(Executed::about(Kind::NatGateway, gateway_id))
}

/// R26 (a private IP of the gateway's VPC), R08 (not an instance that has an EIP) and R28
/// (no two entries claim one EIP port; an IP mapping claims them all).
pub fn add_dnat(
    txn: &mut Txn,
    gateway_id: &str,
    id: &str,
    address: Ipv4Addr,
    mapping: &DnatMapping,
) -> Result<Executed, Refusal> {
    check_id(Kind::NatGateway, id)?;
    let state = txn.state();
    let gateway = nat_gateway(state, gateway_id)?;
    if gateway.dnat_entries.contains_key(id) {
        return Err(Refusal::plain(
            "DNAT_ENTRY_ALREADY_EXISTS",
            format!("DNAT entry {id} already exists"),
        ));
    }
    check_gateway_eips(state, gateway_id, &[address])?;
    if let DnatMapping::Port { public_port: 0, .. } | DnatMapping::Port { private_port: 0, .. } =
        mapping
    {
        return Err(Refusal::invalid("ports are 1 to 65535"));
    }
    let private_ip = mapping.private_ip();
    let owner = state.owner_of_ipv4(private_ip).ok_or_else(|| {
        Refusal::rule(
            codes::IP_NOT_ASSIGNED,
            "R26",
            format!("no instance or ENI holds {private_ip}"),
        )
    })?;
    if state.vpc_of_eni(owner).map(|v| v.id.as_str()) != Some(gateway.vpc.as_str()) {
        return Err(Refusal::rule(
            codes::NETWORK_MISMATCH,
            "R26",
            format!("{private_ip} is not in VPC {} of NAT gateway {gateway_id}", gateway.vpc),
        ));
    }
    // R08: the instance (or detached ENI) behind the address must not have an EIP.
    let has_eip = match &owner.instance {
        Some(instance) => {
            state.eip_of_instance(instance).is_some()
                || state
                    .enis_of_instance(instance)
                    .any(|e| state.eips_of_eni(&e.id).next().is_some())
        }
        None => state.eips_of_eni(&owner.id).next().is_some(),
    };
    if has_eip {
        let what = owner
            .instance
            .as_ref()
            .map_or(format!("ENI {}", owner.id), |i| format!("instance {i}"));
        return Err(Refusal::rule(
            codes::DNAT_CONFLICT,
            "R08",
            format!(
                "{what} has an EIP; it cannot also be a DNAT target: unassociate the EIP first"
            ),
        ));
    }
    // R28: port claims on the EIP, across every entry of every gateway.
    for (_, other) in state
        .nat_gateways
        .values()
        .flat_map(|g| g.dnat_entries.iter())
        .filter(|(_, e)| e.eip == address)
    {
        let clash = match (&other.mapping, mapping) {
            (DnatMapping::Ip { .. }, _) | (_, DnatMapping::Ip { .. }) => true,
            (
                DnatMapping::Port { protocol: p1, public_port: port1, .. },
                DnatMapping::Port { protocol: p2, public_port: port2, .. },
            ) => p1 == p2 && port1 == port2,
        };
        if clash {
            return Err(Refusal::rule(
                codes::DNAT_CONFLICT,
                "R28",
                format!("DNAT entry {} already claims that port of EIP {address}", other.id),
            ));
        }
    }
    match mapping {
        // R28 again: the IP mapping would claim the ports SNAT hands out.
        DnatMapping::Ip { private_ip } => {
            // R26: the address's replies leave through the mapping's EIP, which must be
            // one (as with R02 for EIPs).
            if let Some(other) = state
                .nat_gateways
                .values()
                .flat_map(|g| g.dnat_entries.values())
                .find(|e| e.mapping == DnatMapping::Ip { private_ip: *private_ip })
            {
                return Err(Refusal::rule(
                    codes::DNAT_CONFLICT,
                    "R26",
                    format!(
                        "DNAT entry {} already maps EIP {} to {private_ip}; its replies could leave through only one",
                        other.id, other.eip
                    ),
                ));
            }
            if let Some(other) = dnat_entries(state).find(|e| {
                matches!(e.mapping, DnatMapping::Port { private_ip: ip, .. } if ip == *private_ip)
            }) {
                return Err(both_kinds_refusal(&other.id, *private_ip));
            }
            if let Some((gw, entry)) = snat_using(state, address) {
                return Err(Refusal::rule(
                    codes::DNAT_CONFLICT,
                    "R28",
                    format!(
                        "SNAT entry {} of NAT gateway {} uses EIP {address}; an IP mapping would claim every port of it",
                        entry.id, gw.id
                    ),
                ));
            }
        }
        // R26: replies leave from the private endpoint and are translated back without
        // state, so one private endpoint can only stand behind one public port.
        DnatMapping::Port { protocol, private_ip, private_port, .. } => {
            let same_target = state.nat_gateways.values().flat_map(|g| g.dnat_entries.values()).find(
                |e| {
                    matches!(&e.mapping, DnatMapping::Port { protocol: p, private_ip: ip, private_port: port, .. }
                        if p == protocol && ip == private_ip && port == private_port)
                },
            );
            if let Some(other) = dnat_entries(state)
                .find(|e| e.mapping == DnatMapping::Ip { private_ip: *private_ip })
            {
                return Err(both_kinds_refusal(&other.id, *private_ip));
            }
            if let Some(other) = same_target {
                return Err(Refusal::rule(
                    codes::DNAT_CONFLICT,
                    "R26",
                    format!(
                        "DNAT entry {} already forwards to {private_ip} port {private_port}; its replies could not be told apart",
                        other.id
                    ),
                ));
            }
        }
    }
    let mut gateway = gateway.clone();
    gateway
        .dnat_entries
        .insert(id.into(), DnatEntry { id: id.into(), eip: address, mapping: mapping.clone() });
    txn.put(Resource::NatGateway(gateway));
    Ok(Executed::about(Kind::NatGateway, gateway_id))
}

fn dnat_entries(state: &State) -> impl Iterator<Item = &DnatEntry> {
    state.nat_gateways.values().flat_map(|g| g.dnat_entries.values())
}

/// R26/R27: an address with an IP mapping sends everything, replies included, from that
/// mapping's EIP, so the replies of a port mapping to it would leave from the wrong one.
fn both_kinds_refusal(other: &str, private_ip: Ipv4Addr) -> Refusal {
    Refusal::rule(
        codes::DNAT_CONFLICT,
        "R27",
        format!(
            "DNAT entry {other} already maps {private_ip}; an address takes either one IP mapping or port mappings, not both"
        ),
    )
}

pub fn remove_dnat(txn: &mut Txn, gateway_id: &str, id: &str) -> Result<Executed, Refusal> {
    let mut gateway = nat_gateway(txn.state(), gateway_id)?.clone();
    if gateway.dnat_entries.remove(id).is_none() {
        return Err(Refusal::plain(
            "DNAT_ENTRY_NOT_FOUND",
            format!("NAT gateway {gateway_id} has no DNAT entry {id}"),
        ));
    }
    txn.put(Resource::NatGateway(gateway));
    Ok(Executed::about(Kind::NatGateway, gateway_id))
}

/// A DNAT IP mapping (on any gateway) on one of `eips`.
fn ip_mapping_on<'s>(state: &'s State, eips: &[Ipv4Addr]) -> Option<&'s DnatEntry> {
    state
        .nat_gateways
        .values()
        .flat_map(|g| g.dnat_entries.values())
        .find(|e| matches!(e.mapping, DnatMapping::Ip { .. }) && eips.contains(&e.eip))
}

/// A SNAT entry (gateway, entry) that translates to `address`.
fn snat_using(state: &State, address: Ipv4Addr) -> Option<(&NatGateway, &SnatEntry)> {
    state
        .nat_gateways
        .values()
        .flat_map(|g| g.snat_entries.values().map(move |e| (g, e)))
        .find(|(_, e)| e.eips.contains(&address))
}

fn check_gateway_eips(state: &State, gateway_id: &str, eips: &[Ipv4Addr]) -> Result<(), Refusal> {
    if eips.is_empty() {
        return Err(Refusal::invalid("an entry needs at least one of the gateway's EIPs"));
    }
    for address in eips {
        let eip = eip(state, *address)?;
        if eip.association != Some(Association::NatGateway { nat_gateway: gateway_id.into() }) {
            return Err(Refusal::invalid(format!(
                "EIP {address} is not one of NAT gateway {gateway_id}'s EIPs; add it with `eipctl nat-gateway add-eip`"
            )));
        }
    }
    Ok(())
}

/// How a private IPv4 reaches the Internet (R27).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Egress {
    /// Its own EIP, first (R08: even where a DNAT entry exists too).
    Eip { eip: Ipv4Addr },
    /// The EIP of a DNAT IP mapping to it.
    DnatIpMapping { nat_gateway: Id, eip: Ipv4Addr },
    /// A SNAT entry whose source covers it.
    Snat { nat_gateway: Id, entry: Id, eips: Vec<Ipv4Addr> },
    /// No Internet egress.
    None,
}

/// R27: own EIP, then DNAT IP mapping, then SNAT (the most specific source: instance, then
/// vSwitch, then the longest CIDR).
pub fn egress_of(state: &State, ip: Ipv4Addr) -> Egress {
    egress(state, ip, |ip| {
        let mapping = DnatMapping::Ip { private_ip: ip };
        state
            .nat_gateways
            .values()
            .flat_map(|g| g.dnat_entries.values().map(move |e| (g, e)))
            .find(|(_, e)| e.mapping == mapping)
    })
}

/// [`egress_of`] for many addresses (the agent at start-up, or a NAT gateway's whole VPC
/// after a change): the DNAT IP mappings are indexed once, when first needed, instead of
/// scanned for every address that has no EIP.
pub struct EgressLookup<'s> {
    state: &'s State,
    ip_mappings: std::cell::OnceCell<BTreeMap<Ipv4Addr, (&'s NatGateway, &'s DnatEntry)>>,
}

impl<'s> EgressLookup<'s> {
    pub fn new(state: &'s State) -> Self {
        Self { state, ip_mappings: std::cell::OnceCell::new() }
    }

    pub fn egress_of(&self, ip: Ipv4Addr) -> Egress {
        egress(self.state, ip, |ip| {
            let index = self.ip_mappings.get_or_init(|| {
                let mut index = BTreeMap::new();
                for gateway in self.state.nat_gateways.values() {
                    for entry in gateway.dnat_entries.values() {
                        if let DnatMapping::Ip { private_ip } = entry.mapping {
                            // The first, as `egress_of` finds it.
                            index.entry(private_ip).or_insert((gateway, entry));
                        }
                    }
                }
                index
            });
            index.get(&ip).copied()
        })
    }
}

/// R27, with `ip_mapping` finding the DNAT IP mapping to an address.
fn egress<'s>(
    state: &'s State,
    ip: Ipv4Addr,
    ip_mapping: impl FnOnce(Ipv4Addr) -> Option<(&'s NatGateway, &'s DnatEntry)>,
) -> Egress {
    if let Some(eip) = state.eip_of_private_ip(ip) {
        return Egress::Eip { eip: eip.address };
    }
    if let Some((gw, entry)) = ip_mapping(ip) {
        return Egress::DnatIpMapping { nat_gateway: gw.id.clone(), eip: entry.eip };
    }
    let Some(eni) = state.owner_of_ipv4(ip) else {
        return Egress::None;
    };
    let vpc = state.vpc_of_eni(eni).map(|v| v.id.clone());
    let specificity = |source: &SnatSource| -> Option<u32> {
        match source {
            SnatSource::Instance(i) if eni.instance.as_deref() == Some(i.as_str()) => Some(100),
            SnatSource::VSwitch(v) if *v == eni.vswitch => Some(50),
            SnatSource::Cidr(net) if net.contains(&ip) => Some(u32::from(net.prefix_len())),
            _ => None,
        }
    };
    state
        .nat_gateways
        .values()
        .filter(|g| Some(&g.vpc) == vpc.as_ref())
        .flat_map(|g| g.snat_entries.values().map(move |e| (g, e)))
        .filter_map(|(g, e)| Some((specificity(&e.source)?, g, e)))
        .max_by_key(|(s, _, _)| *s)
        .map_or(Egress::None, |(_, g, e)| Egress::Snat {
            nat_gateway: g.id.clone(),
            entry: e.id.clone(),
            eips: e.eips.clone(),
        })
}
