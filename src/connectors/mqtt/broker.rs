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

/// Start the embedded MQTT broker (rumqttd) on its own threads. It runs until
/// the process exits.
pub fn start_embedded_broker(cfg: &EmbeddedBrokerConfig) -> std::io::Result<SocketAddr> {
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
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 4,
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
