//! The results table, the ratios against PostGraphile and the raw-SQL ceiling, the targets
//! of issue 16, and target/bench/results.json.

use serde_json::{Value, json};

use crate::load::Row;
use crate::servers::{Result, out_dir, root};

fn opt_pct(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.0}%"))
}

fn cpu_per_request(row: &Row) -> String {
    row.server_cpu_ms_per_request()
        .map_or("-".into(), |ms| format!("{ms:.3}"))
}

fn rss(row: &Row) -> String {
    row.window
        .server_peak_rss_kib
        .map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

/// One row, as printed while the benchmark runs.
pub fn line(row: &Row) -> String {
    format!(
        "{:<32} {:<20} {:>6} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>7} {:>8} {:>9} {:>6} {:>6} {:>6}",
        row.scenario,
        row.target,
        row.clients,
        row.rate(),
        row.ms(0.50),
        row.ms(0.95),
        row.ms(0.99),
        row.errors,
        opt_pct(row.window.server_cpu_pct),
        cpu_per_request(row),
        rss(row),
        format!("{:.0}%", row.window.postgres_cpu_pct),
        format!("{:.0}%", row.window.client_cpu_pct),
        format!("{:.0}%", row.window.machine_busy_pct),
    )
}

fn header() -> String {
    format!(
        "{:<32} {:<20} {:>6} {:>9} {:>8} {:>8} {:>8} {:>6} {:>7} {:>8} {:>9} {:>6} {:>6} {:>6}",
        "scenario",
        "target",
        "client",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "srv CPU",
        "CPU ms/r",
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
    let write_counts: Vec<usize> = options["write_clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_u64().map(|c| c as usize))
        .collect();
    let q1 = |t: &str, c: usize| find(rows, "Q1", t, Some(c));
    let q2 = |t: &str, c: usize| find(rows, "Q2", t, Some(c));
    let w1 = |t: &str, c: usize| find(rows, "W1", t, Some(c));
    let mut ratios = json!({
        "q1_high_stepwise_over_postgraphile": ratio(q1("stepwise-pg", high), q1("postgraphile", high)),
        "q1_few_stepwise_over_postgraphile": ratio(q1("stepwise-pg", few), q1("postgraphile", few)),
        "q2_high_stepwise_over_postgraphile": ratio(q2("stepwise-pg", high), q2("postgraphile", high)),
        "q2_few_stepwise_over_postgraphile": ratio(q2("stepwise-pg", few), q2("postgraphile", few)),
        "q1_high_stepwise_over_raw_sql": ratio(q1("stepwise-pg", high), q1("raw-sql", high)),
        "q1_few_stepwise_over_raw_sql": ratio(q1("stepwise-pg", few), q1("raw-sql", few)),
        "q1_high_sqlite_over_pg": ratio(q1("stepwise-sqlite", high), q1("stepwise-pg", high)),
    });
    for &c in &write_counts {
        ratios[format!("w1_{c}_stepwise_over_raw_sql")] =
            json!(ratio(w1("stepwise-pg", c), w1("raw-sql", c)));
        ratios[format!("w1_{c}_nats_over_notify")] =
            json!(ratio(w1("stepwise-pg-nats", c), w1("stepwise-pg", c)));
        ratios[format!("w1_{c}_sqlite_over_pg")] =
            json!(ratio(w1("stepwise-sqlite", c), w1("stepwise-pg", c)));
    }
    let s1 = find(rows, "S1 ", "stepwise-pg", None);
    let s2 = find(rows, "S2", "stepwise-pg", None);
    let check = |name: &str, value: Option<f64>, goal: &str, met: Option<bool>| json!({ "target": name, "measured": value, "goal": goal, "met": met });
    let r = |k: &str| ratios[k].as_f64();
    let extra = |row: Option<&Row>, path: &[&str]| {
        let mut value = &row?.extra;
        for key in path {
            value = &value[*key];
        }
        value.as_f64()
    };
    let s1_p99 = extra(s1, &["latency_from_answer_ms", "p99"]);
    let s1_missed = extra(s1, &["missed"]);
    let s1_foreign = extra(s1, &["foreign_deliveries"]);
    let s1_rss = extra(s1, &["rss_per_idle_subscriber_bytes"]);
    let s1_held = extra(s1, &["subscribers_connected"]);
    let s2_p99 = extra(s2, &["latency_from_answer_ms", "p99"]);
    let first_w = write_counts.first().copied().unwrap_or(32);
    let w1_ratio = r(&format!("w1_{first_w}_stepwise_over_raw_sql"));
    // M1 against the solo rows at the same concurrency.
    let m1 = |prefix: &str| {
        rows.iter()
            .find(|row| row.scenario.starts_with(prefix) && row.target == "stepwise-pg")
    };
    let (m1_q1, m1_w1, m1_s1) = (m1("M1 Q1"), m1("M1 W1"), m1("M1 S1"));
    let p99_over = |mixed: Option<&Row>, solo: Option<&Row>| {
        let (mixed, solo) = (mixed?, solo?);
        (solo.ms(0.99) > 0.0).then(|| mixed.ms(0.99) / solo.ms(0.99))
    };
    let m1_q1_ratio = p99_over(m1_q1, m1_q1.and_then(|m| q1("stepwise-pg", m.clients)));
    let m1_w1_ratio = p99_over(m1_w1, m1_w1.and_then(|m| w1("stepwise-pg", m.clients)));
    let m1_s1_ratio = p99_over(m1_s1, s1);
    let m1_errors = (m1_s1.is_some()).then(|| {
        [m1_q1, m1_w1, m1_s1]
            .iter()
            .flatten()
            .map(|row| row.errors as f64)
            .sum::<f64>()
    });
    let m1_growth_pct = m1_s1.and_then(|row| {
        let mix = &row.extra["mix"];
        let warm = mix["server_rss_after_warmup_kib"].as_f64()?;
        let end = mix["server_rss_end_kib"].as_f64()?;
        (warm > 0.0).then(|| (end - warm) / warm * 100.0)
    });
    let at_most = |v: Option<f64>, goal: f64| v.map(|v| v <= goal);
    let at_least = |v: Option<f64>, goal: f64| v.map(|v| v >= goal);
    // The targets of issue 16 (issue 17 asks for W1 and S1 on both buses, no figures).
    let targets = json!([
        check(
            "Q1 @high: Stepwise/raw SQL",
            r("q1_high_stepwise_over_raw_sql"),
            ">= 0.85",
            at_least(r("q1_high_stepwise_over_raw_sql"), 0.85)
        ),
        check(
            "Q1 @few: p99 ms",
            q1("stepwise-pg", few).map(|r| r.ms(0.99)),
            "< 25",
            q1("stepwise-pg", few).map(|r| r.ms(0.99) < 25.0)
        ),
        check(
            &format!("W1 @{first_w}: Stepwise/raw SQL"),
            w1_ratio,
            ">= 0.85",
            at_least(w1_ratio, 0.85)
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
            "S1: cross-tenant deliveries",
            s1_foreign,
            "= 0",
            s1_foreign.map(|v| v == 0.0)
        ),
        check(
            "S1: RSS bytes per idle subscriber",
            s1_rss,
            "<= 12288",
            at_most(s1_rss, 12_288.0)
        ),
        check(
            "S2: p99 delivery ms",
            s2_p99,
            "< 250",
            s2_p99.map(|v| v < 250.0)
        ),
        check("M1: errors", m1_errors, "= 0", m1_errors.map(|v| v == 0.0)),
        check(
            "M1: Q1 p99 / solo Q1 p99",
            m1_q1_ratio,
            "<= 2",
            at_most(m1_q1_ratio, 2.0)
        ),
        check(
            "M1: W1 p99 / solo W1 p99",
            m1_w1_ratio,
            "<= 2",
            at_most(m1_w1_ratio, 2.0)
        ),
        check(
            "M1: S1 p99 / solo S1 p99",
            m1_s1_ratio,
            "<= 2",
            at_most(m1_s1_ratio, 2.0)
        ),
        check(
            "M1: RSS growth after warm-up %",
            m1_growth_pct,
            "<= 5 (flat)",
            at_most(m1_growth_pct, 5.0)
        ),
        check(
            "SQLite Q1 @high / PostgreSQL",
            r("q1_high_sqlite_over_pg"),
            ">= 0.8",
            at_least(r("q1_high_sqlite_over_pg"), 0.8)
        ),
    ]);

    println!();
    println!("{}", header());
    for row in rows {
        println!("{}", line(row));
    }
    println!();
    println!("(srv CPU: the server process(es), % of one core; CPU ms/r: server CPU time per");
    println!(
        " request, per delivery for fan-out rows, '-' where scenarios shared the window (M1);"
    );
    println!(" PG CPU: all `postgres` processes; client: this load client, getrusage; busy: the");
    println!(" whole machine, % of all cores)");
    for row in rows.iter().filter(|r| r.extra.get("deliveries").is_some()) {
        println!();
        println!(
            "{} on {}: {}",
            row.scenario,
            row.target,
            serde_json::to_string_pretty(&row.extra)?
        );
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
            "target {:<38} goal {:<11} measured {:<10} {met}",
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
