//! Security group matching, as the program does it per inbound packet, and how long a flow
//! an instance opened keeps letting its replies in.

use crate::{MAX_SECURITY_GROUP_RULES, RULE_ANY_PROTOCOL, SecurityGroupRule, SecurityGroupRules};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

impl SecurityGroupRule {
    /// Whether the rule allows a packet of `proto` from `src` (network byte order) to
    /// `dst_port`. `dst_port` is `None` for a TCP or UDP fragment that is not the first,
    /// which carries no ports: only a rule that allows every port can allow it.
    #[inline(always)]
    pub fn allows(&self, proto: u8, src: u32, dst_port: Option<u16>) -> bool {
        if src & self.src_mask != self.src_net {
            return false;
        }
        if self.proto == RULE_ANY_PROTOCOL {
            return true;
        }
        if self.proto != proto {
            return false;
        }
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return true;
        }
        match dst_port {
            Some(port) => self.port_min <= port && port <= self.port_max,
            None => self.port_min <= 1 && self.port_max == u16::MAX,
        }
    }
}

impl SecurityGroupRules {
    /// Whether any of the group's rules allows the packet (see [`SecurityGroupRule::allows`]).
    #[inline(always)]
    pub fn allow(&self, proto: u8, src: u32, dst_port: Option<u16>) -> bool {
        // A fixed bound, so that the verifier sees the loop end.
        for i in 0..MAX_SECURITY_GROUP_RULES {
            if i >= self.count as usize {
                return false;
            }
            if self.rules[i].allows(proto, src, dst_port) {
                return true;
            }
        }
        false
    }
}

/// How long a flow an instance opened lets replies in after the instance last sent on it:
/// the defaults of the common NAT references (RFC 5382 TCP established 2 h 4 min, RFC 4787
/// UDP 5 min, RFC 5508 ICMP query 60 s).
pub const fn flow_idle_timeout_ns(proto: u8) -> u64 {
    let seconds = match proto {
        PROTO_TCP => 7_440,
        PROTO_UDP => 300,
        _ => 60,
    };
    seconds * 1_000_000_000
}

/// The program refreshes a flow's last-seen time at most this often, so that a busy flow
/// costs a map write per second, not per packet.
pub const FLOW_REFRESH_NS: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(octets: [u8; 4]) -> u32 {
        u32::from_ne_bytes(octets)
    }

    fn rule(proto: u8, ports: (u16, u16), net: [u8; 4], prefix: u32) -> SecurityGroupRule {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }.to_be();
        SecurityGroupRule {
            src_net: addr(net) & mask,
            src_mask: mask,
            port_min: ports.0,
            port_max: ports.1,
            proto,
            _pad: [0; 3],
        }
    }

    fn group(rules: &[SecurityGroupRule]) -> SecurityGroupRules {
        let mut group = SecurityGroupRules { count: rules.len() as u32, ..Default::default() };
        group.rules[..rules.len()].copy_from_slice(rules);
        group
    }

    const INET: [u8; 4] = [198, 51, 100, 1];

    #[test]
    fn a_port_range_allows_its_ports_and_no_others() {
        let g = group(&[rule(PROTO_TCP, (8000, 8100), [0, 0, 0, 0], 0)]);
        assert!(g.allow(PROTO_TCP, addr(INET), Some(8000)));
        assert!(g.allow(PROTO_TCP, addr(INET), Some(8100)));
        assert!(!g.allow(PROTO_TCP, addr(INET), Some(7999)));
        assert!(!g.allow(PROTO_TCP, addr(INET), Some(8101)));
        assert!(!g.allow(PROTO_UDP, addr(INET), Some(8000)), "TCP rule, UDP packet");
    }

    #[test]
    fn the_source_must_be_inside_the_rules_network() {
        let g = group(&[rule(PROTO_UDP, (53, 53), [198, 51, 100, 0], 24)]);
        assert!(g.allow(PROTO_UDP, addr(INET), Some(53)));
        assert!(!g.allow(PROTO_UDP, addr([192, 0, 2, 1]), Some(53)));
    }

    #[test]
    fn icmp_and_all_rules_ignore_ports() {
        let g = group(&[rule(PROTO_ICMP, (0, 0), [0, 0, 0, 0], 0)]);
        assert!(g.allow(PROTO_ICMP, addr(INET), None));
        assert!(!g.allow(PROTO_TCP, addr(INET), Some(22)));
        let g = group(&[rule(RULE_ANY_PROTOCOL, (0, 0), [198, 51, 100, 0], 24)]);
        assert!(g.allow(PROTO_TCP, addr(INET), Some(22)));
        assert!(g.allow(47, addr(INET), None), "any protocol, GRE too");
    }

    #[test]
    fn a_later_fragment_passes_only_a_rule_for_every_port() {
        let some = group(&[rule(PROTO_UDP, (5000, 6000), [0, 0, 0, 0], 0)]);
        assert!(!some.allow(PROTO_UDP, addr(INET), None));
        let every = group(&[rule(PROTO_UDP, (1, 65535), [0, 0, 0, 0], 0)]);
        assert!(every.allow(PROTO_UDP, addr(INET), None));
    }

    #[test]
    fn an_empty_group_allows_nothing_and_count_bounds_the_rules() {
        assert!(!group(&[]).allow(PROTO_TCP, addr(INET), Some(80)));
        // A rule past `count` is not one of the group's.
        let mut g = group(&[rule(PROTO_TCP, (80, 80), [0, 0, 0, 0], 0)]);
        g.count = 0;
        assert!(!g.allow(PROTO_TCP, addr(INET), Some(80)));
        // A corrupt count larger than the array is bounded by it.
        g.count = u32::MAX;
        assert!(g.allow(PROTO_TCP, addr(INET), Some(80)));
    }

    #[test]
    fn the_last_of_32_rules_is_checked() {
        let mut rules = [rule(PROTO_TCP, (1, 1), [0, 0, 0, 0], 0); MAX_SECURITY_GROUP_RULES];
        rules[MAX_SECURITY_GROUP_RULES - 1] = rule(PROTO_TCP, (443, 443), [0, 0, 0, 0], 0);
        assert!(group(&rules).allow(PROTO_TCP, addr(INET), Some(443)));
    }
}
