//! Client connections whose HTTP/2 `:authority` Go's gRPC server accepts
//! and h2's refuses. etcdctl dials maintenance calls on each endpoint with
//! the authority set to the endpoint URL (`http://127.0.0.1:2379`, scheme
//! included); h2 resets every stream whose authority is not a URI
//! authority, Go's takes any. This reader sits between the socket and h2,
//! finds literal `:authority` values in request header blocks and puts a
//! valid one in their place (the URL's host and port, else `localhost`);
//! every other byte passes through untouched.
//!
//! The same reader enforces etcd's `--grpc-keepalive-min-time` as grpc-go's
//! server does: a client PING sooner than the minimum after the previous
//! one is a strike unless the client sent a request or data in between,
//! and the third strike closes the connection.
//!
//! HPACK state stays consistent without re-encoding the block: a repaired
//! value is only ever shorter, so h2's dynamic table holds the client's
//! entries in the same order and evicts no earlier, and every index the
//! client refers to names the same entry on both sides.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
/// grpc-go's maxPingStrikes: one more closes the connection.
const MAX_PING_STRIKES: u8 = 2;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// A header block larger than this is passed on as it is (h2 refuses
/// header lists over its own limit, far below this).
const MAX_BLOCK: usize = 256 * 1024;
/// The frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's
/// initial value); a rewritten block is framed no larger.
const MAX_FRAME: usize = 16_384;
/// `:authority`'s index in HPACK's static table.
const AUTHORITY_INDEX: u64 = 1;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
const DIRECT_READ: usize = 64 * 1024;
/// Longest authority value looked at (a valid one is a host and a port).
const MAX_AUTHORITY: usize = 4096;

/// Where the reader is in the client's byte stream.
enum State {
    /// Before the connection preface is complete.
    Preface,
    /// Not HTTP/2 with prior knowledge (the HTTP/1 JSON gateway), or given
    /// up on: bytes go straight through.
    Passthrough,
    /// At a frame boundary.
    FrameHeader,
    /// Inside a frame that is not part of a header block.
    Payload(usize),
    /// Collecting a header block: its HEADERS frame and any CONTINUATIONs.
    Block(Block),
}

struct Block {
    stream: [u8; 4],
    flags: u8,
    /// The original frames, byte for byte (sent on when nothing changes).
    frames: BytesMut,
    /// The fields of the block, without padding or priority.
    fragment: BytesMut,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
}

/// A client's pings against the keepalive enforcement policy.
struct PingPolicy {
    min_time: std::time::Duration,
    last: Option<std::time::Instant>,
    strikes: u8,
    /// The client sent a request or data since its last ping.
    active: bool,
}

impl PingPolicy {
    /// Whether this ping is one too many.
    fn ping(&mut self) -> bool {
        let now = std::time::Instant::now();
        let early = self
            .last
            .is_some_and(|l| now.duration_since(l) < self.min_time);
        self.last = Some(now);
        if std::mem::take(&mut self.active) {
            self.strikes = 0;
        } else if early {
            self.strikes += 1;
        }
        self.strikes > MAX_PING_STRIKES
    }
}

/// A server-side connection with `:authority` values repaired for h2.
pub struct AuthorityRepair<IO> {
    io: IO,
    state: State,
    /// Read from `io`, not yet looked at.
    raw: BytesMut,
    /// Looked at, to be handed to h2.
    ready: BytesMut,
    pings: Option<PingPolicy>,
    /// The client pinged too often: the connection is closed.
    too_many_pings: bool,
}

impl<IO> AuthorityRepair<IO> {
    pub fn new(io: IO) -> Self {
        AuthorityRepair {
            io,
            state: State::Preface,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            pings: None,
            too_many_pings: false,
        }
    }

    /// Close the connection of a client that pings more often than
    /// `min_time` without sending anything else.
    pub fn with_ping_min_time(mut self, min_time: std::time::Duration) -> Self {
        self.pings = Some(PingPolicy {
            min_time,
            last: None,
            strikes: 0,
            active: false,
        });
        self
    }

    /// Move what can be decided from `raw` to `ready`.
    fn process(&mut self) {
        loop {
            match &mut self.state {
                State::Passthrough => {
                    let all = self.raw.split();
                    self.ready.unsplit(all);
                    return;
                }
                State::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                    } else if n == PREFACE.len() {
                        let preface = self.raw.split_to(n);
                        self.ready.unsplit(preface);
                        self.state = State::FrameHeader;
                    } else {
                        return;
                    }
                }
                State::Payload(left) => {
                    let n = (*left).min(self.raw.len());
                    if n == 0 {
                        if *left == 0 {
                            self.state = State::FrameHeader;
                            continue;
                        }
                        return;
                    }
                    *left -= n;
                    let bytes = self.raw.split_to(n);
                    self.ready.unsplit(bytes);
                }
                State::FrameHeader => {
                    let Some(header) = self.next_frame() else {
                        return;
                    };
                    let (len, kind, flags) = header;
                    if let Some(policy) = &mut self.pings {
                        match kind {
                            PING if flags & ACK == 0 => self.too_many_pings |= policy.ping(),
                            HEADERS | DATA => policy.active = true,
                            _ => {}
                        }
                    }
                    if kind == HEADERS && len <= MAX_BLOCK {
                        let mut stream = [0; 4];
                        stream.copy_from_slice(&self.raw[5..9]);
                        let frame = self.raw.split_to(FRAME_HEADER + len);
                        match headers_fragment(&frame[FRAME_HEADER..], flags) {
                            Some((fragment, priority)) => {
                                let block = Block {
                                    stream,
                                    flags,
                                    fragment: BytesMut::from(fragment),
                                    priority,
                                    frames: frame,
                                };
                                self.state = State::Block(block);
                                self.finish_block_if_complete();
                            }
                            None => {
                                // Malformed padding: h2 will say so.
                                self.ready.unsplit(frame);
                            }
                        }
                    } else {
                        let header = self.raw.split_to(FRAME_HEADER);
                        self.ready.unsplit(header);
                        self.state = State::Payload(len);
                    }
                }
                State::Block(_) => {
                    let Some((len, kind, _flags)) = self.next_frame() else {
                        return;
                    };
                    let State::Block(block) = &mut self.state else {
                        return;
                    };
                    let same_stream = self.raw[5..9] == block.stream;
                    if kind != CONTINUATION || !same_stream || block.frames.len() + len > MAX_BLOCK
                    {
                        // Not a well-formed block (h2 resets the
                        // connection), or too large to hold: as it is.
                        let frames = std::mem::take(&mut block.frames);
                        self.ready.unsplit(frames);
                        self.state = State::FrameHeader;
                        continue;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    block.fragment.extend_from_slice(&frame[FRAME_HEADER..]);
                    block.flags |= frame[4] & END_HEADERS;
                    block.frames.unsplit(frame);
                    self.finish_block_if_complete();
                }
            }
        }
    }

    /// The next whole frame's (length, type, flags), if all of it is in
    /// `raw`; frames over MAX_BLOCK are only waited for up to their header.
    fn next_frame(&mut self) -> Option<(usize, u8, u8)> {
        if self.raw.len() < FRAME_HEADER {
            return None;
        }
        let len = usize::from(self.raw[0]) << 16
            | usize::from(self.raw[1]) << 8
            | usize::from(self.raw[2]);
        let (kind, flags) = (self.raw[3], self.raw[4]);
        let needs_body = kind == HEADERS || kind == CONTINUATION;
        if needs_body && len <= MAX_BLOCK && self.raw.len() < FRAME_HEADER + len {
            self.raw.reserve(FRAME_HEADER + len - self.raw.len());
            return None;
        }
        Some((len, kind, flags))
    }

    fn finish_block_if_complete(&mut self) {
        let State::Block(block) = &mut self.state else {
            return;
        };
        if block.flags & END_HEADERS == 0 {
            return;
        }
        match repaired_fragment(&block.fragment) {
            None => {
                let frames = std::mem::take(&mut block.frames);
                self.ready.unsplit(frames);
            }
            Some(fragment) => {
                write_block(&mut self.ready, block, &fragment);
            }
        }
        self.state = State::FrameHeader;
    }
}

/// A HEADERS frame's field block and priority fields, without padding.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<(&[u8], Option<[u8; 5]>)> {
    let mut body = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*body.first()?);
        body = &body[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = body.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        body = &body[5..];
    }
    let end = body.len().checked_sub(pad)?;
    Some((&body[..end], priority))
}

/// The block as one HEADERS frame and as many CONTINUATIONs as it needs.
fn write_block(out: &mut BytesMut, block: &Block, fragment: &[u8]) {
    let mut first = Vec::with_capacity(5 + fragment.len());
    if let Some(p) = block.priority {
        first.extend_from_slice(&p);
    }
    first.extend_from_slice(fragment);
    let mut pieces = first.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = block.flags & (END_STREAM | PRIORITY);
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            flags |= END_HEADERS;
        }
        let len = piece.len();
        out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.put_slice(&block.stream);
        out.put_slice(piece);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// The field block with every literal `:authority` h2 would refuse
/// repaired, or None when none needs it (or the block cannot be read, which
/// h2 will report itself).
fn repaired_fragment(block: &[u8]) -> Option<Vec<u8>> {
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let first = block[pos];
        let prefix = match first {
            b if b & 0x80 != 0 => {
                integer(block, &mut pos, 7)?;
                continue;
            }
            b if b & 0xc0 == 0x40 => 6,
            b if b & 0xe0 == 0x20 => {
                integer(block, &mut pos, 5)?;
                continue;
            }
            _ => 4,
        };
        let name_index = integer(block, &mut pos, prefix)?;
        let is_authority = if name_index == 0 {
            let (name, _) = string(block, &mut pos, true)?;
            name.as_deref() == Some(b":authority".as_slice())
        } else {
            name_index == AUTHORITY_INDEX
        };
        let start = pos;
        let (value, raw_len) = string(block, &mut pos, is_authority)?;
        if !is_authority {
            continue;
        }
        if let Some(fixed) = value.as_deref().and_then(repaired_authority) {
            let mut encoded = Vec::with_capacity(fixed.len() + 2);
            put_integer(&mut encoded, fixed.len() as u64, 7, 0);
            encoded.extend_from_slice(&fixed);
            edits.push((start, start + raw_len, encoded));
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(block.len() + 16);
    let mut at = 0;
    for (start, end, encoded) in edits {
        out.extend_from_slice(&block[at..start]);
        out.extend_from_slice(&encoded);
        at = end;
    }
    out.extend_from_slice(&block[at..]);
    Some(out)
}

/// An HPACK integer with an `prefix`-bit prefix at `pos` (RFC 7541 5.1).
fn integer(block: &[u8], pos: &mut usize, prefix: u32) -> Option<u64> {
    let max = (1u64 << prefix) - 1;
    let mut value = u64::from(*block.get(*pos)?) & max;
    *pos += 1;
    if value < max {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*pos)?;
        *pos += 1;
        value = value.checked_add(u64::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return (value < 1 << 32).then_some(value);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

fn put_integer(out: &mut Vec<u8>, value: u64, prefix: u32, high_bits: u8) {
    let max = (1u64 << prefix) - 1;
    if value < max {
        out.push(high_bits | value as u8);
        return;
    }
    out.push(high_bits | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// An HPACK string at `pos`: its octets (None when not wanted, longer than
/// MAX_AUTHORITY or not valid Huffman code) and how many bytes its
/// representation takes. Only wanted strings are decoded: a Huffman
/// decoder builds its tables anew, and decoding every literal of every
/// request's headers was a tenth of gatewayd's CPU.
fn string(block: &[u8], pos: &mut usize, wanted: bool) -> Option<(Option<Vec<u8>>, usize)> {
    let start = *pos;
    let huffman = *block.get(*pos)? & 0x80 != 0;
    let len = usize::try_from(integer(block, pos, 7)?).ok()?;
    let bytes = block.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    let value = if !wanted || len > MAX_AUTHORITY {
        None
    } else if huffman {
        loona_hpack::huffman::HuffmanDecoder::new()
            .decode(bytes)
            .ok()
    } else {
        Some(bytes.to_vec())
    };
    Some((value, *pos - start))
}

/// An authority h2 accepts in place of `value`, when h2 would refuse
/// `value`: a URL's host and port, else `localhost`. Never longer.
fn repaired_authority(value: &[u8]) -> Option<Vec<u8>> {
    if http::uri::Authority::try_from(value).is_ok() {
        return None;
    }
    let after_scheme = match value.windows(3).position(|w| w == b"://") {
        Some(i) => &value[i + 3..],
        None => value,
    };
    let host_port = after_scheme
        .split(|&b| b == b'/' || b == b'?' || b == b'#')
        .next()
        .unwrap_or_default();
    let host_port = match host_port.iter().rposition(|&b| b == b'@') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    if !host_port.is_empty() && http::uri::Authority::try_from(host_port).is_ok() {
        return Some(host_port.to_vec());
    }
    let fallback = b"localhost".as_slice();
    (fallback.len() <= value.len()).then(|| fallback.to_vec())
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityRepair<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.too_many_pings {
                return Poll::Ready(Err(io::Error::other("got too many pings from the client")));
            }
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            let direct = this.raw.is_empty()
                && match this.state {
                    State::Passthrough => true,
                    State::Payload(left) => left > 0,
                    _ => false,
                };
            if direct {
                return this.read_direct(cx, buf);
            }
            if !this.raw.is_empty() {
                let (raw, ready) = (this.raw.len(), this.ready.len());
                this.process();
                if this.raw.len() != raw || this.ready.len() != ready {
                    continue;
                }
            }
            if this.raw.capacity() - this.raw.len() < READ_CHUNK {
                this.raw.reserve(READ_CHUNK);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.raw
            ))?;
            if n == 0 {
                // End of stream: whatever is held goes on as it is.
                if let State::Block(block) = &mut this.state {
                    let frames = std::mem::take(&mut block.frames);
                    this.ready.unsplit(frames);
                }
                let rest = this.raw.split();
                this.ready.unsplit(rest);
                this.state = State::Passthrough;
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AuthorityRepair<IO> {
    /// Read bytes that need no looking at straight into h2's buffer; what
    /// arrived past the current frame is taken back to be looked at.
    fn read_direct(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let limit = buf.remaining().min(DIRECT_READ);
        let dst = buf.initialize_unfilled_to(limit);
        let mut sub = ReadBuf::new(dst);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        buf.advance(n);
        if let State::Payload(left) = &mut self.state {
            if n >= *left {
                let keep = before + *left;
                self.raw.extend_from_slice(&buf.filled()[keep..]);
                buf.set_filled(keep);
                self.state = State::FrameHeader;
            } else {
                *left -= n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for AuthorityRepair<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn request_headers(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/etcdserverpb.Maintenance/Status".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    /// Feed `input` through the repair `step` bytes at a time; what h2 sees.
    async fn through_repair(input: Vec<u8>, step: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(step) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut repaired = AuthorityRepair::new(server);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = repaired.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        out
    }

    /// Every header block of a frame stream, decoded in order with one
    /// HPACK decoder (as h2 would).
    fn decoded_blocks(mut bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut pending = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let (kind, flags) = (bytes[3], bytes[4]);
            let payload = &bytes[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS {
                let (fragment, _) = headers_fragment(payload, flags).unwrap();
                pending.extend_from_slice(fragment);
            } else if kind == CONTINUATION {
                pending.extend_from_slice(payload);
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                blocks.push(decoder.decode(&pending).unwrap());
                pending.clear();
            }
            bytes = &bytes[FRAME_HEADER + len..];
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &block.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[tokio::test]
    async fn a_url_authority_becomes_its_host_and_port_for_every_request() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let headers = request_headers(b"http://127.0.0.1:2379");
        for stream in [1u32, 3, 5] {
            let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
            if stream == 3 {
                // Split across a CONTINUATION, padded and with priority.
                let (a, b) = block.split_at(block.len() / 2);
                let mut payload = vec![2u8];
                payload.extend_from_slice(&[0, 0, 0, 0, 16]);
                payload.extend_from_slice(a);
                payload.extend_from_slice(&[0, 0]);
                input.extend(frame(HEADERS, PADDED | PRIORITY, stream, &payload));
                input.extend(frame(CONTINUATION, END_HEADERS, stream, b));
            } else {
                input.extend(frame(HEADERS, END_HEADERS, stream, &block));
            }
            input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        for step in [1, 5, 4096] {
            let out = through_repair(input.clone(), step).await;
            let blocks = decoded_blocks(&out);
            assert_eq!(blocks.len(), 3);
            for block in &blocks {
                assert_eq!(authority(block), b"127.0.0.1:2379");
                assert_eq!(block.len(), headers.len());
                assert_eq!(block[2].1, headers[2].1);
            }
        }
    }

    #[tokio::test]
    async fn valid_authorities_and_http1_pass_through_byte_for_byte() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let block = encoder.encode(
            request_headers(b"127.0.0.1:2379")
                .iter()
                .map(|(n, v)| (&n[..], &v[..])),
        );
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(0x0, 0, 1, &[7; 40_000]));
        assert_eq!(through_repair(input.clone(), 3).await, input);
        assert_eq!(through_repair(input.clone(), 20_000).await, input);
        let http1 = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n{}".to_vec();
        assert_eq!(through_repair(http1.clone(), 2).await, http1);
    }

    #[test]
    fn repaired_authorities() {
        let cases: [(&[u8], Option<&[u8]>); 6] = [
            (b"127.0.0.1:2379", None),
            (b"http://127.0.0.1:2379", Some(b"127.0.0.1:2379")),
            (
                b"https://user@host.example:443/path?q",
                Some(b"host.example:443"),
            ),
            (b"unix:///run/etcd.sock", Some(b"localhost")),
            (b"/a b", None),
            (b"http://[::1]:2379", Some(b"[::1]:2379")),
        ];
        for (value, want) in cases {
            assert_eq!(repaired_authority(value).as_deref(), want, "{value:?}");
        }
    }

    #[test]
    fn hpack_integers_round_trip_and_overlong_ones_are_refused() {
        for prefix in [4, 5, 6, 7] {
            for value in [0u64, 1, 14, 15, 16, 126, 127, 128, 300, 1 << 20] {
                let mut out = Vec::new();
                put_integer(&mut out, value, prefix, 0);
                let mut pos = 0;
                assert_eq!(integer(&out, &mut pos, prefix), Some(value));
                assert_eq!(pos, out.len());
            }
        }
        let overlong = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(integer(&overlong, &mut 0, 7), None);
        assert_eq!(repaired_fragment(&[0x41, 0x7f]), None);
    }
}
