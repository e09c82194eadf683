//! `eipctl nat ...`: what the NAT gateways' data plane is doing (SNAT sessions, port use).
//! The gateways and their entries are configured with `eipctl nat-gateway`.

use std::net::Ipv4Addr;

use clap::Subcommand;

use super::{Ctx, Output, output};
use crate::{api::NatGatewayView, client::CallError, dataplane::SnatSessionView};

#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// Live SNAT sessions: which private endpoint holds which EIP port.
    Sessions {
        /// Only the sessions on this EIP.
        #[arg(long)]
        eip: Option<Ipv4Addr>,
        /// Only the sessions of this private address.
        #[arg(long)]
        private_ip: Option<Ipv4Addr>,
    },
    /// Per EIP of a NAT gateway: what it serves, its sessions, ports in use and refusals.
    Show { id: String },
}

pub fn run(ctx: &Ctx, command: NatCommand) -> Result<(), CallError> {
    match command {
        NatCommand::Sessions { eip, private_ip } => {
            let filter: Vec<String> = [("eip", eip), ("private_ip", private_ip)]
                .into_iter()
                .filter_map(|(name, value)| Some(format!("{name}={}", value?)))
                .collect();
            let path = match filter.is_empty() {
                true => "/v1/nat/sessions".to_owned(),
                false => format!("/v1/nat/sessions?{}", filter.join("&")),
            };
            let sessions: Vec<SnatSessionView> = ctx.client.get(&path)?;
            match ctx.output {
                Output::Json => output::json(&sessions),
                Output::Table => sessions_table(&sessions),
            }
        }
        NatCommand::Show { id } => {
            let gateway: NatGatewayView = ctx.client.get(&format!("/v1/nat/gateways/{id}"))?;
            match ctx.output {
                Output::Json => output::json(&gateway),
                Output::Table => gateway_table(&gateway),
            }
        }
    }
    Ok(())
}

fn sessions_table(sessions: &[SnatSessionView]) {
    if sessions.is_empty() {
        println!("(none)");
        return;
    }
    output::table(
        &["PROTO", "PRIVATE", "PUBLIC", "REMOTE", "STATE", "IDLE"],
        &session_rows(sessions),
    );
}

fn session_rows(sessions: &[SnatSessionView]) -> Vec<Vec<String>> {
    sessions
        .iter()
        .map(|s| {
            vec![
                s.protocol.to_owned(),
                format!("{}:{}", s.private_ip, s.private_port),
                format!("{}:{}", s.eip, s.public_port),
                format!("{}:{}", s.remote_ip, s.remote_port),
                s.state.to_owned(),
                format!("{}s", s.idle_seconds),
            ]
        })
        .collect()
}

fn gateway_table(gateway: &NatGatewayView) {
    println!(
        "NAT gateway {} in {}, SNAT ports {}-{}",
        gateway.nat_gateway, gateway.vpc, gateway.port_min, gateway.port_max
    );
    if gateway.eips.is_empty() {
        println!("(no EIPs: add one with `eipctl nat-gateway add-eip`)");
        return;
    }
    let header = [
        "EIP",
        "ROLE",
        "SESSIONS",
        "TCP_PORTS",
        "UDP_PORTS",
        "ICMP_IDS",
        "RANGE",
        "USED",
        "REFUSED",
    ];
    output::table(&header, &gateway_rows(gateway));
}

fn gateway_rows(gateway: &NatGatewayView) -> Vec<Vec<String>> {
    gateway
        .eips
        .iter()
        .map(|e| {
            let roles = if e.roles.is_empty() { "-".to_owned() } else { e.roles.join(",") };
            vec![
                e.eip.to_string(),
                roles,
                e.sessions.to_string(),
                e.ports_in_use.tcp.to_string(),
                e.ports_in_use.udp.to_string(),
                e.ports_in_use.icmp.to_string(),
                e.port_range_size.to_string(),
                format!("{:.1}%", e.utilisation_percent),
                e.snat_refused_packets.to_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        api::NatEipView,
        cli::{Cli, Command},
        dataplane::ProtocolCounts,
    };

    #[test]
    fn sessions_filters_parse() {
        let cli = Cli::try_parse_from([
            "eipctl",
            "nat",
            "sessions",
            "--eip",
            "203.0.113.14",
            "--private-ip",
            "10.0.1.10",
        ])
        .unwrap();
        let Command::Nat(NatCommand::Sessions { eip, private_ip }) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(eip, Some(Ipv4Addr::new(203, 0, 113, 14)));
        assert_eq!(private_ip, Some(Ipv4Addr::new(10, 0, 1, 10)));
        assert!(Cli::try_parse_from(["eipctl", "nat", "sessions", "--eip", "x"]).is_err());
        assert!(Cli::try_parse_from(["eipctl", "nat", "show"]).is_err());
    }

    #[test]
    fn rows_show_endpoints_and_percentages() {
        let session = SnatSessionView {
            protocol: "udp",
            private_ip: Ipv4Addr::new(10, 0, 1, 10),
            private_port: 5353,
            eip: Ipv4Addr::new(203, 0, 113, 14),
            public_port: 20000,
            remote_ip: Ipv4Addr::new(198, 51, 100, 7),
            remote_port: 53,
            state: "open",
            idle_seconds: 4,
            age_seconds: 9,
        };
        assert_eq!(
            session_rows(&[session])[0],
            ["udp", "10.0.1.10:5353", "203.0.113.14:20000", "198.51.100.7:53", "open", "4s"]
        );
        let gateway = NatGatewayView {
            nat_gateway: "ngw-1".into(),
            vpc: "vpc-1".into(),
            port_min: 20000,
            port_max: 20001,
            eips: vec![NatEipView {
                eip: Ipv4Addr::new(203, 0, 113, 14),
                roles: vec!["dnat".into(), "snat".into()],
                sessions: 1,
                ports_in_use: ProtocolCounts { tcp: 0, udp: 1, icmp: 0 },
                port_range_size: 2,
                utilisation_percent: 50.0,
                snat_refused_packets: 3,
            }],
        };
        assert_eq!(
            gateway_rows(&gateway)[0],
            ["203.0.113.14", "dnat,snat", "1", "0", "1", "0", "2", "50.0%", "3"]
        );
    }
}
