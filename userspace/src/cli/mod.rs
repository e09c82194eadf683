//! `eipctl`: the operator CLI. Noun-verb commands, tables for people, `--output json` for
//! scripts, and exit codes that tell success, refusal and failure apart.

mod eip;
mod output;
mod stats;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::client::{CallError, Client, DEFAULT_SOCKET};
pub use output::Output;

/// Exit code when the agent refused the request (a rule, or an unknown resource).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the request could not be carried out (agent down, I/O, internal error).
pub const EXIT_FAILED: u8 = 4;
// clap exits with 2 on a usage error (bad arguments, malformed addresses).

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
    /// Elastic IPs: allocate, associate, unassociate, release, list, show.
    #[command(subcommand)]
    Eip(eip::EipCommand),
    /// Data plane counters: frames per verdict (translated, passed, dropped by reason).
    Stats,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.api_socket);
    let result = match cli.command {
        Command::Eip(command) => eip::run(&client, cli.output, command),
        Command::Stats => stats::run(&client, cli.output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eipctl: {error}");
            match error {
                CallError::Refused(body) => {
                    if let Some(rule) = body.rule {
                        eprintln!("eipctl: refused by rule {rule}; nothing was changed");
                    } else {
                        eprintln!("eipctl: refused; nothing was changed");
                    }
                    ExitCode::from(EXIT_REFUSED)
                }
                CallError::Failed(_) | CallError::Unreachable(_) => ExitCode::from(EXIT_FAILED),
            }
        }
    }
}
