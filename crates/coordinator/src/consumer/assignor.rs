//! Server-side partition assignors of the consumer group protocol (KIP-848).
//!
//! An assignor maps the group's members (with what they subscribe to and what the previous
//! target gave them) to a new target assignment. Two are served, as on Kafka:
//!
//! - `uniform` (the default): every partition of the subscribed topics goes to one
//!   subscribed member, loads differ by at most one partition wherever the subscriptions
//!   allow it, and partitions stay where they were unless balance needs them elsewhere.
//! - `range`: per topic, the subscribed members in member-id order get contiguous ranges
//!   of partitions (the first `partitions % members` one more), so members subscribed to
//!   co-partitioned topics get the same partition numbers of each.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::Assignment;

/// Assignor names, the default first.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub struct AssignMember<'a> {
    pub member_id: &'a str,
    /// Topic ids the member subscribes to (that exist).
    pub topics: BTreeSet<Uuid>,
    /// The member's part of the previous target assignment.
    pub previous: Option<&'a Assignment>,
}

/// Runs assignor `name` (one of [`ASSIGNORS`]) over `topics` (id → partition count).
pub fn assign(
    name: &str,
    members: &[AssignMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    match name {
        "range" => range(members, topics),
        _ => uniform(members, topics),
    }
}

fn range(
    members: &[AssignMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for (&topic, &count) in topics {
        let mut subscribed: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.member_id)
            .collect();
        if subscribed.is_empty() || count <= 0 {
            continue;
        }
        subscribed.sort_unstable();
        let n = subscribed.len() as i32;
        let (base, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribed.iter().enumerate() {
            let take = base + i32::from((i as i32) < extra);
            if take > 0 {
                out.entry(member.to_string())
                    .or_default()
                    .entry(topic)
                    .or_default()
                    .extend(next..next + take);
            }
            next += take;
        }
    }
    out
}

fn uniform(
    members: &[AssignMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let ids: Vec<&str> = members.iter().map(|m| m.member_id).collect();
    let mut load = vec![0usize; members.len()];
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    // Eligible members per topic, and every partition some member subscribes to.
    let eligible: BTreeMap<Uuid, Vec<usize>> = topics
        .keys()
        .map(|t| {
            let e: Vec<usize> = (0..members.len())
                .filter(|&i| members[i].topics.contains(t))
                .collect();
            (*t, e)
        })
        .filter(|(_, e)| !e.is_empty())
        .collect();
    let partitions: Vec<(Uuid, i32)> = eligible
        .keys()
        .flat_map(|t| (0..topics[t].max(0)).map(move |p| (*t, p)))
        .collect();
    // The fair share of a member if everyone could take anything: keeping more than this
    // from the previous assignment would only be undone by the balancing below.
    let share = partitions.len().div_ceil(members.len().max(1));
    // 1. Stickiness: what a member had stays if it still subscribes, within its share.
    for (i, m) in members.iter().enumerate() {
        let Some(previous) = m.previous else { continue };
        for (topic, ps) in previous {
            if !m.topics.contains(topic) {
                continue;
            }
            let count = topics.get(topic).copied().unwrap_or(0);
            for &p in ps {
                if p < count && load[i] < share && !owner.contains_key(&(*topic, p)) {
                    owner.insert((*topic, p), i);
                    load[i] += 1;
                }
            }
        }
    }
    // 2. Every other partition to the least-loaded subscribed member.
    for &(topic, p) in &partitions {
        if owner.contains_key(&(topic, p)) {
            continue;
        }
        let &best = eligible[&topic]
            .iter()
            .min_by_key(|&&i| (load[i], ids[i]))
            .expect("eligible is never empty");
        owner.insert((topic, p), best);
        load[best] += 1;
    }
    // 3. Balance: move partitions from a member to a subscribed one with two fewer.
    loop {
        let mut moved = false;
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse((load[i], std::cmp::Reverse(ids[i]))));
        'donors: for &donor in &order {
            let owned: Vec<(Uuid, i32)> = owner
                .iter()
                .filter(|(_, &o)| o == donor)
                .map(|(k, _)| *k)
                .collect();
            for key in owned.into_iter().rev() {
                let Some(&taker) = eligible[&key.0].iter().min_by_key(|&&i| (load[i], ids[i]))
                else {
                    continue;
                };
                if load[taker] + 1 < load[donor] {
                    owner.insert(key, taker);
                    load[donor] -= 1;
                    load[taker] += 1;
                    moved = true;
                    break 'donors;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> = ids
        .iter()
        .map(|id| (id.to_string(), Assignment::new()))
        .collect();
    for ((topic, p), i) in owner {
        out.entry(ids[i].to_string())
            .or_default()
            .entry(topic)
            .or_default()
            .insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(
        id: &'a str,
        topics: &[Uuid],
        previous: Option<&'a Assignment>,
    ) -> AssignMember<'a> {
        AssignMember {
            member_id: id,
            topics: topics.iter().copied().collect(),
            previous,
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// Every partition of `topics` exactly once.
    fn assert_complete(out: &BTreeMap<String, Assignment>, topics: &BTreeMap<Uuid, i32>) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t}-{p} assigned twice");
                }
            }
        }
        let all: usize = topics.values().map(|&c| c as usize).sum();
        assert_eq!(seen.len(), all);
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let t1 = Uuid::new_v4();
        let t2 = Uuid::new_v4();
        let topics = BTreeMap::from([(t1, 7), (t2, 5)]);
        let first = uniform(
            &[member("a", &[t1, t2], None), member("b", &[t1, t2], None)],
            &topics,
        );
        assert_complete(&first, &topics);
        assert_eq!(count(&first["a"]), 6);
        assert_eq!(count(&first["b"]), 6);
        // A third member takes a third; the others keep everything else they had.
        let second = uniform(
            &[
                member("a", &[t1, t2], Some(&first["a"])),
                member("b", &[t1, t2], Some(&first["b"])),
                member("c", &[t1, t2], None),
            ],
            &topics,
        );
        assert_complete(&second, &topics);
        for id in ["a", "b", "c"] {
            assert_eq!(count(&second[id]), 4, "{id}");
        }
        for id in ["a", "b"] {
            for (t, ps) in &second[id] {
                assert!(
                    ps.is_subset(&first[id][t]),
                    "{id} was given a partition it did not need"
                );
            }
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let t1 = Uuid::new_v4();
        let t2 = Uuid::new_v4();
        let topics = BTreeMap::from([(t1, 6), (t2, 2)]);
        let out = uniform(
            &[member("a", &[t1], None), member("b", &[t1, t2], None)],
            &topics,
        );
        assert_complete(&out, &topics);
        assert!(!out["a"].contains_key(&t2));
        assert_eq!(count(&out["a"]), 4);
        assert_eq!(count(&out["b"]), 4);
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let t1 = Uuid::new_v4();
        let t2 = Uuid::new_v4();
        let topics = BTreeMap::from([(t1, 5), (t2, 5)]);
        let out = range(
            &[member("b", &[t1, t2], None), member("a", &[t1, t2], None)],
            &topics,
        );
        assert_complete(&out, &topics);
        let a: Vec<i32> = out["a"][&t1].iter().copied().collect();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(out["a"][&t1], out["a"][&t2], "co-partitioned");
        let b: Vec<i32> = out["b"][&t2].iter().copied().collect();
        assert_eq!(b, vec![3, 4]);
    }

    #[test]
    fn no_members_or_no_partitions() {
        let t = Uuid::new_v4();
        assert!(uniform(&[], &BTreeMap::from([(t, 3)])).is_empty());
        let out = uniform(&[member("a", &[t], None)], &BTreeMap::new());
        assert_eq!(count(&out["a"]), 0);
    }
}
