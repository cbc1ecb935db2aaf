//! Subscribers in a worker process (`stepwise-bench subscribers`), for fleets larger than
//! one process's open-files limit allows. The parent writes one JSON line (the specs) to the
//! worker's stdin and later `stop`; the worker writes its status as JSON lines every 100 ms,
//! then one line with every subscriber's outcome. Receipt times cross the process boundary
//! as wall-clock microseconds and are mapped back onto the parent's `Instant`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::servers::Result;
use crate::subscribers::{Local, Outcome, Spec};

fn micros_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Maps between this process's `Instant`s and wall-clock microseconds.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    micros: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            micros: micros_since_epoch(SystemTime::now()),
        }
    }

    fn to_micros(self, at: Instant) -> u64 {
        if at >= self.instant {
            self.micros + (at - self.instant).as_micros() as u64
        } else {
            self.micros
                .saturating_sub((self.instant - at).as_micros() as u64)
        }
    }

    fn to_instant(self, micros: u64) -> Instant {
        if micros >= self.micros {
            self.instant + Duration::from_micros(micros - self.micros)
        } else {
            self.instant
                .checked_sub(Duration::from_micros(self.micros - micros))
                .unwrap_or(self.instant)
        }
    }
}

#[derive(Default)]
struct Status {
    connected: AtomicUsize,
    heard: AtomicUsize,
    finished: AtomicUsize,
}

/// A worker process holding some of the fleet's subscribers.
pub struct Remote {
    child: Child,
    stdin: ChildStdin,
    status: Arc<Status>,
    outcomes: oneshot::Receiver<Vec<Outcome>>,
    count: usize,
}

impl Remote {
    pub async fn spawn(
        specs: Vec<Spec>,
        parallelism: usize,
        ready_on_any_next: bool,
    ) -> Result<Self> {
        let count = specs.len();
        let groups: Vec<usize> = specs.iter().map(|s| s.group).collect();
        let header = json!({
            "parallelism": parallelism,
            "ready_on_any_next": ready_on_any_next,
            "specs": specs.iter().map(|s| json!({ "url": s.url, "token": s.token,
                "query": s.query, "variables": s.variables, "group": s.group })).collect::<Vec<_>>(),
        });
        let mut child = Command::new(std::env::current_exe()?)
            .arg("subscribers")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("worker has no stdin")?;
        let stdout = child.stdout.take().ok_or("worker has no stdout")?;
        stdin.write_all(header.to_string().as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        let status = Arc::new(Status::default());
        let (send, outcomes) = oneshot::channel();
        let reader_status = status.clone();
        tokio::spawn(async move {
            let clock = Clock::now();
            let mut lines = BufReader::new(stdout).lines();
            let mut result = None;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(outcomes) = value["outcomes"].as_array() {
                    result = Some(
                        outcomes
                            .iter()
                            .map(|o| {
                                let group = o["group"].as_u64().unwrap_or(0) as usize;
                                let outcome = match o["error"].as_str() {
                                    Some(error) => Err(error.to_owned()),
                                    None => Ok(o["receipts"]
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .map(|r| {
                                            (
                                                r[0].as_str().unwrap_or_default().to_owned(),
                                                clock.to_instant(r[1].as_u64().unwrap_or(0)),
                                            )
                                        })
                                        .collect()),
                                };
                                (group, outcome)
                            })
                            .collect(),
                    );
                    break;
                }
                let count = |key: &str| value[key].as_u64().unwrap_or(0) as usize;
                reader_status
                    .connected
                    .store(count("connected"), Ordering::Relaxed);
                reader_status.heard.store(count("heard"), Ordering::Relaxed);
                reader_status
                    .finished
                    .store(count("finished"), Ordering::Relaxed);
            }
            // A worker that died counts every one of its subscribers as failed.
            let _ = send.send(result.unwrap_or_else(|| {
                groups
                    .into_iter()
                    .map(|g| (g, Err("subscriber process ended without results".into())))
                    .collect()
            }));
        });
        Ok(Self {
            child,
            stdin,
            status,
            outcomes,
            count,
        })
    }

    /// (subscribed, heard anything, gave up).
    pub fn status(&self) -> (usize, usize, usize) {
        (
            self.status.connected.load(Ordering::Relaxed),
            self.status.heard.load(Ordering::Relaxed),
            self.status.finished.load(Ordering::Relaxed),
        )
    }

    pub async fn stop(mut self) -> Vec<Outcome> {
        let _ = self.stdin.write_all(b"stop\n").await;
        let _ = self.stdin.flush().await;
        let outcomes = self.outcomes.await.unwrap_or_default();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        if outcomes.len() != self.count {
            eprintln!(
                "  a subscriber process returned {} of {} outcomes",
                outcomes.len(),
                self.count
            );
        }
        outcomes
    }
}

/// The worker's side: `stepwise-bench subscribers`.
pub async fn worker() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let header: Value = serde_json::from_str(&lines.next_line().await?.ok_or("no specs")?)?;
    let specs = header["specs"]
        .as_array()
        .ok_or("no specs")?
        .iter()
        .map(|s| Spec {
            url: s["url"].as_str().unwrap_or_default().to_owned(),
            token: s["token"].as_str().unwrap_or_default().to_owned(),
            query: s["query"].as_str().unwrap_or_default().to_owned(),
            variables: s["variables"].clone(),
            group: s["group"].as_u64().unwrap_or(0) as usize,
        })
        .collect();
    let local = Local::spawn(
        specs,
        header["parallelism"].as_u64().unwrap_or(256) as usize,
        header["ready_on_any_next"].as_bool().unwrap_or(false),
    );
    let mut stdout = tokio::io::stdout();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.trim() != "stop" => {}
                _ => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let (connected, heard, finished) = local.status();
                let status = json!({ "connected": connected, "heard": heard, "finished": finished });
                stdout.write_all(format!("{status}\n").as_bytes()).await?;
                stdout.flush().await?;
            }
        }
    }
    let clock = Clock::now();
    let outcomes: Vec<Value> = local
        .stop()
        .await
        .into_iter()
        .map(|(group, outcome)| match outcome {
            Ok(receipts) => json!({ "group": group, "receipts": receipts
                .into_iter()
                .map(|(id, at)| json!([id, clock.to_micros(at)]))
                .collect::<Vec<_>>() }),
            Err(error) => json!({ "group": group, "error": error }),
        })
        .collect();
    stdout
        .write_all(format!("{}\n", json!({ "outcomes": outcomes })).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}
