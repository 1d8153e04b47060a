//! openraft's own storage conformance suite against the on-disk log and state machine.

use exacta_cluster::{LogStore, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = LogStore::open(&dir.path().join("raft")).expect("the log opens");
        let sm = StateMachine::open(&dir.path().join("metadata")).expect("the state machine opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_disk_store_passes_openraft_storage_suite() {
    Suite::test_all(OnDisk).expect("openraft's storage suite");
}
