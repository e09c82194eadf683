//! The agent: the one place where a request goes from the rules to the store to the maps.

use std::net::Ipv4Addr;

use eipgw_common::EipCounters;

use crate::{
    api::{ApiError, Counters, EipView, StatsView},
    dataplane::Dataplane,
    dataplane::{DesiredMaps, EipMapping},
    model::AssociationMode,
    model::{Request, State},
    store::Store,
};

pub struct Agent {
    state: State,
    store: Store,
    dataplane: Dataplane,
}

impl Agent {
    /// Loads the state and makes the data plane match it.
    pub fn start(store: Store, mut dataplane: Dataplane) -> anyhow::Result<Self> {
        let state = store.load()?;
        dataplane.reconcile(&desired_maps(&state, state.eips.keys().copied()))?;
        log::info!(
            "state {} holds {} EIPs; maps reconciled under {}",
            store.path().display(),
            state.eips.len(),
            dataplane.pin_dir().display()
        );
        Ok(Self { state, store, dataplane })
    }

    /// Validates, commits and applies one request, answering with the EIP `subject`.
    /// A refusal changes nothing. The store is written first: if the map update then
    /// fails, the next start reconciles the maps to the store.
    pub fn execute(&mut self, request: &Request, subject: Ipv4Addr) -> Result<EipView, ApiError> {
        self.commit(request)?;
        self.show_eip(subject)
    }

    pub fn release(&mut self, eip: Ipv4Addr) -> Result<(), ApiError> {
        self.commit(&Request::ReleaseEip { eip })
    }

    fn commit(&mut self, request: &Request) -> Result<(), ApiError> {
        let change = self.state.plan(request).map_err(ApiError::Refused)?;
        if change.is_empty() {
            return Ok(());
        }
        self.store.commit(&change)?;
        let before = desired_maps(&self.state, change.touched_eips());
        self.state.apply(&change);
        let after = desired_maps(&self.state, change.touched_eips());
        self.dataplane.apply(&before, &after)?;
        log::info!("applied {request:?}");
        Ok(())
    }

    pub fn list_eips(&self) -> anyhow::Result<Vec<EipView>> {
        self.state
            .eips
            .values()
            .map(|eip| Ok(EipView::new(eip, self.counters(eip.address)?)))
            .collect()
    }

    pub fn show_eip(&self, address: Ipv4Addr) -> Result<EipView, ApiError> {
        let eip = self.state.eip(address).map_err(ApiError::Refused)?;
        Ok(EipView::new(eip, self.counters(address)?))
    }

    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let verdicts = self.dataplane.verdict_counters()?;
        Ok(StatsView {
            verdicts: verdicts.into_iter().map(|(v, n)| (v.name().to_owned(), n)).collect(),
        })
    }

    fn counters(&self, address: Ipv4Addr) -> anyhow::Result<Option<Counters>> {
        Ok(self.dataplane.eip_counters(address)?.map(|c: EipCounters| Counters {
            inbound_packets: c.inbound_packets,
            inbound_bytes: c.inbound_bytes,
            outbound_packets: c.outbound_packets,
            outbound_bytes: c.outbound_bytes,
        }))
    }
}

/// What the maps should hold for these EIPs of `state`.
fn desired_maps(state: &State, eips: impl Iterator<Item = Ipv4Addr>) -> DesiredMaps {
    let mut desired = DesiredMaps::default();
    for address in eips {
        if let Some(eip) = state.eips.get(&address) {
            let mapping = match &eip.association {
                None => EipMapping::Unassociated,
                Some(a) => match a.mode {
                    AssociationMode::Nat => EipMapping::Nat { private_ip: a.private_ip },
                },
            };
            desired.eips.insert(address, mapping);
        }
    }
    desired
}
