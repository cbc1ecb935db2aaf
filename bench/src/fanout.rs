//! S1: many graphql-transport-ws subscribers to `runsUpdated`, spread over the companies,
//! while one reporter reports steps (rotating over one running run per company). Measures
//! delivery latency, missed events, cross-tenant deliveries and server RSS per subscriber.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::load::{Row, histogram};
use crate::procstat::{self, Window};
use crate::seed::Company;
use crate::servers::{Result, Server, gql};

pub struct Config {
    pub subscribers: usize,
    pub events: usize,
    pub interval: Duration,
    pub connect_parallelism: usize,
}

/// A running run a reporter can report steps on.
#[derive(Debug, Clone)]
pub struct ReportTarget {
    pub company: usize,
    pub run_id: String,
    pub step_ids: Vec<String>,
}

const SUBSCRIPTION: &str =
    "subscription { runsUpdated { run { id stepsCompleted } healthLog { id } } }";

pub const REPORT_STEP: &str = "mutation($run: ID!, $step: ID!) { reportStep(runId: $run, stepId: $step, \
     outcome: { status: SUCCESS, pageUrl: \"https://app.example.com/bench\", executionTimeMs: 420 }) \
     { duplicate healthLog { id } run { id stepsCompleted } } }";

struct Shared {
    connected: AtomicUsize,
    heard: AtomicUsize,
    connect_gate: Semaphore,
}

type Receipts = Vec<(String, Instant)>;

async fn subscriber(
    url: String,
    token: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<Receipts, String> {
    let permit = shared
        .connect_gate
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let init = json!({ "type": "connection_init", "payload": { "token": token } });
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
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    drop(permit);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut receipts = Receipts::new();
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
                                if let Some(id) = value["payload"]["data"]["runsUpdated"]["healthLog"]["id"].as_str() {
                                    if receipts.is_empty() {
                                        shared.heard.fetch_add(1, Ordering::Relaxed);
                                    }
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

struct Sent {
    company: usize,
    sent: Instant,
    answered: Instant,
}

async fn report(
    client: &reqwest::Client,
    server: &Server,
    companies: &[Company],
    target: &ReportTarget,
    step: usize,
) -> Result<String> {
    let data = gql(
        client,
        &server.graphql_url(),
        Some(&companies[target.company].token),
        REPORT_STEP,
        json!({ "run": target.run_id, "step": target.step_ids[step % target.step_ids.len()] }),
    )
    .await?;
    data["reportStep"]["healthLog"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("reportStep answered no health log: {data}").into())
}

pub async fn run(
    server: &Server,
    companies: &[Company],
    targets: &[ReportTarget],
    config: &Config,
) -> Result<Row> {
    let client = reqwest::Client::new();
    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        heard: AtomicUsize::new(0),
        connect_gate: Semaphore::new(config.connect_parallelism),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_before = procstat::status_kib(server.pid, "VmRSS:").unwrap_or(0);
    let connect_started = Instant::now();
    let mut handles = Vec::with_capacity(config.subscribers);
    for i in 0..config.subscribers {
        let company = i % companies.len();
        handles.push((
            company,
            tokio::spawn(subscriber(
                server.ws_url(),
                companies[company].token.clone(),
                shared.clone(),
                stop_rx.clone(),
            )),
        ));
    }
    // Wait until every subscriber subscribed (or gave up).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        let finished = handles.iter().filter(|(_, h)| h.is_finished()).count();
        if connected + finished >= config.subscribers || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "  S1: {} of {} subscribed in {connect_seconds:.1} s",
        shared.connected.load(Ordering::Relaxed),
        config.subscribers
    );
    // Probe: one report per company, until every subscriber heard one. The server has no
    // "subscribed" acknowledgement, so this is the barrier before measuring.
    let mut probes = HashSet::new();
    let probe_deadline = Instant::now() + Duration::from_secs(60);
    while shared.heard.load(Ordering::Relaxed) < shared.connected.load(Ordering::Relaxed)
        && Instant::now() < probe_deadline
    {
        for target in targets {
            probes.insert(report(&client, server, companies, target, probes.len()).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = procstat::status_kib(server.pid, "VmRSS:").unwrap_or(0);
    let subscribed = shared.connected.load(Ordering::Relaxed);

    let window = Window::begin(Some(server.pid));
    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut report_errors = 0u64;
    for e in 0..config.events {
        let target = &targets[e % targets.len()];
        let started = Instant::now();
        match report(&client, server, companies, target, e).await {
            Ok(id) => {
                sent.insert(
                    id,
                    Sent {
                        company: target.company,
                        sent: started,
                        answered: Instant::now(),
                    },
                );
            }
            Err(error) => {
                report_errors += 1;
                eprintln!("  S1 report failed: {error}");
            }
        }
        tokio::time::sleep_until((started + config.interval).into()).await;
    }
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = window.end();
    let _ = stop_tx.send(true);

    let mut expected_per_company = vec![0u64; companies.len()];
    for s in sent.values() {
        expected_per_company[s.company] += 1;
    }
    let mut from_answer = histogram();
    let mut from_send = histogram();
    let mut delivered = 0u64;
    let mut missed = 0u64;
    let mut foreign = 0u64;
    let mut failed_subscribers = 0u64;
    let mut first_error = None;
    let mut early = 0u64;
    for (company, handle) in handles {
        let receipts = match handle.await {
            Ok(Ok(receipts)) => receipts,
            Ok(Err(error)) => {
                failed_subscribers += 1;
                first_error.get_or_insert(error);
                missed += expected_per_company[company];
                continue;
            }
            Err(error) => {
                failed_subscribers += 1;
                first_error.get_or_insert(error.to_string());
                missed += expected_per_company[company];
                continue;
            }
        };
        let mut seen = HashSet::new();
        for (id, at) in receipts {
            if probes.contains(&id) {
                continue;
            }
            match sent.get(&id) {
                Some(s) if s.company == company => {
                    if !seen.insert(id) {
                        continue;
                    }
                    delivered += 1;
                    let after_answer = at.saturating_duration_since(s.answered);
                    if at < s.answered {
                        early += 1;
                    }
                    let _ = from_answer.record((after_answer.as_micros() as u64).max(1));
                    let _ = from_send
                        .record((at.saturating_duration_since(s.sent).as_micros() as u64).max(1));
                }
                Some(_) => foreign += 1,
                None => {}
            }
        }
        missed += expected_per_company[company].saturating_sub(seen.len() as u64);
    }
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let rss_per_subscriber_bytes = if subscribed > 0 {
        (rss_idle.saturating_sub(rss_before) as f64 * 1024.0) / subscribed as f64
    } else {
        0.0
    };
    let extra = json!({
        "subscribers_target": config.subscribers,
        "subscribers_connected": subscribed,
        "connect_seconds": connect_seconds,
        "failed_subscribers": failed_subscribers,
        "events": sent.len(),
        "event_interval_ms": config.interval.as_millis() as u64,
        "report_errors": report_errors,
        "deliveries": delivered,
        "missed": missed,
        "cross_tenant_deliveries": foreign,
        "delivered_before_mutation_answer": early,
        "latency_from_answer_ms": { "p50": q(&from_answer, 0.5), "p99": q(&from_answer, 0.99),
            "max": if from_answer.is_empty() { 0.0 } else { from_answer.max() as f64 / 1000.0 } },
        "latency_from_send_ms": { "p50": q(&from_send, 0.5), "p99": q(&from_send, 0.99),
            "max": if from_send.is_empty() { 0.0 } else { from_send.max() as f64 / 1000.0 } },
        "server_rss_before_kib": rss_before,
        "server_rss_idle_kib": rss_idle,
        "rss_per_idle_subscriber_bytes": rss_per_subscriber_bytes,
    });
    Ok(Row {
        scenario: "S1 runsUpdated fan-out".into(),
        target: "stepwise-pg".into(),
        clients: config.subscribers,
        requests: delivered,
        errors: missed + foreign + failed_subscribers + report_errors,
        first_error,
        latency: from_answer,
        window: figures,
        extra,
    })
}
