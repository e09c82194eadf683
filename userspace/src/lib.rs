pub mod dataplane;
pub mod model;
pub mod store;
