//! ENIs and their private IPv4s: attachment (R12, R14, R20, R21), addresses (R13-R18, R20)
//! and deletion (R04).

use super::*;

fn unassign(eni: &str, list: &[&str]) -> Value {
    json!({"op": "unassign_private_ips", "eni": eni, "ips": list})
}

fn reassign(eni: &str, list: &[&str]) -> Value {
    json!({"op": "assign_private_ips", "eni": eni, "ips": list, "allow_reassignment": true})
}

fn detach(eni: &str) -> Value {
    json!({"op": "detach_eni", "eni": eni})
}

// R04: deleting an ENI disassociates its EIPs; they stay allocated.

#[test]
fn r04_deleting_an_eni_leaves_its_eips_available() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    ok(&mut s, associate_mode(EIP3, "eni-2", "multi-eip"));
    ok(&mut s, json!({"op": "delete_eni", "eni": "eni-1"}));
    ok(&mut s, json!({"op": "delete_eni", "eni": "eni-2"}));
    for address in [EIP1, EIP2, EIP3] {
        assert_eq!(association(&s, address), None, "{address}");
    }
    assert!(!s.enis.contains_key("eni-1"));
    assert!(s.owner_of_ipv4(v4("10.0.1.101")).is_none());
    assert!(s.eip_of_private_ip(v4(ENI1_IP)).is_none());
}

#[test]
fn r04_deleting_an_attached_or_primary_eni_is_refused() {
    let mut s = world();
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, attach("eni-1", "i-1"));
    refused(&mut s, json!({"op": "delete_eni", "eni": "eni-1"}), codes::ENI_ATTACHED);
    let primary = json!({"op": "delete_eni", "eni": "i-1-eni0"});
    refused_by(&mut s, primary, codes::ENI_KIND, "R14");
    assert_eq!(association(&s, EIP1), nat("eni-1", ENI1_IP));
}

#[test]
fn r04_deleting_an_eni_that_a_dnat_entry_targets_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_ip("to-eni", EIP5, ENI1_IP));
    refused(&mut s, json!({"op": "delete_eni", "eni": "eni-1"}), codes::DEPENDENCY_VIOLATION);
}

// R12: an ENI and its instance are in one region and one zone.

#[test]
fn r12_eni_attached_to_an_instance_in_another_zone_is_refused() {
    let mut s = world();
    refused_by(&mut s, attach("eni-zone-i", "i-1"), codes::ZONE_MISMATCH, "R12");
    refused_by(&mut s, attach("eni-1", "i-zone-i"), codes::ZONE_MISMATCH, "R12");
}

#[test]
fn r12_eni_attached_to_an_instance_in_another_region_is_refused() {
    let mut s = world();
    refused_by(&mut s, attach("eni-tokyo", "i-1"), codes::REGION_MISMATCH, "R12");
    refused_by(&mut s, attach("eni-1", "i-tokyo"), codes::REGION_MISMATCH, "R12");
}

#[test]
fn r12_instance_and_its_vswitch_in_another_zone_or_region_are_refused() {
    let mut s = world();
    let zone = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                      "zone": ZONE_I, "instance_type": "t.small", "vswitch": "vsw-a"});
    refused_by(&mut s, zone, codes::ZONE_MISMATCH, "R12");
    let region = json!({"op": "create_instance", "id": "i-new", "region": TOKYO,
                        "zone": ZONE_H, "instance_type": "t.small", "vswitch": "vsw-a"});
    refused_by(&mut s, region, codes::REGION_MISMATCH, "R12");
}

#[test]
fn r12_eni_and_instance_in_the_same_region_and_zone_are_allowed() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    ok(&mut s, attach("eni-zone-i", "i-zone-i"));
    ok(&mut s, attach("eni-tokyo", "i-tokyo"));
    assert_eq!(eni(&s, "eni-zone-i").instance.as_deref(), Some("i-zone-i"));
    let enis: Vec<&str> = s.enis_of_instance("i-1").map(|e| e.id.as_str()).collect();
    assert_eq!(enis, ["eni-1", "i-1-eni0"]);
}

#[test]
fn attaching_checks_the_eni_and_the_instance() {
    let mut s = world();
    // Another VPC in the same region and zone.
    refused(&mut s, attach("eni-gw", "i-1"), codes::NETWORK_MISMATCH);
    refused(&mut s, attach("eni-1", "i-classic"), codes::INSTANCE_NETWORK_CLASSIC);
    refused(&mut s, attach("eni-1", "i-pending"), codes::INSTANCE_STATE);
    refused(&mut s, attach("eni-1", "i-none"), "INSTANCE_NOT_FOUND");
    refused(&mut s, attach("eni-none", "i-1"), "ENI_NOT_FOUND");
    ok(&mut s, attach("eni-1", "i-stopped"));
}

// R13: addresses inside the vSwitch, unique.

#[test]
fn r13_private_ip_outside_the_vswitch_is_refused() {
    let mut s = world();
    let outside = json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                         "primary_ip": "10.0.2.50"});
    refused_by(&mut s, outside, codes::IP_OUT_OF_RANGE, "R13");
    refused_by(&mut s, assign("eni-1", &["10.0.2.50"]), codes::IP_OUT_OF_RANGE, "R13");
    refused_by(&mut s, assign("eni-1", &["192.168.0.5"]), codes::IP_OUT_OF_RANGE, "R13");
}

#[test]
fn r13_reserved_addresses_of_the_vswitch_are_refused() {
    let mut s = world();
    // The network address, the vSwitch's gateway and the broadcast address.
    for ip in ["10.0.1.0", "10.0.1.1", "10.0.1.255"] {
        refused_by(&mut s, assign("eni-1", &[ip]), codes::IP_OUT_OF_RANGE, "R13");
        let create = json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                            "primary_ip": ip});
        refused_by(&mut s, create, codes::IP_OUT_OF_RANGE, "R13");
    }
}

#[test]
fn r13_private_ip_in_use_is_refused() {
    let mut s = world();
    let taken = json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                       "primary_ip": I1_IP});
    refused_by(&mut s, taken, codes::IP_IN_USE, "R13");
    refused(&mut s, assign("eni-1", &[ENI1_IP]), codes::IP_IN_USE);
}

#[test]
fn r13_free_address_inside_the_vswitch_is_allowed() {
    let mut s = world();
    let create = json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                        "primary_ip": "10.0.1.254", "security_group": "sg-web"});
    ok(&mut s, create);
    let created = eni(&s, "eni-new");
    assert_eq!((created.kind, created.primary_ip), (EniKind::Secondary, v4("10.0.1.254")));
    assert_eq!(created.security_group.as_deref(), Some("sg-web"));
    ok(&mut s, assign("eni-new", &["10.0.1.2"]));
    // Picked: the lowest free address.
    ok(&mut s, json!({"op": "create_eni", "id": "eni-picked", "vswitch": "vsw-a"}));
    assert_eq!(eni(&s, "eni-picked").primary_ip, v4("10.0.1.3"));
}

// R14: the primary ENI stays with its instance, and its primary address stays too.

#[test]
fn r14_primary_eni_cannot_be_detached() {
    let mut s = world();
    refused_by(&mut s, detach("i-1-eni0"), codes::ENI_KIND, "R14");
}

#[test]
fn r14_primary_eni_cannot_be_attached_elsewhere() {
    let mut s = world();
    refused_by(&mut s, attach("i-1-eni0", "i-2"), codes::ENI_KIND, "R14");
}

#[test]
fn r14_primary_ip_cannot_be_unassigned() {
    let mut s = world();
    refused_by(&mut s, unassign("i-1-eni0", &[I1_IP]), codes::PRIMARY_IP, "R14");
    // Nor the primary address of a secondary ENI.
    refused_by(&mut s, unassign("eni-1", &[ENI1_IP]), codes::PRIMARY_IP, "R14");
}

#[test]
fn r14_primary_ip_cannot_be_moved() {
    let mut s = world();
    refused_by(&mut s, reassign("eni-1", &[I1_IP]), codes::PRIMARY_IP, "R14");
    refused_by(&mut s, reassign("eni-1", &[ENI2_IP]), codes::PRIMARY_IP, "R14");
}

#[test]
fn r14_secondary_eni_can_be_detached() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    ok(&mut s, detach("eni-1"));
    assert_eq!(eni(&s, "eni-1").instance, None);
    assert_eq!(s.enis_of_instance("i-1").count(), 1);
}

// R15: secondary addresses change on a running or stopped instance, or a detached ENI.

#[test]
fn r15_secondary_ips_of_a_pending_instance_are_refused() {
    let mut s = world();
    let request = assign("i-pending-eni0", &["10.0.1.41"]);
    refused_by(&mut s, request, codes::INSTANCE_STATE, "R15");
    let count = json!({"op": "assign_private_ips", "eni": "i-pending-eni0", "count": 1});
    refused_by(&mut s, count, codes::INSTANCE_STATE, "R15");
    let ipv6 = json!({"op": "assign_ipv6", "eni": "i-pending-eni0",
                      "ips": ["2001:db8:1:1::40"]});
    refused_by(&mut s, ipv6, codes::INSTANCE_STATE, "R15");
}

#[test]
fn r15_running_stopped_and_detached_enis_are_allowed() {
    let mut s = world();
    for (eni_id, ip) in
        [("i-1-eni0", "10.0.1.11"), ("i-stopped-eni0", "10.0.1.31"), ("eni-1", "10.0.1.101")]
    {
        ok(&mut s, assign(eni_id, &[ip]));
        assert!(eni(&s, eni_id).secondary_ips.contains(&v4(ip)));
        ok(&mut s, unassign(eni_id, &[ip]));
        assert!(eni(&s, eni_id).secondary_ips.is_empty());
    }
}

// R16: several addresses in one request: all or none.

#[test]
fn r16_one_bad_address_assigns_none() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    // Out of range, last in the list.
    let request = assign("eni-1", &["10.0.1.101", "10.0.1.102", "10.0.2.5"]);
    refused_by(&mut s, request, codes::IP_OUT_OF_RANGE, "R13");
    // Another ENI's primary address, in the middle.
    let request = assign("eni-1", &["10.0.1.101", I1_IP, "10.0.1.102"]);
    refused_by(&mut s, request, codes::PRIMARY_IP, "R14");
    // Another ENI's secondary address, without allow_reassignment.
    let request = assign("eni-1", &["10.0.1.101", "10.0.1.111"]);
    refused_by(&mut s, request, codes::IP_IN_USE, "R17");
    // An address listed twice.
    refused(&mut s, assign("eni-1", &["10.0.1.101", "10.0.1.101"]), codes::INVALID_ARGUMENT);
    assert!(eni(&s, "eni-1").secondary_ips.is_empty());
    assert!(s.owner_of_ipv4(v4("10.0.1.101")).is_none());
}

#[test]
fn r16_too_many_addresses_assign_none() {
    let mut s = world();
    // t.small: 3 private IPv4s per ENI, the primary one included.
    let request = assign("i-1-eni0", &["10.0.1.11", "10.0.1.12", "10.0.1.13"]);
    refused_by(&mut s, request, codes::ENI_PRIVATE_IP_LIMIT, "R20");
    let request = json!({"op": "assign_private_ips", "eni": "i-1-eni0",
                         "ips": ["10.0.1.11"], "count": 2});
    refused_by(&mut s, request, codes::ENI_PRIVATE_IP_LIMIT, "R20");
    assert!(eni(&s, "i-1-eni0").secondary_ips.is_empty());
}

#[test]
fn r16_count_beyond_the_free_addresses_assigns_none() {
    let mut s = world();
    // A /29 has 5 usable addresses (network, gateway and broadcast are kept).
    ok(
        &mut s,
        json!({"op": "create_vswitch", "id": "vsw-tiny", "vpc": "vpc-1",
                      "zone": ZONE_H, "cidr": "10.0.9.0/29"}),
    );
    ok(&mut s, json!({"op": "create_eni", "id": "eni-tiny", "vswitch": "vsw-tiny"}));
    assert_eq!(eni(&s, "eni-tiny").primary_ip, v4("10.0.9.2"));
    let request = json!({"op": "assign_private_ips", "eni": "eni-tiny", "count": 5});
    refused(&mut s, request, codes::NO_FREE_IP);
    let request = json!({"op": "assign_private_ips", "eni": "eni-tiny", "count": 4});
    ok(&mut s, request);
    assert_eq!(
        eni(&s, "eni-tiny").secondary_ips,
        ips(&["10.0.9.3", "10.0.9.4", "10.0.9.5", "10.0.9.6"])
    );
    let request = json!({"op": "create_eni", "id": "eni-tiny2", "vswitch": "vsw-tiny"});
    refused(&mut s, request, codes::NO_FREE_IP);
}

#[test]
fn r16_several_addresses_are_assigned_together() {
    let mut s = world();
    let request = json!({"op": "assign_private_ips", "eni": "eni-1",
                         "ips": ["10.0.1.101", "10.0.1.3"], "count": 2});
    ok(&mut s, request);
    // The picked ones skip the listed ones.
    let expected = ips(&["10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.101"]);
    assert_eq!(eni(&s, "eni-1").secondary_ips, expected);
    for ip in expected {
        assert_eq!(s.owner_of_ipv4(ip).map(|e| e.id.as_str()), Some("eni-1"));
    }
    let nothing = json!({"op": "assign_private_ips", "eni": "eni-1"});
    refused(&mut s, nothing, codes::INVALID_ARGUMENT);
}

// R17: moving a secondary address takes allow_reassignment, and its EIP follows it.

#[test]
fn r17_moving_an_assigned_ip_without_allow_reassignment_is_refused() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    let refusal = refused_by(&mut s, assign("eni-1", &["10.0.1.111"]), codes::IP_IN_USE, "R17");
    assert!(refusal.message.contains("allow-reassignment"), "{refusal}");
}

#[test]
fn r17_reassigned_ip_takes_its_eip_to_the_new_eni() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111", "10.0.1.112"]));
    ok(&mut s, associate_eni(EIP1, "eni-2", "10.0.1.111"));
    ok(&mut s, associate_eni(EIP2, "eni-2", ENI2_IP));
    ok(&mut s, attach("eni-1", "i-2"));
    ok(&mut s, reassign("eni-1", &["10.0.1.111"]));
    assert_eq!(eni(&s, "eni-2").secondary_ips, ips(&["10.0.1.112"]));
    assert_eq!(eni(&s, "eni-1").secondary_ips, ips(&["10.0.1.111"]));
    assert_eq!(s.owner_of_ipv4(v4("10.0.1.111")).map(|e| e.id.as_str()), Some("eni-1"));
    assert_eq!(association(&s, EIP1), nat("eni-1", "10.0.1.111"));
    assert_eq!(eips_on(&s, "eni-1"), [EIP1]);
    assert_eq!(eips_on(&s, "eni-2"), [EIP2]);
    assert_eq!(s.eip_of_private_ip(v4("10.0.1.111")).map(|e| e.address), Some(v4(EIP1)));
}

#[test]
fn r17_reassigned_ip_without_an_eip_moves_alone() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    ok(&mut s, associate_eni(EIP1, "eni-2", ENI2_IP));
    ok(&mut s, reassign("eni-1", &["10.0.1.111"]));
    assert_eq!(eni(&s, "eni-1").secondary_ips, ips(&["10.0.1.111"]));
    assert_eq!(association(&s, EIP1), nat("eni-2", ENI2_IP));
}

#[test]
fn r17_eip_that_cannot_follow_its_ip_refuses_the_move() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    ok(&mut s, associate_eni(EIP1, "eni-2", "10.0.1.111"));
    // The new ENI shows a cut-through EIP: a NAT-mode EIP cannot join it. The refusal
    // comes after the addresses have moved inside the transaction; all of it rolls back.
    ok(&mut s, associate_mode(EIP2, "eni-1", "cut-through"));
    refused(&mut s, reassign("eni-1", &["10.0.1.111"]), codes::ENI_MODE_CONFLICT);
    // A primary ENI carries at most one EIP, and an instance's direct EIP is that one.
    ok(&mut s, associate_instance(EIP3, "i-2"));
    refused(&mut s, reassign("i-2-eni0", &["10.0.1.111"]), codes::ENI_EIP_LIMIT);
    assert_eq!(association(&s, EIP1), nat("eni-2", "10.0.1.111"));
}

// R18: unassigning an address disassociates its EIP.

#[test]
fn r18_unassigning_a_secondary_ip_disassociates_its_eip() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101", "10.0.1.102"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", "10.0.1.101"));
    ok(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP));
    ok(&mut s, unassign("eni-1", &["10.0.1.101", "10.0.1.102"]));
    // Available, still allocated; the primary address keeps its EIP.
    assert_eq!(association(&s, EIP1), None);
    assert_eq!(association(&s, EIP2), nat("eni-1", ENI1_IP));
    assert!(s.eip_of_private_ip(v4("10.0.1.101")).is_none());
    assert!(eni(&s, "eni-1").secondary_ips.is_empty());
    assert_eq!(eips_on(&s, "eni-1"), [EIP2]);
}

#[test]
fn r18_unassigning_an_ip_not_on_the_eni_is_refused() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", "10.0.1.101"));
    refused(&mut s, unassign("eni-1", &["10.0.1.102"]), codes::IP_NOT_ASSIGNED);
    // One good address with an EIP and one bad one: nothing changes, the EIP stays.
    refused(&mut s, unassign("eni-1", &["10.0.1.101", I2_IP]), codes::IP_NOT_ASSIGNED);
    refused(&mut s, unassign("eni-1", &[]), codes::INVALID_ARGUMENT);
    assert_eq!(association(&s, EIP1), nat("eni-1", "10.0.1.101"));
}

#[test]
fn r18_unassigning_a_dnat_target_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, "10.0.1.101"));
    refused(&mut s, unassign("eni-1", &["10.0.1.101"]), codes::DEPENDENCY_VIOLATION);
}

// R20: ENIs per instance, private IPv4s per ENI.

#[test]
fn r20_eni_beyond_the_instance_type_limit_is_refused() {
    let mut s = world();
    // t.small: 2 ENIs, the primary one included.
    ok(&mut s, attach("eni-1", "i-1"));
    refused_by(&mut s, attach("eni-2", "i-1"), codes::INSTANCE_ENI_LIMIT, "R20");
    // After a detach there is room again.
    ok(&mut s, detach("eni-1"));
    ok(&mut s, attach("eni-2", "i-1"));
}

#[test]
fn r20_private_ipv4_beyond_the_limit_is_refused() {
    let mut s = world();
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11", "10.0.1.12"]));
    refused_by(&mut s, assign("i-1-eni0", &["10.0.1.13"]), codes::ENI_PRIVATE_IP_LIMIT, "R20");
    // A larger type allows more.
    ok(&mut s, assign("i-2-eni0", &["10.0.1.21", "10.0.1.22", "10.0.1.23"]));
}

#[test]
fn r20_attaching_an_eni_with_too_many_addresses_is_refused() {
    let mut s = world();
    // Detached, the ENI follows no instance type.
    ok(&mut s, assign("eni-1", &["10.0.1.101", "10.0.1.102", "10.0.1.103"]));
    refused_by(&mut s, attach("eni-1", "i-1"), codes::ENI_PRIVATE_IP_LIMIT, "R20");
    ok(&mut s, attach("eni-1", "i-2"));
}

#[test]
fn r20_moving_an_address_onto_a_full_eni_is_refused() {
    let mut s = world();
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11", "10.0.1.12"]));
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    let request = reassign("i-1-eni0", &["10.0.1.111"]);
    refused_by(&mut s, request, codes::ENI_PRIVATE_IP_LIMIT, "R20");
}

// R21: a secondary ENI keeps its addresses and EIPs across detach and attach.

#[test]
fn r21_detach_and_attach_to_another_instance_keeps_ips_ipv6_and_eips() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, json!({"op": "assign_ipv6", "eni": "eni-1", "ips": ["2001:db8:1:1::101"]}));
    ok(&mut s, json!({"op": "set_ipv6_public", "ip": "2001:db8:1:1::101", "enabled": true}));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    let before = eni(&s, "eni-1").clone();
    let eips_before: Vec<Option<Association>> =
        [EIP1, EIP2].iter().map(|a| association(&s, a)).collect();

    ok(&mut s, detach("eni-1"));
    ok(&mut s, attach("eni-1", "i-2"));

    let after = eni(&s, "eni-1");
    assert_eq!(after.instance.as_deref(), Some("i-2"));
    assert_eq!(after.primary_ip, before.primary_ip);
    assert_eq!(after.secondary_ips, before.secondary_ips);
    assert_eq!(after.ipv6, ipv6s(&["2001:db8:1:1::101"]));
    assert_eq!(after.ipv6_public, before.ipv6_public);
    let eips_after: Vec<Option<Association>> =
        [EIP1, EIP2].iter().map(|a| association(&s, a)).collect();
    assert_eq!(eips_after, eips_before);
    assert_eq!(s.enis_of_instance("i-1").count(), 1);
    let enis: Vec<&str> = s.enis_of_instance("i-2").map(|e| e.id.as_str()).collect();
    assert_eq!(enis, ["eni-1", "i-2-eni0"]);
}

#[test]
fn r21_visible_mode_eips_move_with_the_eni() {
    let mut s = world();
    ok(&mut s, associate_mode(EIP1, "eni-1", "cut-through"));
    ok(&mut s, associate_mode(EIP2, "eni-2", "multi-eip"));
    ok(&mut s, attach("eni-1", "i-1"));
    ok(&mut s, attach("eni-2", "i-2"));
    ok(&mut s, detach("eni-1"));
    ok(&mut s, attach("eni-1", "i-stopped"));
    assert_eq!(association(&s, EIP1), Some(Association::CutThrough { eni: "eni-1".into() }));
    assert_eq!(association(&s, EIP2), Some(Association::MultiEip { eni: "eni-2".into() }));
}

#[test]
fn r21_attaching_an_attached_eni_is_refused() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    refused(&mut s, attach("eni-1", "i-2"), codes::ENI_ATTACHED);
    ok(&mut s, detach("eni-1"));
    refused(&mut s, detach("eni-1"), codes::ENI_NOT_ATTACHED);
}

// R08 through attachment: an ENI brings its EIPs and addresses along (R21).

#[test]
fn r08_attaching_an_eni_with_an_eip_to_a_dnat_target_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I2_IP));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    refused_by(&mut s, attach("eni-1", "i-2"), codes::DNAT_CONFLICT, "R08");
    // The other way round: the ENI is the DNAT target, the instance has the EIP.
    ok(&mut s, dnat_port("ssh", EIP5, "tcp", 22, ENI2_IP));
    ok(&mut s, associate_instance(EIP2, "i-1"));
    refused_by(&mut s, attach("eni-2", "i-1"), codes::DNAT_CONFLICT, "R08");
    // Without the EIP, fine.
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}));
    ok(&mut s, attach("eni-1", "i-2"));
}

#[test]
fn r08_moving_an_address_with_its_eip_to_a_dnat_target_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I2_IP));
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    ok(&mut s, associate_eni(EIP1, "eni-2", "10.0.1.111"));
    refused_by(&mut s, reassign("i-2-eni0", &["10.0.1.111"]), codes::DNAT_CONFLICT, "R08");
}
