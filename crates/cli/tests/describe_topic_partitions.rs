//! DescribeTopicPartitions (KIP-966) against the real binary: pages by cursor, a cursor on a
//! deleted topic, unknown and invalid names, refused cursors; nothing else disturbed.

mod common;

use common::{create_topic, start, Conn};
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

fn describe(
    c: &mut Conn,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    c.call(
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                Cursor::default()
                    .with_topic_name(name(t))
                    .with_partition_index(p)
            })),
    )
}

/// A topic's partition, by name.
type Row = (String, i32);

/// (topic, partition) pairs of an answer, and its cursor.
fn page(r: &DescribeTopicPartitionsResponse) -> (Vec<Row>, Option<Row>) {
    let rows = r
        .topics
        .iter()
        .flat_map(|t| {
            let n = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            t.partitions
                .iter()
                .map(move |p| (n.clone(), p.partition_index))
        })
        .collect();
    let cursor = r
        .next_cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    (rows, cursor)
}

fn pairs(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

#[test]
fn pages_follow_the_cursor_and_errors_are_kafkas() {
    let broker = start();
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "dtp-a", 3);
    create_topic(&mut c, "dtp-b", 2);
    create_topic(&mut c, "dtp-c", 4);
    let all = ["dtp-a", "dtp-b", "dtp-c"];

    let first = describe(&mut c, &all, 4, None);
    assert_eq!(
        page(&first),
        (
            pairs(&[("dtp-a", 0), ("dtp-a", 1), ("dtp-a", 2), ("dtp-b", 0)]),
            Some(("dtp-b".into(), 1))
        )
    );
    assert!(!first.topics[0].topic_id.is_nil());
    let second = describe(&mut c, &all, 4, Some(("dtp-b", 1)));
    assert_eq!(
        page(&second),
        (
            pairs(&[("dtp-b", 1), ("dtp-c", 0), ("dtp-c", 1), ("dtp-c", 2)]),
            Some(("dtp-c".into(), 3))
        )
    );
    let last = describe(&mut c, &all, 4, Some(("dtp-c", 3)));
    assert_eq!(page(&last), (pairs(&[("dtp-c", 3)]), None));
    // A page that ends with a topic points at the next one.
    let exact = describe(&mut c, &all, 3, None);
    assert_eq!(page(&exact).1, Some(("dtp-b".into(), 0)));

    // Every topic (internal ones too) when none is named.
    let everything = describe(&mut c, &[], 2000, None);
    let names: Vec<String> = everything
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"__consumer_offsets".to_string()) && names.contains(&"dtp-b".to_string())
    );
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");

    // Unknown and invalid names.
    let r = describe(&mut c, &["dtp-a", "dtp-missing", "bad/name"], 100, None);
    let codes: Vec<(String, i16)> = r
        .topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code))
        .collect();
    assert!(codes.contains(&("dtp-missing".into(), 3)), "{codes:?}");
    assert!(codes.contains(&("bad/name".into(), 17)), "{codes:?}");
    assert!(codes.contains(&("dtp-a".into(), 0)), "{codes:?}");

    // A cursor outside the list, or with a negative partition: INVALID_REQUEST for all.
    let r = describe(&mut c, &["dtp-a"], 10, Some(("dtp-b", 0)));
    assert!(r.topics.iter().all(|t| t.error_code == 42) && !r.topics.is_empty());
    let r = describe(&mut c, &["dtp-a"], 10, Some(("dtp-a", -1)));
    assert!(r.topics.iter().all(|t| t.error_code == 42) && !r.topics.is_empty());

    // A cursor on a topic deleted meanwhile: listing all topics resumes at the next name.
    let deleted: DeleteTopicsResponse = c.call(
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default().with_topic_names(vec![name("dtp-b")]),
    );
    assert_eq!(deleted.responses[0].error_code, 0);
    let resumed = describe(&mut c, &[], 3, Some(("dtp-b", 1)));
    assert_eq!(
        page(&resumed).0,
        pairs(&[("dtp-c", 0), ("dtp-c", 1), ("dtp-c", 2)])
    );
    // Naming it explicitly reports it gone.
    let r = describe(&mut c, &["dtp-b", "dtp-c"], 10, Some(("dtp-b", 1)));
    assert_eq!(r.topics[0].error_code, 3);
    assert_eq!(
        page(&r).0,
        pairs(&[("dtp-c", 0), ("dtp-c", 1), ("dtp-c", 2), ("dtp-c", 3)])
    );

    // The connection and broker go on serving.
    let m: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    assert!(m.topics.len() >= 3);
}
