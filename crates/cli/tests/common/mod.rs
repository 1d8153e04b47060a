//! Shared by the protocol-level tests: the real `exacta` binary on an ephemeral port and a
//! raw connection that speaks any API at any version with the `kafka-protocol` codecs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the broker with a TOML `config` (may be empty).
pub fn start_with(config: &str) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("exacta.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_exacta"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("broker exited").unwrap();
        if let Some(rest) = line.split("exacta listening on 127.0.0.1:").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Broker {
        child,
        port,
        _dir: dir,
    }
}

pub fn start() -> Broker {
    start_with("")
}

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
    port: u16,
}

impl Conn {
    pub fn new(broker: &Broker) -> Self {
        Self {
            stream: TcpStream::connect(("127.0.0.1", broker.port)).unwrap(),
            correlation: 0,
            port: broker.port,
        }
    }

    /// Sends `request` at `version` and decodes the answer; panics on any failure.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.try_call(key, version, request)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
    }

    /// As [`Conn::call`], with the failure as an error. After a failure the connection is
    /// replaced by a new one, so later calls can go on.
    pub fn try_call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        let result = self.exchange(key, version, request);
        if result.is_err() {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                self.stream = stream;
            }
        }
        result
    }

    fn exchange<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("exacta-protocol-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(|e| format!("encoding the request header: {e}"))?;
        request
            .encode(&mut body, version)
            .map_err(|e| format!("encoding the request: {e}"))?;
        self.stream
            .write_all(&(body.len() as i32).to_be_bytes())
            .and_then(|()| self.stream.write_all(&body))
            .map_err(|e| format!("sending: {e}"))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("no response (the broker closed the connection?): {e}"))?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| format!("reading the response: {e}"))?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .map_err(|e| format!("decoding the response header: {e}"))?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "correlation id {} answered for {}",
                header.correlation_id, self.correlation
            ));
        }
        Resp::decode(&mut frame, version).map_err(|e| format!("decoding the response: {e}"))
    }
}
