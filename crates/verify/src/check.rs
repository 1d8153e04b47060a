//! The history checker: judges a whole history ([`crate::history`]) against the
//! exactly-once contract of a consume-transform-produce copier.
//!
//! - **lost**: a seeded input record missing from the final read of the output;
//! - **duplicate**: an input record present more than once in the output;
//! - **aborted read**: a read_committed reader returned a record of a transaction its
//!   copier aborted, or never asked to commit (a killed or fenced instance);
//! - **pre-committed read**: a reader returned a record before its copier asked to commit;
//! - **offset error**: the group's committed offset of an input partition is not its end
//!   offset, or a committed transaction's acknowledged offset holds another record;
//! - **order error**: within an output partition, the records of one input partition are
//!   not in input order; a reader's offsets within a partition go backwards; a producer's
//!   acknowledged offsets within a transaction and partition go backwards;
//! - **unknown**: a record no copier wrote or an id no seeder wrote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::history::{Event, Meta};

/// At most this many examples are kept per finding.
const EXAMPLES: usize = 5;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Finding {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Report {
    pub records: u64,
    pub output_records: u64,
    pub lost: Finding,
    pub duplicates: Finding,
    pub aborted_reads: Finding,
    pub precommitted_reads: Finding,
    pub offset_errors: Finding,
    pub order_errors: Finding,
    pub unknown: Finding,
    pub live_reads: u64,
    pub txns_committed: u64,
    pub txns_aborted: u64,
    pub txns_aborted_deliberately: u64,
    /// Asked to commit, outcome not known to the copier (killed or failed call).
    pub txns_unknown: u64,
    pub copier_kills: u64,
    pub copier_restarts: u64,
    pub copier_stalls: u64,
}

impl Report {
    pub fn passed(&self) -> bool {
        [
            &self.lost,
            &self.duplicates,
            &self.aborted_reads,
            &self.precommitted_reads,
            &self.offset_errors,
            &self.order_errors,
            &self.unknown,
        ]
        .iter()
        .all(|f| f.count == 0)
            && self.records > 0
    }

    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["passed"] = self.passed().into();
        value.to_string()
    }

    /// The findings by name, for printing.
    pub fn findings(&self) -> [(&'static str, &Finding); 7] {
        [
            ("lost", &self.lost),
            ("duplicate", &self.duplicates),
            ("aborted read", &self.aborted_reads),
            ("pre-committed read", &self.precommitted_reads),
            ("offset error", &self.offset_errors),
            ("order error", &self.order_errors),
            ("unknown", &self.unknown),
        ]
    }
}

impl fmt::Display for Report {
    /// The one-line verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} records, {} lost, {} duplicate, {} aborted reads, {} pre-committed reads, \
             {} offset errors, {} order errors, {} unknown; transactions {} committed, {} aborted \
             ({} on purpose), {} unknown outcome; {} live reads; copier kills {}, restarts {}, \
             stalls {}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.records,
            self.lost.count,
            self.duplicates.count,
            self.aborted_reads.count,
            self.precommitted_reads.count,
            self.offset_errors.count,
            self.order_errors.count,
            self.unknown.count,
            self.txns_committed,
            self.txns_aborted,
            self.txns_aborted_deliberately,
            self.txns_unknown,
            self.live_reads,
            self.copier_kills,
            self.copier_restarts,
            self.copier_stalls,
        )
    }
}

#[derive(Default)]
struct Txn {
    commit_asked_at: Option<u64>,
    committed: bool,
    aborted: bool,
    deliberate: bool,
    acks: Vec<(u64, i32, i64)>,
}

/// Judges a history: `files` maps each file's name (`final` is the final reader's) to its
/// events in order.
pub fn check(files: &BTreeMap<String, Vec<Event>>) -> Report {
    let mut report = Report::default();
    let meta: Option<&Meta> = files.values().flatten().find_map(|e| match e {
        Event::Meta(m) => Some(m),
        _ => None,
    });
    let mut inputs: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut txns: HashMap<&str, Txn> = HashMap::new();
    for events in files.values() {
        // Acknowledged offsets per (transaction, partition), in send order.
        let mut last_ack: HashMap<(&str, i32), i64> = HashMap::new();
        for event in events {
            match event {
                Event::Seed { id, p, off } => {
                    inputs.insert(*id, (*p, *off));
                }
                Event::Commit { txn, t, .. } => {
                    txns.entry(txn).or_default().commit_asked_at = Some(*t);
                }
                Event::Committed { txn, ok: true, .. } => {
                    txns.entry(txn).or_default().committed = true;
                }
                Event::Abort {
                    txn, deliberate, ..
                } => {
                    let entry = txns.entry(txn).or_default();
                    entry.aborted = true;
                    entry.deliberate |= *deliberate;
                }
                Event::Ack {
                    txn,
                    id,
                    out_p,
                    off: Some(off),
                    ..
                } => {
                    if let Some(previous) = last_ack.insert((txn, *out_p), *off) {
                        if previous >= *off {
                            report.order_errors.add(|| {
                                format!(
                                    "transaction {txn}: ack offset {off} after {previous} \
                                     on output partition {out_p}"
                                )
                            });
                        }
                    }
                    txns.entry(txn).or_default().acks.push((*id, *out_p, *off));
                }
                _ => {}
            }
        }
    }
    report.records = meta.map_or(inputs.len() as u64, |m| m.records);
    for txn in txns.values() {
        if txn.aborted {
            report.txns_aborted += 1;
            report.txns_aborted_deliberately += u64::from(txn.deliberate);
        } else if txn.committed {
            report.txns_committed += 1;
        } else if txn.commit_asked_at.is_some() {
            report.txns_unknown += 1;
        }
    }

    // Every reader: aborted and pre-committed reads, offsets moving forward.
    let mut final_reads: Vec<(i32, i64, u64, &str)> = Vec::new();
    for (name, events) in files {
        let mut last_offset: HashMap<(&str, i32), i64> = HashMap::new();
        for event in events {
            let Event::Read {
                reader,
                p,
                off,
                id,
                txn,
                t,
            } = event
            else {
                continue;
            };
            if name == "final" {
                final_reads.push((*p, *off, *id, txn));
            } else {
                report.live_reads += 1;
            }
            if let Some(previous) = last_offset.insert((reader, *p), *off) {
                if previous >= *off {
                    report.order_errors.add(|| {
                        format!("reader {reader}: offset {off} after {previous} on partition {p}")
                    });
                }
            }
            if !inputs.contains_key(id) {
                report
                    .unknown
                    .add(|| format!("{reader} read id {id} at {p}/{off}: never seeded"));
            }
            match txns.get(txn.as_str()) {
                None => report.unknown.add(|| {
                    format!("{reader} read {p}/{off} of transaction {txn}: no copier wrote it")
                }),
                Some(state) if state.aborted || state.commit_asked_at.is_none() => {
                    report.aborted_reads.add(|| {
                        format!(
                            "{reader} read {p}/{off} (id {id}) of transaction {txn}, which was {}",
                            if state.aborted {
                                "aborted"
                            } else {
                                "never committed"
                            }
                        )
                    })
                }
                Some(state) => {
                    if state.commit_asked_at.is_some_and(|asked| *t < asked) {
                        report.precommitted_reads.add(|| {
                            format!(
                                "{reader} read {p}/{off} of transaction {txn} at {t}, before \
                                 its commit was asked"
                            )
                        });
                    }
                }
            }
        }
    }

    // The final read: each input exactly once, in input order per output partition.
    report.output_records = final_reads.len() as u64;
    let mut seen: HashSet<u64> = HashSet::with_capacity(final_reads.len());
    let mut at: HashMap<(i32, i64), (u64, &str)> = HashMap::with_capacity(final_reads.len());
    let mut order: HashMap<(i32, i32), i64> = HashMap::new();
    for &(p, off, id, txn) in &final_reads {
        at.insert((p, off), (id, txn));
        if !seen.insert(id) {
            report
                .duplicates
                .add(|| format!("id {id} again at {p}/{off} (transaction {txn})"));
        }
        if let Some(&(in_p, in_off)) = inputs.get(&id) {
            if let Some(previous) = order.insert((p, in_p), in_off) {
                if previous >= in_off {
                    report.order_errors.add(|| {
                        format!(
                            "output partition {p} offset {off}: input {in_p}/{in_off} after \
                             input {in_p}/{previous}"
                        )
                    });
                }
            }
        }
    }
    let mut missing: Vec<u64> = inputs
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    missing.sort_unstable();
    for id in missing {
        let (p, off) = inputs[&id];
        report.lost.add(|| format!("id {id} (input {p}/{off})"));
    }
    if let Some(meta) = meta {
        if (inputs.len() as u64) < meta.records {
            let unseeded = meta.records - inputs.len() as u64;
            report.lost.count += unseeded;
            report.lost.examples.push(format!(
                "{unseeded} records never acknowledged to the seeder"
            ));
        }
        for (p, (end, committed)) in meta.input_end.iter().zip(&meta.committed).enumerate() {
            if end != committed {
                report.offset_errors.add(|| {
                    format!("input partition {p}: committed offset {committed}, end {end}")
                });
            }
        }
        report.copier_kills = meta.copier_kills;
        report.copier_restarts = meta.copier_restarts;
        report.copier_stalls = meta.copier_stalls;
    } else {
        report
            .offset_errors
            .add(|| "no meta record: the run did not finish".to_string());
    }
    for (name, txn) in &txns {
        if !txn.committed || txn.aborted {
            continue;
        }
        for &(id, p, off) in &txn.acks {
            match at.get(&(p, off)) {
                Some(&(read, by)) if read == id && by == *name => {}
                found => report.offset_errors.add(|| {
                    format!(
                        "transaction {name} committed id {id} at {p}/{off}, the final read \
                         found {found:?}"
                    )
                }),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(records: u64) -> Event {
        Event::Meta(Meta {
            records,
            input_topic: "in".into(),
            output_topic: "out".into(),
            group: "g".into(),
            input_partitions: 1,
            output_partitions: 1,
            input_end: vec![records as i64],
            committed: vec![records as i64],
            copier_kills: 0,
            copier_restarts: 0,
            copier_stalls: 0,
        })
    }

    fn read(reader: &str, off: i64, id: u64, txn: &str, t: u64) -> Event {
        Event::Read {
            reader: reader.into(),
            p: 0,
            off,
            id,
            txn: txn.into(),
            t,
        }
    }

    /// A clean history: 3 records, transaction a aborted on purpose, b committed.
    fn clean() -> BTreeMap<String, Vec<Event>> {
        let mut files = BTreeMap::new();
        files.insert(
            "seed".to_string(),
            (0..3)
                .map(|id| Event::Seed {
                    id,
                    p: 0,
                    off: id as i64,
                })
                .collect(),
        );
        let mut copier = vec![Event::Begin {
            txn: "a".into(),
            t: 1,
        }];
        for id in 0..3 {
            copier.push(Event::Ack {
                txn: "a".into(),
                id,
                out_p: 0,
                off: Some(id as i64),
                err: None,
            });
        }
        copier.push(Event::Abort {
            txn: "a".into(),
            deliberate: true,
            t: 2,
        });
        copier.push(Event::Begin {
            txn: "b".into(),
            t: 3,
        });
        for id in 0..3 {
            copier.push(Event::Ack {
                txn: "b".into(),
                id,
                out_p: 0,
                off: Some(4 + id as i64),
                err: None,
            });
        }
        copier.push(Event::Commit {
            txn: "b".into(),
            offsets: vec![(0, 3)],
            t: 4,
        });
        copier.push(Event::Committed {
            txn: "b".into(),
            ok: true,
            err: None,
            t: 5,
        });
        files.insert("copier-0-0".to_string(), copier);
        files.insert(
            "reader".to_string(),
            (0..3)
                .map(|id| read("live", 4 + id as i64, id, "b", 6))
                .collect(),
        );
        files.insert(
            "final".to_string(),
            (0..3)
                .map(|id| read("final", 4 + id as i64, id, "b", 7))
                .collect(),
        );
        files.insert("meta".to_string(), vec![meta(3)]);
        files
    }

    #[test]
    fn a_clean_history_passes() {
        let report = check(&clean());
        assert!(report.passed(), "{report}: {:?}", report.findings());
        assert_eq!(
            (report.txns_committed, report.txns_aborted_deliberately),
            (1, 1)
        );
        assert_eq!((report.output_records, report.live_reads), (3, 3));
    }

    #[test]
    fn each_violation_is_reported() {
        // Lost: the final read misses id 2.
        let mut h = clean();
        h.get_mut("final").unwrap().pop();
        let r = check(&h);
        assert_eq!((r.lost.count, r.offset_errors.count), (1, 1), "{r}");

        // Duplicate: id 1 read twice (a second copy later in the partition).
        let mut h = clean();
        h.get_mut("final")
            .unwrap()
            .push(read("final", 9, 1, "b", 7));
        let r = check(&h);
        assert_eq!(r.duplicates.count, 1, "{r}");
        assert_eq!(r.order_errors.count, 1, "input offset 1 after 2: {r}");

        // Aborted read: the live reader saw a record of the aborted transaction.
        let mut h = clean();
        h.get_mut("reader")
            .unwrap()
            .insert(0, read("live", 0, 0, "a", 3));
        let r = check(&h);
        assert_eq!(r.aborted_reads.count, 1, "{r}");

        // A transaction never asked to commit counts as aborted when read.
        let mut h = clean();
        h.get_mut("copier-0-0")
            .unwrap()
            .retain(|e| !matches!(e, Event::Commit { .. }));
        let r = check(&h);
        assert_eq!(r.aborted_reads.count, 6, "{r}");

        // Pre-committed read: seen before the commit was asked.
        let mut h = clean();
        h.insert("reader".into(), vec![read("live", 4, 0, "b", 3)]);
        let r = check(&h);
        assert_eq!(r.precommitted_reads.count, 1, "{r}");

        // Offsets: committed offset short of the end.
        let mut h = clean();
        if let Event::Meta(m) = &mut h.get_mut("meta").unwrap()[0] {
            m.committed = vec![2];
        }
        assert_eq!(check(&h).offset_errors.count, 1);

        // Reader offsets going backwards.
        let mut h = clean();
        h.get_mut("reader").unwrap().swap(0, 1);
        assert_eq!(check(&h).order_errors.count, 1);

        // Unknown transaction and unknown id.
        let mut h = clean();
        h.get_mut("reader")
            .unwrap()
            .push(read("live", 20, 99, "zz", 9));
        assert_eq!(check(&h).unknown.count, 2);

        // No meta: the run did not finish.
        let mut h = clean();
        h.remove("meta");
        assert!(!check(&h).passed());
    }
}
