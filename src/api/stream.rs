//! `GET /api/stream`: the live feed as Server-Sent Events.
//!
//! Scope: `plant=`, `line=` and `assets=a,b,c` (each optional; none means
//! every machine). The stream carries, for the machines in scope:
//! - `event: asset`: state, active alarms (with acknowledgements) and part
//!   counters, whenever one of them changes;
//! - `event: values`: every signal's value, quality and window statistics,
//!   at most twice a second, only for the machines listed in `assets=`
//!   (at most [`MAX_VALUE_ASSETS`]);
//! - `event: resync`: the subscriber fell behind and events were lost:
//!   reload from the REST API;
//! - `event: hello` first, and a comment line every 15 s to keep proxies
//!   and dead-client detection honest.
//!
//! Events already serialised by the twins are copied into the response,
//! several per write when they come in bursts.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{ApiError, Result, State};
use crate::time::now_ms;
use crate::twins::live::{LiveKind, Subscription};

/// Most machines one stream can ask values of.
pub const MAX_VALUE_ASSETS: usize = 100;
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events put into one write at most.
const BURST: usize = 512;

#[derive(Deserialize)]
pub(super) struct StreamParams {
    plant: Option<String>,
    line: Option<String>,
    assets: Option<String>,
}

struct Feed {
    sub: Subscription,
    scope: Vec<bool>,
    values: Vec<bool>,
    hello: Option<Bytes>,
}

fn frame(buf: &mut BytesMut, event: &str, data: &[u8]) {
    buf.put_slice(b"event: ");
    buf.put_slice(event.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(data);
    buf.put_slice(b"\n\n");
}

impl Feed {
    /// Append `ev` if it is in scope.
    fn take(&self, buf: &mut BytesMut, ev: &crate::twins::live::LiveEvent) {
        let i = ev.asset as usize;
        let wanted = match ev.kind {
            LiveKind::Asset => self.scope.get(i).copied().unwrap_or(false),
            LiveKind::Values => self.values.get(i).copied().unwrap_or(false),
        };
        if wanted {
            frame(buf, ev.kind.as_str(), &ev.json);
        }
    }

    /// The next chunk of the response (None: the hub is gone).
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(h) = self.hello.take() {
            return Some(h);
        }
        let mut buf = BytesMut::new();
        loop {
            let hub = self.sub.hub.clone();
            let first = tokio::select! {
                _ = hub.closed() => return None,
                r = tokio::time::timeout(HEARTBEAT, self.sub.rx.recv()) => r,
            };
            match first {
                Err(_) => return Some(Bytes::from_static(b": ping\n\n")),
                Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(n))) => {
                    frame(&mut buf, "resync", format!("{{\"missed\":{n}}}").as_bytes());
                }
                Ok(Ok(ev)) => self.take(&mut buf, &ev),
            }
            for _ in 0..BURST {
                match self.sub.rx.try_recv() {
                    Ok(ev) => self.take(&mut buf, &ev),
                    Err(TryRecvError::Lagged(n)) => {
                        frame(&mut buf, "resync", format!("{{\"missed\":{n}}}").as_bytes())
                    }
                    Err(_) => break,
                }
            }
            if !buf.is_empty() {
                return Some(buf.freeze());
            }
        }
    }
}

pub(super) async fn stream(s: State, q: web::Query<StreamParams>) -> Result<HttpResponse> {
    let hub = s.twins.live.clone();
    if hub.subscribers() >= s.max_streams {
        return Err(ApiError::Busy(format!(
            "{} live streams are open (http.max_streams)",
            s.max_streams
        )));
    }
    let n = s.model.assets.len();
    let mut scope = vec![false; n];
    let mut values = vec![false; n];
    let mut values_of = Vec::new();
    if let Some(p) = q.plant.as_deref().filter(|p| !p.is_empty()) {
        s.model
            .plant(p)
            .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{p}`")))?;
        for a in s.model.assets.iter().filter(|a| a.plant.as_str() == p) {
            scope[a.idx as usize] = true;
        }
    }
    if let Some(l) = q.line.as_deref().filter(|l| !l.is_empty()) {
        let line = s
            .model
            .line(l)
            .ok_or_else(|| ApiError::NotFound(format!("unknown line `{l}`")))?;
        for &i in &line.assets {
            scope[i as usize] = true;
        }
    }
    if let Some(list) = q.assets.as_deref().filter(|l| !l.is_empty()) {
        for id in list.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let a = s
                .model
                .asset(id)
                .ok_or_else(|| ApiError::NotFound(format!("unknown asset `{id}`")))?;
            if !values[a.idx as usize] {
                values[a.idx as usize] = true;
                scope[a.idx as usize] = true;
                values_of.push(a.idx);
            }
        }
        if values_of.len() > MAX_VALUE_ASSETS {
            return Err(ApiError::BadRequest(format!(
                "a stream takes the values of at most {MAX_VALUE_ASSETS} assets, got {}",
                values_of.len()
            )));
        }
    }
    if q.plant.is_none() && q.line.is_none() && values_of.is_empty() {
        scope.iter_mut().for_each(|x| *x = true);
    }
    let hello = format!(
        "retry: 2000\nevent: hello\ndata: {{\"ts\":{},\"assets\":{}}}\n\n",
        now_ms(),
        scope.iter().filter(|x| **x).count()
    );
    let feed = Feed {
        sub: hub.subscribe(values_of),
        scope,
        values,
        hello: Some(Bytes::from(hello)),
    };
    let body = futures::stream::unfold(feed, |mut f| async move {
        f.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), f))
    });
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}
