//! The agent: where a request goes from the rules to the store to the maps.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use eipgw_common::{RULE_ANY_PROTOCOL, SecurityGroupRule, SecurityGroupRules, ipv4_key, policy};
use serde_json::Value;

use crate::{
    api::{ApiError, ApplyAnswer, ChangeView, ExecuteAnswer, Progress, StatsView},
    dataplane::{Dataplane, DesiredMaps, EipMapping, EipPolicy},
    model::{
        Association, Change, Egress, Key, Kind, Refusal, Request, Resource, RuleProtocol,
        SecurityGroup, State, describe, egress_of,
    },
    store::Store,
};

pub struct Agent {
    state: State,
    store: Store,
    dataplane: Dataplane,
}

impl Agent {
    /// Loads the state and makes the data plane match it.
    pub fn start(store: Store, mut dataplane: Dataplane) -> anyhow::Result<Self> {
        let state = store.load()?;
        let all_eips: Vec<Ipv4Addr> = state.eips.keys().copied().collect();
        let all_ipv6: Vec<Ipv6Addr> =
            state.enis.values().flat_map(|e| e.ipv6_public.iter().copied()).collect();
        let all_groups: Vec<u32> = state.security_groups.values().map(|g| g.number).collect();
        dataplane.reconcile(&desired_maps(&state, &all_eips, &all_ipv6, &all_groups))?;
        log::info!(
            "state {} holds {} EIPs; maps reconciled under {}",
            store.path().display(),
            state.eips.len(),
            dataplane.pin_dir().display()
        );
        Ok(Self { state, store, dataplane })
    }

    /// Validates, commits and applies one request. A refusal changes nothing.
    pub fn execute(&mut self, request: &Request) -> Result<ExecuteAnswer, ApiError> {
        let (executed, change) = self.state.run(request).map_err(ApiError::Refused)?;
        self.commit(&change)?;
        log::info!("applied {request:?}");
        let subject = match &executed.subject {
            Some(key) => Some(self.describe(key)?),
            None => None,
        };
        Ok(ExecuteAnswer { subject, warnings: executed.warnings })
    }

    /// Runs many requests as one transaction (all or nothing); with `dry_run` nothing is
    /// kept and the answer says what would change.
    pub fn apply(&mut self, requests: &[Request], dry_run: bool) -> Result<ApplyAnswer, ApiError> {
        self.apply_observed(requests, dry_run, &mut |_| {})
    }

    /// [`Agent::apply`], reporting how far it has got.
    pub fn apply_observed(
        &mut self,
        requests: &[Request],
        dry_run: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyAnswer, ApiError> {
        let total = requests.len();
        let (executed, change) = self
            .state
            .run_all_observed(requests, |done| progress(Progress::validating(done, total)))
            .map_err(ApiError::Refused)?;
        progress(Progress::validating(total, total));
        let changes = change_views(&change, dry_run);
        if dry_run {
            self.state.revert(&change);
        } else {
            progress(Progress { phase: "storing and writing the maps".into(), done: total, total });
            self.commit(&change)?;
            log::info!("applied {} requests ({} resources changed)", requests.len(), changes.len());
        }
        let warnings = executed.into_iter().flat_map(|e| e.warnings).collect();
        Ok(ApplyAnswer { applied: !dry_run, requests: requests.len(), changes, warnings })
    }

    /// Stores a change made to the in-memory state, then brings the maps along. If the
    /// store cannot write it, the in-memory state goes back too. If the maps fail after
    /// the store has it, the next start reconciles them.
    fn commit(&mut self, change: &Change) -> Result<(), ApiError> {
        if change.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.commit(change) {
            self.state.revert(change);
            return Err(ApiError::Failed(e));
        }
        let Touched { eips, ipv6, groups } = touched(&self.state, change);
        let after = desired_maps(&self.state, &eips, &ipv6, &groups);
        self.dataplane.apply(&after, eips, ipv6, groups)?;
        Ok(())
    }

    /// Every resource of one kind, described (R30).
    pub fn list(&self, kind: Kind) -> Result<Vec<Value>, ApiError> {
        self.state.ids(kind).into_iter().map(|id| self.describe(&Key::new(kind, id))).collect()
    }

    /// One resource, described (R30); an EIP with its traffic counters.
    pub fn describe(&self, key: &Key) -> Result<Value, ApiError> {
        let mut value = describe(&self.state, key).ok_or_else(|| {
            ApiError::Refused(match key.kind {
                Kind::Eip => Refusal::plain(
                    "EIP_NOT_FOUND",
                    format!("EIP {} is not allocated; `eipctl eip list` shows the EIPs", key.id),
                ),
                kind => Refusal::not_found(kind, &key.id),
            })
        })?;
        if key.kind == Kind::Eip
            && let Ok(address) = key.id.parse::<Ipv4Addr>()
            && let Some(counters) = self.dataplane.eip_counters(address)?
        {
            value["counters"] = serde_json::to_value(counters).map_err(anyhow::Error::from)?;
        }
        Ok(value)
    }

    /// R27: how a private address reaches the Internet.
    pub fn egress(&self, ip: Ipv4Addr) -> Egress {
        egress_of(&self.state, ip)
    }

    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let verdicts = self.dataplane.verdict_counters()?;
        Ok(StatsView {
            verdicts: verdicts.into_iter().map(|(v, n)| (v.name().to_owned(), n)).collect(),
        })
    }
}

/// What a change may affect in the maps.
struct Touched {
    eips: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    /// Security group numbers.
    groups: Vec<u32>,
}

/// The EIPs, IPv6 addresses and security groups whose map entries a change may affect;
/// `state` is the state after it.
fn touched(state: &State, change: &Change) -> Touched {
    let mut eips = BTreeSet::new();
    let mut ipv6 = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for (key, resource) in change.before.iter().chain(change.after.iter()) {
        if key.kind == Kind::Eip
            && let Ok(address) = key.id.parse()
        {
            eips.insert(address);
        }
        match resource {
            Some(Resource::Eni(eni)) => {
                ipv6.extend(eni.ipv6_public.iter().copied());
                // Its security group is its EIPs' (and its instance's EIP's).
                eips.extend(state.eips_of_eni(&eni.id).map(|eip| eip.address));
                if let Some(instance) = &eni.instance
                    && let Some(eip) = state.eip_of_instance(instance)
                {
                    eips.insert(eip.address);
                }
            }
            Some(Resource::SecurityGroup(group)) => {
                groups.insert(group.number);
            }
            _ => {}
        }
    }
    Touched {
        eips: eips.into_iter().collect(),
        ipv6: ipv6.into_iter().collect(),
        groups: groups.into_iter().collect(),
    }
}

/// What the maps should hold for these EIPs and IPv6 addresses in `state`.
fn desired_maps(
    state: &State,
    eips: &[Ipv4Addr],
    ipv6: &[Ipv6Addr],
    groups: &[u32],
) -> DesiredMaps {
    let mut desired = DesiredMaps::default();
    for group in state.security_groups.values().filter(|g| groups.contains(&g.number)) {
        desired.security_groups.insert(group.number, group_rules(group));
    }
    for address in eips {
        let Some(eip) = state.eips.get(address) else {
            continue;
        };
        let next_hop = |eni: &str| state.enis.get(eni).map(|e| e.primary_ip);
        let mapping = match &eip.association {
            Some(
                Association::Instance { private_ip, .. } | Association::Eni { private_ip, .. },
            ) => EipMapping::Nat { private_ip: *private_ip },
            Some(Association::CutThrough { eni }) => match next_hop(eni) {
                Some(next_hop) => EipMapping::CutThrough { next_hop },
                None => EipMapping::Unassociated,
            },
            Some(Association::MultiEip { eni }) => match next_hop(eni) {
                Some(next_hop) => EipMapping::MultiEip { next_hop },
                None => EipMapping::Unassociated,
            },
            // The NAT gateway's data plane comes with its own issue; until then its EIPs
            // take no 1:1 traffic.
            Some(Association::NatGateway { .. }) | None => EipMapping::Unassociated,
        };
        desired.eips.insert(*address, mapping);
        let policy = EipPolicy {
            bandwidth_mbps: eip.bandwidth_mbps,
            security_group: state.security_group_of_eip(eip).map(|g| g.number),
        };
        if policy != EipPolicy::default() {
            desired.policies.insert(*address, policy);
        }
    }
    desired.ipv6_public = ipv6
        .iter()
        .copied()
        .filter(|ip| state.owner_of_ipv6(*ip).is_some_and(|eni| eni.ipv6_public.contains(ip)))
        .collect();
    desired
}

/// A security group's rules as the program reads them.
fn group_rules(group: &SecurityGroup) -> SecurityGroupRules {
    let mut rules = SecurityGroupRules::default();
    // The model allows no more rules than the map holds (MAX_SECURITY_GROUP_RULES).
    for (slot, rule) in rules.rules.iter_mut().zip(&group.rules) {
        let (port_min, port_max) = rule.ports.map_or((0, u16::MAX), |p| (p.min, p.max));
        *slot = SecurityGroupRule {
            src_net: ipv4_key(rule.source.network().octets()),
            src_mask: ipv4_key(rule.source.netmask().octets()),
            port_min,
            port_max,
            proto: match rule.protocol {
                RuleProtocol::All => RULE_ANY_PROTOCOL,
                RuleProtocol::Tcp => policy::PROTO_TCP,
                RuleProtocol::Udp => policy::PROTO_UDP,
                RuleProtocol::Icmp => policy::PROTO_ICMP,
            },
            _pad: [0; 3],
        };
    }
    rules.count = group.rules.len().min(rules.rules.len()) as u32;
    rules
}

fn change_views(change: &Change, with_values: bool) -> Vec<ChangeView> {
    change
        .after
        .iter()
        .map(|(key, after)| ChangeView {
            kind: key.kind.name().to_owned(),
            id: key.id.clone(),
            action: match (change.before.get(key).and_then(Option::as_ref), after) {
                (None, Some(_)) => "create",
                (Some(_), None) => "delete",
                _ => "update",
            }
            .to_owned(),
            before: with_values.then(|| change.before.get(key).cloned().flatten()).flatten(),
            after: with_values.then(|| after.clone()).flatten(),
        })
        .collect()
}
