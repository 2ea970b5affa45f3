//! Between cores: waking another core, bounded channels for explicit hand-off.
//!
//! Nothing here is on a core's local path. `remote` is how a waker used on a foreign thread
//! reaches its core; [`channel`] carries values (an fd, a control message, a result) from one
//! core to another, bounded, waking the receiving core's ring.

pub mod channel;
pub(crate) mod remote;
pub(crate) mod spawn_on;

pub use spawn_on::{spawn_on, SpawnOn};
