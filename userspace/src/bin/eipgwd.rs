//! `eipgwd`: the eipgw agent.

use std::{path::PathBuf, sync::Arc};

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
use eipgw_common::DEFAULT_MAX_MAPPINGS;
use tokio::signal::unix::{SignalKind, signal};

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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Native,
    Skb,
}

fn main() -> anyhow::Result<()> {
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
        let socket = args.api_socket.clone();
        let result = api::serve(Arc::new(tokio::sync::Mutex::new(agent)), &socket, shutdown).await;
        let _ = std::fs::remove_file(&socket);
        result
    })
}
