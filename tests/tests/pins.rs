//! What a starting agent does with the pinned maps an earlier agent left when they are not
//! what its program defines: it keeps their sizes, and carries the entries of a map made
//! with other flags into a new one before its program takes over, so the EIP keeps
//! carrying traffic.

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, MapData},
};
use eipgw_common::{
    EipEntry, MAP_EIP_LIMITS, MAP_EIPS, MAP_PRIVATE_IPS, MAPPING_MAP_FLAGS, PrivateEntry,
};
use eipgw_tests::{
    AgentProcess, Topology, must, ping,
    topology::{EIP, VM_IP, WAN_IF},
};

fn pin_path(topology: &Topology, name: &str) -> PathBuf {
    topology.pin_dir().join(name)
}

/// A pinned map's entries, its size and its flags.
fn pinned_hash<V: Pod>(topology: &Topology, name: &str) -> (BTreeMap<u32, V>, u32, u32) {
    let map: HashMap<MapData, u32, V> = topology.pinned_hash_map(name);
    let info = map.map().info().unwrap_or_else(|e| panic!("{name}: {e}"));
    let entries = map.iter().map(|row| row.unwrap_or_else(|e| panic!("{name}: {e}")));
    (entries.collect(), info.max_entries(), info.map_flags())
}

/// Replaces the map pinned as `name` with a copy of it that has no flags, pinned as
/// `pin_as`: what an agent from before [`MAPPING_MAP_FLAGS`] left (or, as
/// `<name>:retired`, what a start interrupted while carrying it over left).
fn pin_as_an_earlier_agent_did<V: Pod>(topology: &Topology, name: &str, pin_as: &str) {
    let (entries, max_entries, _) = pinned_hash::<V>(topology, name);
    let mut old = HashMap::<MapData, u32, V>::create(max_entries, 0).expect("creating a map");
    for (key, value) in &entries {
        old.insert(key, value, 0).expect("copying an entry");
    }
    std::fs::remove_file(pin_path(topology, name)).expect("unpinning the map");
    old.pin(pin_path(topology, pin_as)).expect("pinning the copy");
}

/// Starts an agent with the EIP associated with the instance, and stops it.
fn earlier_agent(extra: &[&str]) -> (Topology, AgentProcess) {
    let topology = must(Topology::create());
    let mut agent = must(AgentProcess::start_with(&topology, extra));
    must(agent.apply_document(eipgw_tests::topology::VPC_DOCUMENT));
    must(agent.eipctl_ok(&["eip", "allocate", &EIP.to_string()]));
    must(agent.eipctl_ok(&[
        "eip",
        "associate",
        &EIP.to_string(),
        "--private-ip",
        &VM_IP.to_string(),
    ]));
    ping(&topology.inet, EIP, 1).unwrap_or_else(|e| panic!("ping through the EIP: {e}"));
    must(agent.stop(libc::SIGTERM));
    (topology, agent)
}

#[test]
fn a_restart_with_another_max_mappings_keeps_the_pinned_tables() {
    eipgw_tests::require_root();
    let (topology, agent) = earlier_agent(&["--max-mappings", "4096"]);
    let before = pinned_hash::<EipEntry>(&topology, MAP_EIPS);

    let mut agent_again = must(AgentProcess::start_with(&topology, &["--max-mappings", "8192"]));
    let after = pinned_hash::<EipEntry>(&topology, MAP_EIPS);
    assert_eq!(after, before, "the EIP map changed");
    assert_eq!(after.1, 4096);
    assert!(
        agent_again.log_text().contains("pinned maps keep their sizes"),
        "{}",
        agent_again.log_text()
    );
    ping(&topology.inet, EIP, 1).unwrap_or_else(|e| panic!("ping through the EIP: {e}"));
    must(agent_again.stop(libc::SIGTERM));
    drop(agent);
}

#[test]
fn maps_pinned_with_other_flags_are_carried_into_new_ones() {
    eipgw_tests::require_root();
    let (topology, mut agent) = earlier_agent(&[]);
    let eips = pinned_hash::<EipEntry>(&topology, MAP_EIPS);
    let private_ips = pinned_hash::<PrivateEntry>(&topology, MAP_PRIVATE_IPS);
    assert_eq!((eips.0.len(), eips.2), (1, MAPPING_MAP_FLAGS));
    assert_eq!((private_ips.0.len(), private_ips.2), (1, MAPPING_MAP_FLAGS));
    // The EIP map as an earlier agent pinned it; the private-IP map as a start that was
    // interrupted after putting it aside left it, with no map in its place.
    pin_as_an_earlier_agent_did::<EipEntry>(&topology, MAP_EIPS, MAP_EIPS);
    let retired = format!("{MAP_PRIVATE_IPS}:retired");
    pin_as_an_earlier_agent_did::<PrivateEntry>(&topology, MAP_PRIVATE_IPS, &retired);
    assert_eq!(pinned_hash::<EipEntry>(&topology, MAP_EIPS).2, 0);

    must(agent.start_again());
    // Carried over before the new program took over: the agent's reconciling afterwards
    // would have left the same entries, so its log tells.
    let log = agent.log_text();
    for name in [MAP_EIPS, MAP_PRIVATE_IPS] {
        let carried = format!("map {name}: 1 entries carried over into its new map");
        assert!(log.contains(&carried), "no '{carried}' in the log:\n{log}");
    }
    assert_eq!(pinned_hash::<EipEntry>(&topology, MAP_EIPS), eips);
    assert_eq!(pinned_hash::<PrivateEntry>(&topology, MAP_PRIVATE_IPS), private_ips);
    for name in [format!("{MAP_EIPS}:retired"), retired] {
        assert!(!pin_path(&topology, &name).exists(), "{name} is still pinned");
    }
    // The program that now runs reads the new maps.
    ping(&topology.inet, EIP, 1).unwrap_or_else(|e| panic!("ping through the EIP: {e}"));
}

/// A start that fails after putting maps aside (here another pinned map is not what the
/// program defines) puts them back: the earlier agent's pins are as it left them.
#[test]
fn a_failed_start_puts_the_retired_maps_back() {
    eipgw_tests::require_root();
    let (topology, mut agent) = earlier_agent(&[]);
    pin_as_an_earlier_agent_did::<EipEntry>(&topology, MAP_EIPS, MAP_EIPS);
    let before = pinned_hash::<EipEntry>(&topology, MAP_EIPS);
    // The limits map, made again with another value size.
    std::fs::remove_file(pin_path(&topology, MAP_EIP_LIMITS)).expect("unpinning the limits");
    let limits = HashMap::<MapData, u32, u8>::create(16, 0).expect("creating a map");
    limits.pin(pin_path(&topology, MAP_EIP_LIMITS)).expect("pinning it");

    let failed = agent.start_again().expect_err("the limits map is not the program's");
    assert!(format!("{failed:#}").contains(MAP_EIP_LIMITS), "{failed:#}");
    assert_eq!(pinned_hash::<EipEntry>(&topology, MAP_EIPS), before);
    assert!(!pin_path(&topology, &format!("{MAP_EIPS}:retired")).exists());
}

/// The same when the start fails later, after the entries were carried over (here the WAN
/// interface is gone): the old pins come back, and the next start carries them over.
#[test]
fn a_start_failing_after_the_carry_over_puts_the_retired_maps_back() {
    eipgw_tests::require_root();
    let (topology, mut agent) = earlier_agent(&[]);
    pin_as_an_earlier_agent_did::<EipEntry>(&topology, MAP_EIPS, MAP_EIPS);
    let before = pinned_hash::<EipEntry>(&topology, MAP_EIPS);
    let rename = |from: &str, to: &str| {
        must(topology.gw.exec_ok(&["ip", "link", "set", from, "down"]));
        must(topology.gw.exec_ok(&["ip", "link", "set", from, "name", to]));
        must(topology.gw.exec_ok(&["ip", "link", "set", to, "up"]));
    };
    rename(WAN_IF, "wan-gone");

    let failed = agent.start_again().expect_err("there is no WAN interface");
    assert!(format!("{failed:#}").contains("no interface named"), "{failed:#}");
    assert!(agent.log_text().contains("map EIPS: 1 entries carried over"), "{}", agent.log_text());
    assert_eq!(pinned_hash::<EipEntry>(&topology, MAP_EIPS), before);
    assert!(!pin_path(&topology, &format!("{MAP_EIPS}:retired")).exists());

    rename("wan-gone", WAN_IF);
    must(agent.start_again());
    let (entries, _, flags) = pinned_hash::<EipEntry>(&topology, MAP_EIPS);
    assert_eq!((entries, flags), (before.0, MAPPING_MAP_FLAGS));
    ping(&topology.inet, EIP, 1).unwrap_or_else(|e| panic!("ping through the EIP: {e}"));
}
