//! What a watch stream sends. Most answers are built whole, as a `WatchResponse`. Events are
//! not: one write's events usually go to many watchers (1,000 watchers of a prefix take the
//! same event 1,000 times), so the hub hands every watcher that takes the same events one
//! [`SharedEvents`], and its encoded form is made once, by the first stream that sends it.
//! Each stream's answer then adds only its header and watch id ([`WatchAnswer::Events`]),
//! whose bytes on the wire are exactly those of the `WatchResponse` it stands for (a test
//! holds them to it).

use std::sync::{Arc, OnceLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};
use raftkv_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use raftkv_proto::mvccpb::Event;

/// `WatchResponse`'s field numbers (proto/etcd/rpc.proto).
const HEADER_FIELD: u32 = 1;
const WATCH_ID_FIELD: u32 = 2;
const EVENTS_FIELD: u32 = 11;

/// Events, in order, shared by every watcher that takes exactly these.
#[derive(Debug, Clone)]
pub struct SharedEvents(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    events: Vec<Event>,
    /// What they count against a stream's budget (see `hub::event_bytes`).
    budget: usize,
    /// The events as `WatchResponse.events` fields, made when first asked for.
    wire: OnceLock<Bytes>,
}

impl SharedEvents {
    /// Shares `events`.
    pub fn new(events: Vec<Event>) -> Self {
        let budget = super::hub::event_bytes(&events);
        Self(Arc::new(Inner {
            events,
            budget,
            wire: OnceLock::new(),
        }))
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.0.events
    }

    /// Bytes counted against a stream's budget while they wait to be sent.
    pub fn budget(&self) -> usize {
        self.0.budget
    }

    /// The events encoded as `WatchResponse` field 11, one after another (made once).
    fn wire(&self) -> &Bytes {
        self.0.wire.get_or_init(|| {
            let mut buf = BytesMut::with_capacity(self.wire_len());
            for event in &self.0.events {
                prost::encoding::message::encode(EVENTS_FIELD, event, &mut buf);
            }
            buf.freeze()
        })
    }

    /// The length of [`Self::wire`], without making it.
    fn wire_len(&self) -> usize {
        match self.0.wire.get() {
            Some(wire) => wire.len(),
            None => self
                .0
                .events
                .iter()
                .map(|e| prost::encoding::message::encoded_len(EVENTS_FIELD, e))
                .sum(),
        }
    }

    /// Whether two handles share the same events (for tests).
    #[cfg(test)]
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One answer on a watch stream.
#[derive(Debug)]
pub enum WatchAnswer {
    /// An answer built whole: created, canceled, progress, and events that carry previous
    /// values or are cut into fragments (those are the stream's own).
    Whole(WatchResponse),
    /// A watcher's events: the `WatchResponse` with this header and id and these events,
    /// and nothing else set.
    Events {
        /// The response header.
        header: Option<ResponseHeader>,
        /// The watcher's id on its stream.
        watch_id: i64,
        /// The events, shared with other watchers.
        events: SharedEvents,
    },
}

impl Default for WatchAnswer {
    fn default() -> Self {
        Self::Whole(WatchResponse::default())
    }
}

impl From<WatchResponse> for WatchAnswer {
    fn from(response: WatchResponse) -> Self {
        Self::Whole(response)
    }
}

impl WatchAnswer {
    /// The `WatchResponse` this answer stands for (the events copied out).
    pub fn into_response(self) -> WatchResponse {
        match self {
            Self::Whole(response) => response,
            Self::Events {
                header,
                watch_id,
                events,
            } => WatchResponse {
                header,
                watch_id,
                events: events.events().to_vec(),
                ..Default::default()
            },
        }
    }
}

/// Encodes as the `WatchResponse` it stands for; decodes into [`WatchAnswer::Whole`] (a
/// server never reads its answers back, but the two stay each other's inverse).
impl Message for WatchAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Self::Whole(response) => response.encode_raw(buf),
            Self::Events {
                header,
                watch_id,
                events,
            } => {
                // Field order as prost writes `WatchResponse`: 1, 2, then 11.
                if let Some(header) = header {
                    prost::encoding::message::encode(HEADER_FIELD, header, buf);
                }
                if *watch_id != 0 {
                    prost::encoding::int64::encode(WATCH_ID_FIELD, watch_id, buf);
                }
                buf.put_slice(events.wire());
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if let Self::Events { .. } = self {
            *self = Self::Whole(std::mem::take(self).into_response());
        }
        let Self::Whole(response) = self else {
            unreachable!("made whole above")
        };
        response.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Whole(response) => response.encoded_len(),
            Self::Events {
                header,
                watch_id,
                events,
            } => {
                header.as_ref().map_or(0, |h| {
                    prost::encoding::message::encoded_len(HEADER_FIELD, h)
                }) + if *watch_id != 0 {
                    prost::encoding::int64::encoded_len(WATCH_ID_FIELD, watch_id)
                } else {
                    0
                } + events.wire_len()
            }
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_proto::mvccpb::KeyValue;
    use raftkv_proto::mvccpb::event::EventType;

    fn event(i: usize) -> Event {
        Event {
            r#type: if i.is_multiple_of(3) {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(KeyValue {
                key: Bytes::from(format!("key/{i}").into_bytes()),
                create_revision: (i as i64) * 1_000_003,
                mod_revision: i as i64 + 2,
                version: (i % 5) as i64,
                value: Bytes::from(vec![b'v'; i * 37 % 300]),
                lease: if i.is_multiple_of(2) {
                    0
                } else {
                    0x7fff_0000 + i as i64
                },
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn shared_events_encode_byte_for_byte_as_the_response_they_stand_for() {
        for n in [0usize, 1, 2, 7, 40] {
            let events: Vec<Event> = (0..n).map(event).collect();
            let shared = SharedEvents::new(events.clone());
            for (header, watch_id) in [
                (None, 0),
                (
                    Some(ResponseHeader {
                        cluster_id: u64::MAX,
                        member_id: 0x28ea_968f_b002_ad4f,
                        revision: 1 << 40,
                        raft_term: 3,
                    }),
                    7,
                ),
                (Some(ResponseHeader::default()), -1),
                (None, i64::MAX),
            ] {
                let whole = WatchResponse {
                    header,
                    watch_id,
                    events: events.clone(),
                    ..Default::default()
                };
                let answer = WatchAnswer::Events {
                    header,
                    watch_id,
                    events: shared.clone(),
                };
                let bytes = answer.encode_to_vec();
                assert_eq!(bytes, whole.encode_to_vec(), "{n} events, id {watch_id}");
                assert_eq!(answer.encoded_len(), bytes.len());
                assert_eq!(WatchResponse::decode(&bytes[..]).unwrap(), whole);
                assert_eq!(answer.into_response(), whole);
            }
        }
    }

    #[test]
    fn an_answer_decodes_whole() {
        let response = WatchResponse {
            watch_id: 3,
            events: vec![event(1), event(2)],
            ..Default::default()
        };
        let bytes = response.encode_to_vec();
        let decoded = WatchAnswer::decode(&bytes[..]).unwrap();
        assert!(matches!(&decoded, WatchAnswer::Whole(r) if *r == response));
        // Merging into shared events makes them whole first.
        let mut answer = WatchAnswer::Events {
            header: None,
            watch_id: 3,
            events: SharedEvents::new(vec![event(1)]),
        };
        let extra = WatchResponse {
            events: vec![event(2)],
            ..Default::default()
        };
        answer.merge(&extra.encode_to_vec()[..]).unwrap();
        assert_eq!(answer.into_response(), response);
    }
}
