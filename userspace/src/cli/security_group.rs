//! `eipctl security-group ...`

use std::net::Ipv4Addr;

use clap::{Args, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use super::Ctx;
use crate::{
    client::CallError,
    model::{Id, Kind, PortRange, Request, RuleProtocol, SecurityGroupRule},
};

#[derive(Debug, Subcommand)]
pub enum SecurityGroupCommand {
    /// Create a security group in a VPC; until a rule is authorized it admits nothing inbound.
    Create {
        id: Id,
        #[arg(long)]
        vpc: Id,
    },
    /// Delete a security group that no ENI uses.
    Delete {
        id: Id,
    },
    /// Admit inbound traffic to the group's ENIs: add a rule.
    Authorize(RuleArgs),
    /// Remove a rule, given as it was authorized.
    Revoke(RuleArgs),
    List,
    Show {
        id: Id,
    },
}

/// One inbound rule: `--protocol tcp --port 80 --source 198.51.100.0/24`.
#[derive(Debug, Args)]
pub struct RuleArgs {
    id: Id,
    #[arg(long, value_enum)]
    protocol: RuleProtocolArg,
    /// Destination port or range, e.g. 80 or 8000-8100: required for tcp and udp, not
    /// taken by icmp and all.
    #[arg(long, value_parser = parse_ports)]
    port: Option<PortRange>,
    /// Where the traffic comes from: a CIDR (a bare address is one host).
    #[arg(long, value_parser = parse_source, default_value = "0.0.0.0/0")]
    source: Ipv4Net,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RuleProtocolArg {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl RuleArgs {
    /// The rule, once the protocol and the ports agree (the agent checks again).
    fn rule(&self) -> Result<SecurityGroupRule, CallError> {
        let protocol = match self.protocol {
            RuleProtocolArg::Tcp => RuleProtocol::Tcp,
            RuleProtocolArg::Udp => RuleProtocol::Udp,
            RuleProtocolArg::Icmp => RuleProtocol::Icmp,
            RuleProtocolArg::All => RuleProtocol::All,
        };
        let name = protocol.name();
        match (protocol.has_ports(), self.port) {
            (true, None) => Err(CallError::Usage(format!(
                "a {name} rule needs --port (one port such as 80, or a range such as 8000-8100)"
            ))),
            (false, Some(_)) => Err(CallError::Usage(format!(
                "--port applies to tcp and udp only; {name} rules have no ports"
            ))),
            (_, ports) => Ok(SecurityGroupRule { protocol, ports, source: self.source }),
        }
    }
}

/// `80` or `8000-8100`: ports 1 to 65535, the lower one first.
fn parse_ports(text: &str) -> Result<PortRange, String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) => Err("port 0 is not a port; ports are 1 to 65535".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{p:?} is not a port (1 to 65535)")),
        }
    };
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (port(min)?, port(max)?),
        None => {
            let single = port(text)?;
            (single, single)
        }
    };
    if min > max {
        return Err(format!("the range {min}-{max} is reversed; write {max}-{min}"));
    }
    Ok(PortRange { min, max })
}

/// A CIDR such as 198.51.100.0/24, or a bare address for that one host.
fn parse_source(text: &str) -> Result<Ipv4Net, String> {
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Ok(net);
    }
    match text.parse::<Ipv4Addr>() {
        Ok(host) => Ok(Ipv4Net::from(host)),
        Err(_) => Err(format!("{text:?} is not an IPv4 CIDR such as 198.51.100.0/24")),
    }
}

pub fn run(ctx: &Ctx, command: SecurityGroupCommand) -> Result<(), CallError> {
    match command {
        SecurityGroupCommand::Create { id, vpc } => {
            ctx.request(Request::CreateSecurityGroup { id, vpc })
        }
        SecurityGroupCommand::Delete { id } => ctx.request(Request::DeleteSecurityGroup { id }),
        SecurityGroupCommand::Authorize(args) => {
            let rule = args.rule()?;
            ctx.request(Request::AuthorizeSecurityGroup { id: args.id, rule })
        }
        SecurityGroupCommand::Revoke(args) => {
            let rule = args.rule()?;
            ctx.request(Request::RevokeSecurityGroup { id: args.id, rule })
        }
        SecurityGroupCommand::List => ctx.list(Kind::SecurityGroup),
        SecurityGroupCommand::Show { id } => ctx.show(Kind::SecurityGroup, &id),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, EXIT_USAGE};

    fn rule_of(args: &[&str]) -> Result<SecurityGroupRule, String> {
        let argv = ["eipctl", "security-group", "authorize", "sg-web"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| {
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{e}");
            e.to_string()
        })?;
        let super::super::Command::SecurityGroup(SecurityGroupCommand::Authorize(rule)) =
            cli.command
        else {
            panic!("parsed as another command");
        };
        rule.rule().map_err(|e| e.to_string())
    }

    #[test]
    fn rules_parse_from_the_command_line() {
        let web = rule_of(&["--protocol", "tcp", "--port", "80"]).unwrap();
        assert_eq!(web.to_string(), "tcp 80 from 0.0.0.0/0");
        let range =
            rule_of(&["--protocol", "tcp", "--port", "8000-8100", "--source", "198.51.100.0/24"])
                .unwrap();
        assert_eq!(range.ports, Some(PortRange { min: 8000, max: 8100 }));
        assert_eq!(range.to_string(), "tcp 8000-8100 from 198.51.100.0/24");
        let ping = rule_of(&["--protocol", "icmp"]).unwrap();
        assert_eq!(ping.to_string(), "icmp from 0.0.0.0/0");
        let inside = rule_of(&["--protocol", "all", "--source", "10.0.0.0/8"]).unwrap();
        assert_eq!(inside.to_string(), "all from 10.0.0.0/8");
        let host = rule_of(&["--protocol", "udp", "--port", "53", "--source", "192.0.2.1"]);
        assert_eq!(host.unwrap().to_string(), "udp 53 from 192.0.2.1/32");
    }

    #[test]
    fn bad_rules_are_usage_errors_that_say_what_is_wrong() {
        let error = rule_of(&["--protocol", "tcp", "--port", "0"]).unwrap_err();
        assert!(error.contains("port 0"), "{error}");
        let error = rule_of(&["--protocol", "tcp", "--port", "9-3"]).unwrap_err();
        assert!(error.contains("reversed"), "{error}");
        let error = rule_of(&["--protocol", "tcp", "--port", "70000"]).unwrap_err();
        assert!(error.contains("not a port"), "{error}");
        let error = rule_of(&["--protocol", "tcp", "--source", "10.0.0.0/33"]).unwrap_err();
        assert!(error.contains("not an IPv4 CIDR"), "{error}");
        let error = rule_of(&["--protocol", "sctp"]).unwrap_err();
        assert!(error.contains("sctp"), "{error}");
        // Checked after parsing; `main` answers them with EXIT_USAGE too.
        let error = rule_of(&["--protocol", "icmp", "--port", "80"]).unwrap_err();
        assert!(error.contains("tcp and udp only"), "{error}");
        let error = rule_of(&["--protocol", "udp"]).unwrap_err();
        assert!(error.contains("needs --port"), "{error}");
    }

    #[test]
    fn an_enis_group_is_named_or_cleared_but_not_both() {
        let parse = |args: &[&str]| {
            let argv = ["eipctl", "eni", "set-security-group"].iter().chain(args);
            Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.exit_code())
        };
        assert_eq!(parse(&["eni-1", "sg-web"]), Ok(()));
        assert_eq!(parse(&["eni-1", "--none"]), Ok(()));
        assert_eq!(parse(&["eni-1"]), Err(i32::from(EXIT_USAGE)));
        assert_eq!(parse(&["eni-1", "sg-web", "--none"]), Err(i32::from(EXIT_USAGE)));
    }
}
