//! M1: Q1 readers, W1 writers and S1 subscribers on one server at the same time, for a
//! warm-up and then a measured window. One row per part, each with its own p99 and errors;
//! the server's CPU and RSS are those of the whole mix (the rows share the window), and the
//! RSS is sampled through the window to show whether it grows after the warm-up.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fanout::{self, FleetPlan, Reporter, Schedule};
use crate::load::{self, GraphqlOp, Row};
use crate::procstat::{self, Window};
use crate::seed::Company;
use crate::servers::{Result, Server};
use crate::subscribers::Spec;

pub struct Mix<'a> {
    pub server: &'a Server,
    pub companies: &'a [Company],
    /// One running run per company (group = company), on a workflow W1 does not write to.
    pub s1_targets: &'a [fanout::ReportTarget],
    pub q1_ops: Vec<GraphqlOp>,
    pub w1_ops: Vec<GraphqlOp>,
    pub subscribers: usize,
    pub s1_interval: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_parallelism: usize,
}

pub async fn run(mix: Mix<'_>) -> Result<Vec<Row>> {
    let pids = [mix.server.pid];
    let plan = FleetPlan {
        servers: &[mix.server],
        subscribers: mix.subscribers,
        connect_parallelism: mix.connect_parallelism,
    };
    let reporter = Reporter {
        client: reqwest::Client::new(),
        url: mix.server.graphql_url(),
        companies: mix.companies,
    };
    let rss_before = procstat::rss_kib(&pids);
    // Subscribers watch the workflow of their company's S1 run: W1's reports (other
    // workflows of the same companies) reach every subscription and are filtered there,
    // instead of being delivered 1,000s of times each.
    let specs = (0..plan.subscribers)
        .map(|i| {
            let company = i % mix.companies.len();
            Spec {
                url: mix.server.ws_url(),
                token: mix.companies[company].token.clone(),
                query: fanout::RUNS_UPDATED_OF_WORKFLOW.into(),
                variables: json!({ "w": mix.s1_targets[company].workflow_id }),
                group: company,
            }
        })
        .collect();
    let fleet = fanout::connect(specs, plan.connect_parallelism, false).await;
    eprintln!(
        "  M1: {} of {} subscribed in {:.1} s",
        fleet.connected(),
        plan.subscribers,
        fleet.connect_seconds
    );
    let (probes, _) = fleet.barrier(Some((&reporter, mix.s1_targets))).await;
    let rss_subscribed = procstat::rss_kib(&pids);
    let subscribed = fleet.connected();

    let started = Instant::now();
    let measure_from = started + mix.warmup;
    let until = measure_from + mix.duration;
    let q1_clients = mix.q1_ops.len();
    let w1_clients = mix.w1_ops.len();
    let sampler = async {
        let mut samples = Vec::new();
        while Instant::now() < until {
            samples.push((
                started.elapsed().as_secs_f64(),
                procstat::rss_kib(&pids) as f64 / 1024.0,
            ));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        samples
    };
    let window = async {
        tokio::time::sleep_until(measure_from.into()).await;
        let rss = procstat::rss_kib(&pids);
        let window = Window::begin(&pids);
        tokio::time::sleep_until(until.into()).await;
        (rss, window.end(), procstat::rss_kib(&pids))
    };
    let q1 = async {
        if q1_clients == 0 {
            return None;
        }
        Some(
            load::run(
                "M1 Q1 workflows (mixed)",
                "stepwise-pg",
                mix.q1_ops,
                mix.warmup,
                mix.duration,
                &pids,
            )
            .await,
        )
    };
    let w1 = async {
        if w1_clients == 0 {
            return None;
        }
        Some(
            load::run(
                "M1 W1 reportStep (mixed)",
                "stepwise-pg",
                mix.w1_ops,
                mix.warmup,
                mix.duration,
                &pids,
            )
            .await,
        )
    };
    let schedule = Schedule {
        events: None,
        interval: mix.s1_interval,
        in_flight: 1,
        until: Some(until),
        measure_from: Some(measure_from),
    };
    let reports = reporter.run(mix.s1_targets, &schedule);
    let (q1, w1, reports, (rss_warm, figures, rss_end), samples) =
        tokio::join!(q1, w1, reports, window, sampler);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fleet_target = fleet.target;
    let ignore: HashSet<String> = probes;
    let tally = fleet.finish(&reports, &ignore).await;
    let growth_kib = rss_end as i64 - rss_warm as i64;
    let shared = json!({
        "q1_clients": q1_clients,
        "w1_clients": w1_clients,
        "subscribers": mix.subscribers,
        "subscribers_connected": subscribed,
        "warmup_s": mix.warmup.as_secs_f64(),
        "server_rss_before_subscribers_kib": rss_before,
        "server_rss_subscribed_kib": rss_subscribed,
        "server_rss_after_warmup_kib": rss_warm,
        "server_rss_end_kib": rss_end,
        "server_rss_growth_kib": growth_kib,
        "server_rss_samples_s_mib": samples,
    });
    let mut s1 = tally.row(
        "M1 S1 runsUpdated (mixed)",
        "stepwise-pg",
        fleet_target,
        &reports,
        figures,
        json!({ "subscription": fanout::RUNS_UPDATED_OF_WORKFLOW,
            "event_interval_ms": mix.s1_interval.as_millis() as u64 }),
    );
    if let Some(extra) = s1.extra.as_object_mut() {
        extra.insert("mix".into(), shared.clone());
    }
    let mut rows: Vec<Row> = [q1, w1].into_iter().flatten().collect();
    for row in &mut rows {
        row.extra = json!({ "mix": shared });
    }
    rows.push(s1);
    for row in &mut rows {
        row.own_window = false;
    }
    eprintln!(
        "  M1: server RSS {:.0} MiB after warm-up, {:.0} MiB at the end ({:+.1} MiB)",
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        growth_kib as f64 / 1024.0
    );
    Ok(rows)
}
