//! The dead-letter topic: a record that cannot become a row goes there with its key, value
//! and headers, plus `exacta.dlt.topic`, `exacta.dlt.partition`, `exacta.dlt.offset` and
//! `exacta.dlt.error` headers, before the transaction that moves the offsets past it. A
//! crash between the two sends it again on the next attempt: at least once, and the
//! coordinates in its headers identify a repeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::record::Record;
use crate::SinkError;

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct DeadLetters {
    topic: String,
    producer: BaseProducer<Deliveries>,
}

impl DeadLetters {
    pub fn new(bootstrap: &str, topic: &str) -> Result<Self, SinkError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .map_err(|e| SinkError::kafka("creating the dead-letter producer", e))?;
        Ok(Self {
            topic: topic.to_string(),
            producer,
        })
    }

    /// Send RECORDS with their reasons and wait until every one is acknowledged.
    pub fn send(&self, records: &[(&Record, &str)]) -> Result<(), SinkError> {
        self.producer.context().failed.store(0, Ordering::Relaxed);
        for (record, reason) in records {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let (partition, offset) = (record.partition.to_string(), record.offset.to_string());
            for (key, value) in [
                ("exacta.dlt.topic", record.topic.as_str()),
                ("exacta.dlt.partition", &partition),
                ("exacta.dlt.offset", &offset),
                ("exacta.dlt.error", reason),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut out = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(k) = &record.key {
                out = out.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                out = out.payload(v.as_slice());
            }
            loop {
                match self.producer.send(out) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        if e.rdkafka_error_code()
                            != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        {
                            return Err(SinkError::kafka("sending to the dead-letter topic", e));
                        }
                        self.producer.poll(Duration::from_millis(50));
                        out = back;
                    }
                }
            }
        }
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| SinkError::kafka("waiting for the dead-letter topic", e))?;
        match self.producer.context().failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(SinkError::Config(format!(
                "{n} records were not accepted by the dead-letter topic {}",
                self.topic
            ))),
        }
    }
}
