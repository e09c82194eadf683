//! Instances: when they take an EIP (R07), their primary ENI and address (R14), stop and
//! start (R22), and what releasing one does to its EIPs (R04).

use super::*;

fn release(instance: &str) -> Value {
    json!({"op": "release_instance", "id": instance})
}

// R07: the four conditions under which an instance takes no EIP.

#[test]
fn r07_instance_in_another_region_is_refused() {
    let mut s = world();
    refused_by(&mut s, associate_instance(TOKYO_EIP, "i-1"), codes::REGION_MISMATCH, "R07");
}

#[test]
fn r07_instance_with_a_fixed_public_ip_is_refused() {
    let mut s = world();
    let refusal = refused_by(
        &mut s,
        associate_instance(EIP1, "i-fixed"),
        codes::INSTANCE_HAS_PUBLIC_IP,
        "R07",
    );
    assert!(refusal.message.contains(FIXED_IP), "{refusal}");
    // Not through its primary ENI or its primary address either.
    let via_eni = associate_eni(EIP1, "i-fixed-eni0", "10.0.1.50");
    refused_by(&mut s, via_eni, codes::INSTANCE_HAS_PUBLIC_IP, "R07");
    let via_ip = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "10.0.1.50"});
    refused_by(&mut s, via_ip, codes::INSTANCE_HAS_PUBLIC_IP, "R07");
}

#[test]
fn r07_instance_with_another_eip_is_refused() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    // R06 is the rule that says "one"; R07 lists it among the refusals.
    refused_by(&mut s, associate_instance(EIP2, "i-1"), codes::INSTANCE_HAS_PUBLIC_IP, "R06");
    // The same instance, through its primary ENI: that ENI carries at most one EIP.
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11"]));
    refused(&mut s, associate_eni(EIP2, "i-1-eni0", "10.0.1.11"), codes::ENI_EIP_LIMIT);
}

#[test]
fn r07_instance_whose_primary_eni_has_an_eip_is_refused() {
    let mut s = world();
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11"]));
    ok(&mut s, associate_eni(EIP1, "i-1-eni0", "10.0.1.11"));
    let refusal =
        refused_by(&mut s, associate_instance(EIP2, "i-1"), codes::INSTANCE_HAS_PUBLIC_IP, "R07");
    assert!(refusal.message.contains(EIP1), "{refusal}");
    assert_eq!(eips_on(&s, "i-1-eni0"), [EIP1]);
}

#[test]
fn r07_classic_instance_is_refused() {
    let mut s = world();
    let request = associate_instance(EIP1, "i-classic");
    refused_by(&mut s, request, codes::INSTANCE_NETWORK_CLASSIC, "R07");
}

#[test]
fn r07_pending_instance_is_refused() {
    let mut s = world();
    refused_by(&mut s, associate_instance(EIP1, "i-pending"), codes::INSTANCE_STATE, "R07");
    // Not through its primary ENI or its primary address either.
    let via_eni = associate_eni(EIP1, "i-pending-eni0", "10.0.1.40");
    refused_by(&mut s, via_eni, codes::INSTANCE_STATE, "R07");
    let via_ip = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "10.0.1.40"});
    refused_by(&mut s, via_ip, codes::INSTANCE_STATE, "R07");
    // Once it runs, it may.
    ok(&mut s, json!({"op": "start_instance", "id": "i-pending"}));
    ok(&mut s, associate_instance(EIP1, "i-pending"));
}

#[test]
fn r07_running_vpc_instance_is_allowed() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    assert_eq!(s.eip_of_instance("i-1").map(|e| e.address), Some(v4(EIP1)));
}

#[test]
fn r07_stopped_instance_is_allowed() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-stopped"));
    assert_eq!(s.eip_of_instance("i-stopped").map(|e| e.address), Some(v4(EIP1)));
}

// R14: the primary ENI and its primary address.

#[test]
fn r14_primary_ip_is_assigned_at_creation() {
    let mut s = world();
    // Not given: the lowest usable address of the vSwitch (.0 is the network, .1 the
    // vSwitch's gateway).
    let create = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                        "zone": ZONE_I, "instance_type": "t.small", "vswitch": "vsw-b"});
    let done = ok(&mut s, create);
    assert_eq!(done.subject(), Some(Key::new(Kind::Instance, "i-new")));
    let instance = inst(&s, "i-new");
    assert_eq!(instance.primary_eni.as_deref(), Some("i-new-eni0"));
    assert_eq!(instance.state, InstanceState::Running);
    let primary = eni(&s, "i-new-eni0");
    assert_eq!(primary.kind, EniKind::Primary);
    assert_eq!(primary.primary_ip, v4("10.0.2.2"));
    assert_eq!(primary.instance.as_deref(), Some("i-new"));
    assert_eq!(primary.security_group, None, "no group named: unfiltered");
    // The next one gets the next address.
    let create = json!({"op": "create_instance", "id": "i-new2", "region": HANGZHOU,
                        "zone": ZONE_I, "instance_type": "t.small", "vswitch": "vsw-b",
                        "security_group": "sg-web"});
    ok(&mut s, create);
    assert_eq!(eni(&s, "i-new2-eni0").primary_ip, v4("10.0.2.3"));
    assert_eq!(eni(&s, "i-new2-eni0").security_group.as_deref(), Some("sg-web"));
}

#[test]
fn r14_vpc_instance_needs_a_vswitch_and_classic_takes_none() {
    let mut s = world();
    let no_vswitch = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                            "zone": ZONE_H, "instance_type": "t.small"});
    refused(&mut s, no_vswitch, codes::INVALID_ARGUMENT);
    let classic_vswitch = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                                 "zone": ZONE_H, "instance_type": "t.small",
                                 "network": "classic", "vswitch": "vsw-a"});
    refused(&mut s, classic_vswitch, codes::INVALID_ARGUMENT);
    let classic_ip = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                            "zone": ZONE_H, "instance_type": "t.small",
                            "network": "classic", "private_ip": "10.0.1.90"});
    refused(&mut s, classic_ip, codes::INVALID_ARGUMENT);
}

#[test]
fn r14_primary_ip_taken_or_outside_the_vswitch_is_refused() {
    let mut s = world();
    let taken = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                       "zone": ZONE_H, "instance_type": "t.small", "vswitch": "vsw-a",
                       "private_ip": ENI1_IP});
    refused_by(&mut s, taken, codes::IP_IN_USE, "R13");
    let outside = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                         "zone": ZONE_H, "instance_type": "t.small", "vswitch": "vsw-a",
                         "private_ip": "10.0.2.90"});
    refused_by(&mut s, outside, codes::IP_OUT_OF_RANGE, "R13");
}

#[test]
fn r14_primary_eni_goes_with_its_instance() {
    let mut s = world();
    ok(&mut s, release("i-1"));
    assert!(!s.instances.contains_key("i-1"));
    assert!(!s.enis.contains_key("i-1-eni0"));
    assert!(s.owner_of_ipv4(v4(I1_IP)).is_none());
    // The address is free again.
    ok(
        &mut s,
        json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                      "primary_ip": I1_IP}),
    );
}

// R22: stop and start keep addresses and EIPs; a fixed public IP goes with the instance.

#[test]
fn r22_stop_and_start_keep_private_ips_and_eips() {
    let mut s = world();
    ok(&mut s, assign("i-2-eni0", &["10.0.1.21"]));
    ok(&mut s, json!({"op": "assign_ipv6", "eni": "i-2-eni0", "ips": ["2001:db8:1:1::21"]}));
    ok(&mut s, json!({"op": "set_ipv6_public", "ip": "2001:db8:1:1::21", "enabled": true}));
    ok(&mut s, associate_instance(EIP1, "i-2"));
    ok(&mut s, attach("eni-1", "i-2"));
    ok(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP));
    ok(&mut s, attach("eni-2", "i-2"));
    ok(&mut s, associate_mode(EIP3, "eni-2", "multi-eip"));
    let running = s.clone();

    ok(&mut s, json!({"op": "stop_instance", "id": "i-2"}));
    assert_eq!(inst(&s, "i-2").state, InstanceState::Stopped);
    let mut expected = running.clone();
    expected.instances.get_mut("i-2").unwrap().state = InstanceState::Stopped;
    assert!(s == expected, "stopping changed more than the state");
    // A stopped instance's addresses can still change (R15).
    ok(&mut s, assign("i-2-eni0", &["10.0.1.22"]));
    ok(&mut s, json!({"op": "unassign_private_ips", "eni": "i-2-eni0", "ips": ["10.0.1.22"]}));

    ok(&mut s, json!({"op": "start_instance", "id": "i-2"}));
    assert!(s == running, "stop and start changed more than the state");
    assert_eq!(s.eip_of_instance("i-2").map(|e| e.address), Some(v4(EIP1)));
    assert_eq!(eips_on(&s, "eni-1"), [EIP2]);
    assert_eq!(eips_on(&s, "eni-2"), [EIP3]);
}

#[test]
fn r22_stopping_a_pending_instance_is_refused() {
    let mut s = world();
    refused(&mut s, json!({"op": "stop_instance", "id": "i-pending"}), codes::INSTANCE_STATE);
    refused(&mut s, json!({"op": "stop_instance", "id": "i-none"}), "INSTANCE_NOT_FOUND");
}

#[test]
fn r22_fixed_public_ip_is_lost_on_release_but_an_eip_is_not() {
    let mut s = world();
    // While i-fixed holds it, the fixed public IP is no EIP to allocate.
    let allocate = json!({"op": "allocate_eip", "address": FIXED_IP, "region": HANGZHOU});
    refused(&mut s, allocate.clone(), codes::INVALID_ARGUMENT);
    ok(&mut s, release("i-fixed"));
    assert!(s.instances.values().all(|i| i.fixed_public_ip != Some(v4(FIXED_IP))));
    // Gone with the instance: the address is free.
    ok(&mut s, allocate);
    // An EIP outlives its instance (R04).
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, release("i-1"));
    assert_eq!(association(&s, EIP1), None);
}

#[test]
fn r22_a_release_refused_later_in_its_batch_keeps_the_fixed_public_ip() {
    let mut s = world();
    let batch = requests(vec![
        release("i-fixed"),
        // R07: a classic instance takes no EIP.
        associate_instance(EIP1, "i-classic"),
    ]);
    s.run_all(&batch).expect_err("the second request breaks R07");
    let allocate = json!({"op": "allocate_eip", "address": FIXED_IP, "region": HANGZHOU});
    refused(&mut s, allocate, codes::INVALID_ARGUMENT);
}

#[test]
fn r22_fixed_public_ip_is_neither_an_eip_nor_shared() {
    let mut s = world();
    let create = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                        "zone": ZONE_H, "instance_type": "t.small", "vswitch": "vsw-a",
                        "fixed_public_ip": EIP1});
    refused(&mut s, create, codes::INVALID_ARGUMENT);
    // Nor another instance's fixed public IP.
    let twice = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                       "zone": ZONE_H, "instance_type": "t.small", "vswitch": "vsw-a",
                       "fixed_public_ip": FIXED_IP});
    refused(&mut s, twice, codes::INVALID_ARGUMENT);
}

// R04: releasing an instance disassociates its EIPs; they stay allocated.

#[test]
fn r04_releasing_an_instance_leaves_its_eips_available() {
    let mut s = world();
    ok(&mut s, assign("i-2-eni0", &["10.0.1.21"]));
    ok(&mut s, associate_instance(EIP1, "i-2"));
    ok(&mut s, attach("eni-1", "i-2"));
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    ok(&mut s, release("i-2"));
    // The direct EIP is available, not released.
    assert_eq!(association(&s, EIP1), None);
    assert!(s.eip_of_private_ip(v4(I2_IP)).is_none());
    // The secondary ENI is detached and keeps its addresses and EIP (R21).
    let kept = eni(&s, "eni-1");
    assert_eq!(kept.instance, None);
    assert_eq!(kept.secondary_ips, ips(&["10.0.1.101"]));
    assert_eq!(association(&s, EIP2), nat("eni-1", "10.0.1.101"));
    // The addresses of the primary ENI are free.
    assert!(s.owner_of_ipv4(v4("10.0.1.21")).is_none());
    assert_eq!(s.enis_of_instance("i-2").count(), 0);
}

#[test]
fn r04_releasing_an_instance_whose_primary_eni_has_an_eip_leaves_it_available() {
    let mut s = world();
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11"]));
    ok(&mut s, associate_eni(EIP1, "i-1-eni0", "10.0.1.11"));
    ok(&mut s, release("i-1"));
    assert_eq!(association(&s, EIP1), None);
    assert!(eips_on(&s, "i-1-eni0").is_empty());
}

#[test]
fn r04_releasing_an_instance_that_nat_entries_use_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    refused(&mut s, release("i-1"), codes::DEPENDENCY_VIOLATION);
    let snat = json!({"op": "add_snat_entry", "nat_gateway": "ngw-1", "id": "s-2",
                      "source": {"type": "instance", "value": "i-2"}, "eips": [EIP5]});
    ok(&mut s, snat);
    refused(&mut s, release("i-2"), codes::DEPENDENCY_VIOLATION);
    ok(&mut s, json!({"op": "remove_snat_entry", "nat_gateway": "ngw-1", "id": "s-2"}));
    ok(&mut s, release("i-2"));
}

#[test]
fn instance_ids_are_checked() {
    let mut s = world();
    let create = |id: &str| {
        json!({"op": "create_instance", "id": id, "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "network": "classic"})
    };
    refused(&mut s, create("I-Upper"), codes::INVALID_ARGUMENT);
    refused(&mut s, create(""), codes::INVALID_ARGUMENT);
    refused(&mut s, create("i-1"), "INSTANCE_ALREADY_EXISTS");
    let unknown_type = json!({"op": "create_instance", "id": "i-new", "region": HANGZHOU,
                              "zone": ZONE_H, "instance_type": "t.none", "network": "classic"});
    refused(&mut s, unknown_type, "INSTANCE_TYPE_NOT_FOUND");
    ok(&mut s, create("i-classic-2"));
}
