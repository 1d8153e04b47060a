//! One PostgreSQL connection that comes back: reconnect with backoff after the server
//! went away, and the rule for which failures are retried (the connection, a restart, a
//! serialization conflict) and which stop the sink (the table or a permission is wrong).

use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use tracing::warn;

use crate::SinkError;

pub struct Pg {
    dsn: String,
    client: Option<Client>,
}

/// How a PostgreSQL failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The data: a value PostgreSQL refused or a constraint (SQLSTATE classes 22 and 23).
    Data,
    /// The connection or the server's state: try again.
    Retry,
    /// Anything else (undefined table or column, permissions): stop.
    Fatal,
}

pub fn classify(e: &postgres::Error) -> Failure {
    let Some(code) = e.code() else {
        return Failure::Retry; // no SQLSTATE: the connection itself
    };
    let class = &code.code()[..2];
    match class {
        "22" | "23" => Failure::Data,
        // connection exception, insufficient resources, operator intervention (shutdown,
        // crash recovery), system error, serialization failure and deadlock
        "08" | "53" | "57" | "58" | "40" => Failure::Retry,
        _ if *code == SqlState::CANNOT_CONNECT_NOW => Failure::Retry,
        _ => Failure::Fatal,
    }
}

impl Pg {
    /// Connect once now: a DSN that does not parse, a refused password or a missing
    /// database is an error at start, not something to retry forever; a server that is
    /// not up yet is waited for up to WAIT.
    pub fn connect(dsn: &str, wait: Duration) -> Result<Self, SinkError> {
        dsn.parse::<postgres::Config>()
            .map_err(|e| SinkError::Config(format!("the DSN does not parse: {e}")))?;
        let deadline = Instant::now() + wait;
        let mut backoff = Duration::from_millis(100);
        loop {
            match Client::connect(dsn, NoTls) {
                Ok(client) => {
                    return Ok(Self {
                        dsn: dsn.to_string(),
                        client: Some(client),
                    })
                }
                Err(e) if e.code().is_none() && Instant::now() < deadline => {
                    warn!("PostgreSQL is not reachable yet ({e}); retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(SinkError::postgres("connecting to PostgreSQL", e)),
            }
        }
    }

    /// The connection, reconnected if it was lost.
    pub fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(Client::connect(&self.dsn, NoTls)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// After a failure: drop a connection that is gone, so the next call reconnects.
    pub fn forget_if_closed(&mut self) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
    }
}

/// Backoff between retries: 100 ms doubling to 5 s.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    pub fn wait(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}
