//! etcd's Watch service on this member, from this member's applied state.
//!
//! - `hub` — the member's watchers: which keys each wants, who is level with the store
//!   (gets each applied write's events at once) and who catches up from the store's
//!   revision-ordered history; compaction cancels those left below it.
//! - `recent` — the newest revisions' events, held while watchers exist, from which a
//!   watcher moved aside for a moment catches up without reading the store.
//! - `answer` — what a stream sends; events taken by many watchers are shared and encoded
//!   once for all of them.
//! - `grpc` — the `etcdserverpb.Watch` gRPC service, which sends those answers as they are.
//! - `stream` — one `Watch` stream: etcd's create / cancel / progress requests and answers,
//!   prev_kv, fragments and progress notifications.

mod answer;
mod grpc;
mod hub;
mod recent;
mod stream;

pub use answer::{SharedEvents, WatchAnswer};
pub use grpc::WatchService;
pub use hub::WatchHub;
pub use stream::{WatchConfig, serve};
