//! Every mutation an operator can ask for. The API takes these as JSON (`"op": ...`), and
//! `eipctl apply` takes a list of them.

use std::{
    borrow::Cow,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, EnumAccess, IntoDeserializer, MapAccess, VariantAccess, Visitor},
};

use super::resources::{
    AssociationMode, DnatMapping, Id, InstanceState, NetworkType, SecurityGroupRule, SnatSource,
};

/// Defines [`Request`] and its twin [`Fields`] from one list of variants, so that the two
/// cannot drift apart.
macro_rules! requests {
    ($(
        $(#[$variant_meta:meta])*
        $variant:ident { $( $(#[$field_meta:meta])* $field:ident : $type:ty ),* $(,)? }
    ),* $(,)?) => {
        /// Written as `{"op": "allocate_eip", "address": ...}`, and read the same way (its
        /// `Deserialize` is below the list).
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Request {
            $( $(#[$variant_meta])* $variant { $( $(#[$field_meta])* $field: $type ),* } ),*
        }

        /// A request's fields under the variant its `op` names: what serde reads field by
        /// field, without first buffering the whole object to find its tag.
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Fields {
            $( $variant { $( $(#[$field_meta])* $field: $type ),* } ),*
        }

        impl From<Fields> for Request {
            fn from(fields: Fields) -> Self {
                match fields {
                    $( Fields::$variant { $($field),* } => Request::$variant { $($field),* } ),*
                }
            }
        }
    };
}

requests! {
    CreateRegion {
        id: Id,
    },
    DeleteRegion {
        id: Id,
    },
    CreateVpc {
        id: Id,
        region: Id,
        cidr: Ipv4Net,
        #[serde(default, skip_serializing_if = "is_default")]
        ipv6_cidr: Option<Ipv6Net>,
        #[serde(default, skip_serializing_if = "is_default")]
        ipv4_gateway: bool,
    },
    DeleteVpc {
        id: Id,
    },
    CreateVswitch {
        id: Id,
        vpc: Id,
        zone: String,
        cidr: Ipv4Net,
        #[serde(default, skip_serializing_if = "is_default")]
        ipv6_cidr: Option<Ipv6Net>,
    },
    DeleteVswitch {
        id: Id,
    },
    CreateInstanceType {
        id: Id,
        max_enis: u32,
        max_private_ipv4_per_eni: u32,
        max_ipv6_per_eni: u32,
    },
    DeleteInstanceType {
        id: Id,
    },
    /// A VPC instance gets its primary ENI in `vswitch`, with `private_ip` or the first free
    /// address (R14), filtered by `security_group` (of the vSwitch's VPC) when one is named.
    /// A classic instance has no ENI.
    CreateInstance {
        id: Id,
        region: Id,
        zone: String,
        instance_type: Id,
        #[serde(default = "default_network")]
        network: NetworkType,
        #[serde(default, skip_serializing_if = "is_default")]
        vswitch: Option<Id>,
        #[serde(default, skip_serializing_if = "is_default")]
        private_ip: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "is_default")]
        security_group: Option<Id>,
        #[serde(default = "default_state")]
        state: InstanceState,
        #[serde(default, skip_serializing_if = "is_default")]
        fixed_public_ip: Option<Ipv4Addr>,
    },
    StartInstance {
        id: Id,
    },
    StopInstance {
        id: Id,
    },
    /// Deletes the instance and its primary ENI; secondary ENIs are detached and kept, EIPs
    /// return to `available` (R04).
    ReleaseInstance {
        id: Id,
    },
    /// A secondary, detached ENI; `security_group` (of the vSwitch's VPC) filters it when
    /// named.
    CreateEni {
        id: Id,
        vswitch: Id,
        #[serde(default, skip_serializing_if = "is_default")]
        primary_ip: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "is_default")]
        security_group: Option<Id>,
    },
    AttachEni {
        eni: Id,
        instance: Id,
    },
    DetachEni {
        eni: Id,
    },
    DeleteEni {
        eni: Id,
    },
    /// Filters the ENI with a security group of its VPC, or (`None`) no longer filters it.
    SetEniSecurityGroup {
        eni: Id,
        #[serde(default, skip_serializing_if = "is_default")]
        security_group: Option<Id>,
    },
    /// Assigns the listed addresses, plus `count` more picked from the vSwitch; all or none
    /// (R16).
    AssignPrivateIps {
        eni: Id,
        #[serde(default, skip_serializing_if = "is_default")]
        ips: Vec<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "is_default")]
        count: u32,
        #[serde(default, skip_serializing_if = "is_default")]
        allow_reassignment: bool,
    },
    UnassignPrivateIps {
        eni: Id,
        ips: Vec<Ipv4Addr>,
    },
    AssignIpv6 {
        eni: Id,
        ips: Vec<Ipv6Addr>,
    },
    UnassignIpv6 {
        eni: Id,
        ips: Vec<Ipv6Addr>,
    },
    /// Enables or disables public bandwidth for an IPv6 address (R23).
    SetIpv6Public {
        ip: Ipv6Addr,
        enabled: bool,
    },
    AllocateEip {
        address: Ipv4Addr,
        #[serde(default, skip_serializing_if = "is_default")]
        region: Option<Id>,
        #[serde(default, skip_serializing_if = "is_default")]
        bandwidth_mbps: Option<u32>,
    },
    SetEipBandwidth {
        eip: Ipv4Addr,
        bandwidth_mbps: Option<u32>,
    },
    ReleaseEip {
        eip: Ipv4Addr,
    },
    /// Exactly one target: `instance` (R06), or `eni` (with `private_ip` in NAT mode, or a
    /// visible `mode`), or a bare `private_ip` (the ENI that holds it, NAT mode).
    AssociateEip {
        eip: Ipv4Addr,
        #[serde(default, skip_serializing_if = "is_default")]
        instance: Option<Id>,
        #[serde(default, skip_serializing_if = "is_default")]
        eni: Option<Id>,
        #[serde(default, skip_serializing_if = "is_default")]
        private_ip: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "is_default")]
        mode: Option<AssociationMode>,
        #[serde(default, skip_serializing_if = "is_default")]
        allow_reassociation: bool,
    },
    UnassociateEip {
        eip: Ipv4Addr,
    },
    CreateNatGateway {
        id: Id,
        vpc: Id,
        #[serde(default, skip_serializing_if = "is_default")]
        eip_quota: Option<u32>,
    },
    DeleteNatGateway {
        id: Id,
    },
    AddNatGatewayEip {
        nat_gateway: Id,
        eip: Ipv4Addr,
    },
    RemoveNatGatewayEip {
        nat_gateway: Id,
        eip: Ipv4Addr,
    },
    AddSnatEntry {
        nat_gateway: Id,
        id: Id,
        source: SnatSource,
        eips: Vec<Ipv4Addr>,
    },
    RemoveSnatEntry {
        nat_gateway: Id,
        id: Id,
    },
    AddDnatEntry {
        nat_gateway: Id,
        id: Id,
        eip: Ipv4Addr,
        mapping: DnatMapping,
    },
    RemoveDnatEntry {
        nat_gateway: Id,
        id: Id,
    },
    /// A security group of a VPC, with no rules yet: it admits nothing inbound.
    CreateSecurityGroup {
        id: Id,
        vpc: Id,
    },
    /// Deletes a security group that no ENI uses.
    DeleteSecurityGroup {
        id: Id,
    },
    /// Adds an inbound rule.
    AuthorizeSecurityGroup {
        id: Id,
        rule: SecurityGroupRule,
    },
    /// Removes an inbound rule.
    RevokeSecurityGroup {
        id: Id,
        rule: SecurityGroupRule,
    },
}

/// A field left at its default is left out of what is written: a bulk document is then
/// about as long as one written by hand, and reads back the same.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_network() -> NetworkType {
    NetworkType::Vpc
}

fn default_state() -> InstanceState {
    InstanceState::Running
}

/// Reads `{"op": ..., <fields>}`. When `op` comes first, as `eipctl` and [`Request`]'s own
/// `Serialize` write it, the fields are read straight into their variant; serde's derive for
/// an internally tagged enum would buffer every object first, whatever the order, which
/// was most of the time spent parsing a bulk apply. Otherwise the object is buffered and
/// read the same way.
impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a request: an object with \"op\" and its fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        match map.next_key::<FirstKey>()? {
            Some(FirstKey::Op) => {
                let Text(op) = map.next_value()?;
                Fields::deserialize(Tagged { op, fields: map }).map(Request::from)
            }
            Some(FirstKey::Other(key)) => {
                let mut fields = vec![(key, map.next_value::<serde_json::Value>()?)];
                while let Some((key, value)) = map.next_entry::<String, _>()? {
                    if fields.iter().any(|(seen, _)| *seen == key) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    fields.push((key, value));
                }
                let Some(at) = fields.iter().position(|(key, _)| key == "op") else {
                    return Err(de::Error::missing_field("op"));
                };
                let serde_json::Value::String(op) = fields.swap_remove(at).1 else {
                    return Err(de::Error::custom("\"op\" is not a string"));
                };
                let fields = de::value::MapDeserializer::new(fields.into_iter());
                Fields::deserialize(Tagged { op: Cow::Owned(op), fields })
                    .map(Request::from)
                    .map_err(de::Error::custom)
            }
            None => Err(de::Error::missing_field("op")),
        }
    }
}

/// An object's first key: `op`, or another that the object is then buffered from.
enum FirstKey {
    Op,
    Other(String),
}

impl<'de> Deserialize<'de> for FirstKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(key) = Text::deserialize(deserializer)?;
        Ok(if key == "op" { FirstKey::Op } else { FirstKey::Other(key.into_owned()) })
    }
}

/// A string, borrowed from the input where it can be: most ops are read without a copy.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Presents the rest of an object, after its `op`, as [`Fields`]' variant `op`.
struct Tagged<'de, M> {
    op: Cow<'de, str>,
    fields: M,
}

impl<'de, M: MapAccess<'de>> Deserializer<'de> for Tagged<'de, M> {
    type Error = M::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, M::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, M: MapAccess<'de>> EnumAccess<'de> for Tagged<'de, M> {
    type Error = M::Error;
    type Variant = FieldsOf<M>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, FieldsOf<M>), M::Error> {
        let variant = seed.deserialize(self.op.into_deserializer())?;
        Ok((variant, FieldsOf(self.fields)))
    }
}

/// The fields of a variant: every request is a struct variant.
struct FieldsOf<M>(M);

impl<'de, M: MapAccess<'de>> VariantAccess<'de> for FieldsOf<M> {
    type Error = M::Error;

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, M::Error> {
        visitor.visit_map(self.0)
    }

    fn unit_variant(self) -> Result<(), M::Error> {
        Err(not_a_struct())
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        _seed: S,
    ) -> Result<S::Value, M::Error> {
        Err(not_a_struct())
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, M::Error> {
        Err(not_a_struct())
    }
}

fn not_a_struct<E: de::Error>() -> E {
    E::custom("every request is an object of named fields")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Request, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn op_first_or_later_reads_the_same_request() {
        let first = r#"{"op": "associate_eip", "eip": "203.0.113.10", "eni": "eni-1",
                        "private_ip": "10.0.1.10"}"#;
        let last = r#"{"eip": "203.0.113.10", "eni": "eni-1", "private_ip": "10.0.1.10",
                       "op": "associate_eip"}"#;
        let expected = Request::AssociateEip {
            eip: "203.0.113.10".parse().unwrap(),
            instance: None,
            eni: Some("eni-1".into()),
            private_ip: Some("10.0.1.10".parse().unwrap()),
            mode: None,
            allow_reassociation: false,
        };
        assert_eq!(parse(first).unwrap(), expected);
        assert_eq!(parse(last).unwrap(), expected);
        // Defaults fill what is left out, both ways.
        let expected = Request::CreateInstance {
            id: "i-1".into(),
            region: "r1".into(),
            zone: "z1".into(),
            instance_type: "t1".into(),
            network: NetworkType::Vpc,
            vswitch: None,
            private_ip: None,
            security_group: None,
            state: InstanceState::Running,
            fixed_public_ip: None,
        };
        let first = r#"{"op": "create_instance", "id": "i-1", "region": "r1", "zone": "z1",
                        "instance_type": "t1"}"#;
        let middle = r#"{"id": "i-1", "region": "r1", "op": "create_instance", "zone": "z1",
                         "instance_type": "t1"}"#;
        assert_eq!(parse(first).unwrap(), expected);
        assert_eq!(parse(middle).unwrap(), expected);
        // An escaped op cannot be borrowed from the input.
        assert_eq!(
            parse(r#"{"op": "create_\u0072egion", "id": "r1"}"#).unwrap(),
            Request::CreateRegion { id: "r1".into() }
        );
    }

    #[test]
    fn what_is_written_reads_back_with_op_first() {
        let requests = [
            Request::CreateRegion { id: "r1".into() },
            Request::AssignPrivateIps {
                eni: "eni-1".into(),
                ips: vec!["10.0.1.11".parse().unwrap()],
                count: 2,
                allow_reassignment: true,
            },
            Request::SetEipBandwidth { eip: "203.0.113.10".parse().unwrap(), bandwidth_mbps: None },
        ];
        for request in requests {
            let json = serde_json::to_string(&request).unwrap();
            assert!(json.starts_with(r#"{"op":"#), "{json}");
            assert_eq!(parse(&json).unwrap(), request);
        }
    }

    #[test]
    fn a_bad_request_is_refused_with_what_is_wrong() {
        for (json, says) in [
            (r#"{"op": "no_such_op", "id": "r1"}"#, "unknown variant `no_such_op`"),
            (r#"{"id": "r1", "op": "no_such_op"}"#, "unknown variant `no_such_op`"),
            (r#"{"op": "create_region", "id": "r1", "colour": 1}"#, "unknown field `colour`"),
            (r#"{"colour": 1, "op": "create_region", "id": "r1"}"#, "unknown field `colour`"),
            (r#"{"op": "allocate_eip"}"#, "missing field `address`"),
            (r#"{"region": "r1", "op": "allocate_eip"}"#, "missing field `address`"),
            (r#"{"address": "203.0.113.10"}"#, "missing field `op`"),
            (r#"{}"#, "missing field `op`"),
            (r#"{"op": 7, "id": "r1"}"#, "invalid type: integer `7`, expected a string"),
            (r#"{"id": "r1", "op": 7}"#, "\"op\" is not a string"),
            (r#"{"id": "r1", "id": "r2", "op": "create_region"}"#, "duplicate field `id`"),
            (r#"{"op": "create_region", "id": "r1", "id": "r2"}"#, "duplicate field `id`"),
            (r#"{"op": "allocate_eip", "address": "not-an-ip"}"#, "invalid IPv4 address syntax"),
            (r#"["create_region", "r1"]"#, "expected a request"),
        ] {
            let error = parse(json).expect_err(json);
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
