//! `eipctl eip ...`

use std::net::Ipv4Addr;

use clap::Subcommand;

use super::output::{self, Output};
use crate::{
    api::{AllocateBody, AssociateBody, EipView},
    client::{CallError, Client},
    model::{AssociationMode, EipStatus},
};

#[derive(Debug, Subcommand)]
pub enum EipCommand {
    /// Allocate an EIP to the account (it starts `available`).
    Allocate {
        address: Ipv4Addr,
        /// Region of the EIP (default: local).
        #[arg(long)]
        region: Option<String>,
    },
    /// Associate an EIP with a private IPv4 address (NAT mode).
    Associate {
        eip: Ipv4Addr,
        #[arg(long)]
        private_ip: Ipv4Addr,
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

pub fn run(client: &Client, output: Output, command: EipCommand) -> Result<(), CallError> {
    match command {
        EipCommand::Allocate { address, region } => {
            let view: EipView = client.post("/v1/eips", &AllocateBody { address, region })?;
            print_one(output, &view);
        }
        EipCommand::Associate { eip, private_ip, allow_reassociation } => {
            let body = AssociateBody { private_ip, allow_reassociation };
            let view: EipView = client.post(&format!("/v1/eips/{eip}/associate"), &body)?;
            print_one(output, &view);
        }
        EipCommand::Unassociate { eip } => {
            let view: EipView = client.post(&format!("/v1/eips/{eip}/unassociate"), &())?;
            print_one(output, &view);
        }
        EipCommand::Release { eip } => {
            client.delete(&format!("/v1/eips/{eip}"))?;
            match output {
                Output::Json => output::json(&serde_json::json!({ "released": eip })),
                Output::Table => println!("released {eip}"),
            }
        }
        EipCommand::List => {
            let views: Vec<EipView> = client.get("/v1/eips")?;
            match output {
                Output::Json => output::json(&views),
                Output::Table => print_table(&views),
            }
        }
        EipCommand::Show { eip } => {
            let view: EipView = client.get(&format!("/v1/eips/{eip}"))?;
            print_one(output, &view);
        }
    }
    Ok(())
}

fn print_one(output: Output, view: &EipView) {
    match output {
        Output::Json => output::json(view),
        Output::Table => print_table(std::slice::from_ref(view)),
    }
}

fn print_table(views: &[EipView]) {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let c = v.counters.unwrap_or_default();
            vec![
                v.address.to_string(),
                v.region.clone(),
                match v.status {
                    EipStatus::Available => "available".into(),
                    EipStatus::InUse => "in_use".into(),
                },
                v.private_ip.map_or_else(dash, |ip| ip.to_string()),
                v.mode.map_or_else(dash, |m| match m {
                    AssociationMode::Nat => "nat".into(),
                }),
                c.inbound_packets.to_string(),
                c.inbound_bytes.to_string(),
                c.outbound_packets.to_string(),
                c.outbound_bytes.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "EIP",
            "REGION",
            "STATUS",
            "PRIVATE_IP",
            "MODE",
            "IN_PKTS",
            "IN_BYTES",
            "OUT_PKTS",
            "OUT_BYTES",
        ],
        &rows,
    );
}
