//! The resources and the association rules, as pure functions over the state.
//!
//! A request is validated completely against the current [`State`] and turned into a
//! [`Change`]: the resource records to write or delete. Nothing is touched until the whole
//! request is known to be valid (R29); the store then commits the change in one transaction,
//! and the data plane follows the same change.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The region used when a request names none.
pub const DEFAULT_REGION: &str = "local";

/// An Elastic IP: a public IPv4 address allocated to the account (R04: an independent
/// resource, released only explicitly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip {
    pub address: Ipv4Addr,
    pub region: String,
    pub association: Option<Association>,
}

impl Eip {
    pub fn status(&self) -> EipStatus {
        match self.association {
            Some(_) => EipStatus::InUse,
            None => EipStatus::Available,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EipStatus {
    Available,
    InUse,
}

/// What an EIP is associated with: one private IPv4 address (R02), in a mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub private_ip: Ipv4Addr,
    pub mode: AssociationMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssociationMode {
    /// The gateway rewrites addresses (R09).
    Nat,
}

/// Everything the agent is the system of record for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub eips: BTreeMap<Ipv4Addr, Eip>,
}

/// A mutation requested by an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    AllocateEip { address: Ipv4Addr, region: Option<String> },
    AssociateEip { eip: Ipv4Addr, private_ip: Ipv4Addr, allow_reassociation: bool },
    UnassociateEip { eip: Ipv4Addr },
    ReleaseEip { eip: Ipv4Addr },
}

/// The records a valid request writes. Applying it to the state it was validated against
/// gives the state after the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub put_eips: Vec<Eip>,
    pub delete_eips: Vec<Ipv4Addr>,
}

impl Change {
    fn put(eip: Eip) -> Self {
        Self { put_eips: vec![eip], ..Self::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.put_eips.is_empty() && self.delete_eips.is_empty()
    }

    /// Every EIP address this change touches.
    pub fn touched_eips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.put_eips.iter().map(|e| e.address).chain(self.delete_eips.iter().copied())
    }
}

/// Why a request was refused. `code` is stable for scripts; `rule` names the rule of
/// RULES.md that the request would break, when it is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub rule: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is not well formed (an address that cannot be used as one).
    InvalidArgument,
    /// No EIP with that address is allocated.
    EipNotFound,
    /// The address is already allocated as an EIP.
    EipAlreadyAllocated,
    /// R05: the EIP is associated and the request did not allow reassociation.
    EipInUse,
    /// R04: an associated EIP cannot be released.
    EipAssociated,
    /// The EIP is not associated, so there is nothing to unassociate.
    EipNotAssociated,
    /// R02: the private IP already has another EIP.
    PrivateIpHasEip,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(json.as_str().ok_or(fmt::Error)?)
    }
}

fn refuse(code: ErrorCode, rule: Option<&str>, message: String) -> Refusal {
    let message = match rule {
        Some(rule) => format!("{message} ({rule})"),
        None => message,
    };
    Refusal { code, rule: rule.map(str::to_owned), message }
}

impl State {
    /// Validates `request` against this state. `Ok` holds everything the request changes;
    /// `Err` means nothing may change.
    pub fn plan(&self, request: &Request) -> Result<Change, Refusal> {
        match request {
            Request::AllocateEip { address, region } => self.plan_allocate(*address, region),
            Request::AssociateEip { eip, private_ip, allow_reassociation } => {
                self.plan_associate(*eip, *private_ip, *allow_reassociation)
            }
            Request::UnassociateEip { eip } => self.plan_unassociate(*eip),
            Request::ReleaseEip { eip } => self.plan_release(*eip),
        }
    }

    /// Applies a change produced by [`State::plan`] on this same state.
    pub fn apply(&mut self, change: &Change) {
        for address in &change.delete_eips {
            self.eips.remove(address);
        }
        for eip in &change.put_eips {
            self.eips.insert(eip.address, eip.clone());
        }
    }

    /// The EIP associated with `private_ip`, if any (R02 makes it unique).
    pub fn eip_of_private_ip(&self, private_ip: Ipv4Addr) -> Option<&Eip> {
        self.eips
            .values()
            .find(|eip| eip.association.as_ref().is_some_and(|a| a.private_ip == private_ip))
    }

    /// The EIP with this address, or the refusal that says it is not allocated.
    pub fn eip(&self, address: Ipv4Addr) -> Result<&Eip, Refusal> {
        self.eips.get(&address).ok_or_else(|| {
            refuse(
                ErrorCode::EipNotFound,
                None,
                format!("EIP {address} is not allocated; `eipctl eip list` shows the EIPs"),
            )
        })
    }

    fn plan_allocate(&self, address: Ipv4Addr, region: &Option<String>) -> Result<Change, Refusal> {
        check_unicast("EIP", address)?;
        if self.eips.contains_key(&address) {
            return Err(refuse(
                ErrorCode::EipAlreadyAllocated,
                None,
                format!("EIP {address} is already allocated"),
            ));
        }
        if let Some(owner) = self.eip_of_private_ip(address) {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                None,
                format!("{address} is a private IP associated with EIP {}", owner.address),
            ));
        }
        let region = match region.as_deref() {
            None => DEFAULT_REGION.to_owned(),
            Some(r) if is_valid_region(r) => r.to_owned(),
            Some(r) => {
                return Err(refuse(
                    ErrorCode::InvalidArgument,
                    None,
                    format!("region {r:?} must be 1 to 64 of a-z, 0-9 and '-'"),
                ));
            }
        };
        Ok(Change::put(Eip { address, region, association: None }))
    }

    fn plan_associate(
        &self,
        address: Ipv4Addr,
        private_ip: Ipv4Addr,
        allow_reassociation: bool,
    ) -> Result<Change, Refusal> {
        let eip = self.eip(address)?;
        check_unicast("private IP", private_ip)?;
        if self.eips.contains_key(&private_ip) {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                None,
                format!("{private_ip} is an EIP, not a private IP"),
            ));
        }
        let wanted = Association { private_ip, mode: AssociationMode::Nat };
        if eip.association.as_ref() == Some(&wanted) {
            // Already exactly so: nothing to do, and nothing refused.
            return Ok(Change::default());
        }
        // R02: a private IP has at most one EIP.
        if let Some(other) = self.eip_of_private_ip(private_ip) {
            return Err(refuse(
                ErrorCode::PrivateIpHasEip,
                Some("R02"),
                format!(
                    "private IP {private_ip} already has EIP {}; unassociate it first",
                    other.address
                ),
            ));
        }
        // R01/R05: an EIP serves one resource; moving it must be asked for.
        if let Some(current) = &eip.association
            && !allow_reassociation
        {
            return Err(refuse(
                ErrorCode::EipInUse,
                Some("R05"),
                format!(
                    "EIP {address} is associated with {}; pass --allow-reassociation to move it",
                    current.private_ip
                ),
            ));
        }
        Ok(Change::put(Eip { association: Some(wanted), ..eip.clone() }))
    }

    fn plan_unassociate(&self, address: Ipv4Addr) -> Result<Change, Refusal> {
        let eip = self.eip(address)?;
        if eip.association.is_none() {
            return Err(refuse(
                ErrorCode::EipNotAssociated,
                None,
                format!("EIP {address} is not associated"),
            ));
        }
        Ok(Change::put(Eip { association: None, ..eip.clone() }))
    }

    fn plan_release(&self, address: Ipv4Addr) -> Result<Change, Refusal> {
        let eip = self.eip(address)?;
        if let Some(association) = &eip.association {
            return Err(refuse(
                ErrorCode::EipAssociated,
                Some("R04"),
                format!(
                    "EIP {address} is associated with {}; unassociate it before releasing it",
                    association.private_ip
                ),
            ));
        }
        Ok(Change { delete_eips: vec![address], ..Change::default() })
    }
}

fn check_unicast(what: &str, address: Ipv4Addr) -> Result<(), Refusal> {
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_link_local()
        || address.octets()[0] >= 240
    {
        return Err(refuse(
            ErrorCode::InvalidArgument,
            None,
            format!("{what} {address} is not a unicast address that can be translated"),
        ));
    }
    Ok(())
}

fn is_valid_region(region: &str) -> bool {
    (1..=64).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const EIP: &str = "203.0.113.10";
    const EIP2: &str = "203.0.113.11";
    const VM: &str = "10.0.1.10";
    const VM2: &str = "10.0.1.11";

    /// Plans and applies, panicking with the refusal if there is one.
    #[track_caller]
    fn run(state: &mut State, request: Request) {
        let change = state.plan(&request).unwrap_or_else(|r| panic!("{request:?} refused: {r}"));
        state.apply(&change);
    }

    /// Asserts a refusal with `code` and that planning did not alter the state.
    #[track_caller]
    fn refused(state: &State, request: Request, code: ErrorCode) -> Refusal {
        let before = state.clone();
        let refusal = match state.plan(&request) {
            Ok(change) => panic!("{request:?} was allowed ({change:?}), expected {code}"),
            Err(refusal) => refusal,
        };
        assert_eq!(refusal.code, code, "{refusal}");
        assert_eq!(*state, before);
        refusal
    }

    fn allocate(address: &str) -> Request {
        Request::AllocateEip { address: ip(address), region: None }
    }

    fn associate(eip: &str, private: &str, allow_reassociation: bool) -> Request {
        Request::AssociateEip { eip: ip(eip), private_ip: ip(private), allow_reassociation }
    }

    fn with_associated() -> State {
        let mut state = State::default();
        run(&mut state, allocate(EIP));
        run(&mut state, associate(EIP, VM, false));
        state
    }

    #[test]
    fn allocate_makes_an_available_eip_in_the_default_region() {
        let mut state = State::default();
        run(&mut state, allocate(EIP));
        let eip = &state.eips[&ip(EIP)];
        assert_eq!(eip.status(), EipStatus::Available);
        assert_eq!(eip.region, DEFAULT_REGION);
    }

    #[test]
    fn allocate_twice_is_refused() {
        let mut state = State::default();
        run(&mut state, allocate(EIP));
        refused(&state, allocate(EIP), ErrorCode::EipAlreadyAllocated);
    }

    #[test]
    fn unusable_addresses_are_refused() {
        let state = State::default();
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1"] {
            refused(&state, allocate(bad), ErrorCode::InvalidArgument);
        }
        refused(
            &state,
            Request::AllocateEip { address: ip(EIP), region: Some("Bad Region".into()) },
            ErrorCode::InvalidArgument,
        );
    }

    #[test]
    fn associate_unknown_eip_is_refused() {
        refused(&State::default(), associate(EIP, VM, false), ErrorCode::EipNotFound);
    }

    #[test]
    fn r01_an_eip_serves_one_private_ip_at_a_time() {
        let mut state = with_associated();
        run(&mut state, associate(EIP, VM2, true));
        let association = state.eips[&ip(EIP)].association.clone().unwrap();
        assert_eq!(association.private_ip, ip(VM2));
        assert!(state.eip_of_private_ip(ip(VM)).is_none(), "the old private IP lost the EIP");
    }

    #[test]
    fn r02_a_private_ip_has_at_most_one_eip() {
        let mut state = with_associated();
        run(&mut state, allocate(EIP2));
        let refusal = refused(&state, associate(EIP2, VM, true), ErrorCode::PrivateIpHasEip);
        assert_eq!(refusal.rule.as_deref(), Some("R02"));
        // Allowed: a different private IP.
        run(&mut state, associate(EIP2, VM2, false));
        assert_eq!(state.eip_of_private_ip(ip(VM2)).unwrap().address, ip(EIP2));
    }

    #[test]
    fn r02_an_eip_address_is_not_a_private_ip() {
        let mut state = with_associated();
        run(&mut state, allocate(EIP2));
        refused(&state, associate(EIP, EIP2, true), ErrorCode::InvalidArgument);
        refused(&state, allocate(VM), ErrorCode::InvalidArgument);
    }

    #[test]
    fn r04_an_associated_eip_cannot_be_released() {
        let mut state = with_associated();
        let refusal =
            refused(&state, Request::ReleaseEip { eip: ip(EIP) }, ErrorCode::EipAssociated);
        assert_eq!(refusal.rule.as_deref(), Some("R04"));
        run(&mut state, Request::UnassociateEip { eip: ip(EIP) });
        assert_eq!(state.eips[&ip(EIP)].status(), EipStatus::Available, "EIP kept, available");
        run(&mut state, Request::ReleaseEip { eip: ip(EIP) });
        assert!(state.eips.is_empty());
    }

    #[test]
    fn r05_moving_an_association_needs_allow_reassociation() {
        let mut state = with_associated();
        let refusal = refused(&state, associate(EIP, VM2, false), ErrorCode::EipInUse);
        assert_eq!(refusal.rule.as_deref(), Some("R05"));
        assert!(refusal.message.contains("--allow-reassociation"), "{}", refusal.message);
        run(&mut state, associate(EIP, VM2, true));
        assert_eq!(state.eip_of_private_ip(ip(VM2)).unwrap().address, ip(EIP));
    }

    #[test]
    fn repeating_the_same_association_changes_nothing() {
        let state = with_associated();
        assert!(state.plan(&associate(EIP, VM, false)).unwrap().is_empty());
    }

    #[test]
    fn unassociate_needs_an_association() {
        let mut state = State::default();
        run(&mut state, allocate(EIP));
        refused(&state, Request::UnassociateEip { eip: ip(EIP) }, ErrorCode::EipNotAssociated);
    }

    #[test]
    fn error_codes_serialize_as_stable_strings() {
        assert_eq!(ErrorCode::EipInUse.to_string(), "EIP_IN_USE");
        assert_eq!(ErrorCode::PrivateIpHasEip.to_string(), "PRIVATE_IP_HAS_EIP");
    }
}
