//! Moving one member from its current assignment towards its target (KIP-848's
//! reconciliation, Kafka's `CurrentAssignmentBuilder`).
//!
//! A member first gives up what its target no longer holds (UNREVOKED_PARTITIONS, its epoch
//! unchanged, until a heartbeat no longer lists them as owned), then moves to the target
//! epoch and receives the target's partitions that nobody else still holds; those another
//! member has not released yet come later (UNRELEASED_PARTITIONS). So a partition is never
//! owned by two members at once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Assignment;

/// Where a member stands in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    #[default]
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

impl MemberState {
    /// Kafka's name (ConsumerGroupDescribe, logs).
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

/// A member's assignment state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    pub epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// One reconciliation step. `owned` is what the member's heartbeat said it owns (`None`:
/// not sent); `held_by_other` tells whether another member still holds a partition.
pub fn step(
    current: &Current,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    held_by_other: impl Fn(Uuid, i32) -> bool,
) -> Current {
    match current.state {
        MemberState::Stable if current.epoch == target_epoch => current.clone(),
        MemberState::Stable | MemberState::UnreleasedPartitions => next(
            current,
            current.epoch,
            target_epoch,
            target,
            owned,
            held_by_other,
        ),
        MemberState::UnrevokedPartitions => {
            if owns_any(owned, &current.pending_revocation) {
                current.clone()
            } else {
                next(
                    current,
                    current.epoch + 1,
                    target_epoch,
                    target,
                    owned,
                    held_by_other,
                )
            }
        }
    }
}

/// Whether `owned` still lists any of `partitions`; an unknown owned set counts as yes.
fn owns_any(owned: Option<&Assignment>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else { return true };
    owned.iter().any(|(topic, ps)| {
        partitions
            .get(topic)
            .is_some_and(|pending| !pending.is_disjoint(ps))
    })
}

fn next(
    current: &Current,
    epoch: i32,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    held_by_other: impl Fn(Uuid, i32) -> bool,
) -> Current {
    let mut assigned = Assignment::new();
    let mut revoke = Assignment::new();
    let mut incoming = Assignment::new();
    let mut unreleased = false;
    let topics: BTreeSet<Uuid> = target
        .keys()
        .chain(current.assigned.keys())
        .copied()
        .collect();
    let empty = BTreeSet::new();
    for topic in topics {
        let want = target.get(&topic).unwrap_or(&empty);
        let have = current.assigned.get(&topic).unwrap_or(&empty);
        let keep: BTreeSet<i32> = have.intersection(want).copied().collect();
        let gone: BTreeSet<i32> = have.difference(&keep).copied().collect();
        let mut add: BTreeSet<i32> = want.difference(&keep).copied().collect();
        let before = add.len();
        add.retain(|&p| !held_by_other(topic, p));
        unreleased |= add.len() != before;
        if !keep.is_empty() {
            assigned.insert(topic, keep);
        }
        if !gone.is_empty() {
            revoke.insert(topic, gone);
        }
        if !add.is_empty() {
            incoming.insert(topic, add);
        }
    }
    if !revoke.is_empty() && owns_any(owned, &revoke) {
        return Current {
            epoch,
            state: MemberState::UnrevokedPartitions,
            assigned,
            pending_revocation: revoke,
        };
    }
    for (topic, ps) in incoming {
        assigned.entry(topic).or_default().extend(ps);
    }
    Current {
        epoch: target_epoch,
        state: if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        },
        assigned,
        pending_revocation: Assignment::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(t: Uuid, ps: &[i32]) -> Assignment {
        Assignment::from([(t, ps.iter().copied().collect())])
    }

    #[test]
    fn revokes_first_then_moves_to_the_target_epoch() {
        let t = Uuid::new_v4();
        let current = Current {
            epoch: 3,
            state: MemberState::Stable,
            assigned: a(t, &[0, 1, 2]),
            pending_revocation: Assignment::new(),
        };
        let target = a(t, &[0, 1]);
        let owned = a(t, &[0, 1, 2]);
        let s = step(&current, 5, &target, Some(&owned), |_, _| false);
        assert_eq!(s.state, MemberState::UnrevokedPartitions);
        assert_eq!(s.epoch, 3);
        assert_eq!(s.assigned, a(t, &[0, 1]));
        assert_eq!(s.pending_revocation, a(t, &[2]));
        // Still owned: no progress.
        assert_eq!(step(&s, 5, &target, Some(&owned), |_, _| false), s);
        assert_eq!(step(&s, 5, &target, None, |_, _| false), s);
        // Released: the target epoch.
        let owned = a(t, &[0, 1]);
        let s = step(&s, 5, &target, Some(&owned), |_, _| false);
        assert_eq!((s.epoch, s.state), (5, MemberState::Stable));
        assert_eq!(s.assigned, target);
    }

    #[test]
    fn waits_for_partitions_another_member_holds() {
        let t = Uuid::new_v4();
        let current = Current {
            epoch: 1,
            ..Current::default()
        };
        let target = a(t, &[0, 1]);
        let s = step(&current, 2, &target, Some(&Assignment::new()), |_, p| {
            p == 1
        });
        assert_eq!((s.epoch, s.state), (2, MemberState::UnreleasedPartitions));
        assert_eq!(s.assigned, a(t, &[0]));
        let s = step(&s, 2, &target, Some(&a(t, &[0])), |_, _| false);
        assert_eq!((s.epoch, s.state), (2, MemberState::Stable));
        assert_eq!(s.assigned, target);
    }
}
