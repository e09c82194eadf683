//! `eipctl nat-gateway ...`

use std::net::Ipv4Addr;

use clap::{Args, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use super::Ctx;
use crate::{
    client::CallError,
    model::{DnatMapping, Id, Kind, Protocol, Request, SnatSource},
};

#[derive(Debug, Subcommand)]
pub enum NatGatewayCommand {
    /// Create a NAT gateway in a VPC.
    Create {
        id: Id,
        #[arg(long)]
        vpc: Id,
        /// Most EIPs it may hold (default 20, R24).
        #[arg(long)]
        eip_quota: Option<u32>,
    },
    /// Delete a NAT gateway and its entries; its EIPs return to `available`.
    Delete {
        id: Id,
    },
    /// Give the gateway an available EIP (R24, R28).
    AddEip {
        id: Id,
        eip: Ipv4Addr,
    },
    /// Take an EIP back from the gateway (no entry may use it).
    RemoveEip {
        id: Id,
        eip: Ipv4Addr,
    },
    /// Add a SNAT entry: the source reaches the Internet through these EIPs (R25).
    SnatAdd(SnatArgs),
    SnatRemove {
        id: Id,
        entry: Id,
    },
    /// Add a DNAT entry: a port (or every port) of an EIP to a private IP (R26).
    DnatAdd(DnatArgs),
    DnatRemove {
        id: Id,
        entry: Id,
    },
    List,
    Show {
        id: Id,
    },
}

#[derive(Debug, Args)]
pub struct SnatArgs {
    id: Id,
    entry: Id,
    #[arg(long, group = "source")]
    source_vswitch: Option<Id>,
    #[arg(long, group = "source")]
    source_instance: Option<Id>,
    #[arg(long, group = "source")]
    source_cidr: Option<Ipv4Net>,
    #[arg(long = "eip", required = true)]
    eips: Vec<Ipv4Addr>,
}

#[derive(Debug, Args)]
pub struct DnatArgs {
    id: Id,
    entry: Id,
    #[arg(long)]
    eip: Ipv4Addr,
    #[arg(long)]
    private_ip: Ipv4Addr,
    /// Port mapping: the protocol (without it, an IP mapping of every port).
    #[arg(long, value_enum, requires_all = ["public_port", "private_port"])]
    protocol: Option<ProtocolArg>,
    #[arg(long)]
    public_port: Option<u16>,
    #[arg(long)]
    private_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
}

pub fn run(ctx: &Ctx, command: NatGatewayCommand) -> Result<(), CallError> {
    match command {
        NatGatewayCommand::Create { id, vpc, eip_quota } => {
            ctx.request(Request::CreateNatGateway { id, vpc, eip_quota })
        }
        NatGatewayCommand::Delete { id } => ctx.request(Request::DeleteNatGateway { id }),
        NatGatewayCommand::AddEip { id, eip } => {
            ctx.request(Request::AddNatGatewayEip { nat_gateway: id, eip })
        }
        NatGatewayCommand::RemoveEip { id, eip } => {
            ctx.request(Request::RemoveNatGatewayEip { nat_gateway: id, eip })
        }
        NatGatewayCommand::SnatAdd(a) => {
            let source = match (a.source_vswitch, a.source_instance, a.source_cidr) {
                (Some(v), None, None) => SnatSource::VSwitch(v),
                (None, Some(i), None) => SnatSource::Instance(i),
                (None, None, Some(c)) => SnatSource::Cidr(c),
                _ => {
                    return Err(CallError::Usage(
                        "give one source: --source-vswitch, --source-instance or --source-cidr"
                            .into(),
                    ));
                }
            };
            ctx.request(Request::AddSnatEntry {
                nat_gateway: a.id,
                id: a.entry,
                source,
                eips: a.eips,
            })
        }
        NatGatewayCommand::SnatRemove { id, entry } => {
            ctx.request(Request::RemoveSnatEntry { nat_gateway: id, id: entry })
        }
        NatGatewayCommand::DnatAdd(a) => {
            let mapping = match (a.protocol, a.public_port, a.private_port) {
                (Some(p), Some(public_port), Some(private_port)) => DnatMapping::Port {
                    protocol: match p {
                        ProtocolArg::Tcp => Protocol::Tcp,
                        ProtocolArg::Udp => Protocol::Udp,
                    },
                    public_port,
                    private_ip: a.private_ip,
                    private_port,
                },
                (None, None, None) => DnatMapping::Ip { private_ip: a.private_ip },
                _ => {
                    return Err(CallError::Usage(
                        "a port mapping needs --protocol, --public-port and --private-port".into(),
                    ));
                }
            };
            ctx.request(Request::AddDnatEntry {
                nat_gateway: a.id,
                id: a.entry,
                eip: a.eip,
                mapping,
            })
        }
        NatGatewayCommand::DnatRemove { id, entry } => {
            ctx.request(Request::RemoveDnatEntry { nat_gateway: id, id: entry })
        }
        NatGatewayCommand::List => ctx.list(Kind::NatGateway),
        NatGatewayCommand::Show { id } => ctx.show(Kind::NatGateway, &id),
    }
}
