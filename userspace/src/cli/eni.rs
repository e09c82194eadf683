//! `eipctl eni ...`

use std::net::{Ipv4Addr, Ipv6Addr};

use clap::Subcommand;

use super::Ctx;
use crate::{
    client::CallError,
    model::{Id, Kind, Request},
};

#[derive(Debug, Subcommand)]
pub enum EniCommand {
    /// Create a (secondary, detached) ENI in a vSwitch.
    Create {
        id: Id,
        #[arg(long)]
        vswitch: Id,
        #[arg(long)]
        primary_ip: Option<Ipv4Addr>,
        /// A security group of the vSwitch's VPC (default: none, inbound is not filtered).
        #[arg(long)]
        security_group: Option<Id>,
    },
    /// Filter the ENI's inbound traffic with a security group of its VPC, or (--none) stop
    /// filtering it.
    SetSecurityGroup {
        eni: Id,
        /// The security group, of the ENI's VPC.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        security_group: Option<Id>,
        /// No security group: inbound traffic to the ENI is not filtered.
        #[arg(long)]
        none: bool,
    },
    /// Attach a secondary ENI to an instance (its addresses and EIPs come along, R21).
    Attach {
        eni: Id,
        #[arg(long)]
        instance: Id,
    },
    /// Detach a secondary ENI (it keeps its addresses and EIPs).
    Detach {
        eni: Id,
    },
    /// Delete a detached secondary ENI; its EIPs return to `available`.
    Delete {
        eni: Id,
    },
    /// Assign secondary private IPv4s, all or none (R16).
    AssignIp {
        eni: Id,
        ips: Vec<Ipv4Addr>,
        /// Also pick this many free addresses from the vSwitch.
        #[arg(long, default_value_t = 0)]
        count: u32,
        /// Move addresses that another ENI holds, with their EIPs (R17).
        #[arg(long)]
        allow_reassignment: bool,
    },
    /// Unassign secondary private IPv4s; their EIPs are disassociated (R18).
    UnassignIp {
        eni: Id,
        #[arg(required = true)]
        ips: Vec<Ipv4Addr>,
    },
    /// Assign IPv6 addresses.
    AssignIpv6 {
        eni: Id,
        #[arg(required = true)]
        ips: Vec<Ipv6Addr>,
    },
    /// Unassign IPv6 addresses.
    UnassignIpv6 {
        eni: Id,
        #[arg(required = true)]
        ips: Vec<Ipv6Addr>,
    },
    /// Enable public bandwidth for an IPv6 address: only then does it reach the Internet (R23).
    Ipv6Public {
        ip: Ipv6Addr,
        /// Disable it again.
        #[arg(long)]
        disable: bool,
    },
    List,
    Show {
        eni: Id,
    },
}

pub fn run(ctx: &Ctx, command: EniCommand) -> Result<(), CallError> {
    match command {
        EniCommand::Create { id, vswitch, primary_ip, security_group } => {
            ctx.request(Request::CreateEni { id, vswitch, primary_ip, security_group })
        }
        EniCommand::SetSecurityGroup { eni, security_group, none: _ } => {
            // clap makes `--none` and a group exclusive; no group means --none.
            ctx.request(Request::SetEniSecurityGroup { eni, security_group })
        }
        EniCommand::Attach { eni, instance } => ctx.request(Request::AttachEni { eni, instance }),
        EniCommand::Detach { eni } => ctx.request(Request::DetachEni { eni }),
        EniCommand::Delete { eni } => ctx.request(Request::DeleteEni { eni }),
        EniCommand::AssignIp { eni, ips, count, allow_reassignment } => {
            ctx.request(Request::AssignPrivateIps { eni, ips, count, allow_reassignment })
        }
        EniCommand::UnassignIp { eni, ips } => {
            ctx.request(Request::UnassignPrivateIps { eni, ips })
        }
        EniCommand::AssignIpv6 { eni, ips } => ctx.request(Request::AssignIpv6 { eni, ips }),
        EniCommand::UnassignIpv6 { eni, ips } => ctx.request(Request::UnassignIpv6 { eni, ips }),
        EniCommand::Ipv6Public { ip, disable } => {
            ctx.request(Request::SetIpv6Public { ip, enabled: !disable })
        }
        EniCommand::List => ctx.list(Kind::Eni),
        EniCommand::Show { eni } => ctx.show(Kind::Eni, &eni),
    }
}
