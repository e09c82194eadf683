//! The frame the rules work in: regions, VPCs, vSwitches, instance types, and EIP
//! allocation. No numbered rule covers most of this; the checks keep the address spaces
//! the rules rely on (R13) consistent.

use super::*;

#[test]
fn regions_are_created_once_and_deleted_when_unused() {
    let mut s = world();
    refused(&mut s, json!({"op": "create_region", "id": HANGZHOU}), "REGION_ALREADY_EXISTS");
    refused(&mut s, json!({"op": "create_region", "id": "Bad Region"}), codes::INVALID_ARGUMENT);
    let in_use =
        refused(&mut s, json!({"op": "delete_region", "id": TOKYO}), codes::DEPENDENCY_VIOLATION);
    assert!(in_use.message.contains("vpc-tokyo"), "{in_use}");
    ok(&mut s, json!({"op": "create_region", "id": "eu-central-1"}));
    ok(
        &mut s,
        json!({"op": "allocate_eip", "address": "198.51.100.50",
                      "region": "eu-central-1"}),
    );
    // An EIP keeps its region in use.
    let refusal = refused(
        &mut s,
        json!({"op": "delete_region", "id": "eu-central-1"}),
        codes::DEPENDENCY_VIOLATION,
    );
    assert!(refusal.message.contains("198.51.100.50"), "{refusal}");
    ok(&mut s, json!({"op": "release_eip", "eip": "198.51.100.50"}));
    ok(&mut s, json!({"op": "delete_region", "id": "eu-central-1"}));
    refused(&mut s, json!({"op": "delete_region", "id": "eu-central-1"}), "REGION_NOT_FOUND");
}

#[test]
fn vpcs_do_not_overlap_behind_one_gateway() {
    let mut s = world();
    let vpc = |id: &str, cidr: &str| {
        json!({"op": "create_vpc", "id": id, "region": HANGZHOU,
                                            "cidr": cidr})
    };
    refused(&mut s, vpc("vpc-x", "10.0.128.0/17"), codes::CIDR_CONFLICT);
    refused(&mut s, vpc("vpc-x", "10.0.0.0/8"), codes::CIDR_CONFLICT);
    refused(&mut s, vpc("vpc-x", "10.9.0.1/16"), codes::INVALID_ARGUMENT);
    refused(&mut s, vpc("vpc-x", "10.9.0.0/29"), codes::INVALID_ARGUMENT);
    refused(&mut s, vpc("vpc-1", "10.9.0.0/16"), "VPC_ALREADY_EXISTS");
    let ipv6 = json!({"op": "create_vpc", "id": "vpc-x", "region": HANGZHOU,
                      "cidr": "10.9.0.0/16", "ipv6_cidr": "2001:db8:1:8000::/56"});
    refused(&mut s, ipv6, codes::CIDR_CONFLICT);
    let region = json!({"op": "create_vpc", "id": "vpc-x", "region": "nowhere",
                        "cidr": "10.9.0.0/16"});
    refused(&mut s, region, "REGION_NOT_FOUND");
    ok(&mut s, vpc("vpc-x", "10.9.0.0/16"));
    assert!(!s.vpcs["vpc-x"].ipv4_gateway);
    ok(&mut s, json!({"op": "delete_vpc", "id": "vpc-x"}));
    refused(&mut s, json!({"op": "delete_vpc", "id": "vpc-1"}), codes::DEPENDENCY_VIOLATION);
}

#[test]
fn vswitches_lie_inside_their_vpc_without_overlap() {
    let mut s = world();
    let vswitch = |cidr: &str, v6: Option<&str>| {
        json!({"op": "create_vswitch", "id": "vsw-x", "vpc": "vpc-1", "zone": ZONE_H,
               "cidr": cidr, "ipv6_cidr": v6})
    };
    refused(&mut s, vswitch("10.1.5.0/24", None), codes::CIDR_CONFLICT);
    refused(&mut s, vswitch("10.0.1.128/25", None), codes::CIDR_CONFLICT);
    refused(&mut s, vswitch("10.0.5.0/30", None), codes::CIDR_CONFLICT);
    refused(&mut s, vswitch("10.0.5.0/24", Some("2001:db8:2:5::/64")), codes::CIDR_CONFLICT);
    let no_v6 = json!({"op": "create_vswitch", "id": "vsw-x", "vpc": "vpc-gw", "zone": ZONE_H,
                       "cidr": "10.1.5.0/24", "ipv6_cidr": "2001:db8:1:5::/64"});
    refused(&mut s, no_v6, codes::CIDR_CONFLICT);
    let zone = json!({"op": "create_vswitch", "id": "vsw-x", "vpc": "vpc-1", "zone": "Zone H",
                      "cidr": "10.0.5.0/24"});
    refused(&mut s, zone, codes::INVALID_ARGUMENT);
    ok(&mut s, vswitch("10.0.5.0/24", Some("2001:db8:1:5::/64")));
    assert_eq!(s.vswitches["vsw-x"].zone, ZONE_H);
    refused(&mut s, json!({"op": "delete_vswitch", "id": "vsw-a"}), codes::DEPENDENCY_VIOLATION);
    ok(&mut s, json!({"op": "delete_vswitch", "id": "vsw-x"}));
}

#[test]
fn a_vswitch_that_a_snat_entry_names_is_kept() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(
        &mut s,
        json!({"op": "create_vswitch", "id": "vsw-x", "vpc": "vpc-1", "zone": ZONE_H,
                      "cidr": "10.0.5.0/24"}),
    );
    ok(
        &mut s,
        json!({"op": "add_snat_entry", "nat_gateway": "ngw-1", "id": "s-1",
                      "source": {"type": "vswitch", "value": "vsw-x"}, "eips": [EIP5]}),
    );
    refused(&mut s, json!({"op": "delete_vswitch", "id": "vsw-x"}), codes::DEPENDENCY_VIOLATION);
}

#[test]
fn instance_types_allow_at_least_one_eni_and_address() {
    let mut s = world();
    let create = |enis: u32, v4: u32| {
        json!({"op": "create_instance_type", "id": "t.x", "max_enis": enis,
               "max_private_ipv4_per_eni": v4, "max_ipv6_per_eni": 0})
    };
    refused(&mut s, create(0, 1), codes::INVALID_ARGUMENT);
    refused(&mut s, create(1, 0), codes::INVALID_ARGUMENT);
    ok(&mut s, create(1, 1));
    refused(&mut s, create(1, 1), "INSTANCE_TYPE_ALREADY_EXISTS");
    ok(&mut s, json!({"op": "delete_instance_type", "id": "t.x"}));
    let in_use = json!({"op": "delete_instance_type", "id": "t.small"});
    refused(&mut s, in_use, codes::DEPENDENCY_VIOLATION);
}

#[test]
fn eips_are_public_unicast_addresses_allocated_once() {
    let mut s = world();
    let allocate =
        |address: &str| json!({"op": "allocate_eip", "address": address, "region": HANGZHOU});
    refused(&mut s, allocate(EIP1), codes::EIP_ALREADY_ALLOCATED);
    for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1", "240.0.0.1"]
    {
        refused(&mut s, allocate(bad), codes::INVALID_ARGUMENT);
    }
    // Inside a VPC: a private address, not an EIP.
    refused(&mut s, allocate("10.0.200.1"), codes::INVALID_ARGUMENT);
    let region = json!({"op": "allocate_eip", "address": "203.0.113.99", "region": "nowhere"});
    refused(&mut s, region, "REGION_NOT_FOUND");
    // Two regions: the region must be named.
    let unnamed = json!({"op": "allocate_eip", "address": "203.0.113.99"});
    refused(&mut s, unnamed.clone(), codes::INVALID_ARGUMENT);
    let zero = json!({"op": "allocate_eip", "address": "203.0.113.99", "region": HANGZHOU,
                      "bandwidth_mbps": 0});
    refused(&mut s, zero, codes::INVALID_ARGUMENT);
    ok(&mut s, allocate("203.0.113.99"));
    assert_eq!(eip(&s, "203.0.113.99").region, HANGZHOU);
    assert_eq!(eip(&s, "203.0.113.99").bandwidth_mbps, None);

    // With one region, it is the default.
    let mut one = State::default();
    refused(&mut one, unnamed.clone(), codes::INVALID_ARGUMENT);
    ok(&mut one, json!({"op": "create_region", "id": TOKYO}));
    ok(&mut one, unnamed);
    assert_eq!(eip(&one, "203.0.113.99").region, TOKYO);
}

#[test]
fn eip_bandwidth_can_be_capped_and_uncapped() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let cap = |mbps: Value| json!({"op": "set_eip_bandwidth", "eip": EIP1, "bandwidth_mbps": mbps});
    ok(&mut s, cap(json!(50)));
    assert_eq!(eip(&s, EIP1).bandwidth_mbps, Some(50));
    refused(&mut s, cap(json!(0)), codes::INVALID_ARGUMENT);
    ok(&mut s, cap(Value::Null));
    assert_eq!(eip(&s, EIP1).bandwidth_mbps, None);
    // The association is untouched.
    assert!(association(&s, EIP1).is_some());
}

#[test]
fn unknown_fields_and_operations_are_not_requests() {
    let unknown_field = json!({"op": "release_eip", "eip": EIP1, "force": true});
    assert!(serde_json::from_value::<Request>(unknown_field).is_err());
    let unknown_op = json!({"op": "edit_private_ip", "eni": "eni-1"});
    assert!(serde_json::from_value::<Request>(unknown_op).is_err());
}
