//! EIP ownership and scope (R01-R05), the instance's one EIP (R06), and the association
//! modes on ENIs (R09-R12).

use super::*;

fn instance_association(instance: &str, ip: &str) -> Option<Association> {
    Some(Association::Instance {
        instance: instance.into(),
        eni: format!("{instance}-eni0").into(),
        private_ip: v4(ip),
    })
}

// R01: one resource at a time.

#[test]
fn r01_eip_in_use_cannot_serve_a_second_resource() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    // Whatever the second target, the EIP stays where it is (R05 names the way out).
    refused_by(&mut s, associate_instance(EIP1, "i-2"), codes::EIP_IN_USE, "R05");
    refused_by(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP), codes::EIP_IN_USE, "R05");
    refused_by(&mut s, associate_mode(EIP1, "eni-1", "cut-through"), codes::EIP_IN_USE, "R05");
    refused_by(&mut s, associate_mode(EIP1, "eni-1", "multi-eip"), codes::EIP_IN_USE, "R05");
    let to_gateway = json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP1});
    ok(&mut s, json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1"}));
    refused_by(&mut s, to_gateway, codes::EIP_IN_USE, "R28");
    assert_eq!(association(&s, EIP1), instance_association("i-1", I1_IP));
}

#[test]
fn r01_a_moved_eip_serves_only_its_new_resource() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let mut moved = associate_instance(EIP1, "i-2");
    moved["allow_reassociation"] = json!(true);
    ok(&mut s, moved);
    assert_eq!(association(&s, EIP1), instance_association("i-2", I2_IP));
    assert!(s.eip_of_instance("i-1").is_none());
    assert!(eips_on(&s, "i-1-eni0").is_empty());
    assert!(s.eip_of_private_ip(v4(I1_IP)).is_none());
    assert_eq!(s.eip_of_private_ip(v4(I2_IP)).map(|e| e.address), Some(v4(EIP1)));
}

// R02: one EIP per private IPv4, one private IPv4 per EIP.

#[test]
fn r02_private_ip_with_an_eip_takes_no_second_one() {
    let mut s = world();
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    refused_by(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP), codes::PRIVATE_IP_HAS_EIP, "R02");
    // The same through the bare address and through the ENI's default (primary) address.
    let bare = json!({"op": "associate_eip", "eip": EIP2, "private_ip": ENI1_IP});
    refused_by(&mut s, bare, codes::PRIVATE_IP_HAS_EIP, "R02");
    let default = json!({"op": "associate_eip", "eip": EIP2, "eni": "eni-1"});
    refused_by(&mut s, default, codes::PRIVATE_IP_HAS_EIP, "R02");
    // Not even by moving another EIP there with allow_reassociation.
    ok(&mut s, associate_instance(EIP3, "i-1"));
    let mut moved = associate_eni(EIP3, "eni-1", ENI1_IP);
    moved["allow_reassociation"] = json!(true);
    refused_by(&mut s, moved, codes::PRIVATE_IP_HAS_EIP, "R02");
}

#[test]
fn r02_each_private_ip_of_an_eni_has_its_own_eip() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101", "10.0.1.102"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    ok(&mut s, json!({"op": "associate_eip", "eip": EIP3, "private_ip": "10.0.1.102"}));
    for (address, ip) in [(EIP1, ENI1_IP), (EIP2, "10.0.1.101"), (EIP3, "10.0.1.102")] {
        assert_eq!(association(&s, address), nat("eni-1", ip));
        assert_eq!(s.eip_of_private_ip(v4(ip)).map(|e| e.address), Some(v4(address)));
    }
    assert_eq!(eips_on(&s, "eni-1"), [EIP1, EIP2, EIP3]);
}

// R03: EIP and resource in one region; zones do not matter.

#[test]
fn r03_eip_and_instance_in_other_regions_are_refused() {
    let mut s = world();
    // R07 names the region condition for instances.
    refused_by(&mut s, associate_instance(TOKYO_EIP, "i-1"), codes::REGION_MISMATCH, "R07");
    refused_by(&mut s, associate_instance(EIP1, "i-tokyo"), codes::REGION_MISMATCH, "R07");
}

#[test]
fn r03_eip_and_eni_in_other_regions_are_refused() {
    let mut s = world();
    // R12 names the region condition for ENIs.
    refused_by(&mut s, associate_eni(TOKYO_EIP, "eni-1", ENI1_IP), codes::REGION_MISMATCH, "R12");
    let bare = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "10.2.1.100"});
    refused_by(&mut s, bare, codes::REGION_MISMATCH, "R12");
}

#[test]
fn r03_eip_and_nat_gateway_in_other_regions_are_refused() {
    let mut s = world();
    ok(&mut s, json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1"}));
    let add = json!({"op": "add_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": TOKYO_EIP});
    refused_by(&mut s, add, codes::REGION_MISMATCH, "R03");
}

#[test]
fn r03_zones_do_not_matter() {
    let mut s = world();
    // One region, EIPs have no zone: instances in zone h and zone i both take them.
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, associate_instance(EIP2, "i-zone-i"));
    ok(&mut s, associate_eni(EIP3, "eni-zone-i", "10.0.2.100"));
    ok(&mut s, associate_instance(TOKYO_EIP, "i-tokyo"));
    assert_eq!(association(&s, EIP2), instance_association("i-zone-i", "10.0.2.10"));
    assert_eq!(association(&s, TOKYO_EIP), instance_association("i-tokyo", "10.2.1.10"));
}

// R04: EIPs are released only explicitly, and only when available.

#[test]
fn r04_associated_eip_cannot_be_released() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, associate_mode(EIP2, "eni-1", "cut-through"));
    with_nat_gateway(&mut s);
    for address in [EIP1, EIP2, EIP5] {
        let release = json!({"op": "release_eip", "eip": address});
        refused_by(&mut s, release, codes::EIP_ASSOCIATED, "R04");
    }
}

#[test]
fn r04_available_eip_can_be_released() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}));
    ok(&mut s, json!({"op": "release_eip", "eip": EIP1}));
    assert!(!s.eips.contains_key(&v4(EIP1)));
    refused(&mut s, json!({"op": "release_eip", "eip": EIP1}), "EIP_NOT_FOUND");
}

#[test]
fn r04_unassociating_an_eip_that_serves_nothing_is_refused() {
    let mut s = world();
    refused(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}), codes::EIP_NOT_ASSOCIATED);
}

// R05: moving an association needs allow_reassociation.

#[test]
fn r05_associating_an_eip_in_use_without_allow_reassociation_is_refused() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    refused_by(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP), codes::EIP_IN_USE, "R05");
    let bare = json!({"op": "associate_eip", "eip": EIP1, "private_ip": I2_IP});
    let refusal = refused_by(&mut s, bare, codes::EIP_IN_USE, "R05");
    assert!(refusal.message.contains("allow-reassociation"), "{refusal}");
}

#[test]
fn r05_allow_reassociation_moves_the_eip() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let move_to_eni = json!({"op": "associate_eip", "eip": EIP1, "eni": "eni-1",
                             "private_ip": ENI1_IP, "allow_reassociation": true});
    ok(&mut s, move_to_eni);
    assert_eq!(association(&s, EIP1), nat("eni-1", ENI1_IP));
    assert!(s.eip_of_instance("i-1").is_none());
    // And on to a visible mode.
    let cut_through = json!({"op": "associate_eip", "eip": EIP1, "eni": "eni-2",
                             "mode": "cut-through", "allow_reassociation": true});
    ok(&mut s, cut_through);
    assert_eq!(association(&s, EIP1), Some(Association::CutThrough { eni: "eni-2".into() }));
    assert!(eips_on(&s, "eni-1").is_empty());
}

#[test]
fn r05_associating_again_with_the_same_target_changes_nothing() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let before = s.clone();
    let (_, change) = s.run(&req(associate_instance(EIP1, "i-1"))).expect("same target");
    assert!(change.is_empty());
    assert!(s == before);
}

// R06: an instance's one direct EIP, on its primary address, in NAT mode.

#[test]
fn r06_instance_eip_maps_to_the_primary_ip_of_the_primary_eni_in_nat_mode() {
    let mut s = world();
    ok(&mut s, assign("i-1-eni0", &["10.0.1.11"]));
    ok(&mut s, attach("eni-1", "i-1"));
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let association = association(&s, EIP1).expect("associated");
    assert_eq!(association, instance_association("i-1", I1_IP).unwrap());
    assert_eq!(association.mode(), Some(AssociationMode::Nat));
    assert_eq!(s.eip_of_instance("i-1").map(|e| e.address), Some(v4(EIP1)));
}

#[test]
fn r06_second_direct_eip_is_refused() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    refused_by(&mut s, associate_instance(EIP2, "i-1"), codes::INSTANCE_HAS_PUBLIC_IP, "R06");
}

#[test]
fn r06_instance_takes_no_visible_mode_and_no_address() {
    let mut s = world();
    let visible = json!({"op": "associate_eip", "eip": EIP1, "instance": "i-1",
                         "mode": "cut-through"});
    refused(&mut s, visible, codes::INVALID_ARGUMENT);
    let with_ip = json!({"op": "associate_eip", "eip": EIP1, "instance": "i-1",
                         "private_ip": I1_IP});
    refused(&mut s, with_ip, codes::INVALID_ARGUMENT);
    let explicit_nat = json!({"op": "associate_eip", "eip": EIP1, "instance": "i-1",
                              "mode": "nat"});
    ok(&mut s, explicit_nat);
}

#[test]
fn r06_more_eips_come_through_secondary_enis() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-2"));
    ok(&mut s, attach("eni-1", "i-2"));
    ok(&mut s, attach("eni-2", "i-2"));
    ok(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP));
    ok(&mut s, associate_mode(EIP3, "eni-2", "multi-eip"));
    ok(&mut s, associate_mode(EIP4, "eni-2", "multi-eip"));
    let enis: Vec<&str> = s.enis_of_instance("i-2").map(|e| e.id.as_str()).collect();
    assert_eq!(enis, ["eni-1", "eni-2", "i-2-eni0"]);
    let public: usize = enis.iter().map(|e| eips_on(&s, e).len()).sum();
    assert_eq!(public, 4);
}

// R09: NAT mode on one private IPv4 of an ENI.

#[test]
fn r09_nat_mode_maps_the_eip_to_one_private_ip_of_the_eni() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", "10.0.1.101"));
    // Without an address: the ENI's primary address.
    ok(&mut s, json!({"op": "associate_eip", "eip": EIP2, "eni": "eni-1", "mode": "nat"}));
    // A bare address: the ENI that holds it.
    ok(&mut s, json!({"op": "associate_eip", "eip": EIP3, "private_ip": ENI2_IP}));
    assert_eq!(association(&s, EIP1), nat("eni-1", "10.0.1.101"));
    assert_eq!(association(&s, EIP2), nat("eni-1", ENI1_IP));
    assert_eq!(association(&s, EIP3), nat("eni-2", ENI2_IP));
    assert_eq!(association(&s, EIP1).and_then(|a| a.mode()), Some(AssociationMode::Nat));
}

#[test]
fn r09_address_not_on_the_eni_is_refused() {
    let mut s = world();
    refused_by(&mut s, associate_eni(EIP1, "eni-1", I2_IP), codes::IP_NOT_ASSIGNED, "R09");
    refused_by(&mut s, associate_eni(EIP1, "eni-1", "10.0.1.199"), codes::IP_NOT_ASSIGNED, "R09");
    // A bare address that no ENI holds.
    let bare = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "10.0.1.199"});
    refused(&mut s, bare, codes::IP_NOT_ASSIGNED);
}

#[test]
fn r09_primary_eni_carries_at_most_one_eip() {
    let mut s = world();
    ok(&mut s, assign("i-2-eni0", &["10.0.1.21"]));
    ok(&mut s, associate_eni(EIP1, "i-2-eni0", I2_IP));
    refused(&mut s, associate_eni(EIP2, "i-2-eni0", "10.0.1.21"), codes::ENI_EIP_LIMIT);
    // Moving the one EIP to the other address of the primary ENI is fine.
    let mut moved = associate_eni(EIP1, "i-2-eni0", "10.0.1.21");
    moved["allow_reassociation"] = json!(true);
    ok(&mut s, moved);
    assert_eq!(association(&s, EIP1), nat("i-2-eni0", "10.0.1.21"));
}

#[test]
fn r09_secondary_eni_carries_at_most_one_eip_per_private_ip() {
    let mut s = world();
    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    // Two addresses, two EIPs: a third has no address left to land on.
    for ip in [ENI1_IP, "10.0.1.101"] {
        refused_by(&mut s, associate_eni(EIP3, "eni-1", ip), codes::PRIVATE_IP_HAS_EIP, "R02");
    }
    assert_eq!(eips_on(&s, "eni-1").len(), eni(&s, "eni-1").ipv4_count());
}

#[test]
fn r09_nat_mode_cannot_join_visible_mode_eips() {
    let mut s = world();
    ok(&mut s, associate_mode(EIP1, "eni-1", "multi-eip"));
    refused(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP), codes::ENI_MODE_CONFLICT);
    ok(&mut s, associate_mode(EIP3, "eni-2", "cut-through"));
    refused(&mut s, associate_eni(EIP2, "eni-2", ENI2_IP), codes::ENI_MODE_CONFLICT);
}

// R10: cut-through.

#[test]
fn r10_cut_through_on_a_primary_eni_is_refused() {
    let mut s = world();
    let request = associate_mode(EIP1, "i-1-eni0", "cut-through");
    refused_by(&mut s, request, codes::ENI_KIND, "R10");
}

#[test]
fn r10_cut_through_on_an_attached_eni_is_refused() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    let request = associate_mode(EIP1, "eni-1", "cut-through");
    refused_by(&mut s, request, codes::ENI_ATTACHED, "R10");
}

#[test]
fn r10_cut_through_in_a_vpc_with_an_ipv4_gateway_is_refused() {
    let mut s = world();
    let request = associate_mode(EIP1, "eni-gw", "cut-through");
    refused_by(&mut s, request, codes::VPC_HAS_IPV4_GATEWAY, "R10");
    // NAT mode is fine there.
    ok(&mut s, associate_eni(EIP1, "eni-gw", "10.1.1.100"));
}

#[test]
fn r10_cut_through_takes_exactly_one_eip() {
    let mut s = world();
    ok(&mut s, associate_mode(EIP1, "eni-1", "cut-through"));
    let second = associate_mode(EIP2, "eni-1", "cut-through");
    refused_by(&mut s, second, codes::ENI_EIP_LIMIT, "R10");
    refused(&mut s, associate_mode(EIP2, "eni-1", "multi-eip"), codes::ENI_MODE_CONFLICT);
    refused(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP), codes::ENI_MODE_CONFLICT);
    // An ENI that already carries a NAT-mode EIP cannot go cut-through either.
    ok(&mut s, associate_eni(EIP3, "eni-2", ENI2_IP));
    let over_nat = associate_mode(EIP4, "eni-2", "cut-through");
    refused_by(&mut s, over_nat, codes::ENI_EIP_LIMIT, "R10");
}

#[test]
fn r10_cut_through_with_a_private_ip_is_refused() {
    let mut s = world();
    let request = json!({"op": "associate_eip", "eip": EIP1, "eni": "eni-1",
                         "private_ip": ENI1_IP, "mode": "cut-through"});
    refused(&mut s, request, codes::INVALID_ARGUMENT);
}

#[test]
fn r10_detached_secondary_eni_in_a_vpc_without_gateway_is_allowed() {
    let mut s = world();
    ok(&mut s, associate_mode(EIP1, "eni-1", "cut-through"));
    let association = association(&s, EIP1).expect("associated");
    assert_eq!(association, Association::CutThrough { eni: "eni-1".into() });
    assert_eq!(association.mode(), Some(AssociationMode::CutThrough));
    // No private address is translated to.
    assert_eq!(association.private_ip(), None);
    assert!(s.eip_of_private_ip(v4(ENI1_IP)).is_none());
    // "Not attached at association time": attaching afterwards keeps the EIP.
    ok(&mut s, attach("eni-1", "i-1"));
    assert_eq!(eips_on(&s, "eni-1"), [EIP1]);
}

// R11: multi-EIP visible mode.

#[test]
fn r11_multi_eip_on_a_primary_eni_is_refused() {
    let mut s = world();
    let request = associate_mode(EIP1, "i-1-eni0", "multi-eip");
    refused_by(&mut s, request, codes::ENI_KIND, "R11");
}

#[test]
fn r11_eleventh_eip_is_refused() {
    let mut s = world();
    for n in 10..20 {
        ok(&mut s, associate_mode(&format!("203.0.113.{n}"), "eni-1", "multi-eip"));
    }
    assert_eq!(eips_on(&s, "eni-1").len(), 10);
    let eleventh = associate_mode("203.0.113.20", "eni-1", "multi-eip");
    refused_by(&mut s, eleventh, codes::ENI_EIP_LIMIT, "R11");
}

#[test]
fn r11_multi_eip_is_allowed_with_a_warning() {
    let mut s = world();
    ok(&mut s, attach("eni-1", "i-1"));
    let done = ok(&mut s, associate_mode(EIP1, "eni-1", "multi-eip"));
    assert_eq!(done.subject(), Some(Key::new(Kind::Eip, EIP1)));
    assert_eq!(done.warnings.len(), 1);
    assert!(done.warnings[0].contains("deprecated"), "{:?}", done.warnings);
    ok(&mut s, associate_mode(EIP2, "eni-1", "multi-eip"));
    assert_eq!(association(&s, EIP2), Some(Association::MultiEip { eni: "eni-1".into() }));
    assert_eq!(association(&s, EIP2).and_then(|a| a.mode()), Some(AssociationMode::MultiEip));
    // Other modes do not warn.
    assert!(ok(&mut s, associate_instance(EIP3, "i-2")).warnings.is_empty());
}

#[test]
fn r11_multi_eip_cannot_join_nat_mode_eips() {
    let mut s = world();
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    refused(&mut s, associate_mode(EIP2, "eni-1", "multi-eip"), codes::ENI_MODE_CONFLICT);
}

// R12 (the EIP side): an EIP and its ENI are in one region.

#[test]
fn r12_eip_and_eni_in_different_regions_are_refused() {
    let mut s = world();
    for mode in ["nat", "cut-through", "multi-eip"] {
        let request = associate_mode(TOKYO_EIP, "eni-1", mode);
        refused_by(&mut s, request, codes::REGION_MISMATCH, "R12");
        let request = associate_mode(EIP1, "eni-tokyo", mode);
        refused_by(&mut s, request, codes::REGION_MISMATCH, "R12");
    }
}

#[test]
fn r12_eip_and_eni_in_the_same_region_are_allowed() {
    let mut s = world();
    ok(&mut s, associate_mode(TOKYO_EIP, "eni-tokyo", "cut-through"));
    ok(&mut s, associate_eni(EIP1, "eni-zone-i", "10.0.2.100"));
}

// Targets that do not exist, or are given ambiguously.

#[test]
fn associating_needs_exactly_one_existing_target() {
    let mut s = world();
    refused(&mut s, json!({"op": "associate_eip", "eip": EIP1}), codes::INVALID_ARGUMENT);
    let both = json!({"op": "associate_eip", "eip": EIP1, "instance": "i-1", "eni": "eni-1"});
    refused(&mut s, both, codes::INVALID_ARGUMENT);
    let visible_ip = json!({"op": "associate_eip", "eip": EIP1, "private_ip": ENI1_IP,
                            "mode": "multi-eip"});
    refused(&mut s, visible_ip, codes::INVALID_ARGUMENT);
    refused(&mut s, associate_instance("203.0.113.99", "i-1"), "EIP_NOT_FOUND");
    refused(&mut s, associate_instance(EIP1, "i-none"), "INSTANCE_NOT_FOUND");
    refused(&mut s, associate_eni(EIP1, "eni-none", ENI1_IP), "ENI_NOT_FOUND");
}
