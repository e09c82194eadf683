//! End to end through real namespaces: real clients (curl, ping, kernel sockets) reach a VPC
//! instance through its EIP and the instance reaches the Internet as its EIP, with eipgwd
//! and eipctl driving the mappings.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use eipgw_tests::{
    AgentProcess, Netns, Topology, curl, must, output_text, ping,
    servers::Server,
    topology::{EIP, EIP2, INTERNET_HOST, INTERNET_HOST6, VM_IP, VM_IP2, VM_IP6},
};

const HTTP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9000;
const WHOAMI_PORT: u16 = 7000;
const BODY: &str = "hello from the VPC instance\n";

/// `curl` from the Internet host to the EIP; `Ok(body)` or `Err(diagnostics)`.
fn curl_eip(inet: &Netns, eip: Ipv4Addr) -> Result<String, String> {
    curl(inet, &format!("http://{eip}:{HTTP_PORT}/"))
}

/// One UDP round trip from the Internet host to `eip`; the echo must come back intact.
fn udp_round_trip(inet: &Netns, eip: Ipv4Addr, payload: &[u8]) -> Result<(), String> {
    let payload = payload.to_vec();
    must(inet.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        socket.send_to(&payload, (eip, UDP_PORT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; payload.len() + 16];
        let (n, from) = socket.recv_from(&mut buf).map_err(|e| format!("no echo: {e}"))?;
        if from != SocketAddr::from((eip, UDP_PORT)) {
            return Err(format!("echo came from {from}, expected the EIP {eip}"));
        }
        if buf[..n] != payload[..] {
            return Err("echo differs from what was sent".into());
        }
        Ok(())
    }))
}

/// From the instance, connect to the Internet host; returns the source address it saw.
fn whoami_from_vm(vm: &Netns) -> Result<String, String> {
    must(vm.run_in(|| {
        let target = SocketAddr::from((INTERNET_HOST, WHOAMI_PORT));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen).map_err(|e| format!("read: {e}"))?;
        Ok(seen)
    }))
}

/// Allocates `eip` and associates it with `private_ip`.
fn allocate_and_associate(agent: &AgentProcess, eip: Ipv4Addr, private_ip: Ipv4Addr) {
    must(agent.eipctl_ok(&["eip", "allocate", &eip.to_string()]));
    associate(agent, eip, private_ip);
}

fn associate(agent: &AgentProcess, eip: Ipv4Addr, private_ip: Ipv4Addr) {
    let (eip, private_ip) = (eip.to_string(), private_ip.to_string());
    must(agent.eipctl_ok(&["eip", "associate", &eip, "--private-ip", &private_ip]));
}

fn eip_json(agent: &AgentProcess, eip: Ipv4Addr) -> serde_json::Value {
    let out = must(agent.eipctl_ok(&["--output", "json", "eip", "show", &eip.to_string()]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("eipctl json: {e}: {out}"))
}

fn verdict(agent: &AgentProcess, name: &str) -> u64 {
    let out = must(agent.eipctl_ok(&["--output", "json", "stats"]));
    let stats: serde_json::Value = serde_json::from_str(&out).expect("stats json");
    stats["verdicts"][name].as_u64().unwrap_or_else(|| panic!("no verdict {name} in {out}"))
}

#[test]
fn eip_carries_tcp_udp_and_ping_both_ways_and_follows_association() {
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    let http = must(Server::http(vm, HTTP_PORT, BODY));
    let echo = must(Server::udp_echo(vm, UDP_PORT));
    let whoami = must(Server::tcp_whoami(inet, WHOAMI_PORT));

    must(agent.eipctl_ok(&["eip", "allocate", &EIP.to_string()]));
    // Allocated but not associated: its traffic is dropped and counted.
    assert!(curl_eip(inet, EIP).is_err(), "an unassociated EIP must not carry traffic");
    assert!(verdict(&agent, "drop_eip_not_associated") > 0);

    associate(&agent, EIP, VM_IP);

    // Inbound: a real HTTP client and UDP client reach the instance through its EIP, and
    // the instance sees the Internet host's real address.
    assert_eq!(curl_eip(inet, EIP).unwrap_or_else(|e| panic!("curl via EIP: {e}")), BODY);
    udp_round_trip(inet, EIP, b"datagram through the EIP").unwrap_or_else(|e| panic!("{e}"));
    assert!(http.peers().iter().all(|p| p.ip() == INTERNET_HOST), "{:?}", http.peers());
    assert!(echo.peers().iter().all(|p| p.ip() == INTERNET_HOST), "{:?}", echo.peers());

    // Outbound: the Internet host sees the EIP as the source, never the private address.
    assert_eq!(whoami_from_vm(vm).unwrap_or_else(|e| panic!("{e}")), EIP.to_string());
    assert!(whoami.peers().iter().all(|p| p.ip() == EIP), "{:?}", whoami.peers());

    ping(inet, EIP, 3).unwrap_or_else(|e| panic!("ping inet -> EIP: {e}"));
    ping(vm, INTERNET_HOST, 3).unwrap_or_else(|e| panic!("ping vm -> inet: {e}"));

    let shown = eip_json(&agent, EIP);
    assert_eq!(shown["status"], "in_use");
    assert_eq!(shown["private_ip"], VM_IP.to_string());
    let counters = &shown["counters"];
    for field in ["inbound_packets", "inbound_bytes", "outbound_packets", "outbound_bytes"] {
        assert!(counters[field].as_u64().unwrap_or(0) > 0, "{field} did not move: {shown}");
    }
    assert!(verdict(&agent, "translated") > 0);

    // Unassociate: traffic stops both ways; the EIP stays allocated.
    must(agent.eipctl_ok(&["eip", "unassociate", &EIP.to_string()]));
    assert!(curl_eip(inet, EIP).is_err(), "traffic still flows after unassociate");
    assert!(ping(inet, EIP, 1).is_err(), "ping still answered after unassociate");
    let no_egress_before = verdict(&agent, "drop_no_egress");
    assert!(whoami_from_vm(vm).is_err(), "the instance still reaches the Internet");
    assert!(verdict(&agent, "drop_no_egress") > no_egress_before);
    assert_eq!(eip_json(&agent, EIP)["status"], "available");

    // Re-associate: it flows again.
    associate(&agent, EIP, VM_IP);
    assert_eq!(curl_eip(inet, EIP).unwrap_or_else(|e| panic!("after re-associate: {e}")), BODY);
    assert_eq!(whoami_from_vm(vm).unwrap_or_else(|e| panic!("{e}")), EIP.to_string());
}

#[test]
fn reassociation_moves_traffic_to_the_new_private_ip() {
    let (topology, agent) = Topology::with_vpc();
    let inet = &topology.inet;
    let (eip, eip2) = (EIP.to_string(), EIP2.to_string());
    let _http = must(Server::http(&topology.vm, HTTP_PORT, BODY));
    must(agent.eipctl_ok(&["eip", "allocate", &eip2]));
    allocate_and_associate(&agent, EIP, VM_IP);

    // R05 through the CLI: refused (exit 3), with the rule named, and nothing changes.
    let refused =
        must(agent.eipctl(&["eip", "associate", &eip, "--private-ip", &VM_IP2.to_string()]));
    assert_eq!(refused.status.code(), Some(3), "{}", output_text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("R05"), "{}", output_text(&refused));
    assert_eq!(eip_json(&agent, EIP)["private_ip"], VM_IP.to_string());

    // R02: the private IP already has an EIP.
    let refused =
        must(agent.eipctl(&["eip", "associate", &eip2, "--private-ip", &VM_IP.to_string()]));
    assert_eq!(refused.status.code(), Some(3), "{}", output_text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PRIVATE_IP_HAS_EIP"));

    must(agent.eipctl_ok(&[
        "eip",
        "associate",
        &eip,
        "--private-ip",
        &VM_IP2.to_string(),
        "--allow-reassociation",
    ]));
    // The EIP now leads to the second address (the same instance holds both addresses, so
    // the HTTP server answers either way); the server sees the request arrive for VM_IP2.
    assert_eq!(curl_eip(inet, EIP).unwrap_or_else(|e| panic!("{e}")), BODY);
    assert_eq!(eip_json(&agent, EIP)["private_ip"], VM_IP2.to_string());

    // R04: an associated EIP cannot be released; after unassociating it can.
    let refused = must(agent.eipctl(&["eip", "release", &eip]));
    assert_eq!(refused.status.code(), Some(3), "{}", output_text(&refused));
    must(agent.eipctl_ok(&["eip", "unassociate", &eip]));
    must(agent.eipctl_ok(&["eip", "release", &eip]));
    let listed = must(agent.eipctl_ok(&["--output", "json", "eip", "list"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("list json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // A released EIP drops nothing any more: it is simply not ours.
    assert!(curl_eip(inet, EIP).is_err());
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let (_topology, mut agent) = Topology::with_vpc();
    let eip = EIP.to_string();
    must(agent.eipctl_ok(&["eip", "allocate", &eip]));
    let before = must(agent.eipctl_ok(&["--output", "json", "eip", "list"]));

    let cases: &[(&[&str], i32, &str)] = &[
        (&["eip", "allocate", "203.0.113.300"], 2, "invalid"),
        (&["eip", "associate", &eip, "--private-ip", "not-an-ip"], 2, "invalid"),
        (&["eip", "associate", "203.0.113.99", "--private-ip", "10.0.1.10"], 3, "EIP_NOT_FOUND"),
        (&["eip", "allocate", &eip], 3, "EIP_ALREADY_ALLOCATED"),
        (&["eip", "allocate", "224.0.0.1"], 3, "INVALID_ARGUMENT"),
        (&["eip", "unassociate", &eip], 3, "EIP_NOT_ASSOCIATED"),
        (&["eip", "show", "198.51.100.77"], 3, "EIP_NOT_FOUND"),
    ];
    for (args, code, needle) in cases {
        let out = must(agent.eipctl(args));
        assert_eq!(out.status.code(), Some(*code), "eipctl {args:?}: {}", output_text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "eipctl {args:?} should say {needle}: {}",
            output_text(&out)
        );
    }
    assert_eq!(must(agent.eipctl_ok(&["--output", "json", "eip", "list"])), before);

    // With the agent down the CLI says so and exits 4.
    must(agent.stop(libc::SIGTERM));
    let out = must(agent.eipctl(&["eip", "list"]));
    assert_eq!(out.status.code(), Some(4), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is eipgwd running"),
        "{}",
        output_text(&out)
    );
}

/// Phases of the long transfer, reported by the receiving client.
enum Progress {
    Received(usize),
}

#[test]
fn agent_restart_keeps_mappings_and_a_running_transfer() {
    const TOTAL: usize = 32 << 20;
    const PHASE: usize = 4 << 20;
    let (topology, mut agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    allocate_and_associate(&agent, EIP, VM_IP);

    // The instance streams a deterministic pattern to whoever connects.
    // Bound here, before anyone connects; the socket stays in `vm` on the thread too.
    let listener =
        must(vm.run_in(|| std::net::TcpListener::bind(("0.0.0.0", 9100)))).expect("binding in vm");
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
        let block: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..TOTAL / block.len() {
            stream.write_all(&block).map_err(|e| format!("send: {e}"))?;
        }
        Ok(())
    });

    // The Internet client reads it through the EIP, stopping at each phase boundary until
    // the test says go on, so the agent restarts while the connection is mid-transfer.
    let (progress_tx, progress_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let receiver = inet.spawn(move || -> Result<usize, String> {
        let target = SocketAddr::from((EIP, 9100));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|e| format!("connecting to the EIP: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
        let mut received = 0usize;
        let mut next_phase = PHASE;
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = stream.read(&mut buf).map_err(|e| format!("read after {received}: {e}"))?;
            if n == 0 {
                return Ok(received);
            }
            for (i, byte) in buf[..n].iter().enumerate() {
                if *byte != ((received + i) % 65_536 % 251) as u8 {
                    return Err(format!("corrupt byte at {}", received + i));
                }
            }
            received += n;
            if received >= next_phase && next_phase <= 2 * PHASE {
                let _ = progress_tx.send(Progress::Received(received));
                go_rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "no go")?;
                next_phase += PHASE;
            }
        }
    });

    let wait_phase = |what: &str| match progress_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Progress::Received(n)) => n,
        Err(_) => panic!("transfer stalled before {what}"),
    };
    wait_phase("the agent went down");
    // Crash the agent: no clean shutdown at all.
    must(agent.stop(libc::SIGKILL));
    // With no agent running, the pinned program and maps keep translating.
    ping(inet, EIP, 2).unwrap_or_else(|e| panic!("ping while the agent is down: {e}"));
    go_tx.send(()).expect("receiver alive");
    wait_phase("the agent came back");
    must(agent.restart(libc::SIGKILL));
    go_tx.send(()).expect("receiver alive");

    let received = receiver
        .join()
        .expect("receiver thread")
        .expect("netns")
        .unwrap_or_else(|e| panic!("transfer failed: {e}\nagent log:\n{}", agent.log_text()));
    sender.join().expect("sender thread").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received, TOTAL);

    // The restarted agent still has the mapping and the counters carried on.
    let shown = eip_json(&agent, EIP);
    assert_eq!(shown["private_ip"], VM_IP.to_string());
    assert!(shown["counters"]["inbound_bytes"].as_u64().unwrap_or(0) > 0, "{shown}");
    assert!(shown["counters"]["outbound_bytes"].as_u64().unwrap_or(0) as usize > TOTAL, "{shown}");
    assert!(agent.log_text().contains("holds 1 EIPs"), "{}", agent.log_text());
}

#[test]
fn ttl_expiry_and_oversized_df_packets_are_answered_by_the_gateway() {
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    allocate_and_associate(&agent, EIP, VM_IP);
    ping(inet, EIP, 1).unwrap_or_else(|e| panic!("{e}"));

    // TTL 1 arriving at the gateway: it is the router hop, so it answers time exceeded
    // from its own address, in each direction. The program sends it (the kernel could not:
    // it would see the inbound packet only untranslated, addressed to the EIP).
    let expired = |ns: &Netns, target: Ipv4Addr, router: &str| {
        let out = ns
            .command("ping")
            .args(["-c", "1", "-t", "1", "-W", "2", &target.to_string()])
            .output()
            .expect("ping");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("From {router}")) && stdout.contains("Time to live exceeded"),
            "expected time exceeded from {router}: {}",
            output_text(&out)
        );
    };
    let (sent, passed) =
        (verdict(&agent, "icmp_time_exceeded_sent"), verdict(&agent, "pass_ttl_expired"));
    expired(inet, EIP, "198.51.100.2");
    expired(vm, INTERNET_HOST, "10.0.1.1");
    assert_eq!(verdict(&agent, "icmp_time_exceeded_sent"), sent + 2);
    assert_eq!(verdict(&agent, "pass_ttl_expired"), passed, "the kernel answered instead");

    // A smaller MTU towards the VPC: a DF packet that does not fit is answered with
    // fragmentation needed and the MTU of the next hop (RFC 1191), from the WAN address.
    must(topology.gw.ip(&["link", "set", "lan0", "mtu", "1280"]));
    let before = verdict(&agent, "icmp_frag_needed_sent");
    let out = inet
        .command("ping")
        .args(["-c", "1", "-W", "1", "-M", "do", "-s", "1400", &EIP.to_string()])
        .output()
        .expect("ping");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "an oversized DF packet got through: {}", output_text(&out));
    assert!(
        stdout.contains("From 198.51.100.2") && stdout.contains("mtu = 1280"),
        "expected fragmentation needed (mtu = 1280) from the gateway: {}",
        output_text(&out)
    );
    assert_eq!(verdict(&agent, "icmp_frag_needed_sent"), before + 1);
    // What fits still flows.
    ping(inet, EIP, 1).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tracepath_shows_the_gateway_hop_and_path_mtu_discovery_finishes_a_transfer() {
    const TOTAL: usize = 2 << 20;
    const PORT: u16 = 9200;
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    allocate_and_associate(&agent, EIP, VM_IP);
    ping(inet, EIP, 1).unwrap_or_else(|e| panic!("{e}"));

    // tracepath through the EIP: hop 1 is the gateway, whose time exceeded comes from its
    // WAN address; hop 2 is the instance, whose port unreachable (an ICMP error about a
    // packet it was sent) leaves with the EIP as source and the EIP in the quote.
    let translated = verdict(&agent, "translated");
    let out = inet
        .command("tracepath")
        .args(["-n", "-m", "4", &EIP.to_string()])
        .output()
        .expect("running tracepath (iputils-tracepath)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hop = |n: u32, address: &str| {
        stdout.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(&format!("{n}:")) && words.next() == Some(address)
        })
    };
    assert!(
        hop(1, "198.51.100.2") && hop(2, &EIP.to_string()) && stdout.contains("reached"),
        "expected the gateway as hop 1 and the EIP reached at hop 2: {}",
        output_text(&out)
    );
    assert!(verdict(&agent, "translated") > translated, "the instance's error was not translated");

    // A smaller MTU towards the VPC, and a large upload from the Internet to the
    // instance: Linux TCP sets DF, so the transfer finishes only if the gateway tells the
    // sender the MTU (fragmentation needed, about the packet sent to the EIP) and the
    // sender lowers its path MTU to the EIP.
    must(topology.gw.ip(&["link", "set", "lan0", "mtu", "1280"]));
    let frag_needed = verdict(&agent, "icmp_frag_needed_sent");
    let listener =
        must(vm.run_in(|| std::net::TcpListener::bind(("0.0.0.0", PORT)))).expect("binding in vm");
    let receiver = std::thread::spawn(move || -> Result<usize, String> {
        let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        let mut received = 0usize;
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = stream.read(&mut buf).map_err(|e| format!("read after {received}: {e}"))?;
            if n == 0 {
                break;
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != ((received + i) % 251) as u8) {
                return Err(format!("corrupt byte at {}", received + i));
            }
            received += n;
        }
        stream.write_all(received.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Ok(received)
    });
    let sent = must(inet.run_in(|| -> Result<String, String> {
        let target = SocketAddr::from((EIP, PORT));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|e| format!("connecting to the EIP: {e}"))?;
        stream.set_write_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        // A path MTU black hole shows as a send that stalls until the timeout.
        stream.write_all(&data).map_err(|e| format!("send stalled (black hole?): {e}"))?;
        stream.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| format!("no answer (black hole?): {e}"))?;
        Ok(answer)
    }));
    let received = receiver.join().expect("receiver thread");
    let sent = sent.unwrap_or_else(|e| panic!("upload through the EIP: {e}"));
    let received = received.unwrap_or_else(|e| panic!("receiver: {e}"));
    assert_eq!((received, sent), (TOTAL, TOTAL.to_string()), "the transfer did not finish whole");
    assert!(
        verdict(&agent, "icmp_frag_needed_sent") > frag_needed,
        "the transfer finished without fragmentation needed: was DF clear?"
    );
    // And the sender learnt the MTU for the EIP.
    let route = must(inet.ip(&["route", "get", &EIP.to_string()]));
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("mtu 1280"), "no path MTU of 1280 for the EIP: {route}");
}

/// One TCP connection from the instance to the Internet host's whoami server, from the
/// local address `from`; returns the source address the server saw.
fn whoami_from(vm: &Netns, from: std::net::IpAddr, to: SocketAddr) -> Result<String, String> {
    must(vm.run_in(move || {
        let socket = match from {
            std::net::IpAddr::V4(_) => {
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            }
            std::net::IpAddr::V6(_) => {
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            }
        }
        .map_err(|e| e.to_string())?;
        socket.bind(&SocketAddr::new(from, 0).into()).map_err(|e| format!("bind {from}: {e}"))?;
        socket
            .connect_timeout(&to.into(), Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen).map_err(|e| format!("read: {e}"))?;
        Ok(seen)
    }))
}

#[test]
fn cut_through_and_multi_eip_deliver_the_eip_unchanged() {
    const CUT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
    const MULTI: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 31);
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    // Two secondary ENIs of vm-1. In a visible mode the OS sees the EIP itself (R10, R11):
    // the instance holds the EIPs as local addresses, next to the ENIs' private ones.
    must(agent.apply_document(
        r#"{"requests": [
            {"op": "create_eni", "id": "eni-cut", "vswitch": "vsw-1", "primary_ip": "10.0.1.60"},
            {"op": "create_eni", "id": "eni-multi", "vswitch": "vsw-1", "primary_ip": "10.0.1.61"},
            {"op": "allocate_eip", "address": "203.0.113.30"},
            {"op": "allocate_eip", "address": "203.0.113.31"},
            {"op": "associate_eip", "eip": "203.0.113.30", "eni": "eni-cut", "mode": "cut-through"},
            {"op": "associate_eip", "eip": "203.0.113.31", "eni": "eni-multi", "mode": "multi-eip"},
            {"op": "attach_eni", "eni": "eni-cut", "instance": "vm-1"},
            {"op": "attach_eni", "eni": "eni-multi", "instance": "vm-1"}
        ]}"#,
    ));
    for address in ["10.0.1.60/24", "10.0.1.61/24", "203.0.113.30/32", "203.0.113.31/32"] {
        must(vm.ip(&["addr", "add", address, "dev", "eth0"]));
    }
    // Servers bound to the EIPs themselves: they only answer if the destination arrives
    // unchanged.
    let _cut = must(Server::http_at(vm, SocketAddr::from((CUT, HTTP_PORT)), BODY));
    let _multi = must(Server::http_at(vm, SocketAddr::from((MULTI, HTTP_PORT)), BODY));
    let whoami = must(Server::tcp_whoami(inet, WHOAMI_PORT));
    let before = verdict(&agent, "forwarded_unchanged");

    for eip in [CUT, MULTI] {
        assert_eq!(curl_eip(inet, eip).unwrap_or_else(|e| panic!("curl {eip}: {e}")), BODY);
        let seen = whoami_from(vm, eip.into(), SocketAddr::from((INTERNET_HOST, WHOAMI_PORT)))
            .unwrap_or_else(|e| panic!("from {eip}: {e}"));
        assert_eq!(seen, eip.to_string(), "the Internet host saw another source");
        ping(inet, eip, 2).unwrap_or_else(|e| panic!("ping {eip}: {e}"));
    }
    assert!(
        whoami.peers().iter().all(|p| [CUT, MULTI].map(std::net::IpAddr::V4).contains(&p.ip()))
    );
    assert!(verdict(&agent, "forwarded_unchanged") > before);
    // R10: the cut-through ENI's own private address no longer carries Internet traffic.
    let private = Ipv4Addr::new(10, 0, 1, 60);
    let to_internet = SocketAddr::from((INTERNET_HOST, WHOAMI_PORT));
    assert!(whoami_from(vm, private.into(), to_internet).is_err(), "{private} still got out");
    let shown = eip_json(&agent, CUT);
    assert_eq!(shown["mode"], "cut-through");
    assert!(shown["counters"]["inbound_packets"].as_u64().unwrap_or(0) > 0, "{shown}");

    // Unassociated: the route and the entry go, and the EIP carries nothing.
    must(agent.eipctl_ok(&["eip", "unassociate", &CUT.to_string()]));
    assert!(curl_eip(inet, CUT).is_err(), "a cut-through EIP still answers after unassociate");
    let routes = must(topology.gw.ip(&["route", "show", "203.0.113.30/32"]));
    assert!(
        routes.stdout.is_empty(),
        "route left behind: {}",
        String::from_utf8_lossy(&routes.stdout)
    );
}

#[test]
fn ipv6_is_forwarded_untranslated_only_with_public_bandwidth() {
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    let vm6 = VM_IP6.to_string();
    let _http = must(Server::http_at(vm, SocketAddr::from((VM_IP6, HTTP_PORT)), BODY));
    let whoami = must(Server::tcp_whoami_at(inet, SocketAddr::from((INTERNET_HOST6, WHOAMI_PORT))));
    let url = format!("http://[{vm6}]:{HTTP_PORT}/");
    let to_internet = SocketAddr::from((INTERNET_HOST6, WHOAMI_PORT));
    must(agent.eipctl_ok(&["eni", "assign-ipv6", "vm-1-eni0", &vm6]));

    // Private-only by default (R23): dropped both ways and counted.
    let dropped = verdict(&agent, "drop_ipv6_not_public");
    assert!(curl(inet, &url).is_err(), "IPv6 reached a private-only address");
    assert!(whoami_from(vm, VM_IP6.into(), to_internet).is_err(), "a private-only address got out");
    assert!(verdict(&agent, "drop_ipv6_not_public") > dropped);

    // Public bandwidth on: forwarded both ways, and never translated.
    must(agent.eipctl_ok(&["eni", "ipv6-public", &vm6]));
    assert_eq!(curl(inet, &url).unwrap_or_else(|e| panic!("curl over IPv6: {e}")), BODY);
    let seen = whoami_from(vm, VM_IP6.into(), to_internet).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, vm6, "the source was rewritten");
    assert!(whoami.peers().iter().all(|p| p.ip() == std::net::IpAddr::V6(VM_IP6)));
    let out = inet
        .command("ping")
        .args(["-6", "-c", "2", "-i", "0.2", "-W", "1", &vm6])
        .output()
        .expect("ping");
    assert!(out.status.success(), "ping6 to a public address: {}", output_text(&out));

    // Off again: dropped again.
    must(agent.eipctl_ok(&["eni", "ipv6-public", &vm6, "--disable"]));
    assert!(curl(inet, &url).is_err(), "IPv6 still reaches the address after disable");
}

#[test]
fn an_instance_reaches_another_instance_through_its_eip() {
    const VM2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 12);
    let (topology, agent) = Topology::with_vpc();
    let vm = &topology.vm;
    // A second instance; the `vm` namespace answers for it too.
    must(agent.eipctl_ok(&[
        "instance",
        "create",
        "vm-2",
        "--region",
        "local",
        "--zone",
        "zone-a",
        "--type",
        "small",
        "--vswitch",
        "vsw-1",
        "--private-ip",
        &VM2_IP.to_string(),
    ]));
    must(vm.ip(&["addr", "add", "10.0.1.12/24", "dev", "eth0"]));
    for (eip, instance) in [(EIP, "vm-1"), (EIP2, "vm-2")] {
        must(agent.eipctl_ok(&["eip", "allocate", &eip.to_string()]));
        must(agent.eipctl_ok(&["eip", "associate", &eip.to_string(), "--instance", instance]));
    }
    // vm-2 serves on its private address only; vm-1 connects to vm-2's EIP. The gateway
    // turns the connection round: vm-2 sees vm-1's EIP, and its answers come back the same
    // way, so vm-1 talks to vm-2's EIP throughout.
    let server = must(Server::tcp_whoami_at(vm, SocketAddr::from((VM2_IP, WHOAMI_PORT))));
    let seen = whoami_from(vm, VM_IP.into(), SocketAddr::from((EIP2, WHOAMI_PORT)))
        .unwrap_or_else(|e| panic!("hairpin connection: {e}"));
    assert_eq!(seen, EIP.to_string(), "vm-2 saw the connection come from {seen}");
    assert_eq!(
        server.peers().iter().map(|p| p.ip()).collect::<Vec<_>>(),
        vec![std::net::IpAddr::V4(EIP)]
    );
    let shown = eip_json(&agent, EIP2);
    assert!(shown["counters"]["inbound_packets"].as_u64().unwrap_or(0) > 0, "{shown}");
    // Without an EIP of its own an instance has no address to be answered at.
    must(agent.eipctl_ok(&["eip", "unassociate", &EIP.to_string()]));
    assert!(
        whoami_from(vm, VM_IP.into(), SocketAddr::from((EIP2, WHOAMI_PORT))).is_err(),
        "a source without an EIP got through the hairpin"
    );
}

/// An `iperf3` server in `ns` on `port`, killed on drop.
struct Iperf3Server(std::process::Child);

impl Iperf3Server {
    /// Starts it and returns once it says it listens (its first line of output, flushed
    /// at once: piped, iperf3 would otherwise hold it in its buffer).
    fn start(ns: &Netns, port: u16) -> Self {
        use std::io::BufRead as _;
        let mut child = ns
            .command("iperf3")
            .args(["--server", "--forceflush", "--port", &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("running iperf3 (installed by `cargo xtask setup`)");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("iperf3's stdout"));
        let server = Self(child);
        let mut line = String::new();
        while !line.contains("Server listening") {
            line.clear();
            let read = stdout.read_line(&mut line).expect("reading iperf3's output");
            assert_ne!(read, 0, "iperf3 ended before it listened on {port}");
        }
        // The rest of its output (a report per test) is read and dropped, so that a full
        // pipe never stalls it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        server
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rate the receiving end of an `iperf3` run from `ns` to `target` measured, bit/s, over
/// three seconds after a first one left out: the cap's initial burst is not the rate.
/// `extra` picks UDP (`-u -b ...`) or the reverse direction (`-R`).
fn iperf3_received(ns: &Netns, target: Ipv4Addr, port: u16, extra: &[&str]) -> f64 {
    let output = ns
        .command("iperf3")
        .args(["--client", &target.to_string(), "--port", &port.to_string()])
        .args(["--time", "4", "--omit", "1", "--json"])
        .args(extra)
        .output()
        .expect("running iperf3");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("iperf3 {extra:?}: {e}; {}", output_text(&output)));
    report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| {
        panic!("iperf3 {extra:?} reported no received rate: {}", output_text(&output))
    })
}

#[test]
fn bandwidth_cap_holds_iperf3_to_the_cap_both_ways_and_an_uncapped_eip_is_not_slowed() {
    const CAP_MBPS: u32 = 20;
    const PORT: u16 = 5201;
    let cap = f64::from(CAP_MBPS) * 1e6;
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    let eip = EIP.to_string();
    must(agent.eipctl_ok(&["eip", "allocate", &eip, "--bandwidth", &CAP_MBPS.to_string()]));
    associate(&agent, EIP, VM_IP);
    let _server = Iperf3Server::start(vm, PORT);

    // UDP offered at twice the cap, in datagrams that need no fragmenting: the receiver
    // gets the cap (iperf3 counts UDP payload, the cap IPv4 packets: 1400 of 1428 bytes).
    let udp = ["--udp", "--bitrate", "40M", "--length", "1400"];
    let inbound = iperf3_received(inet, EIP, PORT, &udp);
    let outbound = iperf3_received(inet, EIP, PORT, &[&udp[..], &["--reverse"]].concat());
    for (direction, rate) in [("inbound", inbound), ("outbound", outbound)] {
        assert!(
            (0.9 * cap..=1.1 * cap).contains(&rate),
            "{direction} UDP at twice the cap arrived at {:.1} Mbit/s; the cap is {CAP_MBPS}",
            rate / 1e6
        );
    }
    // TCP settles just under the cap: the policer's burst is large enough that its drops
    // do not stall it.
    let tcp = iperf3_received(inet, EIP, PORT, &[]);
    assert!(
        (0.85 * cap..=1.1 * cap).contains(&tcp),
        "TCP through the cap: {:.1} Mbit/s; the cap is {CAP_MBPS}",
        tcp / 1e6
    );
    let counters = &eip_json(&agent, EIP)["counters"];
    for field in ["inbound_over_cap_packets", "outbound_over_cap_packets"] {
        assert!(counters[field].as_u64().unwrap_or(0) > 0, "{field} counted nothing: {counters}");
    }

    // Without the cap, the same path carries many times as much.
    must(agent.eipctl_ok(&["eip", "set-bandwidth", &eip]));
    let uncapped = iperf3_received(inet, EIP, PORT, &[]);
    assert!(
        uncapped > 10.0 * cap,
        "TCP without a cap: {:.1} Mbit/s, not even ten times the old cap of {CAP_MBPS}",
        uncapped / 1e6
    );
}

#[test]
fn security_group_admits_what_its_rules_allow_and_the_replies_to_the_instances_own_flows() {
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    let _http = must(Server::http(vm, HTTP_PORT, BODY));
    let _echo = must(Server::udp_echo(vm, UDP_PORT));
    let _whoami = must(Server::tcp_whoami(inet, WHOAMI_PORT));
    allocate_and_associate(&agent, EIP, VM_IP);
    curl_eip(inet, EIP).expect("before any group, the instance is open");

    // A group without rules on the instance's ENI: nothing comes in unasked...
    must(agent.eipctl_ok(&["security-group", "create", "sg-web", "--vpc", "vpc-1"]));
    must(agent.eipctl_ok(&["eni", "set-security-group", "vm-1-eni0", "sg-web"]));
    let denied_before = verdict(&agent, "drop_security_group");
    curl_eip(inet, EIP).expect_err("no rule lets HTTP in");
    udp_round_trip(inet, EIP, b"unasked").expect_err("no rule lets UDP in");
    ping(inet, EIP, 1).expect_err("no rule lets ping in");
    assert!(verdict(&agent, "drop_security_group") > denied_before, "the drops are counted");
    let counters = &eip_json(&agent, EIP)["counters"];
    assert!(counters["inbound_denied_packets"].as_u64().unwrap_or(0) > 0, "{counters}");
    // ...but the answers to what the instance opens itself do.
    assert_eq!(whoami_from_vm(vm).expect("TCP out and back"), EIP.to_string());
    ping(vm, INTERNET_HOST, 2).expect("echo replies to the instance's ping");

    // A rule for HTTP from the Internet host's network lets HTTP in, and only HTTP.
    let http_rule = ["--protocol", "tcp", "--port", "8080", "--source", "198.51.100.0/24"];
    must(agent.eipctl_ok(&[&["security-group", "authorize", "sg-web"][..], &http_rule].concat()));
    assert_eq!(curl_eip(inet, EIP).expect("HTTP is allowed"), BODY);
    udp_round_trip(inet, EIP, b"still unasked").expect_err("UDP still is not");
    // One from another network does not.
    must(agent.eipctl_ok(&[
        "security-group",
        "revoke",
        "sg-web",
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--source",
        "198.51.100.0/24",
    ]));
    let elsewhere = ["--protocol", "tcp", "--port", "8080", "--source", "192.0.2.0/24"];
    must(agent.eipctl_ok(&[&["security-group", "authorize", "sg-web"][..], &elsewhere].concat()));
    curl_eip(inet, EIP).expect_err("the rule is for another source network");
    let all_udp_icmp = [["--protocol", "udp", "--port", "9000"], ["--protocol", "icmp", "", ""]];
    for rule in all_udp_icmp {
        let rule: Vec<&str> = rule.into_iter().filter(|a| !a.is_empty()).collect();
        must(agent.eipctl_ok(&[&["security-group", "authorize", "sg-web"][..], &rule].concat()));
    }
    udp_round_trip(inet, EIP, b"now allowed").expect("UDP 9000 is allowed");
    ping(inet, EIP, 1).expect("ICMP is allowed");

    // Without a group the ENI is open again.
    must(agent.eipctl_ok(&["eni", "set-security-group", "vm-1-eni0", "--none"]));
    assert_eq!(curl_eip(inet, EIP).expect("no group, no filter"), BODY);
    // And the group is refused deletion only while an ENI uses it.
    must(agent.eipctl_ok(&["security-group", "delete", "sg-web"]));
}
