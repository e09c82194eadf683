//! R30: every resource can be listed and described with its state.

use super::*;

#[track_caller]
fn show(state: &State, kind: Kind, id: &str) -> Value {
    describe(state, &Key::new(kind, id))
        .unwrap_or_else(|| panic!("{} {id} is not described", kind.name()))
}

#[test]
fn r30_every_resource_can_be_listed_and_described() {
    let mut s = world();
    with_nat_gateway(&mut s);
    let mut total = 0;
    for kind in Kind::ALL {
        let ids = s.ids(kind);
        assert!(!ids.is_empty(), "no {} in the fixture", kind.name());
        for id in ids {
            let value = show(&s, kind, &id);
            assert_eq!(value["resource"], kind.name(), "{value}");
            total += 1;
        }
    }
    assert_eq!(total, s.resources().count());
    assert_eq!(Kind::from_name("nat_gateway"), Some(Kind::NatGateway));
    assert_eq!(Kind::from_name("vswitch"), Some(Kind::VSwitch));
}

#[test]
fn r30_unknown_resource_is_not_described() {
    let s = world();
    assert_eq!(describe(&s, &Key::new(Kind::Instance, "i-none")), None);
    assert_eq!(describe(&s, &Key::new(Kind::Eip, "203.0.113.99")), None);
    assert_eq!(describe(&s, &Key::new(Kind::Eip, "not-an-address")), None);
    assert_eq!(Kind::from_name("bucket"), None);
}

#[test]
fn r30_eip_shows_available_then_in_use_with_its_resource_ip_and_mode() {
    let mut s = world();
    let available = show(&s, Kind::Eip, EIP1);
    assert_eq!(available["status"], "available");
    assert_eq!(available["address"], EIP1);
    assert_eq!(available["region"], HANGZHOU);
    for field in ["resource_type", "resource_id", "private_ip", "mode"] {
        assert_eq!(available[field], Value::Null, "{field}");
    }

    ok(&mut s, associate_instance(EIP1, "i-1"));
    let in_use = show(&s, Kind::Eip, EIP1);
    assert_eq!(in_use["status"], "in_use");
    assert_eq!(in_use["resource_type"], "instance");
    assert_eq!(in_use["resource_id"], "i-1");
    assert_eq!(in_use["private_ip"], I1_IP);
    assert_eq!(in_use["mode"], "nat");

    ok(&mut s, associate_eni(EIP2, "eni-1", ENI1_IP));
    let eni_nat = show(&s, Kind::Eip, EIP2);
    assert_eq!(
        (
            &eni_nat["resource_type"],
            &eni_nat["resource_id"],
            &eni_nat["private_ip"],
            &eni_nat["mode"]
        ),
        (&json!("eni"), &json!("eni-1"), &json!(ENI1_IP), &json!("nat"))
    );

    ok(&mut s, associate_mode(EIP3, "eni-2", "cut-through"));
    let cut_through = show(&s, Kind::Eip, EIP3);
    assert_eq!(cut_through["status"], "in_use");
    assert_eq!(cut_through["resource_id"], "eni-2");
    assert_eq!(cut_through["private_ip"], Value::Null);
    assert_eq!(cut_through["mode"], "cut-through");

    ok(&mut s, associate_mode(EIP4, "eni-zone-i", "multi-eip"));
    assert_eq!(show(&s, Kind::Eip, EIP4)["mode"], "multi-eip");

    with_nat_gateway(&mut s);
    let gateway = show(&s, Kind::Eip, EIP5);
    assert_eq!(gateway["status"], "in_use");
    assert_eq!(gateway["resource_type"], "nat_gateway");
    assert_eq!(gateway["resource_id"], "ngw-1");
    assert_eq!(gateway["mode"], Value::Null);

    // Back to available when unassociated.
    ok(&mut s, json!({"op": "unassociate_eip", "eip": EIP1}));
    assert_eq!(show(&s, Kind::Eip, EIP1)["status"], "available");
    assert_eq!(show(&s, Kind::Eip, EIP1)["resource_id"], Value::Null);
}

#[test]
fn r30_instance_shows_its_eip_address_and_enis() {
    let mut s = world();
    let plain = show(&s, Kind::Instance, "i-1");
    assert_eq!(plain["eip"], Value::Null);
    assert_eq!(plain["private_ip"], I1_IP);
    assert_eq!(plain["state"], "running");
    assert_eq!(plain["enis"], json!(["i-1-eni0"]));

    ok(&mut s, associate_instance(EIP1, "i-1"));
    ok(&mut s, attach("eni-1", "i-1"));
    let described = show(&s, Kind::Instance, "i-1");
    assert_eq!(described["eip"], EIP1);
    assert_eq!(described["enis"], json!(["eni-1", "i-1-eni0"]));
    assert_eq!(described["primary_eni"], "i-1-eni0");

    let classic = show(&s, Kind::Instance, "i-classic");
    assert_eq!(classic["network"], "classic");
    assert_eq!(classic["private_ip"], Value::Null);
    assert_eq!(classic["enis"], json!([]));
    assert_eq!(show(&s, Kind::Instance, "i-fixed")["fixed_public_ip"], FIXED_IP);
    assert_eq!(show(&s, Kind::Instance, "i-pending")["state"], "pending");
}

#[test]
fn r30_eni_shows_its_attachment_and_eips() {
    let mut s = world();
    let detached = show(&s, Kind::Eni, "eni-1");
    assert_eq!(detached["status"], "available");
    assert_eq!(detached["kind"], "secondary");
    assert_eq!(detached["eips"], json!([]));

    ok(&mut s, assign("eni-1", &["10.0.1.101"]));
    ok(&mut s, associate_eni(EIP1, "eni-1", ENI1_IP));
    ok(&mut s, associate_eni(EIP2, "eni-1", "10.0.1.101"));
    ok(&mut s, attach("eni-1", "i-1"));
    let attached = show(&s, Kind::Eni, "eni-1");
    assert_eq!(attached["status"], "in_use");
    assert_eq!(attached["instance"], "i-1");
    assert_eq!(attached["eips"], json!([EIP1, EIP2]));
    assert_eq!(attached["secondary_ips"], json!(["10.0.1.101"]));

    // A primary ENI shows its instance's direct EIP.
    ok(&mut s, associate_instance(EIP3, "i-2"));
    let primary = show(&s, Kind::Eni, "i-2-eni0");
    assert_eq!(primary["kind"], "primary");
    assert_eq!(primary["eips"], json!([EIP3]));
}

#[test]
fn r30_nat_gateway_shows_its_eips_and_entries() {
    let mut s = world();
    with_nat_gateway(&mut s);
    ok(&mut s, dnat_port("web", EIP5, "tcp", 80, I1_IP));
    let gateway = show(&s, Kind::NatGateway, "ngw-1");
    assert_eq!(gateway["eips"], json!([EIP5]));
    assert_eq!(gateway["eip_quota"], 20);
    assert_eq!(gateway["dnat_entries"]["web"]["mapping"]["public_port"], 80);
    let vpc = show(&s, Kind::Vpc, "vpc-gw");
    assert_eq!(vpc["ipv4_gateway"], true);
}
