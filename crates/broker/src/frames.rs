//! Reading request frames within the broker's limits.
//!
//! A frame is a 4-byte size and that many bytes. Before a frame's body is read (and its
//! buffer allocated) the connection takes that many bytes from the [`RequestBudget`], a
//! broker-wide budget of request bytes being read or waiting for their answer
//! (`queued_request_bytes_max`). When the budget is spent, connections stop reading:
//! their clients' TCP windows fill and they wait, instead of the broker allocating
//! without bound. The bytes return to the budget when the request's answer is ready.
//!
//! Slow senders cannot hold a share of the budget forever: once its size has arrived, a
//! frame must arrive whole within `request_read_timeout_ms`; a connection that sends no
//! frame for `connections_max_idle_ms` is closed.
//!
//! An eighth of the budget is reserved for frames up to [`SMALL_FRAME_BYTES`] (heartbeats,
//! commits, metadata, small produces), so a flood of large frames slows only large ones.
//!
//! To ensure correctness: a frame's bytes are taken from the budget all at once (never
//! partly), so readers waiting for the budget hold none of it and cannot deadlock each
//! other; `frame_bytes_max` fits in the large frames' pool (checked at start), so every
//! admissible frame can eventually be read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BrokerConfig;
use crate::metrics::{Metrics, METRICS};

/// Frames up to this size draw on a reserved part of the budget, so that a flood of large
/// frames cannot hold up heartbeats, commits and metadata requests.
pub const SMALL_FRAME_BYTES: u32 = 64 << 10;

/// The part of the budget (1/`SMALL_SHARE`) reserved for small frames.
const SMALL_SHARE: u64 = 8;

/// The broker-wide budget of request bytes: one pool for frames up to
/// [`SMALL_FRAME_BYTES`] and one for larger frames.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
}

impl RequestBudget {
    pub fn new(bytes_max: u64) -> Self {
        let (small, large) = Self::pools(bytes_max);
        let permits = |n: u64| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS)
        };
        Self {
            small: Arc::new(Semaphore::new(permits(small))),
            large: Arc::new(Semaphore::new(permits(large))),
        }
    }

    /// The (small, large) pool sizes of a budget of `bytes_max`; the largest admissible
    /// frame is the large pool's size.
    pub fn pools(bytes_max: u64) -> (u64, u64) {
        let small = (bytes_max / SMALL_SHARE).max(u64::from(SMALL_FRAME_BYTES));
        (small, bytes_max.saturating_sub(small))
    }

    /// Takes `bytes` from the budget, waiting until they are free.
    async fn take(&self, bytes: u32) -> RequestBytes {
        let pool = if bytes <= SMALL_FRAME_BYTES {
            &self.small
        } else {
            &self.large
        };
        let permit = match Arc::clone(pool).try_acquire_many_owned(bytes) {
            Ok(permit) => permit,
            Err(_) => {
                Metrics::add(&METRICS.request_budget_waits, 1);
                Arc::clone(pool)
                    .acquire_many_owned(bytes)
                    .await
                    .expect("the request budget is never closed")
            }
        };
        METRICS
            .request_bytes_queued
            .fetch_add(u64::from(bytes), Ordering::Relaxed);
        RequestBytes {
            _permit: permit,
            bytes,
        }
    }
}

/// A frame's share of the [`RequestBudget`]; returned when dropped.
#[derive(Debug)]
pub struct RequestBytes {
    _permit: OwnedSemaphorePermit,
    bytes: u32,
}

impl Drop for RequestBytes {
    fn drop(&mut self) {
        METRICS
            .request_bytes_queued
            .fetch_sub(u64::from(self.bytes), Ordering::Relaxed);
    }
}

/// Why a connection's frame could not be read; each closes that connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is outside 0..={max} (frame_bytes_max)")]
    Size { size: i64, max: u32 },
    #[error("a frame of {size} bytes did not arrive whole within {timeout_ms} ms (request_read_timeout_ms)")]
    ReadTimeout { size: u32, timeout_ms: u64 },
    #[error("no request for {idle_ms} ms (connections_max_idle_ms)")]
    Idle { idle_ms: u64 },
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from one connection within the broker's limits.
#[derive(Debug)]
pub struct FrameReader {
    budget: RequestBudget,
    frame_bytes_max: u32,
    read_timeout: Duration,
    idle_timeout: Duration,
}

impl FrameReader {
    pub fn new(budget: RequestBudget, config: &BrokerConfig) -> Self {
        Self {
            budget,
            frame_bytes_max: config.frame_bytes_max,
            read_timeout: Duration::from_millis(config.request_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.connections_max_idle_ms),
        }
    }

    /// The next frame and its share of the budget; `None` at a clean end of stream. A
    /// connection is idle only while `awaiting_answers()` is false: one waiting for a long
    /// JoinGroup or Fetch is not.
    pub async fn read(
        &self,
        reader: &mut OwnedReadHalf,
        awaiting_answers: impl Fn() -> bool,
    ) -> Result<Option<(Bytes, RequestBytes)>, FrameError> {
        let mut prefix = [0u8; 4];
        let mut filled = 0;
        while filled < prefix.len() {
            match tokio::time::timeout(self.idle_timeout, reader.read(&mut prefix[filled..])).await
            {
                Err(_) if filled == 0 && awaiting_answers() => continue,
                Err(_) => {
                    Metrics::add(&METRICS.connections_timed_out, 1);
                    return Err(FrameError::Idle {
                        idle_ms: self.idle_timeout.as_millis() as u64,
                    });
                }
                Ok(Ok(0)) if filled == 0 => return Ok(None),
                Ok(Ok(0)) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                }
                Ok(Ok(n)) => filled += n,
                Ok(Err(e)) => return Err(e.into()),
            }
        }
        let size = i32::from_be_bytes(prefix);
        if size < 0 || size as u32 > self.frame_bytes_max {
            return Err(FrameError::Size {
                size: i64::from(size),
                max: self.frame_bytes_max,
            });
        }
        let size = size as u32;
        let share = self.budget.take(size).await;
        let mut buf = BytesMut::zeroed(size as usize);
        match tokio::time::timeout(self.read_timeout, reader.read_exact(&mut buf)).await {
            Err(_) => {
                Metrics::add(&METRICS.connections_timed_out, 1);
                Err(FrameError::ReadTimeout {
                    size,
                    timeout_ms: self.read_timeout.as_millis() as u64,
                })
            }
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(_)) => Ok(Some((buf.freeze(), share))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_makes_readers_wait_and_refills() {
        let budget = RequestBudget::new(8 << 20);
        let (small, large) = RequestBudget::pools(8 << 20);
        assert_eq!((small, large), (1 << 20, 7 << 20));
        let a = budget.take(4 << 20).await;
        let b = budget.take(3 << 20).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(2 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the large pool is spent: the reader waits"
        );
        // Small frames still pass.
        let small_frame = tokio::time::timeout(Duration::from_secs(1), budget.take(1000))
            .await
            .expect("small frames have their own pool");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("bytes returned to the budget release the reader")
            .unwrap();
        drop((b, c, small_frame));
        assert_eq!(budget.large.available_permits(), 7 << 20);
        assert_eq!(budget.small.available_permits(), 1 << 20);
    }
}
