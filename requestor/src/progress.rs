//! Progress bars for `requestor run`: inputs as providers pull them, outputs as they arrive.
//!
//! Transfers are driven by `pinfold_net` (the provider pulls inputs from our blob server;
//! outputs stream into a sink we hand over), so the bars are fed by counting wrappers
//! around the reader we serve from and the writer we download into, rather than by hooks
//! in the transfer code. indicatif draws to stderr and hides itself when stderr is not a
//! terminal, so plain-line output (logs, CI) is unchanged.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pinfold_net::{BlobId, BlobReader, BlobStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte bar labelled `name`, of `len` bytes, under `multi`.
pub fn bar(multi: &MultiProgress, name: &str, len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .expect("static template")
    .progress_chars("=> ");
    multi.add(
        ProgressBar::new(len)
            .with_style(style)
            .with_message(name.to_string()),
    )
}

/// Finishes `bar` once it has counted its whole length: the blob server reads exactly
/// the blob's length and never asks for the EOF, and a sink is never told the end.
fn finish_if_full(bar: &ProgressBar) {
    if bar.length().is_some_and(|l| bar.position() >= l) && !bar.is_finished() {
        bar.finish();
    }
}

/// An [`AsyncRead`] that counts the bytes read through it on a bar.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R> CountingReader<R> {
    /// Counts reads from `inner` on `bar`.
    pub fn new(inner: R, bar: ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before;
            self.bar.inc(n as u64);
            // A ready read that adds nothing to a buffer with room is EOF.
            if (n == 0 && buf.remaining() > 0) && !self.bar.is_finished() {
                self.bar.finish();
            } else {
                finish_if_full(&self.bar);
            }
        }
        r
    }
}

/// An [`AsyncWrite`] that counts the bytes written through it on a bar.
#[derive(Debug)]
pub struct CountingWriter<W> {
    inner: W,
    bar: ProgressBar,
}

impl<W> CountingWriter<W> {
    /// Counts writes to `inner` on `bar`.
    pub fn new(inner: W, bar: ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.bar.inc(n as u64);
            finish_if_full(&self.bar);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A [`BlobStore`] that puts a bar on every read of a blob given a name with [`watch`].
///
/// The server may open a blob twice per transfer (hash, then send) and several providers
/// may pull one input at once, so each open gets its own bar rather than sharing one.
///
/// [`watch`]: ProgressStore::watch
pub struct ProgressStore<S> {
    inner: Arc<S>,
    multi: MultiProgress,
    names: Mutex<HashMap<BlobId, String>>,
}

impl<S> ProgressStore<S> {
    /// Wraps `inner` (shared, so its owner can keep adding blobs); bars are drawn under
    /// `multi`.
    pub fn new(inner: Arc<S>, multi: MultiProgress) -> Self {
        Self {
            inner,
            multi,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Shows a bar named `name` whenever blob `id` is read (unwatched blobs get none).
    pub fn watch(&self, id: BlobId, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name.to_string());
    }
}

impl<S> std::fmt::Debug for ProgressStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStore").finish_non_exhaustive()
    }
}

impl<S: BlobStore> BlobStore for ProgressStore<S> {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        let Some(blob) = self.inner.open(id)? else {
            return Ok(None);
        };
        let name = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        // An empty blob is never read, so its bar would never finish.
        match name {
            Some(name) if blob.len > 0 => {
                let bar = bar(&self.multi, &name, blob.len);
                Ok(Some(BlobReader {
                    len: blob.len,
                    reader: Box::new(CountingReader::new(blob.reader, bar)),
                }))
            }
            _ => Ok(Some(blob)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;
    use pinfold_net::MemoryBlobStore;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn hidden() -> MultiProgress {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }

    #[tokio::test]
    async fn reader_counts_exactly_and_finishes_at_eof() {
        let data = vec![7u8; 100_000];
        // No length: only EOF can finish it.
        let bar = ProgressBar::hidden();
        let mut r = CountingReader::new(&data[..], bar.clone());
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            assert_eq!(bar.position(), total as u64);
            assert!(!bar.is_finished(), "finished before EOF");
        }
        assert_eq!(bar.position(), data.len() as u64);
        assert!(bar.is_finished());
    }

    #[tokio::test]
    async fn reader_finishes_at_its_length_without_eof() {
        let data = vec![1u8; 10_000];
        let bar = ProgressBar::hidden();
        bar.set_length(data.len() as u64);
        let mut r = CountingReader::new(&data[..], bar.clone());
        let mut out = vec![0u8; data.len()];
        r.read_exact(&mut out).await.unwrap();
        assert_eq!(bar.position(), 10_000);
        assert!(bar.is_finished());
    }

    #[tokio::test]
    async fn writer_counts_exactly_and_finishes_when_full() {
        let bar = ProgressBar::hidden();
        bar.set_length(9_000);
        let mut w = CountingWriter::new(Vec::new(), bar.clone());
        w.write_all(&[3u8; 5_000]).await.unwrap();
        assert_eq!(bar.position(), 5_000);
        assert!(!bar.is_finished());
        w.write_all(&[3u8; 4_000]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(bar.position(), 9_000);
        assert!(bar.is_finished());
        assert_eq!(w.inner.len(), 9_000);
    }

    #[tokio::test]
    async fn store_wraps_only_watched_blobs() {
        let mem = Arc::new(MemoryBlobStore::new());
        let store = ProgressStore::new(mem.clone(), hidden());
        let watched = mem.insert(vec![5u8; 3_000]);
        let plain = mem.insert(vec![6u8; 10]);
        store.watch(watched, "in.bin");
        for id in [watched, plain] {
            let mut b = store.open(&id).unwrap().unwrap();
            let mut out = Vec::new();
            b.reader.read_to_end(&mut out).await.unwrap();
            assert_eq!(out.len() as u64, b.len);
        }
        assert!(store.open(&BlobId::of(b"absent")).unwrap().is_none());
    }
}
