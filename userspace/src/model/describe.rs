//! R30: every resource can be described with its state (the seeds' `Describe*`).

use serde_json::{Value, json};

use super::{resources::*, state::State};

/// The resource as JSON, with the state derived from the rest: an EIP's status and what it
/// serves; an instance's EIP and ENIs; an ENI's attachment and EIPs; a NAT gateway's EIPs;
/// the ENIs a security group filters.
pub fn describe(state: &State, key: &Key) -> Option<Value> {
    let resource = state.get(key)?;
    let mut value = serde_json::to_value(&resource).ok()?;
    let extra = match &resource {
        Resource::Eip(eip) => {
            let a = eip.association.as_ref();
            let (resource_type, resource_id) = match a {
                Some(Association::Instance { instance, .. }) => {
                    (Some("instance"), Some(instance.clone()))
                }
                Some(
                    Association::Eni { eni, .. }
                    | Association::CutThrough { eni }
                    | Association::MultiEip { eni },
                ) => (Some("eni"), Some(eni.clone())),
                Some(Association::NatGateway { nat_gateway }) => {
                    (Some("nat_gateway"), Some(nat_gateway.clone()))
                }
                None => (None, None),
            };
            json!({
                "status": if a.is_some() { "in_use" } else { "available" },
                "resource_type": resource_type,
                "resource_id": resource_id,
                "private_ip": a.and_then(Association::private_ip),
                "mode": a.and_then(Association::mode),
            })
        }
        Resource::Instance(instance) => {
            let primary = instance.primary_eni.as_deref().and_then(|e| state.enis.get(e));
            json!({
                "private_ip": primary.map(|e| e.primary_ip),
                "eip": state.eip_of_instance(&instance.id).map(|e| e.address),
                "enis": state.enis_of_instance(&instance.id).map(|e| e.id.clone()).collect::<Vec<_>>(),
            })
        }
        Resource::Eni(eni) => json!({
            "status": if eni.instance.is_some() { "in_use" } else { "available" },
            "eips": state.eips_of_eni(&eni.id).map(|e| e.address).collect::<Vec<_>>(),
        }),
        Resource::NatGateway(gateway) => json!({
            "eips": state.eips_of_nat_gateway(&gateway.id).map(|e| e.address).collect::<Vec<_>>(),
        }),
        Resource::SecurityGroup(group) => json!({
            "enis": state.enis_of_security_group(&group.id).map(|e| e.id.clone()).collect::<Vec<_>>(),
        }),
        _ => json!({}),
    };
    if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), extra) {
        object.extend(extra);
    }
    Some(value)
}
