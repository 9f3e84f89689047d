//! MQTT: rumqttc clients in persistent sessions subscribed with QoS 1;
//! each JSON message is mapped to its machine by topic and to signals by
//! field path.
//!
//! **Nothing acknowledged is lost.** The session is persistent
//! (`clean_session = false`, the stable `mqtt.client_id`) and
//! acknowledgements are manual: a message is acknowledged only after the
//! ingest stage has written it to its journal (fsync), in the order the
//! messages arrived. A crash before that leaves the message unacknowledged,
//! and the broker delivers it again to the same session after the restart.
//! While the ingest queues are full, no message is taken and none is
//! acknowledged, so the broker holds them (back-pressure).
//!
//! The filters are shared by `mqtt.connections` sessions (client ids
//! `client_id`, `client_id-1`, ...; see [`plan`]): a broker lets only a
//! few unacknowledged messages be in flight per connection, so one
//! connection that acknowledges after an fsync carries a fraction of what a
//! plant sends. When the count changes, a session id no longer used is
//! drained and ended, and a kept session drops the filters that moved away.
//!
//! Subscriptions are sent in packets of [`FILTERS_PER_SUBSCRIBE`] filters and
//! checked against the broker's SUBACK: a machine shows as connected once a
//! granted filter covers its topic; a refused filter is an error on the
//! machines it covers. The client reconnects with back-off and re-subscribes
//! after every reconnect.

pub mod binding;
pub mod broker;
pub mod config;
pub mod plan;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use crate::connectors::json::decode_json;
pub use binding::{filter_matches, Mqtt, MqttConnector, TopicBinding};
pub use broker::start_embedded_broker;
pub use config::{EmbeddedBrokerConfig, MqttConfig, TsUnit};

use super::{kept_payload, Ack, Backoff, DecodeLimits, Decoded, Envelope, Source, SourceContext};
use crate::assets::AssetIdx;
use crate::time::now_ms;

/// Topic filters per SUBSCRIBE packet.
pub const FILTERS_PER_SUBSCRIBE: usize = 100;
/// Largest MQTT packet accepted from the broker. Larger payloads than the
/// ingest limit are still read, then quarantined as `payload_too_large`
/// (refusing them would break the connection and the broker would deliver
/// the same message again, forever).
const MAX_INCOMING_PACKET: usize = 256 << 20;
/// How long a stopping connector waits for the ingest stage to acknowledge
/// what it already handed over.
const DRAIN_ACKS: Duration = Duration::from_secs(5);

/// The MQTT connections of one platform share this: which of them have
/// had their subscriptions answered since the platform started. A session
/// gives up a filter (or ends) only once every connection's subscriptions
/// stand, so no message published meanwhile goes to no session.
pub struct Team {
    subscribed: Vec<AtomicBool>,
}

impl Team {
    fn new(size: usize) -> Team {
        Team {
            subscribed: (0..size).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn mark_subscribed(&self, k: usize) {
        if let Some(b) = self.subscribed.get(k) {
            b.store(true, Ordering::Release);
        }
    }

    fn all_subscribed(&self) -> bool {
        self.subscribed.iter().all(|b| b.load(Ordering::Acquire))
    }
}

/// What a connection does.
#[derive(Clone)]
enum Role {
    /// Connection `k` of the team: subscribes to `filters`; if the broker
    /// kept its session with subscriptions that now belong to other
    /// connections (`foreign`, after `mqtt.connections` changed), it
    /// unsubscribes them once the team stands.
    Active {
        k: usize,
        filters: Vec<String>,
        foreign: Vec<String>,
    },
    /// A session id no longer in use: if the broker still holds a session
    /// under it, take every message it delivers (journaled and
    /// acknowledged like any other), then end the session.
    Retire,
}

/// One MQTT connection (persistent session) of ironlake to the broker.
#[derive(Clone)]
pub struct MqttSubscriber {
    cfg: MqttConfig,
    topics: Arc<HashMap<String, Arc<TopicBinding>>>,
    client_id: String,
    role: Role,
    /// Machines whose topic this connection's filters cover.
    assets: Vec<AssetIdx>,
    team: Arc<Team>,
}

impl MqttSubscriber {
    /// The connections for the bound topics: `mqtt.connections` sessions
    /// sharing the filters (those left without a filter are not opened),
    /// and a retiring one for every other session id up to
    /// [`plan::MAX_CONNECTIONS`].
    pub fn sessions(
        cfg: MqttConfig,
        topics: Arc<HashMap<String, Arc<TopicBinding>>>,
    ) -> Vec<MqttSubscriber> {
        let filters = if cfg.subscribe.is_empty() {
            topics.keys().cloned().collect()
        } else {
            cfg.subscribe.clone()
        };
        let parts = plan::partition(&filters, cfg.connections);
        let active: Vec<usize> = (0..parts.len()).filter(|&k| !parts[k].is_empty()).collect();
        let team = Arc::new(Team::new(active.len()));
        // The embedded broker starts empty with the process: no session of
        // an earlier connection count can be waiting there.
        let fresh_broker = cfg
            .embedded
            .as_ref()
            .is_some_and(|b| b.enabled && b.listen.port() == cfg.port);
        let mut out = Vec::new();
        for id in 0..plan::MAX_CONNECTIONS {
            let client_id = plan::client_id(&cfg.client_id, id);
            let k = active.iter().position(|&k| k == id);
            if k.is_none() && fresh_broker {
                continue;
            }
            let (role, assets) = match k {
                Some(k) => {
                    let own = &parts[id];
                    let mut assets: Vec<AssetIdx> = topics
                        .iter()
                        .filter(|(t, _)| own.iter().any(|f| filter_matches(f, t)))
                        .map(|(_, b)| b.asset)
                        .collect();
                    assets.sort_unstable();
                    let foreign = parts
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != id)
                        .flat_map(|(_, p)| p.iter().cloned())
                        .collect();
                    let role = Role::Active {
                        k,
                        filters: own.clone(),
                        foreign,
                    };
                    (role, assets)
                }
                None => (Role::Retire, Vec::new()),
            };
            out.push(MqttSubscriber {
                cfg: cfg.clone(),
                topics: topics.clone(),
                client_id,
                role,
                assets,
                team: team.clone(),
            });
        }
        out
    }

    /// The filters this connection subscribes to.
    pub fn filters(&self) -> &[String] {
        match &self.role {
            Role::Active { filters, .. } => filters,
            Role::Retire => &[],
        }
    }

    fn envelope(
        &self,
        topic: &str,
        payload: &[u8],
        limits: &DecodeLimits,
        ack: Option<Ack>,
    ) -> Envelope {
        let received = now_ms();
        let (source, asset, decoded) = match self.topics.get(topic) {
            None => (
                Arc::from(format!("mqtt:{topic}")),
                None,
                Decoded::Error {
                    code: "unknown_asset",
                    reason: format!("no machine is bound to topic `{topic}`"),
                },
            ),
            Some(b) => (
                b.source.clone(),
                Some(b.asset),
                decode_json(payload, b, received, limits),
            ),
        };
        let payload = if payload.len() > limits.max_payload {
            kept_payload(payload)
        } else {
            String::from_utf8_lossy(payload).into_owned()
        };
        Envelope {
            received_ms: received,
            source,
            asset,
            payload,
            decoded,
            ack,
        }
    }

    fn name(&self) -> String {
        format!(
            "mqtt://{}:{} ({})",
            self.cfg.host, self.cfg.port, self.client_id
        )
    }

    fn options(&self, clean: bool) -> MqttOptions {
        let mut opts = MqttOptions::new(&self.client_id, &self.cfg.host, self.cfg.port);
        opts.set_keep_alive(Duration::from_secs(self.cfg.keep_alive_s.max(5)));
        opts.set_clean_session(clean);
        opts.set_manual_acks(true);
        opts.set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
        if let (Some(u), Some(p)) = (&self.cfg.username, &self.cfg.password) {
            opts.set_credentials(u, p);
        }
        opts
    }

    /// End this id's session at the broker: connect with a clean session
    /// (which discards the stored one) and leave.
    async fn end_session(&self) {
        let (client, mut eventloop) = AsyncClient::new(self.options(true), 8);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let _ = client.try_disconnect();
                }
                Event::Outgoing(Outgoing::Disconnect) => break,
                _ => {}
            }
        }
    }
}

/// State of one connection: the order acknowledgements must follow, and
/// the subscriptions awaiting their SUBACK.
struct Connection {
    ack_tx: mpsc::UnboundedSender<u64>,
    ack_rx: mpsc::UnboundedReceiver<u64>,
    next_seq: u64,
    /// Messages not yet acknowledged, in arrival order: (seq, pkid, qos).
    unacked: VecDeque<(u64, u16, QoS)>,
    /// Sequence numbers the ingest stage has made durable.
    durable: BTreeSet<u64>,
    /// Filter packets sent, waiting for their packet id.
    subscribing: VecDeque<Vec<String>>,
    /// Packet id -> filters, waiting for their SUBACK.
    suback_wait: HashMap<u16, Vec<String>>,
    granted: Vec<String>,
    refused: Vec<String>,
    /// Filter packets not yet handed to the client (its queue was full).
    to_send: VecDeque<Vec<String>>,
    /// Filters of other connections still in this session, to unsubscribe
    /// once the team stands.
    to_unsubscribe: VecDeque<String>,
    /// When the last message arrived.
    last_message: tokio::time::Instant,
}

impl Connection {
    fn new(filters: &[String]) -> Connection {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        Connection {
            ack_tx,
            ack_rx,
            next_seq: 0,
            unacked: VecDeque::new(),
            durable: BTreeSet::new(),
            subscribing: VecDeque::new(),
            suback_wait: HashMap::new(),
            granted: Vec::new(),
            refused: Vec::new(),
            to_send: filters
                .chunks(FILTERS_PER_SUBSCRIBE)
                .map(|c| c.to_vec())
                .collect(),
            to_unsubscribe: VecDeque::new(),
            last_message: tokio::time::Instant::now(),
        }
    }

    /// Hand pending unsubscriptions to the client, as far as its queue takes them.
    fn unsubscribe(&mut self, client: &AsyncClient) {
        while let Some(f) = self.to_unsubscribe.front() {
            if client.try_unsubscribe(f.clone()).is_err() {
                break;
            }
            self.to_unsubscribe.pop_front();
        }
    }

    /// Hand pending subscriptions to the client, as far as its queue takes them.
    fn subscribe(&mut self, client: &AsyncClient) {
        while let Some(chunk) = self.to_send.front() {
            let filters = chunk
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
            match client.try_subscribe_many(filters) {
                Ok(()) => {
                    let c = self.to_send.pop_front().unwrap_or_default();
                    self.subscribing.push_back(c);
                }
                Err(_) => break,
            }
        }
    }

    fn all_answered(&self) -> bool {
        self.to_send.is_empty() && self.subscribing.is_empty() && self.suback_wait.is_empty()
    }

    /// An acknowledgement token for a received message.
    fn track(&mut self, p: &Publish) -> Option<Ack> {
        if p.qos == QoS::AtMostOnce {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back((seq, p.pkid, p.qos));
        Some(Ack::new(seq, self.ack_tx.clone()))
    }

    /// The ingest stage made `seq` durable: acknowledge, in arrival order,
    /// every message up to the first one still waiting.
    fn durable(&mut self, seq: u64, client: &AsyncClient) {
        self.durable.insert(seq);
        self.flush_acks(client);
    }

    fn flush_acks(&mut self, client: &AsyncClient) {
        while let Some(&(seq, pkid, qos)) = self.unacked.front() {
            if !self.durable.contains(&seq) {
                break;
            }
            let mut p = Publish::new("", qos, Vec::<u8>::new());
            p.pkid = pkid;
            if client.try_ack(&p).is_err() {
                // The client's queue is full: retried on the next event.
                break;
            }
            self.durable.remove(&seq);
            self.unacked.pop_front();
        }
    }
}

async fn recv_ack(c: &mut Option<Connection>) -> Option<u64> {
    match c {
        Some(c) => c.ack_rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Source for MqttSubscriber {
    fn name(&self) -> String {
        MqttSubscriber::name(self)
    }

    fn respawn(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(self.clone()))
    }

    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let SourceContext {
                sink,
                health,
                shutdown,
                limits,
                state_dir,
            } = cx;
            let remembered = RememberedFilters::new(
                &state_dir,
                &format!("{}:{}/{}", self.cfg.host, self.cfg.port, self.client_id),
            );
            let retiring = matches!(self.role, Role::Retire);
            let filters = self.filters().to_vec();
            // Room for every subscription packet and the acknowledgements of
            // a full inflight window.
            let cap = filters.len() / FILTERS_PER_SUBSCRIBE + 4096;
            let (client, mut eventloop) = AsyncClient::new(self.options(false), cap);
            let mut backoff = Backoff::default();
            let set =
                |assets: &mut dyn Iterator<Item = AssetIdx>, up: bool, err: Option<String>| {
                    for a in assets {
                        health.set_connected(a, up, err.clone());
                    }
                };
            let mut conn: Option<Connection> = None;
            let mut retry = tokio::time::interval(Duration::from_millis(50));
            // A retiring session is ended once it has been quiet this long.
            let quiet = Duration::from_secs(2);
            let mut retired = false;
            'outer: loop {
                // Never drop an unfinished poll (it may hold a request taken
                // from the client's queue); acknowledgements are handled
                // while it waits.
                let ev = {
                    let poll = eventloop.poll();
                    tokio::pin!(poll);
                    loop {
                        tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => break 'outer,
                            ev = &mut poll => break ev,
                            Some(seq) = recv_ack(&mut conn) => {
                                if let Some(c) = conn.as_mut() { c.durable(seq, &client) }
                            }
                            _ = retry.tick() => {
                                let Some(c) = conn.as_mut() else { continue };
                                c.flush_acks(&client);
                                c.subscribe(&client);
                                if c.all_answered() && self.team.all_subscribed() {
                                    c.unsubscribe(&client);
                                    if retiring
                                        && c.unacked.is_empty()
                                        && c.last_message.elapsed() >= quiet
                                    {
                                        retired = true;
                                        break 'outer;
                                    }
                                }
                            }
                        }
                    }
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        if retiring && !ack.session_present {
                            // The broker holds nothing under this id (the
                            // connect made an empty session: end it too).
                            retired = true;
                            break;
                        }
                        let mut c = Connection::new(&filters);
                        match &self.role {
                            Role::Active { foreign, .. } if ack.session_present => {
                                // The session keeps what it subscribed in an
                                // earlier run: the filters now on another
                                // connection, and those no longer configured.
                                let own: BTreeSet<&String> = filters.iter().collect();
                                let stale: BTreeSet<String> = foreign
                                    .iter()
                                    .cloned()
                                    .chain(remembered.load())
                                    .filter(|f| !own.contains(f))
                                    .collect();
                                c.to_unsubscribe = stale.into_iter().collect();
                            }
                            Role::Active { .. } => {}
                            Role::Retire => info!(
                                client_id = %self.client_id,
                                "mqtt: a session no longer in use (mqtt.connections changed); taking its messages, then ending it"
                            ),
                        }
                        if !retiring {
                            info!(broker = %self.name(), filters = filters.len(), session_present = ack.session_present, "mqtt connected; subscribing");
                        }
                        c.subscribe(&client);
                        conn = Some(c);
                    }
                    Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                        if let Some(c) = conn.as_mut() {
                            if let Some(chunk) = c.subscribing.pop_front() {
                                c.suback_wait.insert(pkid, chunk);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(s))) => {
                        let Some(c) = conn.as_mut() else { continue };
                        let Some(chunk) = c.suback_wait.remove(&s.pkid) else {
                            continue;
                        };
                        for (i, f) in chunk.into_iter().enumerate() {
                            match s.return_codes.get(i) {
                                Some(SubscribeReasonCode::Success(_)) => c.granted.push(f),
                                _ => c.refused.push(f),
                            }
                        }
                        if c.all_answered() {
                            self.answered(c, &set);
                            remembered.save(&c.granted);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let ack = conn.as_mut().and_then(|c| {
                            c.last_message = tokio::time::Instant::now();
                            c.track(&p)
                        });
                        let env = self.envelope(&p.topic, &p.payload, &limits, ack);
                        if let Some(a) = env.asset {
                            health.touch(a, env.received_ms);
                        }
                        // Wait for room in the ingest queue, acknowledging
                        // what becomes durable meanwhile.
                        let send = sink.send(env);
                        tokio::pin!(send);
                        loop {
                            tokio::select! {
                                ok = &mut send => {
                                    if !ok { break 'outer; }
                                    break;
                                }
                                Some(seq) = recv_ack(&mut conn) => {
                                    if let Some(c) = conn.as_mut() { c.durable(seq, &client) }
                                }
                                _ = shutdown.cancelled() => break 'outer,
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let refused = matches!(e, rumqttc::ConnectionError::ConnectionRefused(_));
                        if retiring && refused {
                            // This id may not connect (broker ACL): it holds no session of ours.
                            retired = true;
                            break;
                        }
                        let msg = format!("broker {}: {e}", self.name());
                        warn!(error = %msg, "mqtt connection lost; reconnecting");
                        set(&mut self.assets.iter().copied(), false, Some(msg));
                        health.count_reconnect("mqtt");
                        // Acknowledgements of this connection are void: the
                        // broker delivers unacknowledged messages again.
                        conn = None;
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
            // Stopping: acknowledge what the ingest stage makes durable of
            // what it was handed (bounded), then leave the session.
            if let Some(mut c) = conn {
                let deadline = tokio::time::Instant::now() + DRAIN_ACKS;
                while !c.unacked.is_empty() && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        Some(seq) = c.ack_rx.recv() => c.durable(seq, &client),
                        _ = eventloop.poll() => {}
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                c.flush_acks(&client);
            }
            let _ = client.try_disconnect();
            let flush = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(Ok(ev)) = tokio::time::timeout_at(flush, eventloop.poll()).await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
            if retired {
                self.end_session().await;
                remembered.forget();
                // Done for good: idle until the platform stops (a source
                // that returns is restarted).
                shutdown.cancelled().await;
                return;
            }
            set(
                &mut self.assets.iter().copied(),
                false,
                Some("connector stopped".into()),
            );
        })
    }
}

/// The filters a session was last granted, kept in the platform's
/// connector state directory: MQTT cannot list a session's subscriptions,
/// and a filter removed from the config would otherwise stay subscribed
/// in the broker's session for good.
struct RememberedFilters {
    path: std::path::PathBuf,
}

impl RememberedFilters {
    /// `session`: broker address and client id.
    fn new(dir: &std::path::Path, session: &str) -> Self {
        let name = format!("mqtt-{:016x}.json", super::stable_hash(session));
        RememberedFilters {
            path: dir.join(name),
        }
    }

    /// The filters saved by an earlier run (none when unreadable).
    fn load(&self) -> Vec<String> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v["filters"].clone()).ok())
            .unwrap_or_default()
    }

    /// Save the granted filters (write and rename: never half a file).
    fn save(&self, filters: &[String]) {
        let body = serde_json::json!({ "filters": filters });
        let tmp = self.path.with_extension("json.tmp");
        let r =
            std::fs::write(&tmp, body.to_string()).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = r {
            warn!(path = %self.path.display(), error = %e, "cannot remember the MQTT subscriptions; a filter removed later would stay subscribed at the broker");
        }
    }

    /// The session is gone: nothing to remember.
    fn forget(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Marks machines connected or not, with the reason.
type SetHealth<'a> = dyn Fn(&mut dyn Iterator<Item = AssetIdx>, bool, Option<String>) + 'a;

impl MqttSubscriber {
    /// Every subscription of a connection was answered: machines covered
    /// by a granted filter are connected, the others carry the refusal.
    fn answered(&self, c: &Connection, set: &SetHealth<'_>) {
        if let Role::Active { k, .. } = self.role {
            self.team.mark_subscribed(k);
        }
        for f in &c.refused {
            warn!(filter = %f, "the broker refused the subscription");
        }
        let topics_of: HashMap<AssetIdx, &str> = self
            .topics
            .iter()
            .map(|(t, b)| (b.asset, t.as_str()))
            .collect();
        let covered = |a: &AssetIdx| {
            topics_of
                .get(a)
                .is_some_and(|t| c.granted.iter().any(|f| filter_matches(f, t)))
        };
        let (up, down): (Vec<AssetIdx>, Vec<AssetIdx>) =
            self.assets.iter().partition(|a| covered(a));
        set(&mut up.into_iter(), true, None);
        let err = format!(
            "the broker refused the subscription {}",
            c.refused.join(", ")
        );
        set(&mut down.into_iter(), false, Some(err));
        info!(
            client_id = %self.client_id,
            granted = c.granted.len(),
            refused = c.refused.len(),
            "mqtt subscriptions answered"
        );
    }
}
