//! 1:1 NAT translates every fragment without state (issue 4): an 8000-byte UDP datagram,
//! fragmented by the sender's kernel for a 1500-byte link, crosses the gateway through the
//! EIP in both directions and is reassembled intact at the other end.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use eipgw_tests::{
    Netns, Topology, must,
    topology::{EIP, INTERNET_HOST, VPC_DOCUMENT},
};

const SIZE: usize = 8000;
const PORT: u16 = 9500;

/// A datagram whose every byte depends on its position, so a lost or misplaced fragment
/// shows.
fn datagram(seed: u8) -> Vec<u8> {
    (0..SIZE).map(|i| (i as u32 * 7 + u32::from(seed)) as u8).collect()
}

/// What a receiver thread ends with: the datagram and its source, or what went wrong.
type Received = std::thread::JoinHandle<anyhow::Result<Result<(Vec<u8>, SocketAddr), String>>>;

/// Receives one datagram on `port` in `ns` (bound before this returns) and returns it with
/// its source.
fn receiver(ns: &Netns) -> Received {
    let (bound, ready) = std::sync::mpsc::channel();
    let handle = ns.spawn(move || {
        let socket = UdpSocket::bind(("0.0.0.0", PORT)).map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let _ = bound.send(());
        let mut buf = vec![0u8; 65_536];
        let (n, from) = socket.recv_from(&mut buf).map_err(|e| format!("nothing arrived: {e}"))?;
        buf.truncate(n);
        Ok((buf, from))
    });
    ready.recv_timeout(Duration::from_secs(5)).expect("receiver bound");
    handle
}

fn send(ns: &Netns, to: SocketAddr, payload: Vec<u8>) {
    must(ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let sent = socket.send_to(&payload, to).expect("send");
        assert_eq!(sent, payload.len());
    }));
}

#[test]
fn an_8000_byte_udp_datagram_crosses_in_fragments_both_ways() {
    eipgw_tests::require_root();
    let topology = must(Topology::create());
    let agent = must(topology.start_agent());
    must(agent.apply_document(VPC_DOCUMENT));
    must(agent.eipctl_ok(&["eip", "allocate", &EIP.to_string()]));
    must(agent.eipctl_ok(&["eip", "associate", &EIP.to_string(), "--instance", "vm-1"]));
    let translated = |agent: &eipgw_tests::AgentProcess| -> u64 {
        let out = must(agent.eipctl_ok(&["--output", "json", "stats"]));
        let stats: serde_json::Value = serde_json::from_str(&out).expect("stats");
        stats["verdicts"]["translated"].as_u64().expect("translated")
            + stats["verdicts"]["pass_neighbour_unknown"].as_u64().expect("pass")
    };

    // Internet -> EIP -> instance.
    let before = translated(&agent);
    let inbound = receiver(&topology.vm);
    send(&topology.inet, SocketAddr::from((EIP, PORT)), datagram(1));
    let (got, from) =
        inbound.join().expect("thread").expect("netns").unwrap_or_else(|e| panic!("inbound: {e}"));
    assert_eq!(got, datagram(1), "the inbound datagram arrived damaged");
    assert_eq!(from.ip(), INTERNET_HOST);
    // 8000 bytes over a 1500-byte MTU: six fragments, each translated on its own.
    assert!(translated(&agent) >= before + 6, "fewer than six fragments were translated");

    // Instance -> Internet, leaving as the EIP.
    let outbound = receiver(&topology.inet);
    send(&topology.vm, SocketAddr::from((INTERNET_HOST, PORT)), datagram(2));
    let (got, from) = outbound
        .join()
        .expect("thread")
        .expect("netns")
        .unwrap_or_else(|e| panic!("outbound: {e}"));
    assert_eq!(got, datagram(2), "the outbound datagram arrived damaged");
    assert_eq!(from.ip(), EIP, "the Internet saw {from}, not the EIP");
}
