//! The load generator's HTTP/1.1 client: one keep-alive connection per worker, one request at
//! a time, requests written as prepared bytes and responses parsed only as far as needed
//! (status, `content-length` or chunked body).
//!
//! On a shared machine the load generator competes for the same cores as the system it
//! measures, so its own cost shows up in the result. A general pooled client costs several
//! task wakeups per request (pool checkout, a separate connection task); this costs one write
//! and usually one read, like `wrk` or `redis-benchmark`, whose numbers we compare against.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How a response's body is delimited, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// No length: the body runs until the server closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes of the head, including the blank line.
    len: usize,
    framing: Framing,
    close: bool,
}

/// Parses a response head from the start of `buf`; `Ok(None)` if it is not complete yet.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("malformed response head: {e}"))),
    };
    let status = response.code.unwrap_or_default();
    let mut framing =
        if matches!(status, 100..=199 | 204 | 304) { Framing::Length(0) } else { Framing::UntilClose };
    let mut close = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = value.parse().map_err(|_| invalid(format!("bad content-length `{value}`")))?;
            framing = Framing::Length(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Ok(Some(Head { status, len, framing, close: close || framing == Framing::UntilClose }))
}

/// Decodes a chunked body from the start of `buf`: `Ok(Some((body, consumed)))` once the last
/// chunk (and the trailer's blank line) is in, `Ok(None)` while more is needed.
fn decode_chunked(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete((start, size))) => (at + start, size as usize),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("malformed chunk size".into())),
        };
        if size == 0 {
            // No trailers are expected: the last chunk is followed by a blank line.
            return Ok((buf.len() >= start + 2).then(|| (body, start + 2)));
        }
        if buf.len() < start + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[start..start + size]);
        at = start + size + 2;
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One keep-alive connection to `host:port`, opened on first use and reopened after the server
/// closes it.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), stream: None, buf: Vec::with_capacity(16 << 10) }
    }

    /// Drops the connection (the next request opens a new one).
    pub fn reset(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the response. A connection the
    /// server closed while idle is reopened and the request sent once more; any other failure
    /// is returned and the connection dropped.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_send(request).await {
            Err(e) if reused && self.buf.is_empty() && is_stale_connection(&e) => {
                self.stream = None;
                self.try_send(request).await
            }
            result => result,
        }
        .inspect_err(|_| self.stream = None)
    }

    async fn try_send(&mut self, request: &[u8]) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        self.buf.clear();
        stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let body = match head.framing {
            Framing::Length(length) => {
                while self.buf.len() < head.len + length {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf[head.len..head.len + length].to_vec()
            }
            Framing::Chunked => loop {
                if let Some((body, _)) = decode_chunked(&self.buf[head.len..])? {
                    break body;
                }
                read_more(stream, &mut self.buf).await?;
            },
            Framing::UntilClose => {
                stream.read_to_end(&mut self.buf).await?;
                self.buf[head.len..].to_vec()
            }
        };
        if head.close {
            self.stream = None;
        }
        self.buf.clear();
        Ok(Response { status: head.status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 << 10);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response ended",
        ));
    }
    Ok(())
}

fn is_stale_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_heads_and_their_framing() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((head.status, head.len, head.framing, head.close), (200, 38, Framing::Length(5), false));
        let head =
            parse_head(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.framing), (404, Framing::Chunked));
        let head = parse_head(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.close);
        let head = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.framing, head.close), (Framing::UntilClose, true));
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(0));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None, "incomplete");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn decodes_chunked_bodies_only_once_complete() {
        let full = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(decode_chunked(full).unwrap(), Some((b"hello world".to_vec(), full.len())));
        for cut in 0..full.len() {
            assert_eq!(decode_chunked(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(decode_chunked(b"zz\r\n").is_err());
    }

    /// A server that answers each request on a connection with the next canned response, and
    /// closes the connection after `per_connection` of them.
    async fn serve(responses: Vec<&'static [u8]>, per_connection: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                for _ in 0..per_connection {
                    let mut request = Vec::new();
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        let n = socket.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&chunk[..n]);
                    }
                    let Some(response) = responses.next() else { return };
                    // Split the response to exercise reads that end mid-message.
                    let (a, b) = response.split_at(response.len() / 2);
                    socket.write_all(a).await.unwrap();
                    tokio::task::yield_now().await;
                    socket.write_all(b).await.unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn keeps_connections_alive_and_reconnects_when_the_server_closed_one() {
        let addr = serve(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none",
                b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree",
            ],
            2,
        )
        .await;
        let mut conn = Conn::new(addr);
        let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(conn.send(get).await.unwrap(), Response { status: 200, body: b"one".to_vec() });
        assert_eq!(conn.send(get).await.unwrap(), Response { status: 404, body: b"two".to_vec() });
        // The server closed the first connection after two answers: the third goes on a new one.
        assert_eq!(conn.send(get).await.unwrap(), Response { status: 200, body: b"three".to_vec() });
    }

    #[tokio::test]
    async fn reports_a_server_that_is_not_there() {
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let mut conn = Conn::new(addr); // the listener is dropped: nothing listens
        assert!(conn.send(b"GET / HTTP/1.1\r\n\r\n").await.is_err());
    }
}
