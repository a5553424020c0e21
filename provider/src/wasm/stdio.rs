//! Capped in-memory capture of the guest's stdout and stderr.
//!
//! `MemoryOutputPipe` from wasmtime-wasi silently reports a closed stream when full, so a
//! guest that ignores write errors would spin until its timeout. This pipe instead keeps
//! what fits, raises a shared flag, and traps the guest on the first write past the cap,
//! which the executor reports as `output_exceeded`. Stdout and stderr of one run share one
//! budget ([`CappedPipe::pair`]): both are part of the output a requestor downloads, so
//! together they stay within `limits.output`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// A bounded in-memory sink for one guest stream.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    buf: Arc<Mutex<Vec<u8>>>,
    cap: usize,
    /// Bytes taken by every pipe sharing this budget.
    used: Arc<Mutex<usize>>,
    truncated: Arc<AtomicBool>,
}

impl CappedPipe {
    /// A pipe that holds at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedPipe {
            buf: Arc::new(Mutex::new(Vec::new())),
            cap,
            used: Arc::new(Mutex::new(0)),
            truncated: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Two pipes (stdout, stderr) that hold at most `cap` bytes together.
    pub fn pair(cap: usize) -> (Self, Self) {
        let a = CappedPipe::new(cap);
        let b = CappedPipe {
            buf: Arc::new(Mutex::new(Vec::new())),
            cap,
            used: a.used.clone(),
            truncated: Arc::new(AtomicBool::new(false)),
        };
        (a, b)
    }

    fn used(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was captured so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// How many bytes were captured so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the guest tried to write past the cap.
    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means a writer panicked mid-append; the bytes are still ours.
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends what fits; returns how many bytes were taken and whether some were refused.
    fn append(&self, bytes: &[u8]) -> (usize, bool) {
        let mut buf = self.lock();
        // Always the pipe's own buffer first, then the shared count: one order, no deadlock.
        let mut used = self.used();
        let room = self.cap.saturating_sub(*used);
        let n = bytes.len().min(room);
        buf.extend_from_slice(&bytes[..n]);
        *used += n;
        if n < bytes.len() {
            self.truncated.store(true, Ordering::Release);
            (n, true)
        } else {
            (n, false)
        }
    }
}

fn over_cap() -> StreamError {
    StreamError::Trap(wasmtime::format_err!("output stream exceeded its cap"))
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.append(&bytes) {
            (_, false) => Ok(()),
            (_, true) => Err(over_cap()),
        }
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        if self.truncated() {
            return Err(over_cap());
        }
        // Always offer at least one byte so that a write past the cap reaches `write`
        // and is detected, instead of the guest waiting forever for room.
        let room = self.cap.saturating_sub(*self.used());
        Ok(room.max(1))
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.append(buf) {
            (n, false) => Poll::Ready(Ok(n)),
            (_, true) => Poll::Ready(Err(std::io::Error::other("output stream exceeded its cap"))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
