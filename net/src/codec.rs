//! The job protocol's codec: CBOR with explicit caps, and malformed requests kept visible.
//!
//! libp2p's request-response silently drops an inbound request whose decoding fails, so the
//! node would never learn who sent it. This codec wraps the stock CBOR codec: it reads at
//! most `max_request_bytes + 1` bytes itself and hands a request that is too large or does
//! not decode up as [`Inbound::Malformed`], which the event loop answers with a typed error
//! and counts as a strike against the sender.

use std::io;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{Codec, cbor};

use crate::protocol::{Request, Response};

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
}

impl JobCodec {
    pub(crate) fn new(max_request: u64, max_response: u64) -> Self {
        JobCodec {
            inner: cbor::codec::Codec::default()
                .set_request_size_maximum(max_request)
                .set_response_size_maximum(max_response),
            max_request,
        }
    }
}

impl Codec for JobCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(self.max_request + 1).read_to_end(&mut buf).await?;
        if buf.len() as u64 > self.max_request {
            return Ok(Inbound::Malformed(format!(
                "request exceeds {} bytes",
                self.max_request
            )));
        }
        let mut cursor = futures::io::Cursor::new(buf);
        match self.inner.read_request(p, &mut cursor).await {
            Ok(r) => Ok(Inbound::Request(r)),
            Err(e) => Ok(Inbound::Malformed(format!("undecodable request: {e}"))),
        }
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.inner.read_response(p, io).await
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
