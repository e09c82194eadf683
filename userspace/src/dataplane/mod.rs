//! The XDP data plane: loads the program, attaches it to the WAN and LAN interfaces, pins
//! maps and links under `<bpffs>/eipgw/`, and keeps the maps equal to what the state implies.
//!
//! A restarted agent finds the pinned maps and links: it swaps the new program into the
//! existing links atomically (`bpf_link_update`) and reconciles the maps by diff, so frames
//! keep being translated while the agent is down and while it starts.

mod bpffs;
mod bucket_order;
mod desired;
mod hairpin_filter;
mod held;
mod mirror;
mod pins;
mod routes;
mod slots;
mod snat;

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuValues, ProgramArray,
        xdp::DevMapHash,
    },
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use eipgw_common::{
    EipBuckets, EipCounters, EipEntry, EipLimits, Endpoint, GatewayConfig, Ipv6Key, MAP_CONFIG,
    MAP_DNAT_PORTS, MAP_DNAT_REVERSE, MAP_EGRESS_DEVICES, MAP_EIP_BUCKETS, MAP_EIP_COUNTERS,
    MAP_EIP_FILTER, MAP_EIP_LIMITS, MAP_EIPS, MAP_FRAGMENTS, MAP_HELD_FRAGMENTS, MAP_IPV6_PUBLIC,
    MAP_NAT_PROGRAMS, MAP_PRIVATE_IPS, MAP_SECURITY_GROUPS, MAP_SNAT_CONFIG, MAP_SNAT_PORTS,
    MAP_SNAT_SESSIONS, MAP_SNAT_SOURCES, MAP_VERDICT_COUNTERS, MODE_CUT_THROUGH, MODE_MULTI_EIP,
    MODE_NAT, MODE_NAT_GATEWAY, MODE_UNASSOCIATED, NAT_PROGRAM_INDEX, NatTarget, PIN_DIR_NAME,
    PROGRAM_GATEWAY, PROGRAM_NAT, PrivateEntry, SecurityGroupRules, SnatConfig, SnatSession,
    Verdict, ipv4_key, ipv4_octets,
};

pub use bpffs::ensure_bpffs;
pub use desired::{DesiredMaps, EipMapping, EipPolicy, PortMapping, Touched};
use hairpin_filter::HairpinFilter;
use held::HeldFragments;
pub use held::{HeldReport, xdp_md};
use mirror::{MirroredMap, read_all, read_array};
use routes::Routes;
use slots::Slots;
pub use snat::{ProtocolCounts, SnatSessionView, SnatUsage, utilisation_percent};

/// The compiled XDP program (ebpf/), embedded at build time by build.rs.
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eipgw"));

#[derive(Clone, Debug)]
pub struct DataplaneOptions {
    pub wan: String,
    pub lan: String,
    /// A bpffs mount; pins go under `<bpffs>/eipgw/`.
    pub bpffs: PathBuf,
    pub xdp_mode: XdpMode,
    /// Capacity of the EIP and private-IP maps. Only used when the maps are created; pinned
    /// maps keep the size they were made with.
    pub max_mappings: u32,
    /// The SNAT port range and idle timeouts, written to the program at open. A
    /// `port_min` of 0 means [`SnatConfig::DEFAULT`].
    pub snat: SnatConfig,
}

pub struct Dataplane {
    /// Keeps the program loaded (the pinned links hold their own references).
    ebpf: Ebpf,
    eips: MirroredMap<u32, EipEntry>,
    private_ips: MirroredMap<u32, PrivateEntry>,
    ipv6_public: MirroredMap<Ipv6Key, u32>,
    routes: Routes,
    /// Routes to remove once the maps no longer send traffic along them.
    stale_routes: Vec<Ipv4Addr>,
    /// Planned routes (EIP, next hop), added at flush before the maps are written.
    new_routes: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Slots handed out or given back since the last flush, zeroed at its start.
    slots_to_zero: Vec<u32>,
    eip_counters: PerCpuArray<MapData, EipCounters>,
    verdict_counters: PerCpuArray<MapData, u64>,
    limits: Array<MapData, EipLimits>,
    /// What `limits` holds where it is not all zero, by slot, so that an unchanged policy
    /// costs no system call.
    limits_written: std::collections::HashMap<u32, EipLimits>,
    /// Entries of `limits_written` that planning to zero their slots took out since the
    /// last flush, for [`Dataplane::discard`].
    limits_unwritten: Vec<(u32, EipLimits)>,
    buckets: Array<MapData, EipBuckets>,
    security_groups: BpfHashMap<MapData, u32, SecurityGroupRules>,
    dnat_ports: MirroredMap<Endpoint, NatTarget>,
    dnat_reverse: MirroredMap<Endpoint, NatTarget>,
    snat_sources: MirroredMap<u32, PrivateEntry>,
    /// Written by the program; the agent reads and deletes.
    snat_sessions: BpfHashMap<MapData, Endpoint, SnatSession>,
    snat_ports: BpfHashMap<MapData, Endpoint, Endpoint>,
    snat_config: SnatConfig,
    /// Port claims that no session held at the last sweep (EIP side → private side); ended
    /// if still so at the next (see [`Dataplane::expire_snat_sessions`]).
    unheld_ports: BTreeMap<Endpoint, Endpoint>,
    hairpin_filter: HairpinFilter,
    held: HeldFragments,
    slots: Slots,
    nr_cpus: usize,
    pin_dir: PathBuf,
}

impl Dataplane {
    /// Loads (or reuses) the program and maps and attaches to both interfaces.
    pub fn open(options: &DataplaneOptions) -> anyhow::Result<Self> {
        ensure_bpffs(&options.bpffs)?;
        let pin_dir = options.bpffs.join(PIN_DIR_NAME);
        std::fs::create_dir_all(&pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        pins::while_retired(&pin_dir.clone(), |retired| Self::open_on(options, pin_dir, retired))
    }

    /// [`Dataplane::open`], with the maps of `retired` put aside (see
    /// [`pins::while_retired`]).
    fn open_on(
        options: &DataplaneOptions,
        pin_dir: PathBuf,
        retired: &[pins::Retired],
    ) -> anyhow::Result<Self> {
        let mut ebpf = load_retiring(&pin_dir, options.max_mappings, retired)?;

        // The NAT gateway program goes into its slot before the gateway program that
        // tail-calls it is attached (or swapped in): no frame finds the slot empty.
        let nat: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAT)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAT} missing from the object"))?
            .try_into()?;
        nat.load().context("the kernel verifier rejected the NAT gateway XDP program")?;
        let nat_fd = nat.fd()?.try_clone()?;
        let mut nat_programs: ProgramArray<MapData> = take_map(&mut ebpf, MAP_NAT_PROGRAMS)?;
        nat_programs
            .set(NAT_PROGRAM_INDEX, &nat_fd, 0)
            .context("putting the NAT gateway program into its program array")?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_GATEWAY)
            .ok_or_else(|| anyhow!("program {PROGRAM_GATEWAY} missing from the object"))?
            .try_into()?;
        program.load().context("the kernel verifier rejected the XDP program")?;

        let mut ifindexes = Vec::new();
        for ifname in [&options.wan, &options.lan] {
            ifindexes.push(interface_index(ifname)?);
            attach_or_replace(program, ifname, &pin_dir, options.xdp_mode)?;
        }
        let (wan_ifindex, lan_ifindex) = (ifindexes[0], ifindexes[1]);

        let mut config: Array<MapData, GatewayConfig> = take_map(&mut ebpf, MAP_CONFIG)?;
        // The addresses the program sends its ICMP errors from, as read now: an address
        // added later is not seen until the next start.
        let (wan_addr, lan_addr) = (interface_ipv4(&options.wan)?, interface_ipv4(&options.lan)?);
        config.set(0, &GatewayConfig { wan_ifindex, lan_ifindex, wan_addr, lan_addr }, 0)?;
        let snat_config = options.snat.or_default();
        if snat_config.port_min > snat_config.port_max {
            bail!(
                "the SNAT port range {}-{} is empty: the lower port comes first",
                snat_config.port_min,
                snat_config.port_max
            );
        }
        let mut snat_config_map: Array<MapData, SnatConfig> = take_map(&mut ebpf, MAP_SNAT_CONFIG)?;
        snat_config_map.set(0, &snat_config, 0).context("writing the SNAT configuration")?;
        let mut devices: DevMapHash<MapData> = take_map(&mut ebpf, MAP_EGRESS_DEVICES)?;
        for ifindex in [wan_ifindex, lan_ifindex] {
            devices
                .insert(ifindex, ifindex, None, 0)
                .with_context(|| format!("adding ifindex {ifindex} to the device map"))?;
        }

        let eips: MirroredMap<u32, EipEntry> =
            MirroredMap::new(MAP_EIPS, take_map(&mut ebpf, MAP_EIPS)?)?;
        // What a pinned map holds already: a restarted agent may find a million entries.
        let held: Vec<(u32, EipEntry)> =
            eips.keys().into_iter().filter_map(|key| Some((key, eips.get(&key)?))).collect();
        let eip_counters: PerCpuArray<MapData, EipCounters> =
            take_map(&mut ebpf, MAP_EIP_COUNTERS)?;
        let limits: Array<MapData, EipLimits> = take_map(&mut ebpf, MAP_EIP_LIMITS)?;
        let buckets: Array<MapData, EipBuckets> = take_map(&mut ebpf, MAP_EIP_BUCKETS)?;
        // A slot indexes these three, which pinned maps may have made another size than
        // `max_mappings`.
        let capacity = eip_counters.len().min(limits.len()).min(buckets.len());
        let slots = Slots::holding(capacity, held.iter().map(|(key, e)| (*key, e.stats_slot)));
        let nat_eips = held.iter().filter(|(_, e)| e.mode == MODE_NAT).map(|(key, _)| *key);
        let hairpin_filter = HairpinFilter::new(take_map(&mut ebpf, MAP_EIP_FILTER)?, nat_eips);
        // Read whole: one system call per slot would take seconds with a million EIPs.
        let all_limits = read_array(&limits).context("reading the EIPs' limits")?;
        let mut limits_written = std::collections::HashMap::new();
        for slot in held.iter().map(|(_, entry)| entry.stats_slot) {
            if let Some(&value) = all_limits.get(slot as usize)
                && value != EipLimits::default()
            {
                limits_written.insert(slot, value);
            }
        }
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(path, e)| anyhow!("reading {path}: {e}"))?
            .get() as usize;
        Ok(Self {
            private_ips: MirroredMap::new(MAP_PRIVATE_IPS, take_map(&mut ebpf, MAP_PRIVATE_IPS)?)?,
            ipv6_public: MirroredMap::new(MAP_IPV6_PUBLIC, take_map(&mut ebpf, MAP_IPV6_PUBLIC)?)?,
            routes: Routes::new(&options.lan),
            stale_routes: Vec::new(),
            new_routes: Vec::new(),
            slots_to_zero: Vec::new(),
            eip_counters,
            verdict_counters: take_map(&mut ebpf, MAP_VERDICT_COUNTERS)?,
            limits,
            limits_written,
            limits_unwritten: Vec::new(),
            buckets,
            security_groups: take_map(&mut ebpf, MAP_SECURITY_GROUPS)?,
            dnat_ports: MirroredMap::new(MAP_DNAT_PORTS, take_map(&mut ebpf, MAP_DNAT_PORTS)?)?,
            dnat_reverse: MirroredMap::new(
                MAP_DNAT_REVERSE,
                take_map(&mut ebpf, MAP_DNAT_REVERSE)?,
            )?,
            snat_sources: MirroredMap::new(
                MAP_SNAT_SOURCES,
                take_map(&mut ebpf, MAP_SNAT_SOURCES)?,
            )?,
            snat_sessions: take_map(&mut ebpf, MAP_SNAT_SESSIONS)?,
            snat_ports: take_map(&mut ebpf, MAP_SNAT_PORTS)?,
            snat_config,
            unheld_ports: BTreeMap::new(),
            hairpin_filter,
            held: HeldFragments::new(
                take_map(&mut ebpf, MAP_HELD_FRAGMENTS)?,
                take_map(&mut ebpf, MAP_FRAGMENTS)?,
            ),
            eips,
            slots,
            nr_cpus,
            pin_dir,
            ebpf,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The loaded gateway program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(PROGRAM_GATEWAY)
            .ok_or_else(|| anyhow!("program {PROGRAM_GATEWAY} missing"))?
            .try_into()?)
    }

    /// Readable when the program has handed over fragments to hold (see `held`): the
    /// time to call [`Dataplane::release_held_fragments`].
    pub fn held_fragments_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.held.fd()
    }

    /// Sends the held fragments whose first fragment has passed through the program again,
    /// and lets go of those that waited too long.
    pub fn release_held_fragments(&mut self) -> anyhow::Result<HeldReport> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_GATEWAY)
            .ok_or_else(|| anyhow!("program {PROGRAM_GATEWAY} missing"))?
            .try_into()?;
        Ok(self.held.release(program, std::time::Instant::now(), monotonic_now_ns()))
    }

    /// Makes the maps (and the kernel routes of visible-mode EIPs) hold exactly what
    /// `desired` says: entries that should not be there are removed, missing or different
    /// ones written. Used at start-up; idempotent.
    pub fn reconcile(&mut self, desired: &DesiredMaps) -> anyhow::Result<()> {
        check_nat_eips(desired)?;
        // Groups first: an EIP's limits may name one only once its rules are there.
        self.write_groups(&desired.security_groups)?;
        for key in self.eips.keys() {
            let address = Ipv4Addr::from(ipv4_octets(key));
            let current = self.current_mapping(key);
            self.plan_eip(address, current, desired.eips.get(&address).copied())?;
        }
        for (&address, &mapping) in &desired.eips {
            let current = self.current_mapping(ipv4_key(address.octets()));
            if current != Some(mapping) {
                self.plan_eip(address, current, Some(mapping))?;
            }
        }
        // Private entries left behind by a crash between two map writes.
        let wanted_private: BTreeSet<u32> = desired
            .eips
            .values()
            .filter_map(|m| match m {
                EipMapping::Nat { private_ip } => Some(ipv4_key(private_ip.octets())),
                _ => None,
            })
            .collect();
        for key in self.private_ips.keys() {
            if !wanted_private.contains(&key) {
                self.private_ips.delete(key);
            }
        }
        for key in self.ipv6_public.keys() {
            if !desired.ipv6_public.contains(&Ipv6Addr::from(key.addr)) {
                self.ipv6_public.delete(key);
            }
        }
        for address in &desired.ipv6_public {
            self.ipv6_public.set(Ipv6Key { addr: address.octets() }, 1);
        }
        // DNAT port mappings of every EIP that has or should have some, then reverse
        // entries that no mapping explains (left by a crash).
        let dnat_eips: BTreeSet<Ipv4Addr> = self
            .dnat_ports
            .keys()
            .into_iter()
            .map(|key| Ipv4Addr::from(ipv4_octets(key.addr)))
            .chain(desired.dnat_ports.keys().map(|m| m.eip))
            .collect();
        self.plan_dnat(desired, dnat_eips)?;
        let explained: BTreeSet<Endpoint> = desired
            .dnat_ports
            .iter()
            .map(|(m, (ip, port))| Endpoint::new(ipv4_key(ip.octets()), port.to_be(), m.proto))
            .collect();
        for key in self.dnat_reverse.keys() {
            if !explained.contains(&key) {
                self.dnat_reverse.delete(key);
            }
        }
        let snat_ips: BTreeSet<Ipv4Addr> = self
            .snat_sources
            .keys()
            .into_iter()
            .map(|key| Ipv4Addr::from(ipv4_octets(key)))
            .chain(desired.snat_sources.keys().copied())
            .collect();
        self.plan_snat_sources(desired, snat_ips)?;
        self.flush()?;
        // Every flag checked: the pins may come from an agent that kept them otherwise.
        self.write_policies(desired, desired.eips.keys().copied(), Flags::All)?;
        let stale: Vec<u32> = self
            .security_groups
            .keys()
            .filter_map(Result::ok)
            .filter(|number| !desired.security_groups.contains_key(number))
            .collect();
        self.remove_groups(stale)?;
        self.routes.reconcile(&desired.visible_routes())
    }

    /// Plans bringing what `touched` names to what `after` (which needs to hold only those)
    /// says; what the maps hold now is the "before". EIPs in `after.eips` count as touched
    /// too. The cost follows the size of the change, not the number of mappings.
    ///
    /// The plan is made in memory only: nothing reaches the kernel before
    /// [`Dataplane::write`]. So the agent plans while the store is writing the change, and a
    /// change the store refuses never reaches the maps: [`Dataplane::discard`] forgets it.
    pub fn plan(&mut self, after: &DesiredMaps, touched: &Touched) -> anyhow::Result<Planned> {
        check_nat_eips(after)?;
        // Two sorted runs: a stable sort merges them in one pass.
        let mut touched_eips: Vec<Ipv4Addr> =
            touched.eips.iter().chain(after.eips.keys()).copied().collect();
        touched_eips.sort();
        touched_eips.dedup();
        let (written, removed): (Vec<u32>, Vec<u32>) =
            touched.groups.iter().partition(|n| after.security_groups.contains_key(n));
        let groups = written.into_iter().map(|n| (n, after.security_groups[&n])).collect();
        // Both in order: what `after` wants of each is read alongside, not looked up.
        let mut wanted_eips = after.eips.iter().peekable();
        for &address in &touched_eips {
            let wanted = wanted_eips.next_if(|(a, _)| **a == address).map(|(_, m)| *m);
            let current = self.current_mapping(ipv4_key(address.octets()));
            if current != wanted {
                self.plan_eip(address, current, wanted)?;
            }
        }
        for &address in &touched.ipv6 {
            let key = Ipv6Key { addr: address.octets() };
            if after.ipv6_public.contains(&address) {
                self.ipv6_public.set(key, 1);
            } else {
                self.ipv6_public.delete(key);
            }
        }
        self.plan_dnat(after, touched_eips.iter().copied())?;
        self.plan_snat_sources(after, touched.snat.iter().copied())?;
        Ok(Planned { eips: touched_eips, groups, gone_groups: removed })
    }

    /// Forgets everything planned since the maps were last written, instead of writing it
    /// (the store refused the change, and planning may not even have finished). The maps
    /// never saw it; the copies of them, the EIPs' counter slots and the hairpin filter's
    /// counts go back to what they were, so that an EIP the change gave up keeps its slot
    /// and its counts.
    pub fn discard(&mut self) {
        self.eips.discard();
        self.private_ips.discard();
        self.ipv6_public.discard();
        self.dnat_ports.discard();
        self.dnat_reverse.discard();
        self.snat_sources.discard();
        self.slots.undo();
        self.hairpin_filter.undo();
        for (slot, limits) in self.limits_unwritten.drain(..).rev() {
            self.limits_written.insert(slot, limits);
        }
        self.new_routes.clear();
        self.stale_routes.clear();
        self.slots_to_zero.clear();
    }

    /// Writes what [`Dataplane::plan`] planned for `after`.
    pub fn write(&mut self, after: &DesiredMaps, planned: Planned) -> anyhow::Result<()> {
        // Groups first, and gone groups last: whatever an EIP's limits name is there.
        self.write_groups(&planned.groups)?;
        self.flush()?;
        self.write_policies(after, planned.eips, Flags::Changed)?;
        self.remove_groups(planned.gone_groups)
    }

    /// Plans the DNAT port mappings of `eips` as `desired` says: mappings it does not name
    /// go (with their reverse entries), the others are written both ways. The EIPs' slots
    /// must be planned already.
    fn plan_dnat(
        &mut self,
        desired: &DesiredMaps,
        eips: impl IntoIterator<Item = Ipv4Addr>,
    ) -> anyhow::Result<()> {
        // Nothing to remove and nothing to write (a million associations without DNAT
        // would otherwise look up a million empty ranges).
        if desired.dnat_ports.is_empty() && self.dnat_ports.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::new();
        for eip in eips {
            let eip_key = ipv4_key(eip.octets());
            let slot = self.slots.get(eip_key);
            let mut wanted = BTreeMap::new();
            for (mapping, &(private_ip, private_port)) in
                desired.dnat_ports.range(PortMapping::of_eip(eip))
            {
                let stats_slot = slot.ok_or_else(|| {
                    anyhow!("DNAT port mapping on EIP {eip}, which is not in the EIP map")
                })?;
                let key = Endpoint::new(eip_key, mapping.public_port.to_be(), mapping.proto);
                let target = NatTarget {
                    addr: ipv4_key(private_ip.octets()),
                    stats_slot,
                    port: private_port.to_be(),
                    _pad: 0,
                    security_group: desired.dnat_groups.get(&private_ip).copied().unwrap_or(0),
                };
                wanted.insert(key, target);
            }
            // In the mirror's order: by address, then by the whole endpoint.
            let address = u32::from(eip);
            let last = Endpoint { addr: u32::MAX, port: u16::MAX, proto: u8::MAX, _pad: u8::MAX };
            let all_of_eip = (address, Endpoint::default())..=(address, last);
            for key in self.dnat_ports.keys_in(all_of_eip) {
                let Some(old) = self.dnat_ports.get(&key) else {
                    continue;
                };
                if wanted.get(&key) == Some(&old) {
                    continue;
                }
                if !wanted.contains_key(&key) {
                    self.dnat_ports.delete(key);
                }
                // Only if it still leads back here: another mapping may own it by now.
                let reverse = Endpoint::new(old.addr, old.port, key.proto);
                if self
                    .dnat_reverse
                    .get(&reverse)
                    .is_some_and(|r| r.addr == key.addr && r.port == key.port)
                {
                    self.dnat_reverse.delete(reverse);
                }
            }
            writes.extend(wanted);
        }
        // Written after every removal, so that a private endpoint moving from one public
        // port to another in one change keeps its new reverse entry.
        for (key, target) in writes {
            self.dnat_ports.set(key, target);
            let reverse = NatTarget {
                addr: key.addr,
                stats_slot: target.stats_slot,
                port: key.port,
                _pad: 0,
                security_group: 0,
            };
            self.dnat_reverse.set(Endpoint::new(target.addr, target.port, key.proto), reverse);
        }
        Ok(())
    }

    /// Plans the SNAT_SOURCES entries of these private IPs as `desired` says. The EIPs'
    /// slots must be planned already.
    fn plan_snat_sources(
        &mut self,
        desired: &DesiredMaps,
        ips: impl IntoIterator<Item = Ipv4Addr>,
    ) -> anyhow::Result<()> {
        for ip in ips {
            let key = ipv4_key(ip.octets());
            match desired.snat_sources.get(&ip) {
                Some(eip) => {
                    let eip_addr = ipv4_key(eip.octets());
                    let stats_slot = self.slots.get(eip_addr).ok_or_else(|| {
                        anyhow!(
                            "SNAT source {ip} leaves through EIP {eip}, which is not in the EIP map"
                        )
                    })?;
                    let entry = PrivateEntry { eip_addr, stats_slot, ..PrivateEntry::default() };
                    self.snat_sources.set(key, entry);
                }
                None => self.snat_sources.delete(key),
            }
        }
        Ok(())
    }

    fn write_groups(
        &mut self,
        groups: &std::collections::BTreeMap<u32, SecurityGroupRules>,
    ) -> anyhow::Result<()> {
        for (number, rules) in groups {
            self.security_groups
                .insert(number, rules, 0)
                .with_context(|| format!("writing security group number {number}"))?;
        }
        Ok(())
    }

    fn remove_groups(&mut self, numbers: impl IntoIterator<Item = u32>) -> anyhow::Result<()> {
        for number in numbers {
            match self.security_groups.remove(&number) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => {
                    return Err(e).context(format!("removing security group number {number}"));
                }
            }
        }
        Ok(())
    }

    /// Writes the limits of these EIPs (those that have a slot) as `desired` says, and
    /// their [`EIP_LIMITED`](eipgw_common::EIP_LIMITED) flags: those whose limits changed,
    /// or all of them.
    fn write_policies(
        &mut self,
        desired: &DesiredMaps,
        addresses: impl IntoIterator<Item = Ipv4Addr>,
        flags: Flags,
    ) -> anyhow::Result<()> {
        for address in addresses {
            let wanted = desired.policies.get(&address).copied().unwrap_or_default().limits();
            // Without limits on any slot, an EIP without them has nothing to change.
            if flags == Flags::Changed
                && wanted == EipLimits::default()
                && self.limits_written.is_empty()
            {
                continue;
            }
            let key = ipv4_key(address.octets());
            let Some(slot) = self.slots.get(key) else {
                continue;
            };
            // An entry planned in this change took its flag from the limits as they were
            // then (`plan_eip`): only a change of limits can leave it wrong.
            if self.set_limits(slot, wanted)? || flags == Flags::All {
                self.set_limited_flag(key, wanted.flags());
            }
        }
        // After the limits: a flag never sends a frame to limits that are not there yet.
        self.eips.flush()?;
        self.private_ips.flush()?;
        Ok(())
    }

    /// Plans the [`EIP_LIMITED`](eipgw_common::EIP_LIMITED) flag of the EIP `key` and of
    /// its private address's entry.
    fn set_limited_flag(&mut self, key: u32, flags: u32) {
        let Some(entry) = self.eips.get(&key) else {
            return;
        };
        if entry.flags != flags {
            self.eips.set(key, EipEntry { flags, ..entry });
        }
        if entry.mode == MODE_NAT
            && let Some(private) = self.private_ips.get(&entry.private_addr)
            && private.eip_addr == key
            && private.flags != flags
        {
            self.private_ips.set(entry.private_addr, PrivateEntry { flags, ..private });
        }
    }

    /// Writes a slot's limits; whether they changed.
    fn set_limits(&mut self, slot: u32, wanted: EipLimits) -> anyhow::Result<bool> {
        let current = self.limits_written.get(&slot).copied().unwrap_or_default();
        if current == wanted {
            return Ok(false);
        }
        self.limits.set(slot, &wanted, 0).context("writing EIP limits")?;
        if current.ps_per_byte != wanted.ps_per_byte {
            // A new cap starts with a full burst.
            self.buckets.set(slot, &EipBuckets::default(), 0).context("resetting a bucket")?;
        }
        if wanted == EipLimits::default() {
            self.limits_written.remove(&slot);
        } else {
            self.limits_written.insert(slot, wanted);
        }
        Ok(true)
    }

    /// Writes everything planned: the private-IP entries and the EIP entries in batches,
    /// then drops the routes no entry uses any more.
    fn flush(&mut self) -> anyhow::Result<()> {
        // What was planned is kept from here on: it cannot be discarded any more.
        self.slots.keep();
        self.hairpin_filter.keep();
        self.limits_unwritten.clear();
        // Before any entry sends traffic along a route or counts into a slot.
        for (address, next_hop) in std::mem::take(&mut self.new_routes) {
            self.routes.replace(address, next_hop)?;
        }
        for slot in std::mem::take(&mut self.slots_to_zero) {
            self.write_zeroed_slot(slot)?;
        }
        // A big change writes the two mapping maps at once, each on a CPU of its own: the
        // kernel takes a quarter second per million entries of each, and they share
        // nothing (1M of each: 0.53 s one after the other, 0.27 s at once).
        let (eips, private_ips) = (&mut self.eips, &mut self.private_ips);
        let (eips_written, private_ips_written) =
            if eips.planned().min(private_ips.planned()) >= mirror::BATCH {
                std::thread::scope(|scope| {
                    let private_ips = scope.spawn(|| private_ips.flush());
                    (eips.flush(), private_ips.join().expect("writing a map does not panic"))
                })
            } else {
                (eips.flush(), private_ips.flush())
            };
        eips_written?;
        private_ips_written?;
        self.hairpin_filter.flush()?;
        self.dnat_ports.flush()?;
        self.dnat_reverse.flush()?;
        self.snat_sources.flush()?;
        self.ipv6_public.flush()?;
        for address in std::mem::take(&mut self.stale_routes) {
            self.routes.remove(address)?;
        }
        Ok(())
    }

    /// Packet and byte counters of one EIP, summed over the CPUs.
    pub fn eip_counters(&self, address: Ipv4Addr) -> anyhow::Result<Option<EipCounters>> {
        let Some(slot) = self.slots.get(ipv4_key(address.octets())) else {
            return Ok(None);
        };
        let per_cpu = self.eip_counters.get(&slot, 0)?;
        Ok(Some(per_cpu.iter().fold(EipCounters::default(), |sum, c| EipCounters {
            inbound_packets: sum.inbound_packets + c.inbound_packets,
            inbound_bytes: sum.inbound_bytes + c.inbound_bytes,
            outbound_packets: sum.outbound_packets + c.outbound_packets,
            outbound_bytes: sum.outbound_bytes + c.outbound_bytes,
            inbound_over_cap_packets: sum.inbound_over_cap_packets + c.inbound_over_cap_packets,
            inbound_over_cap_bytes: sum.inbound_over_cap_bytes + c.inbound_over_cap_bytes,
            outbound_over_cap_packets: sum.outbound_over_cap_packets + c.outbound_over_cap_packets,
            outbound_over_cap_bytes: sum.outbound_over_cap_bytes + c.outbound_over_cap_bytes,
            inbound_denied_packets: sum.inbound_denied_packets + c.inbound_denied_packets,
            inbound_denied_bytes: sum.inbound_denied_bytes + c.inbound_denied_bytes,
            snat_refused_packets: sum.snat_refused_packets + c.snat_refused_packets,
        })))
    }

    /// How many frames got each verdict, summed over the CPUs.
    pub fn verdict_counters(&self) -> anyhow::Result<Vec<(Verdict, u64)>> {
        Verdict::ALL
            .iter()
            .map(|&verdict| {
                let per_cpu = self.verdict_counters.get(&(verdict as u32), 0)?;
                Ok((verdict, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The SNAT configuration the program runs with.
    pub fn snat_config(&self) -> SnatConfig {
        self.snat_config
    }

    /// The live SNAT sessions, by private endpoint.
    pub fn snat_sessions(&self) -> anyhow::Result<Vec<SnatSessionView>> {
        let now = monotonic_now_ns();
        let mut views: Vec<SnatSessionView> = read_all(&self.snat_sessions)?
            .iter()
            .map(|(key, session)| snat::view(key, session, now))
            .collect();
        views.sort_by_key(|v| (v.private_ip, v.protocol, v.private_port));
        Ok(views)
    }

    /// Sessions and ports in use per EIP.
    pub fn snat_usage(&self) -> anyhow::Result<BTreeMap<Ipv4Addr, SnatUsage>> {
        let sessions = read_all(&self.snat_sessions)?;
        let ports = read_all(&self.snat_ports)?;
        Ok(snat::usage(sessions.iter().map(|(_, s)| s), ports.iter().map(|(p, _)| p)))
    }

    /// Ends the SNAT sessions that are over at `now_ns` (CLOCK_MONOTONIC, see
    /// [`monotonic_now_ns`]): idle past their timeout, or of a private address that no longer
    /// leaves through their EIP. Each session goes before its port claim, so that the
    /// program never hands a port to a new flow while a session still holds it. Returns how
    /// many sessions ended.
    pub fn expire_snat_sessions(&mut self, now_ns: u64) -> anyhow::Result<usize> {
        // Claims first: one made after this read has its session in the next one.
        let ports = read_all(&self.snat_ports)?;
        let sessions = read_all(&self.snat_sessions)?;
        let mut ended = 0;
        for (key, session) in &sessions {
            let source = self.snat_sources.get(&key.addr);
            if !snat::ends(&self.snat_config, key, session, source, now_ns) {
                continue;
            }
            // Again, at the last moment: a packet may have refreshed it since the read.
            let Some(session) = lookup(&self.snat_sessions, key)? else {
                continue;
            };
            if !snat::ends(&self.snat_config, key, &session, source, now_ns) {
                continue;
            }
            remove(&mut self.snat_sessions, key).context("ending a SNAT session")?;
            let claim = Endpoint::new(session.eip, session.public_port, key.proto);
            self.release_port(claim, *key)?;
            ended += 1;
        }
        // Claims whose session is gone (the agent stopped between the two deletions, or
        // the program could not add the session): ended when still so one sweep later,
        // because the program claims the port just before it adds the session.
        let held: BTreeMap<Endpoint, Endpoint> = sessions
            .iter()
            .map(|(key, s)| (*key, Endpoint::new(s.eip, s.public_port, key.proto)))
            .collect();
        let unheld: BTreeMap<Endpoint, Endpoint> =
            ports.into_iter().filter(|(claim, key)| held.get(key) != Some(claim)).collect();
        for (claim, key) in std::mem::take(&mut self.unheld_ports) {
            if unheld.get(&claim) == Some(&key) {
                self.release_port(claim, key)?;
            }
        }
        self.unheld_ports = unheld;
        Ok(ended)
    }

    /// Removes the port claim `claim` if it is still `key`'s and `key` holds no session on
    /// it (a packet may have opened a new one on the same port meanwhile).
    fn release_port(&mut self, claim: Endpoint, key: Endpoint) -> anyhow::Result<()> {
        if lookup(&self.snat_ports, &claim)? != Some(key) {
            return Ok(());
        }
        let holds = lookup(&self.snat_sessions, &key)?
            .is_some_and(|s| Endpoint::new(s.eip, s.public_port, key.proto) == claim);
        if !holds {
            remove(&mut self.snat_ports, &claim).context("releasing a SNAT port")?;
        }
        Ok(())
    }

    /// The mapping an EIP has in the map now, if it is there.
    fn current_mapping(&self, key: u32) -> Option<EipMapping> {
        let entry = self.eips.get(&key)?;
        let addr = Ipv4Addr::from(ipv4_octets(entry.private_addr));
        Some(match entry.mode {
            MODE_NAT => EipMapping::Nat { private_ip: addr },
            MODE_CUT_THROUGH => EipMapping::CutThrough { next_hop: addr },
            MODE_MULTI_EIP => EipMapping::MultiEip { next_hop: addr },
            MODE_NAT_GATEWAY => EipMapping::NatGateway,
            _ => EipMapping::Unassociated,
        })
    }

    /// Plans moving one EIP from `old` to `new` (`None`: not allocated). Routes for visible
    /// modes are added at once (before any entry sends traffic along them) and removed only
    /// after the maps are written.
    fn plan_eip(
        &mut self,
        address: Ipv4Addr,
        old: Option<EipMapping>,
        new: Option<EipMapping>,
    ) -> anyhow::Result<()> {
        let key = ipv4_key(address.octets());
        if let Some(EipMapping::Nat { .. }) = old {
            self.hairpin_filter.remove(key);
        }
        if let Some(EipMapping::Nat { .. }) = new {
            self.hairpin_filter.add(key);
        }
        if let Some(EipMapping::Nat { private_ip }) = old
            && new != old
        {
            // Only if it still points at this EIP: another EIP may own it by now.
            let private_key = ipv4_key(private_ip.octets());
            if self.private_ips.get(&private_key).map(|p| p.eip_addr) == Some(key) {
                self.private_ips.delete(private_key);
            }
        }
        if old.is_some_and(|m| m.next_hop().is_some()) && new.and_then(|m| m.next_hop()).is_none() {
            self.stale_routes.push(address);
        }
        let Some(mapping) = new else {
            self.eips.delete(key);
            if let Some(slot) = self.slots.release(key) {
                self.zero_slot(slot);
            }
            return Ok(());
        };
        let (slot, reused) = self.slots.get_or_allocate(key).ok_or_else(|| {
            anyhow!("the EIP map is full: restart eipgwd with a larger --max-mappings")
        })?;
        // A slot that never held an EIP is still zero from the map's creation.
        if reused {
            self.zero_slot(slot);
        }
        let (mode, addr) = match mapping {
            EipMapping::Unassociated => (MODE_UNASSOCIATED, Ipv4Addr::UNSPECIFIED),
            EipMapping::Nat { private_ip } => (MODE_NAT, private_ip),
            EipMapping::CutThrough { next_hop } => (MODE_CUT_THROUGH, next_hop),
            EipMapping::MultiEip { next_hop } => (MODE_MULTI_EIP, next_hop),
            EipMapping::NatGateway => (MODE_NAT_GATEWAY, Ipv4Addr::UNSPECIFIED),
        };
        if let Some(next_hop) = mapping.next_hop() {
            self.new_routes.push((address, next_hop));
        }
        // The slot's limits as written now; `write_policies` brings the flag along when they
        // change.
        let flags = self.limits_written.get(&slot).map_or(0, EipLimits::flags);
        let entry =
            EipEntry { private_addr: ipv4_key(addr.octets()), stats_slot: slot, mode, flags };
        self.eips.set(key, entry);
        if let EipMapping::Nat { private_ip } = mapping {
            let value = PrivateEntry { eip_addr: key, stats_slot: slot, flags, _pad: 0 };
            self.private_ips.set(ipv4_key(private_ip.octets()), value);
        }
        Ok(())
    }

    /// Plans making a slot as new: counters, limits and bucket zero (written at flush).
    fn zero_slot(&mut self, slot: u32) {
        if let Some(limits) = self.limits_written.remove(&slot) {
            self.limits_unwritten.push((slot, limits));
        }
        self.slots_to_zero.push(slot);
    }

    fn write_zeroed_slot(&mut self, slot: u32) -> anyhow::Result<()> {
        let zeros = PerCpuValues::try_from(vec![EipCounters::default(); self.nr_cpus])?;
        self.eip_counters.set(slot, zeros, 0).context("zeroing an EIP's counters")?;
        self.limits.set(slot, &EipLimits::default(), 0).context("zeroing an EIP's limits")?;
        self.buckets.set(slot, &EipBuckets::default(), 0).context("zeroing a bucket")?;
        Ok(())
    }
}

/// What [`Dataplane::plan`] leaves for [`Dataplane::write`] besides the mirrors' pending
/// entries.
#[must_use = "a plan reaches the maps only through Dataplane::write"]
pub struct Planned {
    /// The EIPs whose policies to write.
    eips: Vec<Ipv4Addr>,
    /// Security groups to write, before any entry names them.
    groups: BTreeMap<u32, SecurityGroupRules>,
    /// Security groups to remove, after no entry names them.
    gone_groups: Vec<u32>,
}

/// Which [`EIP_LIMITED`](eipgw_common::EIP_LIMITED) flags `write_policies` looks at.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Flags {
    /// Those of EIPs whose limits it changes (an incremental change).
    Changed,
    /// All of them (start-up).
    All,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads, so comparable with
/// the session times the program writes.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Every EIP that the DNAT port mappings and the SNAT sources name is in `desired.eips`
/// (it needs its counter slot); checked before anything is written.
fn check_nat_eips(desired: &DesiredMaps) -> anyhow::Result<()> {
    let named =
        desired.dnat_ports.keys().map(|m| m.eip).chain(desired.snat_sources.values().copied());
    for eip in named {
        if !desired.eips.contains_key(&eip) {
            bail!(
                "EIP {eip} has DNAT port mappings or SNAT sources but no entry in the desired EIPs"
            );
        }
    }
    Ok(())
}

fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &BpfHashMap<MapData, K, V>,
    key: &K,
) -> anyhow::Result<Option<V>> {
    match map.get(key, 0) {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `key`; one already gone is fine.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    key: &K,
) -> anyhow::Result<()> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The maps sized by the number of mappings.
const SIZED_BY_MAPPINGS: [&str; 6] =
    [MAP_EIPS, MAP_PRIVATE_IPS, MAP_EIP_COUNTERS, MAP_IPV6_PUBLIC, MAP_EIP_LIMITS, MAP_EIP_BUCKETS];

/// Loads the object (no program yet) with its maps pinned in `pin_dir`, reusing the pins
/// there (see [`pins`]); maps sized by the number of mappings get `max_mappings` entries
/// when created, and a pinned one keeps its size.
pub fn load_object(pin_dir: &Path, max_mappings: u32) -> anyhow::Result<Ebpf> {
    pins::while_retired(pin_dir, |retired| load_retiring(pin_dir, max_mappings, retired))
}

fn load_retiring(
    pin_dir: &Path,
    max_mappings: u32,
    retired: &[pins::Retired],
) -> anyhow::Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    let mut kept = Vec::new();
    for name in SIZED_BY_MAPPINGS {
        let size = pins::pinned_max_entries(pin_dir, name)?.unwrap_or(max_mappings);
        if size != max_mappings {
            kept.push(format!("{name} {size}"));
        }
        loader.map_max_entries(name, size);
    }
    if !kept.is_empty() {
        log::warn!(
            "pinned maps keep their sizes ({}); {max_mappings} entries apply to maps made anew",
            kept.join(", ")
        );
    }
    let ebpf = loader.load(PROGRAM_OBJECT).context("loading the XDP program")?;
    pins::carry_over(pin_dir, retired)?;
    Ok(ebpf)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn interface_index(ifname: &str) -> anyhow::Result<u32> {
    let name = CString::new(ifname).context("interface name contains a NUL byte")?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface named {ifname} in this network namespace");
    }
    Ok(index)
}

/// The first IPv4 address of `ifname` as it sits in a header (see `ipv4_key`), or 0 if it
/// has none (the program then leaves the ICMP errors it would send from it to the kernel).
fn interface_ipv4(ifname: &str) -> anyhow::Result<u32> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listing interface addresses");
    }
    let mut found = 0;
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: a node of the list getifaddrs made; its name is NUL-terminated, and an
        // AF_INET address is a sockaddr_in.
        unsafe {
            let ifa = &*entry;
            let addr = ifa.ifa_addr;
            if !addr.is_null()
                && i32::from((*addr).sa_family) == libc::AF_INET
                && std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() == ifname.as_bytes()
            {
                // s_addr is in network byte order: the header's bytes, as the maps keep them.
                found = (*addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr;
                break;
            }
            entry = ifa.ifa_next;
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// Attaches `program` to `ifname` through a pinned bpf_link. If a link is pinned already
/// (an earlier agent), the new program replaces the old one in it atomically, so the
/// interface is never without a program.
fn attach_or_replace(
    program: &mut Xdp,
    ifname: &str,
    pin_dir: &Path,
    mode: XdpMode,
) -> anyhow::Result<()> {
    let pin_path = pin_dir.join(format!("link_{ifname}"));
    if pin_path.exists() {
        match replace_in_pinned_link(program, &pin_path) {
            Ok(()) => return Ok(()),
            Err(e) => {
                // The interface went away and came back, or the pin is from something else:
                // drop the stale pin and attach afresh.
                log::warn!("pinned link {} unusable ({e:#}); attaching anew", pin_path.display());
                std::fs::remove_file(&pin_path)
                    .with_context(|| format!("removing stale pin {}", pin_path.display()))?;
            }
        }
    }
    let name = CString::new(ifname).context("interface name contains a NUL byte")?;
    let link_id = program.attach(name.as_c_str(), mode).with_context(|| {
        let hint = match mode {
            XdpMode::Skb => "",
            _ => ": try --xdp-mode skb",
        };
        format!("attaching XDP to {ifname}{hint}")
    })?;
    let link = program.take_link(link_id)?;
    let fd_link: FdLink = link.try_into().map_err(|e| {
        anyhow!("{e}: the kernel attached XDP without a bpf_link (needs Linux 5.9+)")
    })?;
    fd_link
        .pin(&pin_path)
        .with_context(|| format!("pinning the XDP link at {}", pin_path.display()))?;
    Ok(())
}

fn replace_in_pinned_link(program: &mut Xdp, pin_path: &Path) -> anyhow::Result<()> {
    let pinned = PinnedLink::from_pin(pin_path).map_err(|e: LinkError| anyhow!(e))?;
    let fd_link: FdLink = pinned.into();
    let xdp_link = fd_link.try_into().map_err(|e: LinkError| anyhow!(e))?;
    let link_id = program
        .attach_to_link(xdp_link)
        .map_err(|e: ProgramError| anyhow!(e))
        .context("replacing the program in the pinned link")?;
    // The link stays pinned; keep our fd out of the program's link set so that dropping
    // the program does not detach anything.
    let link = program.take_link(link_id)?;
    drop(FdLink::try_from(link).map_err(|e| anyhow!(e))?);
    Ok(())
}
