//! A NAT gateway end to end through real namespaces: fifty instances, each a namespace of
//! its own on the LAN bridge, reach the Internet through one SNAT EIP with real TCP and UDP
//! sockets; a DNAT port of that EIP reaches a private server; and the egress precedence of
//! R27 holds for real traffic (own EIP, then a DNAT IP mapping, then SNAT).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use eipgw_tests::{
    AgentProcess, Netns, Topology, curl, must,
    servers::Server,
    topology::{EIP, INTERNET_HOST, LanHost, VM_IP},
};
use serde_json::{Value, json};

/// The NAT gateway's EIP that the SNAT entry and the DNAT port mapping use.
const SNAT_EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// A second gateway EIP, mapped whole (every port) to one instance.
const MAPPED_EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);
const INSTANCES: u8 = 50;
/// Every instance sends from the same ports, so all but one flow per protocol must get
/// another public port: the server sees the gateway choose, not the instances.
const TCP_SOURCE_PORT: u16 = 41_000;
const UDP_SOURCE_PORT: u16 = 40_000;
const WHOAMI_PORT: u16 = 7000;
/// Two UDP echo servers: one private (address, port) must appear as the same public
/// (EIP, port) to both (endpoint-independent mapping, RFC 4787 REQ-1).
const ECHO_PORTS: [u16; 2] = [9000, 9001];
const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const MAPPED_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 21);
const WEB_PUBLIC_PORT: u16 = 80;
const WEB_PRIVATE_PORT: u16 = 8080;
/// A UDP port mapping of the SNAT EIP to a port of the web instance where nothing listens.
const CLOSED_PUBLIC_PORT: u16 = 5300;
const CLOSED_PRIVATE_PORT: u16 = 5399;
/// A UDP port mapping to a server on the web instance, which takes a fragmented datagram.
const FRAGMENTED_PORT: u16 = 5301;
const BODY: &str = "hello from behind the NAT gateway\n";
/// How long a client keeps trying: the first packets wait for ARP on the gateway.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Private address of SNAT instance `n` (10.0.1.100 and up).
fn instance_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 100 + n)
}

/// Namespaces on the LAN for `instances` (id, private IP), and the instances in the agent
/// (vSwitch vsw-1, so the SNAT entry for vsw-1 covers them).
fn add_instances(
    topology: &Topology,
    agent: &AgentProcess,
    instances: &[(String, Ipv4Addr)],
) -> Vec<LanHost> {
    let ips: Vec<Ipv4Addr> = instances.iter().map(|(_, ip)| *ip).collect();
    let hosts = must(topology.add_lan_hosts(&ips));
    let requests: Vec<Value> = instances
        .iter()
        .map(|(id, ip)| {
            json!({"op": "create_instance", "id": id, "region": "local", "zone": "zone-a",
                   "instance_type": "small", "vswitch": "vsw-1", "private_ip": ip})
        })
        .collect();
    must(agent.apply_document(&json!({ "requests": requests }).to_string()));
    hosts
}

/// Runs `eipctl` with a command line as one writes it (words split at spaces).
fn eipctl(agent: &AgentProcess, command: &str) {
    must(agent.eipctl_ok(&command.split_whitespace().collect::<Vec<_>>()));
}

fn eipctl_json(agent: &AgentProcess, command: &str) -> Value {
    let args: Vec<&str> =
        ["--output", "json"].into_iter().chain(command.split_whitespace()).collect();
    let out = must(agent.eipctl_ok(&args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("eipctl {command}: {e}: {out}"))
}

fn verdict(agent: &AgentProcess, name: &str) -> u64 {
    let stats = eipctl_json(agent, "stats");
    stats["verdicts"][name].as_u64().unwrap_or_else(|| panic!("no verdict {name} in {stats}"))
}

/// Connects from `from` (port 0: any) to the Internet host's whoami server, which answers
/// with the source address it saw. Runs on the calling thread, which must be in the
/// client's namespace.
fn whoami(from: SocketAddr, timeout: Duration) -> Result<String, String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    socket.bind(&from.into()).map_err(|e| format!("bind {from}: {e}"))?;
    let to = SocketAddr::from((INTERNET_HOST, WHOAMI_PORT));
    socket.connect_timeout(&to.into(), timeout).map_err(|e| format!("{from} -> {to}: {e}"))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut seen = String::new();
    stream.read_to_string(&mut seen).map_err(|e| format!("{from}: read: {e}"))?;
    Ok(seen)
}

/// `whoami` from inside `ns`.
fn whoami_in(ns: &Netns, from: Ipv4Addr) -> Result<String, String> {
    must(ns.run_in(move || whoami(SocketAddr::from((from, 0)), Duration::from_secs(5))))
}

/// Sends `payload` to `to` until its echo comes back (from `to` itself, intact) or the
/// deadline passes: UDP may lose the first datagram while the gateway resolves a neighbour.
fn udp_echoed(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    socket.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; payload.len() + 16];
    loop {
        socket.send_to(payload, to).map_err(|e| format!("send to {to}: {e}"))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == to && buf[..n] == *payload => return Ok(()),
            Ok((_, from)) => return Err(format!("a wrong echo came from {from}, not {to}")),
            Err(_) if Instant::now() < deadline => {}
            Err(e) => return Err(format!("no echo from {to}: {e}")),
        }
    }
}

/// Bytes of UDP payload in the fragmented datagram: two fragments of 104 bytes.
const FRAGMENTED_PAYLOAD: usize = 200;

/// Sends one UDP datagram with `payload` to `to` as two IPv4 fragments, the last first,
/// through a raw socket (the kernel fills in the header checksum). The UDP header and its
/// checksum come from etherparse.
fn send_fragments_last_first(to: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let SocketAddr::V4(to_v4) = to else { return Err("IPv4 only".into()) };
    let builder = etherparse::PacketBuilder::ipv4(INTERNET_HOST.octets(), to_v4.ip().octets(), 64)
        .udp(40_404, to.port());
    let mut whole = Vec::new();
    builder.write(&mut whole, payload).map_err(|e| e.to_string())?;
    let udp = &whole[20..];
    // The first fragment carries a multiple of 8 bytes; offsets count in 8-byte units.
    let split = 104;
    let fragment = |offset: usize, more: bool, body: &[u8]| {
        let flags_offset = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        let total = (20 + body.len()) as u16;
        let mut packet = vec![0x45, 0];
        packet.extend(total.to_be_bytes());
        packet.extend(0x4242u16.to_be_bytes()); // identification
        packet.extend(flags_offset.to_be_bytes());
        packet.extend([64, 17, 0, 0]); // TTL, UDP, checksum (the kernel's)
        packet.extend(INTERNET_HOST.octets());
        packet.extend(to_v4.ip().octets());
        packet.extend(body);
        packet
    };
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .map_err(|e| format!("raw socket: {e}"))?;
    let target = socket2::SockAddr::from(to);
    for packet in [fragment(split, false, &udp[split..]), fragment(0, true, &udp[..split])] {
        socket.send_to(&packet, &target).map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// Sends datagrams on a socket connected to `to` until one is refused (the socket took an
/// ICMP port unreachable that quotes exactly what it sent) or the deadline passes.
fn udp_refused(to: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind((INTERNET_HOST, 0)).map_err(|e| format!("bind: {e}"))?;
    socket.connect(to).map_err(|e| format!("connect: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut buf = [0u8; 64];
    loop {
        // A refusal may also surface on the send after the one it answered.
        let result = socket.send(b"anyone there?").and_then(|_| socket.recv(&mut buf));
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            Ok(n) => return Err(format!("an answer came: {:?}", &buf[..n])),
            Err(_) if Instant::now() < deadline => {}
            Err(e) => return Err(format!("never refused: {e}")),
        }
    }
}

/// What one SNAT instance does: one TCP connection from [`TCP_SOURCE_PORT`] (returns the
/// source the server saw), then one UDP socket on [`UDP_SOURCE_PORT`] exchanging a datagram
/// with each echo server.
fn tcp_and_udp_out(ip: Ipv4Addr) -> Result<String, String> {
    let seen = whoami(SocketAddr::from((ip, TCP_SOURCE_PORT)), CLIENT_DEADLINE)?;
    let socket = UdpSocket::bind((ip, UDP_SOURCE_PORT)).map_err(|e| format!("bind: {e}"))?;
    for port in ECHO_PORTS {
        let payload = format!("from {ip} to port {port}");
        udp_echoed(&socket, SocketAddr::from((INTERNET_HOST, port)), payload.as_bytes())?;
    }
    Ok(seen)
}

/// `eipctl nat sessions` as JSON, with `filter` options.
fn sessions(agent: &AgentProcess, filter: &str) -> Vec<Value> {
    let listed = eipctl_json(agent, &format!("nat sessions {filter}"));
    listed.as_array().unwrap_or_else(|| panic!("sessions are not a list: {listed}")).clone()
}

fn field<'a>(session: &'a Value, name: &str) -> &'a Value {
    session.get(name).unwrap_or_else(|| panic!("session without {name}: {session}"))
}

/// The public endpoints the server saw, as a set, after checking each came from the EIP.
#[track_caller]
fn public_endpoints(server: &Server, what: &str) -> BTreeSet<SocketAddr> {
    let peers = server.peers();
    assert!(
        peers.iter().all(|p| p.ip() == IpAddr::V4(SNAT_EIP)),
        "the {what} server saw sources other than the SNAT EIP {SNAT_EIP}: {peers:?}"
    );
    peers.into_iter().collect()
}

#[test]
fn fifty_instances_share_one_snat_eip_on_distinct_ports_for_tcp_and_udp() {
    let started = Instant::now();
    let (topology, agent) = Topology::with_vpc();
    let inet = &topology.inet;
    let instances: Vec<(String, Ipv4Addr)> =
        (0..INSTANCES).map(|n| (format!("vm-snat-{n}"), instance_ip(n))).collect();
    let hosts = add_instances(&topology, &agent, &instances);
    eprintln!("{INSTANCES} instances up in {:.1?}", started.elapsed());
    let whoami_server = must(Server::tcp_whoami(inet, WHOAMI_PORT));
    let echo_servers = ECHO_PORTS.map(|port| must(Server::udp_echo(inet, port)));

    // No SNAT entry yet: an instance without an EIP has no way out, and the drop is counted.
    let no_egress = verdict(&agent, "drop_no_egress");
    let (first, first_ip) = (&hosts[0].ns, hosts[0].ip);
    let refused = must(first.run_in(move || whoami((first_ip, 0).into(), Duration::from_secs(1))));
    assert!(refused.is_err(), "an instance without EIP or SNAT got out: {refused:?}");
    assert!(verdict(&agent, "drop_no_egress") > no_egress, "the drop was not counted");

    eipctl(&agent, &format!("eip allocate {SNAT_EIP}"));
    eipctl(&agent, "nat-gateway create ngw-1 --vpc vpc-1");
    eipctl(&agent, &format!("nat-gateway add-eip ngw-1 {SNAT_EIP}"));
    eipctl(
        &agent,
        &format!("nat-gateway snat-add ngw-1 snat-1 --source-vswitch vsw-1 --eip {SNAT_EIP}"),
    );

    // All fifty at once, each from its own namespace.
    let clients: Vec<_> = hosts
        .iter()
        .map(|host| {
            let ip = host.ip;
            (ip, host.ns.spawn(move || tcp_and_udp_out(ip)))
        })
        .collect();
    let traffic = Instant::now();
    for (ip, client) in clients {
        let seen = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("entering the namespace of {ip}: {e:#}"))
            .unwrap_or_else(|e| panic!("instance {ip}: {e}\nagent log:\n{}", agent.log_text()));
        assert_eq!(seen, SNAT_EIP.to_string(), "the Internet host saw instance {ip} as {seen}");
    }
    eprintln!("{INSTANCES} TCP connections and UDP exchanges in {:.1?}", traffic.elapsed());

    // The servers saw only the EIP, on fifty distinct ports per protocol although every
    // instance used the same source port; both echo servers saw the same fifty.
    let tcp_seen = public_endpoints(&whoami_server, "TCP");
    assert_eq!(tcp_seen.len(), usize::from(INSTANCES), "TCP public endpoints: {tcp_seen:?}");
    assert_eq!(whoami_server.peers().len(), usize::from(INSTANCES), "one connection each");
    let [udp_seen, udp_seen_too] = [0, 1].map(|i| public_endpoints(&echo_servers[i], "UDP"));
    assert_eq!(udp_seen.len(), usize::from(INSTANCES), "UDP public endpoints: {udp_seen:?}");
    assert_eq!(udp_seen, udp_seen_too, "one private endpoint showed two public ones");
    // The first flow to ask for the shared source port kept it; all others moved.
    for (seen, port) in [(&tcp_seen, TCP_SOURCE_PORT), (&udp_seen, UDP_SOURCE_PORT)] {
        let kept = seen.iter().filter(|p| p.port() == port).count();
        assert_eq!(kept, 1, "{kept} flows on public port {port}: {seen:?}");
    }

    // The session table says which instance is behind which public port: exactly what the
    // servers saw, one TCP and one UDP session per instance.
    let listed = sessions(&agent, &format!("--eip {SNAT_EIP}"));
    let mut by_protocol: BTreeMap<String, BTreeMap<Ipv4Addr, SocketAddr>> = BTreeMap::new();
    for session in &listed {
        let ip = |name: &str| -> Ipv4Addr {
            field(session, name)
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{name} is not an address: {session}"))
        };
        let port = |name: &str| -> u16 {
            field(session, name)
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("{name} is not a port: {session}"))
        };
        let protocol = field(session, "protocol").as_str().expect("protocol").to_owned();
        assert_eq!(ip("eip"), SNAT_EIP, "{session}");
        assert_eq!(ip("remote_ip"), INTERNET_HOST, "{session}");
        let source_port = if protocol == "tcp" { TCP_SOURCE_PORT } else { UDP_SOURCE_PORT };
        assert_eq!(port("private_port"), source_port, "{session}");
        let public = SocketAddr::from((ip("eip"), port("public_port")));
        let previous = by_protocol.entry(protocol).or_default().insert(ip("private_ip"), public);
        assert!(previous.is_none(), "two sessions for one private endpoint: {listed:#?}");
    }
    let private_ips: BTreeSet<Ipv4Addr> = hosts.iter().map(|h| h.ip).collect();
    for (protocol, seen) in [("tcp", &tcp_seen), ("udp", &udp_seen)] {
        let table = by_protocol.get(protocol).cloned().unwrap_or_default();
        assert_eq!(
            table.keys().copied().collect::<BTreeSet<_>>(),
            private_ips,
            "{protocol} sessions are not one per instance: {table:?}"
        );
        assert_eq!(
            &table.values().copied().collect::<BTreeSet<_>>(),
            seen,
            "the {protocol} sessions' public endpoints differ from what the server saw"
        );
    }
    assert_eq!(by_protocol.len(), 2, "sessions of other protocols: {listed:#?}");

    // Filtered by private IP: that instance's two sessions.
    let one = sessions(&agent, &format!("--private-ip {first_ip}"));
    assert_eq!(one.len(), 2, "{one:#?}");
    assert!(one.iter().all(|s| s["private_ip"] == first_ip.to_string()), "{one:#?}");

    // `nat show` counts the sessions and ports in use on the EIP, and no refusals.
    let shown = eipctl_json(&agent, "nat show ngw-1");
    let figures = eip_figures(&shown, SNAT_EIP);
    assert_eq!(figures["roles"], json!(["snat"]), "{shown:#}");
    assert_eq!(figures["sessions"], 2 * u64::from(INSTANCES), "{shown:#}");
    let in_use = json!({"tcp": INSTANCES, "udp": INSTANCES, "icmp": 0});
    assert_eq!(figures["ports_in_use"], in_use, "{shown:#}");
    assert_eq!(figures["snat_refused_packets"], 0, "{shown:#}");

    // Translated traffic counts under the EIP like any other.
    let counters = &eipctl_json(&agent, &format!("eip show {SNAT_EIP}"))["counters"];
    for name in ["inbound_packets", "outbound_packets"] {
        let count = counters[name].as_u64().unwrap_or(0);
        assert!(count >= 4 * u64::from(INSTANCES), "{name}: {count} for {INSTANCES} instances");
    }
    eprintln!("whole test {:.1?}", started.elapsed());
}

/// The entry of `nat show` for one EIP.
#[track_caller]
fn eip_figures(shown: &Value, eip: Ipv4Addr) -> Value {
    shown["eips"]
        .as_array()
        .and_then(|eips| eips.iter().find(|e| e["eip"] == eip.to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("`nat show` has no entry for {eip}: {shown:#}"))
}

#[test]
fn a_dnat_port_reaches_a_private_server_and_own_eip_then_ip_mapping_come_before_snat() {
    let (topology, agent) = Topology::with_vpc();
    let (inet, vm) = (&topology.inet, &topology.vm);
    let instances = [("vm-web".to_owned(), WEB_IP), ("vm-mapped".to_owned(), MAPPED_IP)];
    let hosts = add_instances(&topology, &agent, &instances);
    let (web, mapped) = (&hosts[0], &hosts[1]);
    let whoami_server = must(Server::tcp_whoami(inet, WHOAMI_PORT));
    // Bound to the private address itself: it answers only if the destination was
    // rewritten to it.
    let web_server = must(Server::http_at(&web.ns, (WEB_IP, WEB_PRIVATE_PORT).into(), BODY));
    let mapped_server = must(Server::http_at(&mapped.ns, (MAPPED_IP, 7100).into(), BODY));

    // vm-1 has its own EIP; vsw-1, which holds all three instances, has a SNAT entry; the
    // web instance has a DNAT port on the SNAT EIP, the mapped one all ports of another.
    for eip in [SNAT_EIP, MAPPED_EIP, EIP] {
        eipctl(&agent, &format!("eip allocate {eip}"));
    }
    eipctl(&agent, &format!("eip associate {EIP} --instance vm-1"));
    eipctl(&agent, "nat-gateway create ngw-1 --vpc vpc-1");
    for eip in [SNAT_EIP, MAPPED_EIP] {
        eipctl(&agent, &format!("nat-gateway add-eip ngw-1 {eip}"));
    }
    let snat = format!("snat-add ngw-1 snat-1 --source-vswitch vsw-1 --eip {SNAT_EIP}");
    let port = format!(
        "dnat-add ngw-1 web --eip {SNAT_EIP} --protocol tcp --public-port {WEB_PUBLIC_PORT} \
         --private-ip {WEB_IP} --private-port {WEB_PRIVATE_PORT}"
    );
    let closed = format!(
        "dnat-add ngw-1 closed --eip {SNAT_EIP} --protocol udp --public-port \
         {CLOSED_PUBLIC_PORT} --private-ip {WEB_IP} --private-port {CLOSED_PRIVATE_PORT}"
    );
    let ip = format!("dnat-add ngw-1 mapped --eip {MAPPED_EIP} --private-ip {MAPPED_IP}");
    let fragmented = format!(
        "dnat-add ngw-1 fragmented --eip {SNAT_EIP} --protocol udp --public-port \
         {FRAGMENTED_PORT} --private-ip {WEB_IP} --private-port {FRAGMENTED_PORT}"
    );
    for entry in [snat, port, closed, fragmented, ip] {
        eipctl(&agent, &format!("nat-gateway {entry}"));
    }

    // DNAT port mapping: curl from the Internet reaches the private server at EIP:80, and
    // the server sees the client's real address (DNAT keeps the source).
    let url = format!("http://{SNAT_EIP}:{WEB_PUBLIC_PORT}/");
    assert_eq!(curl(inet, &url).unwrap_or_else(|e| panic!("curl {url}: {e}")), BODY);
    let peers = web_server.peers();
    assert!(!peers.is_empty() && peers.iter().all(|p| p.ip() == INTERNET_HOST), "{peers:?}");
    // The web instance's security group judges what the mapping lets through, on the port
    // the instance sees: with no rule nothing comes in, then a rule for 8080 (not 80).
    eipctl(&agent, "security-group create sg-web --vpc vpc-1");
    eipctl(&agent, "eni set-security-group vm-web-eni0 sg-web");
    let denied = verdict(&agent, "drop_security_group");
    assert!(curl(inet, &url).is_err(), "HTTP came in through a group without rules");
    assert!(verdict(&agent, "drop_security_group") > denied, "the drop was not counted");
    eipctl(
        &agent,
        &format!(
            "security-group authorize sg-web --protocol tcp --port {WEB_PRIVATE_PORT} \
             --source {INTERNET_HOST}/32"
        ),
    );
    assert_eq!(curl(inet, &url).unwrap_or_else(|e| panic!("curl {url}: {e}")), BODY);
    // The UDP checks below need no group.
    eipctl(&agent, "eni set-security-group vm-web-eni0 --none");
    // Another port of that EIP leads nowhere (no mapping, no session).
    let no_mapping = verdict(&agent, "drop_no_nat_mapping");
    let unmapped = format!("http://{SNAT_EIP}:{WEB_PRIVATE_PORT}/");
    assert!(curl(inet, &unmapped).is_err(), "an unmapped port of the SNAT EIP answered");
    assert!(verdict(&agent, "drop_no_nat_mapping") > no_mapping, "the drop was not counted");
    // The server's own ICMP errors go back translated (RFC 5508 REQ-3): the client's
    // socket, connected to the EIP's port, takes the port unreachable that the instance
    // sent about its private port as its own.
    let closed = SocketAddr::from((SNAT_EIP, CLOSED_PUBLIC_PORT));
    let refused = must(inet.run_in(move || udp_refused(closed)));
    refused.unwrap_or_else(|e| panic!("UDP to {closed}: {e}\nagent log:\n{}", agent.log_text()));
    // A datagram whose fragments come last first: only the first fragment holds the port
    // that says where it goes, so the gateway holds the other until it has passed.
    let server = must(web.ns.run_in(|| UdpSocket::bind((WEB_IP, FRAGMENTED_PORT))))
        .unwrap_or_else(|e| panic!("binding the fragment server: {e}"));
    let held = verdict(&agent, "fragment_held");
    let payload: Vec<u8> = (0..FRAGMENTED_PAYLOAD).map(|i| i as u8).collect();
    let to = SocketAddr::from((SNAT_EIP, FRAGMENTED_PORT));
    let datagram = payload.clone();
    must(inet.run_in(move || send_fragments_last_first(to, &datagram)))
        .unwrap_or_else(|e| panic!("sending fragments: {e}"));
    server.set_read_timeout(Some(CLIENT_DEADLINE)).expect("read timeout");
    let mut buf = vec![0u8; 2 * FRAGMENTED_PAYLOAD];
    let (n, from) = server.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!("the datagram never came whole: {e}\nagent log:\n{}", agent.log_text())
    });
    assert_eq!((&buf[..n], from.ip()), (&payload[..], IpAddr::V4(INTERNET_HOST)));
    assert!(verdict(&agent, "fragment_held") > held, "the early fragment was not held");
    // The IP mapping forwards any port.
    let url = format!("http://{MAPPED_EIP}:7100/");
    assert_eq!(curl(inet, &url).unwrap_or_else(|e| panic!("curl {url}: {e}")), BODY);
    assert!(mapped_server.peers().iter().all(|p| p.ip() == INTERNET_HOST));

    // R27 for connections the instances open: own EIP first, then the DNAT IP mapping,
    // then SNAT (a DNAT *port* mapping gives no egress of its own).
    let cases = [
        (vm, VM_IP, EIP, "eip"),
        (&mapped.ns, MAPPED_IP, MAPPED_EIP, "dnat_ip_mapping"),
        (&web.ns, WEB_IP, SNAT_EIP, "snat"),
    ];
    for (ns, private_ip, expected, egress) in cases {
        let seen = whoami_in(ns, private_ip).unwrap_or_else(|e| panic!("from {private_ip}: {e}"));
        assert_eq!(seen, expected.to_string(), "{private_ip} left as {seen}");
        let shown = eipctl_json(&agent, &format!("egress {private_ip}"));
        assert_eq!(shown["type"], egress, "eipctl egress {private_ip}: {shown}");
    }
    let seen: BTreeSet<IpAddr> = whoami_server.peers().iter().map(SocketAddr::ip).collect();
    assert_eq!(seen, BTreeSet::from([EIP, MAPPED_EIP, SNAT_EIP].map(IpAddr::V4)));

    let shown = eipctl_json(&agent, "nat show ngw-1");
    assert_eq!(eip_figures(&shown, SNAT_EIP)["roles"], json!(["dnat", "snat"]), "{shown:#}");
    assert_eq!(eip_figures(&shown, MAPPED_EIP)["roles"], json!(["ip-mapping"]), "{shown:#}");

    // Only the SNAT'ed connection holds a session; the others are stateless mappings.
    let listed = sessions(&agent, "");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["private_ip"], WEB_IP.to_string(), "{listed:#?}");
    assert_eq!(listed[0]["protocol"], "tcp", "{listed:#?}");
    // Its ephemeral port was free on the EIP, so it kept it.
    assert_eq!(listed[0]["public_port"], listed[0]["private_port"], "{listed:#?}");
}
