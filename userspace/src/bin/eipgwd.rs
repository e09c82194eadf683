//! `eipgwd`: the eipgw agent.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::{Parser, ValueEnum};
use eipgw::{
    agent::Agent,
    api,
    client::DEFAULT_SOCKET,
    dataplane::{Dataplane, DataplaneOptions},
    store::Store,
};
use eipgw_common::{DEFAULT_MAX_MAPPINGS, SnatConfig};
use tokio::signal::unix::{SignalKind, signal};

/// How the agent's memory is kept, for big changes (BENCHMARKS.md, section 4):
/// - Every thread allocates from glibc's main heap. The API runs requests on the runtime's
///   threads, and glibc gives each thread an arena of its own, which it shrinks and grows
///   back page by page: a million-resource transaction ran 1.5-2.5x slower on a thread
///   than on the main heap in an in-process harness, and one arena made a 1M apply about
///   7% faster in the agent. Requests run one at a time; the store's thread, which writes
///   beside the planning, is the only other one that allocates much.
/// - The heap keeps what it frees, large blocks included, instead of handing them back
///   to the kernel: the first write to a page the kernel hands out costs a fault and a
///   clearing, which in a VM took a quarter of the rules' time for a 1M change. So the
///   memory of a dry run serves the apply after it, and a big change's earlier phases
///   serve its later ones. The agent keeps its peak size.
fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // No block of its own from mmap, however large; and no trimming of the heap.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[derive(Debug, Parser)]
#[command(name = "eipgwd", version, about = "The eipgw Elastic IP gateway agent")]
struct Args {
    /// Interface facing the Internet.
    #[arg(long)]
    wan: String,
    /// Interface facing the VPC.
    #[arg(long)]
    lan: String,
    /// Where the state file lives.
    #[arg(long, default_value = "/var/lib/eipgw")]
    state_dir: PathBuf,
    /// A bpffs mount (mounted here if it is not one); pins go under DIR/eipgw/.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// The API socket (root-only).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// How XDP is attached: native (in the driver) or skb (generic, any interface).
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    xdp_mode: Mode,
    /// Capacity of the mapping tables (used when the pinned maps are first created).
    #[arg(long, default_value_t = DEFAULT_MAX_MAPPINGS)]
    max_mappings: u32,
    /// Public ports (and ICMP query identifiers) SNAT hands out on each EIP, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_port_range, default_value = "1024-65535")]
    snat_ports: (u16, u16),
    /// Seconds a UDP SNAT session may stay idle (RFC 4787 REQ-5: at least 120; 300 is usual).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 300)]
    snat_udp_timeout: u64,
    /// Seconds an ICMP query SNAT session may stay idle (RFC 5508 REQ-1: 60).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 60)]
    snat_icmp_timeout: u64,
    /// Seconds an established TCP SNAT session may stay idle (RFC 5382 REQ-5: 7440).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 7440)]
    snat_tcp_established_timeout: u64,
    /// Seconds a TCP SNAT session in its handshake or closing may stay idle (RFC 5382: 240).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 240)]
    snat_tcp_transitory_timeout: u64,
}

impl Args {
    fn snat(&self) -> SnatConfig {
        let ns = |seconds: u64| seconds.saturating_mul(1_000_000_000);
        SnatConfig {
            port_min: self.snat_ports.0,
            port_max: self.snat_ports.1,
            _pad: 0,
            tcp_established_ns: ns(self.snat_tcp_established_timeout),
            tcp_transitory_ns: ns(self.snat_tcp_transitory_timeout),
            udp_ns: ns(self.snat_udp_timeout),
            icmp_ns: ns(self.snat_icmp_timeout),
        }
    }
}

/// `MIN-MAX`, 1 <= MIN <= MAX <= 65535.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range: write MIN-MAX, e.g. 1024-65535"))?;
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) => Err("port 0 cannot be handed out; the range starts at 1 or above".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{p:?} is not a port (1 to 65535)")),
        }
    };
    let (min, max) = (port(min)?, port(max)?);
    if min > max {
        return Err(format!("the range {min}-{max} is reversed: write {max}-{min}"));
    }
    Ok((min, max))
}

/// How often expired SNAT sessions are ended (and their ports freed): far below the
/// shortest timeout, so a port is never held much past it.
const SNAT_SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Native,
    Skb,
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let store = Store::open(&args.state_dir)?;
    let dataplane = Dataplane::open(&DataplaneOptions {
        wan: args.wan.clone(),
        lan: args.lan.clone(),
        bpffs: args.bpffs.clone(),
        xdp_mode: match args.xdp_mode {
            Mode::Native => XdpMode::Driver,
            Mode::Skb => XdpMode::Skb,
        },
        max_mappings: args.max_mappings,
        snat: args.snat(),
    })?;
    let agent = Agent::start(store, dataplane)?;
    log::info!("XDP attached to {} (WAN) and {} (LAN)", args.wan, args.lan);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            // The program and maps stay pinned: translation goes on without the agent.
            log::info!("stopping; XDP stays attached and keeps translating");
        };
        let held = agent.held_fragments_fd().context("copying the held-fragment ring's fd")?;
        let agent = Arc::new(tokio::sync::Mutex::new(agent));
        tokio::spawn(sweep_snat_sessions(agent.clone()));
        let releaser = agent.clone();
        std::thread::Builder::new()
            .name("held-fragments".into())
            .spawn(move || release_held_fragments(releaser, held))
            .context("starting the held-fragment thread")?;
        let socket = args.api_socket.clone();
        let result = api::serve(agent, &socket, shutdown).await;
        let _ = std::fs::remove_file(&socket);
        result
    })
}

/// Ends expired SNAT sessions every [`SNAT_SWEEP_EVERY`], for as long as the agent runs.
/// The sweep makes system calls under the agent's lock, so it runs on a blocking thread.
async fn sweep_snat_sessions(agent: Arc<tokio::sync::Mutex<Agent>>) {
    let mut tick = tokio::time::interval(SNAT_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let agent = agent.clone();
        let swept =
            tokio::task::spawn_blocking(move || agent.blocking_lock().expire_snat_sessions()).await;
        match swept {
            Ok(Ok(ended)) => {
                if ended > 0 {
                    log::debug!("ended {ended} SNAT sessions");
                }
                failing = false;
            }
            // Said once, not every second, until it works again.
            Ok(Err(e)) if !failing => {
                log::warn!("sweeping SNAT sessions: {e:#}");
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(e) => log::error!("the SNAT session sweep stopped: {e}"),
        }
    }
}

/// How often held fragments are looked at when the program says nothing: the ones that
/// waited too long are let go.
const HELD_FRAGMENTS_EVERY: Duration = Duration::from_secs(1);

/// Releases held fragments (see `dataplane::held`) as soon as the program puts a record on
/// the ring, for as long as the agent runs. A thread of its own, since it waits in poll(2).
fn release_held_fragments(agent: Arc<tokio::sync::Mutex<Agent>>, ring: OwnedFd) {
    let mut failing = false;
    loop {
        let mut poll = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = HELD_FRAGMENTS_EVERY.as_millis() as libc::c_int;
        // SAFETY: one valid pollfd, for the call's duration. Interrupted or not, the ring is
        // read below, and waiting resumes after.
        unsafe { libc::poll(&mut poll, 1, timeout) };
        match agent.blocking_lock().release_held_fragments() {
            Ok(report) => {
                if report.sent + report.dropped > 0 {
                    log::debug!("held fragments: {report:?}");
                }
                failing = false;
            }
            // Said once, not every second, until it works again.
            Err(e) if !failing => {
                log::warn!("releasing held fragments: {e:#}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snat_flags_default_to_the_references_and_are_checked() {
        let args = Args::try_parse_from(["eipgwd", "--wan", "w", "--lan", "l"]).unwrap();
        assert_eq!(args.snat(), SnatConfig::DEFAULT);
        let tiny = Args::try_parse_from([
            "eipgwd",
            "--wan",
            "w",
            "--lan",
            "l",
            "--snat-ports",
            "20000-20001",
            "--snat-udp-timeout",
            "5",
        ])
        .unwrap()
        .snat();
        assert_eq!((tiny.port_min, tiny.port_max, tiny.port_count()), (20000, 20001, 2));
        assert_eq!(tiny.udp_ns, 5_000_000_000);
        let error = |flags: &[&str]| {
            let argv = ["eipgwd", "--wan", "w", "--lan", "l"].iter().chain(flags);
            Args::try_parse_from(argv).unwrap_err().to_string()
        };
        assert!(error(&["--snat-ports", "2000-1000"]).contains("reversed"));
        assert!(error(&["--snat-ports", "0-1000"]).contains("port 0"));
        assert!(error(&["--snat-ports", "1024"]).contains("MIN-MAX"));
        assert!(error(&["--snat-ports", "1024-70000"]).contains("not a port"));
        assert!(error(&["--snat-icmp-timeout", "0"]).contains("0"));
    }
}
