//! Security groups: a VPC's inbound filters, their rules, and the ENIs they filter.

use eipgw_common::{MAX_SECURITY_GROUP_RULES, MAX_SECURITY_GROUPS};

use super::{Executed, check_id, eni, vpc, vswitch};
use crate::model::{
    refusal::{Refusal, codes},
    resources::*,
    state::State,
    txn::Txn,
};

pub fn create(txn: &mut Txn, id: &str, vpc_id: &str) -> Result<Executed, Refusal> {
    check_id(Kind::SecurityGroup, id)?;
    let state = txn.state();
    if state.security_groups.contains_key(id) {
        return Err(Refusal::exists(Kind::SecurityGroup, id));
    }
    vpc(state, vpc_id)?;
    let number = free_number(state)?;
    txn.put(Resource::SecurityGroup(SecurityGroup {
        id: id.into(),
        vpc: vpc_id.into(),
        number,
        rules: Vec::new(),
    }));
    Ok(Executed::about(Kind::SecurityGroup, id))
}

/// The smallest number no group holds: numbers are reused after a delete, so they stay
/// within the data plane's map however many groups come and go.
fn free_number(state: &State) -> Result<u32, Refusal> {
    let taken: std::collections::BTreeSet<u32> =
        state.security_groups.values().map(|g| g.number).collect();
    (1..=MAX_SECURITY_GROUPS).find(|n| !taken.contains(n)).ok_or_else(|| {
        Refusal::plain(
            codes::SECURITY_GROUP_LIMIT,
            format!("all {MAX_SECURITY_GROUPS} security groups exist; delete one first"),
        )
    })
}

pub fn delete(txn: &mut Txn, id: &str) -> Result<Executed, Refusal> {
    let state = txn.state();
    security_group(state, id)?;
    if let Some(eni) = state.enis_of_security_group(id).next() {
        return Err(Refusal::in_use(format!("security group {id}"), format!("ENI {}", eni.id)));
    }
    txn.remove(&Key::new(Kind::SecurityGroup, id));
    Ok(Executed::default())
}

pub fn authorize(txn: &mut Txn, id: &str, rule: &SecurityGroupRule) -> Result<Executed, Refusal> {
    let mut group = security_group(txn.state(), id)?.clone();
    let rule = checked_rule(rule)?;
    if group.rules.contains(&rule) {
        return Err(Refusal::plain(
            codes::SECURITY_GROUP_RULE_EXISTS,
            format!("security group {id} already has the rule `{rule}`"),
        ));
    }
    if group.rules.len() >= MAX_SECURITY_GROUP_RULES {
        return Err(Refusal::plain(
            codes::SECURITY_GROUP_RULE_LIMIT,
            format!(
                "security group {id} has {MAX_SECURITY_GROUP_RULES} rules, the most it can \
                 hold; revoke one, or widen one to cover more"
            ),
        ));
    }
    group.rules.push(rule);
    txn.put(Resource::SecurityGroup(group));
    Ok(Executed::about(Kind::SecurityGroup, id))
}

pub fn revoke(txn: &mut Txn, id: &str, rule: &SecurityGroupRule) -> Result<Executed, Refusal> {
    let mut group = security_group(txn.state(), id)?.clone();
    let rule = checked_rule(rule)?;
    let Some(position) = group.rules.iter().position(|r| *r == rule) else {
        return Err(Refusal::plain(
            codes::SECURITY_GROUP_RULE_NOT_FOUND,
            format!(
                "security group {id} has no rule `{rule}`; `eipctl security-group show {id}` \
                 lists its rules"
            ),
        ));
    };
    group.rules.remove(position);
    txn.put(Resource::SecurityGroup(group));
    Ok(Executed::about(Kind::SecurityGroup, id))
}

/// Filters an ENI (attached or not) with a group of its VPC, or stops filtering it.
pub fn set_eni(txn: &mut Txn, eni_id: &str, group: Option<&str>) -> Result<Executed, Refusal> {
    let state = txn.state();
    let mut eni = eni(state, eni_id)?.clone();
    if let Some(group) = group {
        check_fits_vswitch(state, group, &eni.vswitch)?;
    }
    eni.security_group = group.map(Into::into);
    txn.put(Resource::Eni(eni));
    Ok(Executed::about(Kind::Eni, eni_id))
}

/// A security group may filter an ENI of `vswitch_id`: it exists, in the vSwitch's VPC.
pub(super) fn check_fits_vswitch(
    state: &State,
    group_id: &str,
    vswitch_id: &str,
) -> Result<(), Refusal> {
    let group = security_group(state, group_id)?;
    let vswitch = vswitch(state, vswitch_id)?;
    if group.vpc != vswitch.vpc {
        return Err(Refusal::plain(
            codes::SECURITY_GROUP_VPC_MISMATCH,
            format!(
                "security group {group_id} is in VPC {}, vSwitch {vswitch_id} in VPC {}; \
                 use a group of VPC {}",
                group.vpc, vswitch.vpc, vswitch.vpc
            ),
        ));
    }
    Ok(())
}

/// The rule as it is stored: ports only where the protocol has them, each a valid range,
/// and the source truncated to its network (so two spellings of one rule are one rule).
fn checked_rule(rule: &SecurityGroupRule) -> Result<SecurityGroupRule, Refusal> {
    let protocol = rule.protocol.name();
    match (rule.protocol.has_ports(), rule.ports) {
        (true, None) => {
            return Err(Refusal::invalid(format!(
                "a {protocol} rule names its ports: one port or a range within 1-65535"
            )));
        }
        (true, Some(ports)) if ports.min == 0 => {
            return Err(Refusal::invalid(format!(
                "port 0 is not a {protocol} port; ports are 1 to 65535"
            )));
        }
        (true, Some(ports)) if ports.min > ports.max => {
            return Err(Refusal::invalid(format!(
                "port range {}-{} is reversed; write the lower port first",
                ports.min, ports.max
            )));
        }
        (false, Some(_)) => {
            return Err(Refusal::invalid(format!(
                "a rule for {protocol} has no ports; ports apply to tcp and udp only"
            )));
        }
        _ => {}
    }
    Ok(SecurityGroupRule { source: rule.source.trunc(), ..*rule })
}

fn security_group<'s>(state: &'s State, id: &str) -> Result<&'s SecurityGroup, Refusal> {
    state.security_groups.get(id).ok_or_else(|| Refusal::not_found(Kind::SecurityGroup, id))
}
