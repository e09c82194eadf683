//! Security groups: numbering, the VPC they filter in, the ENIs that use them, their rules,
//! and which group filters an EIP's inbound traffic.

use eipgw_common::{MAX_SECURITY_GROUP_RULES, MAX_SECURITY_GROUPS};

use super::*;

fn create(id: &str, vpc: &str) -> Value {
    json!({"op": "create_security_group", "id": id, "vpc": vpc})
}

fn delete(id: &str) -> Value {
    json!({"op": "delete_security_group", "id": id})
}

fn authorize(id: &str, rule: Value) -> Value {
    json!({"op": "authorize_security_group", "id": id, "rule": rule})
}

fn revoke(id: &str, rule: Value) -> Value {
    json!({"op": "revoke_security_group", "id": id, "rule": rule})
}

fn set_group(eni: &str, group: Option<&str>) -> Value {
    json!({"op": "set_eni_security_group", "eni": eni, "security_group": group})
}

/// A rule in its JSON form; `ports` is `[min, max]`.
fn rule(protocol: &str, ports: Option<[u16; 2]>, source: &str) -> Value {
    let ports = ports.map(|[min, max]| json!({"min": min, "max": max}));
    json!({"protocol": protocol, "ports": ports, "source": source})
}

fn tcp(port: u16) -> Value {
    rule("tcp", Some([port, port]), "0.0.0.0/0")
}

#[track_caller]
fn group<'s>(state: &'s State, id: &str) -> &'s SecurityGroup {
    state.security_groups.get(id).unwrap_or_else(|| panic!("security group {id} does not exist"))
}

fn rules_of(state: &State, id: &str) -> Vec<String> {
    group(state, id).rules.iter().map(ToString::to_string).collect()
}

fn group_of_eip(state: &State, address: &str) -> Option<Id> {
    state.security_group_of_eip(eip(state, address)).map(|g| g.id.clone())
}

// Creation and numbering.

#[test]
fn a_group_gets_the_smallest_free_number_and_a_deleted_ones_number_is_reused() {
    let mut s = world();
    let done = ok(&mut s, create("sg-a", "vpc-1"));
    assert_eq!(done.subject(), Some(Key::new(Kind::SecurityGroup, "sg-a")));
    assert_eq!(group(&s, "sg-a").number, 3, "sg-web and sg-tokyo hold 1 and 2");
    assert_eq!(group(&s, "sg-a").vpc, "vpc-1");
    assert!(group(&s, "sg-a").rules.is_empty());
    ok(&mut s, create("sg-b", "vpc-1"));
    assert_eq!(group(&s, "sg-b").number, 4);
    ok(&mut s, delete("sg-web"));
    assert!(!s.security_groups.contains_key("sg-web"));
    ok(&mut s, create("sg-c", "vpc-gw"));
    assert_eq!(group(&s, "sg-c").number, 1, "the lowest number came free");
    ok(&mut s, create("sg-d", "vpc-gw"));
    assert_eq!(group(&s, "sg-d").number, 5);
}

#[test]
fn a_group_needs_a_valid_new_id_and_an_existing_vpc() {
    let mut s = world();
    refused(&mut s, create("SG Web", "vpc-1"), codes::INVALID_ARGUMENT);
    refused(&mut s, create("sg-web", "vpc-1"), "SECURITY_GROUP_ALREADY_EXISTS");
    refused(&mut s, create("sg-new", "vpc-none"), "VPC_NOT_FOUND");
    refused(&mut s, delete("sg-none"), "SECURITY_GROUP_NOT_FOUND");
}

#[test]
fn no_group_is_created_once_every_number_is_taken() {
    let mut s = world();
    let taken = s.security_groups.len() as u32;
    let fill: Vec<Request> =
        (taken..MAX_SECURITY_GROUPS).map(|n| req(create(&format!("sg-{n}"), "vpc-1"))).collect();
    s.run_all(&fill).expect("groups up to the limit are created");
    assert_eq!(s.security_groups.len(), MAX_SECURITY_GROUPS as usize);
    let numbers: BTreeSet<u32> = s.security_groups.values().map(|g| g.number).collect();
    assert_eq!(numbers, (1..=MAX_SECURITY_GROUPS).collect::<BTreeSet<_>>());
    refused(&mut s, create("sg-one-too-many", "vpc-1"), codes::SECURITY_GROUP_LIMIT);
    ok(&mut s, delete("sg-100"));
    ok(&mut s, create("sg-one-too-many", "vpc-1"));
    assert_eq!(group(&s, "sg-one-too-many").number, 101);
}

// Which ENIs a group may filter: those of its own VPC.

#[test]
fn an_eni_is_created_with_a_group_of_its_vpc_or_none() {
    let mut s = world();
    let with = |id: &str, group: Option<&str>| json!({"op": "create_eni", "id": id, "vswitch": "vsw-b", "security_group": group});
    refused(&mut s, with("eni-new", Some("sg-none")), "SECURITY_GROUP_NOT_FOUND");
    refused(&mut s, with("eni-new", Some("sg-tokyo")), codes::SECURITY_GROUP_VPC_MISMATCH);
    ok(&mut s, with("eni-web", Some("sg-web")));
    assert_eq!(eni(&s, "eni-web").security_group.as_deref(), Some("sg-web"));
    ok(&mut s, with("eni-open", None));
    assert_eq!(eni(&s, "eni-open").security_group, None);
    let using: Vec<&str> = s.enis_of_security_group("sg-web").map(|e| e.id.as_str()).collect();
    assert_eq!(using, ["eni-web"]);
}

#[test]
fn an_instance_is_created_with_a_group_of_its_vpc_or_none() {
    let mut s = world();
    let with = |id: &str, group: Option<&str>| {
        json!({"op": "create_instance", "id": id, "region": HANGZHOU, "zone": ZONE_H,
               "instance_type": "t.small", "vswitch": "vsw-a", "security_group": group})
    };
    refused(&mut s, with("i-new", Some("sg-none")), "SECURITY_GROUP_NOT_FOUND");
    refused(&mut s, with("i-new", Some("sg-tokyo")), codes::SECURITY_GROUP_VPC_MISMATCH);
    ok(&mut s, with("i-web", Some("sg-web")));
    assert_eq!(eni(&s, "i-web-eni0").security_group.as_deref(), Some("sg-web"));
    ok(&mut s, with("i-open", None));
    assert_eq!(eni(&s, "i-open-eni0").security_group, None);
    // A classic instance has no ENI to filter.
    let classic = json!({"op": "create_instance", "id": "i-classic-2", "region": HANGZHOU,
                         "zone": ZONE_H, "instance_type": "t.small", "network": "classic",
                         "security_group": "sg-web"});
    refused(&mut s, classic, codes::INVALID_ARGUMENT);
}

#[test]
fn an_enis_group_is_set_and_cleared_attached_or_not_within_its_vpc() {
    let mut s = world();
    ok(&mut s, attach("eni-2", "i-2"));
    for id in ["eni-1", "eni-2", "i-1-eni0"] {
        let done = ok(&mut s, set_group(id, Some("sg-web")));
        assert_eq!(done.subject(), Some(Key::new(Kind::Eni, id)));
        assert_eq!(eni(&s, id).security_group.as_deref(), Some("sg-web"));
    }
    refused(&mut s, set_group("eni-1", Some("sg-tokyo")), codes::SECURITY_GROUP_VPC_MISMATCH);
    refused(&mut s, set_group("eni-1", Some("sg-none")), "SECURITY_GROUP_NOT_FOUND");
    refused(&mut s, set_group("eni-none", Some("sg-web")), "ENI_NOT_FOUND");
    ok(&mut s, set_group("eni-tokyo", Some("sg-tokyo")));
    ok(&mut s, set_group("eni-2", None));
    assert_eq!(eni(&s, "eni-2").security_group, None);
    // A missing `security_group` is None too.
    ok(&mut s, json!({"op": "set_eni_security_group", "eni": "eni-1"}));
    assert_eq!(eni(&s, "eni-1").security_group, None);
    let using: Vec<&str> = s.enis_of_security_group("sg-web").map(|e| e.id.as_str()).collect();
    assert_eq!(using, ["i-1-eni0"]);
}

#[test]
fn a_group_is_deleted_only_once_no_eni_uses_it() {
    let mut s = world();
    ok(&mut s, set_group("eni-1", Some("sg-web")));
    ok(&mut s, set_group("i-1-eni0", Some("sg-web")));
    let refusal = refused(&mut s, delete("sg-web"), codes::DEPENDENCY_VIOLATION);
    assert!(refusal.message.contains("ENI "), "{refusal}");
    ok(&mut s, set_group("eni-1", None));
    refused(&mut s, delete("sg-web"), codes::DEPENDENCY_VIOLATION);
    // Releasing the instance takes its primary ENI, and its use of the group, along.
    ok(&mut s, json!({"op": "release_instance", "id": "i-1"}));
    let done = ok(&mut s, delete("sg-web"));
    assert_eq!(done.subject(), None);
    assert!(!s.security_groups.contains_key("sg-web"));
}

#[test]
fn a_vpc_with_security_groups_cannot_be_deleted() {
    let mut s = world();
    ok(&mut s, create_empty_vpc());
    ok(&mut s, create("sg-empty", "vpc-empty"));
    let refusal = refused(
        &mut s,
        json!({"op": "delete_vpc", "id": "vpc-empty"}),
        codes::DEPENDENCY_VIOLATION,
    );
    assert!(refusal.message.contains("security group sg-empty"), "{refusal}");
    ok(&mut s, delete("sg-empty"));
    ok(&mut s, json!({"op": "delete_vpc", "id": "vpc-empty"}));
}

fn create_empty_vpc() -> Value {
    json!({"op": "create_vpc", "id": "vpc-empty", "region": HANGZHOU, "cidr": "10.9.0.0/16"})
}

// Rules.

#[test]
fn rules_are_authorized_in_order_and_shown_as_people_write_them() {
    let mut s = world();
    let done = ok(&mut s, authorize("sg-web", tcp(80)));
    assert_eq!(done.subject(), Some(Key::new(Kind::SecurityGroup, "sg-web")));
    ok(&mut s, authorize("sg-web", rule("tcp", Some([8000, 8100]), "198.51.100.0/24")));
    ok(&mut s, authorize("sg-web", rule("udp", Some([1, 65535]), "0.0.0.0/0")));
    ok(&mut s, authorize("sg-web", rule("icmp", None, "0.0.0.0/0")));
    ok(&mut s, authorize("sg-web", json!({"protocol": "all", "source": "10.0.0.0/8"})));
    assert_eq!(
        rules_of(&s, "sg-web"),
        [
            "tcp 80 from 0.0.0.0/0",
            "tcp 8000-8100 from 198.51.100.0/24",
            "udp 1-65535 from 0.0.0.0/0",
            "icmp from 0.0.0.0/0",
            "all from 10.0.0.0/8",
        ]
    );
    assert_eq!(
        group(&s, "sg-web").rules[1],
        SecurityGroupRule {
            protocol: RuleProtocol::Tcp,
            ports: Some(PortRange { min: 8000, max: 8100 }),
            source: "198.51.100.0/24".parse().unwrap(),
        }
    );
    assert!(group(&s, "sg-tokyo").rules.is_empty(), "rules belong to one group");
}

#[test]
fn tcp_and_udp_rules_need_valid_ports_and_icmp_and_all_take_none() {
    let mut s = world();
    for protocol in ["tcp", "udp"] {
        refused(&mut s, authorize("sg-web", rule(protocol, None, "0.0.0.0/0")), "INVALID_ARGUMENT");
        let zero = rule(protocol, Some([0, 80]), "0.0.0.0/0");
        let refusal = refused(&mut s, authorize("sg-web", zero), codes::INVALID_ARGUMENT);
        assert!(refusal.message.contains("port 0"), "{refusal}");
        let reversed = rule(protocol, Some([9, 3]), "0.0.0.0/0");
        let refusal = refused(&mut s, authorize("sg-web", reversed), codes::INVALID_ARGUMENT);
        assert!(refusal.message.contains("9-3"), "{refusal}");
    }
    for protocol in ["icmp", "all"] {
        let ports = rule(protocol, Some([80, 80]), "0.0.0.0/0");
        refused(&mut s, authorize("sg-web", ports), codes::INVALID_ARGUMENT);
        ok(&mut s, authorize("sg-web", rule(protocol, None, "0.0.0.0/0")));
    }
    ok(&mut s, authorize("sg-web", rule("udp", Some([65535, 65535]), "0.0.0.0/0")));
    // The rule's JSON is strict: no unknown fields, no unknown protocol, no port 65536.
    let strict = [
        json!({"protocol": "tcp", "ports": {"min": 1, "max": 2}, "source": "0.0.0.0/0", "x": 1}),
        json!({"protocol": "sctp", "source": "0.0.0.0/0"}),
        json!({"protocol": "tcp", "ports": {"min": 1, "max": 65536}, "source": "0.0.0.0/0"}),
        json!({"protocol": "tcp", "ports": {"min": 1, "max": 2}, "source": "10.0.0.0/33"}),
        json!({"protocol": "tcp", "ports": {"min": 1, "max": 2}}),
    ];
    for rule in strict {
        let request = authorize("sg-web", rule);
        assert!(serde_json::from_value::<Request>(request.clone()).is_err(), "{request}");
    }
}

#[test]
fn a_source_is_stored_truncated_so_two_spellings_are_one_rule() {
    let mut s = world();
    ok(&mut s, authorize("sg-web", rule("tcp", Some([22, 22]), "198.51.100.7/24")));
    assert_eq!(rules_of(&s, "sg-web"), ["tcp 22 from 198.51.100.0/24"]);
    let same = rule("tcp", Some([22, 22]), "198.51.100.0/24");
    let refusal = refused(&mut s, authorize("sg-web", same), codes::SECURITY_GROUP_RULE_EXISTS);
    assert!(refusal.message.contains("tcp 22 from 198.51.100.0/24"), "{refusal}");
    // Revoked by either spelling.
    ok(&mut s, revoke("sg-web", rule("tcp", Some([22, 22]), "198.51.100.99/24")));
    assert!(group(&s, "sg-web").rules.is_empty());
}

#[test]
fn a_duplicate_rule_is_refused_but_a_different_one_is_not() {
    let mut s = world();
    ok(&mut s, authorize("sg-web", tcp(443)));
    refused(&mut s, authorize("sg-web", tcp(443)), codes::SECURITY_GROUP_RULE_EXISTS);
    ok(&mut s, authorize("sg-web", rule("udp", Some([443, 443]), "0.0.0.0/0")));
    ok(&mut s, authorize("sg-web", rule("tcp", Some([443, 444]), "0.0.0.0/0")));
    ok(&mut s, authorize("sg-web", rule("tcp", Some([443, 443]), "10.0.0.0/8")));
    ok(&mut s, authorize("sg-tokyo", tcp(443)));
    assert_eq!(rules_of(&s, "sg-web").len(), 4);
}

#[test]
fn a_group_holds_at_most_the_data_planes_rule_limit() {
    let mut s = world();
    assert_eq!(MAX_SECURITY_GROUP_RULES, 32);
    for port in 1..=MAX_SECURITY_GROUP_RULES as u16 {
        ok(&mut s, authorize("sg-web", tcp(port)));
    }
    let refusal = refused(&mut s, authorize("sg-web", tcp(1000)), codes::SECURITY_GROUP_RULE_LIMIT);
    assert!(refusal.message.contains("32"), "{refusal}");
    // A duplicate is still named as one.
    refused(&mut s, authorize("sg-web", tcp(1)), codes::SECURITY_GROUP_RULE_EXISTS);
    ok(&mut s, revoke("sg-web", tcp(7)));
    ok(&mut s, authorize("sg-web", tcp(1000)));
    assert_eq!(rules_of(&s, "sg-web").last().map(String::as_str), Some("tcp 1000 from 0.0.0.0/0"));
}

#[test]
fn revoking_removes_exactly_that_rule_and_a_missing_one_is_refused() {
    let mut s = world();
    ok(&mut s, authorize("sg-web", tcp(80)));
    ok(&mut s, authorize("sg-web", tcp(443)));
    ok(&mut s, authorize("sg-web", rule("icmp", None, "0.0.0.0/0")));
    let missing = revoke("sg-web", tcp(8080));
    refused(&mut s, missing, codes::SECURITY_GROUP_RULE_NOT_FOUND);
    refused(&mut s, revoke("sg-tokyo", tcp(80)), codes::SECURITY_GROUP_RULE_NOT_FOUND);
    refused(&mut s, revoke("sg-none", tcp(80)), "SECURITY_GROUP_NOT_FOUND");
    refused(&mut s, revoke("sg-web", rule("icmp", Some([1, 1]), "0.0.0.0/0")), "INVALID_ARGUMENT");
    let done = ok(&mut s, revoke("sg-web", tcp(443)));
    assert_eq!(done.subject(), Some(Key::new(Kind::SecurityGroup, "sg-web")));
    assert_eq!(rules_of(&s, "sg-web"), ["tcp 80 from 0.0.0.0/0", "icmp from 0.0.0.0/0"]);
    refused(&mut s, revoke("sg-web", tcp(443)), codes::SECURITY_GROUP_RULE_NOT_FOUND);
}

#[test]
fn a_refused_request_in_a_document_leaves_no_group_or_rule_behind() {
    let mut s = world();
    let before = s.clone();
    let document: Vec<Request> = [
        create("sg-new", "vpc-1"),
        authorize("sg-new", tcp(80)),
        set_group("eni-1", Some("sg-new")),
        authorize("sg-web", tcp(22)),
        set_group("eni-2", Some("sg-tokyo")),
    ]
    .into_iter()
    .map(req)
    .collect();
    let refusal = s.run_all(&document).expect_err("the last request is refused");
    assert_eq!(refusal.code, codes::SECURITY_GROUP_VPC_MISMATCH);
    assert!(refusal.message.starts_with("request 5 of 5"), "{refusal}");
    assert!(s == before, "the refused document changed the state");
    check_indexes_against(&s, &before);
    assert_eq!(s.enis_of_security_group("sg-new").count(), 0);
}

// The group that filters an EIP's traffic.

#[test]
fn an_eips_group_is_that_of_the_eni_its_association_lands_on() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, create("sg-db", "vpc-1"));
    ok(&mut s, set_group("i-1-eni0", Some("sg-web")));
    ok(&mut s, set_group("eni-1", Some("sg-db")));
    ok(&mut s, set_group("eni-2", Some("sg-web")));
    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, associate_mode(EIP2, "eni-1", "cut-through"));
    ok(&mut s, associate_mode(EIP3, "eni-2", "multi-eip"));
    ok(&mut s, associate_eni(EIP4, "i-2-eni0", I2_IP));
    assert_eq!(group_of_eip(&s, EIP1).as_deref(), Some("sg-web"), "instance: its primary ENI");
    assert_eq!(group_of_eip(&s, EIP2).as_deref(), Some("sg-db"), "cut-through ENI");
    assert_eq!(group_of_eip(&s, EIP3).as_deref(), Some("sg-web"), "multi-EIP ENI");
    assert_eq!(group_of_eip(&s, EIP4), None, "NAT mode on an unfiltered ENI");
    assert_eq!(group_of_eip(&s, EIP5), None, "owned by a NAT gateway");
    assert_eq!(group_of_eip(&s, "203.0.113.20"), None, "unassociated");
    // NAT mode on a filtered ENI, and the group following a change of the ENI's group.
    ok(&mut s, set_group("i-2-eni0", Some("sg-db")));
    assert_eq!(group_of_eip(&s, EIP4).as_deref(), Some("sg-db"));
    ok(&mut s, set_group("i-1-eni0", None));
    assert_eq!(group_of_eip(&s, EIP1), None);
    // A secondary address of a filtered ENI.
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP3}));
    ok(&mut s, associate_eni(EIP3, "eni-2", "10.0.1.111"));
    assert_eq!(group_of_eip(&s, EIP3).as_deref(), Some("sg-web"));
    let group = s.security_group_of_eip(eip(&s, EIP3)).expect("filtered");
    assert_eq!(group.number, 1);
}

#[test]
fn a_group_is_described_with_its_rules_and_the_enis_it_filters() {
    let mut s = world();
    ok(&mut s, authorize("sg-web", tcp(80)));
    ok(&mut s, set_group("eni-1", Some("sg-web")));
    ok(&mut s, set_group("i-1-eni0", Some("sg-web")));
    let shown = describe(&s, &Key::new(Kind::SecurityGroup, "sg-web")).expect("described");
    assert_eq!(shown["resource"], "security_group");
    assert_eq!(shown["vpc"], "vpc-1");
    assert_eq!(shown["number"], 1);
    assert_eq!(
        shown["rules"],
        json!([{"protocol": "tcp", "ports": {"min": 80, "max": 80}, "source": "0.0.0.0/0"}])
    );
    assert_eq!(shown["enis"], json!(["eni-1", "i-1-eni0"]));
    let filtered = describe(&s, &Key::new(Kind::Eni, "eni-1")).expect("described");
    assert_eq!(filtered["security_group"], "sg-web");
    let open = describe(&s, &Key::new(Kind::Eni, "eni-2")).expect("described");
    assert_eq!(open["security_group"], Value::Null);
    assert_eq!(Kind::from_name("security_group"), Some(Kind::SecurityGroup));
}
