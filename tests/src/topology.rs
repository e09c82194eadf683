//! The gateway topology: `inet` (an Internet host) ⇄ veth ⇄ `gw` (WAN and LAN, where
//! eipgwd runs) ⇄ veth ⇄ `vm` (a VPC instance with private addresses).
//!
//! ```text
//!  inet: eth0 198.51.100.1/24 ─── wan0 198.51.100.2/24 [gw] lan0 10.0.1.1/24 ─── vm: eth0 10.0.1.10/24
//!        route 203.0.113.0/24 via gw                                                 10.0.1.11/24
//!                                                                                    default via gw
//! ```
//!
//! [`Topology::add_lan_hosts`] adds instances with namespaces of their own: `vm`'s `eth0`
//! then hangs off a bridge there, and each host is one more port of it.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    EbpfLoader, Pod,
    maps::{HashMap, Map, MapData},
    programs::{Xdp, XdpMode},
};
use eipgw_common::{PIN_DIR_NAME, PROGRAM_PASS};

use crate::{AgentProcess, Mount, Netns, unique_suffix};

pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const GW_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
pub const VM_IP2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
pub const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const EIP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// IPv6 (never translated, R23): the Internet host, and two instance addresses of vSwitch
/// vsw-1 (2001:db8:1:1::/64) that the `vm` namespace answers on.
pub const INTERNET_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const VM_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 0x10);
pub const WAN_IF: &str = "wan0";
/// The resources behind the gateway (an `eipctl apply` document): VM_IP and VM_IP2 belong
/// to instance `vm-1`.
pub const VPC_DOCUMENT: &str = include_str!("../../examples/vpc.yaml");
pub const LAN_IF: &str = "lan0";

/// Removes a directory tree on drop.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fields drop in order: XDP on the hosts' ends first, then the namespaces, then the bpffs
/// and the scratch directory.
pub struct Topology {
    /// Pass-through XDP on the far ends of the veths (see `eipgw_common::PROGRAM_PASS`).
    _host_programs: Vec<aya::Ebpf>,
    pub inet: Netns,
    pub gw: Netns,
    pub vm: Netns,
    bpffs: Mount,
    dir: DirGuard,
}

impl Topology {
    pub fn create() -> anyhow::Result<Self> {
        let suffix = unique_suffix();
        let dir = DirGuard(std::env::temp_dir().join(format!("eipgw-{suffix}")));
        std::fs::create_dir_all(&dir.0)?;
        let bpffs = Mount::bpffs(&dir.0.join("bpf"))?;
        let inet = Netns::create(&format!("eipgw-inet-{suffix}"))?;
        let gw = Netns::create(&format!("eipgw-gw-{suffix}"))?;
        let vm = Netns::create(&format!("eipgw-vm-{suffix}"))?;

        for (host, gw_if) in [(&inet, WAN_IF), (&vm, LAN_IF)] {
            host.ip(&[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                gw_if,
                "netns",
                gw.name(),
            ])?;
        }

        inet.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth0"])?;
        inet.ip(&["addr", "add", "2001:db8:100::1/64", "dev", "eth0", "nodad"])?;
        inet.ip(&["link", "set", "eth0", "up"])?;
        inet.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"])?;
        inet.ip(&["-6", "route", "add", "2001:db8:1::/48", "via", "2001:db8:100::2"])?;

        gw.ip(&["addr", "add", "198.51.100.2/24", "dev", WAN_IF])?;
        gw.ip(&["addr", "add", "10.0.1.1/24", "dev", LAN_IF])?;
        // Addresses without duplicate detection are usable at once (no polling for DAD).
        gw.ip(&["addr", "add", "2001:db8:100::2/64", "dev", WAN_IF, "nodad"])?;
        gw.ip(&["addr", "add", "2001:db8:1:1::1/64", "dev", LAN_IF, "nodad"])?;
        gw.ip(&["link", "set", WAN_IF, "up"])?;
        gw.ip(&["link", "set", LAN_IF, "up"])?;
        gw.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // A translated packet passed to the kernel (neighbour not yet resolved) carries the
        // EIP as its source on the LAN side: reverse-path filtering would drop it.
        for scope in ["all", "default", WAN_IF, LAN_IF] {
            gw.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }

        vm.ip(&["addr", "add", "10.0.1.10/24", "dev", "eth0"])?;
        vm.ip(&["addr", "add", "10.0.1.11/24", "dev", "eth0"])?;
        vm.ip(&["addr", "add", "2001:db8:1:1::10/64", "dev", "eth0", "nodad"])?;
        vm.ip(&["link", "set", "eth0", "up"])?;
        vm.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
        vm.ip(&["-6", "route", "add", "default", "via", "2001:db8:1:1::1"])?;

        // These veth ends stand for remote hosts, whose frames arrive on a real gateway with
        // complete checksums. A local stack's veth would hand XDP checksums still to be
        // completed by offload (CHECKSUM_PARTIAL), which XDP cannot see; turn that off.
        for ns in [&inet, &vm] {
            ns.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])?;
        }

        let mut host_programs = Vec::new();
        for ns in [&inet, &vm] {
            let pins = bpffs.path().join(format!("pass-{}", ns.name()));
            std::fs::create_dir_all(&pins)?;
            let ebpf = ns
                .run_in(move || attach_pass(&pins, "eth0"))?
                .with_context(|| format!("attaching the pass program in {}", ns.name()))?;
            host_programs.push(ebpf);
        }

        Ok(Self { _host_programs: host_programs, inet, gw, vm, bpffs, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// Where the agent pins its maps and links.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs().join(PIN_DIR_NAME)
    }

    /// The agent's hash map pinned as `name`; panics, naming it, if there is none.
    pub fn pinned_hash_map<K: Pod, V: Pod>(&self, name: &str) -> HashMap<MapData, K, V> {
        let path = self.pin_dir().join(name);
        let map =
            MapData::from_pin(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        HashMap::try_from(Map::HashMap(map)).unwrap_or_else(|e| panic!("map {name}: {e}"))
    }

    /// As root: the topology with eipgwd running and the VPC of [`VPC_DOCUMENT`] created,
    /// where the end-to-end tests start.
    pub fn with_vpc() -> (Topology, AgentProcess) {
        crate::require_root();
        let topology = crate::must(Topology::create());
        let agent = crate::must(topology.start_agent());
        crate::must(agent.apply_document(VPC_DOCUMENT));
        (topology, agent)
    }

    /// Starts eipgwd in `gw` on WAN and LAN, with its state, pins and socket in this
    /// topology's scratch directory, and waits until its API answers.
    pub fn start_agent(&self) -> anyhow::Result<AgentProcess> {
        AgentProcess::start(self)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir().join("eipgw.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }
}

/// The bridge in `vm` that joins further instances to the LAN (see
/// [`Topology::add_lan_hosts`]).
pub const LAN_BRIDGE: &str = "br0";

/// A VPC instance in a namespace of its own: `eth0` holds one private address of
/// 10.0.1.0/24 and routes by default via the gateway, through the bridge in `vm`.
pub struct LanHost {
    pub ip: Ipv4Addr,
    pub ns: Netns,
}

impl Topology {
    /// Adds one instance namespace per address to the LAN, quickly (a few `ip -batch`
    /// runs, not one `ip` per step), each removed on drop.
    ///
    /// The first call makes `vm` the LAN's switch as well as an instance: its `eth0`
    /// (still the only link to the gateway's `lan0`, pass program attached) becomes a port
    /// of bridge [`LAN_BRIDGE`], which takes over its MAC, addresses and default routes;
    /// each host's veth is another port. One bridge with one uplink: no loop, and nothing
    /// leaves the topology's namespaces. STP is off, so a port forwards at once.
    pub fn add_lan_hosts(&self, ips: &[Ipv4Addr]) -> anyhow::Result<Vec<LanHost>> {
        self.bridge_vm_lan()?;
        let suffix = unique_suffix();
        let names: Vec<String> =
            ips.iter().enumerate().map(|(n, _)| format!("eipgw-h{n}-{suffix}")).collect();
        let namespaces = Netns::create_many(&names)?;
        let hosts: Vec<LanHost> =
            ips.iter().zip(namespaces).map(|(&ip, ns)| LanHost { ip, ns }).collect();
        // Named after the address, so ports stay unique across calls (at most 15 bytes).
        let port = |ip: Ipv4Addr| format!("h{:08x}", u32::from(ip));
        let ports: String = hosts
            .iter()
            .map(|host| {
                let (port, ns) = (port(host.ip), host.ns.name());
                format!(
                    "link add {port} type veth peer name eth0 netns {ns}\n\
                     link set {port} master {LAN_BRIDGE}\nlink set {port} up\n"
                )
            })
            .collect();
        self.vm.ip_batch(&ports)?;
        for host in &hosts {
            // As for `vm`: frames must reach the gateway's XDP with complete checksums.
            host.ns.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])?;
            host.ns.ip_batch(&format!(
                "addr add {}/24 dev eth0\nlink set eth0 up\nroute add default via {GW_LAN}\n",
                host.ip
            ))?;
        }
        Ok(hosts)
    }

    /// Puts `vm`'s `eth0` under [`LAN_BRIDGE`] (once), moving its addresses and routes.
    fn bridge_vm_lan(&self) -> anyhow::Result<()> {
        if self.vm.ip(&["link", "show", LAN_BRIDGE]).is_ok() {
            return Ok(());
        }
        let shown = self.vm.ip(&["-j", "addr", "show", "dev", "eth0"])?;
        let shown: serde_json::Value =
            serde_json::from_slice(&shown.stdout).context("`ip -j addr show` output")?;
        let link = &shown[0];
        // The bridge keeps eth0's MAC, so the gateway's neighbour entries stay right.
        let mac = link["address"].as_str().context("eth0 has no MAC")?;
        // Flushed at once: deleting a primary IPv4 address one by one takes its
        // secondaries with it.
        let mut batch = format!(
            "link add {LAN_BRIDGE} address {mac} type bridge\nlink set eth0 master {LAN_BRIDGE}\n\
             addr flush dev eth0 scope global\n"
        );
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            if addr["scope"] != "global" {
                continue;
            }
            let local = addr["local"].as_str().context("an address without `local`")?;
            let nodad = if addr["family"] == "inet6" { " nodad" } else { "" };
            batch.push_str(&format!(
                "addr add {local}/{} dev {LAN_BRIDGE}{nodad}\n",
                addr["prefixlen"]
            ));
        }
        batch.push_str(&format!(
            "link set {LAN_BRIDGE} up\nroute replace default via {GW_LAN}\n\
             route replace default via 2001:db8:1:1::1\n"
        ));
        self.vm.ip_batch(&batch)?;
        Ok(())
    }
}

fn attach_pass(pin_dir: &Path, ifname: &str) -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(eipgw::dataplane::PROGRAM_OBJECT)?;
    let program: &mut Xdp = ebpf.program_mut(PROGRAM_PASS).context("pass program")?.try_into()?;
    program.load()?;
    let name = std::ffi::CString::new(ifname)?;
    program.attach(name.as_c_str(), XdpMode::Driver)?;
    Ok(ebpf)
}
