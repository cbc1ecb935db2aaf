//! Closed-loop load at fixed concurrency: every client sends its next request as soon as
//! the previous one is answered, for a warm-up and then a measured window.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::procstat::{Window, WindowFigures};

/// One client's operation: a request (or a transaction) and whether it succeeded.
pub trait Op: Send + 'static {
    fn call(&mut self, iteration: u64) -> impl Future<Output = Result<(), String>> + Send;
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
    pub window: WindowFigures,
    /// Anything scenario-specific (S1's delivery figures, ratios...).
    pub extra: Value,
    /// False when other scenarios ran in the same window (M1): the server CPU is then
    /// theirs too and is not divided by this row's requests.
    pub own_window: bool,
}

impl Row {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.window.seconds
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Server CPU time per request (per delivery for the fan-out rows), in ms.
    pub fn server_cpu_ms_per_request(&self) -> Option<f64> {
        if !self.own_window || self.requests == 0 {
            return None;
        }
        Some(self.window.server_cpu_seconds? * 1000.0 / self.requests as f64)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "clients": self.clients,
            "requests": self.requests,
            "seconds": self.window.seconds,
            "req_per_s": self.rate(),
            "p50_ms": self.ms(0.50),
            "p95_ms": self.ms(0.95),
            "p99_ms": self.ms(0.99),
            "max_ms": if self.latency.is_empty() { 0.0 } else { self.latency.max() as f64 / 1000.0 },
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_pct": self.window.server_cpu_pct,
            "server_cpu_seconds": self.window.server_cpu_seconds,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request(),
            "server_peak_rss_kib": self.window.server_peak_rss_kib,
            "postgres_cpu_pct": self.window.postgres_cpu_pct,
            "client_cpu_pct": self.window.client_cpu_pct,
            "machine_busy_pct": self.window.machine_busy_pct,
            "extra": self.extra,
        })
    }
}

struct WorkerResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

/// Runs `ops` (one per client) for `warmup`, then measures for `duration`.
/// `server_pids` are the processes whose CPU and peak RSS are reported.
pub async fn run<O: Op>(
    scenario: &str,
    target: &str,
    ops: Vec<O>,
    warmup: Duration,
    duration: Duration,
    server_pids: &[u32],
) -> Row {
    let clients = ops.len();
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let phases = Arc::new((measure_from, measure_until));
    let mut handles = Vec::with_capacity(clients);
    for mut op in ops {
        let phases = phases.clone();
        handles.push(tokio::spawn(async move {
            let (from, until) = *phases;
            let mut result = WorkerResult {
                requests: 0,
                errors: 0,
                first_error: None,
                latency: histogram(),
            };
            let mut iteration = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = op.call(iteration).await;
                iteration += 1;
                let done = Instant::now();
                if sent < from || done > until {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        result.requests += 1;
                        let micros = (done - sent).as_micros() as u64;
                        let _ = result.latency.record(micros.max(1));
                    }
                    Err(error) => {
                        result.errors += 1;
                        if result.first_error.is_none() {
                            result.first_error = Some(error.chars().take(500).collect());
                        }
                        // A failing target should not be hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            result
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let window = Window::begin(server_pids);
    tokio::time::sleep_until(measure_until.into()).await;
    let figures = window.end();
    let mut row = Row {
        scenario: scenario.to_owned(),
        target: target.to_owned(),
        clients,
        requests: 0,
        errors: 0,
        first_error: None,
        latency: histogram(),
        window: figures,
        extra: json!({}),
        own_window: true,
    };
    for handle in handles {
        match handle.await {
            Ok(result) => {
                row.requests += result.requests;
                row.errors += result.errors;
                if row.first_error.is_none() {
                    row.first_error = result.first_error;
                }
                let _ = row.latency.add(&result.latency);
            }
            Err(error) => {
                row.errors += 1;
                row.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    row
}

/// A GraphQL POST over keep-alive HTTP/1.1.
pub struct GraphqlOp {
    pub client: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    /// The request body for an iteration.
    pub body: Box<dyn Fn(u64) -> String + Send + Sync>,
}

impl Op for GraphqlOp {
    async fn call(&mut self, iteration: u64) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(
                "accept",
                "application/graphql-response+json, application/json",
            )
            .body((self.body)(iteration));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        // Cheap check: a GraphQL error anywhere in the answer counts as an error.
        if body.windows(9).any(|w| w == b"\"errors\":") {
            return Err(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(())
    }
}
