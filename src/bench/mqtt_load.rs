//! A lean MQTT 3.1.1 load generator for the benches: QoS 1 PUBLISH frames
//! encoded straight into one write buffer and sent in batches, with a window
//! of unacknowledged messages that PUBACKs reopen.
//!
//! The publishers of `bench ingest` stand in for PLCs and gateways on other
//! machines, yet here they share the 2 cores with the broker and ironlake.
//! A general client (`rumqttc`: a request channel, an event loop, a state
//! machine per packet, a copy of every topic and payload) took about a
//! quarter of both cores at saturation, CPU the bench then did not measure
//! ironlake with. This one speaks the same protocol on a real TCP
//! connection, so brokers (the embedded `rumqttd`, Mosquitto) see ordinary
//! clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Flush the write buffer once it holds this many bytes.
const FLUSH_BYTES: usize = 32 << 10;

/// One publishing connection.
pub struct LoadPublisher {
    w: OwnedWriteHalf,
    buf: Vec<u8>,
    next_id: u16,
    /// Messages queued so far.
    sent: u64,
    /// Permits = messages that may still be sent unacknowledged.
    window: Arc<Semaphore>,
    acked: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<Result<()>>,
}

/// MQTT's variable-length "remaining length".
fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// One QoS 1 PUBLISH frame.
pub fn encode_publish(buf: &mut Vec<u8>, id: u16, topic: &[u8], payload: &[u8]) {
    buf.push(0x32); // PUBLISH, QoS 1, no DUP, no RETAIN
    put_len(buf, 2 + topic.len() + 2 + payload.len());
    put_str(buf, topic);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(payload);
}

impl LoadPublisher {
    /// Connect (clean session) and wait for the broker's CONNACK.
    /// `inflight` bounds the unacknowledged messages.
    pub async fn connect(host: &str, port: u16, client_id: &str, inflight: usize) -> Result<Self> {
        let s = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to the broker at {host}:{port}"))?;
        s.set_nodelay(true)?;
        let (r, mut w) = s.into_split();
        let mut c = Vec::with_capacity(64);
        let mut body = Vec::with_capacity(64);
        put_str(&mut body, b"MQTT");
        body.push(4); // protocol level 3.1.1
        body.push(0x02); // clean session
        body.extend_from_slice(&60u16.to_be_bytes()); // keep alive, s
        put_str(&mut body, client_id.as_bytes());
        c.push(0x10);
        put_len(&mut c, body.len());
        c.extend_from_slice(&body);
        w.write_all(&c).await?;
        let mut r = BufReader::with_capacity(16 << 10, r);
        let mut ack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut ack))
            .await
            .context("no CONNACK from the broker within 10 s")??;
        if ack[0] != 0x20 || ack[1] != 2 {
            bail!("the broker answered CONNECT with {ack:02x?}, not a CONNACK");
        }
        if ack[3] != 0 {
            bail!(
                "the broker refused the connection (CONNACK return code {})",
                ack[3]
            );
        }
        let window = Arc::new(Semaphore::new(inflight.max(1)));
        let acked = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(read_acks(r, window.clone(), acked.clone()));
        Ok(Self {
            w,
            buf: Vec::with_capacity(FLUSH_BYTES + 4096),
            next_id: 0,
            sent: 0,
            window,
            acked,
            reader,
        })
    }

    /// Queue one QoS 1 message; sends the buffer when it is full or when the
    /// window of unacknowledged messages is used up (then waits for acks).
    pub async fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<()> {
        let window = self.window.clone();
        match window.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => {
                self.flush().await?;
                window.acquire().await.map_err(|_| self.lost())?.forget();
            }
        }
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        encode_publish(&mut self.buf, self.next_id, topic, payload);
        self.sent += 1;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send what is buffered.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.w
                .write_all(&self.buf)
                .await
                .context("sending to the broker")?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Messages the broker has acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    fn lost(&self) -> anyhow::Error {
        anyhow::anyhow!("the broker closed the connection")
    }

    /// Flush, wait until every message is acknowledged (at most `wait`),
    /// then DISCONNECT.
    pub async fn close(mut self, wait: Duration) -> Result<()> {
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + wait;
        while self.acked() < self.sent
            && tokio::time::Instant::now() < deadline
            && !self.reader.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = self.w.write_all(&[0xe0, 0]).await;
        let _ = self.w.shutdown().await;
        self.reader.abort();
        Ok(())
    }
}

/// Read the broker's packets: every PUBACK reopens the window by one.
async fn read_acks(
    mut r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    window: Arc<Semaphore>,
    acked: Arc<AtomicU64>,
) -> Result<()> {
    let mut body = Vec::new();
    let out = async {
        loop {
            let kind = match r.read_u8().await {
                Ok(b) => b >> 4,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let b = r.read_u8().await?;
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
                if shift > 21 {
                    bail!("malformed remaining length from the broker");
                }
            }
            body.resize(len, 0);
            r.read_exact(&mut body).await?;
            if kind == 4 {
                acked.fetch_add(1, Ordering::Relaxed);
                window.add_permits(1);
            }
        }
    }
    .await;
    // Whoever waits for the window learns the connection is gone.
    window.close();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::mqtt::EmbeddedBrokerConfig;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    #[test]
    fn remaining_length_is_mqtt_varint() {
        for (n, want) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
        ] {
            let mut b = Vec::new();
            put_len(&mut b, n);
            assert_eq!(b, want, "{n}");
        }
    }

    /// Every message reaches a subscriber of a real broker whole and in
    /// order, and the broker acknowledges every one, through more than one
    /// window of unacknowledged messages and more than one write buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_broker_routes_and_acknowledges_every_message() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        crate::connectors::mqtt::start_embedded_broker(
            &EmbeddedBrokerConfig {
                enabled: true,
                listen,
                max_payload: 1 << 20,
                memory_mib: 64,
            },
            1,
        )
        .unwrap();
        // The subscriber first, so that nothing is published before it.
        let mut o = MqttOptions::new("load-test-sub", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (sub, mut el) = AsyncClient::new(o, 100);
        let mut connected = false;
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_secs(1), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    break;
                }
                Ok(Ok(_)) => {}
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(connected, "the subscriber connects to the embedded broker");
        sub.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
                break;
            }
        }
        let n = 3_000u64;
        let publish = async {
            let mut p = LoadPublisher::connect("127.0.0.1", port, "load-test-pub", 50)
                .await
                .unwrap();
            for k in 0..n {
                let topic = format!("load/m{}", k % 7);
                let payload = format!(
                    "{{\"k\":{k},\"pad\":\"{}\"}}",
                    "x".repeat((k % 300) as usize)
                );
                p.publish(topic.as_bytes(), payload.as_bytes())
                    .await
                    .unwrap();
            }
            p.flush().await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while p.acked() < n && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let acked = p.acked();
            p.close(Duration::from_secs(1)).await.unwrap();
            acked
        };
        let receive = async {
            let mut got = Vec::new();
            while (got.len() as u64) < n {
                match tokio::time::timeout(Duration::from_secs(20), el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got.push(p),
                    Ok(Ok(_)) => {}
                    other => panic!("subscriber stopped after {} messages: {other:?}", got.len()),
                }
            }
            got
        };
        let (acked, got) = tokio::join!(publish, receive);
        assert_eq!(acked, n, "the broker acknowledged every message");
        for (k, p) in got.iter().enumerate() {
            assert_eq!(p.topic, format!("load/m{}", k % 7));
            let want = format!("{{\"k\":{k},\"pad\":\"{}\"}}", "x".repeat(k % 300));
            assert_eq!(&p.payload[..], want.as_bytes(), "message {k}");
        }
    }
}
