//! Blob transfer: verified as it arrives, liars cut off early, caps enforced.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pinfold_net::tree::GROUP_SIZE;
use pinfold_net::{BlobId, BlobReader, BlobStore, FetchLimits, MemoryBlobStore, TransferError};

use crate::util::{bytes, drain, spawn};

const TEN_MB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn ten_megabytes_transfer_and_verify() {
    let store = Arc::new(MemoryBlobStore::new());
    let data = bytes(TEN_MB, 1);
    let id = store.insert(data.clone());
    let p = spawn(Some(store)).await;
    let r = spawn(None).await;
    drain(p.events);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    for round in 0..2 {
        let mut sink = Vec::new();
        let started = Instant::now();
        let stats = r
            .client
            .fetch_blob(p.peer, id, FetchLimits::exact(data.len() as u64), &mut sink)
            .await
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "round {round}: 10 MiB in {:.0} ms ({:.0} MB/s, unoptimised test build)",
            secs * 1e3,
            data.len() as f64 / secs / 1e6
        );
        assert_eq!(stats.size, data.len() as u64);
        assert_eq!(
            stats.received,
            9 + 32 * (data.len() as u64).div_ceil(GROUP_SIZE) + data.len() as u64
        );
        assert_eq!(BlobId::of(&sink), id);
        assert!(sink == data);
    }
    // Small and empty blobs travel without a hash list.
    for len in [0usize, 1, 1000, GROUP_SIZE as usize] {
        let small = bytes(len, 2);
        let store2 = Arc::new(MemoryBlobStore::new());
        let id2 = store2.insert(small.clone());
        let p2 = spawn(Some(store2)).await;
        drain(p2.events);
        r.client.dial(p2.addr.clone()).await.unwrap();
        let mut sink = Vec::new();
        r.client
            .fetch_blob(p2.peer, id2, FetchLimits::exact(len as u64), &mut sink)
            .await
            .unwrap();
        assert_eq!(sink, small);
    }
}

/// Serves the true bytes on the first open (so its hash list is right) and corrupt bytes
/// afterwards: a provider whose content changed under it, or one that lies on purpose.
struct LyingStore {
    id: BlobId,
    data: Arc<[u8]>,
    corrupt: Arc<[u8]>,
    opens: AtomicUsize,
}

impl BlobStore for LyingStore {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        if *id != self.id {
            return Ok(None);
        }
        let bytes = if self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            Arc::clone(&self.data)
        } else {
            Arc::clone(&self.corrupt)
        };
        Ok(Some(BlobReader {
            len: bytes.len() as u64,
            reader: Box::new(io::Cursor::new(bytes)),
        }))
    }
}

#[tokio::test]
async fn a_lying_peer_is_cut_off_at_the_first_bad_group() {
    let data = bytes(TEN_MB, 3);
    let id = BlobId::of(&data);
    let bad_offset = 3 * 1024 * 1024 + 5;
    let mut corrupt = data.clone();
    corrupt[bad_offset] ^= 0x01;
    let store = Arc::new(LyingStore {
        id,
        data: data.into(),
        corrupt: corrupt.into(),
        opens: AtomicUsize::new(0),
    });
    let p = spawn(Some(store)).await;
    let r = spawn(None).await;
    drain(p.events);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    let mut sink = Vec::new();
    let err = r
        .client
        .fetch_blob(p.peer, id, FetchLimits::exact(TEN_MB as u64), &mut sink)
        .await
        .unwrap_err();
    let bad_group = bad_offset as u64 / GROUP_SIZE;
    let TransferError::BadGroup { index, received } = err else {
        panic!("expected a bad group, got {err:?}");
    };
    eprintln!("cut off at group {index} after {received} of {TEN_MB} bytes");
    assert_eq!(index, bad_group);
    // Header, hash list, the good groups and the bad one: nothing more was read.
    let cv_list = 32 * (TEN_MB as u64).div_ceil(GROUP_SIZE);
    assert_eq!(received, 9 + cv_list + (bad_group + 1) * GROUP_SIZE);
    assert!(received < TEN_MB as u64 / 3);
    // Only verified bytes reached the sink.
    assert_eq!(sink.len() as u64, bad_group * GROUP_SIZE);
    // The liar was struck once (three would ban it).
    assert!(!r.client.is_banned(p.peer).await.unwrap());
}

#[tokio::test]
async fn sizes_and_absence_are_refused_before_content() {
    let store = Arc::new(MemoryBlobStore::new());
    let data = bytes(1_000_000, 4);
    let id = store.insert(data.clone());
    let p = spawn(Some(store)).await;
    let r = spawn(None).await;
    let plain = spawn(None).await;
    drain(p.events);
    drain(r.events);
    drain(plain.events);
    r.client.dial(p.addr.clone()).await.unwrap();
    r.client.dial(plain.addr.clone()).await.unwrap();

    let mut sink = Vec::new();
    let limits = FetchLimits {
        expected_size: None,
        max_size: 999_999,
    };
    assert_eq!(
        r.client.fetch_blob(p.peer, id, limits, &mut sink).await,
        Err(TransferError::TooLarge {
            size: 1_000_000,
            max: 999_999
        })
    );
    let limits = FetchLimits {
        expected_size: Some(10),
        max_size: 1 << 30,
    };
    assert_eq!(
        r.client.fetch_blob(p.peer, id, limits, &mut sink).await,
        Err(TransferError::SizeMismatch {
            expected: 10,
            actual: 1_000_000
        })
    );
    let missing = BlobId::of(b"missing");
    assert_eq!(
        r.client
            .fetch_blob(p.peer, missing, FetchLimits::exact(7), &mut sink)
            .await,
        Err(TransferError::NotFound(missing))
    );
    assert!(sink.is_empty());
    // A node without a store does not speak the blob protocol at all.
    assert!(matches!(
        r.client
            .fetch_blob(plain.peer, id, FetchLimits::exact(1_000_000), &mut sink)
            .await,
        Err(TransferError::Open(_))
    ));
    // And none of that was misbehaviour.
    assert!(!r.client.is_banned(p.peer).await.unwrap());
    let mut ok = Vec::new();
    r.client
        .fetch_blob(p.peer, id, FetchLimits::exact(1_000_000), &mut ok)
        .await
        .unwrap();
    assert_eq!(ok, data);
}

#[tokio::test]
async fn transfers_per_peer_are_capped() {
    let store = Arc::new(MemoryBlobStore::new());
    let data = bytes(2_000_000, 5);
    let id = store.insert(data.clone());
    let mut config = crate::util::test_config();
    config.limits.blob_serve_per_peer = 1;
    let p = crate::util::spawn_with(config, "/ip4/127.0.0.1/tcp/0", Some(store)).await;
    let r = spawn(None).await;
    drain(p.events);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    // The first transfer stalls on a sink nobody drains, holding the peer's only slot.
    let (mut stalled_sink, reader) = tokio::io::duplex(1024);
    let c = r.client.clone();
    let peer = p.peer;
    let stalled = tokio::spawn(async move {
        let _ = c
            .fetch_blob(peer, id, FetchLimits::exact(2_000_000), &mut stalled_sink)
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut sink = Vec::new();
    assert_eq!(
        r.client
            .fetch_blob(p.peer, id, FetchLimits::exact(2_000_000), &mut sink)
            .await,
        Err(TransferError::Busy)
    );
    // Ending the stalled transfer frees the slot.
    stalled.abort();
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let sink = loop {
        let mut sink = Vec::new();
        match r
            .client
            .fetch_blob(p.peer, id, FetchLimits::exact(2_000_000), &mut sink)
            .await
        {
            Ok(_) => break sink,
            Err(TransferError::Busy) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(sink, data);
}

#[tokio::test]
async fn files_are_served_in_place_and_fetched_into_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("input.bin");
    let data = bytes(3_000_000, 6);
    std::fs::write(&src, &data).unwrap();
    let store = Arc::new(pinfold_net::PathBlobStore::new());
    let (id, len) = store.register(&src).unwrap();
    assert_eq!((id, len), (BlobId::of(&data), data.len() as u64));
    // A link is never registered.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    assert!(store.register(&link).is_err());

    let p = spawn(Some(store.clone())).await;
    let r = spawn(None).await;
    drain(p.events);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();
    let dst = dir.path().join("fetched.bin");
    let mut file = tokio::fs::File::create(&dst).await.unwrap();
    r.client
        .fetch_blob(p.peer, id, FetchLimits::exact(len), &mut file)
        .await
        .unwrap();
    drop(file);
    assert_eq!(std::fs::read(&dst).unwrap(), data);

    // Replaced by a link after registration: no longer served.
    std::fs::remove_file(&src).unwrap();
    std::os::unix::fs::symlink(&dst, &src).unwrap();
    let mut sink = Vec::new();
    assert_eq!(
        r.client
            .fetch_blob(p.peer, id, FetchLimits::exact(len), &mut sink)
            .await,
        Err(TransferError::NotFound(id))
    );
}
