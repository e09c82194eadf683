//! `eipctl apply` at scale: one document with 100k EIP associations is validated and
//! applied as one transaction, and the pinned maps hold every mapping afterwards. (How long
//! it takes is measured by `cargo xtask bench`, not asserted here.)

use std::time::Instant;

use aya::maps::{Array, HashMap, Map, MapData};
use eipgw::client::{CallError, Client};
use eipgw_common::{
    EIP_LIMITED, EipEntry, EipLimits, MAP_EIP_LIMITS, MAP_EIPS, MAP_PRIVATE_IPS, MODE_NAT,
    PrivateEntry,
};
use eipgw_tests::{
    AgentProcess, Topology, must,
    scale::{IPS_PER_ENI, associations_document, eip, private_ip},
    topology::VPC_DOCUMENT,
};
use serde_json::{Value, json};

const ASSOCIATIONS: u32 = 100_000;

#[test]
fn one_document_applies_100k_associations_as_one_transaction() {
    eipgw_tests::require_root();
    let topology = must(Topology::create());
    let mut agent = must(AgentProcess::start_with(&topology, &["--max-mappings", "131072"]));
    must(agent.apply_document(VPC_DOCUMENT));

    let path = topology.dir().join("scale.json");
    std::fs::write(&path, associations_document(ASSOCIATIONS)).expect("writing the document");
    let path = path.to_string_lossy().into_owned();

    // A dry run validates everything and keeps nothing. Asked for progress, the agent
    // streams how far it has got before the answer (what `eipctl apply` draws as a bar).
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut body = document.clone();
    body["dry_run"] = json!(true);
    body["progress"] = json!(true);
    let (mut progress, mut answers) = (Vec::new(), Vec::new());
    Client::new(agent.socket())
        .post_lines("/v1/apply", &body, |line| {
            let event: Value = serde_json::from_slice(line).expect("an NDJSON line");
            match event.get("progress") {
                Some(p) => progress.push(p["done"].as_u64().expect("done")),
                None => answers.push(event),
            }
        })
        .unwrap_or_else(|e| panic!("dry run: {e}"));
    assert!(progress.len() > 100, "only {} progress lines", progress.len());
    assert!(progress.is_sorted(), "progress went backwards");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["answer"]["applied"], false);
    let listed = must(agent.eipctl_ok(&["--output", "json", "eip", "list"]));
    assert_eq!(listed.trim(), "[]", "a dry run changed something");

    let started = Instant::now();
    let out = must(agent.eipctl_ok(&["apply", "--progress", &path]));
    eprintln!("applied in {:.2?}:\n{out}", started.elapsed());
    // Too many to list: the agent counts them (the scale VPC, its vSwitch, an ENI per
    // 1000 addresses, and the EIPs), and the table shows the counts.
    let enis = ASSOCIATIONS.div_ceil(IPS_PER_ENI);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    for expected in [
        vec!["CHANGE", "KIND", "COUNT"],
        vec!["create", "eip", &ASSOCIATIONS.to_string()],
        vec!["create", "eni", &enis.to_string()],
        vec!["create", "vpc", "1"],
        vec!["create", "vswitch", "1"],
    ] {
        assert!(rows.contains(&expected), "no row {expected:?} in:\n{out}");
    }
    let requests = 2 + 2 * enis + 2 * ASSOCIATIONS;
    let changed = ASSOCIATIONS + enis + 2;
    assert!(
        out.contains(&format!("applied {requests} requests, {changed} resources changed")),
        "{out}"
    );

    // The maps hold every mapping: read the pinned maps themselves.
    let eips: HashMap<MapData, u32, EipEntry> = topology.pinned_hash_map(MAP_EIPS);
    let private: HashMap<MapData, u32, PrivateEntry> = topology.pinned_hash_map(MAP_PRIVATE_IPS);
    assert_eq!(eips.keys().count(), ASSOCIATIONS as usize);
    assert_eq!(private.keys().count(), ASSOCIATIONS as usize);
    for n in [0, 1, 999, 1000, 54_321, ASSOCIATIONS - 1] {
        let key = u32::from_ne_bytes(eip(n).octets());
        let entry = eips.get(&key, 0).unwrap_or_else(|e| panic!("EIP {} missing: {e}", eip(n)));
        assert_eq!(entry.mode, MODE_NAT);
        assert_eq!(entry.private_addr, u32::from_ne_bytes(private_ip(n).octets()));
        let back =
            private.get(&u32::from_ne_bytes(private_ip(n).octets()), 0).expect("private entry");
        assert_eq!(back.eip_addr, key);
    }

    // A refused document (its last request breaks R02) changes nothing at all.
    let bad = json!({"requests": [
        {"op": "allocate_eip", "address": "203.0.113.77"},
        {"op": "associate_eip", "eip": "203.0.113.77", "private_ip": private_ip(5)}
    ]});
    std::fs::write(topology.dir().join("bad.json"), bad.to_string()).expect("writing");
    let out = must(agent.eipctl(&["apply", &topology.dir().join("bad.json").to_string_lossy()]));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PRIVATE_IP_HAS_EIP"));
    // The agent reads a document while its requests run, and still reads all of it: a
    // refusal names its request among all of them, and a document malformed after its
    // refused request is answered as malformed.
    let client = Client::new(agent.socket());
    let refusal_with_last = |last: Value| {
        let mut requests = bad["requests"].as_array().expect("a list").clone();
        requests.extend(std::iter::repeat_n(json!({"op": "create_region", "id": "r2"}), 20_000));
        requests.push(last);
        match client.post::<_, Value>("/v1/apply", &json!({"requests": requests})) {
            Err(CallError::Refused(refusal)) => refusal,
            other => panic!("not refused: {other:?}"),
        }
    };
    let refusal = refusal_with_last(json!({"op": "create_region", "id": "r3"}));
    assert_eq!(refusal.code, "PRIVATE_IP_HAS_EIP", "{refusal:?}");
    assert!(refusal.message.starts_with("request 2 of 20003: "), "{refusal:?}");
    let refusal = refusal_with_last(json!({"op": "create_region"}));
    assert_eq!(refusal.code, "INVALID_ARGUMENT", "{refusal:?}");
    assert!(refusal.message.starts_with("malformed request: missing field `id`"), "{refusal:?}");
    let shown = agent.eipctl(&["eip", "show", "203.0.113.77"]).expect("eipctl");
    assert_eq!(shown.status.code(), Some(3), "the refused document allocated its EIP");
    assert_eq!(eips.keys().count(), ASSOCIATIONS as usize);

    // A restarted agent finds the mappings in the pinned maps and keeps every EIP's counter
    // slot; slots 0 to 99 999 are all taken, so a new EIP gets the next one.
    let eip_key = |n: u32| u32::from_ne_bytes(eip(n).octets());
    let slots = |eips: &HashMap<MapData, u32, EipEntry>| -> Vec<u32> {
        eips.iter().map(|row| row.expect("reading EIPS").1.stats_slot).collect()
    };
    let mut before = slots(&eips);
    before.sort_unstable();
    assert_eq!(before, (0..ASSOCIATIONS).collect::<Vec<_>>());
    let sampled = eips.get(&eip_key(54_321), 0).expect("EIP 54321").stats_slot;
    // One EIP has a cap when the agent restarts; the new agent knows it is there, and
    // clearing it takes it out of the maps.
    let capped = eip(777).to_string();
    must(agent.eipctl_ok(&["eip", "set-bandwidth", &capped, "--bandwidth", "5"]));
    let mut limits: Array<MapData, EipLimits> = Array::try_from(Map::Array(
        MapData::from_pin(topology.pin_dir().join(MAP_EIP_LIMITS)).expect("pinned map"),
    ))
    .expect("EIP_LIMITS");
    let capped_entry = || eips.get(&eip_key(777), 0).expect("EIP 777");
    assert_eq!(capped_entry().flags, EIP_LIMITED);
    let cap = limits.get(&capped_entry().stats_slot, 0).unwrap();
    assert_ne!(cap, EipLimits::default());
    must(agent.stop(libc::SIGKILL));
    // Limits that no EIP of the state has, as a crash between two writes could leave them:
    // the new agent reads every slot's limits and clears these.
    let stale_slot = eips.get(&eip_key(888), 0).expect("EIP 888").stats_slot;
    limits.set(stale_slot, &cap, 0).expect("writing stale limits");
    must(agent.start_again());
    assert_eq!(limits.get(&stale_slot, 0).unwrap(), EipLimits::default(), "stale limits kept");
    assert_eq!(eips.get(&eip_key(54_321), 0).expect("EIP 54321").stats_slot, sampled);
    must(agent.eipctl_ok(&["eip", "set-bandwidth", &capped]));
    assert_eq!(capped_entry().flags, 0);
    assert_eq!(limits.get(&capped_entry().stats_slot, 0).unwrap(), EipLimits::default());
    must(agent.eipctl_ok(&["eip", "allocate", "203.0.113.78"]));
    let new = u32::from_ne_bytes([203, 0, 113, 78]);
    assert_eq!(eips.get(&new, 0).expect("the new EIP").stats_slot, ASSOCIATIONS);
    let mut after = slots(&eips);
    after.sort_unstable();
    assert_eq!(after, (0..=ASSOCIATIONS).collect::<Vec<_>>());
}
