//! R29: a request, or a list of them, is validated completely and applied atomically.

use super::*;
use crate::model::{Change, Txn, execute};

#[test]
fn r29_run_all_with_a_failing_request_in_the_middle_changes_nothing() {
    let mut s = world();
    let before = s.clone();
    let batch = requests(vec![
        json!({"op": "allocate_eip", "address": "203.0.113.99", "region": HANGZHOU}),
        associate_instance("203.0.113.99", "i-1"),
        assign("eni-1", &["10.0.1.101"]),
        // R07: a classic instance takes no EIP.
        associate_instance(EIP1, "i-classic"),
        json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a"}),
    ]);
    let refusal = s.run_all(&batch).expect_err("the fourth request breaks R07");
    assert_eq!(refusal.code, codes::INSTANCE_NETWORK_CLASSIC);
    assert_eq!(refusal.rule.as_deref(), Some("R07"));
    assert!(refusal.message.starts_with("request 4 of 5: "), "{refusal}");
    assert!(s == before, "a refused batch changed the state");
    assert!(!s.eips.contains_key(&v4("203.0.113.99")));
    assert!(s.owner_of_ipv4(v4("10.0.1.101")).is_none());
    assert!(s.eip_of_instance("i-1").is_none());
    check_indexes(&s);
}

#[test]
fn r29_run_all_applies_every_request_seeing_the_earlier_ones() {
    let mut s = world();
    let batch = requests(vec![
        json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a"}),
        json!({"op": "assign_private_ips", "eni": "eni-new", "count": 1}),
        json!({"op": "allocate_eip", "address": "203.0.113.99", "region": HANGZHOU}),
        associate_eni("203.0.113.99", "eni-new", "10.0.1.3"),
        attach("eni-new", "i-2"),
        associate_mode(EIP1, "eni-2", "multi-eip"),
    ]);
    let (done, change) = s.run_all(&batch).expect("the batch is valid");
    assert_eq!(done.len(), 6);
    assert_eq!(done[0].subject(), Some(Key::new(Kind::Eni, "eni-new")));
    assert_eq!(done[5].warnings.len(), 1);
    assert_eq!(association(&s, "203.0.113.99"), nat("eni-new", "10.0.1.3"));
    assert_eq!(eni(&s, "eni-new").instance.as_deref(), Some("i-2"));
    // One entry per touched resource, created ones with no value before.
    let rows = change.resources();
    let touched: Vec<String> = rows.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(touched, ["eni eni-new", "eip 203.0.113.10", "eip 203.0.113.99"]);
    assert_eq!(rows[0].before, None);
    assert_eq!(
        rows[1].before.as_deref(),
        Some(&Resource::Eip(Eip {
            address: v4(EIP1),
            region: HANGZHOU.into(),
            bandwidth_mbps: None,
            association: None,
        }))
    );
    check_indexes(&s);
}

#[test]
fn r29_a_single_refused_request_names_no_position() {
    let mut s = world();
    let refusal = s.run_all(&requests(vec![associate_instance(EIP1, "i-classic")])).unwrap_err();
    assert!(!refusal.message.starts_with("request"), "{refusal}");
    let empty = s.run_all(&[]).expect("nothing to do");
    assert!(empty.0.is_empty() && empty.1.is_empty());
}

#[test]
fn r29_a_refusal_after_changes_inside_one_request_rolls_them_back() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    ok(&mut s, associate_eni(EIP1, "eni-2", "10.0.1.111"));
    ok(&mut s, associate_mode(EIP2, "eni-1", "cut-through"));
    // assign_private_ips has moved the address when the EIP turns out not to fit.
    refused(
        &mut s,
        json!({"op": "assign_private_ips", "eni": "eni-1", "ips": ["10.0.1.111"],
                           "allow_reassignment": true}),
        codes::ENI_MODE_CONFLICT,
    );
    assert_eq!(s.owner_of_ipv4(v4("10.0.1.111")).map(|e| e.id.as_str()), Some("eni-2"));
}

#[test]
fn r29_txn_rollback_restores_the_state_and_its_indexes() {
    let mut s = world();
    let before = s.clone();
    let mut txn = Txn::begin(&mut s);
    execute(&mut txn, &req(associate_instance(EIP1, "i-1"))).unwrap();
    execute(&mut txn, &req(json!({"op": "release_instance", "id": "i-2"}))).unwrap();
    execute(
        &mut txn,
        &req(json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a",
                                  "primary_ip": I2_IP})),
    )
    .unwrap();
    // The transaction sees its own changes.
    assert_eq!(txn.state().owner_of_ipv4(v4(I2_IP)).map(|e| e.id.as_str()), Some("eni-new"));
    assert!(!txn.pending().is_empty());
    txn.rollback();
    assert!(s == before);
    check_indexes(&s);
    assert_eq!(s.owner_of_ipv4(v4(I2_IP)).map(|e| e.id.as_str()), Some("i-2-eni0"));
    assert!(s.eip_of_instance("i-1").is_none());
}

#[test]
fn r29_txn_commit_reports_what_changed() {
    let mut s = world();
    let mut txn = Txn::begin(&mut s);
    execute(&mut txn, &req(associate_instance(EIP1, "i-1"))).unwrap();
    execute(&mut txn, &req(json!({"op": "delete_eni", "eni": "eni-2"}))).unwrap();
    // Changed and changed back: not reported.
    execute(&mut txn, &req(json!({"op": "stop_instance", "id": "i-1"}))).unwrap();
    execute(&mut txn, &req(json!({"op": "start_instance", "id": "i-1"}))).unwrap();
    let pending = txn.pending();
    let change = txn.commit();
    assert_eq!(pending, change);
    let eip_key = Key::new(Kind::Eip, EIP1);
    let eni_key = Key::new(Kind::Eni, "eni-2");
    let rows = change.resources();
    assert_eq!(rows.iter().map(|c| &c.key).collect::<Vec<_>>(), [&eni_key, &eip_key]);
    assert_eq!(rows[0].after, None);
    assert!(matches!(rows[0].before.as_deref(), Some(Resource::Eni(e)) if e.id == "eni-2"));
    assert!(matches!(&rows[1].after, Some(Resource::Eip(e)) if e.association.is_some()));
    assert!(s.eip_of_instance("i-1").is_some());
    assert!(!s.enis.contains_key("eni-2"));
}

#[test]
fn r29_revert_puts_back_a_committed_change() {
    let mut s = world();
    let before = s.clone();
    let batch = requests(vec![
        associate_instance(EIP1, "i-1"),
        json!({"op": "release_instance", "id": "i-2"}),
        json!({"op": "create_eni", "id": "eni-new", "vswitch": "vsw-a", "primary_ip": I2_IP}),
        json!({"op": "release_eip", "eip": EIP2}),
    ]);
    let (_, change) = s.run_all(&batch).unwrap();
    assert!(s != before);
    s.revert(&change);
    assert!(s == before);
    check_indexes(&s);
    // An empty change reverts nothing.
    s.revert(&Change::default());
    assert!(s == before);
}

#[test]
fn r29_rollback_of_an_eip_moved_between_two_eips_keeps_the_indexes() {
    let mut s = world();
    ok(&mut s, associate_instance(EIP1, "i-1"));
    let before = s.clone();
    // EIP1 leaves i-1 and EIP2 takes its place; then the batch fails. Undoing EIP1 and
    // EIP2 in either order must leave i-1 and its address pointing at EIP1.
    let batch = requests(vec![
        json!({"op": "unassociate_eip", "eip": EIP1}),
        associate_instance(EIP2, "i-1"),
        associate_instance(EIP3, "i-classic"),
    ]);
    s.run_all(&batch).expect_err("the third request breaks R07");
    assert!(s == before);
    check_indexes_against(&s, &before);
    assert_eq!(s.eip_of_instance("i-1").map(|e| e.address), Some(v4(EIP1)));
    assert_eq!(s.eip_of_private_ip(v4(I1_IP)).map(|e| e.address), Some(v4(EIP1)));
}

#[test]
fn r29_rollback_of_an_address_moved_between_two_enis_keeps_the_indexes() {
    let mut s = world();
    ok(&mut s, assign("eni-2", &["10.0.1.111"]));
    let before = s.clone();
    // The address moves from eni-2 to i-2-eni0 (undone in the other key order than it
    // was done), then the batch fails.
    let batch = requests(vec![
        json!({"op": "assign_private_ips", "eni": "i-2-eni0", "ips": ["10.0.1.111"],
               "allow_reassignment": true}),
        associate_instance(EIP3, "i-classic"),
    ]);
    s.run_all(&batch).expect_err("the second request breaks R07");
    assert!(s == before);
    check_indexes_against(&s, &before);
    assert_eq!(s.owner_of_ipv4(v4("10.0.1.111")).map(|e| e.id.as_str()), Some("eni-2"));
}

#[test]
fn r29_an_eip_changed_in_place_twice_is_undone_to_its_first_value() {
    let mut s = world();
    let before = s.clone();
    let bandwidth = json!({"op": "set_eip_bandwidth", "eip": EIP1, "bandwidth_mbps": 5});
    // Refused at the end: both in-place changes of EIP1 are undone.
    let refused = requests(vec![
        bandwidth.clone(),
        associate_instance(EIP1, "i-1"),
        associate_instance(EIP3, "i-classic"),
    ]);
    s.run_all(&refused).expect_err("the third request breaks R07");
    assert!(s == before);
    check_indexes_against(&s, &before);
    // Committed: the change's "before" is the EIP as it was before the first of them.
    let (_, change) =
        s.run_all(&requests(vec![bandwidth, associate_instance(EIP1, "i-1")])).unwrap();
    assert_eq!(change.eips.len(), 1);
    assert_eq!(change.eips[0].before.as_deref(), before.eips.get(&v4(EIP1)));
    let after = change.eips[0].after.as_ref().expect("EIP1 is still there");
    assert_eq!((after.bandwidth_mbps, after.association.is_some()), (Some(5), true));
    assert_eq!(s.eip_of_instance("i-1").map(|e| e.address), Some(v4(EIP1)));
    check_indexes_against(&s, &before);
}

#[test]
fn commit_lists_eips_changed_far_apart_among_many_untouched() {
    // The EIPs now are found by a walk along the state's, which searches when the next
    // changed EIP is far ahead; the undo log keeps EIPs touched in rising order apart from
    // the others. Changes scattered over many untouched EIPs, at both ends, one created
    // between existing ones, in rising order or not, must all be listed, in order.
    for order in ["rising", "falling", "mixed"] {
        let mut s = world();
        let address = |n: u32| Ipv4Addr::from(u32::from(v4("192.0.2.0")) + n);
        let allocate =
            |n: u32| json!({"op": "allocate_eip", "address": address(n), "region": HANGZHOU});
        s.run_all(&requests((0..100).filter(|n| n % 2 == 0).map(allocate).collect()))
            .expect("allocating is valid");
        let bandwidth =
            |n: u32| json!({"op": "set_eip_bandwidth", "eip": address(n), "bandwidth_mbps": 5});
        let mut batch =
            vec![bandwidth(0), bandwidth(2), bandwidth(60), allocate(61), bandwidth(98)];
        match order {
            "falling" => batch.reverse(),
            "mixed" => batch.swap(1, 3),
            _ => {}
        }
        // Touched again: the first value before stays the one listed.
        batch.push(bandwidth(60));
        let before = s.clone();
        let mut refused = batch.clone();
        refused.push(json!({"op": "release_eip", "eip": address(7)}));
        s.run_all(&requests(refused)).expect_err("192.0.2.7 is not allocated");
        assert!(s == before, "{order}: a refused batch changed the state");
        check_indexes(&s);
        let (_, change) = s.run_all(&requests(batch)).expect("the batch is valid");
        let listed: Vec<(Ipv4Addr, &str)> =
            change.eips.iter().map(|c| (c.key, c.action())).collect();
        let expected =
            [(0, "update"), (2, "update"), (60, "update"), (61, "create"), (98, "update")];
        let expected: Vec<(Ipv4Addr, &str)> =
            expected.iter().map(|&(n, action)| (address(n), action)).collect();
        assert_eq!(listed, expected, "{order}");
        for changed in &change.eips {
            assert_eq!(changed.after.as_ref(), s.eips.get(&changed.key), "{order}");
            assert_eq!(changed.before.as_deref(), before.eips.get(&changed.key), "{order}");
        }
    }
}
