//! R29 under crashes: a stream of 10k mixed operations (most valid, some refused) goes to
//! eipgwd while another thread SIGKILLs it at random moments. After every restart the
//! agent's state must be exactly the state after the acknowledged operations, or after
//! those plus the one that was in flight (committed but not yet answered) — never anything
//! else — and the pinned maps must hold what that state implies.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData};
use eipgw::{
    api::ExecuteAnswer,
    client::{CallError, Client},
    model::{Association, Key, Kind, Request, State, describe},
};
use eipgw_common::{
    EipEntry, MAP_EIPS, MAP_PRIVATE_IPS, MODE_CUT_THROUGH, MODE_MULTI_EIP, MODE_NAT,
    MODE_UNASSOCIATED, PrivateEntry,
};
use eipgw_tests::{
    AgentProcess, Mount, Topology, must,
    scale::associations_document,
    topology::{EIP, EIP2, VM_IP, VPC_DOCUMENT},
};
use serde_json::{Value, json};

const OPERATIONS: usize = 10_000;
const INSTANCES: usize = 12;

/// A small deterministic PRNG (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

fn req(value: Value) -> Request {
    serde_json::from_value(value).expect("a valid request")
}

/// Instances beyond the document's `vm-1`, so that there are many private IPs to map.
fn fleet() -> Vec<Request> {
    (0..INSTANCES)
        .map(|i| {
            req(json!({"op": "create_instance", "id": format!("i-{i}"), "region": "local",
                "zone": "zone-a", "instance_type": "small", "vswitch": "vsw-1"}))
        })
        .collect()
}

/// The next operation: chosen against the expected state so that most are valid, with a
/// share of ones the rules refuse.
fn next_operation(rng: &mut Rng, state: &State) -> Request {
    let eips: Vec<Ipv4Addr> = state.eips.keys().copied().collect();
    let enis: Vec<&str> = state.enis.keys().map(|id| id.as_str()).collect();
    let instances: Vec<&str> = state.instances.keys().map(|id| id.as_str()).collect();
    let private_ips: Vec<Ipv4Addr> = state.enis.values().flat_map(|e| e.ipv4s()).collect();
    let fresh = Ipv4Addr::new(203, 0, 113, 10 + (rng.next() % 200) as u8);
    match rng.below(10) {
        0 | 1 => req(json!({"op": "allocate_eip", "address": fresh})),
        2 | 3 => match (rng.pick(&eips), rng.pick(&private_ips)) {
            (Some(e), Some(ip)) => req(json!({"op": "associate_eip", "eip": e, "private_ip": ip,
                "allow_reassociation": rng.below(2) == 0})),
            _ => req(json!({"op": "allocate_eip", "address": fresh})),
        },
        4 => match (rng.pick(&eips), rng.pick(&instances)) {
            (Some(e), Some(i)) => req(json!({"op": "associate_eip", "eip": e, "instance": i})),
            _ => req(json!({"op": "allocate_eip", "address": fresh})),
        },
        5 => match rng.pick(&eips) {
            Some(e) => req(json!({"op": "unassociate_eip", "eip": e})),
            None => req(json!({"op": "allocate_eip", "address": fresh})),
        },
        6 => match rng.pick(&eips) {
            Some(e) => req(json!({"op": "release_eip", "eip": e})),
            None => req(json!({"op": "allocate_eip", "address": fresh})),
        },
        7 => match rng.pick(&enis) {
            Some(e) => req(json!({"op": "assign_private_ips", "eni": e, "count": 1})),
            None => req(json!({"op": "allocate_eip", "address": fresh})),
        },
        8 => {
            let secondary: Vec<(eipgw::model::Id, Ipv4Addr)> = state
                .enis
                .values()
                .flat_map(|e| e.secondary_ips.iter().map(|ip| (e.id.clone(), *ip)))
                .collect();
            match rng.pick(&secondary) {
                Some((e, ip)) => req(json!({"op": "unassign_private_ips", "eni": e, "ips": [ip]})),
                None => req(json!({"op": "allocate_eip", "address": fresh})),
            }
        }
        _ => match rng.pick(&instances) {
            Some(i) if rng.below(2) == 0 => req(json!({"op": "stop_instance", "id": i})),
            Some(i) => req(json!({"op": "start_instance", "id": i})),
            None => req(json!({"op": "allocate_eip", "address": fresh})),
        },
    }
}

/// Every resource as the agent describes it, counters left out.
fn agent_view(client: &Client) -> Result<BTreeMap<String, Value>, CallError> {
    let mut all = BTreeMap::new();
    for kind in Kind::ALL {
        let items: Vec<Value> = client.get(&format!("/v1/resources/{}", kind.name()))?;
        for mut item in items {
            if let Some(object) = item.as_object_mut() {
                object.remove("counters");
            }
            let id = item.get("id").or_else(|| item.get("address")).cloned().unwrap_or_default();
            all.insert(format!("{}/{}", kind.name(), id.as_str().unwrap_or_default()), item);
        }
    }
    Ok(all)
}

/// The same view computed from the model.
fn model_view(state: &State) -> BTreeMap<String, Value> {
    Kind::ALL
        .into_iter()
        .flat_map(|kind| state.ids(kind).into_iter().map(move |id| (kind, id)))
        .map(|(kind, id)| {
            let value = describe(state, &Key::new(kind, id.clone())).expect("described");
            (format!("{}/{id}", kind.name()), value)
        })
        .collect()
}

/// The pinned maps hold what `state` implies: every EIP with its mode and address, and a
/// private-IP entry for each NAT-mode one.
fn check_maps(topology: &Topology, state: &State) {
    let eips: HashMap<MapData, u32, EipEntry> = topology.pinned_hash_map(MAP_EIPS);
    let private: HashMap<MapData, u32, PrivateEntry> = topology.pinned_hash_map(MAP_PRIVATE_IPS);
    let mut in_map = BTreeMap::new();
    for row in eips.iter() {
        let (key, entry) = row.expect("EIPS entry");
        in_map.insert(
            Ipv4Addr::from(key.to_ne_bytes()),
            (entry.mode, Ipv4Addr::from(entry.private_addr.to_ne_bytes())),
        );
    }
    let expected: BTreeMap<Ipv4Addr, (u32, Ipv4Addr)> = state
        .eips
        .values()
        .map(|eip| {
            let next_hop = |eni: &str| state.enis[eni].primary_ip;
            let entry = match &eip.association {
                Some(
                    Association::Instance { private_ip, .. } | Association::Eni { private_ip, .. },
                ) => (MODE_NAT, *private_ip),
                Some(Association::CutThrough { eni }) => (MODE_CUT_THROUGH, next_hop(eni)),
                Some(Association::MultiEip { eni }) => (MODE_MULTI_EIP, next_hop(eni)),
                _ => (MODE_UNASSOCIATED, Ipv4Addr::UNSPECIFIED),
            };
            (eip.address, entry)
        })
        .collect();
    assert_eq!(in_map, expected, "EIPS map differs from the state");
    let mut private_in_map = BTreeMap::new();
    for row in private.iter() {
        let (key, entry) = row.expect("PRIVATE_IPS entry");
        private_in_map.insert(
            Ipv4Addr::from(key.to_ne_bytes()),
            Ipv4Addr::from(entry.eip_addr.to_ne_bytes()),
        );
    }
    let private_expected: BTreeMap<Ipv4Addr, Ipv4Addr> = expected
        .iter()
        .filter(|(_, (mode, _))| *mode == MODE_NAT)
        .map(|(eip, (_, private_ip))| (*private_ip, *eip))
        .collect();
    assert_eq!(private_in_map, private_expected, "PRIVATE_IPS map differs from the state");
}

#[test]
fn sigkill_at_random_points_keeps_a_prefix_of_acknowledged_operations() {
    eipgw_tests::require_root();
    let seed = std::env::var("EIPGW_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1
    });
    eprintln!("seed {seed} (set EIPGW_SEED to replay)");
    let mut rng = Rng(seed);

    let topology = must(Topology::create());
    let mut agent = must(topology.start_agent());
    must(agent.apply_document(VPC_DOCUMENT));
    let client = Client::new(agent.socket());
    let mut expected = State::default();
    let base: serde_yaml_ng::Value = serde_yaml_ng::from_str(VPC_DOCUMENT).expect("document");
    let base: Vec<Request> =
        serde_json::from_value(serde_json::to_value(&base["requests"]).unwrap()).unwrap();
    expected.run_all(&base).expect("the document applies");
    let fleet = fleet();
    let _: eipgw::api::ApplyAnswer = client
        .post("/v1/apply", &json!({"requests": fleet}))
        .unwrap_or_else(|e| panic!("creating the fleet: {e}"));
    expected.run_all(&fleet).expect("the fleet applies");

    // The killer: SIGKILL whatever agent runs now, every 0.2 to 1.2 s.
    let pid = Arc::new(AtomicU32::new(agent.pid().expect("running")));
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (pid, done) = (pid.clone(), done.clone());
        let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        std::thread::spawn(move || {
            let mut kills = 0;
            while !done.load(Ordering::Relaxed) {
                let until = Instant::now() + Duration::from_millis(200 + rng.below(1000) as u64);
                while Instant::now() < until && !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !done.load(Ordering::Relaxed) {
                    // SAFETY: signalling the agent process we started.
                    unsafe { libc::kill(pid.load(Ordering::Relaxed) as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };

    let (mut acknowledged, mut refused, mut crashes) = (0usize, 0usize, 0usize);
    let mut sent = 0;
    while sent < OPERATIONS {
        let request = next_operation(&mut rng, &expected);
        let mut after = expected.clone();
        let valid = after.run(&request).is_ok();
        match client.post::<_, ExecuteAnswer>("/v1/requests", &request) {
            Ok(_) => {
                assert!(valid, "the agent accepted {request:?}, which the model refuses");
                expected = after;
                acknowledged += 1;
                sent += 1;
            }
            Err(CallError::Refused(body)) => {
                assert!(
                    !valid,
                    "the agent refused {request:?}, which the model allows: {}",
                    body.message
                );
                refused += 1;
                sent += 1;
            }
            Err(CallError::Unreachable(_)) => {
                // Killed somewhere around this request: it was committed or it was not.
                crashes += 1;
                let in_flight = valid.then_some(after);
                expected = recover(&topology, &mut agent, &client, &pid, expected, in_flight);
            }
            Err(other) => panic!("unexpected failure: {other}\nlog:\n{}", agent.log_text()),
        }
    }
    done.store(true, Ordering::Relaxed);
    let kills = killer.join().expect("killer");
    // A last restart after the final kill, and the final state must match.
    let final_state = expected.clone();
    let recovered = recover(&topology, &mut agent, &client, &pid, expected, None);
    assert_eq!(recovered, final_state);
    eprintln!(
        "{acknowledged} acknowledged, {refused} refused, {crashes} crashes seen, {kills} kills"
    );
    assert!(crashes >= 3, "the killer hit the stream only {crashes} times (seed {seed})");
    // Most operations are chosen to be valid; the rest check that refusals change nothing.
    assert!(
        acknowledged > OPERATIONS / 3 && refused > 0,
        "{acknowledged} acknowledged, {refused} refused"
    );
}

/// Restarts the agent until it serves, then checks that its state is `acked`, or
/// `in_flight` if the interrupted request was committed, and that the maps follow it.
/// Returns the state that holds.
fn recover(
    topology: &Topology,
    agent: &mut AgentProcess,
    client: &Client,
    pid: &AtomicU32,
    acked: State,
    in_flight: Option<State>,
) -> State {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the agent did not come back\n{}", agent.log_text());
        // Died mid-start (the killer struck again)? Just start once more.
        if agent.start_again().is_err() {
            continue;
        }
        pid.store(agent.pid().unwrap_or(0), Ordering::Relaxed);
        let Ok(view) = agent_view(client) else { continue };
        let holds = if view == model_view(&acked) {
            acked
        } else if let Some(state) = in_flight.as_ref().filter(|s| view == model_view(s)) {
            state.clone()
        } else {
            panic!(
                "after a crash the agent holds neither the acknowledged state nor that plus the \
                 request in flight\nagent: {view:#?}\nlog:\n{}",
                agent.log_text()
            );
        };
        check_maps(topology, &holds);
        return holds;
    }
}

/// Every entry of a pinned map of the data plane keyed by IPv4 address.
fn pinned_map<V: aya::Pod>(topology: &Topology, name: &str) -> BTreeMap<Ipv4Addr, V> {
    let map: HashMap<MapData, u32, V> = topology.pinned_hash_map(name);
    map.iter()
        .map(|row| row.unwrap_or_else(|e| panic!("reading {name}: {e}")))
        .map(|(key, value)| (Ipv4Addr::from(key.to_ne_bytes()), value))
        .collect()
}

/// What the data plane maps the EIPs and private addresses to.
type MapsView = (BTreeMap<Ipv4Addr, EipEntry>, BTreeMap<Ipv4Addr, PrivateEntry>);

fn maps_view(topology: &Topology) -> MapsView {
    (pinned_map(topology, "EIPS"), pinned_map(topology, "PRIVATE_IPS"))
}

/// R29 on a full disk: a document the state file has no room for is refused as a whole.
/// The agent's state and the maps stay exactly as they were, counter slots included (the
/// agent plans the maps' side while the store writes, writes nothing of it before the
/// store has the change, and forgets the plan when the store refuses it). Once there is
/// room again, the next change goes through, with nothing of the refused one.
#[test]
fn a_document_the_state_file_has_no_room_for_changes_nothing() {
    eipgw_tests::require_root();
    let topology = must(Topology::create());
    // Room for the VPC and a few EIPs, not for a hundred thousand associations (about 5 MB
    // of rows).
    let disk = must(Mount::tmpfs(&topology.state_dir(), "2m"));
    let agent = must(AgentProcess::start_with(&topology, &["--max-mappings", "131072"]));
    must(agent.apply_document(VPC_DOCUMENT));
    let (eip, eip2) = (EIP.to_string(), EIP2.to_string());
    must(agent.eipctl_ok(&["eip", "allocate", &eip]));
    must(agent.eipctl_ok(&["eip", "associate", &eip, "--private-ip", &VM_IP.to_string()]));
    let client = Client::new(agent.socket());
    let before = (agent_view(&client).expect("listing the resources"), maps_view(&topology));
    assert_eq!(before.1.0.len(), 1, "the one EIP is mapped: {:?}", before.1);

    // It also gives up the one EIP, whose counter slot a new EIP may then take in the
    // plan: refused, the EIP keeps its slot (and its counters).
    let document = associations_document(100_000).replacen(
        r#"{"requests":["#,
        &format!(
            r#"{{"requests":[{{"op":"unassociate_eip","eip":"{eip}"}},{{"op":"release_eip","eip":"{eip}"}},"#
        ),
        1,
    );
    let refused = agent.apply_document(&document).expect_err("the state file has no room");
    assert!(format!("{refused:#}").contains("state file"), "{refused:#}");
    let after = (agent_view(&client).expect("listing the resources"), maps_view(&topology));
    assert_eq!(after.0, before.0, "the agent's state changed");
    assert_eq!(after.1, before.1, "the maps changed");

    // The disk is full: the next change is refused too, and says why.
    let full = agent.eipctl_ok(&["eip", "allocate", &eip2]).expect_err("the disk is still full");
    assert!(format!("{full:#}").contains("No space left on device"), "{full:#}");
    // With room again, it goes through (the agent opened the file again after the failed
    // write, which redb requires), and alone: nothing of the refused document was left
    // planned for the maps.
    must(disk.remount("size=64m"));
    must(agent.eipctl_ok(&["eip", "allocate", &eip2]));
    let (eips, private) = maps_view(&topology);
    assert_eq!(eips.len(), before.1.0.len() + 1, "{} EIPs are mapped", eips.len());
    let mut expected = before.1.0.keys().copied().collect::<Vec<_>>();
    expected.push(EIP2);
    assert_eq!(eips.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(eips[&EIP2].mode, MODE_UNASSOCIATED);
    assert_eq!(private, before.1.1);
}
