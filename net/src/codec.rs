//! The job protocol's codec: CBOR with explicit caps, and malformed requests kept visible.
//!
//! libp2p's request-response silently drops an inbound request whose decoding fails, so the
//! node would never learn who sent it. This codec wraps the stock CBOR codec: it reads at
//! most `max_request_bytes + 1` bytes itself and hands a request that is too large or does
//! not decode up as [`Inbound::Malformed`], which the event loop answers with a typed error
//! and counts as a strike against the sender.
//!
//! Decoding itself is [`decode_request`] and [`decode_response`]: pure functions over the
//! bytes read off the stream, which the codec calls and the fuzz targets call too, so the
//! fuzzers exercise exactly the path a peer's bytes take.

use std::io;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, FutureExt as _};
use libp2p::StreamProtocol;
use libp2p::request_response::{Codec, cbor};

use crate::protocol::{JOB_PROTOCOL, Request, Response};

/// Decodes an inbound request from the bytes read off the stream, as the job codec does:
/// more than `max_request` bytes, or bytes that are not the CBOR of a [`Request`], give
/// [`Inbound::Malformed`]. Never fails otherwise, and never panics.
pub fn decode_request(bytes: &[u8], max_request: u64) -> Inbound {
    if bytes.len() as u64 > max_request {
        return Inbound::Malformed(format!("request exceeds {max_request} bytes"));
    }
    // The stock codec reads from an `AsyncRead`; over an in-memory cursor every read is
    // ready at once, so the future completes on its first poll.
    let mut codec =
        cbor::codec::Codec::<Request, Response>::default().set_request_size_maximum(max_request);
    let mut cursor = futures::io::Cursor::new(bytes);
    match codec
        .read_request(&StreamProtocol::new(JOB_PROTOCOL), &mut cursor)
        .now_or_never()
    {
        Some(Ok(r)) => Inbound::Request(r),
        Some(Err(e)) => Inbound::Malformed(format!("undecodable request: {e}")),
        None => Inbound::Malformed("undecodable request: incomplete read".into()),
    }
}

/// Decodes a response from the bytes read off the stream, as the job codec does: at most
/// `max_response` bytes are considered (the codec never reads more), and they must be the
/// CBOR of a [`Response`]. Never panics.
pub fn decode_response(bytes: &[u8], max_response: u64) -> io::Result<Response> {
    let mut codec =
        cbor::codec::Codec::<Request, Response>::default().set_response_size_maximum(max_response);
    let mut cursor = futures::io::Cursor::new(bytes);
    codec
        .read_response(&StreamProtocol::new(JOB_PROTOCOL), &mut cursor)
        .now_or_never()
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "incomplete response read",
            ))
        })
}

/// An inbound request as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A request that decoded.
    Request(Request),
    /// Too large or undecodable, with why.
    Malformed(String),
}

/// CBOR codec of the job protocol with explicit size caps.
#[derive(Clone)]
pub(crate) struct JobCodec {
    inner: cbor::codec::Codec<Request, Response>,
    max_request: u64,
    max_response: u64,
}

impl JobCodec {
    pub(crate) fn new(max_request: u64, max_response: u64) -> Self {
        JobCodec {
            inner: cbor::codec::Codec::default()
                .set_request_size_maximum(max_request)
                .set_response_size_maximum(max_response),
            max_request,
            max_response,
        }
    }
}

impl Codec for JobCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        // One byte past the cap, so an oversized request is told apart from one at the cap.
        let mut buf = Vec::new();
        io.take(self.max_request + 1).read_to_end(&mut buf).await?;
        Ok(decode_request(&buf, self.max_request))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        // The stock codec reads at most the cap and decodes what it got; so do we.
        let mut buf = Vec::new();
        io.take(self.max_response).read_to_end(&mut buf).await?;
        decode_response(&buf, self.max_response)
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        req: Inbound,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Inbound::Request(r) => self.inner.write_request(p, io, r).await,
            Inbound::Malformed(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a malformed request is never sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_response(p, io, res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobId;

    fn encode(req: Request) -> Vec<u8> {
        let mut out = futures::io::Cursor::new(Vec::new());
        JobCodec::new(1024, 1024)
            .write_request(
                &StreamProtocol::new(JOB_PROTOCOL),
                &mut out,
                Inbound::Request(req),
            )
            .now_or_never()
            .expect("writing to memory is never pending")
            .expect("the request encodes");
        out.into_inner()
    }

    #[test]
    fn decode_request_round_trips_and_refuses_garbage_and_oversize() {
        let req = Request::Status {
            job_id: JobId("job-1".into()),
        };
        let bytes = encode(req.clone());
        assert_eq!(decode_request(&bytes, 1024), Inbound::Request(req));
        assert_eq!(
            decode_request(&bytes, bytes.len() as u64 - 1),
            Inbound::Malformed(format!("request exceeds {} bytes", bytes.len() - 1))
        );
        let Inbound::Malformed(why) = decode_request(&[0xff, 0x00], 1024) else {
            panic!("garbage decoded");
        };
        assert!(why.starts_with("undecodable request: "), "{why}");
    }

    #[test]
    fn decode_response_reads_only_up_to_the_cap() {
        let resp = Response::Cancelled(true);
        let mut out = futures::io::Cursor::new(Vec::new());
        JobCodec::new(1024, 1024)
            .write_response(&StreamProtocol::new(JOB_PROTOCOL), &mut out, resp.clone())
            .now_or_never()
            .expect("writing to memory is never pending")
            .expect("the response encodes");
        let bytes = out.into_inner();
        assert_eq!(decode_response(&bytes, 1024).unwrap(), resp);
        assert!(decode_response(&bytes, bytes.len() as u64 - 1).is_err());
    }
}
