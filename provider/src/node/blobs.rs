//! The blobs a node serves: its jobs' outputs and captured stdio, reference-counted because
//! two jobs may produce identical files and finishing one must not unpublish the other's.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pinfold_net::{BlobId, BlobReader, BlobStore, PathBlobStore};

/// Files served by identity, while at least one job holds them.
#[derive(Debug, Default)]
pub struct NodeBlobs {
    paths: PathBlobStore,
    refs: Mutex<HashMap<BlobId, usize>>,
    /// Bytes of blobs opened for a peer, for `/metrics` (a transfer reads the whole blob).
    served: AtomicU64,
}

impl NodeBlobs {
    /// Serves `path` (a regular file) under its BLAKE3; returns identity and size.
    pub fn add(&self, path: impl Into<PathBuf>) -> io::Result<(BlobId, u64)> {
        let (id, len) = self.paths.register(path)?;
        *self
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
        Ok((id, len))
    }

    /// Bytes served so far.
    pub fn served_bytes(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Drops one hold on `id`; the last one stops serving it.
    pub fn release(&self, id: &BlobId) {
        let mut refs = self.refs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = refs.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                refs.remove(id);
                self.paths.remove(id);
            }
        }
    }
}

impl BlobStore for NodeBlobs {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        let r = self.paths.open(id)?;
        if let Some(b) = &r {
            self.served.fetch_add(b.len, Ordering::Relaxed);
        }
        Ok(r)
    }
}
