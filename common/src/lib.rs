//! Shared building blocks of Velour Fog.
//!
//! Pure logic (no I/O): [`partition`] (which partition a key is in), [`placement`] (which nodes
//! hold a partition, and partitions on the move), [`layout`] (where partitions should go when
//! nodes join and leave, moving as little as possible), [`version`] (which write wins), [`query`] (byte-exact query strings).
//! Plumbing used by every server: [`proto`] (the internal wire protocol), [`http`] (server loop
//! and deadline-bound client), [`auth`] (the cluster secret), [`skew`] (clocks against the controller's), [`telemetry`] (metrics),
//! [`framing`] and [`guard`] (strict request framing and bounds on slow clients, before hyper
//! sees a byte), [`shutdown`] (signals and logging),
//! [`runtime`] (the Tokio runtime, sized by `--worker-threads`). Nothing here knows about a
//! particular server; the servers depend on this crate and never on each other.

pub mod addr;
pub mod atomic_file;
pub mod auth;
pub mod batch;
pub mod framing;
pub mod guard;
pub mod http;
pub mod layout;
pub mod mapwatch;
pub mod partition;
pub mod placement;
pub mod proto;
pub mod query;
pub mod runtime;
pub mod shutdown;
pub mod skew;
pub mod telemetry;
pub mod version;
