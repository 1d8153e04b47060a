//! A Kafka-aware fault-injecting proxy.
//!
//! Clients connect to the proxy as if it were the broker; each connection is relayed to
//! the upstream broker frame by frame. The proxy reads every request header to know which
//! API each response answers, and:
//!
//! - rewrites the broker addresses in Metadata and FindCoordinator responses to its own,
//!   so clients stay behind it after bootstrapping;
//! - for the APIs named in [`FaultConfig::drop_response`], drops the response with the
//!   given probability and cuts the connection (client and upstream side), as a network
//!   failure after the broker acted would. The client must retry; the broker must not
//!   apply the retry twice;
//! - for the APIs named in [`FaultConfig::delay`], holds each request for a random time up
//!   to the given bound before forwarding it (requests behind it on that connection wait
//!   too, as on a slow link).
//!
//! - for the APIs named in [`FaultConfig::inject_error`], answers a request itself with an
//!   error (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...) instead of forwarding it,
//!   keeping responses in request order;
//! - for the APIs named in [`FaultConfig::duplicate`], also sends a copy of the request on
//!   a new connection after a random delay (its response is discarded), so a request can
//!   arrive twice and after later ones;
//! - for the APIs named in [`FaultConfig::blackhole`], stops the connection dead (nothing
//!   forwarded either way) for a while, then cuts it.
//!
//! Decisions come from a seeded generator, so a failing run can be replayed with the same
//! seed (given the same traffic).

pub mod inject;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FindCoordinatorResponse, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// What to break.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Probability (0..=1) per API of dropping a response and cutting the connection.
    pub drop_response: HashMap<ApiKey, f64>,
    /// Upper bound (ms) per API of a uniformly random delay before forwarding a request.
    pub delay: HashMap<ApiKey, u64>,
    /// Probability per API of answering with one of the error codes (picked at random)
    /// instead of forwarding.
    pub inject_error: HashMap<ApiKey, (f64, Vec<i16>)>,
    /// Probability per API of sending a copy of the request on another connection, and the
    /// upper bound (ms) of the copy's delay.
    pub duplicate: HashMap<ApiKey, (f64, u64)>,
    /// Probability per API of blackholing the connection, and for how long (ms).
    pub blackhole: HashMap<ApiKey, (f64, u64)>,
    pub seed: u64,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub responses_dropped: AtomicU64,
    pub requests_delayed: AtomicU64,
    pub errors_injected: AtomicU64,
    pub requests_duplicated: AtomicU64,
    pub blackholes: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// A bound proxy.
pub struct Proxy {
    listener: TcpListener,
    upstream: String,
    advertised: (String, i32),
    faults: FaultConfig,
    stats: Arc<ProxyStats>,
}

impl Proxy {
    /// Binds `listen`; clients are told to reconnect to `advertised` (default: the bound
    /// address).
    pub async fn bind(
        listen: &str,
        upstream: String,
        advertised: Option<String>,
        faults: FaultConfig,
    ) -> Result<Self, ProxyError> {
        let bind_error = |source| ProxyError::Bind {
            address: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let advertised = match advertised {
            Some(a) => {
                split_host_port(&a).unwrap_or((local.ip().to_string(), i32::from(local.port())))
            }
            None => (local.ip().to_string(), i32::from(local.port())),
        };
        Ok(Self {
            listener,
            upstream,
            advertised,
            faults,
            stats: Arc::new(ProxyStats::default()),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.stats)
    }

    /// Relays connections until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(
            upstream = %self.upstream,
            "exacta proxy listening on {}",
            self.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        let shared = Arc::new(Shared {
            upstream: self.upstream,
            advertised: self.advertised,
            faults: self.faults,
            stats: Arc::clone(&self.stats),
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let Ok((client, peer)) = accepted else { continue };
                    let n = shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        if let Err(e) = relay(client, &shared, n).await {
                            tracing::debug!(%peer, error = %e, "proxied connection ended");
                        }
                    });
                }
            }
        }
        let s = &self.stats;
        tracing::info!(
            connections = s.connections.load(Ordering::Relaxed),
            requests = s.requests.load(Ordering::Relaxed),
            responses_dropped = s.responses_dropped.load(Ordering::Relaxed),
            requests_delayed = s.requests_delayed.load(Ordering::Relaxed),
            errors_injected = s.errors_injected.load(Ordering::Relaxed),
            requests_duplicated = s.requests_duplicated.load(Ordering::Relaxed),
            blackholes = s.blackholes.load(Ordering::Relaxed),
            "proxy stopped"
        );
    }
}

struct Shared {
    upstream: String,
    advertised: (String, i32),
    faults: FaultConfig,
    stats: Arc<ProxyStats>,
}

/// A request awaiting its response, in request order. `injected` holds the proxy's own
/// answer when the request was not forwarded.
struct Pending {
    correlation: i32,
    key: ApiKey,
    version: i16,
    injected: Option<Bytes>,
}

/// The requests of one connection awaiting a response, oldest first, and a signal for
/// the response side when the proxy answered one itself.
#[derive(Default)]
struct InFlight {
    queue: Mutex<VecDeque<Pending>>,
    injected: tokio::sync::Notify,
}

impl InFlight {
    fn push(&self, pending: Pending) {
        let injected = pending.injected.is_some();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(pending);
        if injected {
            self.injected.notify_one();
        }
    }

    /// The proxy's own answers due before a broker response (nothing older still
    /// awaited), that response's entry (given its correlation id), and the answers due
    /// right after it. To be written in that order.
    fn take(&self, correlation: Option<i32>) -> (Vec<Bytes>, Option<Pending>, Vec<Bytes>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let due = |queue: &mut VecDeque<Pending>| {
            let mut answers = Vec::new();
            while queue.front().is_some_and(|p| p.injected.is_some()) {
                answers.extend(queue.pop_front().and_then(|p| p.injected));
            }
            answers
        };
        let before = due(&mut queue);
        let entry = correlation.and_then(|c| {
            let at = queue.iter().position(|p| p.correlation == c)?;
            queue.remove(at)
        });
        let after = if entry.is_some() {
            due(&mut queue)
        } else {
            Vec::new()
        };
        (before, entry, after)
    }
}

async fn relay(client: TcpStream, shared: &Shared, connection: u64) -> std::io::Result<()> {
    let upstream = TcpStream::connect(&shared.upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let in_flight = InFlight::default();
    let mut rng = Rng::new(shared.faults.seed ^ connection.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut request_rng = Rng::new(rng.next() ^ 0x5bd1_e995);
    // Whichever direction ends first (EOF, error, or an injected cut) ends both.
    tokio::select! {
        r = requests(client_read, upstream_write, &in_flight, shared, &mut request_rng) => r,
        r = responses(upstream_read, client_write, &in_flight, shared, &mut rng) => r,
    }
}

async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    in_flight: &InFlight,
    shared: &Shared,
    rng: &mut Rng,
) -> std::io::Result<()> {
    let faults = &shared.faults;
    while let Some(frame) = read_frame(&mut from).await? {
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let parsed = (frame.len() >= 12)
            .then(|| {
                let key = ApiKey::try_from(i16::from_be_bytes([frame[4], frame[5]])).ok()?;
                let version = i16::from_be_bytes([frame[6], frame[7]]);
                let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                Some((key, version, correlation))
            })
            .flatten();
        let Some((key, version, correlation)) = parsed else {
            to.write_all(&frame).await?;
            continue;
        };
        if let Some(&(p, ms)) = faults.blackhole.get(&key) {
            if rng.chance(p) {
                shared.stats.blackholes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(api = ?key, correlation, ms, "fault: blackholed the connection");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                return Ok(());
            }
        }
        if let Some(&max_ms) = faults.delay.get(&key) {
            let ms = rng.next() % max_ms.saturating_add(1);
            shared
                .stats
                .requests_delayed
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(api = ?key, correlation, delay_ms = ms, "fault: delayed request");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let injected = match faults.inject_error.get(&key) {
            Some((p, codes)) if !codes.is_empty() && rng.chance(*p) => {
                let code = codes[(rng.next() % codes.len() as u64) as usize];
                let answer = inject::error_response(frame.slice(4..), code);
                if answer.is_some() {
                    shared.stats.errors_injected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(api = ?key, correlation, code, "fault: injected an error response");
                }
                answer
            }
            _ => None,
        };
        if let Some(answer) = injected {
            in_flight.push(Pending {
                correlation,
                key,
                version,
                injected: Some(answer),
            });
            continue;
        }
        // Only injected answers need every awaited response accounted for (an acks=0
        // Produce gets none); without injection rules, skip decoding each Produce.
        if faults.inject_error.is_empty() || !inject::expects_no_response(key, &frame.slice(4..)) {
            in_flight.push(Pending {
                correlation,
                key,
                version,
                injected: None,
            });
        }
        if let Some(&(p, max_ms)) = faults.duplicate.get(&key) {
            if rng.chance(p) {
                let ms = rng.next() % max_ms.saturating_add(1);
                shared
                    .stats
                    .requests_duplicated
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(api = ?key, correlation, delay_ms = ms, "fault: duplicated request");
                tokio::spawn(send_copy(shared.upstream.clone(), frame.clone(), ms));
            }
        }
        to.write_all(&frame).await?;
    }
    Ok(())
}

/// Sends a copy of a request on its own connection after `ms`; the answer is discarded.
async fn send_copy(upstream: String, frame: Bytes, ms: u64) {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    if let Ok(stream) = TcpStream::connect(&upstream).await {
        let (mut read, mut write) = stream.into_split();
        if write.write_all(&frame).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), read_frame(&mut read))
                .await;
        }
    }
}

async fn responses(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    in_flight: &InFlight,
    shared: &Shared,
    rng: &mut Rng,
) -> std::io::Result<()> {
    // Broker frames through a channel, so waiting for them can race the proxy's own
    // answers without losing a half-read frame.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Option<Bytes>>>(16);
    let reader = tokio::spawn(async move {
        let mut from = from;
        loop {
            let frame = read_frame(&mut from).await;
            let end = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || end {
                break;
            }
        }
    });
    let result = async {
        loop {
            let frame = tokio::select! {
                received = rx.recv() => match received {
                    Some(Ok(Some(frame))) => frame,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) | None => return Ok(()),
                },
                _ = in_flight.injected.notified() => {
                    for answer in in_flight.take(None).0 {
                        to.write_all(&answer).await?;
                    }
                    continue;
                }
            };
            if frame.len() < 8 {
                to.write_all(&frame).await?;
                continue;
            }
            let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let (before, entry, after) = in_flight.take(Some(correlation));
            for answer in before {
                to.write_all(&answer).await?;
            }
            let Some(Pending { key, version, .. }) = entry else {
                to.write_all(&frame).await?;
                continue;
            };
            if let Some(&p) = shared.faults.drop_response.get(&key) {
                if rng.chance(p) {
                    shared
                        .stats
                        .responses_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(api = ?key, correlation, "fault: dropped response and cut the connection");
                    return Ok(());
                }
            }
            let frame = match key {
                ApiKey::Metadata => {
                    rewrite_metadata(&frame, version, &shared.advertised).unwrap_or(frame)
                }
                ApiKey::FindCoordinator => {
                    rewrite_find_coordinator(&frame, version, &shared.advertised)
                        .unwrap_or(frame)
                }
                _ => frame,
            };
            to.write_all(&frame).await?;
            for answer in after {
                to.write_all(&answer).await?;
            }
        }
    }
    .await;
    reader.abort();
    result
}

/// Points every broker in a Metadata response at the proxy.
fn rewrite_metadata(frame: &Bytes, version: i16, advertised: &(String, i32)) -> Option<Bytes> {
    let mut body = frame.slice(4..);
    let header_version = ApiKey::Metadata.response_header_version(version);
    let header = ResponseHeader::decode(&mut body, header_version).ok()?;
    let mut response = MetadataResponse::decode(&mut body, version).ok()?;
    for broker in &mut response.brokers {
        broker.host = StrBytes::from_string(advertised.0.clone());
        broker.port = advertised.1;
    }
    exacta_wire::frame::encode_response(ApiKey::Metadata, version, header.correlation_id, &response)
        .ok()
}

/// Points the coordinator(s) in a FindCoordinator response at the proxy (clients key
/// brokers by node id, so one direct address would take every connection past the proxy).
fn rewrite_find_coordinator(
    frame: &Bytes,
    version: i16,
    advertised: &(String, i32),
) -> Option<Bytes> {
    let mut body = frame.slice(4..);
    let header_version = ApiKey::FindCoordinator.response_header_version(version);
    let header = ResponseHeader::decode(&mut body, header_version).ok()?;
    let mut response = FindCoordinatorResponse::decode(&mut body, version).ok()?;
    if response.error_code == 0 && response.port >= 0 {
        response.host = StrBytes::from_string(advertised.0.clone());
        response.port = advertised.1;
    }
    for c in &mut response.coordinators {
        if c.error_code == 0 {
            c.host = StrBytes::from_string(advertised.0.clone());
            c.port = advertised.1;
        }
    }
    exacta_wire::frame::encode_response(
        ApiKey::FindCoordinator,
        version,
        header.correlation_id,
        &response,
    )
    .ok()
}

/// Reads one size-prefixed frame including its prefix; `None` at end of stream.
async fn read_frame(from: &mut OwnedReadHalf) -> std::io::Result<Option<Bytes>> {
    let mut prefix = [0u8; 4];
    match from.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(prefix);
    if !(0..=512 << 20).contains(&size) {
        return Err(std::io::Error::other(format!("frame size {size}")));
    }
    let mut buf = BytesMut::zeroed(4 + size as usize);
    buf[..4].copy_from_slice(&prefix);
    from.read_exact(&mut buf[4..]).await?;
    Ok(Some(buf.freeze()))
}

fn split_host_port(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_string(), port.parse::<u16>().ok()?.into()))
}

/// xorshift64*: small, seeded, good enough for fault decisions (also the verifier's).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Parses `api=rate` (e.g. `produce=0.05`); API names as Kafka's, case-insensitive.
pub fn parse_drop_rule(rule: &str) -> Result<(ApiKey, f64), String> {
    let (key, rate) = split_rule(rule, "API=RATE")?;
    Ok((key, parse_rate(rate)?))
}

/// Parses `api=max_ms` (e.g. `end_txn=5000`): delay requests of that API by 0..=max_ms.
pub fn parse_delay_rule(rule: &str) -> Result<(ApiKey, u64), String> {
    let (key, ms) = split_rule(rule, "API=MAX_MS")?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("'{ms}' is not a number of milliseconds"))?;
    Ok((key, ms))
}

/// Parses `api=rate:CODE[,CODE...]` (e.g. `end_txn=0.1:NOT_COORDINATOR,14`).
pub fn parse_inject_rule(rule: &str) -> Result<(ApiKey, (f64, Vec<i16>)), String> {
    let (key, value) = split_rule(rule, "API=RATE:ERROR[,ERROR...]")?;
    if !inject::injectable(key) {
        return Err(format!("errors cannot be injected into {key:?} responses"));
    }
    let (rate, codes) = value
        .split_once(':')
        .ok_or_else(|| format!("'{rule}' is not API=RATE:ERROR[,ERROR...]"))?;
    let codes = codes
        .split(',')
        .map(inject::parse_error_code)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, (parse_rate(rate)?, codes)))
}

/// Parses `api=rate:max_ms` (`--duplicate`, `--blackhole`).
pub fn parse_rate_ms_rule(rule: &str) -> Result<(ApiKey, (f64, u64)), String> {
    let (key, value) = split_rule(rule, "API=RATE:MS")?;
    let (rate, ms) = value
        .split_once(':')
        .ok_or_else(|| format!("'{rule}' is not API=RATE:MS"))?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("'{ms}' is not a number of milliseconds"))?;
    Ok((key, (parse_rate(rate)?, ms)))
}

fn parse_rate(rate: &str) -> Result<f64, String> {
    let rate: f64 = rate
        .parse()
        .map_err(|_| format!("'{rate}' is not a probability"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("rate {rate} is outside 0..=1"));
    }
    Ok(rate)
}

fn split_rule<'a>(rule: &'a str, form: &str) -> Result<(ApiKey, &'a str), String> {
    let (name, value) = rule
        .split_once('=')
        .ok_or_else(|| format!("'{rule}' is not {form}"))?;
    let wanted = name.replace(['_', '-'], "").to_ascii_lowercase();
    (0..100i16)
        .filter_map(|k| ApiKey::try_from(k).ok())
        .find(|k| format!("{k:?}").to_ascii_lowercase() == wanted)
        .map(|k| (k, value))
        .ok_or_else(|| format!("unknown API '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_rules_parse_kafka_api_names() {
        assert_eq!(
            parse_drop_rule("produce=0.05").unwrap(),
            (ApiKey::Produce, 0.05)
        );
        assert_eq!(parse_drop_rule("EndTxn=1").unwrap(), (ApiKey::EndTxn, 1.0));
        assert_eq!(
            parse_drop_rule("add_partitions_to_txn=0.5").unwrap().0,
            ApiKey::AddPartitionsToTxn
        );
        assert!(parse_drop_rule("produce").is_err());
        assert!(parse_drop_rule("produce=2").is_err());
        assert!(parse_drop_rule("nothing=0.1").is_err());
        assert_eq!(
            parse_delay_rule("end_txn=5000").unwrap(),
            (ApiKey::EndTxn, 5000)
        );
        assert!(parse_delay_rule("produce=-1").is_err());
        let (key, (rate, codes)) = parse_inject_rule("end_txn=0.25:NOT_COORDINATOR,14").unwrap();
        assert_eq!((key, rate, codes), (ApiKey::EndTxn, 0.25, vec![16, 14]));
        assert!(parse_inject_rule("fetch=0.1:NOT_COORDINATOR").is_err());
        assert!(parse_inject_rule("end_txn=0.1").is_err());
        assert_eq!(
            parse_rate_ms_rule("produce=0.05:300").unwrap(),
            (ApiKey::Produce, (0.05, 300))
        );
        assert!(parse_rate_ms_rule("produce=0.05").is_err());
    }

    #[test]
    fn injected_answers_keep_request_order() {
        let in_flight = InFlight::default();
        let pending = |correlation, injected: Option<&'static str>| Pending {
            correlation,
            key: ApiKey::EndTxn,
            version: 1,
            injected: injected.map(|s| Bytes::from_static(s.as_bytes())),
        };
        in_flight.push(pending(1, None));
        in_flight.push(pending(2, Some("two")));
        in_flight.push(pending(3, None));
        in_flight.push(pending(4, Some("four")));
        // Nothing is due while request 1 awaits the broker.
        let (before, entry, after) = in_flight.take(None);
        assert!(before.is_empty() && entry.is_none() && after.is_empty());
        let (before, entry, after) = in_flight.take(Some(1));
        assert!(before.is_empty());
        assert_eq!(entry.map(|p| p.correlation), Some(1));
        assert_eq!(after, vec![Bytes::from_static(b"two")]);
        let (_, entry, after) = in_flight.take(Some(3));
        assert_eq!(entry.map(|p| p.correlation), Some(3));
        assert_eq!(after, vec![Bytes::from_static(b"four")]);
        in_flight.push(pending(5, Some("five")));
        assert_eq!(in_flight.take(None).0, vec![Bytes::from_static(b"five")]);
    }

    #[test]
    fn seeded_decisions_repeat_and_follow_the_rate() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let hits: Vec<bool> = (0..10_000).map(|_| a.chance(0.05)).collect();
        assert_eq!(
            hits,
            (0..10_000).map(|_| b.chance(0.05)).collect::<Vec<_>>()
        );
        let n = hits.iter().filter(|&&h| h).count();
        assert!((350..650).contains(&n), "{n} hits at 5%");
    }
}
