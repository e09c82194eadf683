//! Everything that crosses the kernel/user boundary: map names, keys and values, counter
//! indices, and the checksum arithmetic the XDP program uses (pure, unit-tested on the host).
//!
//! Map types are `#[repr(C)]` with explicit padding and size asserts, and contain no `bool`,
//! enum or `Option`, so the two sides agree on every byte.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod bandwidth;
pub mod bench;
pub mod checksum;
pub mod maps;
pub mod nat;
pub mod policy;

pub use maps::*;
pub use nat::*;
