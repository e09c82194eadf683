//! The agent: where a request goes from the rules to the store to the maps.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use eipgw_common::{RULE_ANY_PROTOCOL, SecurityGroupRule, SecurityGroupRules, ipv4_key, policy};
use serde_json::Value;

use crate::{
    api::{
        ApiError, ApplyAnswer, ApplyTimings, ChangeCount, ChangeView, ExecuteAnswer, NatEipView,
        NatGatewayView, Progress, StatsView,
    },
    dataplane::{
        Dataplane, DesiredMaps, EipMapping, EipPolicy, HeldReport, Planned, PortMapping,
        SnatSessionView, Touched, monotonic_now_ns, utilisation_percent,
    },
    document::Incoming,
    model::{
        Association, Change, Changed, DnatMapping, Egress, EgressLookup, Eip, Key, Kind,
        NatGateway, Protocol, Refusal, Request, Resource, ResourceRef, RuleProtocol, SecurityGroup,
        State, describe, egress_of,
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
        let everything = Touched {
            eips: state.eips.keys().copied().collect(),
            ipv6: state.enis.values().flat_map(|e| e.ipv6_public.iter().copied()).collect(),
            groups: state.security_groups.values().map(|g| g.number).collect(),
            snat: state.enis.values().flat_map(|e| e.ipv4s()).collect(),
        };
        dataplane.reconcile(&desired_maps(&state, &everything))?;
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
        self.commit(&change, &mut ApplyTimings::default())?;
        log::info!("applied {request:?}");
        let subject = match &executed.subject() {
            Some(key) => Some(self.describe(key)?),
            None => None,
        };
        Ok(ExecuteAnswer { subject, warnings: executed.warnings })
    }

    /// Runs the requests of a document as one transaction (all or nothing), as they are
    /// read; with `dry_run` nothing is kept and the answer says what would change. A
    /// document that does not read to its end is refused as malformed, even when one of
    /// its requests was refused first.
    pub fn apply(
        &mut self,
        mut document: Incoming<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyAnswer, ApiError> {
        let mut timings = ApplyTimings::default();
        let mut phase = Instant::now();
        let parsed = document.parsed();
        let validating = |done| Progress::validating(done, parsed.load(Ordering::Relaxed));
        let mut warnings = Vec::new();
        let ran = self.state.run_each(
            document.by_ref().flatten(),
            |done| progress(validating(done)),
            |done| warnings.extend(done.warnings),
        );
        let (txn, read) = match ran {
            Ok(txn) => match document.finish() {
                Ok(read) => (txn, read),
                Err(malformed) => {
                    txn.rollback();
                    return Err(ApiError::Refused(malformed));
                }
            },
            Err((at, refusal)) => {
                let read = document.finish().map_err(ApiError::Refused)?;
                return Err(ApiError::Refused(refusal.of_request(at, read.requests)));
            }
        };
        let change = txn.commit();
        let (total, options) = (read.requests, read.options);
        progress(Progress::validating(total, total));
        timings.parse = read.parse_time;
        timings.rules = lap(&mut phase);
        let changed = change.len();
        let (changes, counts) = if options.list_at_most.is_none_or(|most| changed <= most) {
            (change_views(&change, options.dry_run), Vec::new())
        } else {
            (Vec::new(), change_counts(&change))
        };
        timings.listing = lap(&mut phase);
        if options.dry_run {
            self.state.revert(&change);
        } else {
            progress(Progress { phase: "storing and writing the maps".into(), done: total, total });
            self.commit(&change, &mut timings)?;
            log::info!("applied {total} requests ({changed} resources changed)");
        }
        Ok(ApplyAnswer {
            applied: !options.dry_run,
            requests: total,
            changed,
            changes,
            counts,
            warnings,
            timings,
        })
    }

    /// Stores a change made to the in-memory state, then brings the maps along. If the
    /// store cannot write it, the in-memory state goes back too. If the maps fail after
    /// the store has it, the next start reconciles them. Says how long each part took.
    fn commit(&mut self, change: &Change, timings: &mut ApplyTimings) -> Result<(), ApiError> {
        if change.is_empty() {
            return Ok(());
        }
        let Self { state, store, dataplane } = self;
        // The store writes the change on a thread of its own while the maps' side of it is
        // worked out in memory: at a million associations each takes seconds, and neither
        // needs the other. Nothing reaches the maps before the store has the change.
        let (stored, planned) = std::thread::scope(|scope| {
            let storing = scope.spawn(|| timed(|| store.commit(state, change)));
            let planned = timed(|| plan_maps(state, dataplane, &touched(state, change)));
            (storing.join().expect("the store's thread does not panic"), planned)
        });
        let ((stored, store_time), (planned, plan_time)) = (stored, planned);
        (timings.store, timings.plan) = (store_time, plan_time);
        if let Err(e) = stored {
            state.revert(change);
            if let Err(reopen) = store.reopen() {
                log::error!("{reopen:#}");
            }
            // Nothing planned reaches the maps, nor stays pending for the next change.
            dataplane.discard();
            return Err(ApiError::Failed(e));
        }
        let (after, planned) = planned?;
        let (written, maps_time) = timed(|| dataplane.write(&after, planned));
        timings.maps = maps_time;
        Ok(written?)
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

    /// The live SNAT sessions, of one EIP and/or one private address if asked.
    pub fn nat_sessions(
        &self,
        eip: Option<Ipv4Addr>,
        private_ip: Option<Ipv4Addr>,
    ) -> anyhow::Result<Vec<SnatSessionView>> {
        let mut sessions = self.dataplane.snat_sessions()?;
        sessions.retain(|s| {
            eip.is_none_or(|e| s.eip == e) && private_ip.is_none_or(|p| s.private_ip == p)
        });
        Ok(sessions)
    }

    /// A NAT gateway's EIPs: what each serves, and how full its SNAT port range is.
    pub fn nat_gateway_view(&self, id: &str) -> Result<NatGatewayView, ApiError> {
        let gateway = self
            .state
            .nat_gateways
            .get(id)
            .ok_or_else(|| ApiError::Refused(Refusal::not_found(Kind::NatGateway, id)))?;
        let usage = self.dataplane.snat_usage()?;
        let config = self.dataplane.snat_config();
        let mut eips = Vec::new();
        for eip in self.state.eips_of_nat_gateway(id) {
            let used = usage.get(&eip.address).copied().unwrap_or_default();
            let counters = self.dataplane.eip_counters(eip.address)?;
            eips.push(NatEipView {
                eip: eip.address,
                roles: nat_roles(gateway, eip.address).into_iter().map(str::to_owned).collect(),
                sessions: used.sessions,
                ports_in_use: used.ports_in_use,
                port_range_size: config.port_count(),
                utilisation_percent: utilisation_percent(used.ports_in_use, &config),
                snat_refused_packets: counters.map_or(0, |c| c.snat_refused_packets),
            });
        }
        Ok(NatGatewayView {
            nat_gateway: gateway.id.to_string(),
            vpc: gateway.vpc.to_string(),
            port_min: config.port_min,
            port_max: config.port_max,
            eips,
        })
    }

    /// Ends the SNAT sessions that are over now; returns how many.
    pub fn expire_snat_sessions(&mut self) -> anyhow::Result<usize> {
        self.dataplane.expire_snat_sessions(monotonic_now_ns())
    }

    /// See [`Dataplane::held_fragments_fd`]: a copy, for a thread that waits on it.
    pub fn held_fragments_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.dataplane.held_fragments_fd().try_clone_to_owned()
    }

    pub fn release_held_fragments(&mut self) -> anyhow::Result<HeldReport> {
        self.dataplane.release_held_fragments()
    }

    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let verdicts = self.dataplane.verdict_counters()?;
        Ok(StatsView {
            verdicts: verdicts.into_iter().map(|(v, n)| (v.name().to_owned(), n)).collect(),
        })
    }
}

/// What a change may affect in the maps; `state` is the state after it.
///
/// SNAT egress (R27) of a private address changes with its ENI (addresses, instance), with
/// an EIP association on it, and with the NAT gateways of its VPC. The first two name
/// their addresses, so a plain `eip associate` recomputes one address; a gateway change
/// recomputes its whole VPC, which is rare and bounded by the VPC's size.
fn touched(state: &State, change: &Change) -> Touched {
    // Collected with repeats, then sorted once: a million-address change would spend
    // longer inserting them into sets one by one.
    let mut eips = Vec::new();
    let mut ipv6 = Vec::new();
    let mut groups = Vec::new();
    let mut snat = Vec::new();
    let mut gateways = BTreeSet::new();
    let mut vpcs = BTreeSet::new();
    // The EIPs on an ENI this change created were all associated by it, so they are among
    // its EIPs already: a new fleet of ENIs holding a million would list them twice.
    let created_enis: BTreeSet<&str> = change
        .others
        .iter()
        .filter(|c| c.key.kind == Kind::Eni && c.before.is_none())
        .map(|c| c.key.id.as_str())
        .collect();
    // A changed key has a resource before or after it (or both): the EIP's own address
    // comes from that, not from parsing its id.
    for resource in change.values() {
        match resource {
            ResourceRef::Other(Resource::Eni(eni)) => {
                ipv6.extend(eni.ipv6_public.iter().copied());
                snat.extend(eni.ipv4s());
                // Its security group is its EIPs' (and its instance's EIP's), and that of
                // the DNAT entries that lead to its addresses.
                if !created_enis.contains(eni.id.as_str()) {
                    eips.extend(state.eip_addresses_of_eni(&eni.id));
                }
                let dnat_entries =
                    state.nat_gateways.values().flat_map(|g| g.dnat_entries.values());
                eips.extend(
                    dnat_entries.filter(|e| eni.has_ipv4(e.mapping.private_ip())).map(|e| e.eip),
                );
                if let Some(instance) = &eni.instance
                    && let Some(eip) = state.eip_of_instance(instance)
                {
                    eips.push(eip.address);
                }
            }
            ResourceRef::Eip(eip) | ResourceRef::Other(Resource::Eip(eip)) => {
                eips.push(eip.address);
                // The address that gains or loses its own EIP moves between 1:1 and SNAT.
                snat.extend(eip.association.as_ref().and_then(Association::private_ip));
            }
            ResourceRef::Other(Resource::NatGateway(gateway)) => {
                // DNAT entries change the mapping of the EIPs they name.
                eips.extend(gateway.dnat_entries.values().map(|e| e.eip));
                eips.extend(gateway.snat_entries.values().flat_map(|e| e.eips.iter().copied()));
                gateways.insert(gateway.id.clone());
                vpcs.insert(gateway.vpc.clone());
            }
            ResourceRef::Other(Resource::SecurityGroup(group)) => {
                groups.push(group.number);
            }
            _ => {}
        }
    }
    for gateway in &gateways {
        eips.extend(state.eips_of_nat_gateway(gateway).map(|eip| eip.address));
    }
    if !vpcs.is_empty() {
        let in_vpcs = state
            .enis
            .values()
            .filter(|eni| state.vpc_of_eni(eni).is_some_and(|vpc| vpcs.contains(&vpc.id)));
        snat.extend(in_vpcs.flat_map(|eni| eni.ipv4s()));
    }
    Touched {
        eips: sorted_unique(eips),
        ipv6: sorted_unique(ipv6),
        groups: sorted_unique(groups),
        snat: sorted_unique(snat),
    }
}

fn sorted_unique<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort_unstable();
    items.dedup();
    items
}

/// What the maps should hold for what `touched` names in `state`. The EIPs that SNAT
/// sources leave through come along (with their mappings), so that the data plane has
/// their counter slots.
fn desired_maps(state: &State, touched: &Touched) -> DesiredMaps {
    let mut desired = DesiredMaps::default();
    for group in state.security_groups.values().filter(|g| touched.groups.contains(&g.number)) {
        desired.security_groups.insert(group.number, group_rules(group));
    }
    // Collected in address order: the tree of a million is then built in one pass instead
    // of by a search for each.
    let mut eips = Vec::with_capacity(touched.eips.len());
    for address in &touched.eips {
        if let Some(eip) = state.eips.get(address) {
            eips.push((*address, eip_mapping(state, &mut desired, eip)));
        }
    }
    desired.eips = eips.into_iter().collect();
    // Only a SNAT entry makes an address a SNAT source: without any, the million addresses
    // of a big change need no egress lookup (their entries, if any, go as not wanted).
    if state.nat_gateways.values().any(|g| !g.snat_entries.is_empty()) {
        let egress = EgressLookup::new(state);
        for &ip in &touched.snat {
            if let Egress::Snat { eips, .. } = egress.egress_of(ip)
                && let Some(eip) = snat_eip(ip, &eips)
            {
                desired.snat_sources.insert(ip, eip);
                if !desired.eips.contains_key(&eip)
                    && let Some(found) = state.eips.get(&eip)
                {
                    let mapping = eip_mapping(state, &mut desired, found);
                    desired.eips.insert(eip, mapping);
                }
            }
        }
    }
    desired.ipv6_public = touched
        .ipv6
        .iter()
        .copied()
        .filter(|ip| state.owner_of_ipv6(*ip).is_some_and(|eni| eni.ipv6_public.contains(ip)))
        .collect();
    desired
}

/// One EIP's mapping; its policy and its DNAT port mappings go into `desired`.
fn eip_mapping(state: &State, desired: &mut DesiredMaps, eip: &Eip) -> EipMapping {
    let address = eip.address;
    let next_hop = |eni: &str| state.enis.get(eni).map(|e| e.primary_ip);
    // A DNAT IP mapping's EIP takes its target's security group.
    let mut security_group = None;
    let mapping = match &eip.association {
        Some(Association::Instance { private_ip, .. } | Association::Eni { private_ip, .. }) => {
            EipMapping::Nat { private_ip: *private_ip }
        }
        Some(Association::CutThrough { eni }) => match next_hop(eni) {
            Some(next_hop) => EipMapping::CutThrough { next_hop },
            None => EipMapping::Unassociated,
        },
        Some(Association::MultiEip { eni }) => match next_hop(eni) {
            Some(next_hop) => EipMapping::MultiEip { next_hop },
            None => EipMapping::Unassociated,
        },
        Some(Association::NatGateway { nat_gateway }) => {
            let entries = state
                .nat_gateways
                .get(nat_gateway)
                .into_iter()
                .flat_map(|g| g.dnat_entries.values().filter(|e| e.eip == address));
            // An IP mapping is 1:1 NAT on the stateless path (R28 leaves it alone on its
            // EIP); otherwise the EIP takes port mappings and SNAT sessions. Either way
            // the target ENI's security group judges what reaches it.
            let mut mapping = EipMapping::NatGateway;
            for entry in entries {
                let target_group = state
                    .owner_of_ipv4(entry.mapping.private_ip())
                    .and_then(|eni| state.security_groups.get(eni.security_group.as_deref()?))
                    .map(|group| group.number);
                match entry.mapping {
                    DnatMapping::Ip { private_ip } => {
                        mapping = EipMapping::Nat { private_ip };
                        security_group = target_group;
                    }
                    DnatMapping::Port { protocol, public_port, private_ip, private_port } => {
                        let proto = match protocol {
                            Protocol::Tcp => policy::PROTO_TCP,
                            Protocol::Udp => policy::PROTO_UDP,
                        };
                        desired.dnat_ports.insert(
                            PortMapping { eip: address, proto, public_port },
                            (private_ip, private_port),
                        );
                        if let Some(group) = target_group {
                            desired.dnat_groups.insert(private_ip, group);
                        }
                    }
                }
            }
            mapping
        }
        None => EipMapping::Unassociated,
    };
    let policy = EipPolicy {
        bandwidth_mbps: eip.bandwidth_mbps,
        security_group: security_group.or(state.security_group_of_eip(eip).map(|g| g.number)),
    };
    if policy != EipPolicy::default() {
        desired.policies.insert(address, policy);
    }
    mapping
}

/// The EIP a SNAT source leaves through, among its entry's: always the same one for an
/// address, so that every session of a host shares one public address (paired pooling,
/// RFC 4787 REQ-2). A fixed hash of the address (not a per-process random one) keeps the
/// choice across agent restarts, where a new choice would end the host's sessions, and
/// spreads a vSwitch's consecutive addresses evenly over the EIPs.
fn snat_eip(ip: Ipv4Addr, eips: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    if eips.is_empty() {
        return None;
    }
    // Fibonacci hashing: the high bits of the product mix every bit of the address.
    let hash = u32::from(ip).wrapping_mul(0x9E37_79B9) >> 16;
    Some(eips[hash as usize % eips.len()])
}

/// What an EIP of `gateway` serves: "ip-mapping" (a DNAT IP mapping), "dnat" (port
/// mappings), "snat" (named by a SNAT entry), in that order.
fn nat_roles(gateway: &NatGateway, eip: Ipv4Addr) -> Vec<&'static str> {
    let dnat = gateway.dnat_entries.values().filter(|e| e.eip == eip);
    let mut roles = Vec::new();
    if dnat.clone().any(|e| matches!(e.mapping, DnatMapping::Ip { .. })) {
        roles.push("ip-mapping");
    }
    if dnat.clone().any(|e| matches!(e.mapping, DnatMapping::Port { .. })) {
        roles.push("dnat");
    }
    if gateway.snat_entries.values().any(|e| e.eips.contains(&eip)) {
        roles.push("snat");
    }
    roles
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

/// Plans (see [`Dataplane::plan`]) what the maps should hold for what `touched` names in
/// `state`.
fn plan_maps(
    state: &State,
    dataplane: &mut Dataplane,
    touched: &Touched,
) -> anyhow::Result<(DesiredMaps, Planned)> {
    let after = desired_maps(state, touched);
    let planned = dataplane.plan(&after, touched)?;
    Ok((after, planned))
}

/// Runs `work`, and says how long it took.
fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    (work(), started.elapsed())
}

/// The time since `since`, which moves on to now.
fn lap(since: &mut Instant) -> Duration {
    let now = Instant::now();
    now.duration_since(std::mem::replace(since, now))
}

/// Each change by key, with the resource before and after it if `with_values`.
fn change_views(change: &Change, with_values: bool) -> Vec<ChangeView> {
    fn view<K, V: Clone>(
        c: &Changed<K, V>,
        kind: Kind,
        id: String,
        with_values: bool,
        resource: fn(V) -> Resource,
    ) -> ChangeView {
        let value = |v: Option<&V>| with_values.then(|| v.cloned().map(resource)).flatten();
        ChangeView {
            kind: Cow::Borrowed(kind.name()),
            id,
            action: c.action().into(),
            before: value(c.before.as_deref()),
            after: value(c.after.as_ref()),
        }
    }
    change
        .in_order(
            |c| view(c, c.key.kind, c.key.id.to_string(), with_values, std::convert::identity),
            |c| view(c, Kind::Eip, c.key.to_string(), with_values, Resource::Eip),
        )
        .collect()
}

/// The changes counted by action and kind.
fn change_counts(change: &Change) -> Vec<ChangeCount> {
    let mut counts = std::collections::BTreeMap::<(&str, &str), usize>::new();
    for (kind, action) in change.actions() {
        *counts.entry((action, kind.name())).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((action, kind), count)| ChangeCount {
            action: action.into(),
            kind: kind.into(),
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{
        EIP1, EIP2, EIP4, EIP5, ENI1_IP, HANGZHOU, I1_IP, I2_IP, associate_instance, dnat_ip,
        dnat_port, json, ok, req, v4, with_nat_gateway, world,
    };

    /// Runs a request that must be allowed; returns what it touches in the maps and what
    /// they should hold for it, as the agent computes them.
    #[track_caller]
    fn after(state: &mut State, request: Value) -> (Touched, DesiredMaps) {
        let request = req(request);
        let (_, change) =
            state.run(&request).unwrap_or_else(|r| panic!("{request:?} was refused: {r}"));
        let touched = touched(state, &change);
        let desired = desired_maps(state, &touched);
        (touched, desired)
    }

    fn snat_vsw_a(eips: &[&str]) -> Value {
        json!({"op": "add_snat_entry", "nat_gateway": "ngw-1", "id": "s-1",
               "source": {"type": "vswitch", "value": "vsw-a"}, "eips": eips})
    }

    /// An answer lists each change, or counts them by action and kind: the same changes.
    #[test]
    fn changes_are_listed_or_counted_alike() {
        let mut s = world();
        let allocate =
            |address: &str| json!({"op": "allocate_eip", "address": address, "region": HANGZHOU});
        ok(&mut s, allocate("198.51.100.91"));
        ok(&mut s, allocate("198.51.100.92"));
        let allocate = |address: &str| req(allocate(address));
        let requests = [
            allocate("198.51.100.93"),
            allocate("198.51.100.94"),
            req(json!({"op": "set_eip_bandwidth", "eip": "198.51.100.91", "bandwidth_mbps": 5})),
            req(json!({"op": "release_eip", "eip": "198.51.100.92"})),
            // Made and gone in one document: no change at all.
            allocate("198.51.100.95"),
            req(json!({"op": "release_eip", "eip": "198.51.100.95"})),
        ];
        let (_, change) = s.run_all(&requests).expect("the document is allowed");

        let listed: Vec<(String, String)> = change_views(&change, false)
            .into_iter()
            .map(|v| (v.action.into_owned(), v.id))
            .collect();
        let pairs = [
            ("update", "198.51.100.91"),
            ("delete", "198.51.100.92"),
            ("create", "198.51.100.93"),
            ("create", "198.51.100.94"),
        ];
        let expected: Vec<(String, String)> =
            pairs.iter().map(|(a, id)| (a.to_string(), id.to_string())).collect();
        assert_eq!(listed, expected);

        let count = |action: &'static str, count| ChangeCount {
            action: action.into(),
            kind: "eip".into(),
            count,
        };
        assert_eq!(
            change_counts(&change),
            vec![count("create", 2), count("delete", 1), count("update", 1)]
        );
    }

    #[test]
    fn a_nat_gateway_eip_takes_port_mappings_or_its_ip_mapping() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP4}));
        let (_, desired) = after(&mut s, dnat_port("web", EIP5, "udp", 53, I1_IP));
        assert_eq!(desired.eips[&v4(EIP5)], EipMapping::NatGateway);
        let web = PortMapping { eip: v4(EIP5), proto: policy::PROTO_UDP, public_port: 53 };
        assert_eq!(desired.dnat_ports[&web], (v4(I1_IP), 8080));
        // An IP mapping makes its EIP plain 1:1 NAT.
        let (touched, desired) = after(&mut s, dnat_ip("all", EIP4, I2_IP));
        assert_eq!(desired.eips[&v4(EIP4)], EipMapping::Nat { private_ip: v4(I2_IP) });
        assert!(touched.snat.contains(&v4(I2_IP)), "its target's egress changes");
        // Removing the port mapping takes it out of the EIP's mappings.
        let removed = json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "web"});
        let (touched, desired) = after(&mut s, removed);
        assert!(touched.eips.contains(&v4(EIP5)));
        assert_eq!(desired.eips[&v4(EIP5)], EipMapping::NatGateway);
        assert!(desired.dnat_ports.is_empty());
    }

    #[test]
    fn a_dnat_target_takes_its_enis_security_group() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP4}));
        ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
        ok(&mut s, dnat_ip("all", EIP4, ENI1_IP));
        let number = |s: &State| s.security_groups["sg-web"].number;
        // The port mapping's target gets the group of the ENI that holds its address, and
        // so does the IP mapping's EIP (its 1:1 policy).
        let set = |eni: &str| json!({"op": "set_eni_security_group", "eni": eni, "security_group": "sg-web"});
        let (touched, desired) = after(&mut s, set("i-1-eni0"));
        assert!(touched.eips.contains(&v4(EIP5)), "{touched:?}");
        assert_eq!(desired.dnat_groups.get(&v4(I1_IP)), Some(&number(&s)));
        let (touched, desired) = after(&mut s, set("eni-1"));
        assert!(touched.eips.contains(&v4(EIP4)), "{touched:?}");
        assert_eq!(desired.policies[&v4(EIP4)].security_group, Some(number(&s)));
        // And loses it with the ENI's group.
        let none = json!({"op": "set_eni_security_group", "eni": "i-1-eni0"});
        let (_, desired) = after(&mut s, none);
        assert!(desired.dnat_groups.is_empty(), "{:?}", desired.dnat_groups);
        assert_eq!(desired.dnat_ports.len(), 1);
    }

    #[test]
    fn snat_sources_follow_the_egress_of_each_address() {
        let mut s = world();
        with_nat_gateway(&mut s);
        let (touched, desired) = after(&mut s, snat_vsw_a(&[EIP5]));
        // Every address of the gateway's VPC is looked at; those of vsw-a get SNAT.
        assert!(touched.snat.contains(&v4("10.0.2.10")));
        assert_eq!(desired.snat_sources.get(&v4(I1_IP)), Some(&v4(EIP5)));
        assert_eq!(desired.snat_sources.get(&v4(ENI1_IP)), Some(&v4(EIP5)));
        assert_eq!(desired.snat_sources.get(&v4("10.0.2.10")), None);
        // The EIP comes along, so that the data plane has its slot.
        assert_eq!(desired.eips[&v4(EIP5)], EipMapping::NatGateway);
    }

    #[test]
    fn an_eip_association_recomputes_only_its_address() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, snat_vsw_a(&[EIP5]));
        let (touched, desired) = after(&mut s, associate_instance(EIP1, "i-1"));
        assert_eq!(touched.eips, [v4(EIP1)]);
        assert_eq!(touched.snat, [v4(I1_IP)]);
        // No SNAT source for it any more: the data plane removes it.
        assert!(desired.snat_sources.is_empty());
        assert_eq!(desired.eips[&v4(EIP1)], EipMapping::Nat { private_ip: v4(I1_IP) });
        // And back to SNAT when the EIP goes.
        let unassociate = json!({"op": "unassociate_eip", "eip": EIP1});
        let (touched, desired) = after(&mut s, unassociate);
        assert_eq!(touched.snat, [v4(I1_IP)]);
        assert_eq!(desired.snat_sources.get(&v4(I1_IP)), Some(&v4(EIP5)));
    }

    #[test]
    fn deleting_a_gateway_removes_its_sources_and_frees_its_eips() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, snat_vsw_a(&[EIP5]));
        ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I2_IP));
        let (touched, desired) = after(&mut s, json!({"op": "delete_nat_gateway", "id": "ngw-1"}));
        assert!(touched.snat.contains(&v4(I1_IP)), "the VPC of the gone gateway");
        assert!(touched.eips.contains(&v4(EIP5)));
        assert!(desired.snat_sources.is_empty());
        assert!(desired.dnat_ports.is_empty());
        assert_eq!(desired.eips[&v4(EIP5)], EipMapping::Unassociated);
    }

    #[test]
    fn an_eni_and_its_eips_made_in_one_change_plan_each_eip_once() {
        let mut s = world();
        let document = [
            json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                   "primary_ip": "10.0.1.120", "security_group": "sg-web"}),
            json!({"op": "assign_private_ips", "eni": "eni-new", "ips": ["10.0.1.121"]}),
            json!({"op": "associate_eip", "eip": EIP1, "eni": "eni-new",
                   "private_ip": "10.0.1.120"}),
            json!({"op": "associate_eip", "eip": EIP2, "eni": "eni-new",
                   "private_ip": "10.0.1.121"}),
        ];
        let requests: Vec<Request> = document.into_iter().map(req).collect();
        let (_, change) = s.run_all(&requests).expect("the document is allowed");
        let touched = touched(&s, &change);
        let desired = desired_maps(&s, &touched);
        assert_eq!(touched.eips, [v4(EIP1), v4(EIP2)]);
        assert_eq!(desired.eips[&v4(EIP2)], EipMapping::Nat { private_ip: v4("10.0.1.121") });
        // The ENI's security group reaches its EIPs' policies.
        let web = s.security_groups["sg-web"].number;
        assert_eq!(desired.policies[&v4(EIP1)].security_group, Some(web));
        // An ENI that was there before lists its EIPs when it changes.
        let none = json!({"op": "set_eni_security_group", "eni": "eni-new"});
        let (touched, desired) = after(&mut s, none);
        assert_eq!(touched.eips, [v4(EIP1), v4(EIP2)]);
        assert_eq!(desired.policies.get(&v4(EIP1)), None);
    }

    #[test]
    fn an_eni_change_recomputes_its_addresses() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, snat_vsw_a(&[EIP5]));
        let assign = json!({"op": "assign_private_ips", "eni": "eni-1", "ips": ["10.0.1.101"]});
        let (touched, desired) = after(&mut s, assign);
        assert!(touched.snat.contains(&v4("10.0.1.101")));
        assert_eq!(desired.snat_sources.get(&v4("10.0.1.101")), Some(&v4(EIP5)));
        let unassign = json!({"op": "unassign_private_ips", "eni": "eni-1", "ips": ["10.0.1.101"]});
        let (touched, desired) = after(&mut s, unassign);
        assert!(touched.snat.contains(&v4("10.0.1.101")));
        assert_eq!(desired.snat_sources.get(&v4("10.0.1.101")), None);
    }

    #[test]
    fn a_host_always_leaves_through_one_eip_and_hosts_spread_over_them() {
        let eips: Vec<Ipv4Addr> = (10..14).map(|n| Ipv4Addr::new(203, 0, 113, n)).collect();
        let mut per_eip = std::collections::BTreeMap::new();
        for host in 1..=254 {
            let ip = Ipv4Addr::new(10, 0, 1, host);
            let eip = snat_eip(ip, &eips).unwrap();
            assert_eq!(snat_eip(ip, &eips), Some(eip), "the same EIP every time");
            *per_eip.entry(eip).or_insert(0) += 1;
        }
        assert_eq!(per_eip.len(), 4, "{per_eip:?}");
        assert!(per_eip.values().all(|&n| (40..=90).contains(&n)), "uneven: {per_eip:?}");
        assert_eq!(snat_eip(Ipv4Addr::new(10, 0, 1, 1), &[]), None);
        assert_eq!(snat_eip(Ipv4Addr::new(10, 0, 1, 1), &eips[..1]), Some(eips[0]));
    }

    #[test]
    fn an_eips_roles_name_what_uses_it() {
        let mut s = world();
        with_nat_gateway(&mut s);
        ok(&mut s, json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP4}));
        let roles = |s: &State, eip: &str| nat_roles(&s.nat_gateways["ngw-1"], v4(eip));
        assert!(roles(&s, EIP5).is_empty());
        ok(&mut s, snat_vsw_a(&[EIP5]));
        ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
        ok(&mut s, dnat_ip("all", EIP4, I2_IP));
        assert_eq!(roles(&s, EIP5), ["dnat", "snat"]);
        assert_eq!(roles(&s, EIP4), ["ip-mapping"]);
    }
}
