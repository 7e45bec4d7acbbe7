//! etcd's Watch service on this member, from this member's applied state.
//!
//! - `hub` — the member's watchers: which keys each wants, who is level with the store
//!   (gets each applied write's events at once) and who catches up from the store's
//!   revision-ordered history; compaction cancels those left below it.
//! - `stream` — one `Watch` stream: etcd's create / cancel / progress requests and answers,
//!   prev_kv, fragments and progress notifications.

mod hub;
mod stream;

pub use hub::WatchHub;
pub use stream::{WatchConfig, serve};
