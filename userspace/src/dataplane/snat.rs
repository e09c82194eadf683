//! The SNAT session table as the agent sees it: the program creates and refreshes sessions,
//! the agent lists them, counts the ports they hold, and ends those that have expired or
//! whose private address no longer leaves through their EIP. Pure functions here; the map
//! reads and deletes are in the data plane.

use std::{collections::BTreeMap, net::Ipv4Addr};

use eipgw_common::{
    Endpoint, PrivateEntry, SESSION_OPEN, SESSION_TCP_CLOSING, SESSION_TCP_ESTABLISHED,
    SESSION_TCP_HANDSHAKE, SnatConfig, SnatSession, ipv4_octets,
    policy::{PROTO_ICMP, PROTO_TCP, PROTO_UDP},
};
use serde::{Deserialize, Deserializer, Serialize};

const NS_PER_SECOND: u64 = 1_000_000_000;

/// A fixed name. Through an alias, serde's derive does not take the field for text
/// borrowed from the input (it reads it with [`static_name`] instead), so the view
/// deserializes from any input, as the CLI needs.
pub type Name = &'static str;

/// One live SNAT session, for people and scripts. Ports in host order; for ICMP, the ports
/// are the echo identifier (private and public) and the remote port is 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatSessionView {
    /// "tcp", "udp" or "icmp".
    #[serde(deserialize_with = "de_protocol")]
    pub protocol: Name,
    pub private_ip: Ipv4Addr,
    pub private_port: u16,
    pub eip: Ipv4Addr,
    pub public_port: u16,
    /// The last remote endpoint the private side sent to.
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
    /// "open" (UDP, ICMP), or for TCP "handshake", "established" or "closing".
    #[serde(deserialize_with = "de_state")]
    pub state: Name,
    /// Seconds since its last packet, and since it was created.
    pub idle_seconds: u64,
    pub age_seconds: u64,
}

const PROTOCOLS: [&str; 4] = ["tcp", "udp", "icmp", "other"];
const STATES: [&str; 5] = ["open", "handshake", "established", "closing", "unknown"];

pub fn protocol_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

fn state_text(state: u8) -> &'static str {
    match state {
        SESSION_OPEN => "open",
        SESSION_TCP_HANDSHAKE => "handshake",
        SESSION_TCP_ESTABLISHED => "established",
        SESSION_TCP_CLOSING => "closing",
        _ => "unknown",
    }
}

/// Reads a name back as the `&'static str` it was written from (the view is also what
/// `eipctl` reads from the API).
fn static_name<'de, D: Deserializer<'de>>(
    names: &'static [&'static str],
    deserializer: D,
) -> Result<&'static str, D::Error> {
    let name = String::deserialize(deserializer)?;
    names.iter().copied().find(|n| *n == name).ok_or_else(|| {
        serde::de::Error::custom(format!("unknown name {name:?}, expected one of {names:?}"))
    })
}

fn de_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    static_name(&PROTOCOLS, d)
}

fn de_state<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    static_name(&STATES, d)
}

fn addr(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(ipv4_octets(key))
}

/// A session as the API shows it at `now_ns` (CLOCK_MONOTONIC).
pub fn view(key: &Endpoint, session: &SnatSession, now_ns: u64) -> SnatSessionView {
    SnatSessionView {
        protocol: protocol_name(key.proto),
        private_ip: addr(key.addr),
        private_port: u16::from_be(key.port),
        eip: addr(session.eip),
        public_port: u16::from_be(session.public_port),
        remote_ip: addr(session.remote_addr),
        remote_port: u16::from_be(session.remote_port),
        state: state_text(session.state),
        idle_seconds: now_ns.saturating_sub(session.last_seen_ns) / NS_PER_SECOND,
        age_seconds: now_ns.saturating_sub(session.created_ns) / NS_PER_SECOND,
    }
}

/// Whether the agent ends a session: it has been idle too long, or its private address no
/// longer leaves through its EIP (`source`: the address's SNAT_SOURCES entry). In the second
/// case the session would otherwise go on letting replies in (to an address that lost its
/// SNAT egress, or got an EIP of its own) until it idled out, hours for TCP.
pub fn ends(
    config: &SnatConfig,
    key: &Endpoint,
    session: &SnatSession,
    source: Option<PrivateEntry>,
    now_ns: u64,
) -> bool {
    config.expired(key.proto, session, now_ns)
        || source.is_none_or(|source| source.eip_addr != session.eip)
}

/// What one EIP's SNAT holds: its sessions, and the public ports they hold per protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatUsage {
    pub sessions: u64,
    pub ports_in_use: ProtocolCounts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolCounts {
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
}

impl ProtocolCounts {
    pub fn max(self) -> u64 {
        self.tcp.max(self.udp).max(self.icmp)
    }

    fn count(&mut self, proto: u8) {
        match proto {
            PROTO_TCP => self.tcp += 1,
            PROTO_UDP => self.udp += 1,
            PROTO_ICMP => self.icmp += 1,
            _ => {}
        }
    }
}

/// Sessions per EIP (from the session table) and ports held per EIP and protocol (from the
/// port table, key: EIP side).
pub fn usage<'a>(
    sessions: impl IntoIterator<Item = &'a SnatSession>,
    ports: impl IntoIterator<Item = &'a Endpoint>,
) -> BTreeMap<Ipv4Addr, SnatUsage> {
    let mut by_eip: BTreeMap<Ipv4Addr, SnatUsage> = BTreeMap::new();
    for session in sessions {
        by_eip.entry(addr(session.eip)).or_default().sessions += 1;
    }
    for port in ports {
        by_eip.entry(addr(port.addr)).or_default().ports_in_use.count(port.proto);
    }
    by_eip
}

/// How full an EIP's port range is: the fullest protocol's share, in percent (each
/// protocol has the whole range to itself).
pub fn utilisation_percent(ports_in_use: ProtocolCounts, config: &SnatConfig) -> f64 {
    let range = f64::from(config.port_count().max(1));
    (ports_in_use.max() as f64 * 100.0 / range).min(100.0)
}

#[cfg(test)]
mod tests {
    use eipgw_common::ipv4_key;

    use super::*;

    const T0: u64 = 10_000 * NS_PER_SECOND;

    fn key(private: [u8; 4], port: u16, proto: u8) -> Endpoint {
        Endpoint::new(ipv4_key(private), port.to_be(), proto)
    }

    fn session(eip: [u8; 4], public_port: u16, state: u8, last_seen_ns: u64) -> SnatSession {
        SnatSession {
            last_seen_ns,
            created_ns: last_seen_ns - 30 * NS_PER_SECOND,
            eip: ipv4_key(eip),
            stats_slot: 3,
            remote_addr: ipv4_key([198, 51, 100, 7]),
            public_port: public_port.to_be(),
            remote_port: 443u16.to_be(),
            state,
            _pad: [0; 7],
        }
    }

    #[test]
    fn a_session_reads_in_host_order_with_names() {
        let s = session([203, 0, 113, 14], 40000, SESSION_TCP_ESTABLISHED, T0);
        let v = view(&key([10, 0, 1, 10], 51000, PROTO_TCP), &s, T0 + 5 * NS_PER_SECOND);
        assert_eq!(
            v,
            SnatSessionView {
                protocol: "tcp",
                private_ip: Ipv4Addr::new(10, 0, 1, 10),
                private_port: 51000,
                eip: Ipv4Addr::new(203, 0, 113, 14),
                public_port: 40000,
                remote_ip: Ipv4Addr::new(198, 51, 100, 7),
                remote_port: 443,
                state: "established",
                idle_seconds: 5,
                age_seconds: 35,
            }
        );
        // A clock read on another CPU just before the last packet is not negative idle time.
        assert_eq!(view(&key([10, 0, 1, 10], 1, PROTO_UDP), &s, T0 - 1).idle_seconds, 0);
        // What the API writes, the CLI reads back.
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<SnatSessionView>(&json).unwrap(), v);
        let icmp = view(&key([10, 0, 1, 10], 7, PROTO_ICMP), &s, T0);
        assert_eq!((icmp.protocol, icmp.private_port), ("icmp", 7));
    }

    #[test]
    fn sessions_end_when_idle_or_when_their_source_moved() {
        let config = SnatConfig::DEFAULT;
        let eip = [203, 0, 113, 14];
        let source =
            Some(PrivateEntry { eip_addr: ipv4_key(eip), stats_slot: 3, ..Default::default() });
        let k = key([10, 0, 1, 10], 5353, PROTO_UDP);
        let s = session(eip, 5353, SESSION_OPEN, T0);
        assert!(!ends(&config, &k, &s, source, T0 + 300 * NS_PER_SECOND));
        assert!(ends(&config, &k, &s, source, T0 + 301 * NS_PER_SECOND));
        // The address lost SNAT egress, or leaves through another EIP now.
        assert!(ends(&config, &k, &s, None, T0));
        let moved = Some(PrivateEntry {
            eip_addr: ipv4_key([203, 0, 113, 13]),
            stats_slot: 4,
            ..Default::default()
        });
        assert!(ends(&config, &k, &s, moved, T0));
    }

    #[test]
    fn usage_counts_sessions_and_ports_per_eip_and_protocol() {
        let (a, b) = ([203, 0, 113, 14], [203, 0, 113, 13]);
        let sessions = [
            session(a, 1000, SESSION_OPEN, T0),
            session(a, 1001, SESSION_OPEN, T0),
            session(b, 1000, SESSION_OPEN, T0),
        ];
        let ports = [
            Endpoint::new(ipv4_key(a), 1000u16.to_be(), PROTO_TCP),
            Endpoint::new(ipv4_key(a), 1001u16.to_be(), PROTO_UDP),
            Endpoint::new(ipv4_key(b), 1000u16.to_be(), PROTO_ICMP),
        ];
        let by_eip = usage(&sessions, &ports);
        let of_a = by_eip[&Ipv4Addr::from(a)];
        assert_eq!(of_a.sessions, 2);
        assert_eq!(of_a.ports_in_use, ProtocolCounts { tcp: 1, udp: 1, icmp: 0 });
        assert_eq!(by_eip[&Ipv4Addr::from(b)].ports_in_use.icmp, 1);
    }

    #[test]
    fn utilisation_is_the_fullest_protocols_share() {
        let tiny = SnatConfig { port_min: 20000, port_max: 20001, ..SnatConfig::DEFAULT };
        let used = ProtocolCounts { tcp: 1, udp: 2, icmp: 0 };
        assert_eq!(utilisation_percent(used, &tiny), 100.0);
        assert_eq!(
            utilisation_percent(ProtocolCounts { tcp: 1, ..Default::default() }, &tiny),
            50.0
        );
        assert_eq!(utilisation_percent(ProtocolCounts::default(), &SnatConfig::DEFAULT), 0.0);
    }
}
