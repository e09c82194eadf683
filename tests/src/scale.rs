//! `eipctl apply` documents with many EIP associations: what the scale test applies and
//! the control-plane bench times (one generator, so both measure the same document).
//!
//! The scale VPC is 10.64.0.0/10 with one vSwitch 10.64.0.0/11 (2M addresses), apart from
//! the topology's 10.0.0.0/16. Its addresses sit on detached ENIs, which no instance
//! type's address limit applies to (R20 binds attached ENIs only).

use std::net::Ipv4Addr;

use serde_json::{Value, json};

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
pub fn eni_of(n: u32) -> String {
    format!("eni-scale-{}", n / IPS_PER_ENI)
}

/// One document creating the scale VPC and vSwitch, ENIs of [`IPS_PER_ENI`] addresses
/// holding `count` private addresses, `count` EIPs, and an association of EIP `n` with
/// private address `n` for each. Apply it after the topology's VPC document (it uses that
/// document's region).
pub fn associations_document(count: u32) -> Value {
    assert!(count <= MAX_ASSOCIATIONS, "at most {MAX_ASSOCIATIONS} associations fit, not {count}");
    let mut requests = vec![
        json!({"op": "create_vpc", "id": "vpc-scale", "region": "local", "cidr": "10.64.0.0/10"}),
        json!({"op": "create_vswitch", "id": "vsw-scale", "vpc": "vpc-scale", "zone": "zone-a",
               "cidr": "10.64.0.0/11"}),
    ];
    for first in (0..count).step_by(IPS_PER_ENI as usize) {
        let eni = eni_of(first);
        requests.push(json!({"op": "create_eni", "id": eni, "vswitch": "vsw-scale",
                             "primary_ip": private_ip(first)}));
        let secondaries: Vec<Ipv4Addr> =
            (first + 1..count.min(first + IPS_PER_ENI)).map(private_ip).collect();
        if !secondaries.is_empty() {
            requests.push(json!({"op": "assign_private_ips", "eni": eni, "ips": secondaries}));
        }
    }
    for n in 0..count {
        requests.push(json!({"op": "allocate_eip", "address": eip(n)}));
    }
    for n in 0..count {
        requests.push(json!({"op": "associate_eip", "eip": eip(n), "eni": eni_of(n),
                             "private_ip": private_ip(n)}));
    }
    json!({ "requests": requests })
}
