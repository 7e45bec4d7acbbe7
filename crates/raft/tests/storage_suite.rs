//! openraft's own storage test suite against raftkv's log store and state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use raftkv_raft::StateMachine;
use raftkv_raft::log_store::LogStore;
use raftkv_raft::types::TypeConfig;
use raftkv_storage::log::{LogConfig, RaftLogStore};
use raftkv_storage::{MvccConfig, MvccStore};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal =
            RaftLogStore::open(&dir.path().join("wal"), &LogConfig::default()).expect("open wal");
        let store =
            MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).expect("open mvcc");
        let sm = StateMachine::open(Arc::new(store), &dir.path().join("snap"))
            .expect("open state machine");
        Ok((dir, LogStore::new(Arc::new(wal)), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}
