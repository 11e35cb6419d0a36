//! The sans-IO half: STUN codec, credentials, peer policy and the TURN state machine.
//! Packets and time in; reply bytes, relay instructions and metrics out. No sockets, no tasks.
//!
//! [`TurnCore`] is the TURN state machine (RFC 8656 / RFC 5766, RFC 6156 address families,
//! RFC 6062 TCP relays): allocations, permissions, channel bindings and TCP peer connections
//! keyed by the client's 5-tuple, driven by packets and time passed in. Relay sockets come from
//! a [`RelayAllocator`] the driver supplies; replies are written into a caller-owned buffer.
//! Its methods live beside the concern they serve:
//!
//! - `turn_core.rs`: the type, its entry points ([`TurnCore::handle_client`],
//!   [`TurnCore::handle_timeout`]) and [`Output`].
//! - `client.rs`: [`ClientId`] and [`Transport`], what allocations are keyed by.
//! - `config.rs`: [`CoreConfig`] with its [`Limits`] and [`Lifetimes`].
//! - `request.rs`: what every request goes through (comprehension-required attributes,
//!   Binding, authentication, the allocation's owner), the dispatch per method, and the reply
//!   helpers.
//! - `authenticate.rs`: the long-term credential check (RFC 8489 §9.2) and its challenges.
//! - `allocation.rs`: the allocation table: lookup, lifetimes, expiry and removal.
//! - `allocate.rs`: the Allocate and Refresh methods.
//! - `relay.rs`: [`RelayAllocator`] and EVEN-PORT reservations.
//! - `permission.rs`: CreatePermission and the vetting of peer addresses.
//! - `channel.rs`: ChannelBind and an allocation's channel table.
//! - `data.rs`: the data path: ChannelData and Send indications to peers, peer datagrams back
//!   to the client.
//! - `tcp.rs`: RFC 6062 TCP relays: Connect, ConnectionBind, peers connecting in, and the
//!   lifetimes of TCP peer connections.
//! - `quota.rs`: `user_quota`, `total_quota` and the per-allocation bandwidth bucket.
//! - `small_map.rs`: the small map permissions and channels are kept in.
//!
//! Memory is bounded: allocations by `total_quota`/`user_quota` (and the relay port range),
//! permissions and channels per allocation by `max_permissions`/`max_channels`, TCP peer
//! connections by [`MAX_TCP_CONNECTIONS_PER_ALLOCATION`], EVEN-PORT reservations by a fixed
//! cap; everything that expires is swept by [`TurnCore::handle_timeout`].

pub mod auth;
pub mod policy;
pub mod stun;

mod allocate;
mod allocation;
mod authenticate;
mod channel;
mod client;
mod config;
mod data;
mod permission;
mod quota;
mod relay;
mod request;
mod small_map;
mod tcp;
#[cfg(test)]
mod test_support;
mod turn_core;

pub use client::{ClientId, Transport};
pub use config::{CoreConfig, Lifetimes, Limits};
pub use quota::quota_key;
pub use relay::{Family, Parity, RelayAllocator, RelayError};
pub use tcp::{CONNECTION_BIND_TIMEOUT, MAX_TCP_CONNECTIONS_PER_ALLOCATION};
pub use turn_core::{Output, TurnCore};
