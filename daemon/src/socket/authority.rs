//! Accepting the `:authority` that gRPC clients send over a Unix socket.
//!
//! Python's `grpcio` (1.57 and later), grpc-java and grpcurl 1.8 send the socket path (raw, or
//! percent-encoded) as the HTTP/2 `:authority` of a call on a `unix:` channel. That is not an
//! authority (RFC 3986), and the server's HTTP/2 layer (h2) resets every such stream with
//! `PROTOCOL_ERROR`, with no setting to relax it (hyperium/h2#487 is still open). The daemon
//! ignores the authority anyway (it serves one socket), so this layer, between the socket
//! and the HTTP/2 server, puts `localhost` (what grpc-go and tonic send) in its place.
//!
//! It reads only what the client sends (the server's responses and log streams are not
//! touched): the connection preface, then frame by frame, passing every frame through as it
//! is but HEADERS and CONTINUATION. Each complete header block is decoded (HPACK, with the
//! client's dynamic table, by `loona-hpack`), its `:authority` replaced when it is not a valid
//! authority, and encoded again as literals that never enter the server's dynamic table, so
//! the server's table stays empty and never disagrees with the client's (a block passed
//! through unchanged after one rewritten could otherwise refer to entries the server never
//! saw). That costs a few bytes per request and no state beyond the client's table.
//!
//! Huffman-coded strings are decoded by [`super::huffman`] (a table built once), not by
//! `loona-hpack`'s decoder, which builds its table anew for every string.
//!
//! Rewriting costs a full HPACK decode per request, so it is done only on connections
//! that need it: the first header block of a connection is scanned cheaply (its
//! `:authority` found without decoding anything else); when it is a valid authority (or
//! absent), as from ctl, grpc-go or tonic, the connection is passed through untouched from
//! there on. Only a client whose first request needs mending is rewritten, all of its blocks
//! (a client's authority does not change within a connection).
//!
//! Anything it cannot make sense of after the preface (an HPACK error, a header block over
//! [`MAX_BLOCK`], a frame over the default maximum frame size where a header block is being
//! collected) ends the connection with an error, as the server would have; a connection
//! that does not start with the HTTP/2 preface is passed through untouched for the server
//! to refuse.

use loona_hpack::Decoder;
use std::fmt;
use tonic::codegen::http::uri::Authority;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame payload the server accepts (`SETTINGS_MAX_FRAME_SIZE`: the server
/// leaves the default).
const MAX_FRAME: usize = 16_384;

/// The largest header block (HEADERS plus CONTINUATION fragments) collected for rewriting.
pub const MAX_BLOCK: usize = 1 << 20;

/// `SETTINGS_HEADER_TABLE_SIZE` of the server (the default: it never sends another), the
/// most the client's encoder may use.
const TABLE_SIZE: usize = 4096;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// What replaces an authority that is not one.
const LOCALHOST: &[u8] = b"localhost";

/// Why a connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixError {
    /// The client's header block did not decode.
    Hpack(String),
    /// A header block larger than [`MAX_BLOCK`].
    BlockTooLarge,
    /// A HEADERS or CONTINUATION frame larger than the server accepts.
    FrameTooLarge(usize),
    /// A frame where the HTTP/2 framing rules allow none (not a CONTINUATION of the open
    /// header block, bad padding).
    Framing(&'static str),
}

impl fmt::Display for FixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hpack(e) => write!(f, "the client's HTTP/2 header block does not decode: {e}"),
            Self::BlockTooLarge => write!(f, "an HTTP/2 header block over {MAX_BLOCK} bytes"),
            Self::FrameTooLarge(n) => {
                write!(
                    f,
                    "an HTTP/2 header frame of {n} bytes (the limit is {MAX_FRAME})"
                )
            }
            Self::Framing(what) => write!(f, "malformed HTTP/2 framing: {what}"),
        }
    }
}

impl std::error::Error for FixError {}

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// This many bytes of the preface have matched.
    Preface(usize),
    /// Not HTTP/2 with prior knowledge: everything passes through.
    Passthrough,
    /// Collecting a 9-byte frame header (this many bytes so far).
    Header(usize),
    /// Passing this many more payload bytes of a frame through.
    Skip(usize),
    /// Collecting this many more payload bytes of a HEADERS (`true`) or CONTINUATION frame.
    Collect(usize, bool),
}

/// The header block being collected: from its HEADERS frame to END_HEADERS.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The rewriter of one connection's client-to-server bytes (sans I/O: bytes in, bytes out).
pub struct AuthorityFix {
    state: State,
    head: [u8; 9],
    flags: u8,
    payload: Vec<u8>,
    block: Option<Block>,
    decoder: Decoder<'static>,
    /// The first header block needed mending: every block of the connection is rewritten.
    rewriting: bool,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityFix {
    /// The rewriter for a new connection.
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            state: State::Preface(0),
            head: [0; 9],
            flags: 0,
            payload: Vec::new(),
            block: None,
            decoder,
            rewriting: false,
        }
    }

    /// Whether everything from here on passes through untouched (no need to feed it).
    pub fn passing_through(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// Takes the next bytes the client sent and appends what the server is to read to
    /// `out` (possibly nothing yet: part of a frame is held until it is complete).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FixError> {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface(got) => {
                    let n = input.len().min(PREFACE.len() - got);
                    if input[..n] != PREFACE[got..got + n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if got + n == PREFACE.len() {
                        State::Header(0)
                    } else {
                        State::Preface(got + n)
                    };
                }
                State::Header(got) => {
                    let n = input.len().min(9 - got);
                    self.head[got..got + n].copy_from_slice(&input[..n]);
                    input = &input[n..];
                    if got + n == 9 {
                        self.frame_header(out)?;
                    } else {
                        self.state = State::Header(got + n);
                    }
                }
                State::Skip(left) => {
                    let n = input.len().min(left);
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        State::Header(0)
                    } else {
                        State::Skip(left - n)
                    };
                }
                State::Collect(left, headers) => {
                    let n = input.len().min(left);
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == left {
                        self.state = State::Header(0);
                        self.header_payload(headers, out)?;
                    } else {
                        self.state = State::Collect(left - n, headers);
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete frame header: decides what happens to its payload.
    fn frame_header(&mut self, out: &mut Vec<u8>) -> Result<(), FixError> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let kind = h[3];
        self.flags = h[4];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let headers = match kind {
            HEADERS if self.block.is_none() => true,
            CONTINUATION if self.block.as_ref().is_some_and(|b| b.stream == stream) => false,
            _ if self.block.is_some() => {
                return Err(FixError::Framing(
                    "a frame inside a header block that is not its CONTINUATION",
                ))
            }
            CONTINUATION => return Err(FixError::Framing("a CONTINUATION without HEADERS")),
            _ => {
                out.extend_from_slice(&h);
                self.state = if len == 0 {
                    State::Header(0)
                } else {
                    State::Skip(len)
                };
                return Ok(());
            }
        };
        if len > MAX_FRAME {
            return Err(FixError::FrameTooLarge(len));
        }
        if headers {
            self.block = Some(Block {
                stream,
                end_stream: self.flags & END_STREAM != 0,
                priority: None,
                fragment: Vec::new(),
            });
        }
        self.payload.clear();
        if len == 0 {
            self.header_payload(headers, out)
        } else {
            self.state = State::Collect(len, headers);
            Ok(())
        }
    }

    /// A complete HEADERS or CONTINUATION payload: adds its fragment to the block, and
    /// writes the block out once it is complete.
    fn header_payload(&mut self, headers: bool, out: &mut Vec<u8>) -> Result<(), FixError> {
        let mut p = std::mem::take(&mut self.payload);
        let flags = self.flags;
        let block = self
            .block
            .as_mut()
            .ok_or(FixError::Framing("a header fragment without HEADERS"))?;
        let mut fragment: &[u8] = &p;
        if headers {
            if flags & PADDED != 0 {
                let (&pad, rest) = fragment
                    .split_first()
                    .ok_or(FixError::Framing("PADDED without a pad length"))?;
                let keep = rest
                    .len()
                    .checked_sub(usize::from(pad))
                    .ok_or(FixError::Framing("more padding than payload"))?;
                fragment = &rest[..keep];
            }
            if flags & PRIORITY != 0 {
                let (priority, rest) = fragment
                    .split_first_chunk::<5>()
                    .ok_or(FixError::Framing("PRIORITY without its 5 bytes"))?;
                block.priority = Some(*priority);
                fragment = rest;
            }
        }
        if block.fragment.len() + fragment.len() > MAX_BLOCK {
            return Err(FixError::BlockTooLarge);
        }
        block.fragment.extend_from_slice(fragment);
        p.clear();
        self.payload = p;
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.write_block(block, out)?;
            }
        }
        Ok(())
    }

    /// Decodes a complete header block, mends its `:authority` and writes it out again as
    /// HEADERS (and CONTINUATION) frames.
    fn write_block(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), FixError> {
        if !self.rewriting {
            if !needs_mending(&block.fragment) {
                emit(&block, &block.fragment, out);
                self.state = State::Passthrough;
                return Ok(());
            }
            self.rewriting = true;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16);
        // Its Huffman strings decoded here first: loona-hpack's own decoder costs ~100 times
        // more (see `huffman`). A block that does not parse goes to it as it is, to say why.
        let plain = super::huffman::plain_block(&block.fragment);
        self.decoder
            .decode_with_cb(
                plain.as_deref().unwrap_or(&block.fragment),
                |name, value| {
                    let value: &[u8] =
                        if &*name == b":authority" && Authority::try_from(&*value).is_err() {
                            LOCALHOST
                        } else {
                            &value
                        };
                    literal(&name, value, &mut encoded);
                },
            )
            .map_err(|e| FixError::Hpack(format!("{e:?}")))?;
        emit(&block, &encoded, out);
        Ok(())
    }
}

/// Writes the header block `encoded` of `block`'s stream as HEADERS (with its priority and
/// END_STREAM) and CONTINUATION frames of at most [`MAX_FRAME`] bytes.
fn emit(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    {
        let mut first = Vec::with_capacity(5 + encoded.len().min(MAX_FRAME));
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if let Some(priority) = block.priority {
            flags |= PRIORITY;
            first.extend_from_slice(&priority);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(room));
        first.extend_from_slice(head);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame(HEADERS, flags, block.stream, &first, out);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
            let flags = if more.is_empty() { END_HEADERS } else { 0 };
            frame(CONTINUATION, flags, block.stream, chunk, out);
            rest = more;
        }
    }
}

/// Whether a connection's first header block needs mending: its `:authority` is not a valid
/// authority, or cannot be told without the client's table (a reference into it), or the
/// block does not parse (the full decoder will then say why). Nothing but the authority
/// (and a literal name) is decoded.
fn needs_mending(block: &[u8]) -> bool {
    let mut p = Reader { buf: block };
    while let Some(&b) = p.buf.first() {
        let prefix = if b & 0x80 != 0 {
            // Indexed: static entry 1 is `:authority` with an empty value (not an authority);
            // an entry of the dynamic table is unknown here.
            return match p.integer(7) {
                Some(1) | Some(62..) | None => true,
                Some(_) => continue,
            };
        } else if b & 0xC0 == 0x40 {
            6
        } else if b & 0xE0 == 0x20 {
            if p.integer(5).is_none() {
                return true;
            }
            continue;
        } else {
            4
        };
        let authority = match p.integer(prefix) {
            Some(0) => match p.string().and_then(|(h, raw)| decoded(h, raw)) {
                Some(name) => name == b":authority",
                None => return true,
            },
            Some(1) => true,
            Some(2..=61) => false,
            _ => return true,
        };
        let Some((huffman, raw)) = p.string() else {
            return true;
        };
        if authority {
            return decoded(huffman, raw).is_none_or(|v| Authority::try_from(&v[..]).is_err());
        }
    }
    false
}

/// A string literal's bytes, Huffman-decoded when `huffman`.
fn decoded(huffman: bool, raw: &[u8]) -> Option<Vec<u8>> {
    if huffman {
        super::huffman::decode(raw)
    } else {
        Some(raw.to_vec())
    }
}

/// Reads HPACK integers and string literals off the front of a block (RFC 7541 §5).
pub(super) struct Reader<'a> {
    /// What is left of the block.
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// An integer with an N-bit prefix; `None` when the block ends or it overflows.
    pub(super) fn integer(&mut self, prefix: u8) -> Option<usize> {
        let (&first, mut rest) = self.buf.split_first()?;
        let max = (1usize << prefix) - 1;
        let mut n = usize::from(first) & max;
        if n == max {
            let mut shift = 0u32;
            loop {
                let (&b, more) = rest.split_first()?;
                rest = more;
                n = n.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 28 {
                    return None;
                }
            }
        }
        self.buf = rest;
        Some(n)
    }

    /// A string literal: whether it is Huffman-coded, and its raw bytes.
    pub(super) fn string(&mut self) -> Option<(bool, &'a [u8])> {
        let huffman = self.buf.first()? & 0x80 != 0;
        let len = self.integer(7)?;
        if len > self.buf.len() {
            return None;
        }
        let (raw, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some((huffman, raw))
    }
}

/// One frame: the 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A header field as a literal without indexing with a literal name (RFC 7541 §6.2.2): it
/// never enters the decoder's dynamic table.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    string(name, out);
    string(value, out);
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
pub(super) fn string(s: &[u8], out: &mut Vec<u8>) {
    integer(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 §5.1), the prefix's other bits `high`.
fn integer(mut n: usize, prefix: u8, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(high | n as u8);
        return;
    }
    out.push(high | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &str, path: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "3S"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// A client's bytes: the preface, a SETTINGS frame, then for each request a HEADERS
    /// frame (encoded with a dynamic table, as real clients do) and a DATA frame.
    fn client(requests: &[Headers], split_at: Option<usize>, flags: u8) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = PREFACE.to_vec();
        frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100], &mut out);
        for (i, headers) in requests.iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            let block = enc.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
            let mut payload = Vec::new();
            if flags & PADDED != 0 {
                payload.push(3);
            }
            if flags & PRIORITY != 0 {
                payload.extend_from_slice(&[0, 0, 0, 0, 15]);
            }
            match split_at {
                Some(at) if at < block.len() => {
                    payload.extend_from_slice(&block[..at]);
                    if flags & PADDED != 0 {
                        payload.extend_from_slice(&[0; 3]);
                    }
                    frame(HEADERS, flags, stream, &payload, &mut out);
                    let chunks: Vec<_> = block[at..].chunks(MAX_FRAME).collect();
                    for (i, chunk) in chunks.iter().enumerate() {
                        let last = i + 1 == chunks.len();
                        let flags = if last { END_HEADERS } else { 0 };
                        frame(CONTINUATION, flags, stream, chunk, &mut out);
                    }
                }
                _ => {
                    payload.extend_from_slice(&block);
                    if flags & PADDED != 0 {
                        payload.extend_from_slice(&[0; 3]);
                    }
                    frame(HEADERS, flags | END_HEADERS, stream, &payload, &mut out);
                }
            }
            frame(0x0, END_STREAM, stream, b"\0\0\0\0\x02\x08\x01", &mut out);
        }
        out
    }

    /// What the server reads: each header block decoded with a fresh server-side decoder,
    /// and the DATA payloads, in order.
    fn server(bytes: &[u8]) -> (Vec<Headers>, Vec<Vec<u8>>) {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let (mut blocks, mut data, mut block) = (Vec::new(), Vec::new(), Vec::new());
        while !rest.is_empty() {
            let len = (rest[0] as usize) << 16 | (rest[1] as usize) << 8 | rest[2] as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let mut payload = &rest[9..9 + len];
            rest = &rest[9 + len..];
            match kind {
                HEADERS | CONTINUATION => {
                    assert_eq!(flags & PADDED, 0, "padding is dropped");
                    if kind == HEADERS && flags & PRIORITY != 0 {
                        assert_eq!(&payload[..5], &[0, 0, 0, 0, 15], "priority kept");
                        payload = &payload[5..];
                    }
                    block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        blocks.push(dec.decode(&block).expect("the server decodes it"));
                        block.clear();
                    }
                }
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
        }
        (blocks, data)
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            fix.feed(piece, &mut out).expect("feed");
        }
        out
    }

    #[test]
    fn invalid_authorities_become_localhost_and_the_rest_is_kept() {
        let requests = [
            request(
                "%2Frun%2Fscriptd%2Fscriptd.sock",
                "/scriptd.v1.Scriptd/Status",
            ),
            // The same again: the client now refers to its dynamic table.
            request(
                "%2Frun%2Fscriptd%2Fscriptd.sock",
                "/scriptd.v1.Scriptd/Status",
            ),
            request("/run/scriptd/scriptd.sock", "/grpc.health.v1.Health/Check"),
            request("localhost", "/scriptd.v1.Scriptd/History"),
            request("example.org:7443", "/scriptd.v1.Scriptd/Status"),
        ];
        let expected: Vec<Headers> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                if i < 3 {
                    r[3].1 = b"localhost".to_vec();
                }
                r
            })
            .collect();
        for flags in [0, PADDED, PRIORITY, PADDED | PRIORITY] {
            for split in [None, Some(1), Some(5)] {
                let input = client(&requests, split, flags);
                for chunk in [1, 2, 7, 64, input.len()] {
                    let (blocks, data) = server(&run(&input, chunk));
                    assert_eq!(
                        blocks, expected,
                        "flags {flags:#x} split {split:?} chunk {chunk}"
                    );
                    assert_eq!(data.len(), requests.len());
                    assert!(data.iter().all(|d| d == b"\0\0\0\0\x02\x08\x01"));
                }
            }
        }
    }

    #[test]
    fn a_connection_whose_first_authority_is_valid_passes_through_untouched() {
        let requests = [
            request("scriptd.invalid", "/scriptd.v1.Scriptd/Status"),
            request("scriptd.invalid", "/scriptd.v1.Scriptd/Status"),
        ];
        for flags in [0, PRIORITY] {
            let input = client(&requests, None, flags);
            for chunk in [1, 7, input.len()] {
                assert_eq!(run(&input, chunk), input, "flags {flags:#x} chunk {chunk}");
            }
        }
    }

    #[test]
    fn a_huffman_coded_authority_is_read() {
        // RFC 7541 C.4.1: "www.example.com", Huffman-coded, after :method GET.
        let valid = [
            &[0x82, 0x41, 0x8c][..],
            &[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
            ],
        ]
        .concat();
        assert!(!needs_mending(&valid));
        // "/a": '/' 011000, 'a' 00011, then EOS padding.
        assert!(needs_mending(&[0x41, 0x82, 0x60, 0x7f]));
        // A literal name, raw.
        assert!(needs_mending(&[
            0x00, 10, b':', b'a', b'u', b't', b'h', b'o', b'r', b'i', b't', b'y', 1, b'/'
        ]));
        // The static entry's empty value, a reference into the client's table, no authority.
        assert!(needs_mending(&[0x81]));
        assert!(needs_mending(&[0xbe]));
        assert!(!needs_mending(&[0x82, 0x86, 0x84]));
    }

    #[test]
    fn huffman_coded_blocks_are_mended_too() {
        // GET http / with `:authority: /a` Huffman-coded, added to the client's table
        // (RFC 7541 C.4.1's layout), then the same request naming that entry (62).
        let mut input = PREFACE.to_vec();
        let first = [0x82, 0x86, 0x84, 0x41, 0x82, 0x60, 0x7f];
        frame(HEADERS, END_HEADERS | END_STREAM, 1, &first, &mut input);
        frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &[0x82, 0x86, 0x84, 0xbe],
            &mut input,
        );
        let want: Headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "localhost"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        for chunk in [1, 5, input.len()] {
            let (blocks, _) = server(&run(&input, chunk));
            assert_eq!(blocks, [want.clone(), want.clone()], "chunk {chunk}");
        }
    }

    #[test]
    fn a_large_block_is_split_into_continuations() {
        let mut headers = request("/run/x.sock", "/scriptd.v1.Scriptd/Status");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let input = client(std::slice::from_ref(&headers), Some(100), 0);
        let out = run(&input, 4096);
        let (blocks, _) = server(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0][3].1, b"localhost");
        assert_eq!(blocks[0][7].1.len(), 40_000);
    }

    #[test]
    fn not_http2_passes_through_untouched() {
        let input = b"GET / HTTP/1.1\r\nHost: /run/x.sock\r\n\r\n";
        assert_eq!(run(input, 3), input);
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic() {
        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        let mut input = PREFACE.to_vec();
        frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff],
            &mut input,
        );
        assert!(matches!(
            fix.feed(&input, &mut out),
            Err(FixError::Hpack(_))
        ));

        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[0, 0x80, 0, HEADERS, 0, 0, 0, 0, 1]);
        assert_eq!(
            AuthorityFix::new().feed(&input, &mut out),
            Err(FixError::FrameTooLarge(32_768))
        );

        let mut input = PREFACE.to_vec();
        frame(HEADERS, 0, 1, &[0x82], &mut input);
        frame(0x0, 0, 1, b"x", &mut input);
        assert!(matches!(
            AuthorityFix::new().feed(&input, &mut out),
            Err(FixError::Framing(_))
        ));

        let mut input = PREFACE.to_vec();
        frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 0x82], &mut input);
        assert!(matches!(
            AuthorityFix::new().feed(&input, &mut out),
            Err(FixError::Framing(_))
        ));
    }

    #[test]
    fn a_table_size_over_the_servers_is_refused() {
        let mut input = PREFACE.to_vec();
        let mut block = Vec::new();
        integer(1 << 20, 5, 0x20, &mut block);
        // An authority that needs mending, so the block is decoded here.
        block.extend_from_slice(&[0x41, 2, b'/', b'x']);
        frame(HEADERS, END_HEADERS, 1, &block, &mut input);
        assert!(matches!(
            AuthorityFix::new().feed(&input, &mut Vec::new()),
            Err(FixError::Hpack(_))
        ));
    }

    #[test]
    fn integers_round_trip_through_the_decoder() {
        for n in [0, 1, 126, 127, 128, 255, 16_383, 1 << 20] {
            let mut block = Vec::new();
            block.push(0);
            string(b"nnn", &mut block);
            string(&vec![b'v'; n], &mut block);
            let decoded = Decoder::new().decode(&block).expect("decode");
            assert_eq!(decoded[0].1.len(), n);
        }
    }
}
