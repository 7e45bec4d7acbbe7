//! The openraft type configuration and the bytes every persisted or transmitted Raft value
//! is encoded to.

use std::fmt;
use std::io;

use prost::Message;
use raftkv_proto::codec::decode_bounded;
use raftkv_proto::raftkvpb::{Command, CommandResponse};
use raftkv_storage::ErrorCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// raftkv's Raft types: one leader per term (etcd's model), u64 member ids, etcd
    /// commands as log payloads.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A Raft handle over raftkv's state machine.
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachine>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// The membership stored with the state.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// One member as the cluster knows it (the `Node` of openraft's membership).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    /// `--name`; empty until the member has started and published it.
    pub name: String,
    /// Where members reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it; empty until it has started and published them.
    pub client_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// A state-machine command: an etcd write request, stored in the log in its protobuf form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request(pub Command);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.op.as_ref().map(std::mem::discriminant))
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_buf::Buf = Deserialize::deserialize(d)?;
        // Bounded: a committed entry holds only what the client edge let in, and that
        // always decodes again (the nesting bound is the same on both sides).
        decode_bounded::<Command>(bytes.0.as_slice())
            .map(Request)
            .map_err(serde::de::Error::custom)
    }
}

/// The outcome of applying a command: etcd's response, or a refusal every member reached
/// alike (such as "key not found").
#[derive(Debug, Clone, PartialEq)]
pub struct Response(pub Result<CommandResponse, Refusal>);

/// A request the state machine refused, with etcd's code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The gRPC code etcd uses.
    pub code: RefusalCode,
    /// etcd's exact message.
    pub message: String,
}

/// [`ErrorCode`] in a serialisable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum RefusalCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    Internal,
    ResourceExhausted,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    Unknown,
    DataLoss,
}

impl From<ErrorCode> for RefusalCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => Self::InvalidArgument,
            ErrorCode::OutOfRange => Self::OutOfRange,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::Internal => Self::Internal,
            ErrorCode::ResourceExhausted => Self::ResourceExhausted,
            ErrorCode::FailedPrecondition => Self::FailedPrecondition,
            ErrorCode::PermissionDenied => Self::PermissionDenied,
            ErrorCode::Unauthenticated => Self::Unauthenticated,
            ErrorCode::Unknown => Self::Unknown,
            ErrorCode::DataLoss => Self::DataLoss,
        }
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire: Result<serde_bytes_buf::Buf, &Refusal> = match &self.0 {
            Ok(resp) => Ok(serde_bytes_buf::Buf(resp.encode_to_vec())),
            Err(refusal) => Err(refusal),
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire: Result<serde_bytes_buf::Buf, Refusal> = Deserialize::deserialize(d)?;
        Ok(Response(match wire {
            Ok(bytes) => Ok(decode_bounded::<CommandResponse>(bytes.0.as_slice())
                .map_err(serde::de::Error::custom)?),
            Err(refusal) => Err(refusal),
        }))
    }
}

/// A byte buffer that serde encodes as bytes rather than as a sequence of numbers.
mod serde_bytes_buf {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::{Serialize, Serializer};

    pub struct Buf(pub Vec<u8>);

    impl Serialize for Buf {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element()? {
                        out.push(b);
                    }
                    Ok(Buf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

/// Largest encoded Raft value accepted from disk or network; anything claiming more is
/// refused before it is allocated.
pub const MAX_ENCODED: u64 = 256 << 20;

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_limit(MAX_ENCODED)
}

/// Encodes a Raft value for the log, the state machine's metadata or the network.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    use bincode::Options;
    options()
        .serialize(value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Encodes a value for sending. Serialising an in-memory value with no size limit cannot
/// fail (no I/O, and every `Serialize` here is infallible).
pub fn encode_unbounded<T: Serialize>(value: &T) -> Vec<u8> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .serialize(value)
        .expect("bincode serialisation to memory is infallible")
}

/// Decodes what [`encode`] produced; damage is an `InvalidData` error, never a panic.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    use bincode::Options;
    options()
        .deserialize(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
    use raftkv_proto::raftkvpb::{command, command_response};

    #[test]
    fn requests_and_responses_round_trip() {
        let req = Request(Command {
            op: Some(command::Op::Put(PutRequest {
                key: "k".into(),
                value: "v".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(decode::<Request>(&encode(&req).unwrap()).unwrap(), req);
        let ok = Response(Ok(CommandResponse {
            op: Some(command_response::Op::Put(PutResponse {
                header: Some(ResponseHeader {
                    revision: 7,
                    ..Default::default()
                }),
                prev_kv: None,
            })),
        }));
        assert_eq!(decode::<Response>(&encode(&ok).unwrap()).unwrap(), ok);
        let refused = Response(Err(Refusal {
            code: RefusalCode::InvalidArgument,
            message: "etcdserver: key not found".into(),
        }));
        assert_eq!(
            decode::<Response>(&encode(&refused).unwrap()).unwrap(),
            refused
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<Request>(&[0xff; 12]).is_err());
        assert!(decode::<Entry>(&[0xff; 40]).is_err());
        assert!(decode::<Vote>(&[]).is_err());
    }
}
