//! `eipctl`: the operator CLI. Noun-verb commands, tables for people, `--output json` for
//! scripts, and exit codes that tell success, refusal and failure apart.

pub mod apply;
mod eip;
mod eni;
mod instance;
mod nat;
mod nat_gateway;
mod network;
mod output;
mod security_group;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    api::{ExecuteAnswer, StatsView},
    client::{CallError, Client, DEFAULT_SOCKET},
    model::{Kind, Request},
};
pub use output::Output;

/// Exit code when the agent refused the request (a rule, or an unknown resource).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the request could not be carried out (agent down, I/O, internal error).
pub const EXIT_FAILED: u8 = 4;
/// Exit code for bad usage: arguments clap rejects, or a malformed input file.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "eipctl", version, about = "Operate the eipgw Elastic IP gateway")]
#[command(after_help = "Exit codes: 0 success, 2 bad usage, 3 refused by the agent \
                        (nothing changed), 4 failure (agent unreachable or internal error).")]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "EIPGW_SOCKET", default_value = DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regions.
    #[command(subcommand)]
    Region(network::RegionCommand),
    /// VPCs.
    #[command(subcommand)]
    Vpc(network::VpcCommand),
    /// vSwitches (subnets).
    #[command(subcommand)]
    Vswitch(network::VswitchCommand),
    /// Instance types and their limits (R20).
    #[command(subcommand, name = "instance-type")]
    InstanceType(network::InstanceTypeCommand),
    /// Instances.
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Network interfaces and their private IPv4 and IPv6 addresses.
    #[command(subcommand)]
    Eni(eni::EniCommand),
    /// Elastic IPs.
    #[command(subcommand)]
    Eip(eip::EipCommand),
    /// NAT gateways, their EIPs and SNAT/DNAT entries.
    #[command(subcommand, name = "nat-gateway")]
    NatGateway(nat_gateway::NatGatewayCommand),
    /// The NAT gateways at work: SNAT sessions, and port use per EIP.
    #[command(subcommand)]
    Nat(nat::NatCommand),
    /// Security groups: which inbound Internet traffic reaches the ENIs that use them.
    #[command(subcommand, name = "security-group")]
    SecurityGroup(security_group::SecurityGroupCommand),
    /// Apply a YAML or JSON document of requests as one transaction.
    Apply(apply::ApplyArgs),
    /// How a private IPv4 reaches the Internet: own EIP, DNAT IP mapping, SNAT (R27).
    Egress { ip: std::net::Ipv4Addr },
    /// Data plane counters: frames per verdict (translated, passed, dropped by reason).
    Stats,
}

/// What every command needs: where to send, how to print.
pub struct Ctx {
    client: Client,
    output: Output,
}

impl Ctx {
    /// Sends one request and prints the resource it was about.
    fn request(&self, request: Request) -> Result<(), CallError> {
        let answer: ExecuteAnswer = self.client.post("/v1/requests", &request)?;
        for warning in &answer.warnings {
            eprintln!("eipctl: warning: {warning}");
        }
        match (&answer.subject, self.output) {
            (_, Output::Json) => output::json(&answer),
            (Some(subject), Output::Table) => output::resources(std::slice::from_ref(subject)),
            (None, Output::Table) => println!("done"),
        }
        Ok(())
    }

    fn list(&self, kind: Kind) -> Result<(), CallError> {
        let items: Vec<serde_json::Value> =
            self.client.get(&format!("/v1/resources/{}", kind.name()))?;
        match self.output {
            Output::Json => output::json(&items),
            Output::Table => output::resources(&items),
        }
        Ok(())
    }

    fn show(&self, kind: Kind, id: &str) -> Result<(), CallError> {
        let item: serde_json::Value =
            self.client.get(&format!("/v1/resources/{}/{id}", kind.name()))?;
        match self.output {
            Output::Json => output::json(&item),
            Output::Table => output::details(&item),
        }
        Ok(())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx { client: Client::new(&cli.api_socket), output: cli.output };
    let result = match cli.command {
        Command::Region(c) => network::region(&ctx, c),
        Command::Vpc(c) => network::vpc(&ctx, c),
        Command::Vswitch(c) => network::vswitch(&ctx, c),
        Command::InstanceType(c) => network::instance_type(&ctx, c),
        Command::Instance(c) => instance::run(&ctx, c),
        Command::Eni(c) => eni::run(&ctx, c),
        Command::Eip(c) => eip::run(&ctx, c),
        Command::NatGateway(c) => nat_gateway::run(&ctx, c),
        Command::Nat(c) => nat::run(&ctx, c),
        Command::SecurityGroup(c) => security_group::run(&ctx, c),
        Command::Apply(args) => apply::run(&ctx, args),
        Command::Egress { ip } => egress(&ctx, ip),
        Command::Stats => stats(&ctx),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eipctl: {error}");
            match error {
                CallError::Refused(body) => {
                    match body.rule {
                        Some(rule) => {
                            eprintln!("eipctl: refused by rule {rule}; nothing was changed")
                        }
                        None => eprintln!("eipctl: refused; nothing was changed"),
                    }
                    ExitCode::from(EXIT_REFUSED)
                }
                CallError::Failed(_) | CallError::Unreachable(_) => ExitCode::from(EXIT_FAILED),
                CallError::Usage(_) => ExitCode::from(EXIT_USAGE),
            }
        }
    }
}

fn stats(ctx: &Ctx) -> Result<(), CallError> {
    let stats: StatsView = ctx.client.get("/v1/stats")?;
    match ctx.output {
        Output::Json => output::json(&stats),
        Output::Table => {
            let rows: Vec<Vec<String>> =
                stats.verdicts.iter().map(|(name, n)| vec![name.clone(), n.to_string()]).collect();
            output::table(&["VERDICT", "FRAMES"], &rows);
        }
    }
    Ok(())
}

fn egress(ctx: &Ctx, ip: std::net::Ipv4Addr) -> Result<(), CallError> {
    let egress: crate::model::Egress = ctx.client.get(&format!("/v1/egress/{ip}"))?;
    output::json(&egress);
    Ok(())
}
