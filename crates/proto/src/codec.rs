//! The gRPC codec of every generated client and server: prost's, behind a bound on how deeply
//! a message nests.
//!
//! etcd accepts a `Txn` nested as deeply as `--max-txn-ops` allows (129 levels with the
//! default of 128), far beyond prost's fixed limit of 100 nested *messages* (each txn level
//! is two: `TxnRequest` → `RequestOp`). That limit let a request in that could no longer be
//! decoded once wrapped in a Raft log entry, which stopped the member for good. So prost is
//! built without its limit (`no-recursion-limit`), and every decode — gRPC messages here,
//! log entries through [`decode_bounded`] — is preceded by [`check_nesting`]: an iterative
//! walk of the wire bytes, guided by the schema `build.rs` extracts from `proto/`, that
//! refuses more than [`MAX_TXN_DEPTH`] txn levels (etcd's "too many operations" error),
//! more than [`MAX_MESSAGE_DEPTH`] message levels, and protobuf groups (which prost would
//! skip recursively) before prost makes a single recursive call.

use std::marker::PhantomData;

use bytes::Buf;
use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// One message type of `proto/`, as the nesting walk sees it.
pub(crate) struct MessageShape {
    package: &'static str,
    name: &'static str,
    /// Whether it is one level of txn nesting (`TxnRequest`, `TxnResponse`).
    txn: bool,
    /// Its message-typed fields: number, and the index of the field's type in `SCHEMA`.
    fields: &'static [(u32, usize)],
}

include!(concat!(env!("OUT_DIR"), "/schema.rs"));

/// The deepest txn nesting any raftkv member accepts, decodes or stores: etcd's default
/// `--max-txn-ops` (128) allows 129 levels, and this leaves room for a larger setting.
/// Requests nested deeper are refused with etcd's "too many operations" error.
pub const MAX_TXN_DEPTH: usize = 256;

/// The deepest message nesting decoded: two levels per txn, and a few around them
/// (`Command` → … → `RequestOp` → `PutRequest`, `ResponseOp` → `RangeResponse` → `KeyValue`).
pub const MAX_MESSAGE_DEPTH: usize = 2 * MAX_TXN_DEPTH + 8;

/// etcd's message for a txn over its operation budget (nesting spends it).
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";

/// Why a message was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NestingError {
    /// More txn levels than [`MAX_TXN_DEPTH`].
    TooDeep,
    /// Not protobuf raftkv decodes (malformed, groups, or nested beyond any raftkv message).
    Malformed(&'static str),
}

impl std::fmt::Display for NestingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooDeep => f.write_str(TOO_MANY_OPS),
            Self::Malformed(why) => write!(f, "failed to decode Protobuf message: {why}"),
        }
    }
}

impl std::error::Error for NestingError {}

impl From<NestingError> for Status {
    fn from(e: NestingError) -> Self {
        match e {
            NestingError::TooDeep => Status::invalid_argument(TOO_MANY_OPS),
            // As tonic's prost codec answers a message it cannot decode.
            NestingError::Malformed(_) => Status::internal(e.to_string()),
        }
    }
}

/// The index of message type `U` in [`SCHEMA`].
fn schema_index<U: Name>() -> Option<usize> {
    SCHEMA
        .binary_search_by(|m| (m.package, m.name).cmp(&(U::PACKAGE, U::NAME)))
        .ok()
}

/// The txn nesting depth of the message at `bytes`, of type `SCHEMA[root]` (a lone
/// `TxnRequest` is 1), found without recursion. Refuses more than `max_txn` txn levels,
/// more than [`MAX_MESSAGE_DEPTH`] message levels, groups and malformed wire data as soon
/// as it meets them.
pub(crate) fn txn_depth(bytes: &[u8], root: usize, max_txn: usize) -> Result<usize, NestingError> {
    let total = bytes.len();
    let mut rest = bytes;
    // The enclosing messages: their schema index and where they end.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let (mut current, mut end) = (root, total);
    let mut txn = usize::from(SCHEMA[root].txn);
    let mut deepest = txn;
    loop {
        let at = total - rest.len();
        if at == end {
            let Some((parent, parent_end)) = stack.pop() else {
                return Ok(deepest);
            };
            txn -= usize::from(SCHEMA[current].txn);
            (current, end) = (parent, parent_end);
            continue;
        }
        if at > end {
            return Err(NestingError::Malformed("field overruns its message"));
        }
        let key = varint(&mut rest)?;
        if key >> 3 == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
            return Err(NestingError::Malformed("invalid field number"));
        }
        match key & 7 {
            0 => {
                varint(&mut rest)?;
            }
            1 => skip(&mut rest, 8)?,
            5 => skip(&mut rest, 4)?,
            2 => {
                let len = usize::try_from(varint(&mut rest)?)
                    .ok()
                    .filter(|&len| len <= rest.len())
                    .ok_or(NestingError::Malformed(
                        "length past the end of the message",
                    ))?;
                let number = (key >> 3) as u32;
                let child = SCHEMA[current]
                    .fields
                    .iter()
                    .find_map(|&(n, index)| (n == number).then_some(index));
                match child {
                    Some(child) => {
                        stack.push((current, end));
                        (current, end) = (child, total - rest.len() + len);
                        txn += usize::from(SCHEMA[child].txn);
                        if txn > max_txn {
                            return Err(NestingError::TooDeep);
                        }
                        if stack.len() > MAX_MESSAGE_DEPTH {
                            return Err(NestingError::Malformed("messages nested too deeply"));
                        }
                        deepest = deepest.max(txn);
                    }
                    None => skip(&mut rest, len)?,
                }
            }
            _ => return Err(NestingError::Malformed("groups are not supported")),
        }
    }
}

fn varint(bytes: &mut &[u8]) -> Result<u64, NestingError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes
            .split_first()
            .ok_or(NestingError::Malformed("truncated varint"))?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(NestingError::Malformed("varint longer than 10 bytes"))
}

fn skip(bytes: &mut &[u8], n: usize) -> Result<(), NestingError> {
    if bytes.len() < n {
        return Err(NestingError::Malformed("truncated field"));
    }
    bytes.advance(n);
    Ok(())
}

/// Checks that `bytes`, as a message of type `U`, is safe to hand to prost: txn nesting
/// within [`MAX_TXN_DEPTH`], message nesting within [`MAX_MESSAGE_DEPTH`], no groups.
pub fn check_nesting<U: Name>(bytes: &[u8]) -> Result<(), NestingError> {
    let root = schema_index::<U>().ok_or(NestingError::Malformed("message type not in schema"))?;
    txn_depth(bytes, root, MAX_TXN_DEPTH).map(|_| ())
}

/// Decodes a message from bytes of any origin (a log entry, a file): [`check_nesting`] first,
/// then prost. Outside the gRPC codec, raftkv decodes protobuf only through this.
pub fn decode_bounded<U: Message + Name + Default>(bytes: &[u8]) -> Result<U, NestingError> {
    check_nesting::<U>(bytes)?;
    U::decode(bytes).map_err(|_| NestingError::Malformed("invalid protobuf"))
}

/// prost's codec with [`check_nesting`] before every decode (see the module docs).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = BoundedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BoundedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Encodes with prost.
#[derive(Debug)]
pub struct BoundedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for BoundedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed, so prost's only error (no space left) cannot happen.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Checks nesting, then decodes with prost.
#[derive(Debug)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // tonic hands over each message in one contiguous buffer; copy only if it did not.
        if buf.chunk().len() == buf.remaining() {
            check_nesting::<U>(buf.chunk())?;
            return U::decode(buf)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()));
        }
        let bytes = buf.copy_to_bytes(buf.remaining());
        decode_bounded::<U>(&bytes).map(Some).map_err(Status::from)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest, request_op};
    use crate::raftkvpb::{Command, command};

    /// A txn nested `levels` deep, one op per level, a put at the bottom.
    fn nested_txn(levels: usize) -> TxnRequest {
        let mut txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: "k".into(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        for _ in 1..levels {
            txn = TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(txn)),
                }],
                ..Default::default()
            };
        }
        txn
    }

    /// The wire bytes of `levels` txns nested through their success ops, built without
    /// materialising the messages (for depths no decoder should ever see).
    fn nested_txn_bytes(levels: usize) -> Vec<u8> {
        fn put_varint(out: &mut Vec<u8>, mut v: usize) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let vlen = |v: usize| (usize::BITS - v.max(1).leading_zeros()).div_ceil(7) as usize;
        // Sizes from the innermost (an empty txn) outwards: op = [0x22 len txn], txn = [0x12 len op].
        let mut ops = Vec::with_capacity(levels);
        let mut txn = 0usize;
        for _ in 1..levels {
            let op = 1 + vlen(txn) + txn;
            ops.push((op, txn));
            txn = 1 + vlen(op) + op;
        }
        let mut out = Vec::with_capacity(txn);
        for &(op, inner) in ops.iter().rev() {
            out.push(0x12);
            put_varint(&mut out, op);
            out.push(0x22);
            put_varint(&mut out, inner);
        }
        out
    }

    fn index<U: Name>() -> usize {
        schema_index::<U>().expect("in the schema")
    }

    #[test]
    fn depth_is_counted_in_txn_levels() {
        for levels in [1, 2, 49, 129, MAX_TXN_DEPTH] {
            let bytes = nested_txn(levels).encode_to_vec();
            assert_eq!(txn_depth(&bytes, index::<TxnRequest>(), 1000), Ok(levels));
            assert_eq!(nested_txn_bytes(levels).len(), {
                // The hand-built chain ends in an empty txn instead of a put.
                let mut t = nested_txn(levels);
                let mut inner = &mut t;
                for _ in 1..levels {
                    let Some(request_op::Request::RequestTxn(next)) = &mut inner.success[0].request
                    else {
                        unreachable!()
                    };
                    inner = next;
                }
                *inner = TxnRequest::default();
                t.encoded_len()
            });
            let cmd = Command {
                op: Some(command::Op::Txn(nested_txn(levels))),
                ..Default::default()
            };
            let bytes = cmd.encode_to_vec();
            assert_eq!(txn_depth(&bytes, index::<Command>(), 1000), Ok(levels));
            let back: Command = decode_bounded(&bytes).expect("decodes");
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn too_deep_is_refused_before_decoding() {
        let bytes = nested_txn(MAX_TXN_DEPTH + 1).encode_to_vec();
        assert_eq!(
            decode_bounded::<TxnRequest>(&bytes),
            Err(NestingError::TooDeep)
        );
        // Prost, without its limit, would overflow the stack on these: the walk does not
        // recurse, and stops at the first level too many.
        let bytes = nested_txn_bytes(1_000_000);
        assert_eq!(
            decode_bounded::<TxnRequest>(&bytes),
            Err(NestingError::TooDeep)
        );
    }

    #[test]
    fn groups_and_malformed_bytes_are_refused() {
        // A million nested groups in an unknown field of a message that cannot nest.
        let groups: Vec<u8> = std::iter::repeat_n(0x7b, 1_000_000).collect();
        assert!(decode_bounded::<RangeRequest>(&groups).is_err());
        for bad in [
            &[0x12u8, 0x05, 0x22][..],
            &[0x0b],
            &[0x12, 0xff],
            &[0x00, 0x00],
        ] {
            assert!(matches!(
                check_nesting::<TxnRequest>(bad),
                Err(NestingError::Malformed(_))
            ));
        }
        assert_eq!(txn_depth(&[], index::<TxnRequest>(), MAX_TXN_DEPTH), Ok(1));
        assert_eq!(txn_depth(&[], index::<Command>(), MAX_TXN_DEPTH), Ok(0));
    }

    #[test]
    fn the_schema_knows_every_message_and_its_message_fields() {
        assert!(
            SCHEMA
                .windows(2)
                .all(|w| (w[0].package, w[0].name) < (w[1].package, w[1].name))
        );
        let txn = &SCHEMA[index::<TxnRequest>()];
        assert!(txn.txn);
        assert_eq!(
            txn.fields,
            &[
                (1, index::<crate::etcdserverpb::Compare>()),
                (2, index::<RequestOp>()),
                (3, index::<RequestOp>())
            ]
        );
        assert_eq!(
            SCHEMA[index::<RequestOp>()].fields,
            &[
                (1, index::<RangeRequest>()),
                (2, index::<PutRequest>()),
                (3, index::<crate::etcdserverpb::DeleteRangeRequest>()),
                (4, index::<TxnRequest>())
            ]
        );
    }
}
