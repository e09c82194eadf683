//! Why a request is refused: a stable code for scripts, the rule it enforces, and a message
//! that says what to do.

use serde::{Deserialize, Serialize};

use super::resources::Kind;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: String,
    pub rule: Option<String>,
    pub message: String,
}

impl Refusal {
    /// A refusal under `rule` (e.g. "R05"); the message ends naming the rule.
    pub fn rule(code: &str, rule: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            rule: Some(rule.into()),
            message: format!("{} ({rule})", message.into()),
        }
    }

    /// A refusal that no numbered rule covers (bad input, unknown resource, dependencies).
    pub fn plain(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), rule: None, message: message.into() }
    }

    /// This refusal of request `index` (from 0) of `total`, saying which it was when there
    /// were several.
    pub fn of_request(mut self, index: usize, total: usize) -> Self {
        if total > 1 {
            self.message = format!("request {} of {total}: {}", index + 1, self.message);
        }
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::plain(codes::INVALID_ARGUMENT, message)
    }

    pub fn not_found(kind: Kind, id: &str) -> Self {
        let code = format!("{}_NOT_FOUND", kind.name().to_ascii_uppercase());
        Self::plain(&code, format!("{} {id} does not exist", kind.name().replace('_', " ")))
    }

    pub fn exists(kind: Kind, id: &str) -> Self {
        let code = format!("{}_ALREADY_EXISTS", kind.name().to_ascii_uppercase());
        Self::plain(&code, format!("{} {id} already exists", kind.name().replace('_', " ")))
    }

    pub fn in_use(what: impl std::fmt::Display, by: impl std::fmt::Display) -> Self {
        Self::plain(
            codes::DEPENDENCY_VIOLATION,
            format!("{what} is still used by {by}; remove that first"),
        )
    }
}

/// The stable error codes (besides `<KIND>_NOT_FOUND` and `<KIND>_ALREADY_EXISTS`).
pub mod codes {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const DEPENDENCY_VIOLATION: &str = "DEPENDENCY_VIOLATION";
    pub const CIDR_CONFLICT: &str = "CIDR_CONFLICT";
    pub const EIP_ALREADY_ALLOCATED: &str = "EIP_ALREADY_ALLOCATED";
    pub const EIP_IN_USE: &str = "EIP_IN_USE";
    pub const EIP_ASSOCIATED: &str = "EIP_ASSOCIATED";
    pub const EIP_NOT_ASSOCIATED: &str = "EIP_NOT_ASSOCIATED";
    pub const EIP_USED_BY_NAT_GATEWAY: &str = "EIP_USED_BY_NAT_GATEWAY";
    pub const PRIVATE_IP_HAS_EIP: &str = "PRIVATE_IP_HAS_EIP";
    pub const REGION_MISMATCH: &str = "REGION_MISMATCH";
    pub const ZONE_MISMATCH: &str = "ZONE_MISMATCH";
    pub const INSTANCE_HAS_PUBLIC_IP: &str = "INSTANCE_HAS_PUBLIC_IP";
    pub const INSTANCE_NETWORK_CLASSIC: &str = "INSTANCE_NETWORK_CLASSIC";
    pub const INSTANCE_STATE: &str = "INSTANCE_STATE";
    pub const DNAT_CONFLICT: &str = "DNAT_CONFLICT";
    pub const ENI_KIND: &str = "ENI_KIND";
    pub const ENI_ATTACHED: &str = "ENI_ATTACHED";
    pub const ENI_NOT_ATTACHED: &str = "ENI_NOT_ATTACHED";
    pub const ENI_MODE_CONFLICT: &str = "ENI_MODE_CONFLICT";
    pub const ENI_EIP_LIMIT: &str = "ENI_EIP_LIMIT";
    pub const VPC_HAS_IPV4_GATEWAY: &str = "VPC_HAS_IPV4_GATEWAY";
    pub const IP_OUT_OF_RANGE: &str = "IP_OUT_OF_RANGE";
    pub const IP_IN_USE: &str = "IP_IN_USE";
    pub const IP_NOT_ASSIGNED: &str = "IP_NOT_ASSIGNED";
    pub const PRIMARY_IP: &str = "PRIMARY_IP";
    pub const NO_FREE_IP: &str = "NO_FREE_IP";
    pub const ENI_PRIVATE_IP_LIMIT: &str = "ENI_PRIVATE_IP_LIMIT";
    pub const ENI_IPV6_LIMIT: &str = "ENI_IPV6_LIMIT";
    pub const INSTANCE_ENI_LIMIT: &str = "INSTANCE_ENI_LIMIT";
    pub const NAT_GATEWAY_EIP_QUOTA: &str = "NAT_GATEWAY_EIP_QUOTA";
    pub const NETWORK_MISMATCH: &str = "NETWORK_MISMATCH";
    /// The security group is in another VPC than the ENI.
    pub const SECURITY_GROUP_VPC_MISMATCH: &str = "SECURITY_GROUP_VPC_MISMATCH";
    /// Every security group number is taken (`MAX_SECURITY_GROUPS`).
    pub const SECURITY_GROUP_LIMIT: &str = "SECURITY_GROUP_LIMIT";
    pub const SECURITY_GROUP_RULE_EXISTS: &str = "SECURITY_GROUP_RULE_EXISTS";
    pub const SECURITY_GROUP_RULE_NOT_FOUND: &str = "SECURITY_GROUP_RULE_NOT_FOUND";
    /// The group holds `MAX_SECURITY_GROUP_RULES` rules already.
    pub const SECURITY_GROUP_RULE_LIMIT: &str = "SECURITY_GROUP_RULE_LIMIT";
}
