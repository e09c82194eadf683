//! The state: every resource by kind, plus indexes derived from them so that rules stay
//! cheap with a million mappings. Every change goes through [`State::put`] and
//! [`State::remove`], which keep the indexes right.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
};

use super::resources::*;
use crate::sorted::RisingMap;

#[derive(Clone, Debug, Default)]
pub struct State {
    pub regions: BTreeMap<Id, Region>,
    pub vpcs: BTreeMap<Id, Vpc>,
    pub vswitches: BTreeMap<Id, VSwitch>,
    pub instance_types: BTreeMap<Id, InstanceType>,
    pub instances: BTreeMap<Id, Instance>,
    pub enis: BTreeMap<Id, Eni>,
    /// By address. A big change allocates and associates a pool in rising order of
    /// address, which a [`RisingMap`] takes without searching a tree of a million.
    pub eips: RisingMap<Ipv4Addr, Eip>,
    pub nat_gateways: BTreeMap<Id, NatGateway>,
    pub security_groups: BTreeMap<Id, SecurityGroup>,
    index: Index,
}

/// An index by IPv4 address, of a million addresses. They come in runs (a subnet's, a
/// pool's), created and then associated in rising order: a [`RisingMap`] takes each next
/// one without hashing or searching, and finds the next asked for just past the last. A
/// hash table spent 15-20% of a big apply's rules hashing, probing and growing; a tree
/// searched from its root for each.
type AddrMap<V> = RisingMap<Ipv4Addr, V>;

/// Derived lookups; never stored.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Private IPv4 → the ENI that holds it.
    ipv4_owner: AddrMap<Id>,
    /// IPv6 → the ENI that holds it.
    ipv6_owner: BTreeMap<Ipv6Addr, Id>,
    /// Private IPv4 → its NAT-mode EIP (R02).
    eip_of_private: AddrMap<Ipv4Addr>,
    /// ENI → EIPs landing on it, any mode. Hashed: every association looks its ENI up
    /// here twice, and a search of a tree of ENI names compared a dozen strings each time;
    /// only each ENI's own set is walked in order.
    eips_of_eni: HashMap<Id, BTreeSet<Ipv4Addr>>,
    /// Instance → its one direct EIP (R06).
    eip_of_instance: BTreeMap<Id, Ipv4Addr>,
    /// Instance → attached ENIs.
    enis_of_instance: BTreeMap<Id, BTreeSet<Id>>,
    /// NAT gateway → its EIPs.
    eips_of_nat_gateway: BTreeMap<Id, BTreeSet<Ipv4Addr>>,
    /// Security group → the ENIs it filters.
    enis_of_security_group: BTreeMap<Id, BTreeSet<Id>>,
    /// Fixed public IP → the instance that has it (R22): allocating an EIP asks, and a
    /// walk over every instance made allocating many EIPs quadratic.
    fixed_public_ips: BTreeMap<Ipv4Addr, Id>,
}

impl Index {
    /// Adds or removes the entries of one EIP's association.
    fn association(&mut self, eip: Ipv4Addr, association: &Association, add: bool) {
        if let Some(private_ip) = association.private_ip() {
            if add {
                self.eip_of_private.insert(private_ip, eip);
            } else {
                remove_if_addr(&mut self.eip_of_private, private_ip, &eip);
            }
        }
        if let Some(eni) = association.eni() {
            if add {
                // Most ENIs have their set already: no owned key to make for them.
                match self.eips_of_eni.get_mut(eni) {
                    Some(eips) => {
                        eips.insert(eip);
                    }
                    None => {
                        self.eips_of_eni.insert(Id::from(eni), BTreeSet::from([eip]));
                    }
                }
            } else {
                if let Some(eips) = self.eips_of_eni.get_mut(eni) {
                    eips.remove(&eip);
                    if eips.is_empty() {
                        self.eips_of_eni.remove(eni);
                    }
                }
            }
        }
        match association {
            Association::Instance { instance, .. } => {
                if add {
                    self.eip_of_instance.insert(instance.clone(), eip);
                } else {
                    remove_if(&mut self.eip_of_instance, instance, &eip);
                }
            }
            Association::NatGateway { nat_gateway } => {
                if add {
                    self.eips_of_nat_gateway.entry(nat_gateway.clone()).or_default().insert(eip);
                } else {
                    remove_from_set(&mut self.eips_of_nat_gateway, nat_gateway, &eip);
                }
            }
            _ => {}
        }
    }
}

impl PartialEq for State {
    /// Two states are equal when their resources are (the indexes follow from them).
    fn eq(&self, other: &Self) -> bool {
        self.regions == other.regions
            && self.vpcs == other.vpcs
            && self.vswitches == other.vswitches
            && self.instance_types == other.instance_types
            && self.instances == other.instances
            && self.enis == other.enis
            && self.eips == other.eips
            && self.nat_gateways == other.nat_gateways
            && self.security_groups == other.security_groups
    }
}

impl Eq for State {}

impl State {
    pub fn get(&self, key: &Key) -> Option<Resource> {
        let id = key.id.as_str();
        Some(match key.kind {
            Kind::Region => Resource::Region(self.regions.get(id)?.clone()),
            Kind::Vpc => Resource::Vpc(self.vpcs.get(id)?.clone()),
            Kind::VSwitch => Resource::VSwitch(self.vswitches.get(id)?.clone()),
            Kind::InstanceType => Resource::InstanceType(self.instance_types.get(id)?.clone()),
            Kind::Instance => Resource::Instance(self.instances.get(id)?.clone()),
            Kind::Eni => Resource::Eni(self.enis.get(id)?.clone()),
            Kind::Eip => Resource::Eip(self.eips.get(&id.parse().ok()?)?.clone()),
            Kind::NatGateway => Resource::NatGateway(self.nat_gateways.get(id)?.clone()),
            Kind::SecurityGroup => Resource::SecurityGroup(self.security_groups.get(id)?.clone()),
        })
    }

    /// Inserts or replaces a resource; returns what was there.
    pub fn put(&mut self, resource: Resource) -> Option<Resource> {
        // An EIP goes by its address (`put_eip`, below): its key would be formatted only to
        // be parsed back.
        let previous = match &resource {
            Resource::Eip(_) => None,
            other => self.remove(&other.key()),
        };
        match resource {
            Resource::Region(r) => {
                self.regions.insert(r.id.clone(), r);
            }
            Resource::Vpc(r) => {
                self.vpcs.insert(r.id.clone(), r);
            }
            Resource::VSwitch(r) => {
                self.vswitches.insert(r.id.clone(), r);
            }
            Resource::InstanceType(r) => {
                self.instance_types.insert(r.id.clone(), r);
            }
            Resource::Instance(r) => {
                if let Some(ip) = r.fixed_public_ip {
                    self.index.fixed_public_ips.insert(ip, r.id.clone());
                }
                self.instances.insert(r.id.clone(), r);
            }
            Resource::Eni(eni) => {
                for ip in eni.ipv4s() {
                    self.index.ipv4_owner.insert(ip, eni.id.clone());
                }
                for ip in &eni.ipv6 {
                    self.index.ipv6_owner.insert(*ip, eni.id.clone());
                }
                if let Some(instance) = &eni.instance {
                    let enis = self.index.enis_of_instance.entry(instance.clone()).or_default();
                    enis.insert(eni.id.clone());
                }
                if let Some(group) = &eni.security_group {
                    let enis = self.index.enis_of_security_group.entry(group.clone()).or_default();
                    enis.insert(eni.id.clone());
                }
                self.enis.insert(eni.id.clone(), eni);
            }
            Resource::Eip(eip) => return self.put_eip(eip).map(Resource::Eip),
            Resource::NatGateway(r) => {
                self.nat_gateways.insert(r.id.clone(), r);
            }
            Resource::SecurityGroup(r) => {
                self.security_groups.insert(r.id.clone(), r);
            }
        }
        previous
    }

    /// Removes a resource; returns it.
    pub fn remove(&mut self, key: &Key) -> Option<Resource> {
        let id = key.id.as_str();
        Some(match key.kind {
            Kind::Region => Resource::Region(self.regions.remove(id)?),
            Kind::Vpc => Resource::Vpc(self.vpcs.remove(id)?),
            Kind::VSwitch => Resource::VSwitch(self.vswitches.remove(id)?),
            Kind::InstanceType => Resource::InstanceType(self.instance_types.remove(id)?),
            Kind::Instance => {
                let instance = self.instances.remove(id)?;
                if let Some(ip) = instance.fixed_public_ip {
                    remove_if(&mut self.index.fixed_public_ips, &ip, &instance.id);
                }
                Resource::Instance(instance)
            }
            Kind::Eni => {
                let eni = self.enis.remove(id)?;
                for ip in eni.ipv4s() {
                    remove_if_addr(&mut self.index.ipv4_owner, ip, &eni.id);
                }
                for ip in &eni.ipv6 {
                    remove_if(&mut self.index.ipv6_owner, ip, &eni.id);
                }
                if let Some(instance) = &eni.instance {
                    remove_from_set(&mut self.index.enis_of_instance, instance, &eni.id);
                }
                if let Some(group) = &eni.security_group {
                    remove_from_set(&mut self.index.enis_of_security_group, group, &eni.id);
                }
                Resource::Eni(eni)
            }
            Kind::Eip => Resource::Eip(self.remove_eip(id.parse().ok()?)?),
            Kind::NatGateway => Resource::NatGateway(self.nat_gateways.remove(id)?),
            Kind::SecurityGroup => Resource::SecurityGroup(self.security_groups.remove(id)?),
        })
    }

    /// Puts back a resource's value from before a change (`None`: it did not exist).
    pub fn restore(&mut self, key: &Key, before: Option<Resource>) {
        match before {
            Some(resource) => {
                self.put(resource);
            }
            None => {
                self.remove(key);
            }
        }
    }

    /// [`State::restore`] for an EIP, by its address.
    pub fn restore_eip(&mut self, address: Ipv4Addr, before: Option<Eip>) {
        match before {
            Some(eip) => {
                self.put_eip(eip);
            }
            None => {
                self.remove_eip(address);
            }
        }
    }

    /// [`State::put`] for an EIP, by its address: an EIP's key would be formatted only to
    /// be parsed back.
    pub fn put_eip(&mut self, eip: Eip) -> Option<Eip> {
        let address = eip.address;
        // One lookup, not a removal and an insertion.
        let previous = match self.eips.get_mut(&address) {
            Some(now) => Some(std::mem::replace(now, eip)),
            None => {
                self.eips.insert_new(address, eip);
                None
            }
        };
        let now = self.eips.get(&address).expect("just put");
        // The old association's entries go before the new one's come: the two may share
        // keys (the same private address), which must end up held.
        if let Some(association) = previous.as_ref().and_then(|p| p.association.as_ref()) {
            self.index.association(address, association, false);
        }
        if let Some(association) = &now.association {
            self.index.association(address, association, true);
        }
        previous
    }

    /// Changes an EIP in place, its indexes following; does nothing if it is not there.
    /// Returns a copy of it from before the change if `copy_before`.
    pub fn update_eip(
        &mut self,
        address: Ipv4Addr,
        copy_before: bool,
        change: impl FnOnce(&mut Eip),
    ) -> Option<Eip> {
        let eip = self.eips.get_mut(&address)?;
        let before = copy_before.then(|| eip.clone());
        if let Some(association) = &eip.association {
            self.index.association(address, association, false);
        }
        change(eip);
        if let Some(association) = &eip.association {
            self.index.association(address, association, true);
        }
        before
    }

    pub fn remove_eip(&mut self, address: Ipv4Addr) -> Option<Eip> {
        let eip = self.eips.remove(&address)?;
        if let Some(association) = &eip.association {
            self.index.association(eip.address, association, false);
        }
        Some(eip)
    }

    /// The ENI holding a private IPv4.
    pub fn owner_of_ipv4(&self, ip: Ipv4Addr) -> Option<&Eni> {
        self.enis.get(self.index.ipv4_owner.get(&ip)?)
    }

    /// The ENI holding an IPv6 address.
    pub fn owner_of_ipv6(&self, ip: Ipv6Addr) -> Option<&Eni> {
        self.enis.get(self.index.ipv6_owner.get(&ip)?)
    }

    /// The instance whose fixed public IP `ip` is (R22).
    pub fn instance_with_fixed_ip(&self, ip: Ipv4Addr) -> Option<&Instance> {
        self.instances.get(self.index.fixed_public_ips.get(&ip)?)
    }

    /// The NAT-mode EIP of a private IPv4 (R02 makes it unique).
    pub fn eip_of_private_ip(&self, ip: Ipv4Addr) -> Option<&Eip> {
        self.eips.get(self.index.eip_of_private.get(&ip)?)
    }

    /// EIPs landing on an ENI, any mode.
    pub fn eips_of_eni(&self, eni: &str) -> impl Iterator<Item = &Eip> + '_ {
        self.eip_addresses_of_eni(eni).filter_map(|a| self.eips.get(&a))
    }

    /// The addresses of [`State::eips_of_eni`], without finding each EIP.
    pub fn eip_addresses_of_eni(&self, eni: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.index.eips_of_eni.get(eni).into_iter().flatten().copied()
    }

    /// The EIP associated with an instance directly (R06).
    pub fn eip_of_instance(&self, instance: &str) -> Option<&Eip> {
        self.eips.get(self.index.eip_of_instance.get(instance)?)
    }

    /// ENIs attached to an instance.
    pub fn enis_of_instance(&self, instance: &str) -> impl Iterator<Item = &Eni> + '_ {
        self.index
            .enis_of_instance
            .get(instance)
            .into_iter()
            .flatten()
            .filter_map(|e| self.enis.get(e))
    }

    /// EIPs owned by a NAT gateway.
    pub fn eips_of_nat_gateway(&self, gateway: &str) -> impl Iterator<Item = &Eip> + '_ {
        self.index
            .eips_of_nat_gateway
            .get(gateway)
            .into_iter()
            .flatten()
            .filter_map(|a| self.eips.get(a))
    }

    /// ENIs filtered by a security group.
    pub fn enis_of_security_group(&self, group: &str) -> impl Iterator<Item = &Eni> + '_ {
        self.index
            .enis_of_security_group
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|e| self.enis.get(e))
    }

    /// The security group filtering an EIP's inbound traffic: that of the ENI its
    /// association lands on (an instance's EIP lands on the primary ENI). An EIP that is
    /// unassociated, owned by a NAT gateway, or on an unfiltered ENI has none.
    pub fn security_group_of_eip(&self, eip: &Eip) -> Option<&SecurityGroup> {
        let eni = self.enis.get(eip.association.as_ref()?.eni()?)?;
        self.security_groups.get(eni.security_group.as_deref()?)
    }

    /// The region an ENI is in (through its vSwitch and VPC).
    pub fn region_of_eni(&self, eni: &Eni) -> Option<&str> {
        let vswitch = self.vswitches.get(&eni.vswitch)?;
        Some(self.vpcs.get(&vswitch.vpc)?.region.as_str())
    }

    /// The zone an ENI is in (its vSwitch's).
    pub fn zone_of_eni(&self, eni: &Eni) -> Option<&str> {
        Some(self.vswitches.get(&eni.vswitch)?.zone.as_str())
    }

    /// The VPC an ENI is in.
    pub fn vpc_of_eni(&self, eni: &Eni) -> Option<&Vpc> {
        self.vpcs.get(&self.vswitches.get(&eni.vswitch)?.vpc)
    }

    /// Every resource, in a stable order.
    pub fn resources(&self) -> impl Iterator<Item = Resource> + '_ {
        let regions = self.regions.values().cloned().map(Resource::Region);
        let vpcs = self.vpcs.values().cloned().map(Resource::Vpc);
        let vswitches = self.vswitches.values().cloned().map(Resource::VSwitch);
        let types = self.instance_types.values().cloned().map(Resource::InstanceType);
        let instances = self.instances.values().cloned().map(Resource::Instance);
        let enis = self.enis.values().cloned().map(Resource::Eni);
        let eips = self.eips.values().cloned().map(Resource::Eip);
        let gateways = self.nat_gateways.values().cloned().map(Resource::NatGateway);
        let groups = self.security_groups.values().cloned().map(Resource::SecurityGroup);
        regions
            .chain(vpcs)
            .chain(vswitches)
            .chain(types)
            .chain(instances)
            .chain(enis)
            .chain(eips)
            .chain(gateways)
            .chain(groups)
    }

    /// Ids of every resource of one kind.
    pub fn ids(&self, kind: Kind) -> Vec<Id> {
        match kind {
            Kind::Region => self.regions.keys().cloned().collect(),
            Kind::Vpc => self.vpcs.keys().cloned().collect(),
            Kind::VSwitch => self.vswitches.keys().cloned().collect(),
            Kind::InstanceType => self.instance_types.keys().cloned().collect(),
            Kind::Instance => self.instances.keys().cloned().collect(),
            Kind::Eni => self.enis.keys().cloned().collect(),
            Kind::Eip => self.eips.keys().map(|a| Id::from(a.to_string())).collect(),
            Kind::NatGateway => self.nat_gateways.keys().cloned().collect(),
            Kind::SecurityGroup => self.security_groups.keys().cloned().collect(),
        }
    }
}

/// Removes `key` from a one-to-one index only while it still points at `value`: when a
/// transaction rolls back, a resource may be put back (taking the key) before the one that
/// held the key in between is replaced, and that replacement must not drop the key again.
fn remove_if<K, Q, V>(map: &mut BTreeMap<K, V>, key: &Q, value: &V)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
    V: PartialEq,
{
    if map.get(key) == Some(value) {
        map.remove(key);
    }
}

/// [`remove_if`] for an index kept in an [`AddrMap`].
fn remove_if_addr<V: PartialEq>(map: &mut AddrMap<V>, key: Ipv4Addr, value: &V) {
    if map.get(&key) == Some(value) {
        map.remove(&key);
    }
}

fn remove_from_set<K, Q, V: Ord>(map: &mut BTreeMap<K, BTreeSet<V>>, key: &Q, value: &V)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
