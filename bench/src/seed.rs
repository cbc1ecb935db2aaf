//! The data set: per company, workflows of 10–30 steps, one screenshot per step, finished
//! runs and their health logs. Written as multi-row INSERTs that both PostgreSQL and
//! SQLite accept, so both backends get the same rows.

use std::fmt::Write;

/// A company created through `signup`, with its admin's token.
#[derive(Debug, Clone)]
pub struct Company {
    pub id: String,
    pub user_id: String,
    pub token: String,
}

#[derive(Debug, Clone, Default)]
pub struct SeededWorkflow {
    pub id: String,
    pub step_ids: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Per company (same order as the companies given), its workflows.
    pub workflows: Vec<Vec<SeededWorkflow>>,
    pub steps: usize,
    pub runs: usize,
    pub health_logs: usize,
    pub sql_bytes: usize,
}

pub struct Sizes {
    pub workflows: usize,
    pub health_logs: usize,
}

/// A small deterministic generator (xorshift64*), so every run seeds the same shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ids shaped like the server's UUIDv7 strings, unique across tables.
struct Ids(u64);

impl Ids {
    fn next(&mut self, millis: u64) -> String {
        self.0 += 1;
        let n = self.0;
        format!(
            "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
            (millis >> 16) as u32,
            (millis & 0xffff) as u16,
            (n >> 48) & 0xfff,
            (n >> 36) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }
}

/// `2026-10-01 08:00:00` plus `seconds`, as a SQL timestamp literal.
fn ts(seconds: u64) -> String {
    let day = seconds / 86_400;
    let rem = seconds % 86_400;
    // October has 31 days; the data set spans less than 60 days.
    let (month, dom) = if day < 31 {
        (10, day + 1)
    } else {
        (11, day - 30)
    };
    format!(
        "'2026-{month:02}-{dom:02} {:02}:{:02}:{:02}.{:06}'",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        (seconds * 7919) % 1_000_000
    )
}

const ACTIONS: [&str; 5] = ["click", "type", "navigate", "select", "click"];
const VERBS: [&str; 6] = [
    "Submit",
    "Approve",
    "Export",
    "Create",
    "Reconcile",
    "Archive",
];
const OBJECTS: [&str; 6] = [
    "invoice",
    "expense report",
    "lead",
    "ticket",
    "order",
    "timesheet",
];
const LOG_STATUSES: [&str; 10] = [
    "success",
    "success",
    "success",
    "success",
    "success",
    "success",
    "success",
    "failed",
    "healed_deterministic",
    "healed_ai",
];

/// Accumulates rows into `INSERT ... VALUES` statements of at most 500 rows.
struct Inserts<'a> {
    out: &'a mut String,
    head: String,
    rows: usize,
}

impl<'a> Inserts<'a> {
    fn new(out: &'a mut String, table: &str, columns: &str) -> Self {
        Self {
            out,
            head: format!("INSERT INTO {table} ({columns}) VALUES\n"),
            rows: 0,
        }
    }
    fn row(&mut self, values: &str) {
        if self.rows == 500 {
            self.out.push_str(";\n");
            self.rows = 0;
        }
        if self.rows == 0 {
            self.out.push_str(&self.head);
        } else {
            self.out.push_str(",\n");
        }
        self.out.push('(');
        self.out.push_str(values);
        self.out.push(')');
        self.rows += 1;
    }
    fn finish(self) {
        if self.rows > 0 {
            self.out.push_str(";\n");
        }
    }
}

/// The seed script for `companies` and what it contains.
pub fn script(companies: &[Company], sizes: &Sizes) -> (String, Seeded) {
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut ids = Ids(0);
    let mut seeded = Seeded {
        workflows: vec![Vec::new(); companies.len()],
        ..Default::default()
    };
    let mut workflows_sql = String::new();
    let mut screenshots_sql = String::new();
    let mut steps_sql = String::new();
    let mut runs_sql = String::new();
    let mut logs_sql = String::new();
    let mut wf = Inserts::new(
        &mut workflows_sql,
        "workflows",
        "id, company_id, created_by, name, description, status, success_rate, total_uses, \
         consecutive_failures, last_success_at, last_failure_at, tags, created_at, updated_at",
    );
    let mut shots = Inserts::new(
        &mut screenshots_sql,
        "screenshots",
        "id, company_id, workflow_id, hash, storage_key, content_type, size_bytes, width, height, created_at",
    );
    let mut steps = Inserts::new(
        &mut steps_sql,
        "steps",
        "id, company_id, workflow_id, step_number, action_type, selectors, element_meta, \
         page_context, action_data, dom_context, screenshot_id, field_label, instruction, \
         ai_confidence, ai_model, label_edited, instruction_edited, created_at, updated_at",
    );
    let mut runs = Inserts::new(
        &mut runs_sql,
        "runs",
        "id, company_id, workflow_id, started_by, status, steps_total, steps_completed, \
         steps_failed, steps_healed, started_at, finished_at, created_at, updated_at",
    );
    let mut logs = Inserts::new(
        &mut logs_sql,
        "health_logs",
        "id, company_id, workflow_id, run_id, step_id, status, error_type, error_message, \
         healing_confidence, deterministic_score, ai_score, page_url, execution_time_ms, created_at",
    );
    let n_workflows = sizes.workflows;
    // Health logs are spread evenly: each workflow gets its share, in runs of its step count.
    let logs_per_workflow = sizes.health_logs.div_ceil(n_workflows.max(1));
    let mut logs_left = sizes.health_logs;
    for w in 0..n_workflows {
        let c = w % companies.len();
        let company = &companies[c];
        let created = (w as u64) * 3_600;
        let wid = ids.next(created * 1000);
        let verb = VERBS[w % VERBS.len()];
        let object = OBJECTS[(w / VERBS.len()) % OBJECTS.len()];
        wf.row(&format!(
            "'{wid}', '{cid}', '{uid}', '{verb} {object} #{w}', 'Recorded walkthrough: {verb} an {object} in the back office, step by step.', 'active', {:.3}, {}, 0, {}, NULL, '[\"finance\",\"daily\"]', {t}, {t}",
            0.8 + rng.unit() * 0.2,
            10 + rng.below(200),
            ts(created + 1_800),
            cid = company.id,
            uid = company.user_id,
            t = ts(created),
        ));
        let n_steps = 10 + rng.below(21) as usize;
        let mut step_ids = Vec::with_capacity(n_steps);
        for s in 1..=n_steps {
            let at = created + s as u64;
            let shot = ids.next(at * 1000);
            let hash = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                ids.0
            );
            shots.row(&format!(
                "'{shot}', '{cid}', '{wid}', '{hash}', 'screenshots/{cid}/{hash}.png', 'image/png', {}, 1280, 800, {}",
                40_000 + rng.below(200_000),
                ts(at),
                cid = company.id,
            ));
            let sid = ids.next(at * 1000);
            let action = ACTIONS[(w + s) % ACTIONS.len()];
            let field = format!("Field {s}");
            steps.row(&format!(
                "'{sid}', '{cid}', '{wid}', {s}, '{action}', \
                 '{{\"css\":\"#app form > div:nth-child({s}) input[name=field{s}]\",\"xpath\":\"/html/body/div[1]/main/form/div[{s}]/input\",\"text\":\"{field}\",\"testId\":\"field-{s}\",\"aria\":\"{field}\"}}', \
                 '{{\"tag\":\"input\",\"type\":\"text\",\"id\":\"field{s}\",\"classes\":[\"form-control\",\"input-lg\"],\"rect\":{{\"x\":320,\"y\":{y},\"width\":480,\"height\":36}}}}', \
                 '{{\"url\":\"https://app.example.com/{object}/new\",\"title\":\"New {object}\",\"viewport\":{{\"width\":1440,\"height\":900}}}}', \
                 '{{\"value\":\"sample value {s}\",\"delayMs\":120}}', \
                 '{{\"parent\":\"<div class=form-group><label for=field{s}>{field}</label><input id=field{s} name=field{s} class=form-control></div>\",\"siblings\":2,\"depth\":7}}', \
                 '{shot}', '{field}', '{verb}: fill in {field} of the {object} form', 0.92, 'gpt-4o-mini', FALSE, FALSE, {t}, {t}",
                cid = company.id,
                y = 120 + 48 * s,
                t = ts(at),
            ));
            step_ids.push(sid);
        }
        seeded.steps += n_steps;
        // Finished runs, each reporting every step, until this workflow's logs are spent.
        let mut budget = logs_per_workflow.min(logs_left);
        logs_left -= budget;
        let mut r = 0u64;
        while budget > 0 {
            let started = created + 86_400 + r * 7_200;
            let rid = ids.next(started * 1000);
            let reported = n_steps.min(budget);
            budget -= reported;
            let mut failed = 0;
            let mut healed = 0;
            for (k, step_id) in step_ids.iter().take(reported).enumerate() {
                let at = started + 2 * k as u64;
                let status = LOG_STATUSES[rng.below(LOG_STATUSES.len() as u64) as usize];
                let (error, confidence) = match status {
                    "failed" => {
                        failed += 1;
                        (
                            "'element_not_found', 'No element matched the recorded selectors'",
                            "NULL, NULL, NULL",
                        )
                    }
                    "success" => ("NULL, NULL", "NULL, NULL, NULL"),
                    _ => {
                        healed += 1;
                        ("NULL, NULL", "0.86, 0.81, 0.9")
                    }
                };
                let lid = ids.next(at * 1000);
                logs.row(&format!(
                    "'{lid}', '{cid}', '{wid}', '{rid}', '{step_id}', '{status}', {error}, {confidence}, 'https://app.example.com/{object}/new', {}, {}",
                    150 + rng.below(3_000),
                    ts(at),
                    cid = company.id,
                ));
            }
            seeded.health_logs += reported;
            let status = if failed > 0 { "failed" } else { "succeeded" };
            runs.row(&format!(
                "'{rid}', '{cid}', '{wid}', '{uid}', '{status}', {n_steps}, {}, {failed}, {healed}, {}, {}, {}, {}",
                reported - failed,
                ts(started),
                ts(started + 2 * reported as u64),
                ts(started),
                ts(started + 2 * reported as u64),
                cid = company.id,
                uid = company.user_id,
            ));
            seeded.runs += 1;
            r += 1;
        }
        seeded.workflows[c].push(SeededWorkflow { id: wid, step_ids });
    }
    wf.finish();
    shots.finish();
    steps.finish();
    runs.finish();
    logs.finish();
    let mut script = String::new();
    let _ = writeln!(script, "BEGIN;");
    for part in [
        workflows_sql,
        screenshots_sql,
        steps_sql,
        runs_sql,
        logs_sql,
    ] {
        script.push_str(&part);
    }
    let _ = writeln!(script, "COMMIT;");
    seeded.sql_bytes = script.len();
    (script, seeded)
}
