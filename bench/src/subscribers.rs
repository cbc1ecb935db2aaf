//! The subscribers of one process: graphql-transport-ws clients that subscribe, wait for
//! their acknowledgement and record when each report reached them. The fan-out scenarios
//! (`fanout.rs`) run them here and in worker processes (`remote.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// One subscriber to start.
pub struct Spec {
    pub url: String,
    pub token: String,
    pub query: String,
    pub variables: Value,
    pub group: usize,
}

struct Shared {
    connected: AtomicUsize,
    heard: AtomicUsize,
    connect_gate: Semaphore,
    /// Whether any `next` (a snapshot too) proves the subscription live, or only a report.
    ready_on_any_next: bool,
}

pub type Receipts = Vec<(String, Instant)>;

/// What one subscriber ended with, and its group.
pub type Outcome = (usize, std::result::Result<Receipts, String>);

async fn subscriber(
    spec: Spec,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<Receipts, String> {
    let permit = shared
        .connect_gate
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let mut request = spec.url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let init = json!({ "type": "connection_init", "payload": { "token": spec.token } });
    ws.send(Message::text(init.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("connection_ack") => break,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("no connection_ack: {other:?}")),
        }
    }
    let subscribe = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": spec.query, "variables": spec.variables } });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    drop(permit);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut receipts = Receipts::new();
    let mut heard = false;
    loop {
        tokio::select! {
            message = ws.next() => {
                let at = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let text = text.as_str();
                        if text.contains("\"ping\"") {
                            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                            continue;
                        }
                        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                        match value["type"].as_str() {
                            Some("next") => {
                                let update = value["payload"]["data"]
                                    .as_object()
                                    .and_then(|data| data.values().next());
                                let log = update.and_then(|u| u["healthLog"]["id"].as_str());
                                if !heard && (shared.ready_on_any_next || log.is_some()) {
                                    heard = true;
                                    shared.heard.fetch_add(1, Ordering::Relaxed);
                                }
                                if let Some(id) = log {
                                    receipts.push((id.to_owned(), at));
                                }
                            }
                            Some("error") | Some("complete") => return Err(format!("subscription ended: {text}")),
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(frame))) => return Err(format!("closed by server: {frame:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("connection ended".into()),
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    Ok(receipts)
}

/// Subscribers running in this process.
pub struct Local {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    handles: Vec<(usize, JoinHandle<std::result::Result<Receipts, String>>)>,
}

impl Local {
    /// Starts every subscriber, at most `parallelism` handshakes at once.
    pub fn spawn(specs: Vec<Spec>, parallelism: usize, ready_on_any_next: bool) -> Self {
        let shared = Arc::new(Shared {
            connected: AtomicUsize::new(0),
            heard: AtomicUsize::new(0),
            connect_gate: Semaphore::new(parallelism),
            ready_on_any_next,
        });
        let (stop, stop_rx) = watch::channel(false);
        let handles = specs
            .into_iter()
            .map(|spec| {
                (
                    spec.group,
                    tokio::spawn(subscriber(spec, shared.clone(), stop_rx.clone())),
                )
            })
            .collect();
        Self {
            shared,
            stop,
            handles,
        }
    }

    /// (subscribed, heard anything, gave up).
    pub fn status(&self) -> (usize, usize, usize) {
        (
            self.shared.connected.load(Ordering::Relaxed),
            self.shared.heard.load(Ordering::Relaxed),
            self.handles.iter().filter(|(_, h)| h.is_finished()).count(),
        )
    }

    pub async fn stop(self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        let mut outcomes = Vec::with_capacity(self.handles.len());
        for (group, handle) in self.handles {
            outcomes.push((group, handle.await.unwrap_or_else(|e| Err(e.to_string()))));
        }
        outcomes
    }
}
