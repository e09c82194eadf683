//! `eipctl eip ...`

use std::net::Ipv4Addr;

use clap::{Subcommand, ValueEnum};

use super::Ctx;
use crate::{
    client::CallError,
    model::{AssociationMode, Id, Kind, Request},
};

#[derive(Debug, Subcommand)]
pub enum EipCommand {
    /// Allocate an EIP to the account (it starts `available`).
    Allocate {
        address: Ipv4Addr,
        /// Region of the EIP (default: the only region there is).
        #[arg(long)]
        region: Option<Id>,
        /// Bandwidth cap in Mbit/s (default: none).
        #[arg(long)]
        bandwidth: Option<u32>,
    },
    /// Set or clear an EIP's bandwidth cap.
    SetBandwidth {
        eip: Ipv4Addr,
        /// Mbit/s; omit to remove the cap.
        #[arg(long)]
        bandwidth: Option<u32>,
    },
    /// Associate an EIP with an instance, an ENI, or the ENI that holds a private IP.
    Associate {
        eip: Ipv4Addr,
        /// The instance's primary address, NAT mode (R06).
        #[arg(long, conflicts_with_all = ["eni", "mode"])]
        instance: Option<Id>,
        #[arg(long)]
        eni: Option<Id>,
        /// NAT mode: the private IPv4 to translate to (with --eni: one of its addresses).
        #[arg(long)]
        private_ip: Option<Ipv4Addr>,
        /// With --eni: nat (default), cut-through or multi-eip.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Move the EIP even if it is associated elsewhere now (R05).
        #[arg(long)]
        allow_reassociation: bool,
    },
    /// Remove an EIP's association; the EIP stays allocated and becomes `available`.
    Unassociate { eip: Ipv4Addr },
    /// Release an available EIP from the account.
    Release { eip: Ipv4Addr },
    /// List every EIP with its association and counters.
    List,
    /// Show one EIP with its counters.
    Show { eip: Ipv4Addr },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Nat,
    CutThrough,
    MultiEip,
}

pub fn run(ctx: &Ctx, command: EipCommand) -> Result<(), CallError> {
    match command {
        EipCommand::Allocate { address, region, bandwidth } => {
            ctx.request(Request::AllocateEip { address, region, bandwidth_mbps: bandwidth })
        }
        EipCommand::SetBandwidth { eip, bandwidth } => {
            ctx.request(Request::SetEipBandwidth { eip, bandwidth_mbps: bandwidth })
        }
        EipCommand::Associate { eip, instance, eni, private_ip, mode, allow_reassociation } => ctx
            .request(Request::AssociateEip {
                eip,
                instance,
                eni,
                private_ip,
                mode: mode.map(|m| match m {
                    ModeArg::Nat => AssociationMode::Nat,
                    ModeArg::CutThrough => AssociationMode::CutThrough,
                    ModeArg::MultiEip => AssociationMode::MultiEip,
                }),
                allow_reassociation,
            }),
        EipCommand::Unassociate { eip } => ctx.request(Request::UnassociateEip { eip }),
        EipCommand::Release { eip } => ctx.request(Request::ReleaseEip { eip }),
        EipCommand::List => ctx.list(Kind::Eip),
        EipCommand::Show { eip } => ctx.show(Kind::Eip, &eip.to_string()),
    }
}
