//! `cargo xtask demo`: the gateway with real traffic on a throwaway topology.
//!
//! Builds inet ⇄ gw ⇄ vm namespaces, starts eipgwd in gw, maps an EIP to the instance
//! with eipctl, sends real traffic both ways (curl, ping, a TCP connection out) and shows
//! the counters moving. Everything it made is removed when it ends.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context as _, bail};
use eipgw_tests::{
    AgentProcess, Netns, Topology, bin_path,
    servers::Server,
    topology::{EIP, INTERNET_HOST, VPC_DOCUMENT},
};

fn main() -> anyhow::Result<()> {
    eipgw_tests::require_root();
    println!("== building the topology: inet (198.51.100.1) <-> gw [eipgwd] <-> vm (10.0.1.10)");
    let topology = Topology::create()?;
    let agent = topology.start_agent()?;
    println!(
        "   eipgwd is running in {} (log: {})",
        topology.gw.name(),
        topology.dir().join("eipgwd.log").display()
    );
    let _http = Server::http(&topology.vm, 80, "hello from 10.0.1.10, reached through its EIP\n")?;
    let _whoami = Server::tcp_whoami(&topology.inet, 7000)?;

    println!("\n== the cloud behind the gateway (an embedded `eipctl apply` document)");
    print!("{}", indent(&agent.apply_document(VPC_DOCUMENT)?));
    eipctl(&agent, &["instance", "list"])?;

    let eip = EIP.to_string();
    eipctl(&agent, &["eip", "allocate", &eip])?;
    eipctl(&agent, &["eip", "associate", &eip, "--instance", "vm-1"])?;

    println!("\n== Internet -> EIP: curl http://{eip}/ from inet");
    for _ in 0..3 {
        print!(
            "   {}",
            run_in(
                &topology.inet,
                &["curl", "--silent", "--max-time", "3", &format!("http://{eip}/")]
            )?
        );
    }
    println!("\n== Internet -> EIP: ping {eip}");
    println!("{}", indent(&run_in(&topology.inet, &["ping", "-c", "3", "-i", "0.2", &eip])?));
    println!("== instance -> Internet: the server at {INTERNET_HOST} sees the source address");
    let seen = whoami(&topology.vm)?;
    println!("   {INTERNET_HOST}:7000 saw the instance as {seen} (its EIP, not 10.0.1.10)\n");

    println!("== counters");
    eipctl(&agent, &["eip", "show", &eip])?;
    eipctl(&agent, &["stats"])?;

    println!("\n== unassociate: the EIP stops carrying traffic");
    eipctl(&agent, &["eip", "unassociate", &eip])?;
    let refused = topology
        .inet
        .command("curl")
        .args(["--silent", "--max-time", "2", &format!("http://{eip}/")])
        .status()?;
    println!(
        "   curl http://{eip}/ -> {}",
        if refused.success() {
            "answered (unexpected!)"
        } else {
            "no answer (dropped and counted)"
        }
    );
    eipctl(&agent, &["eip", "list"])?;
    println!("\n== done; removing the namespaces");
    Ok(())
}

fn eipctl(agent: &AgentProcess, args: &[&str]) -> anyhow::Result<()> {
    println!("$ eipctl {}", args.join(" "));
    let out = Command::new(bin_path("eipctl"))
        .arg("--api-socket")
        .arg(agent.socket())
        .args(args)
        .output()?;
    print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
    if !out.status.success() {
        bail!("eipctl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn run_in(ns: &Netns, argv: &[&str]) -> anyhow::Result<String> {
    let out = ns.exec_ok(argv)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn whoami(vm: &Netns) -> anyhow::Result<Ipv4Addr> {
    vm.run_in(|| -> anyhow::Result<Ipv4Addr> {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect((INTERNET_HOST, 7000))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        seen.parse().context("whoami answer")
    })?
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}
