//! The generated types read and write the bytes etcd puts on the wire.
//!
//! The expected bytes are written out by hand from the protobuf encoding rules, in the order
//! and form etcd's gogoproto marshaller produces: fields in number order, zero values left
//! out. If a field number or type drifted from etcd's, these would stop matching.

use prost::Message;
use raftkv_proto::etcdserverpb::{
    Compare, RangeRequest, RangeResponse, ResponseHeader, SnapshotResponse, StatusResponse, compare,
};
use raftkv_proto::mvccpb::KeyValue;

/// A RangeResponse for `get foo --prefix` over two keys, as etcd 3.4 sends it.
const RANGE_RESPONSE: &[u8] = &[
    0x0a, 0x1a, // 1: header, 26 bytes
    0x08, 0xb2, 0x98, 0xea, 0xf1, 0x94, 0x83, 0x86, 0xfc, 0xcd, 0x01, // cluster_id
    0x10, 0xcd, 0xd2, 0x91, 0x8b, 0xd2, 0xb8, 0x81, 0xcf, 0x8e, 0x01, // member_id
    0x18, 0x04, // revision 4
    0x20, 0x02, // raft_term 2
    0x12, 0x10, // 2: kvs[0], 16 bytes
    0x0a, 0x03, b'f', b'o', b'o', // key
    0x10, 0x02, // create_revision 2
    0x18, 0x03, // mod_revision 3
    0x20, 0x02, // version 2
    0x2a, 0x03, b'b', b'a', b'z', // value
    0x12, 0x10, // 2: kvs[1], 16 bytes
    0x0a, 0x04, b'f', b'o', b'o', b'2', // key
    0x10, 0x04, // create_revision 4
    0x18, 0x04, // mod_revision 4
    0x20, 0x01, // version 1
    0x2a, 0x02, b'h', b'i', // value
    0x20, 0x02, // 4: count 2
];

fn expected_range_response() -> RangeResponse {
    RangeResponse {
        header: Some(ResponseHeader {
            cluster_id: 14_841_639_068_965_178_418,
            member_id: 10_276_657_743_932_975_437,
            revision: 4,
            raft_term: 2,
        }),
        kvs: vec![
            KeyValue {
                key: "foo".into(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: "baz".into(),
                lease: 0,
            },
            KeyValue {
                key: "foo2".into(),
                create_revision: 4,
                mod_revision: 4,
                version: 1,
                value: "hi".into(),
                lease: 0,
            },
        ],
        more: false,
        count: 2,
    }
}

#[test]
fn decodes_an_etcd_range_response() {
    let decoded = RangeResponse::decode(RANGE_RESPONSE).expect("valid protobuf");
    assert_eq!(decoded, expected_range_response());
}

#[test]
fn encodes_a_range_response_byte_for_byte() {
    assert_eq!(expected_range_response().encode_to_vec(), RANGE_RESPONSE);
}

#[test]
fn range_request_fields_keep_their_numbers() {
    // get a --prefix --limit 5 --rev 7 --sort-by=MODIFY --order=DESCEND --keys-only
    // --consistency=s, plus the revision filters (fields 10..13).
    let bytes: &[u8] = &[
        0x0a, 0x01, b'a', // 1 key
        0x12, 0x01, b'b', // 2 range_end
        0x18, 0x05, // 3 limit
        0x20, 0x07, // 4 revision
        0x28, 0x02, // 5 sort_order DESCEND
        0x30, 0x03, // 6 sort_target MOD
        0x38, 0x01, // 7 serializable
        0x40, 0x01, // 8 keys_only
        0x50, 0x02, // 10 min_mod_revision
        0x58, 0x09, // 11 max_mod_revision
        0x60, 0x01, // 12 min_create_revision
        0x68, 0x08, // 13 max_create_revision
    ];
    let req = RangeRequest::decode(bytes).unwrap();
    assert_eq!(&req.key[..], b"a");
    assert_eq!(&req.range_end[..], b"b");
    assert_eq!((req.limit, req.revision), (5, 7));
    assert_eq!(req.sort_order, 2);
    assert_eq!(req.sort_target, 3);
    assert!(req.serializable && req.keys_only && !req.count_only);
    assert_eq!(
        (
            req.min_mod_revision,
            req.max_mod_revision,
            req.min_create_revision,
            req.max_create_revision
        ),
        (2, 9, 1, 8)
    );
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn compare_range_end_is_field_64() {
    let cmp = Compare {
        result: 0,
        target: 3,
        key: "k".into(),
        target_union: Some(compare::TargetUnion::Value("v".into())),
        range_end: "l".into(),
    };
    // 64 << 3 | 2 = 514 = varint 0x82 0x04.
    let expected: &[u8] = &[
        0x10, 0x03, 0x1a, 0x01, b'k', 0x3a, 0x01, b'v', 0x82, 0x04, 0x01, b'l',
    ];
    assert_eq!(cmp.encode_to_vec(), expected);
}

#[test]
fn status_and_snapshot_fields_keep_their_numbers() {
    let status = StatusResponse {
        version: "3.4.23".into(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["e".into()],
        db_size_in_use: 6,
        is_learner: true,
        header: None,
    };
    let expected: &[u8] = &[
        0x12, 0x06, b'3', b'.', b'4', b'.', b'2', b'3', 0x18, 0x01, 0x20, 0x02, 0x28, 0x03, 0x30,
        0x04, 0x38, 0x05, 0x42, 0x01, b'e', 0x48, 0x06, 0x50, 0x01,
    ];
    assert_eq!(status.encode_to_vec(), expected);

    let chunk = SnapshotResponse {
        header: None,
        remaining_bytes: 300,
        blob: vec![9, 9].into(),
    };
    assert_eq!(chunk.encode_to_vec(), [0x10, 0xac, 0x02, 0x1a, 0x02, 9, 9]);
}
