//! `eipctl instance ...`

use std::net::Ipv4Addr;

use clap::{Subcommand, ValueEnum};

use super::Ctx;
use crate::{
    client::CallError,
    model::{Id, InstanceState, Kind, NetworkType, Request},
};

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Create an instance; a VPC instance gets its primary ENI in --vswitch.
    Create {
        id: Id,
        #[arg(long)]
        region: Id,
        #[arg(long)]
        zone: String,
        #[arg(long = "type")]
        instance_type: Id,
        #[arg(long)]
        vswitch: Option<Id>,
        /// The primary private IPv4 (default: the first free address of the vSwitch).
        #[arg(long)]
        private_ip: Option<Ipv4Addr>,
        /// A security group of the vSwitch's VPC for the primary ENI (default: none,
        /// inbound is not filtered).
        #[arg(long)]
        security_group: Option<Id>,
        /// A classic-network instance (no VPC, no ENI).
        #[arg(long)]
        classic: bool,
        #[arg(long, value_enum, default_value_t = StateArg::Running)]
        state: StateArg,
        #[arg(long)]
        fixed_public_ip: Option<Ipv4Addr>,
    },
    Start {
        id: Id,
    },
    Stop {
        id: Id,
    },
    /// Release the instance: its EIPs return to `available`, secondary ENIs are detached.
    Release {
        id: Id,
    },
    List,
    Show {
        id: Id,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Pending,
    Running,
    Stopped,
}

pub fn run(ctx: &Ctx, command: InstanceCommand) -> Result<(), CallError> {
    match command {
        InstanceCommand::Create {
            id,
            region,
            zone,
            instance_type,
            vswitch,
            private_ip,
            security_group,
            classic,
            state,
            fixed_public_ip,
        } => ctx.request(Request::CreateInstance {
            id,
            region,
            zone,
            instance_type,
            network: if classic { NetworkType::Classic } else { NetworkType::Vpc },
            vswitch,
            private_ip,
            security_group,
            state: match state {
                StateArg::Pending => InstanceState::Pending,
                StateArg::Running => InstanceState::Running,
                StateArg::Stopped => InstanceState::Stopped,
            },
            fixed_public_ip,
        }),
        InstanceCommand::Start { id } => ctx.request(Request::StartInstance { id }),
        InstanceCommand::Stop { id } => ctx.request(Request::StopInstance { id }),
        InstanceCommand::Release { id } => ctx.request(Request::ReleaseInstance { id }),
        InstanceCommand::List => ctx.list(Kind::Instance),
        InstanceCommand::Show { id } => ctx.show(Kind::Instance, &id),
    }
}
