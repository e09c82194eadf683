//! The forwarding bench's network (sections 2 and 5): `inet` ⇄ veth ⇄ `gw` ⇄ veth ⇄ `vm`,
//! a live-frames generator on one end and a counting sink on both (`ebpf/src/bench.rs`).
//!
//! ```text
//!  inet: eth0 ─── wan0 198.51.100.2/24 [gw] lan0 10.0.1.1/24 ─── vm: eth0
//!        sink        default via 198.51.100.1                          sink
//!        generator   198.18.0.0/15, 10.64.0.0/10 via 10.0.1.10         generator
//! ```
//!
//! - **Who runs where.** Each veth's receive side runs in a NAPI thread of its own
//!   (threaded NAPI), so that the gateway's work can be given one CPU: the gateway's
//!   interfaces poll on CPU 1 ([`FORWARDING_CPU`]), the generator and the sinks on CPU 0.
//!   Without threads, a veth polls on the CPU that sent into it, and the generator, the
//!   gateway and the sink would all share CPU 0.
//! - **What gets measured.** The sinks count what arrives (the rate), and the gateway's
//!   polling thread's CPU time per frame is its cost, whether or not the generator kept it
//!   busy all the time.
//! - **Why GRO on the gateway's interfaces.** A veth takes frames sent by XDP (the
//!   generator's XDP_TX) only into a receive side with NAPI, which XDP or GRO turns on. The
//!   kernel-only variants have no XDP on `gw`, so GRO it is, for every variant alike. The
//!   generator's UDP is not aggregated (no UDP GRO forwarding).
//! - **Addresses.** Everything stays in these namespaces. The Internet host is
//!   198.51.100.1; the EIPs the flows go to come from 198.18.0.0/15, the benchmarking range
//!   (RFC 2544, RFC 5735): 100k of them do not fit into the documentation ranges. The
//!   private addresses are the scale vSwitch's (10.64.0.0/11, `scale::private_ip`), and a
//!   route sends them, like the EIPs themselves, to `vm` through one next hop with a
//!   permanent neighbour entry, so no frame waits for ARP.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use eipgw::dataplane::load_object;
use eipgw_common::bench::{
    BENCH_HEADER_LEN, GenConfig, MAP_BENCH_GENERATOR, MAP_BENCH_SEQUENCE, MAP_BENCH_SINK,
    PROGRAM_BENCH_GENERATOR, PROGRAM_BENCH_SINK, VARY_DESTINATION, VARY_SOURCE,
};
use eipgw_tests::{
    Mount, Netns,
    gateway_ns::{format_mac, ifindex, mac_of, pin_to_cpu, xdp_md},
    topology::{GW_LAN, GW_WAN, INTERNET_HOST, LAN_IF, VM_IP, WAN_IF},
    unique_suffix,
};
use etherparse::PacketBuilder;

/// The CPU the gateway's interfaces poll on; the generator and the sinks use CPU 0.
pub const FORWARDING_CPU: usize = 1;
const GENERATOR_CPU: usize = 0;
/// Real-time priorities (SCHED_FIFO): whatever else runs on the machine (a build) waits,
/// within the kernel's real-time limit (95% of each second while other work is waiting).
/// On the generator's CPU the sink comes first, so that nothing forwarded goes uncounted.
const SINK_PRIORITY: i32 = 60;
const FORWARDING_PRIORITY: i32 = 50;
const GENERATOR_PRIORITY: i32 = 40;
/// The host ends' interface, in `inet` and in `vm`.
const HOST_IF: &str = "eth0";
/// Frames per BPF_PROG_TEST_RUN call: a window is made of whole calls.
const FRAMES_PER_CALL: u32 = 1 << 17;
/// At most this many calls a window, whatever the clock says.
const MAX_CALLS: u32 = 512;
/// Frames the kernel runs the generator on before it sends them on (its maximum is 256).
const BATCH: u32 = 64;

/// The first EIP of the flows: 198.18.0.1 (see the module doc).
pub const FIRST_EIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The UDP port every flow goes to.
const DST_PORT: u16 = 9;

/// Where the generator sends from.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Sender {
    /// `inet`, to the EIPs: inbound.
    Internet,
    /// `vm`, to the Internet host: outbound.
    Vpc,
}

/// The traffic the generator makes: run n sends flow `n % flows`, whose varied address is
/// the first one plus `n % addresses`, and whose UDP source port is the first one plus
/// `n / addresses` (so flows beyond the addresses differ by port).
pub struct Traffic {
    pub from: Sender,
    /// The frame's length without the FCS (60 for a 64-byte frame on the wire).
    pub frame_len: usize,
    /// The varied address of flow 0: the destination from `inet`, the source from `vm`.
    pub first_addr: Ipv4Addr,
    pub first_port: u16,
    pub flows: u32,
    pub addresses: u32,
}

/// One measuring window: what the sink counted, in how long, and what the gateway's
/// polling thread spent on it.
pub struct Window {
    pub generated: u64,
    pub delivered: u64,
    pub seconds: f64,
    pub forwarding_cpu_ns: u64,
}

impl Window {
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.seconds / 1e6
    }

    /// CPU time of the gateway's polling thread per frame delivered.
    pub fn ns_per_packet(&self) -> f64 {
        self.forwarding_cpu_ns as f64 / self.delivered.max(1) as f64
    }

    /// The rate the generator offered.
    pub fn offered_mpps(&self) -> f64 {
        self.generated as f64 / self.seconds / 1e6
    }

    /// The share of the window the gateway's polling thread was busy (1.0: it was the limit).
    pub fn forwarding_busy(&self) -> f64 {
        self.forwarding_cpu_ns as f64 / (self.seconds * 1e9)
    }
}

/// Fields drop in order: the programs (their links detach), the namespaces, the bpffs.
pub struct BenchNet {
    ends: Ebpf,
    pub inet: Netns,
    pub gw: Netns,
    pub vm: Netns,
    bpffs: Mount,
    /// The NAPI threads of the gateway's `wan0` and `lan0`.
    wan_thread: i32,
    lan_thread: i32,
}

impl BenchNet {
    pub fn create() -> anyhow::Result<Self> {
        let suffix = unique_suffix();
        let bpffs = Mount::bpffs(&std::env::temp_dir().join(format!("eipgw-fwd-{suffix}")))?;
        let inet = Netns::create(&format!("eipgw-fwd-inet-{suffix}"))?;
        let gw = Netns::create(&format!("eipgw-fwd-gw-{suffix}"))?;
        let vm = Netns::create(&format!("eipgw-fwd-vm-{suffix}"))?;
        // No IPv6 anywhere: nothing but the generator's frames crosses the gateway
        // (no router solicitations, DAD or MLD to count or forward).
        for ns in [&inet, &gw, &vm] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        for (host, gw_if) in [(&inet, WAN_IF), (&vm, LAN_IF)] {
            let peer = ["peer", "name", gw_if, "netns", gw.name()];
            host.ip(&[&["link", "add", HOST_IF, "type", "veth"][..], &peer].concat())?;
            host.ip(&["link", "set", HOST_IF, "up"])?;
        }
        let inet_mac = format_mac(mac_of(&inet, HOST_IF));
        let vm_mac = format_mac(mac_of(&vm, HOST_IF));
        gw.ip_batch(&format!(
            "addr add {GW_WAN}/24 dev {WAN_IF}\naddr add {GW_LAN}/24 dev {LAN_IF}\n\
             link set {WAN_IF} up\nlink set {LAN_IF} up\n\
             route add default via {INTERNET_HOST}\n\
             route add 198.18.0.0/15 via {VM_IP}\nroute add 10.64.0.0/10 via {VM_IP}\n\
             neigh replace {INTERNET_HOST} lladdr {inet_mac} dev {WAN_IF} nud permanent\n\
             neigh replace {VM_IP} lladdr {vm_mac} dev {LAN_IF} nud permanent\n"
        ))?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        for scope in ["all", "default", WAN_IF, LAN_IF] {
            gw.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        for dev in [WAN_IF, LAN_IF] {
            gw.exec_ok(&["ethtool", "-K", dev, "gro", "on"])?;
        }

        let pins = bpffs.path().join("ends");
        std::fs::create_dir_all(&pins)?;
        let mut ends = load_ends(&pins)?;
        for ns in [&inet, &vm] {
            let ends = &mut ends;
            ns.run_in(move || attach_sink(ends))?
                .with_context(|| format!("attaching the sink in {}", ns.name()))?;
        }
        // Every receive side in a thread: the sinks' next to the generator, the gateway's
        // on a CPU of its own.
        for ns in [&inet, &vm] {
            let thread = threaded_napi(ns, HOST_IF)?;
            pin_thread(thread, GENERATOR_CPU)?;
            // Real-time, so that the sink runs as soon as frames reach it instead of
            // waiting for the generator's turn to end: otherwise the sink's ring (256
            // frames) overflows and frames the gateway forwarded go uncounted.
            realtime(thread, SINK_PRIORITY)?;
        }
        let wan_thread = threaded_napi(&gw, WAN_IF)?;
        let lan_thread = threaded_napi(&gw, LAN_IF)?;
        for thread in [wan_thread, lan_thread] {
            pin_thread(thread, FORWARDING_CPU)?;
            realtime(thread, FORWARDING_PRIORITY)?;
        }
        Ok(Self { ends, inet, gw, vm, bpffs, wan_thread, lan_thread })
    }

    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// The MAC of the gateway interface the traffic enters by.
    fn gateway_mac(&self, from: Sender) -> [u8; 6] {
        match from {
            Sender::Internet => mac_of(&self.gw, WAN_IF),
            Sender::Vpc => mac_of(&self.gw, LAN_IF),
        }
    }

    /// Sends `traffic` for `seconds` (whole calls of [`FRAMES_PER_CALL`], at most
    /// [`MAX_CALLS`]) and counts what arrives.
    pub fn send_for(&mut self, traffic: &Traffic, seconds: f64) -> anyhow::Result<Window> {
        self.send(traffic, Until::Seconds(seconds))
    }

    /// `samples` windows of [`BenchNet::send_for`], one after another.
    pub fn windows(
        &mut self,
        traffic: &Traffic,
        samples: usize,
        seconds: f64,
    ) -> anyhow::Result<Vec<Window>> {
        (0..samples).map(|_| self.send_for(traffic, seconds)).collect()
    }

    /// Sends exactly `frames` frames of `traffic` (e.g. one per new flow).
    pub fn send_frames(&mut self, traffic: &Traffic, frames: u32) -> anyhow::Result<Window> {
        self.send(traffic, Until::Frames(frames))
    }

    fn send(&mut self, traffic: &Traffic, until: Until) -> anyhow::Result<Window> {
        let frame = self.configure(traffic)?;
        let (source, thread) = match traffic.from {
            Sender::Internet => (&self.inet, self.wan_thread),
            Sender::Vpc => (&self.vm, self.lan_thread),
        };
        let sink_before = sink_count(&self.ends)?;
        let cpu_before = cpu_time_ns(thread)?;
        let program = generator(&self.ends)?;
        let (generated, seconds) = source.run_in(|| generate(program, &frame, until))??;
        let cpu_after = cpu_time_ns(thread)?;
        let delivered = settled_sink_count(&self.ends)? - sink_before;
        Ok(Window { generated, delivered, seconds, forwarding_cpu_ns: cpu_after - cpu_before })
    }

    /// Writes the generator's configuration for `traffic`, restarts its flow sequence,
    /// and returns the frame it starts from.
    fn configure(&mut self, traffic: &Traffic) -> anyhow::Result<Vec<u8>> {
        let host_mac = match traffic.from {
            Sender::Internet => mac_of(&self.inet, HOST_IF),
            Sender::Vpc => mac_of(&self.vm, HOST_IF),
        };
        let (src, dst, vary) = match traffic.from {
            Sender::Internet => (INTERNET_HOST, traffic.first_addr, VARY_DESTINATION),
            Sender::Vpc => (traffic.first_addr, INTERNET_HOST, VARY_SOURCE),
        };
        let frame = udp_frame(
            (host_mac, self.gateway_mac(traffic.from)),
            (src, traffic.first_port),
            (dst, DST_PORT),
            traffic.frame_len,
        );
        let mut header = [0u8; BENCH_HEADER_LEN];
        header.copy_from_slice(&frame[..BENCH_HEADER_LEN]);
        let config = GenConfig {
            header,
            _pad: [0; 2],
            flows: traffic.flows,
            addr_count: traffic.addresses,
            addr_offset: vary,
        };
        let mut map: Array<&mut MapData, GenConfig> = Array::try_from(
            self.ends.map_mut(MAP_BENCH_GENERATOR).context("the generator's map")?,
        )?;
        map.set(0, &config, 0)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?.get();
        let mut sequence: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(
            self.ends.map_mut(MAP_BENCH_SEQUENCE).context("the sequence map")?,
        )?;
        sequence.set(0, PerCpuValues::try_from(vec![0u64; cpus as usize])?, 0)?;
        Ok(frame)
    }
}

#[derive(Copy, Clone)]
enum Until {
    Seconds(f64),
    Frames(u32),
}

/// Runs the generator on this thread (in the sending namespace, pinned to the generator's
/// CPU): whole calls until the time is up, or exactly the frames asked for. Returns the
/// frames sent and the wall time.
fn generate(program: &Xdp, frame: &[u8], until: Until) -> anyhow::Result<(u64, f64)> {
    pin_to_cpu(GENERATOR_CPU);
    realtime(0, GENERATOR_PRIORITY)?;
    let ctx = xdp_md(frame.len(), ifindex(HOST_IF));
    let started = Instant::now();
    let (mut sent, mut calls) = (0u64, 0u32);
    loop {
        let repeat = match until {
            Until::Seconds(s) if started.elapsed().as_secs_f64() >= s => break,
            Until::Seconds(_) => FRAMES_PER_CALL,
            Until::Frames(n) if sent >= u64::from(n) => break,
            Until::Frames(n) => FRAMES_PER_CALL.min(n - sent as u32),
        };
        if calls == MAX_CALLS {
            break;
        }
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN in live-frames mode (kernel 5.18 or later)")?;
        sent += u64::from(repeat);
        calls += 1;
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// A UDP frame of `len` bytes (without the FCS) with checksum 0 (none, RFC 768): the
/// generator changes addresses and ports without updating it.
pub fn udp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    len: usize,
) -> Vec<u8> {
    const HEADERS: usize = 14 + 20 + 8;
    let payload = vec![0u8; len.saturating_sub(HEADERS)];
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload).expect("a UDP frame");
    frame[40..42].copy_from_slice(&[0, 0]);
    frame
}

fn load_ends(pins: &Path) -> anyhow::Result<Ebpf> {
    // The smallest tables: of the object's maps, these programs use only their own.
    let mut ebpf = load_object(pins, 16)?;
    for name in [PROGRAM_BENCH_GENERATOR, PROGRAM_BENCH_SINK] {
        let program: &mut Xdp =
            ebpf.program_mut(name).with_context(|| format!("{name} in the object"))?.try_into()?;
        program.load().with_context(|| format!("the verifier rejected {name}"))?;
    }
    Ok(ebpf)
}

fn attach_sink(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let program: &mut Xdp = ebpf.program_mut(PROGRAM_BENCH_SINK).context("the sink")?.try_into()?;
    let name = std::ffi::CString::new(HOST_IF)?;
    program.attach(name.as_c_str(), XdpMode::Driver)?;
    Ok(())
}

fn generator(ebpf: &Ebpf) -> anyhow::Result<&Xdp> {
    Ok(ebpf.program(PROGRAM_BENCH_GENERATOR).context("the generator")?.try_into()?)
}

/// The sink's count once what is still in the veths' rings (a few hundred frames) has
/// landed: read until it stops moving for a few milliseconds, within a deadline.
fn settled_sink_count(ends: &Ebpf) -> anyhow::Result<u64> {
    const STILL_FOR: Duration = Duration::from_millis(5);
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut count = sink_count(ends)?;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let now = sink_count(ends)?;
        if now != count {
            (count, since) = (now, Instant::now());
        } else if since.elapsed() >= STILL_FOR {
            break;
        }
        std::thread::yield_now();
    }
    Ok(count)
}

fn sink_count(ebpf: &Ebpf) -> anyhow::Result<u64> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(MAP_BENCH_SINK).context("the sink's map")?)?;
    Ok(map.get(&0, 0)?.iter().sum())
}

/// Puts `dev`'s receive side (in `ns`) into a NAPI thread of its own and returns the
/// thread's pid. The thread is the one that appears when the switch is made, named
/// `napi/<dev>-<id>`.
fn threaded_napi(ns: &Netns, dev: &str) -> anyhow::Result<i32> {
    let before = napi_threads()?;
    // `ip netns exec` mounts the namespace's own /sys.
    ns.exec_ok(&["sh", "-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])?;
    let prefix = format!("napi/{dev}-");
    let new: Vec<i32> = napi_threads()?
        .difference(&before)
        .filter(|(_, comm)| comm.starts_with(&prefix))
        .map(|(pid, _)| *pid)
        .collect();
    match new[..] {
        [pid] => Ok(pid),
        _ => bail!("expected one new NAPI thread for {dev} in {}, found {new:?}", ns.name()),
    }
}

/// Kernel threads named `napi/...`: (pid, name).
fn napi_threads() -> anyhow::Result<BTreeSet<(i32, String)>> {
    let mut threads = BTreeSet::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm"))
            && comm.starts_with("napi/")
        {
            threads.insert((pid, comm.trim().to_owned()));
        }
    }
    Ok(threads)
}

fn pin_thread(pid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET and sched_setaffinity get a
    // valid one.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {pid} to CPU {cpu}"));
    }
    Ok(())
}

/// Makes a thread (0: the calling one) real-time (SCHED_FIFO) at `priority`.
fn realtime(pid: i32, priority: i32) -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: a valid sched_param for the call.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("making thread {pid} SCHED_FIFO"));
    }
    Ok(())
}

/// The CPU time a thread has run, in ns (the first field of /proc/PID/schedstat).
fn cpu_time_ns(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("reading the schedstat of thread {pid}"))?;
    text.split_whitespace().next().and_then(|f| f.parse().ok()).context("schedstat's first field")
}
