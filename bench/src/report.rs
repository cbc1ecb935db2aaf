//! The results table, the ratios against PostGraphile and the raw-SQL ceiling, the targets
//! of issue 7, and target/bench/results.json.

use serde_json::{Value, json};

use crate::load::Row;
use crate::servers::{Result, out_dir, root};

fn opt_pct(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.0}%"))
}

fn rss(row: &Row) -> String {
    row.window
        .server_peak_rss_kib
        .map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

/// One row, as printed while the benchmark runs.
pub fn line(row: &Row) -> String {
    format!(
        "{:<32} {:<16} {:>6} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>7} {:>9} {:>6} {:>6} {:>6}",
        row.scenario,
        row.target,
        row.clients,
        row.rate(),
        row.ms(0.50),
        row.ms(0.95),
        row.ms(0.99),
        row.errors,
        opt_pct(row.window.server_cpu_pct),
        rss(row),
        format!("{:.0}%", row.window.postgres_cpu_pct),
        format!("{:.0}%", row.window.client_cpu_pct),
        format!("{:.0}%", row.window.machine_busy_pct),
    )
}

fn header() -> String {
    format!(
        "{:<32} {:<16} {:>6} {:>9} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9} {:>6} {:>6} {:>6}",
        "scenario",
        "target",
        "client",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "srv CPU",
        "peak RSS",
        "PG CPU",
        "client",
        "busy"
    )
}

fn find<'a>(
    rows: &'a [Row],
    scenario: &str,
    target: &str,
    clients: Option<usize>,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.scenario.starts_with(scenario)
            && r.target == target
            && clients.is_none_or(|c| r.clients == c)
    })
}

fn ratio(a: Option<&Row>, b: Option<&Row>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.rate() > 0.0).then(|| a.rate() / b.rate())
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn finish(rows: &[Row], options: &Value, setup: Value) -> Result<()> {
    let high = options["read_clients"].as_u64().unwrap_or(64) as usize;
    let few = options["few_clients"].as_u64().unwrap_or(4) as usize;
    let q1 = |t: &str, c: usize| find(rows, "Q1", t, Some(c));
    let q2 = |t: &str, c: usize| find(rows, "Q2", t, Some(c));
    let w1 = |t: &str| find(rows, "W1", t, None);
    let ratios = json!({
        "q1_high_stepwise_over_postgraphile": ratio(q1("stepwise-pg", high), q1("postgraphile", high)),
        "q1_few_stepwise_over_postgraphile": ratio(q1("stepwise-pg", few), q1("postgraphile", few)),
        "q2_high_stepwise_over_postgraphile": ratio(q2("stepwise-pg", high), q2("postgraphile", high)),
        "q2_few_stepwise_over_postgraphile": ratio(q2("stepwise-pg", few), q2("postgraphile", few)),
        "q1_high_stepwise_over_raw_sql": ratio(q1("stepwise-pg", high), q1("raw-sql", high)),
        "q1_few_stepwise_over_raw_sql": ratio(q1("stepwise-pg", few), q1("raw-sql", few)),
        "w1_stepwise_over_raw_sql": ratio(w1("stepwise-pg"), w1("raw-sql")),
        "q1_high_sqlite_over_pg": ratio(q1("stepwise-sqlite", high), q1("stepwise-pg", high)),
        "w1_sqlite_over_pg": ratio(w1("stepwise-sqlite"), w1("stepwise-pg")),
    });
    let s1 = find(rows, "S1", "stepwise-pg", None);
    let check = |name: &str, value: Option<f64>, goal: &str, met: Option<bool>| json!({ "target": name, "measured": value, "goal": goal, "met": met });
    let r = |k: &str| ratios[k].as_f64();
    let s1_extra = s1.map(|s| s.extra.clone()).unwrap_or(Value::Null);
    let s1_p99 = s1_extra["latency_from_answer_ms"]["p99"].as_f64();
    let s1_missed = s1_extra["missed"].as_f64();
    let s1_rss = s1_extra["rss_per_idle_subscriber_bytes"].as_f64();
    let s1_held = s1_extra["subscribers_connected"].as_f64();
    let targets = json!([
        check(
            "Q1 @high: Stepwise/PostGraphile",
            r("q1_high_stepwise_over_postgraphile"),
            ">= 3",
            r("q1_high_stepwise_over_postgraphile").map(|v| v >= 3.0)
        ),
        check(
            "Q1 @high: Stepwise/raw SQL",
            r("q1_high_stepwise_over_raw_sql"),
            ">= 0.5",
            r("q1_high_stepwise_over_raw_sql").map(|v| v >= 0.5)
        ),
        check(
            "Q1 @few: p99 ms",
            q1("stepwise-pg", few).map(|r| r.ms(0.99)),
            "< 50",
            q1("stepwise-pg", few).map(|r| r.ms(0.99) < 50.0)
        ),
        check(
            "W1: Stepwise/raw SQL",
            r("w1_stepwise_over_raw_sql"),
            ">= 0.7",
            r("w1_stepwise_over_raw_sql").map(|v| v >= 0.7)
        ),
        check(
            "S1: subscribers held",
            s1_held,
            "= target",
            s1.map(|s| s1_held == Some(s.clients as f64))
        ),
        check(
            "S1: p99 delivery ms",
            s1_p99,
            "< 100",
            s1_p99.map(|v| v < 100.0)
        ),
        check(
            "S1: missed events",
            s1_missed,
            "= 0",
            s1_missed.map(|v| v == 0.0)
        ),
        check(
            "S1: RSS bytes per idle subscriber",
            s1_rss,
            "< 20480",
            s1_rss.map(|v| v < 20_480.0)
        ),
    ]);

    println!();
    println!("{}", header());
    for row in rows {
        println!("{}", line(row));
    }
    println!();
    println!("(srv CPU: the server process, % of one core; PG CPU: all `postgres` processes;");
    println!(" client: this load client, getrusage; busy: the whole machine, % of all cores)");
    if let Some(s1) = s1 {
        println!();
        println!("S1: {}", serde_json::to_string_pretty(&s1.extra)?);
    }
    println!();
    println!("ratios: {}", serde_json::to_string_pretty(&ratios)?);
    println!();
    for t in targets.as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!(
            "target {:<38} goal {:<8} measured {:<10} {met}",
            t["target"].as_str().unwrap_or_default(),
            t["goal"].as_str().unwrap_or_default(),
            t["measured"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    for row in rows.iter().filter(|r| r.errors > 0) {
        println!(
            "first error of {} on {}: {}",
            row.scenario,
            row.target,
            row.first_error.as_deref().unwrap_or("-")
        );
    }
    let results = json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        },
        "commit": git(&["rev-parse", "HEAD"]),
        "dirty": !git(&["status", "--porcelain"]).is_empty(),
        "options": options,
        "setup": setup,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "ratios": ratios,
        "targets": targets,
    });
    let path = out_dir().join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!();
    println!("results written to {}", path.display());
    Ok(())
}
