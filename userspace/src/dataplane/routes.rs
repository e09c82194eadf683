//! Kernel routes for visible-mode EIPs (cut-through, multi-EIP): `EIP/32 via <ENI primary
//! address> dev <LAN>`. With the route in place, the XDP program's FIB lookup on the EIP
//! itself finds the ENI, and a frame the program leaves to the kernel (next hop's MAC not
//! yet resolved) is forwarded there too. The routes carry their own protocol number so that
//! reconciling finds exactly ours.

use std::{collections::BTreeMap, net::Ipv4Addr, process::Command};

use anyhow::{Context as _, bail};

/// `proto` of our routes (unassigned in /etc/iproute2/rt_protos).
const ROUTE_PROTOCOL: &str = "99";

pub struct Routes {
    lan: String,
}

impl Routes {
    pub fn new(lan: &str) -> Self {
        Self { lan: lan.to_owned() }
    }

    pub fn replace(&self, eip: Ipv4Addr, next_hop: Ipv4Addr) -> anyhow::Result<()> {
        ip(&[
            "route",
            "replace",
            &format!("{eip}/32"),
            "via",
            &next_hop.to_string(),
            "dev",
            &self.lan,
            "proto",
            ROUTE_PROTOCOL,
        ])
    }

    pub fn remove(&self, eip: Ipv4Addr) -> anyhow::Result<()> {
        let present = self.present()?;
        if present.contains_key(&eip) {
            ip(&["route", "del", &format!("{eip}/32"), "proto", ROUTE_PROTOCOL])?;
        }
        Ok(())
    }

    /// Makes our routes exactly `wanted` (EIP → next hop).
    pub fn reconcile(&self, wanted: &BTreeMap<Ipv4Addr, Ipv4Addr>) -> anyhow::Result<()> {
        let present = self.present()?;
        for eip in present.keys().filter(|eip| !wanted.contains_key(eip)) {
            ip(&["route", "del", &format!("{eip}/32"), "proto", ROUTE_PROTOCOL])?;
        }
        for (eip, next_hop) in wanted {
            if present.get(eip) != Some(next_hop) {
                self.replace(*eip, *next_hop)?;
            }
        }
        Ok(())
    }

    /// Our routes now in the kernel: EIP → next hop.
    fn present(&self) -> anyhow::Result<BTreeMap<Ipv4Addr, Ipv4Addr>> {
        let out = Command::new("ip")
            .args(["-j", "-4", "route", "show", "proto", ROUTE_PROTOCOL])
            .output()
            .context("running `ip route` (iproute2 is needed for visible-mode EIPs)")?;
        if !out.status.success() {
            bail!("`ip route show` failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let routes: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).context("parsing `ip -j route` output")?;
        Ok(routes
            .iter()
            .filter_map(|r| {
                let dst = r["dst"].as_str()?.trim_end_matches("/32").parse().ok()?;
                let via = r["gateway"].as_str()?.parse().ok()?;
                Some((dst, via))
            })
            .collect())
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
