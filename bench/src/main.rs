//! Stepwise benchmark harness (issues 7, 16, 17). `stepwise-bench all` seeds PostgreSQL,
//! starts the release server, runs every scenario at fixed concurrency for a fixed time
//! (W1 also with the NATS JetStream bus, S1 also over two instances), runs the same reads on
//! PostGraphile and the same SQL straight to PostgreSQL, repeats Q1 and W1 on SQLite, then
//! prints a table and writes target/bench/results.json.

mod ceiling;
mod fanout;
mod load;
mod mixed;
mod procstat;
mod remote;
mod report;
mod seed;
mod servers;
mod subscribers;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use load::{GraphqlOp, Row};
use seed::{Company, Seeded, Sizes};
use servers::{Result, Server, gql};

#[derive(Debug, Parser)]
#[command(
    name = "stepwise-bench",
    about = "Stepwise benchmark harness (issue 7)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seed, start the servers, run every scenario and comparison, print and save results.
    All(Options),
    /// Only seed PostgreSQL (as `all` does) and keep it, for profiling a scenario by hand.
    Seed(Options),
    /// A worker holding subscribers for `all` (specs on stdin); not for use by hand.
    #[command(hide = true)]
    Subscribers,
}

#[derive(Debug, Clone, clap::Args)]
struct Options {
    /// PostgreSQL server (no database name): the bench database is created on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg_url: String,
    /// The database dropped and re-created for the benchmark.
    #[arg(long, default_value = "stepwise_bench")]
    db_name: String,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Warm-up seconds before each measurement (not counted).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// DATABASE_POOL_SIZE of Stepwise and --max-pool-size of PostGraphile.
    #[arg(long, default_value_t = 10)]
    pool_size: usize,
    /// Concurrent clients of the high-concurrency read scenarios.
    #[arg(long, default_value_t = 64)]
    read_clients: usize,
    /// Concurrent clients of the low-concurrency read scenarios.
    #[arg(long, default_value_t = 4)]
    few_clients: usize,
    /// Concurrent clients of W1 and of the write ceiling (each on its own running run);
    /// one row per count, with NOTIFY and with NATS.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64])]
    write_clients: Vec<usize>,
    /// S1 subscribers (0 skips S1).
    #[arg(long, default_value_t = 20_000)]
    subscribers: usize,
    /// S1 step reports measured.
    #[arg(long, default_value_t = 100)]
    s1_events: usize,
    /// S1 milliseconds between two step reports.
    #[arg(long, default_value_t = 100)]
    s1_interval_ms: u64,
    /// S2 subscribers, each on its own running run (0 skips S2).
    #[arg(long, default_value_t = 2_000)]
    s2_subscribers: usize,
    /// S2 step reports measured (rotating over the runs).
    #[arg(long, default_value_t = 2_000)]
    s2_events: usize,
    /// S2 milliseconds between two step reports (open loop).
    #[arg(long, default_value_t = 10)]
    s2_interval_ms: u64,
    /// S2 reports outstanding at most at once.
    #[arg(long, default_value_t = 16)]
    s2_in_flight: usize,
    /// M1 measured seconds (after --warmup).
    #[arg(long, default_value_t = 60)]
    m1_duration: u64,
    /// M1 Q1 clients (0: none).
    #[arg(long, default_value_t = 4)]
    m1_q1_clients: usize,
    /// M1 W1 clients (0: none).
    #[arg(long, default_value_t = 32)]
    m1_w1_clients: usize,
    /// M1 subscribers (default: --subscribers).
    #[arg(long)]
    m1_subscribers: Option<usize>,
    /// S1-two subscribers, split over the two instances (default: --subscribers).
    #[arg(long)]
    s1_two_subscribers: Option<usize>,
    /// The NATS server with JetStream of the w1-nats and s1-two (NATS) rows.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Skip every NATS row (w1-nats, and s1-two with NATS).
    #[arg(long)]
    skip_nats: bool,
    /// Companies (tenants) seeded.
    #[arg(long, default_value_t = 5)]
    companies: usize,
    /// Workflows seeded (over all companies).
    #[arg(long, default_value_t = 1_000)]
    workflows: usize,
    /// Health logs seeded (over all workflows).
    #[arg(long, default_value_t = 100_000)]
    health_logs: usize,
    /// Run only these scenarios (comma-separated: q1, q2, w1, w1-nats, s1, s2, m1, s1-two);
    /// default: all of them. q1 and w1 include their PostGraphile, raw-SQL and SQLite rows.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip PostGraphile (no npm).
    #[arg(long)]
    skip_postgraphile: bool,
    /// Skip scenario 5 (SQLite).
    #[arg(long)]
    skip_sqlite: bool,
    /// Do not build the server first (use target/release/stepwise as it is).
    #[arg(long)]
    no_build: bool,
}

const Q1: &str = "query { workflows(first: 20) { edges { node { id name status \
     steps { id stepNumber actionType screenshot { id } } } } } }";

const Q2: &str = "query($id: ID!) { workflow(id: $id) { id name description status successRate \
     totalUses healthLogs(first: 50) { edges { node { id status errorType errorMessage pageUrl \
     executionTimeMs createdAt } } } } }";

const START_RUN: &str = "mutation($w: ID!) { startRun(workflowId: $w) { id status } }";

const FINISH_RUN: &str =
    "mutation($run: ID!) { finishRun(runId: $run, status: SUCCEEDED) { id status } }";

fn postgraphile_q1(company_id: &str) -> String {
    format!(
        "query {{ allWorkflows(first: 20, condition: {{ companyId: \"{company_id}\" }}, \
         orderBy: [CREATED_AT_DESC, ID_DESC]) {{ nodes {{ id name status \
         stepsByCompanyIdAndWorkflowId(orderBy: STEP_NUMBER_ASC) {{ nodes {{ id stepNumber \
         actionType screenshotByScreenshotId {{ id }} }} }} }} }} }}"
    )
}

fn postgraphile_q2(workflow_id: &str) -> String {
    format!(
        "query {{ workflowById(id: \"{workflow_id}\") {{ id name description status successRate \
         totalUses healthLogsByCompanyIdAndWorkflowId(first: 50, orderBy: [CREATED_AT_DESC, ID_DESC]) \
         {{ nodes {{ id status errorType errorMessage pageUrl executionTimeMs createdAt }} }} }} }}"
    )
}

fn body(query: &str, variables: Value) -> String {
    json!({ "query": query, "variables": variables }).to_string()
}

fn graphql_ops(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    clients: usize,
    make: impl Fn(usize) -> Box<dyn Fn(u64) -> String + Send + Sync>,
) -> Vec<GraphqlOp> {
    (0..clients)
        .map(|i| GraphqlOp {
            client: client.clone(),
            url: url.to_owned(),
            token: token.map(str::to_owned),
            body: make(i),
        })
        .collect()
}

fn http_client(clients: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .build()?)
}

/// One admin (and company) per tenant, through the real `signup` mutation.
async fn signup(server: &Server, count: usize, tag: &str) -> Result<Vec<Company>> {
    let client = reqwest::Client::new();
    let mut companies = Vec::with_capacity(count);
    for c in 0..count {
        let data = gql(
            &client,
            &server.graphql_url(),
            None,
            "mutation($c: String!, $e: String!) { signup(companyName: $c, name: \"Bench Admin\", \
             email: $e, password: \"bench-password-1\") { token user { id } company { id } } }",
            json!({ "c": format!("Bench Company {c}"), "e": format!("admin{c}@{tag}.bench.example") }),
        )
        .await?;
        let signup = &data["signup"];
        companies.push(Company {
            id: signup["company"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            user_id: signup["user"]["id"].as_str().unwrap_or_default().to_owned(),
            token: signup["token"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(companies)
}

/// Starts `count` runs spread over the companies, on workflows `offset..` of each (several
/// runs per workflow once there are more runs than workflows); group = company.
async fn start_runs(
    server: &Server,
    companies: &[Company],
    seeded: &Seeded,
    count: usize,
    offset: usize,
) -> Result<Vec<fanout::ReportTarget>> {
    use futures_util::StreamExt;
    let client = reqwest::Client::new();
    let url = server.graphql_url();
    let starts = (0..count).map(|i| {
        let company = i % companies.len();
        let workflows = &seeded.workflows[company];
        let usable = workflows.len().saturating_sub(offset).max(1);
        let workflow = &workflows[(offset + (i / companies.len()) % usable) % workflows.len()];
        let (client, url) = (client.clone(), url.clone());
        async move {
            let data = gql(
                &client,
                &url,
                Some(&companies[company].token),
                START_RUN,
                json!({ "w": workflow.id }),
            )
            .await?;
            Ok::<_, servers::Error>(fanout::ReportTarget {
                company,
                workflow_id: workflow.id.clone(),
                run_id: data["startRun"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                step_ids: workflow.step_ids.clone(),
                group: company,
            })
        }
    });
    futures_util::stream::iter(starts)
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Finishes the runs a scenario started: runs still going would be sent as snapshots to
/// every later `runsUpdated` subscriber of their company.
async fn finish_runs(server: &Server, companies: &[Company], targets: &[fanout::ReportTarget]) {
    use futures_util::StreamExt;
    let client = reqwest::Client::new();
    let url = server.graphql_url();
    let failures = futures_util::stream::iter(targets.iter().map(|target| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            gql(
                &client,
                &url,
                Some(&companies[target.company].token),
                FINISH_RUN,
                json!({ "run": target.run_id }),
            )
            .await
            .err()
        }
    }))
    .buffer_unordered(8)
    .filter_map(|e| async move { e })
    .collect::<Vec<_>>()
    .await;
    if let Some(first) = failures.first() {
        eprintln!(
            "warning: {} of {} runs could not be finished: {first}",
            failures.len(),
            targets.len()
        );
    }
}

fn w1_ops(
    client: &reqwest::Client,
    server: &Server,
    companies: &[Company],
    targets: &[fanout::ReportTarget],
) -> Vec<GraphqlOp> {
    targets
        .iter()
        .map(|target| {
            let target = target.clone();
            GraphqlOp {
                client: client.clone(),
                url: server.graphql_url(),
                token: Some(companies[target.company].token.clone()),
                body: Box::new(move |i| {
                    body(
                        fanout::REPORT_STEP,
                        json!({ "run": target.run_id, "step": target.step_ids[i as usize % target.step_ids.len()] }),
                    )
                }),
            }
        })
        .collect()
}

struct Scenarios {
    rows: Vec<Row>,
    warmup: Duration,
    duration: Duration,
    /// Lower-case scenario codes to run; empty runs all.
    only: Vec<String>,
}

impl Scenarios {
    /// Whether `--only` lets the scenario with this code (q1, w1-nats, ...) run.
    fn wanted(&self, code: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(code))
    }

    async fn run<O: load::Op>(
        &mut self,
        code: &str,
        scenario: &str,
        target: &str,
        ops: Vec<O>,
        pids: &[u32],
    ) {
        if !self.wanted(code) {
            return;
        }
        eprintln!(
            "running {scenario} on {target} with {} clients...",
            ops.len()
        );
        let row = load::run(scenario, target, ops, self.warmup, self.duration, pids).await;
        self.push(row);
    }

    fn push(&mut self, row: Row) {
        eprintln!("  {}", report::line(&row));
        self.rows.push(row);
    }
}

/// Re-creates the bench database, migrates it, starts Stepwise on it, signs up one admin per
/// company and seeds the data set. Returns the database URL and the running server.
async fn seed_postgres(
    options: &Options,
    sizes: &Sizes,
    setup: &mut Value,
) -> Result<(String, Server, Vec<Company>, Seeded)> {
    let admin = ceiling::connect(&format!("{}/postgres", options.pg_url)).await?;
    // Two statements: CREATE DATABASE cannot run inside the implicit transaction of a batch.
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            options.db_name
        ))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", options.db_name))
        .await?;
    setup["postgres_version"] = json!(
        admin
            .query_one("SHOW server_version", &[])
            .await?
            .get::<_, String>(0)
    );
    // The server's default sslmode is `prefer`: plain TCP keeps the comparison with the
    // NoTls ceilings and PostGraphile fair.
    let db_url = format!("{}/{}?sslmode=disable", options.pg_url, options.db_name);
    servers::migrate(&db_url).await?;
    let server = servers::start_stepwise("pg", &db_url, options.pool_size, &[]).await?;
    let companies = signup(&server, options.companies, "pg").await?;
    let (script, seeded) = seed::script(&companies, sizes);
    let started = std::time::Instant::now();
    let pg = ceiling::connect(&db_url).await?;
    pg.batch_execute(&script).await?;
    pg.batch_execute("VACUUM ANALYZE").await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "seeded PostgreSQL in {seed_seconds:.1} s: {} companies, {} workflows, {} steps and screenshots, {} runs, {} health logs",
        companies.len(),
        options.workflows,
        seeded.steps,
        seeded.runs,
        seeded.health_logs
    );
    setup["postgres"] = json!({
        "seed_seconds": seed_seconds, "companies": companies.len(), "workflows": options.workflows,
        "steps": seeded.steps, "screenshots": seeded.steps, "runs": seeded.runs,
        "health_logs": seeded.health_logs, "seed_sql_bytes": seeded.sql_bytes,
    });
    Ok((db_url, server, companies, seeded))
}

/// Seeds PostgreSQL as `all` does and leaves it there, for profiling one scenario by hand:
/// writes the database URL, the first company's token and the Q1 body to
/// target/bench/seeded.json.
async fn run_seed(options: Options) -> Result<()> {
    std::fs::create_dir_all(servers::out_dir())?;
    if !options.no_build {
        servers::build_stepwise().await?;
    }
    let sizes = Sizes {
        workflows: options.workflows,
        health_logs: options.health_logs,
    };
    let mut setup = json!({});
    let (db_url, server, companies, _) = seed_postgres(&options, &sizes, &mut setup).await?;
    server.stop().await;
    let seeded = json!({
        "database_url": db_url,
        "jwt_secret": servers::JWT_SECRET,
        "token": companies[0].token,
        "q1_body": body(Q1, json!({})),
        "setup": setup,
    });
    let path = servers::out_dir().join("seeded.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&seeded)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// W1 at `clients` clients on `server`, each client on a run of its own started for it;
/// with `ceiling`, the raw-SQL write ceiling right after, on the same runs and database.
#[allow(clippy::too_many_arguments)]
async fn w1_rows(
    scenarios: &mut Scenarios,
    code: &str,
    target: &str,
    server: &Server,
    companies: &[Company],
    seeded: &Seeded,
    clients: usize,
    ceiling: Option<&str>,
) -> Result<()> {
    let client = http_client(clients)?;
    let targets = start_runs(server, companies, seeded, clients, 1).await?;
    let ops = w1_ops(&client, server, companies, &targets);
    scenarios
        .run(code, "W1 reportStep", target, ops, &[server.pid])
        .await;
    if let Some(db_url) = ceiling {
        let counter = Arc::new(AtomicU64::new(0));
        let mut ops = Vec::with_capacity(targets.len());
        for target in &targets {
            ops.push(
                ceiling::ReportSql::new(
                    db_url,
                    &companies[target.company].id,
                    &target.run_id,
                    target.step_ids.clone(),
                    counter.clone(),
                )
                .await?,
            );
        }
        scenarios
            .run(code, "W1 reportStep", "raw-sql", ops, &[])
            .await;
    }
    finish_runs(server, companies, &targets).await;
    Ok(())
}

async fn run_all(options: Options) -> Result<()> {
    let m1_subscribers = options.m1_subscribers.unwrap_or(options.subscribers);
    let s1_two_subscribers = options.s1_two_subscribers.unwrap_or(options.subscribers);
    let most = options
        .subscribers
        .max(options.s2_subscribers)
        .max(m1_subscribers)
        .max(s1_two_subscribers);
    // Each subscriber holds a socket in the harness and one in the server (which inherits
    // the limit), plus the pools, logs and HTTP clients.
    let needed = most as u64 + 4_096;
    let nofile = procstat::raise_nofile_limit(needed);
    eprintln!("open-files limit: {nofile}");
    if nofile < needed {
        eprintln!(
            "warning: the open-files limit is {nofile} and could not be raised to {needed} \
             (setrlimit above the hard limit needs CAP_SYS_RESOURCE): the harness spreads its \
             subscribers over worker processes, but a server holds one socket per subscriber \
             of its own, so about {} per server is the most this machine allows; raise the \
             hard limit (`ulimit -Hn`, `prlimit --nofile`) or lower --subscribers",
            nofile.saturating_sub(200)
        );
    }
    std::fs::create_dir_all(servers::out_dir())?;
    if !options.no_build {
        servers::build_stepwise().await?;
    }
    let sizes = Sizes {
        workflows: options.workflows,
        health_logs: options.health_logs,
    };
    let mut scenarios = Scenarios {
        rows: Vec::new(),
        warmup: Duration::from_secs(options.warmup),
        duration: Duration::from_secs(options.duration),
        only: options.only.clone(),
    };
    let mut setup = json!({ "open_files_limit": nofile });
    let nats_env = [("STEPWISE_EVENT_BUS", options.nats_url.as_str())];

    // ------------------------------------------- PostgreSQL, NOTIFY bus: Q1, Q2, W1
    let (db_url, server, companies, seeded) = seed_postgres(&options, &sizes, &mut setup).await?;
    let q1_company = companies[0].clone();
    let q2_workflow = seeded.workflows[0][0].id.clone();

    // Response sizes, for the record.
    let probe = reqwest::Client::new();
    let q1_bytes = gql(
        &probe,
        &server.graphql_url(),
        Some(&q1_company.token),
        Q1,
        json!({}),
    )
    .await?
    .to_string()
    .len();
    setup["q1_response_bytes"] = json!(q1_bytes);

    let client = http_client(options.read_clients)?;
    let url = server.graphql_url();
    for clients in [options.read_clients, options.few_clients] {
        let ops = graphql_ops(&client, &url, Some(&q1_company.token), clients, |_| {
            Box::new(|_| body(Q1, json!({})))
        });
        scenarios
            .run(
                "q1",
                "Q1 workflows+steps+screenshots",
                "stepwise-pg",
                ops,
                &[server.pid],
            )
            .await;
    }
    for clients in [options.read_clients, options.few_clients] {
        let workflow = q2_workflow.clone();
        let ops = graphql_ops(&client, &url, Some(&q1_company.token), clients, move |_| {
            let workflow = workflow.clone();
            Box::new(move |_| body(Q2, json!({ "id": workflow })))
        });
        scenarios
            .run(
                "q2",
                "Q2 workflow+50 healthLogs",
                "stepwise-pg",
                ops,
                &[server.pid],
            )
            .await;
    }
    if scenarios.wanted("w1") {
        for &clients in &options.write_clients {
            w1_rows(
                &mut scenarios,
                "w1",
                "stepwise-pg",
                &server,
                &companies,
                &seeded,
                clients,
                Some(&db_url),
            )
            .await?;
        }
    }
    server.stop().await;

    // ------------------------------------------- W1 with the NATS JetStream bus
    if !options.skip_nats && scenarios.wanted("w1-nats") {
        let server =
            servers::start_stepwise("pg-nats", &db_url, options.pool_size, &nats_env).await?;
        for &clients in &options.write_clients {
            w1_rows(
                &mut scenarios,
                "w1-nats",
                "stepwise-pg-nats",
                &server,
                &companies,
                &seeded,
                clients,
                None,
            )
            .await?;
        }
        server.stop().await;
    }

    // ------------------------------------------- S1, S2, M1 on a fresh server (NOTIFY)
    let s1_interval = Duration::from_millis(options.s1_interval_ms);
    if ["s1", "s2", "m1"].iter().any(|c| scenarios.wanted(c)) {
        let server = servers::start_stepwise("pg-fanout", &db_url, options.pool_size, &[]).await?;
        if options.subscribers > 0 && scenarios.wanted("s1") {
            eprintln!("running S1 with {} subscribers...", options.subscribers);
            let targets = start_runs(&server, &companies, &seeded, companies.len(), 0).await?;
            let plan = fanout::FleetPlan {
                servers: &[&server],
                subscribers: options.subscribers,
                connect_parallelism: 256,
            };
            match fanout::s1(
                "S1 runsUpdated fan-out",
                "stepwise-pg",
                &plan,
                &server,
                &companies,
                &targets,
                options.s1_events,
                s1_interval,
            )
            .await
            {
                Ok(row) => scenarios.push(row),
                Err(error) => eprintln!("S1 failed: {error}"),
            }
            finish_runs(&server, &companies, &targets).await;
        }
        if options.s2_subscribers > 0 && scenarios.wanted("s2") {
            eprintln!(
                "running S2 with {} subscribers, one run each...",
                options.s2_subscribers
            );
            let mut targets =
                start_runs(&server, &companies, &seeded, options.s2_subscribers, 1).await?;
            for (i, target) in targets.iter_mut().enumerate() {
                target.group = i;
            }
            match fanout::s2(
                &server,
                &companies,
                &targets,
                options.s2_events,
                Duration::from_millis(options.s2_interval_ms),
                options.s2_in_flight,
                256,
            )
            .await
            {
                Ok(row) => scenarios.push(row),
                Err(error) => eprintln!("S2 failed: {error}"),
            }
            finish_runs(&server, &companies, &targets).await;
        }
        if scenarios.wanted("m1") {
            eprintln!(
                "running M1: Q1 x{}, W1 x{} and {m1_subscribers} subscribers for {} s...",
                options.m1_q1_clients, options.m1_w1_clients, options.m1_duration
            );
            let s1_targets = start_runs(&server, &companies, &seeded, companies.len(), 0).await?;
            let w1_targets =
                start_runs(&server, &companies, &seeded, options.m1_w1_clients, 1).await?;
            let url = server.graphql_url();
            let q1_ops = graphql_ops(
                &client,
                &url,
                Some(&q1_company.token),
                options.m1_q1_clients,
                |_| Box::new(|_| body(Q1, json!({}))),
            );
            let w1_client = http_client(options.m1_w1_clients)?;
            let mix = mixed::Mix {
                server: &server,
                companies: &companies,
                s1_targets: &s1_targets,
                q1_ops,
                w1_ops: w1_ops(&w1_client, &server, &companies, &w1_targets),
                subscribers: m1_subscribers,
                s1_interval,
                warmup: Duration::from_secs(options.warmup),
                duration: Duration::from_secs(options.m1_duration),
                connect_parallelism: 256,
            };
            match mixed::run(mix).await {
                Ok(rows) => rows.into_iter().for_each(|row| scenarios.push(row)),
                Err(error) => eprintln!("M1 failed: {error}"),
            }
            finish_runs(&server, &companies, &s1_targets).await;
            finish_runs(&server, &companies, &w1_targets).await;
        }
        server.stop().await;
    }

    // ------------------------------------------- S1 across two instances
    if s1_two_subscribers > 0 && scenarios.wanted("s1-two") {
        let mut buses: Vec<(&str, &[(&str, &str)])> = vec![("notify", &[])];
        if !options.skip_nats {
            buses.push(("nats", &nats_env));
        }
        for (bus, env) in buses {
            eprintln!(
                "running S1 with {s1_two_subscribers} subscribers over two instances ({bus})..."
            );
            let a = servers::start_stepwise(
                &format!("pg-two-a-{bus}"),
                &db_url,
                options.pool_size,
                env,
            )
            .await?;
            let b = servers::start_stepwise(
                &format!("pg-two-b-{bus}"),
                &db_url,
                options.pool_size,
                env,
            )
            .await?;
            let targets = start_runs(&a, &companies, &seeded, companies.len(), 0).await?;
            let plan = fanout::FleetPlan {
                servers: &[&a, &b],
                subscribers: s1_two_subscribers,
                connect_parallelism: 256,
            };
            match fanout::s1(
                "S1-two runsUpdated, 2 instances",
                &format!("stepwise-pg-2x-{bus}"),
                &plan,
                &a,
                &companies,
                &targets,
                options.s1_events,
                s1_interval,
            )
            .await
            {
                Ok(row) => scenarios.push(row),
                Err(error) => eprintln!("S1 over two instances ({bus}) failed: {error}"),
            }
            finish_runs(&a, &companies, &targets).await;
            a.stop().await;
            b.stop().await;
        }
    }

    // ------------------------------------------- PostGraphile
    if !options.skip_postgraphile && (scenarios.wanted("q1") || scenarios.wanted("q2")) {
        let cli = servers::install_postgraphile().await?;
        let postgraphile = servers::start_postgraphile(&cli, &db_url, options.pool_size).await?;
        let purl = postgraphile.graphql_url();
        let q1 = postgraphile_q1(&q1_company.id);
        let q2 = postgraphile_q2(&q2_workflow);
        // Fail loudly if the generated names differ from what we wrote.
        gql(&probe, &purl, None, &q1, json!({})).await?;
        gql(&probe, &purl, None, &q2, json!({})).await?;
        for clients in [options.read_clients, options.few_clients] {
            let q1 = q1.clone();
            let ops = graphql_ops(&client, &purl, None, clients, move |_| {
                let q1 = q1.clone();
                Box::new(move |_| body(&q1, json!({})))
            });
            scenarios
                .run(
                    "q1",
                    "Q1 workflows+steps+screenshots",
                    "postgraphile",
                    ops,
                    &[postgraphile.pid],
                )
                .await;
        }
        for clients in [options.read_clients, options.few_clients] {
            let q2 = q2.clone();
            let ops = graphql_ops(&client, &purl, None, clients, move |_| {
                let q2 = q2.clone();
                Box::new(move |_| body(&q2, json!({})))
            });
            scenarios
                .run(
                    "q2",
                    "Q2 workflow+50 healthLogs",
                    "postgraphile",
                    ops,
                    &[postgraphile.pid],
                )
                .await;
        }
        postgraphile.stop().await;
    }

    // ------------------------------------------- raw-SQL read ceiling (the write ceiling
    // ran beside W1)
    if scenarios.wanted("q1") {
        for clients in [options.read_clients, options.few_clients] {
            let mut ops = Vec::with_capacity(clients);
            for _ in 0..clients {
                ops.push(ceiling::Q1Sql::new(&db_url, &q1_company.id).await?);
            }
            scenarios
                .run("q1", "Q1 workflows+steps+screenshots", "raw-sql", ops, &[])
                .await;
        }
    }

    // ------------------------------------------- SQLite (scenario 5)
    if !options.skip_sqlite && (scenarios.wanted("q1") || scenarios.wanted("w1")) {
        let file = servers::out_dir().join("stepwise_bench.db");
        for suffix in ["", "-wal", "-shm", ".jwt-secret"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        let sqlite_url = format!("sqlite://{}", file.display());
        servers::migrate(&sqlite_url).await?;
        let server = servers::start_stepwise("sqlite", &sqlite_url, options.pool_size, &[]).await?;
        let companies = signup(&server, options.companies, "sqlite").await?;
        let (script, seeded) = seed::script(&companies, &sizes);
        let started = std::time::Instant::now();
        seed_sqlite(&file, &script).await?;
        setup["sqlite"] = json!({ "seed_seconds": started.elapsed().as_secs_f64() });
        let url = server.graphql_url();
        for clients in [options.read_clients, options.few_clients] {
            let ops = graphql_ops(&client, &url, Some(&companies[0].token), clients, |_| {
                Box::new(|_| body(Q1, json!({})))
            });
            scenarios
                .run(
                    "q1",
                    "Q1 workflows+steps+screenshots",
                    "stepwise-sqlite",
                    ops,
                    &[server.pid],
                )
                .await;
        }
        if scenarios.wanted("w1") {
            for &clients in &options.write_clients {
                w1_rows(
                    &mut scenarios,
                    "w1",
                    "stepwise-sqlite",
                    &server,
                    &companies,
                    &seeded,
                    clients,
                    None,
                )
                .await?;
            }
        }
        server.stop().await;
    }

    report::finish(&scenarios.rows, &options_json(&options), setup)
}

async fn seed_sqlite(file: &std::path::Path, script: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sqlite3")
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("sqlite3 has no stdin")?;
    stdin
        .write_all(b"PRAGMA busy_timeout=30000;\nPRAGMA foreign_keys=ON;\n")
        .await?;
    stdin.write_all(script.as_bytes()).await?;
    stdin.write_all(b"ANALYZE;\n").await?;
    drop(stdin);
    let status = child.wait().await?;
    if !status.success() {
        return Err(format!("sqlite3 seeding failed with {status}").into());
    }
    Ok(())
}

fn options_json(options: &Options) -> Value {
    json!({
        "duration_s": options.duration, "warmup_s": options.warmup, "pool_size": options.pool_size,
        "read_clients": options.read_clients, "few_clients": options.few_clients,
        "write_clients": options.write_clients, "subscribers": options.subscribers,
        "s1_events": options.s1_events, "s1_interval_ms": options.s1_interval_ms,
        "s2_subscribers": options.s2_subscribers, "s2_events": options.s2_events,
        "s2_interval_ms": options.s2_interval_ms, "s2_in_flight": options.s2_in_flight,
        "m1_duration_s": options.m1_duration, "m1_q1_clients": options.m1_q1_clients,
        "m1_w1_clients": options.m1_w1_clients,
        "m1_subscribers": options.m1_subscribers.unwrap_or(options.subscribers),
        "s1_two_subscribers": options.s1_two_subscribers.unwrap_or(options.subscribers),
        "nats_url": options.nats_url, "skip_nats": options.skip_nats,
        "only": options.only,
        "companies": options.companies, "workflows": options.workflows,
        "health_logs": options.health_logs,
    })
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::All(options) => run_all(options).await,
        Command::Seed(options) => run_seed(options).await,
        Command::Subscribers => remote::worker().await,
    };
    if let Err(error) = result {
        eprintln!("stepwise-bench: {error} ({error:?})");
        std::process::exit(1);
    }
}
