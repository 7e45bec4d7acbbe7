//! etcd's Watch service on this member, from this member's applied state.
//!
//! - `hub` — the member's watchers: which keys each wants, who is level with the store
//!   (gets each applied write's events at once) and who catches up from the store's
//!   revision-ordered history; compaction cancels those left below it.
//! - `recent` — the newest revisions' events, held while watchers exist, from which a
//!   watcher moved aside for a moment catches up without reading the store.
//! - `stream` — one `Watch` stream: etcd's create / cancel / progress requests and answers,
//!   prev_kv, fragments and progress notifications.

mod hub;
mod recent;
mod stream;

pub use hub::WatchHub;
pub use stream::{WatchConfig, serve};
