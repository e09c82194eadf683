//! `eipctl apply` documents with many EIP associations: what the scale test applies and
//! the control-plane bench times (one generator, so both measure the same document).
//!
//! The scale VPC is 10.64.0.0/10 with one vSwitch 10.64.0.0/11 (2M addresses), apart from
//! the topology's 10.0.0.0/16. Its addresses sit on detached ENIs, which no instance
//! type's address limit applies to (R20 binds attached ENIs only).

use std::net::Ipv4Addr;

use eipgw::model::{Id, Request};

/// Private addresses per ENI: the primary and 999 secondaries.
pub const IPS_PER_ENI: u32 = 1000;

/// The most associations a document holds: private addresses run out first, past the
/// vSwitch's reserved first addresses.
pub const MAX_ASSOCIATIONS: u32 = (1 << 21) - 32;

const VSWITCH_FIRST: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 0);

/// Private address `n` of the scale vSwitch (10.64.0.0/11), skipping its reserved first
/// addresses.
pub fn private_ip(n: u32) -> Ipv4Addr {
    assert!(n < MAX_ASSOCIATIONS, "private address {n} is outside the scale vSwitch");
    Ipv4Addr::from(u32::from(VSWITCH_FIRST) + 16 + n)
}

/// EIP `n`, from 100.64.0.0/10 (shared address space, RFC 6598; 4M addresses where the
/// benchmarking range 198.18.0.0/15 has only 131k). No traffic is ever sent to these: they
/// only fill the maps, and no namespace routes them.
pub fn eip(n: u32) -> Ipv4Addr {
    assert!(n < (1 << 22) - 2, "EIP {n} is outside 100.64.0.0/10");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + 1 + n)
}

/// The ENI holding private address `n`.
pub fn eni_of(n: u32) -> Id {
    Id::from(format!("eni-scale-{}", n / IPS_PER_ENI))
}

/// One document creating the scale VPC and vSwitch, ENIs of [`IPS_PER_ENI`] addresses
/// holding `count` private addresses, `count` EIPs, and an association of EIP `n` with
/// private address `n` for each. Apply it after the topology's VPC document (it uses that
/// document's region). JSON, each request written as `eipctl apply` sends it (`op` first).
pub fn associations_document(count: u32) -> String {
    document(count, Order::Rising)
}

/// [`associations_document`] with the associations in a fixed random order (the ENIs and
/// EIPs are still created in order, as a pool is): an operator's document need not list
/// them in the order of their addresses.
pub fn shuffled_associations_document(count: u32) -> String {
    document(count, Order::Random)
}

/// The order of a document's associations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// EIP n with private address n, n rising.
    Rising,
    /// The same pairs, in an order shuffled by a fixed seed.
    Random,
}

fn document(count: u32, order: Order) -> String {
    assert!(count <= MAX_ASSOCIATIONS, "at most {MAX_ASSOCIATIONS} associations fit, not {count}");
    let mut requests = vec![
        Request::CreateVpc {
            id: "vpc-scale".into(),
            region: "local".into(),
            cidr: "10.64.0.0/10".parse().expect("a CIDR"),
            ipv6_cidr: None,
            ipv4_gateway: false,
        },
        Request::CreateVswitch {
            id: "vsw-scale".into(),
            vpc: "vpc-scale".into(),
            zone: "zone-a".into(),
            cidr: "10.64.0.0/11".parse().expect("a CIDR"),
            ipv6_cidr: None,
        },
    ];
    for first in (0..count).step_by(IPS_PER_ENI as usize) {
        let eni = eni_of(first);
        requests.push(Request::CreateEni {
            id: eni.clone(),
            vswitch: "vsw-scale".into(),
            primary_ip: Some(private_ip(first)),
            security_group: None,
        });
        let ips: Vec<Ipv4Addr> =
            (first + 1..count.min(first + IPS_PER_ENI)).map(private_ip).collect();
        if !ips.is_empty() {
            requests.push(Request::AssignPrivateIps {
                eni,
                ips,
                count: 0,
                allow_reassignment: false,
            });
        }
    }
    for n in 0..count {
        requests.push(Request::AllocateEip { address: eip(n), region: None, bandwidth_mbps: None });
    }
    let mut pairs: Vec<u32> = (0..count).collect();
    if order == Order::Random {
        shuffle(&mut pairs);
    }
    for n in pairs {
        requests.push(Request::AssociateEip {
            eip: eip(n),
            instance: None,
            eni: Some(eni_of(n)),
            private_ip: Some(private_ip(n)),
            mode: None,
            allow_reassociation: false,
        });
    }
    let requests = serde_json::to_string(&requests).expect("requests encode as JSON");
    format!(r#"{{"requests":{requests}}}"#)
}

/// Fisher-Yates with xorshift64 from a fixed seed: the same order in every run.
fn shuffle(items: &mut [u32]) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}
