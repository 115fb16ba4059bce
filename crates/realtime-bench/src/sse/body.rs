//! An HTTP/1.1 response read straight off the socket: the status line and
//! headers (parsed by `httparse`), then the body decoded incrementally from
//! chunked transfer coding, a `Content-Length`, or the connection's end.

use anyhow::{Context as _, bail};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Most bytes of a response head.
const MAX_HEAD: usize = 16 * 1024;
/// Headers a response may have.
const MAX_HEADERS: usize = 32;

/// The status line and the headers the client looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_type: Option<String>,
    pub framing: Framing,
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    UntilClose,
}

/// Reads the response head from `tcp` into `raw`; what follows the head stays
/// in `raw`.
pub async fn read_head(tcp: &mut TcpStream, raw: &mut BytesMut) -> anyhow::Result<Head> {
    loop {
        if let Some((consumed, head)) = parse_head(raw)? {
            raw.advance(consumed);
            return Ok(head);
        }
        if raw.len() > MAX_HEAD {
            bail!("response head longer than {MAX_HEAD} bytes");
        }
        raw.reserve(4096);
        if tcp
            .read_buf(raw)
            .await
            .context("reading the response head")?
            == 0
        {
            bail!("connection closed before the response head");
        }
    }
}

/// The head at the start of `raw` and its length, once complete.
pub fn parse_head(raw: &[u8]) -> anyhow::Result<Option<(usize, Head)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let consumed = match response.parse(raw).context("malformed response head")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    let framing = match (chunked, header("content-length")) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n.parse().context("bad content-length")?),
        (false, None) => Framing::UntilClose,
    };
    Ok(Some((
        consumed,
        Head {
            status: response.code.unwrap_or(0),
            content_type: header("content-type"),
            framing,
        },
    )))
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk (or a Content-Length body): bytes left.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one.
    Trailers,
    Done,
}

/// Decodes a body's framing incrementally.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Chunked => State::Size,
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Data(n),
            Framing::UntilClose => State::Data(u64::MAX),
        };
        Decoder { framing, state }
    }

    /// Whether the body has ended (its last chunk, or its length, was read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends only when the connection does.
    pub fn until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// Decodes what `raw` holds, handing body bytes to `out`; returns how many
    /// bytes of `raw` it used (the rest is an incomplete size line or CRLF).
    pub fn decode(&mut self, raw: &[u8], mut out: impl FnMut(&[u8])) -> anyhow::Result<usize> {
        let mut pos = 0;
        loop {
            let rest = &raw[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = match (left, self.framing) {
                        (0, Framing::Chunked) => State::DataEnd,
                        (0, _) => State::Done,
                        (_, Framing::UntilClose) => State::Data(u64::MAX),
                        (n, _) => State::Data(n),
                    };
                }
                State::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        pos += used;
                        self.state = State::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        self.state = State::Data(size);
                    }
                    Ok(httparse::Status::Partial) => return Ok(pos),
                    Err(_) => bail!("malformed chunk size"),
                },
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        bail!("chunk data not followed by CRLF");
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(pos);
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

    #[test]
    fn parses_the_head_and_knows_the_framing() {
        assert_eq!(parse_head(&HEAD[..HEAD.len() - 1]).unwrap(), None);
        let mut raw = HEAD.to_vec();
        raw.extend_from_slice(b"5\r\nhello");
        let (used, head) = parse_head(&raw).unwrap().unwrap();
        assert_eq!(used, HEAD.len());
        assert_eq!(head.status, 200);
        assert_eq!(head.content_type.as_deref(), Some("text/event-stream"));
        assert_eq!(head.framing, Framing::Chunked);
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\n";
        let (_, head) = parse_head(refused).unwrap().unwrap();
        assert_eq!((head.status, head.framing), (403, Framing::Length(12)));
        let (_, head) = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    /// Decodes `wire` fed in pieces of `step` bytes, as reads would deliver it.
    fn decode_in_steps(framing: Framing, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut decoder = Decoder::new(framing);
        let (mut raw, mut body) = (Vec::new(), Vec::new());
        for piece in wire.chunks(step) {
            raw.extend_from_slice(piece);
            let used = decoder.decode(&raw, |b| body.extend_from_slice(b)).unwrap();
            raw.drain(..used);
        }
        (body, decoder.is_done())
    }

    #[test]
    fn decodes_chunked_bodies_split_anywhere() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            let (body, done) = decode_in_steps(Framing::Chunked, wire, step);
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(done, "step {step}");
        }
        let (body, done) = decode_in_steps(Framing::Chunked, b"3\r\nabc\r\n", 2);
        assert_eq!(
            (body.as_slice(), done),
            (&b"abc"[..], false),
            "stream still open"
        );
        let mut decoder = Decoder::new(Framing::Chunked);
        assert!(decoder.decode(b"zz\r\n", |_| {}).is_err());
        let mut decoder = Decoder::new(Framing::Chunked);
        assert!(decoder.decode(b"1\r\nabc\r\n", |_| {}).is_err());
    }

    #[test]
    fn decodes_length_and_until_close_bodies() {
        let (body, done) = decode_in_steps(Framing::Length(5), b"hello, world", 3);
        assert_eq!((body.as_slice(), done), (&b"hello"[..], true));
        let (body, done) = decode_in_steps(Framing::UntilClose, b"hello, world", 4);
        assert_eq!((body.as_slice(), done), (&b"hello, world"[..], false));
        assert!(Decoder::new(Framing::Length(0)).is_done());
    }
}
