//! Makes the HTTP/2 `:authority` of client requests one that h2 accepts.
//!
//! grpc-go sends the target it dialled as `:authority`. etcdctl's `endpoint status` and
//! `endpoint hashkv` dial each endpoint as given (`passthrough:///http://127.0.0.1:2379`),
//! so with `--cluster` (the client URLs from MemberList) or an `http://` endpoint that is
//! the whole URL. Go's HTTP/2 server takes any value; h2 (under tonic)
//! resets the stream with PROTOCOL_ERROR when the value does not parse as an
//! [`http::uri::Authority`], and its maintainers keep it so (hyperium/h2#525). raftkv never
//! reads the authority, so [`Rewriter`] repairs it in the client-to-server byte stream,
//! before h2 parses anything.
//!
//! # What it does to the bytes
//!
//! A connection that does not open with the HTTP/2 prior-knowledge preface (HTTP/1.1: the
//! gateway, /health) passes through untouched. On an HTTP/2 one, frames are walked by their
//! 9-byte headers: every frame but HEADERS (and its CONTINUATIONs) goes through where it lies
//! in the reader's buffer, DATA included, without a copy. A header block (HEADERS up to
//! END_HEADERS) is decoded with a mirror of the client's HPACK table ([`hpack`]). If every
//! `:authority` in it is valid and the connection never needed a rewrite, the block's bytes
//! go through unchanged as well. Otherwise each invalid value becomes
//! [`fix_authority`]'s answer: a leading `scheme://` stripped and everything from the first
//! `/`, `?` or `#` cut; if that is still not an authority the field is left out, which HTTP/2
//! allows (the request is served as if the client had sent none — Go would have served it
//! too, and raftkv does not look at it).
//!
//! # Why the server's HPACK table stays right
//!
//! HPACK is stateful: a block may index entries that earlier blocks inserted into the
//! decoder's dynamic table, so a rewritten block must leave the server's decoder able to
//! decode everything the client sends afterwards. The argument:
//!
//! 1. *Until the first rewrite* the server receives exactly the client's bytes, so its
//!    dynamic table is the client's encoder table, and so is ours (we decode the same bytes
//!    with the same rules; a block our decoder refuses would be refused by h2 as well, and we
//!    then stop inspecting and pass everything through, so h2 answers with its own error).
//! 2. *From the first rewrite on*, every block of the connection — that one included — is
//!    re-encoded from the decoded fields with representations that need no dynamic table and
//!    insert nothing into it: static-table indexes and literals "without indexing" ("never
//!    indexed" ones stay so). The client's own table size updates are consumed by our decoder
//!    and not forwarded. The server's table therefore never changes again and is never
//!    referred to, so it cannot be out of step; our decoder keeps following the client's
//!    table, which is what the client's later indexes mean.
//!
//! Rewriting only the `:authority` literal would keep the compression, with a subtler
//! argument (a shorter value in an entry keeps the server's table a superset of the
//! client's), but it breaks as soon as a replacement is longer than the value, and it needs
//! an answer for a value that has no valid shortening. Re-encoding is simple to reason about
//! and costs only the connections that needed it: a few hundred bytes more per request on
//! those, none on the others.
//!
//! # Frames and limits
//!
//! A re-encoded block goes out as HEADERS then CONTINUATION frames of at most 16,384 payload
//! bytes (the smallest SETTINGS_MAX_FRAME_SIZE, which raftkv's server keeps), END_HEADERS on
//! the last, END_STREAM and the PRIORITY fields kept from the original HEADERS frame; padding
//! is dropped (it only hides lengths, and the length changed anyway). A header block is
//! buffered at most [`MAX_BLOCK`] bytes in at most [`MAX_FRAMES`] frames and decodes to at
//! most [`MAX_LIST`] bytes — 4 × the 16 KiB header list hyper's server accepts, so every
//! request it would serve fits. Beyond a limit, or on malformed framing or HPACK, a
//! connection still in step passes everything through from there on (h2 then refuses it with
//! its own protocol error, exactly as without this layer); a connection whose blocks are
//! being re-encoded is closed, since its raw bytes no longer mean to the server what they
//! mean to the client. Nothing is allocated from a length before the bytes it counts are
//! present.
//!
//! # Cost
//!
//! Per connection: the rewriter (a few hundred bytes, boxed), the mirrored table (at most
//! the 4,096 bytes HPACK allows, plus its entries' bookkeeping), and, only while a frame
//! header or header block is cut between reads, its bytes so far. Per request on a
//! connection in step: one walk over the header block with no allocation except for
//! literal strings (`benches/h2_authority.rs`: about 0.2 µs a request; re-encoded blocks
//! about 0.7 µs; bulk DATA a few percent of a memory copy).

pub mod hpack;
pub mod huffman;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use hpack::{Decoder, Field};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// The largest frame payload sent: the initial (and smallest allowed) SETTINGS_MAX_FRAME_SIZE.
pub const MAX_FRAME: usize = 16_384;
/// The most header-block payload bytes buffered for one block.
pub const MAX_BLOCK: usize = 64 << 10;
/// The most frames one header block may span.
pub const MAX_FRAMES: usize = 16;
/// The largest decoded header list (names, values and 32 per field, as HTTP/2 counts it).
pub const MAX_LIST: usize = 64 << 10;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Where the rewriter is in the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Matching the preface; this many bytes of it matched so far.
    Preface(usize),
    /// Walking frames.
    Frames,
    /// Passing everything through: not HTTP/2, or given up on (see the module docs).
    Raw,
}

/// What to do with the bytes at the scan position.
enum Step {
    /// Deliver this many as they are.
    Pass(usize),
    /// Deliver these bytes instead of that many.
    Replace(usize, Bytes),
    /// Nothing can be decided before this many bytes (from the scan position) are here.
    More(usize),
}

/// The client-to-server half of a connection's rewriting (see the module docs).
#[derive(Debug)]
pub struct Rewriter {
    phase: Phase,
    /// Payload bytes of the frame being passed through that are still to come.
    skip: usize,
    /// Received, not yet scanned bytes, starting at the scan position.
    carry: BytesMut,
    /// Scanned bytes (as they came, or rewritten) to deliver before anything else.
    ready: VecDeque<Bytes>,
    /// The client's HPACK table.
    decoder: Decoder,
    /// Blocks are re-encoded from now on.
    reencode: bool,
    fields: Vec<Field>,
    /// A header block spread over CONTINUATION frames, joined.
    joined: Vec<u8>,
    /// The connection has ended on the client's side.
    eof: bool,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Self {
        Self {
            phase: Phase::Preface(0),
            skip: 0,
            carry: BytesMut::new(),
            ready: VecDeque::new(),
            decoder: Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            reencode: false,
            fields: Vec::new(),
            joined: Vec::new(),
            eof: false,
        }
    }

    /// Whether header blocks are being re-encoded (some `:authority` needed repair).
    pub fn is_reencoding(&self) -> bool {
        self.reencode
    }

    /// Reads from `io` into `buf`, as `AsyncRead::poll_read` on the rewritten stream.
    pub fn poll_read<S: AsyncRead + ?Sized>(
        &mut self,
        mut io: Pin<&mut S>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(front) = self.ready.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                front.advance(n);
                if front.is_empty() {
                    self.ready.pop_front();
                }
                return Poll::Ready(Ok(()));
            }
            if !self.carry.is_empty() {
                if self.eof {
                    // Nothing more will come: what is left goes as it is (a cut frame, which
                    // the server cannot take for anything but a cut frame).
                    let rest = self.carry.split().freeze();
                    self.ready.push_back(rest);
                    continue;
                }
                let Some(want) = self.drain_carry()? else {
                    continue;
                };
                if !self.ready.is_empty() {
                    continue; // what was decided goes first
                }
                if buf.remaining() > self.carry.len() {
                    // Put the undecided bytes back in front and read after them, so that the
                    // read is one call and what it brings is scanned where it lies.
                    let before = buf.filled().len();
                    buf.put_slice(&self.carry);
                    let polled = io.as_mut().poll_read(cx, buf);
                    if !matches!(polled, Poll::Ready(Ok(()))) {
                        // The caller keeps nothing from a read that is not Ready(Ok).
                        buf.set_filled(before);
                        return polled;
                    }
                    if buf.filled().len() == before + self.carry.len() {
                        buf.set_filled(before);
                        self.eof = true;
                        continue;
                    }
                    self.carry.clear();
                    let keep = self.scan_in_place(&buf.filled()[before..])?;
                    buf.set_filled(before + keep);
                    if keep > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                // No room for them: read only what the pending decision needs, so that what
                // follows can again be read straight into the caller's buffer.
                let old = self.carry.len();
                self.carry.resize(old + want, 0);
                let mut into = ReadBuf::new(&mut self.carry[old..]);
                let polled = io.as_mut().poll_read(cx, &mut into);
                let n = into.filled().len();
                self.carry.truncate(old + n);
                ready!(polled)?;
                if n == 0 {
                    self.eof = true;
                }
                continue;
            }
            if self.phase == Phase::Raw {
                return io.poll_read(cx, buf);
            }
            let before = buf.filled().len();
            ready!(io.as_mut().poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                return Poll::Ready(Ok(()));
            }
            let keep = self.scan_in_place(&buf.filled()[before..])?;
            buf.set_filled(before + keep);
            if keep > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Scans bytes just read into the caller's buffer; returns how many of them stay there
    /// to be delivered now. What follows them has moved to `ready` and `carry`.
    fn scan_in_place(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut pos = 0;
        while pos < data.len() {
            match self.step(&data[pos..])? {
                Step::Pass(n) => pos += n,
                Step::Replace(n, bytes) => {
                    self.ready.push_back(bytes);
                    self.carry.extend_from_slice(&data[pos + n..]);
                    return Ok(pos);
                }
                Step::More(_) => {
                    self.carry.extend_from_slice(&data[pos..]);
                    return Ok(pos);
                }
            }
        }
        Ok(pos)
    }

    /// Scans `carry` into `ready`; returns how many more bytes it needs, if it is stuck.
    fn drain_carry(&mut self) -> io::Result<Option<usize>> {
        while !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            let step = self.step(&carry);
            self.carry = carry;
            match step? {
                Step::Pass(n) => self.ready.push_back(self.carry.split_to(n).freeze()),
                Step::Replace(n, bytes) => {
                    self.carry.advance(n);
                    self.ready.push_back(bytes);
                }
                Step::More(total) => {
                    return Ok(Some(total.saturating_sub(self.carry.len()).max(1)));
                }
            }
        }
        Ok(None)
    }

    /// Decides about the bytes at the scan position (`data` is not empty).
    fn step(&mut self, data: &[u8]) -> io::Result<Step> {
        match self.phase {
            Phase::Raw => Ok(Step::Pass(data.len())),
            Phase::Preface(matched) => {
                let n = data.len().min(PREFACE.len() - matched);
                if data[..n] == PREFACE[matched..matched + n] {
                    self.phase = if matched + n == PREFACE.len() {
                        Phase::Frames
                    } else {
                        Phase::Preface(matched + n)
                    };
                    Ok(Step::Pass(n))
                } else {
                    self.phase = Phase::Raw;
                    Ok(Step::Pass(data.len()))
                }
            }
            Phase::Frames if self.skip > 0 => {
                let n = self.skip.min(data.len());
                self.skip -= n;
                Ok(Step::Pass(n))
            }
            Phase::Frames => {
                let Some(head) = FrameHead::parse(data) else {
                    return Ok(Step::More(FRAME_HEADER));
                };
                match head.kind {
                    HEADERS => self.header_block(data),
                    // A header block that does not start with HEADERS: h2 refuses the
                    // connection for it; let it see the bytes.
                    CONTINUATION | PUSH_PROMISE => self.give_up(data, "unexpected frame"),
                    _ => {
                        let whole = FRAME_HEADER + head.len;
                        let n = whole.min(data.len());
                        self.skip = whole - n;
                        Ok(Step::Pass(n))
                    }
                }
            }
        }
    }

    /// Stops inspecting a connection that is still in step with the client, or closes one
    /// whose blocks are being re-encoded (see the module docs).
    fn give_up(&mut self, data: &[u8], why: &'static str) -> io::Result<Step> {
        if self.reencode {
            tracing::debug!(
                why,
                "closing an HTTP/2 connection whose headers were rewritten"
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        tracing::debug!(why, "passing an HTTP/2 connection through unchanged");
        self.phase = Phase::Raw;
        Ok(Step::Pass(data.len()))
    }

    /// A HEADERS frame starts `data`: the whole block, once it is here.
    fn header_block(&mut self, data: &[u8]) -> io::Result<Step> {
        // Find the block's end (no allocation: this runs for every request).
        let Some(first) = FrameHead::parse(data) else {
            return Ok(Step::More(FRAME_HEADER));
        };
        let mut frames = 0;
        let mut off = 0;
        let mut total = 0usize;
        loop {
            let Some(head) = data.get(off..).and_then(FrameHead::parse) else {
                return Ok(Step::More(off + FRAME_HEADER));
            };
            if off > 0 && (head.kind != CONTINUATION || head.stream != first.stream) {
                return self.give_up(data, "header block interrupted");
            }
            total += head.len;
            frames += 1;
            if total > MAX_BLOCK || frames > MAX_FRAMES {
                return self.give_up(data, "header block too large");
            }
            let end = off + FRAME_HEADER + head.len;
            if data.len() < end {
                return Ok(Step::More(end));
            }
            off = end;
            if head.flags & END_HEADERS != 0 {
                break;
            }
        }
        let payload = &data[FRAME_HEADER..FRAME_HEADER + first.len];
        let Some((priority, fragment)) = split_headers_payload(first.flags, payload) else {
            return self.give_up(data, "bad padding");
        };
        let block: &[u8] = if frames == 1 {
            fragment
        } else {
            self.joined.clear();
            self.joined.extend_from_slice(fragment);
            let mut at = FRAME_HEADER + first.len;
            while let Some(head) = data[..off].get(at..).and_then(FrameHead::parse) {
                let start = at + FRAME_HEADER;
                self.joined
                    .extend_from_slice(&data[start..start + head.len]);
                at = start + head.len;
            }
            &self.joined
        };
        if let Err(e) = self.decoder.decode(block, MAX_LIST, &mut self.fields) {
            tracing::debug!(error = %e, "undecodable header block");
            return self.give_up(data, "undecodable header block");
        }
        let repair = self
            .fields
            .iter()
            .any(|f| is_authority(f) && !is_valid_authority(&f.value));
        if !self.reencode && !repair {
            return Ok(Step::Pass(off));
        }
        self.reencode = true;
        let mut block = Vec::with_capacity(block.len() + 64);
        for field in &self.fields {
            if !is_authority(field) {
                hpack::encode_field(&mut block, field);
            } else if let Some(value) = fix_authority(&field.value) {
                hpack::encode_field(
                    &mut block,
                    &Field {
                        value,
                        ..field.clone()
                    },
                );
            }
        }
        Ok(Step::Replace(
            off,
            frame_block(first.stream, first.flags, priority, &block),
        ))
    }
}

/// An in-memory reader that hands out `chunks` one per read (a read smaller than the chunk
/// takes its front), as a socket would deliver them; empty chunks are skipped. For tests,
/// fuzzing and benches.
pub struct ChunkReader<'a>(VecDeque<&'a [u8]>);

impl<'a> ChunkReader<'a> {
    /// A reader of `chunks`, in order.
    pub fn new(chunks: &[&'a [u8]]) -> Self {
        Self(chunks.iter().copied().filter(|c| !c.is_empty()).collect())
    }
}

impl AsyncRead for ChunkReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(front) = self.0.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            *front = &front[n..];
            if front.is_empty() {
                self.0.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Runs `chunks` (as a client sent them, one per read) through a [`Rewriter`] whose reader
/// asks for at most `read_size` bytes at a time; returns what the server would read. For
/// tests and fuzzing: the same code path as a connection, without a socket.
pub fn rewrite_chunks(chunks: &[&[u8]], read_size: usize) -> io::Result<Vec<u8>> {
    let mut source = ChunkReader::new(chunks);
    let mut rewriter = Rewriter::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    let mut space = vec![0u8; read_size.max(1)];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match rewriter.poll_read(Pin::new(&mut source), &mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Ok(out),
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            Poll::Ready(Err(e)) => return Err(e),
            // The in-memory reader is always ready; the rewriter waits only on it.
            Poll::Pending => return Err(io::Error::other("rewriter waited on a ready reader")),
        }
    }
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(data: &[u8]) -> Option<Self> {
        let h: &[u8; FRAME_HEADER] = data.get(..FRAME_HEADER)?.try_into().ok()?;
        Some(Self {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    fn write(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
    }
}

/// Splits a HEADERS payload into its PRIORITY fields (if flagged) and its header block
/// fragment, without the padding; `None` if the padding or priority does not fit.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&len, after) = rest.split_first()?;
        pad = usize::from(len);
        rest = after;
    }
    let priority = if flags & PRIORITY != 0 {
        let (fields, after) = rest.split_at_checked(5)?;
        rest = after;
        Some(fields)
    } else {
        None
    };
    let fragment = rest.get(..rest.len().checked_sub(pad)?)?;
    Some((priority, fragment))
}

/// A header block as HEADERS and CONTINUATION frames of at most [`MAX_FRAME`] bytes.
fn frame_block(stream: u32, flags: u8, priority: Option<&[u8]>, block: &[u8]) -> Bytes {
    let priority = priority.unwrap_or_default();
    let mut out = Vec::with_capacity(block.len() + priority.len() + FRAME_HEADER * 2);
    let (first, rest) = block.split_at((MAX_FRAME - priority.len()).min(block.len()));
    let mut first_flags = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        first_flags |= END_HEADERS;
    }
    FrameHead::write(
        &mut out,
        priority.len() + first.len(),
        HEADERS,
        first_flags,
        stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    let mut chunks = rest.chunks(MAX_FRAME).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { END_HEADERS } else { 0 };
        FrameHead::write(&mut out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
    Bytes::from(out)
}

fn is_authority(field: &Field) -> bool {
    &field.name[..] == b":authority"
}

/// Whether h2 takes `value` as an authority (its own test, without a copy).
fn is_valid_authority(value: &Bytes) -> bool {
    http::uri::Authority::from_maybe_shared(value.clone()).is_ok()
}

/// The authority h2 will take for `value`: `value` itself if valid, else with a leading
/// `scheme://` and anything from the first `/`, `?` or `#` removed, if that is valid; `None`
/// if nothing valid is left (the field is then left out, see the module docs).
pub fn fix_authority(value: &Bytes) -> Option<Bytes> {
    if is_valid_authority(value) {
        return Some(value.clone());
    }
    let mut start = 0;
    if let Some(i) = value.windows(3).position(|w| w == b"://")
        && is_scheme(&value[..i])
    {
        start = i + 3;
    }
    let end = value[start..]
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(value.len(), |j| start + j);
    let fixed = value.slice(start..end);
    is_valid_authority(&fixed).then_some(fixed)
}

/// RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn is_scheme(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests;
