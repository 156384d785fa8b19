use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogReaderExt, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::command::Command;
use crate::raft::disk::Disk;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::Batch;

/// Small segments, so the tests cross segment boundaries.
const SMALL: Options = Options {
    segment_size: 64 << 10,
};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let disk =
            Disk::open(&dir.path().join("etcd.redb")).map_err(|e| StorageIOError::write(&e))?;
        let (sm, _) =
            StateMachine::open(disk, 100, 10_000).map_err(|e| StorageIOError::write(&e))?;
        let log = LogStore::open(&dir.path().join("wal"), SMALL)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn put(term: u64, index: u64) -> RaftEntry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Batch {
            at: index as i64,
            cmds: vec![Command::Set {
                key: format!("/k{index}"),
                value: Some(format!("value {index} ").repeat(20)),
                expire_at: None,
                refresh: false,
            }]
            .into(),
        }),
    }
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(&dir.join("wal"), SMALL).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("wal".as_ref()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn empty_store_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, None);
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.read_committed().await.unwrap(), None);
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn ranges_truncate_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store
        .blocking_append((0..=300).map(|i| put(1, i)))
        .await
        .unwrap();
    let mut reader = store.get_log_reader().await;
    let idx = |v: Vec<RaftEntry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(
        idx(reader.try_get_log_entries(5..8).await.unwrap()),
        [5, 6, 7]
    );
    assert_eq!(
        idx(reader.try_get_log_entries(5..=7).await.unwrap()),
        [5, 6, 7]
    );
    assert_eq!(
        idx(reader.try_get_log_entries(298..).await.unwrap()),
        [298, 299, 300]
    );
    assert_eq!(reader.try_get_log_entries(..).await.unwrap().len(), 301);
    assert!(reader.try_get_log_entries(8..8).await.unwrap().is_empty());
    let beyond = (Bound::Excluded(u64::MAX), Bound::Unbounded);
    assert!(reader.try_get_log_entries(beyond).await.unwrap().is_empty());
    assert_eq!(reader.get_log_id(42).await.unwrap(), log_id(1, 42));
    assert_eq!(
        reader.try_get_log_entries(42..43).await.unwrap(),
        [put(1, 42)]
    );

    store.truncate(log_id(1, 250)).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 249))
    );
    store
        .blocking_append((250..=260).map(|i| put(2, i)))
        .await
        .unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 260))
    );
    store.purge(log_id(2, 260)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 260)));
    assert_eq!(state.last_log_id, Some(log_id(2, 260)));
    assert!(reader.try_get_log_entries(..).await.unwrap().is_empty());
    store.blocking_append([put(3, 261)]).await.unwrap();
    assert_eq!(idx(reader.try_get_log_entries(..).await.unwrap()), [261]);
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    let (before, entries_before);
    {
        let mut store = open(dir.path());
        store.blocking_append([put(1, 0)]).await.unwrap();
        store
            .blocking_append((1..=20).map(|i| put(2, i)))
            .await
            .unwrap();
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        store.purge(log_id(2, 5)).await.unwrap();
        store.truncate(log_id(2, 18)).await.unwrap();
        store.save_committed(Some(log_id(2, 12))).await.unwrap();
        // The next write carries the committed hint.
        store.blocking_append([put(3, 18)]).await.unwrap();
        before = store.get_log_state().await.unwrap();
        entries_before = store.try_get_log_entries(..).await.unwrap();
    }
    assert_eq!(before.last_purged_log_id, Some(log_id(2, 5)));
    assert_eq!(before.last_log_id, Some(log_id(3, 18)));
    assert_eq!(entries_before.len(), 13); // 6..=18

    let mut store = open(dir.path());
    assert_eq!(store.get_log_state().await.unwrap(), before);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 12)));
    assert_eq!(store.try_get_log_entries(..).await.unwrap(), entries_before);
    assert!(store.try_get_log_entries(..=5).await.unwrap().is_empty());
}

#[tokio::test]
async fn old_entries_are_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    // Far more than the cache holds (64 KiB in tests), over several segments.
    for i in 0..1000 {
        store.blocking_append([put(1, i)]).await.unwrap();
    }
    {
        let st = store.shared.state();
        assert!(st.cached_bytes <= CACHE_BYTES + 1024, "{}", st.cached_bytes);
        assert!(
            st.slots[&0].entry.is_none(),
            "the oldest entry left the cache"
        );
    }
    assert!(segments(dir.path()).len() > 3);
    let all = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(all, (0..1000).map(|i| put(1, i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn purging_removes_old_segments_and_keeps_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(1, 1);
    {
        let mut store = open(dir.path());
        store.save_vote(&vote).await.unwrap();
        for i in 0..1000 {
            store.blocking_append([put(1, i)]).await.unwrap();
        }
        let before = segments(dir.path()).len();
        assert!(before > 4, "{before}");
        store.purge(log_id(1, 949)).await.unwrap();
    }
    // Closing the log waits for the removal.
    let after = segments(dir.path());
    assert!(after.len() <= 2, "{after:?}");
    // The segment that held the vote record is gone; the checkpoints carry it.
    assert!(!after[0].ends_with(super::super::wal::segment::file_name(0)));
    let mut store = open(dir.path());
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 949)));
    assert_eq!(state.last_log_id, Some(log_id(1, 999)));
    let rest = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(rest, (950..1000).map(|i| put(1, i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_last_append_is_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        store
            .blocking_append((0..10).map(|i| put(1, i)))
            .await
            .unwrap();
        store
            .blocking_append((10..13).map(|i| put(1, i)))
            .await
            .unwrap();
    }
    // Zero the last 100 bytes of the last frame: the crash happened while it was written.
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let end = data.iter().rposition(|&b| b != 0).unwrap() + 1;
    data[end - 100..end].fill(0);
    std::fs::write(&seg, &data).unwrap();

    let mut store = open(dir.path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 9)));
    store.blocking_append([put(2, 10)]).await.unwrap();
    drop(store);
    let mut store = open(dir.path());
    let all = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[10], put(2, 10));
}

#[tokio::test]
async fn damage_before_the_tail_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        for i in 0..10 {
            store.blocking_append([put(1, i)]).await.unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    // A byte in the value of the third entry.
    let at = data.windows(8).position(|w| w == b"value 2 ").unwrap();
    data[at] ^= 1;
    std::fs::write(&seg, &data).unwrap();
    let err = LogStore::open(&dir.path().join("wal"), SMALL)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&seg.display().to_string()), "{err}");
    assert!(err.contains("valid one"), "{err}");
}

#[tokio::test]
async fn a_failed_sync_acknowledges_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut failure = store.failure();
    store.blocking_append([put(1, 0)]).await.unwrap();
    store.writer().wal.inject_failure = Some(io::ErrorKind::Other);
    let err = store.blocking_append([put(1, 1)]).await.unwrap_err();
    assert!(err.to_string().contains("append"), "{err}");
    failure.changed().await.unwrap();
    assert!(failure.borrow().as_deref().unwrap().contains("append"));
    // Nothing later is acknowledged either.
    assert!(store.blocking_append([put(1, 2)]).await.is_err());
    assert!(store.save_vote(&Vote::new(2, 1)).await.is_err());
}

/// Only a leader with followers reports its entries flushed before their sync; `durable`
/// follows every append (synced or deferred) and a truncation, and a failed deferred sync
/// stops the log and reaches everyone waiting on `durable`.
#[tokio::test]
async fn only_a_leader_with_followers_defers_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let durable = store.durable();
    store
        .blocking_append((0..3).map(|i| put(1, i)))
        .await
        .unwrap();
    assert_eq!(durable.index(), 2);
    assert!(!store.defers(), "deferring was never allowed");
    store.defer_syncs_when_leading(7);
    store.save_vote(&Vote::new_committed(2, 7)).await.unwrap();
    assert!(!store.defers(), "no followers");
    store.set_replicated(true);
    assert!(store.defers(), "leading with followers");
    store.save_vote(&Vote::new(3, 7)).await.unwrap();
    assert!(!store.defers(), "a candidate");
    store.save_vote(&Vote::new_committed(3, 8)).await.unwrap();
    assert!(!store.defers(), "following node 8");
    store.save_vote(&Vote::new_committed(4, 7)).await.unwrap();
    assert!(store.defers());

    // Deferred: `durable` gets there once the sync thread is done.
    store
        .blocking_append((3..6).map(|i| put(4, i)))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), durable.reached(5))
        .await
        .unwrap()
        .unwrap();
    // A truncation right after a deferred append: the sync reports first, then the cut.
    store
        .blocking_append((6..9).map(|i| put(4, i)))
        .await
        .unwrap();
    store.truncate(log_id(4, 7)).await.unwrap();
    assert_eq!(durable.index(), 6);
    // A follower's truncation takes `durable` back.
    store.set_replicated(false);
    store.truncate(log_id(4, 4)).await.unwrap();
    assert_eq!(durable.index(), 3);
    store.blocking_append([put(5, 4)]).await.unwrap();
    assert_eq!(durable.index(), 4);

    // A deferred sync that fails: the append itself was reported, nothing after it is, and
    // whoever waits for `durable` learns why.
    store.set_replicated(true);
    store.save_vote(&Vote::new_committed(6, 7)).await.unwrap();
    let mut failure = store.failure();
    store.writer().wal.inject_failure = Some(io::ErrorKind::Other);
    store.blocking_append([put(6, 5)]).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), durable.reached(5))
        .await
        .unwrap();
    assert!(waited.is_err(), "{waited:?}");
    failure.changed().await.unwrap();
    assert!(failure.borrow().as_deref().unwrap().contains("sync"));
    assert!(store.blocking_append([put(6, 6)]).await.is_err());
    assert!(store.save_vote(&Vote::new(7, 7)).await.is_err());
    drop(store);
    // What was synced is there after a restart; the entry whose sync failed is not
    // trusted beyond what the disk kept, and nothing after it was written.
    let mut store = open(dir.path());
    let last = store.get_log_state().await.unwrap().last_log_id.unwrap();
    assert!(last.index == 4 || last.index == 5, "{last:?}");
}

const CRASH_DIR_ENV: &str = "LOGSTORE_CRASH_TEST_DIR";

/// Child half of `entries_survive_process_abort`: appends, then dies without any cleanup.
fn crash_child(dir: std::ffi::OsString) -> ! {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut store = open(Path::new(&dir));
        store.save_vote(&Vote::new_committed(7, 1)).await.unwrap();
        for i in 0..10 {
            store.blocking_append([put(7, i)]).await.unwrap();
        }
        store
            .blocking_append((10..=100).map(|i| put(7, i)))
            .await
            .unwrap();
    });
    println!("CHILD APPENDED");
    std::process::abort();
}

#[test]
fn entries_survive_process_abort() {
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        crash_child(dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let test_path = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{test_path}::entries_survive_process_abort"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHILD APPENDED"),
        "child did not run: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "child should have aborted");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut store = open(dir.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(7, 100)));
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new_committed(7, 1))
        );
        let entries = store.get_log_entries(0..=100).await.unwrap();
        assert_eq!(entries.last(), Some(&put(7, 100)));
    });
}

/// No network: a single member never calls it.
struct NoNetwork;

impl openraft::network::RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _: NodeId, _: &crate::raft::types::Member) -> NoNetwork {
        NoNetwork
    }
}

fn unreachable_peer<E: std::error::Error>()
-> openraft::error::RPCError<NodeId, crate::raft::types::Member, E> {
    openraft::error::RPCError::Unreachable(openraft::error::Unreachable::new(&io::Error::other(
        "no network in this test",
    )))
}

impl openraft::network::RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _: openraft::raft::AppendEntriesRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::AppendEntriesResponse<NodeId>,
        openraft::error::RPCError<
            NodeId,
            crate::raft::types::Member,
            openraft::error::RaftError<NodeId>,
        >,
    > {
        Err(unreachable_peer())
    }

    async fn vote(
        &mut self,
        _: openraft::raft::VoteRequest<NodeId>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::VoteResponse<NodeId>,
        openraft::error::RPCError<
            NodeId,
            crate::raft::types::Member,
            openraft::error::RaftError<NodeId>,
        >,
    > {
        Err(unreachable_peer())
    }

    async fn install_snapshot(
        &mut self,
        _: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        openraft::error::RPCError<
            NodeId,
            crate::raft::types::Member,
            openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
        >,
    > {
        Err(unreachable_peer())
    }
}

fn set(key: &str) -> Batch {
    Batch {
        at: 1,
        cmds: vec![Command::Set {
            key: key.into(),
            value: Some("v".into()),
            expire_at: None,
            refresh: false,
        }]
        .into(),
    }
}

/// The whole path: a single-member Raft on the log store. After a failed sync the write is
/// not acknowledged, Raft stops, no later write is acknowledged, and what was acknowledged
/// before is still there after a restart.
#[test]
fn a_failed_sync_stops_raft_and_nothing_after_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = |dir: PathBuf| async move {
        let disk = Disk::open(&dir.join("etcd.redb")).unwrap();
        let (sm, shared) = StateMachine::open(disk, 100, 10_000).unwrap();
        let log = LogStore::open(&dir.join("wal"), SMALL).unwrap();
        let config = Arc::new(openraft::Config::default().validate().unwrap());
        let raft = crate::raft::types::Raft::new(1, config, NoNetwork, log.clone(), sm)
            .await
            .unwrap();
        (raft, log, shared)
    };
    rt.block_on(async {
        let (raft, log, shared) = start(dir.path().to_path_buf()).await;
        let me = crate::raft::types::Member {
            name: "n".into(),
            peer_url: "http://127.0.0.1:1".into(),
            client_url: String::new(),
        };
        raft.initialize(BTreeMap::from([(1, me)])).await.unwrap();
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .current_leader(1, "leader")
            .await
            .unwrap();
        let ok = raft.client_write(set("/acked")).await.unwrap();
        assert!(matches!(
            ok.data.0[0],
            crate::command::Outcome::Key(Ok(Some(_)))
        ));

        let mut failure = log.failure();
        log.writer().wal.inject_failure = Some(io::ErrorKind::Other);
        let lost = raft.client_write(set("/lost")).await;
        assert!(
            lost.is_err(),
            "a write whose sync failed was acknowledged: {lost:?}"
        );
        failure.wait_for(|f| f.is_some()).await.unwrap();
        let later = raft.client_write(set("/later")).await;
        assert!(
            later.is_err(),
            "a write after the failure was acknowledged: {later:?}"
        );
        assert!(shared.read().state.store.peek_value("/lost").is_none());
        let _ = raft.shutdown().await;
    });
    drop(rt);

    // The failed frame reached the page cache (as on a real failure it may or may not have
    // reached the disk): either way the acknowledged write is there after a restart.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (raft, _log, shared) = start(dir.path().to_path_buf()).await;
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .current_leader(1, "leader again")
            .await
            .unwrap();
        raft.client_write(set("/after")).await.unwrap();
        {
            let d = shared.read();
            assert_eq!(d.state.store.peek_value("/acked").as_deref(), Some("v"));
            assert!(d.state.store.peek_value("/later").is_none());
        }
        let _ = raft.shutdown().await;
    });
}
