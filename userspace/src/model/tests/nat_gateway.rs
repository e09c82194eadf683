//! NAT gateways: EIPs and quota (R24, R28), SNAT (R25), DNAT (R26, R28), DNAT against EIPs
//! (R08), and egress precedence (R27).

use super::*;

fn snat(id: &str, source: Value, eips: &[&str]) -> Value {
    json!({"op": "add_snat_entry", "nat_gateway": "ngw-1", "id": id, "source": source,
           "eips": eips})
}

fn add_eip(gateway: &str, address: &str) -> Value {
    json!({"op": "add_nat_gateway_eip", "nat_gateway": gateway, "eip": address})
}

fn source(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": value})
}

fn snat_egress(entry: &str, eips: &[&str]) -> Egress {
    Egress::Snat {
        nat_gateway: "ngw-1".into(),
        entry: entry.into(),
        eips: eips.iter().map(|a| v4(a)).collect(),
    }
}

// R08: an EIP and a DNAT entry do not meet on one instance.

#[test]
fn r08_dnat_target_cannot_get_an_eip() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, assign("i-2-eni0", &["10.0.1.21"]));
    ok(&mut s, dnat_ip("to-i2", EIP5, "10.0.1.21"));
    // Directly, through its primary ENI, through any of its addresses.
    refused_by(&mut s, associate_instance(EIP1, "i-2"), codes::DNAT_CONFLICT, "R08");
    refused_by(&mut s, associate_eni(EIP1, "i-2-eni0", I2_IP), codes::DNAT_CONFLICT, "R08");
    let bare = json!({"op": "associate_eip", "eip": EIP1, "private_ip": "10.0.1.21"});
    refused_by(&mut s, bare, codes::DNAT_CONFLICT, "R08");
    // Through a secondary ENI attached to it, in any mode.
    ok(&mut s, attach("eni-1", "i-2"));
    refused_by(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP), codes::DNAT_CONFLICT, "R08");
    let multi = associate_mode(EIP1, "eni-1", "multi-eip");
    refused_by(&mut s, multi, codes::DNAT_CONFLICT, "R08");
}

#[test]
fn r08_detached_eni_that_is_a_dnat_target_cannot_get_an_eip() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("to-eni", EIP5, "udp", 53, ENI1_IP));
    refused_by(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP), codes::DNAT_CONFLICT, "R08");
    let cut_through = associate_mode(EIP1, "eni-1", "cut-through");
    refused_by(&mut s, cut_through, codes::DNAT_CONFLICT, "R08");
    let multi = associate_mode(EIP1, "eni-1", "multi-eip");
    refused_by(&mut s, multi, codes::DNAT_CONFLICT, "R08");
}

#[test]
fn r08_instance_with_an_eip_cannot_be_a_dnat_target() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, associate_instance(EIP1, "i-1"));
    refused_by(&mut s, dnat_ip("to-i1", EIP5, I1_IP), codes::DNAT_CONFLICT, "R08");
    // An EIP on any of its ENIs counts too, whichever of its addresses the entry names.
    ok(&mut s, attach("eni-1", "i-2"));
    ok(&mut s, associate_mode(EIP2, "eni-1", "multi-eip"));
    let to_primary = dnat_port("to-i2", EIP5, "tcp", 80, I2_IP);
    refused_by(&mut s, to_primary, codes::DNAT_CONFLICT, "R08");
    // A detached ENI with an EIP.
    ok(&mut s, associate_mode(EIP3, "eni-2", "cut-through"));
    refused_by(&mut s, dnat_ip("to-eni2", EIP5, ENI2_IP), codes::DNAT_CONFLICT, "R08");
}

#[test]
fn r08_removing_one_first_allows_the_other() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_ip("to-i1", EIP5, I1_IP));
    ok(&mut s, json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "to-i1"}));
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}));
    ok(&mut s, dnat_ip("to-i1", EIP5, I1_IP));
}

#[test]
fn r08_where_both_exist_egress_uses_the_eip() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_ip("to-i1", EIP5, I1_IP));
    // State from before the rule: put the association in behind the rules' back.
    let mut legacy = eip(&s, EIP1).clone();
    legacy.association = Some(Association::Instance {
        instance: "i-1".into(),
        eni: "i-1-eni0".into(),
        private_ip: v4(I1_IP),
    });
    s.put(Resource::Eip(legacy));
    assert_eq!(egress_of(&s, v4(I1_IP)), Egress::Eip { eip: v4(EIP1) });
}

// R24: EIPs per NAT gateway.

#[test]
fn r24_eip_beyond_the_quota_is_refused() {
    let mut s = world();
    ok(
        &mut s,
        json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1",
                      "eip_quota": 2}),
    );
    ok(&mut s, add_eip("ngw-1", EIP1));
    ok(&mut s, add_eip("ngw-1", EIP2));
    refused_by(&mut s, add_eip("ngw-1", EIP3), codes::NAT_GATEWAY_EIP_QUOTA, "R24");
    // Adding one it already has is no new EIP.
    ok(&mut s, add_eip("ngw-1", EIP2));
    // Removing one makes room.
    ok(&mut s, json!({"op": "remove_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP1}));
    ok(&mut s, add_eip("ngw-1", EIP3));
    let owned: Vec<Ipv4Addr> = s.eips_of_nat_gateway("ngw-1").map(|e| e.address).collect();
    assert_eq!(owned, [v4(EIP2), v4(EIP3)]);
}

#[test]
fn r24_the_default_quota_is_20() {
    let mut s = world();
    ok(&mut s, json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1"}));
    assert_eq!(s.nat_gateways["ngw-1"].eip_quota, 20);
    ok(&mut s, json!({"op": "allocate_eip", "address": "203.0.113.30", "region": HANGZHOU}));
    for n in 10..30 {
        ok(&mut s, add_eip("ngw-1", &format!("203.0.113.{n}")));
    }
    refused_by(&mut s, add_eip("ngw-1", "203.0.113.30"), codes::NAT_GATEWAY_EIP_QUOTA, "R24");
}

#[test]
fn r24_a_quota_of_zero_is_refused() {
    let mut s = world();
    let zero = json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-1", "eip_quota": 0});
    refused(&mut s, zero, codes::INVALID_ARGUMENT);
    let unknown = json!({"op": "create_nat_gateway", "id": "ngw-1", "vpc": "vpc-none"});
    refused(&mut s, unknown, "VPC_NOT_FOUND");
}

// R25: SNAT sources are in the gateway's VPC and use the gateway's EIPs.

#[test]
fn r25_snat_source_outside_the_vpc_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    for source in [
        source("vswitch", "vsw-gw"),
        source("instance", "i-gw"),
        source("instance", "i-classic"),
        source("cidr", "10.1.0.0/24"),
        source("cidr", "10.0.0.0/8"),
    ] {
        let refusal = refused_by(
            &mut s,
            snat("s-1", source.clone(), &[EIP5]),
            codes::NETWORK_MISMATCH,
            "R25",
        );
        assert!(refusal.message.contains("vpc-1"), "{source}: {refusal}");
    }
}

#[test]
fn r25_snat_needs_the_gateways_own_eips() {
    let mut s = world();
    with_nat_gateway(&mut s);
    let vswitch = source("vswitch", "vsw-a");
    refused(&mut s, snat("s-1", vswitch.clone(), &[]), codes::INVALID_ARGUMENT);
    refused(&mut s, snat("s-1", vswitch.clone(), &[EIP5, EIP1]), codes::INVALID_ARGUMENT);
    refused(&mut s, snat("s-1", vswitch.clone(), &["203.0.113.99"]), "EIP_NOT_FOUND");
    refused(&mut s, snat("S 1", vswitch.clone(), &[EIP5]), codes::INVALID_ARGUMENT);
    ok(&mut s, snat("s-1", vswitch.clone(), &[EIP5]));
    refused(&mut s, snat("s-1", vswitch, &[EIP5]), "SNAT_ENTRY_ALREADY_EXISTS");
}

#[test]
fn r25_snat_for_a_vswitch_an_instance_or_a_cidr_is_allowed() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, snat("by-vsw", source("vswitch", "vsw-a"), &[EIP5]));
    ok(&mut s, snat("by-instance", source("instance", "i-zone-i"), &[EIP5, EIP4]));
    ok(&mut s, snat("by-cidr", source("cidr", "10.0.0.0/16"), &[EIP4]));
    let gateway = &s.nat_gateways["ngw-1"];
    assert_eq!(gateway.snat_entries.len(), 3);
    assert_eq!(gateway.snat_entries["by-instance"].eips, [v4(EIP5), v4(EIP4)]);
    // Sources without their own public address now reach the Internet (R27).
    assert_eq!(egress_of(&s, v4("10.0.2.10")), snat_egress("by-instance", &[EIP5, EIP4]));
    assert_eq!(egress_of(&s, v4(ENI1_IP)), snat_egress("by-vsw", &[EIP5]));
    // And stop when the entry goes.
    ok(&mut s, json!({"op": "remove_snat_entry", "nat_gateway": "ngw-1", "id": "by-vsw"}));
    assert_eq!(egress_of(&s, v4(ENI1_IP)), snat_egress("by-cidr", &[EIP4]));
    let gone = json!({"op": "remove_snat_entry", "nat_gateway": "ngw-1", "id": "by-vsw"});
    refused(&mut s, gone, "SNAT_ENTRY_NOT_FOUND");
}

// R26: DNAT entries lead to a private IP of the gateway's VPC.

#[test]
fn r26_dnat_to_an_address_nobody_holds_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    refused_by(&mut s, dnat_ip("d-1", EIP5, "10.0.1.199"), codes::IP_NOT_ASSIGNED, "R26");
}

#[test]
fn r26_dnat_to_an_address_outside_the_vpc_is_refused() {
    let mut s = world();
    with_nat_gateway(&mut s);
    refused_by(&mut s, dnat_ip("d-1", EIP5, "10.1.1.10"), codes::NETWORK_MISMATCH, "R26");
    let port = dnat_port("d-1", EIP5, "tcp", 80, "10.2.1.100");
    refused_by(&mut s, port, codes::NETWORK_MISMATCH, "R26");
}

#[test]
fn r26_port_and_ip_mappings_to_instances_and_enis_are_allowed() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    ok(&mut s, dnat_ip("all", EIP4, ENI1_IP));
    let entries = &s.nat_gateways["ngw-1"].dnat_entries;
    assert_eq!(entries["web"].mapping.private_ip(), v4(I1_IP));
    assert_eq!(entries["all"].eip, v4(EIP4));
    assert!(matches!(entries["all"].mapping, DnatMapping::Ip { .. }));
}

#[test]
fn r26_dnat_needs_a_gateway_eip_and_real_ports() {
    let mut s = world();
    with_nat_gateway(&mut s);
    refused(&mut s, dnat_ip("d-1", EIP1, I1_IP), codes::INVALID_ARGUMENT);
    let port_zero = json!({"op": "add_dnat_entry", "nat_gateway": "ngw-1", "id": "d-1",
                           "eip": EIP5, "mapping": {"type": "port", "protocol": "tcp",
                           "public_port": 0, "private_ip": I1_IP, "private_port": 80}});
    refused(&mut s, port_zero, codes::INVALID_ARGUMENT);
    ok(&mut s, dnat_port("d-1", EIP5, "tcp", 80, I1_IP));
    refused(&mut s, dnat_port("d-1", EIP5, "tcp", 81, I1_IP), "DNAT_ENTRY_ALREADY_EXISTS");
    let gone = json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "d-2"});
    refused(&mut s, gone, "DNAT_ENTRY_NOT_FOUND");
}

// R27: own EIP, then DNAT IP mapping, then SNAT, else nothing.

#[test]
fn r27_own_eip_comes_first() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, snat("by-vsw", source("vswitch", "vsw-a"), &[EIP5]));
    ok(&mut s, associate_instance(EIP1, "i-1"));
    assert_eq!(egress_of(&s, v4(I1_IP)), Egress::Eip { eip: v4(EIP1) });
    ok(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP));
    assert_eq!(egress_of(&s, v4(ENI1_IP)), Egress::Eip { eip: v4(EIP2) });
}

#[test]
fn r27_dnat_ip_mapping_comes_before_snat() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, snat("by-instance", source("instance", "i-1"), &[EIP5]));
    ok(&mut s, dnat_ip("all", EIP4, I1_IP));
    let expected = Egress::DnatIpMapping { nat_gateway: "ngw-1".into(), eip: v4(EIP4) };
    assert_eq!(egress_of(&s, v4(I1_IP)), expected);
}

#[test]
fn r27_dnat_port_mapping_gives_no_egress() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    assert_eq!(egress_of(&s, v4(I1_IP)), Egress::None);
    ok(&mut s, snat("by-vsw", source("vswitch", "vsw-a"), &[EIP5]));
    assert_eq!(egress_of(&s, v4(I1_IP)), snat_egress("by-vsw", &[EIP5]));
}

#[test]
fn r27_most_specific_snat_source_wins() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, add_eip("ngw-1", EIP3));
    ok(&mut s, add_eip("ngw-1", EIP2));
    ok(&mut s, snat("by-vpc", source("cidr", "10.0.0.0/16"), &[EIP2]));
    ok(&mut s, snat("by-net", source("cidr", "10.0.2.0/24"), &[EIP3]));
    ok(&mut s, snat("by-vsw", source("vswitch", "vsw-a"), &[EIP4]));
    ok(&mut s, snat("by-instance", source("instance", "i-1"), &[EIP5]));
    ok(
        &mut s,
        json!({"op": "create_vswitch", "id": "vsw-c", "vpc": "vpc-1", "zone": ZONE_H,
                      "cidr": "10.0.3.0/24"}),
    );
    ok(&mut s, json!({"op": "create_eni", "id": "eni-c", "vswitch": "vsw-c"}));
    ok(&mut s, attach("eni-1", "i-1"));
    // The instance's entry covers every ENI of the instance.
    assert_eq!(egress_of(&s, v4(I1_IP)), snat_egress("by-instance", &[EIP5]));
    assert_eq!(egress_of(&s, v4(ENI1_IP)), snat_egress("by-instance", &[EIP5]));
    // A vSwitch beats a CIDR.
    assert_eq!(egress_of(&s, v4(I2_IP)), snat_egress("by-vsw", &[EIP4]));
    // The longer prefix beats the shorter.
    assert_eq!(egress_of(&s, v4("10.0.2.10")), snat_egress("by-net", &[EIP3]));
    assert_eq!(egress_of(&s, v4("10.0.3.2")), snat_egress("by-vpc", &[EIP2]));
}

#[test]
fn r27_without_any_there_is_no_egress() {
    let mut s = world();
    assert_eq!(egress_of(&s, v4(I1_IP)), Egress::None);
    // An address nobody holds, and an address of another VPC than the gateway's.
    with_nat_gateway(&mut s);
    ok(&mut s, snat("by-vpc", source("cidr", "10.0.0.0/16"), &[EIP5]));
    assert_eq!(egress_of(&s, v4("10.0.1.199")), Egress::None);
    assert_eq!(egress_of(&s, v4("10.1.1.10")), Egress::None);
    // Losing the EIP falls back to SNAT.
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}));
    assert_eq!(egress_of(&s, v4(I1_IP)), snat_egress("by-vpc", &[EIP5]));
}

#[test]
fn r27_egress_for_many_addresses_is_egress_for_each() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, add_eip("ngw-1", EIP3));
    ok(&mut s, snat("by-vsw", source("vswitch", "vsw-a"), &[EIP5]));
    ok(&mut s, snat("by-instance", source("instance", "i-zone-i"), &[EIP5]));
    ok(&mut s, dnat_ip("all", EIP4, I2_IP));
    ok(&mut s, dnat_ip("all-eni", EIP3, "10.0.2.100"));
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let lookup = EgressLookup::new(&s);
    let mut seen = BTreeSet::new();
    for ip in s.enis.values().flat_map(|e| e.ipv4s()).chain([v4("10.0.1.199")]) {
        let egress = lookup.egress_of(ip);
        assert_eq!(egress, egress_of(&s, ip), "{ip}");
        seen.insert(serde_json::to_value(&egress).unwrap()["type"].to_string());
    }
    assert_eq!(seen.len(), 4, "every kind of egress was compared");
}

// R28: a NAT gateway's EIP serves nothing else; DNAT port claims do not overlap.

#[test]
fn r28_nat_gateway_eip_cannot_be_associated() {
    let mut s = world();
    with_nat_gateway(&mut s);
    for request in [
        associate_instance(EIP5, "i-1"),
        associate_eni(EIP5, "eni-1", ENI1_IP),
        associate_mode(EIP5, "eni-1", "cut-through"),
    ] {
        let mut request = request;
        request["allow_reassociation"] = json!(true);
        refused_by(&mut s, request, codes::EIP_USED_BY_NAT_GATEWAY, "R28");
    }
    let unassociate = json!({"op": "unassociate_eip", "eip": EIP5});
    refused_by(&mut s, unassociate, codes::EIP_USED_BY_NAT_GATEWAY, "R28");
}

#[test]
fn r28_associated_eip_cannot_join_a_nat_gateway() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, associate_instance(EIP1, "i-1"));
    refused_by(&mut s, add_eip("ngw-1", EIP1), codes::EIP_IN_USE, "R28");
    // Nor can another gateway's EIP.
    ok(&mut s, json!({"op": "create_nat_gateway", "id": "ngw-2", "vpc": "vpc-gw"}));
    refused_by(&mut s, add_eip("ngw-2", EIP5), codes::EIP_IN_USE, "R28");
}

#[test]
fn r28_two_dnat_entries_cannot_claim_the_same_port() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    let again = dnat_port("web-2", EIP5, "tcp", 80, I2_IP);
    refused_by(&mut s, again, codes::DNAT_CONFLICT, "R28");
}

#[test]
fn r28_an_ip_mapping_claims_every_port() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_ip("all", EIP5, I1_IP));
    refused_by(&mut s, dnat_port("web", EIP5, "udp", 5000, I2_IP), codes::DNAT_CONFLICT, "R28");
    refused_by(&mut s, dnat_ip("all-2", EIP5, I2_IP), codes::DNAT_CONFLICT, "R28");
    ok(&mut s, json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "all"}));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    refused_by(&mut s, dnat_ip("all", EIP5, I2_IP), codes::DNAT_CONFLICT, "R28");
}

#[test]
fn r28_distinct_ports_and_protocols_are_allowed() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    ok(&mut s, dnat_port("dns", EIP5, "udp", 80, I1_IP));
    ok(&mut s, dnat_port("tls", EIP5, "tcp", 443, I2_IP));
    ok(&mut s, dnat_ip("all", EIP4, ENI1_IP));
    assert_eq!(s.nat_gateways["ngw-1"].dnat_entries.len(), 4);
}

#[test]
fn r27_an_address_takes_an_ip_mapping_or_port_mappings_not_both() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    let refusal = refused_by(&mut s, dnat_ip("all", EIP4, I1_IP), codes::DNAT_CONFLICT, "R27");
    assert!(refusal.message.contains("web"), "{refusal}");
    ok(&mut s, dnat_ip("all", EIP4, I2_IP));
    let refusal =
        refused_by(&mut s, dnat_port("ssh", EIP5, "tcp", 22, I2_IP), codes::DNAT_CONFLICT, "R27");
    assert!(refusal.message.contains("all"), "{refusal}");
}

#[test]
fn r28_snat_cannot_use_an_eip_with_an_ip_mapping() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, dnat_ip("all", EIP5, I1_IP));
    let refusal = refused_by(
        &mut s,
        snat("s-1", source("vswitch", "vsw-a"), &[EIP4, EIP5]),
        codes::DNAT_CONFLICT,
        "R28",
    );
    assert!(refusal.message.contains("all"), "{refusal}");
    // The gateway's other EIP is free for SNAT, and so is this one once the mapping goes.
    ok(&mut s, snat("s-1", source("vswitch", "vsw-a"), &[EIP4]));
    ok(&mut s, json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "all"}));
    ok(&mut s, snat("s-2", source("vswitch", "vsw-b"), &[EIP5]));
}

#[test]
fn r28_an_ip_mapping_cannot_take_an_eip_snat_uses() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, snat("s-1", source("vswitch", "vsw-a"), &[EIP4, EIP5]));
    let refusal = refused_by(&mut s, dnat_ip("all", EIP5, I1_IP), codes::DNAT_CONFLICT, "R28");
    assert!(refusal.message.contains("s-1"), "{refusal}");
    // Port mappings share an EIP with SNAT (SNAT does not hand out mapped ports).
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    ok(&mut s, json!({"op": "remove_snat_entry", "nat_gateway": "ngw-1", "id": "s-1"}));
    ok(&mut s, dnat_ip("all", EIP4, I2_IP));
}

#[test]
fn r26_two_port_mappings_cannot_lead_to_one_private_endpoint() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    // Both helpers' mappings lead to port 8080.
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    let refusal =
        refused_by(&mut s, dnat_port("web-2", EIP5, "tcp", 81, I1_IP), codes::DNAT_CONFLICT, "R26");
    assert!(refusal.message.contains("web"), "{refusal}");
    // Through another EIP too: the replies would still leave from one endpoint.
    refused_by(&mut s, dnat_port("web-3", EIP4, "tcp", 80, I1_IP), codes::DNAT_CONFLICT, "R26");
    // Another protocol, another address or another private port is another endpoint.
    ok(&mut s, dnat_port("dns", EIP5, "udp", 81, I1_IP));
    ok(&mut s, dnat_port("web-i2", EIP5, "tcp", 82, I2_IP));
    let other_port = json!({"op": "add_dnat_entry", "nat_gateway": "ngw-1", "id": "alt",
                            "eip": EIP5, "mapping": {"type": "port", "protocol": "tcp",
                            "public_port": 83, "private_ip": I1_IP, "private_port": 8081}});
    ok(&mut s, other_port);
    // Once the entry goes, its endpoint is free again.
    ok(&mut s, json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "web"}));
    ok(&mut s, dnat_port("web-2", EIP5, "tcp", 81, I1_IP));
}

#[test]
fn r26_two_ip_mappings_cannot_lead_to_one_address() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, dnat_ip("all", EIP5, I1_IP));
    let refusal = refused_by(&mut s, dnat_ip("all-2", EIP4, I1_IP), codes::DNAT_CONFLICT, "R26");
    assert!(refusal.message.contains("all"), "{refusal}");
    ok(&mut s, dnat_ip("all-2", EIP4, I2_IP));
}

#[test]
fn r28_eip_used_by_entries_cannot_leave_its_gateway() {
    let mut s = world();
    with_nat_gateway(&mut s);
    let remove = json!({"op": "remove_nat_gateway_eip", "nat_gateway": "ngw-1", "eip": EIP5});
    ok(&mut s, snat("s-1", source("vswitch", "vsw-a"), &[EIP5]));
    refused(&mut s, remove.clone(), codes::DEPENDENCY_VIOLATION);
    ok(&mut s, json!({"op": "remove_snat_entry", "nat_gateway": "ngw-1", "id": "s-1"}));
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    refused(&mut s, remove.clone(), codes::DEPENDENCY_VIOLATION);
    ok(&mut s, json!({"op": "remove_dnat_entry", "nat_gateway": "ngw-1", "id": "web"}));
    ok(&mut s, remove.clone());
    assert_eq!(association(&s, EIP5), None);
    refused(&mut s, remove, codes::EIP_NOT_ASSOCIATED);
}

// R04: deleting a gateway leaves its EIPs available.

#[test]
fn r04_deleting_a_nat_gateway_leaves_its_eips_available() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, add_eip("ngw-1", EIP4));
    ok(&mut s, snat("s-1", source("vswitch", "vsw-a"), &[EIP5, EIP4]));
    ok(&mut s, json!({"op": "delete_nat_gateway", "id": "ngw-1"}));
    assert!(!s.nat_gateways.contains_key("ngw-1"));
    assert_eq!(association(&s, EIP4), None);
    assert_eq!(association(&s, EIP5), None);
    assert_eq!(egress_of(&s, v4(I1_IP)), Egress::None);
    // A VPC with a gateway cannot be deleted before it.
    ok(
        &mut s,
        json!({"op": "create_vpc", "id": "vpc-5", "region": HANGZHOU,
                      "cidr": "10.5.0.0/16"}),
    );
    ok(&mut s, json!({"op": "create_nat_gateway", "id": "ngw-5", "vpc": "vpc-5"}));
    let refusal =
        refused(&mut s, json!({"op": "delete_vpc", "id": "vpc-5"}), codes::DEPENDENCY_VIOLATION);
    assert!(refusal.message.contains("ngw-5"), "{refusal}");
    ok(&mut s, json!({"op": "delete_nat_gateway", "id": "ngw-5"}));
    ok(&mut s, json!({"op": "delete_vpc", "id": "vpc-5"}));
}
