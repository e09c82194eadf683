//! `eipctl region|vpc|vswitch|instance-type ...`

use clap::Subcommand;
use ipnet::{Ipv4Net, Ipv6Net};

use super::Ctx;
use crate::{
    client::CallError,
    model::{Id, Kind, Request},
};

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Create a region.
    Create {
        id: Id,
    },
    /// Delete an empty region.
    Delete {
        id: Id,
    },
    List,
    Show {
        id: Id,
    },
}

pub fn region(ctx: &Ctx, command: RegionCommand) -> Result<(), CallError> {
    match command {
        RegionCommand::Create { id } => ctx.request(Request::CreateRegion { id }),
        RegionCommand::Delete { id } => ctx.request(Request::DeleteRegion { id }),
        RegionCommand::List => ctx.list(Kind::Region),
        RegionCommand::Show { id } => ctx.show(Kind::Region, &id),
    }
}

#[derive(Debug, Subcommand)]
pub enum VpcCommand {
    /// Create a VPC. VPCs behind one gateway must not overlap.
    Create {
        id: Id,
        #[arg(long)]
        region: Id,
        #[arg(long)]
        cidr: Ipv4Net,
        #[arg(long)]
        ipv6_cidr: Option<Ipv6Net>,
        /// The VPC has an IPv4 gateway (no cut-through ENIs then, R10).
        #[arg(long)]
        ipv4_gateway: bool,
    },
    /// Delete a VPC that has no vSwitches or NAT gateways.
    Delete {
        id: Id,
    },
    List,
    Show {
        id: Id,
    },
}

pub fn vpc(ctx: &Ctx, command: VpcCommand) -> Result<(), CallError> {
    match command {
        VpcCommand::Create { id, region, cidr, ipv6_cidr, ipv4_gateway } => {
            ctx.request(Request::CreateVpc { id, region, cidr, ipv6_cidr, ipv4_gateway })
        }
        VpcCommand::Delete { id } => ctx.request(Request::DeleteVpc { id }),
        VpcCommand::List => ctx.list(Kind::Vpc),
        VpcCommand::Show { id } => ctx.show(Kind::Vpc, &id),
    }
}

#[derive(Debug, Subcommand)]
pub enum VswitchCommand {
    /// Create a vSwitch (a subnet of the VPC in one zone).
    Create {
        id: Id,
        #[arg(long)]
        vpc: Id,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        cidr: Ipv4Net,
        #[arg(long)]
        ipv6_cidr: Option<Ipv6Net>,
    },
    /// Delete a vSwitch that has no ENIs.
    Delete {
        id: Id,
    },
    List,
    Show {
        id: Id,
    },
}

pub fn vswitch(ctx: &Ctx, command: VswitchCommand) -> Result<(), CallError> {
    match command {
        VswitchCommand::Create { id, vpc, zone, cidr, ipv6_cidr } => {
            ctx.request(Request::CreateVswitch { id, vpc, zone, cidr, ipv6_cidr })
        }
        VswitchCommand::Delete { id } => ctx.request(Request::DeleteVswitch { id }),
        VswitchCommand::List => ctx.list(Kind::VSwitch),
        VswitchCommand::Show { id } => ctx.show(Kind::VSwitch, &id),
    }
}

#[derive(Debug, Subcommand)]
pub enum InstanceTypeCommand {
    /// Create an instance type with its limits (R20).
    Create {
        id: Id,
        #[arg(long)]
        max_enis: u32,
        #[arg(long)]
        max_private_ips: u32,
        #[arg(long, default_value_t = 0)]
        max_ipv6: u32,
    },
    /// Delete an instance type no instance uses.
    Delete {
        id: Id,
    },
    List,
    Show {
        id: Id,
    },
}

pub fn instance_type(ctx: &Ctx, command: InstanceTypeCommand) -> Result<(), CallError> {
    match command {
        InstanceTypeCommand::Create { id, max_enis, max_private_ips, max_ipv6 } => {
            ctx.request(Request::CreateInstanceType {
                id,
                max_enis,
                max_private_ipv4_per_eni: max_private_ips,
                max_ipv6_per_eni: max_ipv6,
            })
        }
        InstanceTypeCommand::Delete { id } => ctx.request(Request::DeleteInstanceType { id }),
        InstanceTypeCommand::List => ctx.list(Kind::InstanceType),
        InstanceTypeCommand::Show { id } => ctx.show(Kind::InstanceType, &id),
    }
}
