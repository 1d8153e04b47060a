//! Hostile connections against the real binary: memory floods, slow senders, connection
//! floods, huge fetches and garbage after valid headers for every served API. After each,
//! the broker is up, other clients are served, `read_committed` readers advance and no data
//! changed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use exacta_wire::batch::build_batch;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;

const TS: i64 = 1_700_000_000_000;

/// Seeds a topic with a few batches and returns what a reader sees of it.
fn seed(broker: &Broker, topic: &str) -> Vec<u8> {
    let mut c = Conn::new(broker);
    create_topic(&mut c, topic, 1);
    for i in 0..5 {
        let batch = build_batch(&[format!("seed-{i}").into_bytes()], TS, Compression::None);
        assert_eq!(produce(&mut c, 7, topic, 0, batch).error_code, 0);
    }
    read_all(&mut c, topic, 0)
}

fn connect(broker: &Broker) -> TcpStream {
    TcpStream::connect(("127.0.0.1", broker.port)).unwrap()
}

/// A new client's Metadata request is answered within `within`.
fn served_within(broker: &Broker, within: Duration) {
    let started = Instant::now();
    let mut c = Conn::new(broker);
    let _: MetadataResponse = c.call(ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
}

#[test]
fn a_flood_of_large_frames_is_held_back_not_buffered() {
    let config = "frame_bytes_max = 25165824\nqueued_request_bytes_max = 67108864\n\
                  request_read_timeout_ms = 20000\n";
    let broker = start_with(config);
    let before = seed(&broker, "flood");
    let baseline = broker.rss_bytes();
    // 40 connections each announce a 24 MiB frame and send half of it.
    let half = Arc::new(vec![0x5au8; 12 << 20]);
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let mut s = connect(&broker);
            let half = Arc::clone(&half);
            let writer = s.try_clone().unwrap();
            std::thread::spawn(move || {
                s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                let _ = s.write_all(&(24i32 << 20).to_be_bytes());
                let _ = s.write_all(&half);
            });
            writer
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let grown = broker.rss_bytes().saturating_sub(baseline);
    // Small requests have their own share of the budget: still served.
    served_within(&broker, Duration::from_secs(2));
    let mut c = Conn::new(&broker);
    let small = build_batch(&[b"during".to_vec()], TS, Compression::None);
    assert_eq!(produce(&mut c, 7, "flood", 0, small).error_code, 0);
    for s in &flood {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    // Two frames fit in the large pool (56 MiB): at most ~48 MiB read, not 480.
    assert!(
        grown < 120 << 20,
        "broker grew by {} MiB during the flood",
        grown >> 20
    );
    let after = read_all(&mut c, "flood", 0);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "earlier data unchanged"
    );
    assert_healthy(&broker, "flood");
}

#[test]
fn slow_and_idle_connections_are_closed_and_others_served() {
    let config = "request_read_timeout_ms = 3000\nconnections_max_idle_ms = 2000\n";
    let broker = start_with(config);
    let before = seed(&broker, "slow");
    // Slow loris: a 100-byte frame, one byte per second after its size.
    let mut loris = connect(&broker);
    loris.write_all(&100i32.to_be_bytes()).unwrap();
    let idle = connect(&broker);
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(8) {
        if loris.write_all(&[0]).is_err() {
            closed = true;
            break;
        }
        served_within(&broker, Duration::from_secs(1));
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut probe = [0u8; 1];
    loris
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    closed |= matches!(loris.read(&mut probe), Ok(0) | Err(_));
    assert!(closed, "the slow frame's connection must be closed");
    assert!(started.elapsed() < Duration::from_secs(8));
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert!(
        matches!(idle.read(&mut probe), Ok(0)),
        "the idle connection is closed"
    );
    let mut c = Conn::new(&broker);
    assert_eq!(read_all(&mut c, "slow", 0), before);
    assert_healthy(&broker, "slow");
}

#[test]
fn connections_beyond_the_limit_are_refused_and_the_rest_served() {
    let broker = start_with("connections_max = 16\n");
    let before = seed(&broker, "connections");
    let mut held: Vec<Conn> = (0..64).map(|_| Conn::new(&broker)).collect();
    let mut refused = 0;
    for c in &mut held {
        refused += usize::from(c.closed_within(Duration::from_millis(300)));
    }
    assert!(
        refused >= 48,
        "only {refused} of 64 connections were refused"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Conn::new(&broker);
    assert_eq!(read_all(&mut c, "connections", 0), before);
    assert_healthy(&broker, "connections");
}

#[test]
fn a_fetch_cannot_ask_for_more_than_fetch_bytes_max() {
    let broker = start_with("fetch_bytes_max = 1048576\n");
    let mut c = Conn::new(&broker);
    create_topic(&mut c, "big-fetch", 1);
    for _ in 0..8 {
        let batch = build_batch(&[vec![7u8; 300_000]], TS, Compression::None);
        assert_eq!(produce(&mut c, 7, "big-fetch", 0, batch).error_code, 0);
    }
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("big-fetch")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(i32::MAX)])]);
    let fetched: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch);
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert!(!records.is_empty());
    assert!(records.len() <= 1 << 20, "{} bytes returned", records.len());
}

/// xorshift64*: reproducible garbage without a dependency.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Sends a valid header for `key`/`version` followed by `body`; `Some(answer)` or `None`
/// if the broker closed the connection (both fine), panics if it neither answers nor
/// closes within 10 s.
fn exchange(stream: &mut TcpStream, key: i16, version: i16, body: &[u8]) -> Option<Bytes> {
    let api = ApiKey::try_from(key).unwrap();
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, api.request_header_version(version))
        .unwrap();
    frame.extend_from_slice(body);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sent = stream
        .write_all(&(frame.len() as i32).to_be_bytes())
        .and_then(|()| stream.write_all(&frame));
    if sent.is_err() {
        return None;
    }
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            panic!("{api:?} v{version}: no answer and no close within 10 s")
        }
        Err(_) => return None,
    }
    let mut answer = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream.read_exact(&mut answer).ok()?;
    Some(Bytes::from(answer))
}

#[test]
fn garbage_after_valid_headers_of_every_api_harms_nothing() {
    let mut broker = start();
    let before = seed(&broker, "garbage");
    let mut rng = Garbage(0x5eed_1234_abcd_0042);
    let mut stream = connect(&broker);
    let mut answered = 0;
    let mut closed = 0;
    for range in exacta_wire::versions::SUPPORTED {
        for version in [range.min, range.max] {
            let mut bodies: Vec<Vec<u8>> = vec![
                // Counts and lengths far beyond the frame: classic and flexible encodings.
                [0x7f, 0xff, 0xff, 0xff].repeat(64),
                [0xff, 0xff, 0xff, 0xff, 0x0f].repeat(32),
                // Negative lengths.
                [0x80, 0x00, 0x00, 0x01].repeat(16),
                Vec::new(),
            ];
            for len in [1, 7, 64, 1000, 5000] {
                bodies.push(rng.bytes(len));
            }
            for body in &bodies {
                match exchange(&mut stream, range.key as i16, version, body) {
                    Some(_) => answered += 1,
                    None => {
                        closed += 1;
                        stream = connect(&broker);
                    }
                }
            }
        }
    }
    assert!(answered + closed > 500);
    assert!(
        broker.wait_exit(Duration::from_millis(10)).is_none(),
        "the broker is up"
    );
    let mut c = Conn::new(&broker);
    assert_eq!(read_all(&mut c, "garbage", 0), before, "no data changed");
    assert_healthy(&broker, "garbage");
}
