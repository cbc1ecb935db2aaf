//! The subscription scenarios, built from three parts: a fleet of graphql-transport-ws
//! subscribers (each in a group: its company, or its run), a reporter that reports steps on
//! a schedule through one server, and the tally of which subscriber received which report.
//!
//! - S1: `runsUpdated` subscribers spread over the companies (and over one or two
//!   instances), one report at a time rotating over one running run per company.
//! - S2: one `runUpdated(runId)` subscriber per running run, so no two subscribers could
//!   share a resolution; reports rotate over the runs.
//! - M1 uses the fleet and the reporter next to Q1 and W1 (see main.rs).
//!
//! Latency is measured from the mutation's HTTP answer (the client cannot see the commit):
//! an event that beats the answer counts as 0 ms; the figure from the send is an upper bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::load::{Row, histogram};
use crate::procstat::{self, Window, WindowFigures};
use crate::remote;
use crate::seed::Company;
use crate::servers::{Result, Server, gql};
use crate::subscribers::{Local, Spec};

/// A running run a reporter can report steps on.
#[derive(Debug, Clone)]
pub struct ReportTarget {
    pub company: usize,
    pub workflow_id: String,
    pub run_id: String,
    pub step_ids: Vec<String>,
    /// The subscribers that must receive reports on this run: those of this group.
    pub group: usize,
}

/// Every run change of the company: what S1 subscribes to.
pub const RUNS_UPDATED: &str =
    "subscription { runsUpdated { run { id stepsCompleted } healthLog { id } } }";

/// The run changes of one workflow: M1's subscribers, so that W1's reports (on other
/// workflows) are filtered out rather than fanned out to every subscriber.
pub const RUNS_UPDATED_OF_WORKFLOW: &str = "subscription($w: ID) { runsUpdated(workflowId: $w) \
     { run { id stepsCompleted } healthLog { id } } }";

/// One run: what S2 subscribes to. The first message is the run's current state.
pub const RUN_UPDATED: &str = "subscription($run: ID!) { runUpdated(runId: $run) { run { id stepsCompleted } healthLog { id } } }";

pub const REPORT_STEP: &str = "mutation($run: ID!, $step: ID!) { reportStep(runId: $run, stepId: $step, \
     outcome: { status: SUCCESS, pageUrl: \"https://app.example.com/bench\", executionTimeMs: 420 }) \
     { duplicate healthLog { id } run { id stepsCompleted } } }";

/// Subscribers, connected and listening until `finish`: in this process, and in worker
/// processes (`stepwise-bench subscribers`) when one process cannot open enough sockets.
pub struct Fleet {
    local: Local,
    remotes: Vec<remote::Remote>,
    pub target: usize,
    pub processes: usize,
    pub connect_seconds: f64,
}

/// Starts every subscriber (at most `parallelism` handshakes at once per process) and waits
/// until each has subscribed or given up.
pub async fn connect(mut specs: Vec<Spec>, parallelism: usize, ready_on_any_next: bool) -> Fleet {
    let started = Instant::now();
    let target = specs.len();
    // A process holds one socket per subscriber; keep room for everything else.
    let per_process = (procstat::nofile_limit() as usize)
        .saturating_sub(1_000)
        .max(1_000);
    let processes = target.div_ceil(per_process).max(1);
    let chunk = target.div_ceil(processes).max(1);
    let mut remotes = Vec::new();
    while specs.len() > chunk {
        let rest = specs.split_off(specs.len() - chunk);
        match remote::Remote::spawn(rest, parallelism, ready_on_any_next).await {
            Ok(remote) => remotes.push(remote),
            Err(error) => eprintln!("  could not start a subscriber process: {error}"),
        }
    }
    let local = Local::spawn(specs, parallelism, ready_on_any_next);
    let mut fleet = Fleet {
        local,
        remotes,
        target,
        processes,
        connect_seconds: 0.0,
    };
    let deadline = started + Duration::from_secs(180.max(target as u64 / 50));
    loop {
        let (connected, _, finished) = fleet.status();
        if connected + finished >= target || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.connect_seconds = started.elapsed().as_secs_f64();
    fleet
}

/// Who reports, and through which server.
pub struct Reporter<'a> {
    pub client: reqwest::Client,
    pub url: String,
    pub companies: &'a [Company],
}

/// One report that was answered.
pub struct Sent {
    group: usize,
    sent: Instant,
    answered: Instant,
}

impl Reporter<'_> {
    pub async fn report(&self, target: &ReportTarget, step: usize) -> Result<String> {
        report(&self.client, &self.url, self.companies, target, step).await
    }
}

async fn report(
    client: &reqwest::Client,
    url: &str,
    companies: &[Company],
    target: &ReportTarget,
    step: usize,
) -> Result<String> {
    let data = gql(
        client,
        url,
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

/// When to report: event `e` is due at `interval × e` (open loop, at most `in_flight`
/// reports outstanding), until `events` were sent or `until` passed; reports sent before
/// `measure_from` are not measured.
pub struct Schedule {
    pub events: Option<usize>,
    pub interval: Duration,
    pub in_flight: usize,
    pub until: Option<Instant>,
    pub measure_from: Option<Instant>,
}

#[derive(Default)]
pub struct Reports {
    pub sent: HashMap<String, Sent>,
    /// Answered but outside the measured window (warm-up, probes): ignored when received.
    pub unmeasured: HashSet<String>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Reports sent more than one interval after they were due (the reporter fell behind).
    pub late: u64,
}

impl Reporter<'_> {
    pub async fn run(&self, targets: &[ReportTarget], schedule: &Schedule) -> Reports {
        let gate = Arc::new(Semaphore::new(schedule.in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut reports = Reports::default();
        let started = Instant::now();
        let companies: Arc<Vec<Company>> = Arc::new(self.companies.to_vec());
        for e in 0usize.. {
            if schedule.events.is_some_and(|n| e >= n) {
                break;
            }
            let due = started + schedule.interval * e as u32;
            if schedule.until.is_some_and(|until| due >= until) {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let sent = Instant::now();
            if sent.duration_since(due) > schedule.interval {
                reports.late += 1;
            }
            let measured = schedule.measure_from.is_none_or(|from| sent >= from);
            let target = targets[e % targets.len()].clone();
            let (client, url, companies) =
                (self.client.clone(), self.url.clone(), companies.clone());
            tasks.spawn(async move {
                let outcome = report(&client, &url, &companies, &target, e)
                    .await
                    .map_err(|error| error.to_string());
                drop(permit);
                (outcome, target.group, sent, Instant::now(), measured)
            });
            // Collect finished reports as we go, so the set stays small.
            while let Some(done) = tasks.try_join_next() {
                reports.add(done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            reports.add(done);
        }
        reports
    }
}

type Answered = (
    std::result::Result<String, String>,
    usize,
    Instant,
    Instant,
    bool,
);

impl Reports {
    fn add(&mut self, done: std::result::Result<Answered, tokio::task::JoinError>) {
        match done {
            Ok((Ok(id), group, sent, answered, true)) => {
                self.sent.insert(
                    id,
                    Sent {
                        group,
                        sent,
                        answered,
                    },
                );
            }
            Ok((Ok(id), _, _, _, false)) => {
                self.unmeasured.insert(id);
            }
            Ok((Err(error), ..)) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error.to_string());
            }
        }
    }
}

impl Fleet {
    /// (subscribed, heard anything, gave up), over every process.
    fn status(&self) -> (usize, usize, usize) {
        let (mut connected, mut heard, mut finished) = self.local.status();
        for remote in &self.remotes {
            let (c, h, f) = remote.status();
            connected += c;
            heard += h;
            finished += f;
        }
        (connected, heard, finished)
    }

    pub fn connected(&self) -> usize {
        self.status().0
    }

    fn heard(&self) -> usize {
        self.status().1
    }

    /// The server has no "subscribed" acknowledgement: waits until every subscriber heard
    /// something, reporting once on every target (probes) each half second when `probe`
    /// is given. Returns the probes' ids and the number of probe errors.
    pub async fn barrier(
        &self,
        probe: Option<(&Reporter<'_>, &[ReportTarget])>,
    ) -> (HashSet<String>, u64) {
        let mut probes = HashSet::new();
        let mut errors = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.heard() < self.connected() && Instant::now() < deadline {
            if let Some((reporter, targets)) = probe {
                for target in targets {
                    match reporter.report(target, probes.len()).await {
                        Ok(id) => {
                            probes.insert(id);
                        }
                        Err(error) => {
                            errors += 1;
                            eprintln!("  probe report failed: {error}");
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if self.heard() < self.connected() {
            eprintln!(
                "  only {} of {} subscribers heard anything within 60 s",
                self.heard(),
                self.connected()
            );
        }
        (probes, errors)
    }

    /// Stops every subscriber and tallies what each received against what was sent to
    /// its group.
    pub async fn finish(self, reports: &Reports, ignore: &HashSet<String>) -> Tally {
        let mut outcomes = self.local.stop().await;
        for remote in self.remotes {
            outcomes.extend(remote.stop().await);
        }
        let mut expected = HashMap::<usize, u64>::new();
        for s in reports.sent.values() {
            *expected.entry(s.group).or_default() += 1;
        }
        let mut tally = Tally {
            delivered: 0,
            missed: 0,
            foreign: 0,
            duplicates: 0,
            failed_subscribers: 0,
            first_error: None,
            early: 0,
            from_answer: histogram(),
            from_send: histogram(),
        };
        for (group, outcome) in outcomes {
            let expected = expected.get(&group).copied().unwrap_or(0);
            let receipts = match outcome {
                Ok(receipts) => receipts,
                Err(error) => {
                    tally.failed_subscribers += 1;
                    tally.first_error.get_or_insert(error);
                    tally.missed += expected;
                    continue;
                }
            };
            let mut seen = HashSet::new();
            for (id, at) in receipts {
                if ignore.contains(&id) || reports.unmeasured.contains(&id) {
                    continue;
                }
                match reports.sent.get(&id) {
                    Some(s) if s.group == group => {
                        if !seen.insert(id) {
                            tally.duplicates += 1;
                            continue;
                        }
                        tally.delivered += 1;
                        if at < s.answered {
                            tally.early += 1;
                        }
                        let _ = tally.from_answer.record(
                            (at.saturating_duration_since(s.answered).as_micros() as u64).max(1),
                        );
                        let _ = tally.from_send.record(
                            (at.saturating_duration_since(s.sent).as_micros() as u64).max(1),
                        );
                    }
                    Some(_) => tally.foreign += 1,
                    None => {}
                }
            }
            tally.missed += expected.saturating_sub(seen.len() as u64);
        }
        tally
    }
}

pub struct Tally {
    pub delivered: u64,
    pub missed: u64,
    /// Received by a subscriber of another group: another company's (S1) or another
    /// run's (S2) report.
    pub foreign: u64,
    pub duplicates: u64,
    pub failed_subscribers: u64,
    pub first_error: Option<String>,
    pub early: u64,
    pub from_answer: Histogram<u64>,
    pub from_send: Histogram<u64>,
}

fn quantiles(h: &Histogram<u64>) -> Value {
    let q = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    json!({ "p50": q(0.5), "p99": q(0.99),
        "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 } })
}

impl Tally {
    /// The row of a fan-out scenario: `requests` are the deliveries.
    pub fn row(
        self,
        scenario: &str,
        target: &str,
        fleet_target: usize,
        reports: &Reports,
        window: WindowFigures,
        mut extra: Value,
    ) -> Row {
        let figures = json!({
            "subscribers_target": fleet_target,
            "failed_subscribers": self.failed_subscribers,
            "events": reports.sent.len(),
            "report_errors": reports.errors,
            "reports_late": reports.late,
            "deliveries": self.delivered,
            "missed": self.missed,
            "foreign_deliveries": self.foreign,
            "duplicate_deliveries": self.duplicates,
            "delivered_before_mutation_answer": self.early,
            "latency_from_answer_ms": quantiles(&self.from_answer),
            "latency_from_send_ms": quantiles(&self.from_send),
        });
        if let (Some(extra), Some(figures)) = (extra.as_object_mut(), figures.as_object()) {
            extra.extend(figures.clone());
        }
        Row {
            scenario: scenario.into(),
            target: target.into(),
            clients: fleet_target,
            requests: self.delivered,
            errors: self.missed
                + self.foreign
                + self.duplicates
                + self.failed_subscribers
                + reports.errors,
            first_error: self.first_error.or_else(|| reports.first_error.clone()),
            latency: self.from_answer,
            window,
            extra,
            own_window: true,
        }
    }
}

/// Where the subscribers go and what they watch.
pub struct FleetPlan<'a> {
    /// Subscriber `i` connects to `servers[i % servers.len()]`.
    pub servers: &'a [&'a Server],
    pub subscribers: usize,
    pub connect_parallelism: usize,
}

/// S1: `runsUpdated` subscribers spread over the companies (and the servers); reports one
/// at a time, `interval` apart, through `writer`, rotating over `targets` (one running run
/// per company, group = company).
#[allow(clippy::too_many_arguments)]
pub async fn s1(
    scenario: &str,
    target_name: &str,
    plan: &FleetPlan<'_>,
    writer: &Server,
    companies: &[Company],
    targets: &[ReportTarget],
    events: usize,
    interval: Duration,
) -> Result<Row> {
    let pids: Vec<u32> = plan.servers.iter().map(|s| s.pid).collect();
    let reporter = Reporter {
        client: reqwest::Client::new(),
        url: writer.graphql_url(),
        companies,
    };
    let rss_before = procstat::rss_kib(&pids);
    let specs = (0..plan.subscribers)
        .map(|i| {
            let company = i % companies.len();
            Spec {
                url: plan.servers[i % plan.servers.len()].ws_url(),
                token: companies[company].token.clone(),
                query: RUNS_UPDATED.into(),
                variables: json!({}),
                group: company,
            }
        })
        .collect();
    let fleet = connect(specs, plan.connect_parallelism, false).await;
    eprintln!(
        "  {scenario}: {} of {} subscribed in {:.1} s",
        fleet.connected(),
        plan.subscribers,
        fleet.connect_seconds
    );
    let (probes, probe_errors) = fleet.barrier(Some((&reporter, targets))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = procstat::rss_kib(&pids);
    let subscribed = fleet.connected();
    let connect_seconds = fleet.connect_seconds;
    let processes = fleet.processes;

    let window = Window::begin(&pids);
    let reports = reporter
        .run(
            targets,
            &Schedule {
                events: Some(events),
                interval,
                in_flight: 1,
                until: None,
                measure_from: None,
            },
        )
        .await;
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = window.end();
    let fleet_target = fleet.target;
    let tally = fleet.finish(&reports, &probes).await;
    let extra = json!({
        "servers": plan.servers.len(),
        "subscribers_connected": subscribed,
        "subscriber_processes": processes,
        "connect_seconds": connect_seconds,
        "probe_errors": probe_errors,
        "event_interval_ms": interval.as_millis() as u64,
        "server_rss_before_kib": rss_before,
        "server_rss_idle_kib": rss_idle,
        "rss_per_idle_subscriber_bytes": per_subscriber(rss_before, rss_idle, subscribed),
    });
    Ok(tally.row(
        scenario,
        target_name,
        fleet_target,
        &reports,
        figures,
        extra,
    ))
}

fn per_subscriber(before_kib: u64, idle_kib: u64, subscribed: usize) -> f64 {
    if subscribed == 0 {
        return 0.0;
    }
    idle_kib.saturating_sub(before_kib) as f64 * 1024.0 / subscribed as f64
}

/// S2: one `runUpdated` subscriber per target run (group = its index in `targets`);
/// `events` reports, `interval` apart and up to `in_flight` at once, rotating over the runs.
pub async fn s2(
    server: &Server,
    companies: &[Company],
    targets: &[ReportTarget],
    events: usize,
    interval: Duration,
    in_flight: usize,
    connect_parallelism: usize,
) -> Result<Row> {
    let pids = [server.pid];
    let reporter = Reporter {
        client: reqwest::Client::new(),
        url: server.graphql_url(),
        companies,
    };
    let rss_before = procstat::rss_kib(&pids);
    let specs = targets
        .iter()
        .map(|target| Spec {
            url: server.ws_url(),
            token: companies[target.company].token.clone(),
            query: RUN_UPDATED.into(),
            variables: json!({ "run": target.run_id }),
            group: target.group,
        })
        .collect();
    let fleet = connect(specs, connect_parallelism, true).await;
    eprintln!(
        "  S2: {} of {} subscribed in {:.1} s",
        fleet.connected(),
        targets.len(),
        fleet.connect_seconds
    );
    // Each subscription's first message is its run's state: no probes needed.
    fleet.barrier(None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = procstat::rss_kib(&pids);
    let subscribed = fleet.connected();
    let connect_seconds = fleet.connect_seconds;
    let processes = fleet.processes;
    let window = Window::begin(&pids);
    let reports = reporter
        .run(
            targets,
            &Schedule {
                events: Some(events),
                interval,
                in_flight,
                until: None,
                measure_from: None,
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = window.end();
    let fleet_target = fleet.target;
    let tally = fleet.finish(&reports, &HashSet::new()).await;
    let extra = json!({
        "subscribers_connected": subscribed,
        "subscriber_processes": processes,
        "connect_seconds": connect_seconds,
        "event_interval_ms": interval.as_secs_f64() * 1000.0,
        "reports_in_flight": in_flight,
        "server_rss_before_kib": rss_before,
        "server_rss_idle_kib": rss_idle,
        "rss_per_idle_subscriber_bytes": per_subscriber(rss_before, rss_idle, subscribed),
    });
    Ok(tally.row(
        "S2 runUpdated, one run each",
        "stepwise-pg",
        fleet_target,
        &reports,
        figures,
        extra,
    ))
}
