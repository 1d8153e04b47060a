//! The transaction coordinator state machine: transitions, fencing, idempotent EndTxn,
//! timeouts, expiry, and replay equivalence.

use exacta_coordinator::txn::*;
use exacta_types::ErrorCode;

struct Harness {
    c: TxnCoordinator,
    log: Vec<TxnRecord>,
    next_id: i64,
}

impl Harness {
    fn new() -> Self {
        Self {
            c: TxnCoordinator::new(TxnConfig {
                max_timeout_ms: 60_000,
                id_expiration_ms: 100_000,
            }),
            log: Vec::new(),
            next_id: 1000,
        }
    }

    fn init(&mut self, id: &str, now: i64) -> Result<(i64, i16), ErrorCode> {
        loop {
            let next = &mut self.next_id;
            let mut alloc = || {
                *next += 1;
                Ok(*next)
            };
            match self.c.init_producer_id(id, 10_000, None, now, &mut alloc) {
                InitOutcome::Ready {
                    record,
                    producer_id,
                    epoch,
                } => {
                    self.log.push(record);
                    return Ok((producer_id, epoch));
                }
                InitOutcome::AbortFirst(plan) => self.run(plan, now),
                InitOutcome::Error(e) => return Err(e),
            }
        }
    }

    fn run(&mut self, plan: EndPlan, now: i64) {
        self.log.push(plan.prepare.clone());
        if let Some(r) = self.c.complete(&plan.transactional_id, now) {
            self.log.push(r);
        }
    }

    fn add(&mut self, id: &str, pid: i64, epoch: i16, p: i32, now: i64) -> Result<(), ErrorCode> {
        if let Some(r) = self
            .c
            .add_partitions(id, pid, epoch, &[("t".into(), p)], now)?
        {
            self.log.push(r);
        }
        Ok(())
    }

    fn end(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<Option<EndPlan>, ErrorCode> {
        match self.c.begin_end(id, pid, epoch, commit, false, now)? {
            EndOutcome::AlreadyDone => Ok(None),
            EndOutcome::Run(plan) => {
                self.log.push(plan.prepare.clone());
                Ok(Some(plan))
            }
        }
    }

    fn state(&self, id: &str) -> TxnState {
        self.c.get(id).unwrap().state
    }
}

#[test]
fn commit_goes_through_prepare_and_complete_and_retries_are_idempotent() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init("a", 0).unwrap();
    assert_eq!(epoch, 0);
    h.add("a", pid, epoch, 0, 1).unwrap();
    h.add("a", pid, epoch, 1, 2).unwrap();
    assert_eq!(h.state("a"), TxnState::Ongoing);
    assert!(h.c.partition_in_txn(pid, epoch, "t", 1).is_ok());
    assert_eq!(
        h.c.partition_in_txn(pid, epoch, "t", 7),
        Err(ErrorCode::InvalidTxnState)
    );
    let plan = h.end("a", pid, epoch, true, 3).unwrap().unwrap();
    assert_eq!(plan.partitions.len(), 2);
    assert_eq!(h.state("a"), TxnState::PrepareCommit);
    // While markers are written the id is busy.
    assert_eq!(
        h.add("a", pid, epoch, 0, 4),
        Err(ErrorCode::ConcurrentTransactions)
    );
    assert_eq!(
        h.end("a", pid, epoch, true, 4).unwrap_err(),
        ErrorCode::ConcurrentTransactions
    );
    h.run(plan, 5);
    assert_eq!(h.state("a"), TxnState::CompleteCommit);
    // A retried EndTxn succeeds without a second round of markers; the opposite is invalid.
    assert!(h.end("a", pid, epoch, true, 6).unwrap().is_none());
    assert_eq!(
        h.end("a", pid, epoch, false, 6).unwrap_err(),
        ErrorCode::InvalidTxnState
    );
    assert_eq!(
        h.c.partition_in_txn(pid, epoch, "t", 0),
        Err(ErrorCode::InvalidTxnState)
    );
}

#[test]
fn a_new_instance_aborts_the_open_transaction_and_fences_the_old_one() {
    let mut h = Harness::new();
    let (pid, e0) = h.init("a", 0).unwrap();
    h.add("a", pid, e0, 0, 1).unwrap();
    let (pid2, e1) = h.init("a", 2).unwrap();
    assert_eq!(pid2, pid);
    assert_eq!(
        e1,
        e0 + 2,
        "one bump for the fencing abort, one for the new instance"
    );
    assert_eq!(h.state("a"), TxnState::Empty);
    assert!(h.log.iter().any(|r| r
        .value
        .as_ref()
        .is_some_and(|v| v.state == TxnState::CompleteAbort)));
    assert_eq!(h.add("a", pid, e0, 0, 3), Err(ErrorCode::ProducerFenced));
    assert_eq!(
        h.end("a", pid, e0, true, 3).unwrap_err(),
        ErrorCode::ProducerFenced
    );
    assert_eq!(
        h.c.partition_in_txn(pid, e0, "t", 0),
        Err(ErrorCode::InvalidProducerEpoch)
    );
    assert_eq!(
        h.end("a", 4242, e1, true, 3).unwrap_err(),
        ErrorCode::InvalidProducerIdMapping
    );
}

#[test]
fn timeouts_abort_with_an_epoch_bump_and_idle_ids_expire() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init("a", 0).unwrap();
    h.add("a", pid, epoch, 0, 100).unwrap();
    let (plans, expired) = h.c.tick(5_000);
    assert!(plans.is_empty() && expired.is_empty());
    let (plans, _) = h.c.tick(10_101);
    assert_eq!(plans.len(), 1);
    assert!(!plans[0].commit && plans[0].epoch == epoch + 1);
    h.run(plans[0].clone(), 10_102);
    assert_eq!(
        h.end("a", pid, epoch, true, 10_200).unwrap_err(),
        ErrorCode::ProducerFenced
    );
    let (_, expired) = h.c.tick(10_102 + 100_001);
    assert_eq!(expired.len(), 1);
    assert!(h.c.get("a").is_none());
}

#[test]
fn bad_timeouts_are_refused() {
    let mut h = Harness::new();
    let mut alloc = || Ok(1);
    assert!(matches!(
        h.c.init_producer_id("a", 60_001, None, 0, &mut alloc),
        InitOutcome::Error(ErrorCode::InvalidTransactionTimeout)
    ));
    assert!(matches!(
        h.c.init_producer_id("a", 0, None, 0, &mut alloc),
        InitOutcome::Error(ErrorCode::InvalidTransactionTimeout)
    ));
}

#[test]
fn replay_rebuilds_the_state_and_unfinished_prepares() {
    let mut h = Harness::new();
    let (a, ea) = h.init("a", 0).unwrap();
    h.add("a", a, ea, 0, 1).unwrap();
    let plan = h.end("a", a, ea, false, 2).unwrap().unwrap();
    h.run(plan, 3);
    let (b, eb) = h.init("b", 4).unwrap();
    h.add("b", b, eb, 3, 5).unwrap();
    let pending = h.end("b", b, eb, true, 6).unwrap().unwrap(); // crash before markers
    let mut replayed = TxnCoordinator::new(TxnConfig::default());
    for r in &h.log {
        let (k, v) = r.to_key_value();
        let decoded = TxnRecord::from_key_value(&k, v.as_deref()).unwrap();
        assert_eq!(&decoded, r);
        replayed.apply(&decoded);
    }
    for id in ["a", "b"] {
        assert_eq!(replayed.get(id), h.c.get(id));
    }
    let unfinished = replayed.unfinished();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(
        (unfinished[0].commit, &unfinished[0].partitions),
        (true, &pending.partitions)
    );
}

#[test]
fn v2_bumps_the_epoch_at_every_end_and_fences_older_requests() {
    let mut h = Harness::new();
    let (pid, e0) = h.init("a", 0).unwrap();
    // Produce v12: the partition joins implicitly and starts the transaction.
    let r =
        h.c.add_partition_implicitly(pid, e0, ("t".into(), 0), 1)
            .unwrap();
    assert!(r.is_some() && h.state("a") == TxnState::Ongoing);
    assert!(h
        .c
        .add_partition_implicitly(pid, e0, ("t".into(), 0), 2)
        .unwrap()
        .is_none());
    let EndOutcome::Run(plan) = h.c.begin_end("a", pid, e0, true, true, 3).unwrap() else {
        panic!("expected a plan")
    };
    assert_eq!(plan.epoch, e0 + 1, "markers carry the bumped epoch");
    h.run(plan, 4);
    assert_eq!(h.c.producer_of("a"), Some((pid, e0 + 1)));
    // A retried EndTxn with the old epoch is answered again; anything else old is fenced.
    assert!(matches!(
        h.c.begin_end("a", pid, e0, true, true, 5),
        Ok(EndOutcome::AlreadyDone)
    ));
    assert_eq!(
        h.c.add_partition_implicitly(pid, e0, ("t".into(), 0), 5),
        Err(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        h.c.partition_in_txn(pid, e0, "t", 0),
        Err(ErrorCode::InvalidProducerEpoch)
    );
    // The next transaction with the new epoch works.
    h.c.add_partition_implicitly(pid, e0 + 1, ("t".into(), 0), 6)
        .unwrap();
    assert!(h.c.partition_in_txn(pid, e0 + 1, "t", 0).is_ok());
}

#[test]
fn verify_only_reports_membership_without_writing() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init("a", 0).unwrap();
    let parts = [("t".to_string(), 0), ("t".to_string(), 1)];
    // No open transaction yet: nothing is in it.
    assert_eq!(
        h.c.verify_partitions("a", pid, epoch, &parts),
        Ok(vec![ErrorCode::TransactionAbortable; 2])
    );
    h.add("a", pid, epoch, 0, 1).unwrap();
    let logged = h.log.len();
    assert_eq!(
        h.c.verify_partitions("a", pid, epoch, &parts),
        Ok(vec![ErrorCode::None, ErrorCode::TransactionAbortable])
    );
    assert_eq!(h.log.len(), logged, "verification writes no record");
    assert_eq!(h.state("a"), TxnState::Ongoing);
    assert!(
        h.c.partition_in_txn(pid, epoch, "t", 1).is_err(),
        "not added"
    );
    // Unknown id, other producer, stale epoch, ending transaction.
    assert_eq!(
        h.c.verify_partitions("b", pid, epoch, &parts),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.verify_partitions("a", pid + 1, epoch, &parts),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.verify_partitions("a", pid, epoch + 1, &parts),
        Err(ErrorCode::ProducerFenced)
    );
    let plan = h.end("a", pid, epoch, true, 2).unwrap().unwrap();
    assert_eq!(
        h.c.verify_partitions("a", pid, epoch, &parts),
        Err(ErrorCode::ConcurrentTransactions)
    );
    h.run(plan, 3);
    assert_eq!(
        h.c.verify_partitions("a", pid, epoch, &parts),
        Ok(vec![ErrorCode::TransactionAbortable; 2]),
        "a completed transaction holds no partitions"
    );
}
