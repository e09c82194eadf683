//! The gateway namespace that the BPF_PROG_TEST_RUN tests (the packet table and the
//! randomized frames) run the real program in, and the addresses it knows.
//!
//! One namespace, no traffic of its own: wan0 (198.51.100.2/24) and lan0 (10.0.1.1/24)
//! with their veth peers, a default route to the Internet host, permanent neighbours with
//! known MACs (some next hops deliberately without one), and small-MTU routes. IPv6 only
//! on wan0 and lan0, so that nothing but the test frames reaches the program. The ingress
//! interface in the `xdp_md` context picks the direction and this namespace's FIB.

use std::{
    ffi::CString,
    net::{Ipv4Addr, Ipv6Addr},
};

use eipgw::dataplane::{DesiredMaps, EipMapping, EipPolicy, PortMapping};
use eipgw_common::{
    SecurityGroupRule, SecurityGroupRules,
    policy::{PROTO_TCP, PROTO_UDP},
};

use crate::Netns;

pub const WAN_IF: &str = "wan0";

pub const LAN_IF: &str = "lan0";

pub const WAN_PEER: &str = "wanp";

pub const LAN_PEER: &str = "lanp";

/// The WAN next hop (the default gateway), and the Internet host of every row.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

pub const INTERNET_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The gateway's own WAN address.
pub const GW_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The gateway's own LAN address.
pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// Associated with [`VM`].
pub const EIP_VM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// Associated with [`VM_UNRESOLVED`].
pub const EIP_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

/// Allocated and never associated.
pub const EIP_UNASSOCIATED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);

/// Associated with [`VM_SMALL_MTU`], whose route has an MTU of [`SMALL_MTU`].
pub const EIP_SMALL_MTU: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 13);

/// Cut-through (R10) to [`ENI_CUT`], the primary address of a secondary ENI.
pub const EIP_CUT_THROUGH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

/// Multi-EIP visible (R11) to [`ENI_MULTI`].
pub const EIP_MULTI: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);

/// Cut-through to [`ENI_UNRESOLVED`], which has no neighbour entry.
pub const EIP_CUT_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 22);

/// Associated with [`VM_GUARDED`], whose ENI has security group [`GUARD_GROUP`].
pub const EIP_GUARDED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);

/// Associated with [`VM_CAPPED`], capped at [`CAP_MBPS`].
pub const EIP_CAPPED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 31);

pub const VM_GUARDED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 30);

pub const VM_GUARDED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1e];

pub const VM_CAPPED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 31);

pub const VM_CAPPED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1f];

/// The security group number of [`VM_GUARDED`]'s ENI: one rule, TCP port 80 from anywhere.
pub const GUARD_GROUP: u32 = 7;

/// The port [`GUARD_GROUP`] lets in.
pub const GUARD_PORT: u16 = 80;

/// [`EIP_CAPPED`]'s bandwidth cap, Mbit/s: low, so that a burst runs out within a test.
pub const CAP_MBPS: u32 = 1;

pub const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);

pub const VM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

/// Has an EIP but no neighbour entry: the kernel has to resolve its MAC.
pub const VM_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);

/// A VPC address without an EIP.
pub const VM_WITHOUT_EIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 50);

pub const VM_SMALL_MTU: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 13);

pub const ENI_CUT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);

pub const ENI_CUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x14];

pub const ENI_MULTI: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 21);

pub const ENI_MULTI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x15];

pub const ENI_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 98);

/// An Internet destination routed through a WAN next hop with no neighbour entry.
pub const INTERNET_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// That next hop.
pub const WAN_HOP_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

/// An Internet destination whose route has an MTU of [`SMALL_MTU`].
pub const INTERNET_SMALL_MTU: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

pub const SMALL_MTU: &str = "1280";

/// The IPv6 Internet host (and WAN next hop), with the same MAC as [`INTERNET_HOST`].
pub const INTERNET_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

/// The gateway's own WAN address.
pub const GW_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

pub const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// Public bandwidth enabled (R23); on [`VM`]'s interface, so with [`VM_MAC`].
pub const VM6_PUBLIC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

/// Private only (the default, R23).
pub const VM6_PRIVATE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11);

pub const VM6_PRIVATE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Public, with no neighbour entry.
pub const VM6_UNRESOLVED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x12);

/// Public, and its route has an MTU of [`SMALL_MTU`].
pub const VM6_SMALL_MTU: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x13);

/// A NAT gateway EIP with DNAT port mappings (R26) to [`NAT_SERVER`]: TCP [`DNAT_TCP_PORT`]
/// to [`NAT_SERVER_TCP_PORT`], UDP [`DNAT_UDP_PORT`] to [`NAT_SERVER_UDP_PORT`] and TCP
/// [`DNAT_SSH_PORT`] to [`NAT_SERVER_SSH_PORT`]; no other port.
pub const EIP_DNAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);

pub const DNAT_TCP_PORT: u16 = 8443;

pub const DNAT_UDP_PORT: u16 = 5300;

/// A third DNAT port mapping of [`EIP_DNAT`] (TCP), to [`NAT_SERVER`]'s port
/// [`NAT_SERVER_SSH_PORT`], which [`DNAT_GROUP`] does not let in.
pub const DNAT_SSH_PORT: u16 = 8022;

pub const NAT_SERVER_SSH_PORT: u16 = 22;

/// [`NAT_SERVER`]'s security group: TCP [`NAT_SERVER_TCP_PORT`] and UDP
/// [`NAT_SERVER_UDP_PORT`] from anywhere; the ports the instance sees, not the EIP's.
pub const DNAT_GROUP: u32 = 8;

pub const NAT_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 40);

pub const NAT_SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x28];

pub const NAT_SERVER_TCP_PORT: u16 = 443;

pub const NAT_SERVER_UDP_PORT: u16 = 53;

/// A NAT gateway EIP with a DNAT IP mapping (all ports) to [`NAT_IP_HOST`]: the 1:1 path.
pub const EIP_DNAT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 41);

pub const NAT_IP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 41);

pub const NAT_IP_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x29];

/// A NAT gateway EIP that [`SNAT_HOST`] and [`SNAT_HOST_2`] leave through (SNAT, R25).
pub const EIP_SNAT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 42);

pub const SNAT_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 42);

pub const SNAT_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2a];

pub const SNAT_HOST_2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 43);

pub const SNAT_HOST_2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2b];

/// `enum xdp_action` (include/uapi/linux/bpf.h).
pub const XDP_ABORTED: u32 = 0;

/// `enum xdp_action` (include/uapi/linux/bpf.h).
pub const XDP_DROP: u32 = 1;

pub const XDP_PASS: u32 = 2;

pub const XDP_TX: u32 = 3;

pub const XDP_REDIRECT: u32 = 4;

/// The map contents the rows rely on.
pub fn desired_maps() -> DesiredMaps {
    let mut desired = DesiredMaps::default();
    desired.eips.insert(EIP_VM, EipMapping::Nat { private_ip: VM });
    desired.eips.insert(EIP_UNRESOLVED, EipMapping::Nat { private_ip: VM_UNRESOLVED });
    desired.eips.insert(EIP_SMALL_MTU, EipMapping::Nat { private_ip: VM_SMALL_MTU });
    desired.eips.insert(EIP_UNASSOCIATED, EipMapping::Unassociated);
    desired.eips.insert(EIP_CUT_THROUGH, EipMapping::CutThrough { next_hop: ENI_CUT });
    desired.eips.insert(EIP_MULTI, EipMapping::MultiEip { next_hop: ENI_MULTI });
    desired.eips.insert(EIP_CUT_UNRESOLVED, EipMapping::CutThrough { next_hop: ENI_UNRESOLVED });
    desired.eips.insert(EIP_GUARDED, EipMapping::Nat { private_ip: VM_GUARDED });
    desired.eips.insert(EIP_CAPPED, EipMapping::Nat { private_ip: VM_CAPPED });
    let mut group = SecurityGroupRules { count: 1, ..Default::default() };
    group.rules[0] = SecurityGroupRule {
        src_net: 0,
        src_mask: 0,
        port_min: GUARD_PORT,
        port_max: GUARD_PORT,
        proto: PROTO_TCP,
        _pad: [0; 3],
    };
    desired.security_groups.insert(GUARD_GROUP, group);
    let guarded = EipPolicy { security_group: Some(GUARD_GROUP), ..Default::default() };
    desired.policies.insert(EIP_GUARDED, guarded);
    let capped = EipPolicy { bandwidth_mbps: Some(CAP_MBPS), ..Default::default() };
    desired.policies.insert(EIP_CAPPED, capped);
    desired.ipv6_public.insert(VM6_PUBLIC);
    desired.ipv6_public.insert(VM6_UNRESOLVED);
    desired.ipv6_public.insert(VM6_SMALL_MTU);
    // The NAT gateway (R24-R28): DNAT port mappings, a DNAT IP mapping and SNAT sources.
    desired.eips.insert(EIP_DNAT, EipMapping::NatGateway);
    let dnat = |proto, public_port| PortMapping { eip: EIP_DNAT, proto, public_port };
    let server_tcp = (NAT_SERVER, NAT_SERVER_TCP_PORT);
    desired.dnat_ports.insert(dnat(PROTO_TCP, DNAT_TCP_PORT), server_tcp);
    let server_udp = (NAT_SERVER, NAT_SERVER_UDP_PORT);
    desired.dnat_ports.insert(dnat(PROTO_UDP, DNAT_UDP_PORT), server_udp);
    let server_ssh = (NAT_SERVER, NAT_SERVER_SSH_PORT);
    desired.dnat_ports.insert(dnat(PROTO_TCP, DNAT_SSH_PORT), server_ssh);
    let mut server_group = SecurityGroupRules { count: 2, ..Default::default() };
    for (rule, (proto, port)) in server_group
        .rules
        .iter_mut()
        .zip([(PROTO_TCP, NAT_SERVER_TCP_PORT), (PROTO_UDP, NAT_SERVER_UDP_PORT)])
    {
        *rule = SecurityGroupRule {
            src_net: 0,
            src_mask: 0,
            port_min: port,
            port_max: port,
            proto,
            _pad: [0; 3],
        };
    }
    desired.security_groups.insert(DNAT_GROUP, server_group);
    desired.dnat_groups.insert(NAT_SERVER, DNAT_GROUP);
    desired.eips.insert(EIP_DNAT_IP, EipMapping::Nat { private_ip: NAT_IP_HOST });
    desired.eips.insert(EIP_SNAT, EipMapping::NatGateway);
    desired.snat_sources.insert(SNAT_HOST, EIP_SNAT);
    desired.snat_sources.insert(SNAT_HOST_2, EIP_SNAT);
    desired
}

/// The namespace of the module doc, named `<prefix>-<suffix>`. The guard deletes it, with the veths and the XDP links
/// on them, on drop.
pub fn gateway_netns(prefix: &str, suffix: &str) -> Netns {
    let ns = Netns::create(&format!("{prefix}-{suffix}")).expect("creating the namespace");
    let setup = || -> anyhow::Result<()> {
        // Only the rows may reach the attached program, and the veth peers are the only
        // senders into wan0 and lan0: they stay without IPv6 (no DAD, router solicitations
        // or MLD reports, which would move PassNotTranslated) and without addresses.
        // `default` is set first so that the veths made next start without IPv6; wan0 and
        // lan0 get it back, with addresses that skip DAD and do not wait for it.
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.ip(&["link", "add", WAN_IF, "type", "veth", "peer", "name", WAN_PEER])?;
        ns.ip(&["link", "add", LAN_IF, "type", "veth", "peer", "name", LAN_PEER])?;
        for dev in [WAN_IF, LAN_IF] {
            ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
            ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_dad"), "0")?;
            ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_ra"), "0")?;
        }
        ns.ip(&["addr", "add", "198.51.100.2/24", "dev", WAN_IF])?;
        ns.ip(&["addr", "add", "10.0.1.1/24", "dev", LAN_IF])?;
        ns.ip(&["-6", "addr", "add", &format!("{GW_WAN6}/64"), "dev", WAN_IF, "nodad"])?;
        ns.ip(&["-6", "addr", "add", "2001:db8:1::1/64", "dev", LAN_IF, "nodad"])?;
        for dev in [WAN_IF, WAN_PEER, LAN_IF, LAN_PEER] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        ns.ip(&["route", "add", "default", "via", &INTERNET_HOST.to_string()])?;
        let unresolved_route = format!("{INTERNET_UNRESOLVED}/32");
        ns.ip(&["route", "add", &unresolved_route, "via", &WAN_HOP_UNRESOLVED.to_string()])?;
        ns.ip(&["-6", "route", "add", "default", "via", &INTERNET_HOST6.to_string()])?;
        // bpf_fib_lookup honours a route's MTU only when it is locked (ip_mtu_from_fib_result,
        // ip6_mtu_from_fib6).
        let small_mtu_route = format!("{INTERNET_SMALL_MTU}/32");
        let via = INTERNET_HOST.to_string();
        ns.ip(&["route", "add", &small_mtu_route, "via", &via, "mtu", "lock", SMALL_MTU])?;
        let small_mtu_route = format!("{VM6_SMALL_MTU}/128");
        ns.ip(&["-6", "route", "add", &small_mtu_route, "dev", LAN_IF, "mtu", "lock", SMALL_MTU])?;
        let small_mtu_route = format!("{VM_SMALL_MTU}/32");
        ns.ip(&["route", "add", &small_mtu_route, "dev", LAN_IF, "mtu", "lock", SMALL_MTU])?;
        // bpf_fib_lookup answers BPF_FIB_LKUP_RET_FWD_DISABLED unless the ingress device
        // forwards.
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for scope in ["all", "default", WAN_IF, LAN_IF] {
            ns.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        // Permanent neighbours: the FIB lookups succeed with MACs the rows know.
        // VM_UNRESOLVED, ENI_UNRESOLVED, WAN_HOP_UNRESOLVED and VM6_UNRESOLVED deliberately
        // have none.
        let neighbours = [
            (INTERNET_HOST.to_string(), INTERNET_HOST_MAC, WAN_IF),
            (VM.to_string(), VM_MAC, LAN_IF),
            (VM_GUARDED.to_string(), VM_GUARDED_MAC, LAN_IF),
            (VM_CAPPED.to_string(), VM_CAPPED_MAC, LAN_IF),
            (ENI_CUT.to_string(), ENI_CUT_MAC, LAN_IF),
            (ENI_MULTI.to_string(), ENI_MULTI_MAC, LAN_IF),
            (NAT_SERVER.to_string(), NAT_SERVER_MAC, LAN_IF),
            (NAT_IP_HOST.to_string(), NAT_IP_HOST_MAC, LAN_IF),
            (SNAT_HOST.to_string(), SNAT_HOST_MAC, LAN_IF),
            (SNAT_HOST_2.to_string(), SNAT_HOST_2_MAC, LAN_IF),
            (INTERNET_HOST6.to_string(), INTERNET_HOST_MAC, WAN_IF),
            (VM6_PUBLIC.to_string(), VM_MAC, LAN_IF),
            (VM6_PRIVATE.to_string(), VM6_PRIVATE_MAC, LAN_IF),
        ];
        for (address, mac, dev) in neighbours {
            let mac = format_mac(mac);
            ns.ip(&["neigh", "add", &address, "lladdr", &mac, "dev", dev, "nud", "permanent"])?;
        }
        Ok(())
    };
    setup().unwrap_or_else(|e| panic!("setting up namespace {}: {e:#}", ns.name()));
    ns
}

/// The MAC address of an interface in `ns`, as `ip -j link` reports it.
pub fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let output = ns
        .ip(&["-j", "link", "show", "dev", ifname])
        .unwrap_or_else(|e| panic!("reading the MAC of {ifname}: {e:#}"));
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ip -j output");
    let text = links[0]["address"].as_str().expect("an address in `ip -j link` output");
    let octets: Vec<u8> =
        text.split(':').map(|octet| u8::from_str_radix(octet, 16).expect("a hex octet")).collect();
    octets.try_into().unwrap_or_else(|_| panic!("{ifname} has MAC {text}, not 6 octets"))
}

/// A MAC as `ip` writes it.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|octet| format!("{octet:02x}")).join(":")
}

/// The ifindex of an interface in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> u32 {
    let name = CString::new(ifname).expect("no NUL in an interface name");
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no interface {ifname} in this thread's namespace");
    index
}

/// An ARP request from the Internet host for the gateway's WAN address: a frame that is
/// not IP.
pub fn arp_request() -> Vec<u8> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &INTERNET_HOST_MAC,
        &INTERNET_HOST.octets(),
        &[0; 6],
        &GW_WAN.octets(),
    )
    .expect("an ARP packet");
    let eth = Ethernet2Header {
        source: INTERNET_HOST_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    };
    let mut frame = eth.to_bytes().to_vec();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// Pins the calling thread to one CPU, so that every run meets the same per-CPU state.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET and sched_setaffinity (for
    // the calling thread) get a valid one.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

/// BPF_PROG_TEST_RUN's context, as the agent makes it.
pub use eipgw::dataplane::xdp_md;
