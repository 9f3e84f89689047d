//! The embedded MQTT broker (rumqttd) that `ironlake demo` and a plant
//! without a broker of its own run inside ironlake.
//!
//! What it guarantees: it keeps messages in memory only. A QoS 1 publish is
//! acknowledged to the publisher when rumqttd has it in memory; ironlake's
//! own subscription is a persistent session (`clean_session = false`), so a
//! message is redelivered to ironlake until ironlake acknowledges it, which
//! it does only after its journal holds it. As long as the process runs,
//! nothing acknowledged is lost; but the broker dies with the process, so
//! messages it had acknowledged to publishers and not yet handed to ironlake
//! are lost on `kill -9`. A production plant runs a broker with persistence
//! (Mosquitto with `persistence true`) and points `[mqtt]` at it.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::config::EmbeddedBrokerConfig;

/// Segments rumqttd keeps per subscription filter (the one being filled
/// included); the oldest is dropped when a new one starts.
const SEGMENTS: usize = 3;

/// Bytes of one segment when `memory_mib` is shared among `filters`
/// filters. rumqttd keeps every routed message in its filter's log until the
/// log's segments are full, so this is what bounds its memory.
pub fn segment_bytes(memory_mib: u64, filters: usize) -> usize {
    let total = (memory_mib as usize).saturating_mul(1 << 20);
    (total / filters.max(1) / SEGMENTS).max(16 << 10)
}

/// Start the embedded MQTT broker (rumqttd) on its own threads. It runs until
/// the process exits. `filters` is the number of subscription filters
/// ironlake plans: the memory budget is shared among them.
pub fn start_embedded_broker(
    cfg: &EmbeddedBrokerConfig,
    filters: usize,
) -> std::io::Result<SocketAddr> {
    // Fail early and clearly if the port is taken (rumqttd would only log it).
    drop(std::net::TcpListener::bind(cfg.listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("embedded MQTT broker cannot listen on {}: {e}", cfg.listen),
        )
    })?);
    let mut v4 = HashMap::new();
    v4.insert(
        "v4".to_string(),
        rumqttd::ServerSettings {
            name: "ironlake-v4".into(),
            listen: cfg.listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: cfg.max_payload,
                max_inflight_count: 1000,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: segment_bytes(cfg.memory_mib, filters),
            max_segment_count: SEGMENTS,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    Ok(cfg.listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_is_shared_among_filters() {
        // One wildcard filter: the whole budget in three segments.
        assert_eq!(segment_bytes(256, 1), (256 << 20) / 3);
        // A thousand machine topics: each keeps a thousandth.
        let per = segment_bytes(256, 1000);
        assert!(per * 1000 * SEGMENTS <= 256 << 20);
        assert!(per * 1000 * SEGMENTS > 250 << 20);
        // Never below what holds a few messages (rumqttd refuses < 1 KiB).
        assert_eq!(segment_bytes(1, 1_000_000), 16 << 10);
        assert_eq!(segment_bytes(256, 0), segment_bytes(256, 1));
    }
}
