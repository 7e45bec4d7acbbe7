//! A chaos client that speaks etcd's JSON gateway (HTTP/1.1 on the client port, as etcd3gw
//! and curl users do) instead of gRPC: its puts, gets, deletes and compare-and-swaps join the
//! same history the linearizability checker reads, so the gateway is held to the same
//! guarantees under kills, pauses and partitions.

use std::time::Duration;

use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::linearizable::{Input, Output};

/// Runs `input` on `key` through `endpoint`'s gateway: the outcome and the header's revision,
/// or `None` if the call failed or did not answer within 1.5 s (as the gRPC clients).
pub async fn run_op_rev(endpoint: &str, key: &str, input: &Input) -> Option<(Output, i64)> {
    let key_bytes = key.as_bytes().to_vec();
    let fut = async {
        match input {
            Input::Get => {
                let req = RangeRequest {
                    key: key_bytes.into(),
                    ..Default::default()
                };
                let r: RangeResponse = post(endpoint, "/v3/kv/range", &req).await?;
                let v = r
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                Some((Output::Value(v), revision(&r.header)))
            }
            Input::Put(v) => {
                let req = PutRequest {
                    key: key_bytes.into(),
                    value: v.clone().into_bytes().into(),
                    ..Default::default()
                };
                let r: PutResponse = post(endpoint, "/v3/kv/put", &req).await?;
                Some((Output::Put, revision(&r.header)))
            }
            Input::Delete => {
                let req = DeleteRangeRequest {
                    key: key_bytes.into(),
                    ..Default::default()
                };
                let r: DeleteRangeResponse = post(endpoint, "/v3/kv/deleterange", &req).await?;
                Some((Output::Deleted(r.deleted), revision(&r.header)))
            }
            Input::Cas { expected, new } => {
                let req: TxnRequest = crate::chaos::cas_txn(key, expected.as_deref(), new);
                let r: TxnResponse = post(endpoint, "/v3/kv/txn", &req).await?;
                Some((Output::Cas(r.succeeded), revision(&r.header)))
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(1500), fut)
        .await
        .ok()
        .flatten()
}

fn revision(header: &Option<raftkv_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// One POST with a JSON body on a fresh connection; the decoded answer if it was 200 OK.
async fn post<Req, Resp>(endpoint: &str, path: &str, req: &Req) -> Option<Resp>
where
    Req: serde::Serialize,
    Resp: serde::de::DeserializeOwned,
{
    let body = serde_json::to_vec(req).ok()?;
    let mut stream = TcpStream::connect(endpoint).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(&body).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200 ") {
        return None;
    }
    let body = &answer[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&body).ok()
}

/// An HTTP/1.1 chunked body, joined.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}
