//! Stepwise benchmark harness (issue 7). `stepwise-bench all` seeds PostgreSQL, starts the
//! release server, runs every scenario at fixed concurrency for a fixed time, runs the same
//! reads on PostGraphile and the same SQL straight to PostgreSQL, repeats Q1 and W1 on
//! SQLite, then prints a table and writes target/bench/results.json.

mod ceiling;
mod fanout;
mod load;
mod procstat;
mod report;
mod seed;
mod servers;

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
    /// Concurrent clients of W1 and of the write ceiling (each on its own running run).
    #[arg(long, default_value_t = 32)]
    write_clients: usize,
    /// S1 subscribers (0 skips S1).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// S1 step reports measured.
    #[arg(long, default_value_t = 100)]
    s1_events: usize,
    /// S1 milliseconds between two step reports.
    #[arg(long, default_value_t = 100)]
    s1_interval_ms: u64,
    /// Companies (tenants) seeded.
    #[arg(long, default_value_t = 5)]
    companies: usize,
    /// Workflows seeded (over all companies).
    #[arg(long, default_value_t = 1_000)]
    workflows: usize,
    /// Health logs seeded (over all workflows).
    #[arg(long, default_value_t = 100_000)]
    health_logs: usize,
    /// Run only these scenarios (comma-separated: q1, q2, w1, s1); default: all of them.
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

/// Starts `count` runs spread over the companies, on workflows `offset..` of each.
async fn start_runs(
    server: &Server,
    companies: &[Company],
    seeded: &Seeded,
    count: usize,
    offset: usize,
) -> Result<Vec<fanout::ReportTarget>> {
    let client = reqwest::Client::new();
    let mut targets = Vec::with_capacity(count);
    for i in 0..count {
        let company = i % companies.len();
        let workflow = &seeded.workflows[company][offset + i / companies.len()];
        let data = gql(
            &client,
            &server.graphql_url(),
            Some(&companies[company].token),
            START_RUN,
            json!({ "w": workflow.id }),
        )
        .await?;
        targets.push(fanout::ReportTarget {
            company,
            run_id: data["startRun"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            step_ids: workflow.step_ids.clone(),
        });
    }
    Ok(targets)
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
    /// Whether `--only` lets `scenario` ("Q1 workflows+...") run.
    fn wanted(&self, scenario: &str) -> bool {
        let code = scenario.split(' ').next().unwrap_or_default();
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(code))
    }

    async fn run<O: load::Op>(
        &mut self,
        scenario: &str,
        target: &str,
        ops: Vec<O>,
        pid: Option<u32>,
    ) {
        if !self.wanted(scenario) {
            return;
        }
        eprintln!(
            "running {scenario} on {target} with {} clients...",
            ops.len()
        );
        let row = load::run(scenario, target, ops, self.warmup, self.duration, pid).await;
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
    let db_url = format!("{}/{}", options.pg_url, options.db_name);
    servers::migrate(&db_url).await?;
    let server = servers::start_stepwise("pg", &db_url, options.pool_size).await?;
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

async fn run_all(options: Options) -> Result<()> {
    let nofile = procstat::raise_nofile_limit();
    eprintln!("open-files limit: {nofile}");
    if (nofile as usize) < options.subscribers + 1_000 {
        eprintln!(
            "warning: {nofile} open files cannot hold {} subscribers; raise `ulimit -n`",
            options.subscribers
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
    let mut setup = json!({});

    // ---------------------------------------------------------------- PostgreSQL
    let (db_url, server, companies, seeded) = seed_postgres(&options, &sizes, &mut setup).await?;
    let q1_company = companies[0].clone();
    let q2_workflow = seeded.workflows[0][0].id.clone();
    // Runs for W1 (one per client) and for S1 (one per company) started beforehand.
    let w1_targets = start_runs(&server, &companies, &seeded, options.write_clients, 1).await?;
    let s1_targets = start_runs(&server, &companies, &seeded, companies.len(), 0).await?;

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
                "Q1 workflows+steps+screenshots",
                "stepwise-pg",
                ops,
                Some(server.pid),
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
                "Q2 workflow+50 healthLogs",
                "stepwise-pg",
                ops,
                Some(server.pid),
            )
            .await;
    }
    let ops = w1_ops(&client, &server, &companies, &w1_targets);
    scenarios
        .run("W1 reportStep", "stepwise-pg", ops, Some(server.pid))
        .await;

    if options.subscribers > 0 && scenarios.wanted("S1") {
        eprintln!("running S1 with {} subscribers...", options.subscribers);
        let config = fanout::Config {
            subscribers: options.subscribers,
            events: options.s1_events,
            interval: Duration::from_millis(options.s1_interval_ms),
            connect_parallelism: 256,
        };
        match fanout::run(&server, &companies, &s1_targets, &config).await {
            Ok(row) => {
                eprintln!("  {}", report::line(&row));
                scenarios.rows.push(row);
            }
            Err(error) => eprintln!("S1 failed: {error}"),
        }
    }
    server.stop().await;

    // ---------------------------------------------------------------- PostGraphile
    if !options.skip_postgraphile {
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
                    "Q1 workflows+steps+screenshots",
                    "postgraphile",
                    ops,
                    Some(postgraphile.pid),
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
                    "Q2 workflow+50 healthLogs",
                    "postgraphile",
                    ops,
                    Some(postgraphile.pid),
                )
                .await;
        }
        postgraphile.stop().await;
    }

    // ---------------------------------------------------------------- raw SQL ceilings
    for clients in [options.read_clients, options.few_clients] {
        let mut ops = Vec::with_capacity(clients);
        for _ in 0..clients {
            ops.push(ceiling::Q1Sql::new(&db_url, &q1_company.id).await?);
        }
        scenarios
            .run("Q1 workflows+steps+screenshots", "raw-sql", ops, None)
            .await;
    }
    let counter = Arc::new(AtomicU64::new(0));
    let mut ops = Vec::with_capacity(w1_targets.len());
    for target in &w1_targets {
        ops.push(
            ceiling::ReportSql::new(
                &db_url,
                &companies[target.company].id,
                &target.run_id,
                target.step_ids.clone(),
                counter.clone(),
            )
            .await?,
        );
    }
    scenarios.run("W1 reportStep", "raw-sql", ops, None).await;

    // ---------------------------------------------------------------- SQLite (scenario 5)
    if !options.skip_sqlite {
        let file = servers::out_dir().join("stepwise_bench.db");
        for suffix in ["", "-wal", "-shm", ".jwt-secret"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        let sqlite_url = format!("sqlite://{}", file.display());
        servers::migrate(&sqlite_url).await?;
        let server = servers::start_stepwise("sqlite", &sqlite_url, options.pool_size).await?;
        let companies = signup(&server, options.companies, "sqlite").await?;
        let (script, seeded) = seed::script(&companies, &sizes);
        let started = std::time::Instant::now();
        seed_sqlite(&file, &script).await?;
        setup["sqlite"] = json!({ "seed_seconds": started.elapsed().as_secs_f64() });
        let w1_targets = start_runs(&server, &companies, &seeded, options.write_clients, 1).await?;
        let url = server.graphql_url();
        for clients in [options.read_clients, options.few_clients] {
            let ops = graphql_ops(&client, &url, Some(&companies[0].token), clients, |_| {
                Box::new(|_| body(Q1, json!({})))
            });
            scenarios
                .run(
                    "Q1 workflows+steps+screenshots",
                    "stepwise-sqlite",
                    ops,
                    Some(server.pid),
                )
                .await;
        }
        let ops = w1_ops(&client, &server, &companies, &w1_targets);
        scenarios
            .run("W1 reportStep", "stepwise-sqlite", ops, Some(server.pid))
            .await;
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
    };
    if let Err(error) = result {
        eprintln!("stepwise-bench: {error} ({error:?})");
        std::process::exit(1);
    }
}
