//! eipgw's user side: the agent `eipgwd` (rules, store, data plane, API) and the operator
//! CLI `eipctl`.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod dataplane;
pub mod document;
pub mod model;
pub mod sorted;
pub mod store;
