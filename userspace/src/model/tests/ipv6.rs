//! IPv6 addresses: inside the vSwitch's IPv6 CIDR (R13), never taken from another ENI
//! (R19), within the type's limit (R20), private until public bandwidth is enabled (R23).

use super::*;

fn assign6(eni: &str, list: &[&str]) -> Value {
    json!({"op": "assign_ipv6", "eni": eni, "ips": list})
}

fn unassign6(eni: &str, list: &[&str]) -> Value {
    json!({"op": "unassign_ipv6", "eni": eni, "ips": list})
}

fn public(ip: &str, enabled: bool) -> Value {
    json!({"op": "set_ipv6_public", "ip": ip, "enabled": enabled})
}

#[test]
fn r13_ipv6_outside_the_vswitch_is_refused() {
    let mut s = world();
    // vsw-b's range, another VPC's range, and a vSwitch without IPv6.
    let request = assign6("eni-1", &["2001:db8:1:2::5"]);
    refused_by(&mut s, request, codes::IP_OUT_OF_RANGE, "R13");
    let request = assign6("eni-1", &["2001:db8:2:1::5"]);
    refused_by(&mut s, request, codes::IP_OUT_OF_RANGE, "R13");
    let request = assign6("eni-gw", &["2001:db8:1:1::5"]);
    refused_by(&mut s, request, codes::IP_OUT_OF_RANGE, "R13");
}

#[test]
fn r13_ipv6_inside_the_vswitch_is_allowed() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5", "2001:db8:1:1::6"]));
    assert_eq!(eni(&s, "eni-1").ipv6, ipv6s(&["2001:db8:1:1::5", "2001:db8:1:1::6"]));
    let owner = s.owner_of_ipv6(v6("2001:db8:1:1::5")).map(|e| e.id.as_str());
    assert_eq!(owner, Some("eni-1"));
    ok(&mut s, assign6("eni-zone-i", &["2001:db8:1:2::5"]));
}

#[test]
fn r13_ipv6_already_on_the_eni_or_listed_twice_is_refused() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]));
    refused(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]), codes::IP_IN_USE);
    let twice = assign6("eni-1", &["2001:db8:1:1::7", "2001:db8:1:1::7"]);
    refused(&mut s, twice, codes::INVALID_ARGUMENT);
    refused(&mut s, assign6("eni-1", &[]), codes::INVALID_ARGUMENT);
}

#[test]
fn r19_ipv6_on_another_eni_is_refused() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]));
    let refusal =
        refused_by(&mut s, assign6("eni-2", &["2001:db8:1:1::5"]), codes::IP_IN_USE, "R19");
    assert!(refusal.message.contains("eni-1"), "{refusal}");
    // All or none: the free one in the same request is not assigned either.
    let request = assign6("eni-2", &["2001:db8:1:1::6", "2001:db8:1:1::5"]);
    refused_by(&mut s, request, codes::IP_IN_USE, "R19");
    assert!(eni(&s, "eni-2").ipv6.is_empty());
}

#[test]
fn r19_ipv6_moves_once_unassigned_from_the_first_eni() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]));
    ok(&mut s, unassign6("eni-1", &["2001:db8:1:1::5"]));
    assert!(s.owner_of_ipv6(v6("2001:db8:1:1::5")).is_none());
    ok(&mut s, assign6("eni-2", &["2001:db8:1:1::5"]));
    assert!(eni(&s, "eni-1").ipv6.is_empty());
    assert_eq!(eni(&s, "eni-2").ipv6, ipv6s(&["2001:db8:1:1::5"]));
}

#[test]
fn r19_unassigning_an_ipv6_not_on_the_eni_is_refused() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]));
    refused(&mut s, unassign6("eni-2", &["2001:db8:1:1::5"]), codes::IP_NOT_ASSIGNED);
    let partly = unassign6("eni-1", &["2001:db8:1:1::5", "2001:db8:1:1::6"]);
    refused(&mut s, partly, codes::IP_NOT_ASSIGNED);
    assert_eq!(eni(&s, "eni-1").ipv6, ipv6s(&["2001:db8:1:1::5"]));
}

#[test]
fn r20_ipv6_beyond_the_limit_is_refused() {
    let mut s = world();
    // t.small: 2 IPv6 addresses per ENI.
    let three = assign6("i-1-eni0", &["2001:db8:1:1::a", "2001:db8:1:1::b", "2001:db8:1:1::c"]);
    refused_by(&mut s, three, codes::ENI_IPV6_LIMIT, "R20");
    ok(&mut s, assign6("i-1-eni0", &["2001:db8:1:1::a", "2001:db8:1:1::b"]));
    refused_by(&mut s, assign6("i-1-eni0", &["2001:db8:1:1::c"]), codes::ENI_IPV6_LIMIT, "R20");
    // t.large allows more.
    let three = assign6("i-2-eni0", &["2001:db8:1:1::d", "2001:db8:1:1::e", "2001:db8:1:1::f"]);
    ok(&mut s, three);
}

#[test]
fn r20_attaching_an_eni_with_too_many_ipv6_is_refused() {
    let mut s = world();
    let three = assign6("eni-1", &["2001:db8:1:1::a", "2001:db8:1:1::b", "2001:db8:1:1::c"]);
    ok(&mut s, three);
    refused_by(&mut s, attach("eni-1", "i-1"), codes::ENI_IPV6_LIMIT, "R20");
    ok(&mut s, attach("eni-1", "i-2"));
}

#[test]
fn r23_ipv6_is_private_until_public_bandwidth_is_enabled() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5", "2001:db8:1:1::6"]));
    assert!(eni(&s, "eni-1").ipv6_public.is_empty());
    let done = ok(&mut s, public("2001:db8:1:1::5", true));
    assert_eq!(done.subject(), Some(Key::new(Kind::Eni, "eni-1")));
    assert_eq!(eni(&s, "eni-1").ipv6_public, ipv6s(&["2001:db8:1:1::5"]));
    // Enabling twice is harmless; disabling makes it private again.
    ok(&mut s, public("2001:db8:1:1::5", true));
    ok(&mut s, public("2001:db8:1:1::5", false));
    assert!(eni(&s, "eni-1").ipv6_public.is_empty());
}

#[test]
fn r23_unassigning_an_ipv6_drops_its_public_bandwidth() {
    let mut s = world();
    ok(&mut s, assign6("eni-1", &["2001:db8:1:1::5"]));
    ok(&mut s, public("2001:db8:1:1::5", true));
    ok(&mut s, unassign6("eni-1", &["2001:db8:1:1::5"]));
    assert!(eni(&s, "eni-1").ipv6_public.is_empty());
    // Assigned again, elsewhere, it starts private.
    ok(&mut s, assign6("eni-2", &["2001:db8:1:1::5"]));
    assert!(eni(&s, "eni-2").ipv6_public.is_empty());
}

#[test]
fn r23_public_bandwidth_for_an_unassigned_ipv6_is_refused() {
    let mut s = world();
    refused(&mut s, public("2001:db8:1:1::5", true), codes::IP_NOT_ASSIGNED);
    refused(&mut s, public("2001:db8:1:1::5", false), codes::IP_NOT_ASSIGNED);
}

#[test]
fn r23_ipv6_is_never_an_eip_target() {
    // EIPs are IPv4 and map to IPv4 addresses: an IPv6 address is not a valid target.
    let request = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "2001:db8:1:1::5"});
    assert!(serde_json::from_value::<Request>(request).is_err());
    let request = json!({"op": "allocate_eip", "address": "2001:db8:1:1::5"});
    assert!(serde_json::from_value::<Request>(request).is_err());
}
