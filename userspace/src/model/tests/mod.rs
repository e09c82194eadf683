//! Unit tests of the model: every rule of RULES.md (R01-R30) refusing and allowing, and the
//! side effects the rules promise. A test's name starts with the id of the rule it covers.
//!
//! Requests are written as the API takes them (JSON), so the tests also pin the request
//! shapes. Every helper that runs a request checks the derived indexes against a state
//! rebuilt from the resources, so a rollback that forgets an index entry shows up too.

mod describe;
mod eip;
mod eni;
mod instance;
mod ipv6;
mod nat_gateway;
mod network;
mod security_group;
mod txn;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

pub use serde_json::{Value, json};

pub use super::describe::describe;
pub use super::{
    Association, AssociationMode, DnatMapping, Egress, EgressLookup, Eip, Eni, EniKind, Executed,
    Id, Instance, InstanceState, Key, Kind, PortRange, Refusal, Request, Resource, RuleProtocol,
    SecurityGroup, SecurityGroupRule, State, codes, egress_of,
};

pub const HANGZHOU: &str = "cn-hangzhou";
pub const TOKYO: &str = "ap-northeast-1";
pub const ZONE_H: &str = "cn-hangzhou-h";
pub const ZONE_I: &str = "cn-hangzhou-i";

/// EIPs of cn-hangzhou (the fixture allocates 203.0.113.10 to .29 there).
pub const EIP1: &str = "203.0.113.10";
pub const EIP2: &str = "203.0.113.11";
pub const EIP3: &str = "203.0.113.12";
pub const EIP4: &str = "203.0.113.13";
pub const EIP5: &str = "203.0.113.14";
/// An EIP of ap-northeast-1.
pub const TOKYO_EIP: &str = "198.51.100.10";
/// The fixed public IP of instance `i-fixed` (not an EIP).
pub const FIXED_IP: &str = "198.51.100.250";

/// Primary addresses of the fixture's instances and ENIs.
pub const I1_IP: &str = "10.0.1.10";
pub const I2_IP: &str = "10.0.1.20";
pub const ENI1_IP: &str = "10.0.1.100";
pub const ENI2_IP: &str = "10.0.1.110";

/// A realistic state:
///
/// - regions `cn-hangzhou` and `ap-northeast-1`;
/// - instance types `t.small` (2 ENIs, 3 private IPv4s and 2 IPv6 per ENI) and `t.large`
///   (4 ENIs, 10 and 10);
/// - `vpc-1` (10.0.0.0/16, 2001:db8:1::/48) with `vsw-a` (zone h, 10.0.1.0/24,
///   2001:db8:1:1::/64) and `vsw-b` (zone i, 10.0.2.0/24, 2001:db8:1:2::/64); `vpc-gw`
///   (10.1.0.0/16, IPv4 gateway, no IPv6) with `vsw-gw` (zone h); `vpc-tokyo` (10.2.0.0/16,
///   2001:db8:2::/48) with `vsw-tokyo`;
/// - instances in `vsw-a`: `i-1` (t.small, 10.0.1.10), `i-2` (t.large, 10.0.1.20),
///   `i-stopped` (.30), `i-pending` (.40), `i-fixed` (.50, fixed public IP 198.51.100.250);
///   `i-zone-i` in `vsw-b` (10.0.2.10); `i-classic` (classic network); `i-gw` in `vsw-gw`
///   (10.1.1.10); `i-tokyo` in `vsw-tokyo` (10.2.1.10); each VPC instance has its primary
///   ENI `<id>-eni0`;
/// - detached secondary ENIs `eni-1` (10.0.1.100) and `eni-2` (10.0.1.110) in `vsw-a`,
///   `eni-zone-i` (10.0.2.100), `eni-gw` (10.1.1.100), `eni-tokyo` (10.2.1.100);
/// - security groups `sg-web` (number 1) in `vpc-1` and `sg-tokyo` (number 2) in
///   `vpc-tokyo`, without rules; no ENI uses them (every ENI is unfiltered);
/// - available EIPs 203.0.113.10-29 in cn-hangzhou and 198.51.100.10-12 in ap-northeast-1.
pub fn world() -> State {
    let mut requests = vec![
        json!({"op": "create_region", "id": HANGZHOU}),
        json!({"op": "create_region", "id": TOKYO}),
        json!({"op": "create_instance_type", "id": "t.small", "max_enis": 2,
               "max_private_ipv4_per_eni": 3, "max_ipv6_per_eni": 2}),
        json!({"op": "create_instance_type", "id": "t.large", "max_enis": 4,
               "max_private_ipv4_per_eni": 10, "max_ipv6_per_eni": 10}),
        json!({"op": "create_vpc", "id": "vpc-1", "region": HANGZHOU, "cidr": "10.0.0.0/16",
               "ipv6_cidr": "2001:db8:1::/48"}),
        json!({"op": "create_vpc", "id": "vpc-gw", "region": HANGZHOU, "cidr": "10.1.0.0/16",
               "ipv4_gateway": true}),
        json!({"op": "create_vpc", "id": "vpc-tokyo", "region": TOKYO, "cidr": "10.2.0.0/16",
               "ipv6_cidr": "2001:db8:2::/48"}),
        json!({"op": "create_vswitch", "id": "vsw-a", "vpc": "vpc-1", "zone": ZONE_H,
               "cidr": "10.0.1.0/24", "ipv6_cidr": "2001:db8:1:1::/64"}),
        json!({"op": "create_vswitch", "id": "vsw-b", "vpc": "vpc-1", "zone": ZONE_I,
               "cidr": "10.0.2.0/24", "ipv6_cidr": "2001:db8:1:2::/64"}),
        json!({"op": "create_vswitch", "id": "vsw-gw", "vpc": "vpc-gw", "zone": ZONE_H,
               "cidr": "10.1.1.0/24"}),
        json!({"op": "create_vswitch", "id": "vsw-tokyo", "vpc": "vpc-tokyo",
               "zone": "ap-northeast-1a", "cidr": "10.2.1.0/24",
               "ipv6_cidr": "2001:db8:2:1::/64"}),
        json!({"op": "create_security_group", "id": "sg-web", "vpc": "vpc-1"}),
        json!({"op": "create_security_group", "id": "sg-tokyo", "vpc": "vpc-tokyo"}),
        instance("i-1", "t.small", "vsw-a", I1_IP),
        instance("i-2", "t.large", "vsw-a", I2_IP),
        json!({"op": "create_instance", "id": "i-stopped", "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "vswitch": "vsw-a", "private_ip": "10.0.1.30",
               "state": "stopped"}),
        json!({"op": "create_instance", "id": "i-pending", "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "vswitch": "vsw-a", "private_ip": "10.0.1.40",
               "state": "pending"}),
        json!({"op": "create_instance", "id": "i-fixed", "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "vswitch": "vsw-a", "private_ip": "10.0.1.50",
               "fixed_public_ip": FIXED_IP}),
        json!({"op": "create_instance", "id": "i-zone-i", "region": HANGZHOU, "zone": ZONE_I,
               "instance_type": "t.small", "vswitch": "vsw-b", "private_ip": "10.0.2.10"}),
        json!({"op": "create_instance", "id": "i-classic", "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "network": "classic"}),
        json!({"op": "create_instance", "id": "i-gw", "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "vswitch": "vsw-gw", "private_ip": "10.1.1.10"}),
        json!({"op": "create_instance", "id": "i-tokyo", "region": TOKYO,
               "zone": "ap-northeast-1a", "instance_type": "t.small", "vswitch": "vsw-tokyo",
               "private_ip": "10.2.1.10"}),
        json!({"op": "create_eni", "id": "eni-1", "vswitch": "vsw-a", "primary_ip": ENI1_IP}),
        json!({"op": "create_eni", "id": "eni-2", "vswitch": "vsw-a", "primary_ip": ENI2_IP}),
        json!({"op": "create_eni", "id": "eni-zone-i", "vswitch": "vsw-b",
               "primary_ip": "10.0.2.100"}),
        json!({"op": "create_eni", "id": "eni-gw", "vswitch": "vsw-gw", "primary_ip": "10.1.1.100"}),
        json!({"op": "create_eni", "id": "eni-tokyo", "vswitch": "vsw-tokyo",
               "primary_ip": "10.2.1.100"}),
    ];
    for n in 10..30 {
        requests.push(json!({"op": "allocate_eip", "address": format!("203.0.113.{n}"),
                             "region": HANGZHOU}));
    }
    for n in 10..13 {
        requests.push(json!({"op": "allocate_eip", "address": format!("198.51.100.{n}"),
                             "region": TOKYO, "bandwidth_mbps": 100}));
    }
    let requests: Vec<Request> = requests.into_iter().map(req).collect();
    let mut state = State::default();
    if let Err(refusal) = state.run_all(&requests) {
        panic!("the fixture was refused: {refusal}");
    }
    check_indexes(&state);
    state
}

fn instance(id: &str, instance_type: &str, vswitch: &str, ip: &str) -> Value {
    json!({"op": "create_instance", "id": id, "region": HANGZHOU, "zone": ZONE_H,
           "instance_type": instance_type, "vswitch": vswitch, "private_ip": ip})
}

/// A request from its JSON form, as the API reads it.
#[track_caller]
pub fn req(value: Value) -> Request {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("bad request {value}: {e}"))
}

/// Runs a request that must be allowed; returns what it did.
#[track_caller]
/// Requests from their JSON, for one transaction.
pub fn requests(values: Vec<Value>) -> Vec<Request> {
    values.into_iter().map(req).collect()
}

pub fn ok(state: &mut State, request: Value) -> Executed {
    let request = req(request);
    match state.run(&request) {
        Ok((executed, _)) => {
            check_indexes(state);
            executed
        }
        Err(refusal) => panic!("{request:?} was refused: {refusal}"),
    }
}

/// Runs a request that must be refused with `code`, and checks that nothing changed.
#[track_caller]
pub fn refused(state: &mut State, request: Value, code: &str) -> Refusal {
    let request = req(request);
    let before = state.clone();
    match state.run(&request) {
        Ok(_) => panic!("{request:?} was allowed; expected a refusal with {code}"),
        Err(refusal) => {
            assert_eq!(refusal.code, code, "{request:?} was refused for another reason: {refusal}");
            assert!(*state == before, "the refused {request:?} changed the state");
            check_indexes_against(state, &before);
            refusal
        }
    }
}

/// Like [`refused`], and the refusal names `rule` (in its `rule` field and its message).
#[track_caller]
pub fn refused_by(state: &mut State, request: Value, code: &str, rule: &str) -> Refusal {
    let refusal = refused(state, request, code);
    assert_eq!(refusal.rule.as_deref(), Some(rule), "{refusal}");
    assert!(refusal.message.ends_with(&format!("({rule})")), "{refusal}");
    refusal
}

#[track_caller]
pub fn v4(ip: &str) -> Ipv4Addr {
    ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"))
}

#[track_caller]
pub fn v6(ip: &str) -> Ipv6Addr {
    ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"))
}

#[track_caller]
pub fn eip<'s>(state: &'s State, address: &str) -> &'s Eip {
    state.eips.get(&v4(address)).unwrap_or_else(|| panic!("EIP {address} is not allocated"))
}

/// What an EIP serves.
#[track_caller]
pub fn association(state: &State, address: &str) -> Option<Association> {
    eip(state, address).association.clone()
}

#[track_caller]
pub fn eni<'s>(state: &'s State, id: &str) -> &'s Eni {
    state.enis.get(id).unwrap_or_else(|| panic!("ENI {id} does not exist"))
}

#[track_caller]
pub fn inst<'s>(state: &'s State, id: &str) -> &'s Instance {
    state.instances.get(id).unwrap_or_else(|| panic!("instance {id} does not exist"))
}

/// The EIPs landing on an ENI, any mode, as strings.
pub fn eips_on(state: &State, eni: &str) -> Vec<String> {
    state.eips_of_eni(eni).map(|e| e.address.to_string()).collect()
}

pub fn nat(eni: &str, private_ip: &str) -> Option<Association> {
    Some(Association::Eni { eni: eni.into(), private_ip: v4(private_ip) })
}

pub fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|ip| v4(ip)).collect()
}

pub fn ipv6s(list: &[&str]) -> BTreeSet<Ipv6Addr> {
    list.iter().map(|ip| v6(ip)).collect()
}

// Requests used all over.

pub fn associate_instance(address: &str, instance: &str) -> Value {
    json!({"op": "associate_eip", "eip": address, "instance": instance})
}

pub fn associate_eni(address: &str, eni: &str, private_ip: &str) -> Value {
    json!({"op": "associate_eip", "eip": address, "eni": eni, "private_ip": private_ip})
}

pub fn associate_mode(address: &str, eni: &str, mode: &str) -> Value {
    json!({"op": "associate_eip", "eip": address, "eni": eni, "mode": mode})
}

pub fn assign(eni: &str, list: &[&str]) -> Value {
    json!({"op": "assign_private_ips", "eni": eni, "ips": list})
}

pub fn attach(eni: &str, instance: &str) -> Value {
    json!({"op": "attach_eni", "eni": eni, "instance": instance})
}

/// A NAT gateway `ngw-1` in `vpc-1` owning EIP5 (203.0.113.14).
pub fn with_nat_gateway(state: &mut State) {
    ok(state, json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1"}));
    ok(state, json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP5}));
}

pub fn dnat_ip(id: &str, address: &str, private_ip: &str) -> Value {
    json!({"op": "add_dnat_entry", "nat_gateway": "ngw-1", "id": id, "eip": address,
           "mapping": {"type": "ip", "private_ip": private_ip}})
}

pub fn dnat_port(id: &str, address: &str, protocol: &str, port: u16, private_ip: &str) -> Value {
    json!({"op": "add_dnat_entry", "nat_gateway": "ngw-1", "id": id, "eip": address,
           "mapping": {"type": "port", "protocol": protocol, "public_port": port,
                       "private_ip": private_ip, "private_port": 8080}})
}

/// The derived indexes agree with a state rebuilt from the resources alone.
#[track_caller]
pub fn check_indexes(state: &State) {
    check_indexes_against(state, state);
}

/// [`check_indexes`], also probing every id and address that `other` knows (so an index
/// entry left behind for something that no longer exists is caught).
#[track_caller]
pub fn check_indexes_against(state: &State, other: &State) {
    let mut rebuilt = State::default();
    for resource in state.resources() {
        rebuilt.put(resource);
    }
    assert!(rebuilt == *state);
    let mut v4s: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut v6s: BTreeSet<Ipv6Addr> = BTreeSet::new();
    let mut eni_ids: BTreeSet<Id> = BTreeSet::new();
    let mut instance_ids: BTreeSet<Id> = BTreeSet::new();
    let mut gateway_ids: BTreeSet<Id> = BTreeSet::new();
    let mut group_ids: BTreeSet<Id> = BTreeSet::new();
    for s in [state, other] {
        for vswitch in s.vswitches.values() {
            v4s.extend(vswitch.cidr.hosts());
        }
        for eni in s.enis.values() {
            v4s.extend(eni.ipv4s());
            v6s.extend(eni.ipv6.iter().copied());
        }
        eni_ids.extend(s.enis.keys().cloned());
        instance_ids.extend(s.instances.keys().cloned());
        gateway_ids.extend(s.nat_gateways.keys().cloned());
        group_ids.extend(s.security_groups.keys().cloned());
        group_ids.extend(s.enis.values().filter_map(|e| e.security_group.clone()));
    }
    let id = |e: Option<&Eni>| e.map(|e| e.id.clone());
    let address = |e: Option<&Eip>| e.map(|e| e.address);
    for ip in v4s {
        assert_eq!(id(state.owner_of_ipv4(ip)), id(rebuilt.owner_of_ipv4(ip)), "owner of {ip}");
        assert_eq!(
            address(state.eip_of_private_ip(ip)),
            address(rebuilt.eip_of_private_ip(ip)),
            "EIP of {ip}"
        );
    }
    for ip in v6s {
        assert_eq!(id(state.owner_of_ipv6(ip)), id(rebuilt.owner_of_ipv6(ip)), "owner of {ip}");
    }
    for eni in &eni_ids {
        let eips = |s: &State| s.eips_of_eni(eni).map(|e| e.address).collect::<Vec<_>>();
        assert_eq!(eips(state), eips(&rebuilt), "EIPs of ENI {eni}");
    }
    for instance in &instance_ids {
        assert_eq!(
            address(state.eip_of_instance(instance)),
            address(rebuilt.eip_of_instance(instance)),
            "EIP of instance {instance}"
        );
        let enis =
            |s: &State| s.enis_of_instance(instance).map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(enis(state), enis(&rebuilt), "ENIs of instance {instance}");
    }
    for gateway in &gateway_ids {
        let eips =
            |s: &State| s.eips_of_nat_gateway(gateway).map(|e| e.address).collect::<Vec<_>>();
        assert_eq!(eips(state), eips(&rebuilt), "EIPs of NAT gateway {gateway}");
    }
    for group in &group_ids {
        let enis =
            |s: &State| s.enis_of_security_group(group).map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(enis(state), enis(&rebuilt), "ENIs of security group {group}");
    }
}

#[test]
fn the_fixture_is_what_its_documentation_says() {
    let state = world();
    assert_eq!(state.regions.len(), 2);
    assert_eq!(state.eips.len(), 23);
    assert!(state.eips.values().all(|e| e.association.is_none()));
    assert_eq!(inst(&state, "i-1").primary_eni.as_deref(), Some("i-1-eni0"));
    assert_eq!(eni(&state, "i-1-eni0").primary_ip, v4(I1_IP));
    assert_eq!(eni(&state, "i-1-eni0").kind, EniKind::Primary);
    assert_eq!(eni(&state, "eni-1").kind, EniKind::Secondary);
    assert_eq!(eni(&state, "eni-1").instance, None);
    assert_eq!(inst(&state, "i-classic").primary_eni, None);
    assert_eq!(inst(&state, "i-pending").state, InstanceState::Pending);
    assert_eq!(inst(&state, "i-fixed").fixed_public_ip, Some(v4(FIXED_IP)));
    assert_eq!(eip(&state, TOKYO_EIP).region, TOKYO);
    assert_eq!(eip(&state, TOKYO_EIP).bandwidth_mbps, Some(100));
    assert_eq!(state.security_groups["sg-web"].number, 1);
    assert_eq!(state.security_groups["sg-tokyo"].number, 2);
    assert!(state.enis.values().all(|e| e.security_group.is_none()));
}
