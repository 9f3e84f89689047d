//! `GET /metrics`: Prometheus text exposition of the platform's counters.
//!
//! Counters that live in the ingest stage and the writers' histograms are
//! registered once; figures held elsewhere (writer counters, connector
//! states, twin mailboxes, the query pool) are read at scrape time.

use actix_web::HttpResponse;

use super::State;
use crate::metrics::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    let _ = r.register(Box::new(g.clone()));
    g
}

pub(super) async fn metrics(s: State) -> HttpResponse {
    let now = Registry::new();
    let rows = gauge(
        &now,
        "ironlake_table_rows_committed_total",
        "Rows committed per table",
        &["table"],
    );
    let commits = gauge(
        &now,
        "ironlake_table_commits_total",
        "Delta commits per table",
        &["table"],
    );
    let failed = gauge(
        &now,
        "ironlake_table_failed_commits_total",
        "Failed Delta commits per table (retried)",
        &["table"],
    );
    let pending = gauge(
        &now,
        "ironlake_table_pending_rows",
        "Rows buffered for the next commit per table",
        &["table"],
    );
    let version = gauge(
        &now,
        "ironlake_table_version",
        "Delta version per table",
        &["table"],
    );
    let lost = gauge(
        &now,
        "ironlake_table_rows_lost_total",
        "Rows given up that no journal holds (must stay 0)",
        &["table"],
    );
    for w in &s.writers {
        let st = w.stats();
        let t = [w.table().name()];
        use std::sync::atomic::Ordering::Relaxed;
        rows.with_label_values(&t)
            .set(st.rows_committed.load(Relaxed) as i64);
        commits
            .with_label_values(&t)
            .set(st.commits.load(Relaxed) as i64);
        failed
            .with_label_values(&t)
            .set(st.failed_commits.load(Relaxed) as i64);
        pending
            .with_label_values(&t)
            .set(st.pending_rows.load(Relaxed) as i64);
        version.with_label_values(&t).set(st.version.load(Relaxed));
        lost.with_label_values(&t)
            .set(st.rows_lost.load(Relaxed) as i64);
    }
    let sources = gauge(
        &now,
        "ironlake_sources",
        "Machines by protocol and connection state",
        &["protocol", "connected"],
    );
    for a in &s.model.assets {
        let c = s.health.is_connected(a.idx);
        sources
            .with_label_values(&[a.source.protocol.as_str(), if c { "true" } else { "false" }])
            .inc();
    }
    let reconnects = gauge(
        &now,
        "ironlake_connector_reconnects_total",
        "Connections lost and retried, by protocol",
        &["protocol"],
    );
    for (p, n) in s.health.reconnects() {
        reconnects.with_label_values(&[&p]).set(n as i64);
    }
    let mailbox = gauge(
        &now,
        "ironlake_twin_mailbox_depth",
        "Reading batches waiting in twin mailboxes (max over twins, total)",
        &["stat"],
    );
    let (max, total) = s.twins.mailbox_depth();
    mailbox.with_label_values(&["max"]).set(max as i64);
    mailbox.with_label_values(&["total"]).set(total as i64);
    let sql = gauge(
        &now,
        "ironlake_sql_running",
        "Queries running in the SQL pool",
        &[],
    );
    sql.with_label_values::<&str>(&[])
        .set(s.pool.running() as i64);
    let live = gauge(
        &now,
        "ironlake_live",
        "Live feed (GET /api/stream): open streams, events published since start",
        &["stat"],
    );
    live.with_label_values(&["streams"])
        .set(s.twins.live.subscribers() as i64);
    live.with_label_values(&["events_published"])
        .set(s.twins.live.published() as i64);
    let mut families = s.registry.gather();
    families.extend(now.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    if let Err(e) = enc.encode(&families, &mut buf) {
        return actix_web::ResponseError::error_response(&super::ApiError::Internal(e.to_string()));
    }
    HttpResponse::Ok().content_type(enc.format_type()).body(buf)
}
