//! The list filters a frontend needs, each paged in both directions: `runs` (status,
//! workflow, project, started by, start window, newest or oldest first; the older
//! `workflowId` and `status` arguments still work), `notifications` (unread, severity, workflow, backward
//! paging), `healthLogs` (step, at the root and under a workflow), `members` (paging and
//! search) and `workflows(filter: { tags, tagsMatch })`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use chrono::{NaiveDateTime, TimeDelta};
use common::fixtures::{Team, create_workflow, edge_ids, ok, step_ids, team};
use common::history::{SeedLog, SeedNote, SeedRun, base_plus, insert_all};
use common::lifecycle::{create_project, set_visibility, share, try_move_workflow};
use common::runs::assert_bad_input;
use common::{Backend, PASSWORD, TestServer, str_field};
use serde_json::{Value, json};

const CONNECTION: &str = "totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } \
     edges { cursor node { id } }";

/// Pages through the connection at `path` (e.g. `/runs`) of `query` `size` rows at a time,
/// forward (`first`/`after`) or backward (`last`/`before`), checking every page, and
/// answers the ids in list order and the total count.
async fn walk(
    server: &TestServer,
    token: &str,
    query: &str,
    path: &str,
    vars: &Value,
    forward: bool,
    size: i64,
) -> (Vec<String>, i64) {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    for round in 0.. {
        assert!(round < 200, "paging {vars} never ended");
        let mut vars = vars.clone();
        let paging = if forward {
            json!({ "first": size, "after": cursor })
        } else {
            json!({ "last": size, "before": cursor })
        };
        for (k, v) in paging.as_object().unwrap() {
            vars[k] = v.clone();
        }
        let data = ok(server, token, query, vars.clone()).await;
        let conn = data
            .pointer(path)
            .unwrap_or_else(|| panic!("{path} in {data:#}"));
        let ids = edge_ids(conn);
        let count = conn["totalCount"].as_i64().unwrap();
        assert_eq!(
            *total.get_or_insert(count),
            count,
            "totalCount moved ({vars})"
        );
        assert!(
            ids.len() as i64 <= size,
            "page too large ({vars}): {conn:#}"
        );
        let info = &conn["pageInfo"];
        let more = if forward {
            info["hasNextPage"].as_bool().unwrap()
        } else {
            info["hasPreviousPage"].as_bool().unwrap()
        };
        if more {
            assert_eq!(
                ids.len() as i64,
                size,
                "only the last page may be short ({vars})"
            );
        }
        if round > 0 {
            let other_side = if forward {
                info["hasPreviousPage"].as_bool().unwrap()
            } else {
                info["hasNextPage"].as_bool().unwrap()
            };
            assert!(
                other_side,
                "a page after a cursor has rows behind it ({vars})"
            );
        }
        cursor = if forward {
            info["endCursor"].as_str()
        } else {
            info["startCursor"].as_str()
        }
        .map(str::to_owned);
        pages.push(ids);
        if !more {
            break;
        }
    }
    if !forward {
        pages.reverse();
    }
    (pages.concat(), total.unwrap_or(0))
}

/// Walks the list both ways with a few page sizes; every walk must give `expected`.
async fn check_list(
    server: &TestServer,
    token: &str,
    query: &str,
    path: &str,
    vars: Value,
    expected: &[String],
    context: &str,
) {
    for size in [1, 3, 100] {
        for forward in [true, false] {
            let (ids, total) = walk(server, token, query, path, &vars, forward, size).await;
            assert_eq!(
                ids,
                expected,
                "{context} (size {size}, {}): wrong rows or order",
                if forward { "forward" } else { "backward" }
            );
            assert_eq!(total, expected.len() as i64, "{context}: totalCount");
        }
    }
}

fn sorted_ids<T>(
    rows: &[&T],
    key: impl Fn(&T) -> (NaiveDateTime, String),
    newest: bool,
) -> Vec<String> {
    let mut keyed: Vec<(NaiveDateTime, String)> = rows.iter().map(|r| key(r)).collect();
    keyed.sort();
    if newest {
        keyed.reverse();
    }
    keyed.into_iter().map(|(_, id)| id).collect()
}

// ---------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------

const RUNS: &str = "query($filter: RunFilter, $order: RunOrder!, $workflowId: ID, $status: [RunStatus!], \
     $first: Int, $after: String, $last: Int, $before: String) { \
     runs(filter: $filter, order: $order, workflowId: $workflowId, status: $status, \
          first: $first, after: $after, last: $last, before: $before) { ";

fn runs_query() -> String {
    format!("{RUNS}{CONNECTION} }} }}")
}

struct RunWorld {
    team: Team,
    workflows: Vec<String>,
    runs: Vec<SeedRun>,
}

async fn run_world(server: &TestServer) -> RunWorld {
    let team = team(server, "Acme").await;
    let mut workflows = Vec::new();
    for name in ["Invoices", "Payroll"] {
        let wf = create_workflow(server, &team.admin_token, json!({ "name": name })).await;
        workflows.push(str_field(&wf, "id"));
    }
    let statuses = [
        "succeeded",
        "failed",
        "running",
        "queued",
        "paused",
        "cancelled",
        "timed_out",
    ];
    let starters = [
        Some(team.admin_id.clone()),
        Some(team.member_id.clone()),
        None,
    ];
    let mut runs = Vec::new();
    for i in 0..24i64 {
        // Three runs share each creation time: ties are broken by id.
        let created = base_plus(3_600 * 24 * 40 + (i / 3) * 60);
        let mut run = SeedRun::new(
            &team.company_id,
            &workflows[usize::try_from(i % 2).unwrap()],
            statuses[usize::try_from(i % 7).unwrap()],
            created,
            1_000,
        );
        // Started a little after being requested, at distinct times.
        run.started_at = run.started_at.map(|_| created + TimeDelta::seconds(i));
        run.started_by = starters[usize::try_from(i % 3).unwrap()].clone();
        runs.push(run);
    }
    let statements: Vec<String> = runs.iter().map(SeedRun::sql).collect();
    insert_all(server, &statements).await;
    RunWorld {
        team,
        workflows,
        runs,
    }
}

both_backends!(runs_filter_and_page_in_both_orders);
async fn runs_filter_and_page_in_both_orders(backend: Backend) {
    let server = TestServer::start(backend).await;
    let world = run_world(&server).await;
    let token = &world.team.member_token;
    let query = runs_query();
    let window = (
        world.runs[5].started_at.unwrap(),
        world.runs[16].started_at.unwrap(),
    );
    type Check = Box<dyn Fn(&SeedRun) -> bool>;
    let (admin, wf0) = (world.team.admin_id.clone(), world.workflows[0].clone());
    let cases: Vec<(&str, Value, Check)> = vec![
        ("no filter", json!(null), Box::new(|_| true)),
        (
            "status",
            json!({ "status": ["SUCCEEDED", "QUEUED", "TIMED_OUT"] }),
            Box::new(|r| matches!(r.status, "succeeded" | "queued" | "timed_out")),
        ),
        (
            "workflow",
            json!({ "workflowId": wf0 }),
            Box::new({
                let wf0 = wf0.clone();
                move |r| r.workflow_id == wf0
            }),
        ),
        (
            "started by",
            json!({ "startedBy": admin }),
            Box::new({
                let admin = admin.clone();
                move |r| r.started_by.as_deref() == Some(admin.as_str())
            }),
        ),
        (
            "started in a window",
            json!({ "startedAfter": iso(window.0), "startedBefore": iso(window.1) }),
            Box::new(move |r| r.started_at.is_some_and(|s| s >= window.0 && s < window.1)),
        ),
        (
            "started after",
            json!({ "startedAfter": iso(window.1) }),
            Box::new(move |r| r.started_at.is_some_and(|s| s >= window.1)),
        ),
        (
            "everything at once",
            json!({ "workflowId": wf0, "startedBy": admin, "status": ["SUCCEEDED", "CANCELLED", "PAUSED", "FAILED"],
                    "startedBefore": iso(window.1) }),
            Box::new({
                let (wf0, admin) = (wf0.clone(), admin.clone());
                move |r| {
                    r.workflow_id == wf0
                        && r.started_by.as_deref() == Some(admin.as_str())
                        && matches!(r.status, "succeeded" | "cancelled" | "paused" | "failed")
                        && r.started_at.is_some_and(|s| s < window.1)
                }
            }),
        ),
    ];
    for (what, filter, matches) in &cases {
        let rows: Vec<&SeedRun> = world.runs.iter().filter(|r| matches(r)).collect();
        assert!(!rows.is_empty(), "{what}: the case selects something");
        for (order, newest) in [("NEWEST", true), ("OLDEST", false)] {
            let expected = sorted_ids(&rows, |r| (r.created_at, r.id.clone()), newest);
            check_list(
                &server,
                token,
                &query,
                "/runs",
                json!({ "filter": filter, "order": order }),
                &expected,
                &format!("runs {what} {order}"),
            )
            .await;
        }
    }
    // The older arguments mean the same as the filter's fields, newest first by default.
    let rows: Vec<&SeedRun> = world
        .runs
        .iter()
        .filter(|r| r.workflow_id == world.workflows[1] && r.status == "running")
        .collect();
    let expected = sorted_ids(&rows, |r| (r.created_at, r.id.clone()), true);
    let data = ok(
        &server,
        token,
        &format!("query($w: ID) {{ runs(workflowId: $w, status: [RUNNING], first: 100) {{ {CONNECTION} }} }}"),
        json!({ "w": world.workflows[1] }),
    )
    .await;
    assert_eq!(edge_ids(&data["runs"]), expected);

    // Refusals.
    for (vars, field, needle) in [
        (
            json!({ "order": "NEWEST", "workflowId": wf0, "filter": { "workflowId": wf0 } }),
            "filter.workflowId",
            "not both",
        ),
        (
            json!({ "order": "NEWEST", "status": ["RUNNING"], "filter": { "status": [] } }),
            "filter.status",
            "not both",
        ),
        (
            json!({ "order": "NEWEST", "filter": { "startedAfter": iso(window.1), "startedBefore": iso(window.0) } }),
            "filter.startedBefore",
            "must not be before",
        ),
        (
            json!({ "order": "OLDEST", "filter": { "status": vec!["RUNNING"; 33] } }),
            "filter.status",
            "at most 32",
        ),
    ] {
        let resp = server.gql(&query, vars.clone(), Some(token)).await;
        assert_bad_input(&resp, Some(field), needle, &vars.to_string());
    }
    // A cursor of one order is refused by the other.
    let newest = ok(
        &server,
        token,
        &query,
        json!({ "order": "NEWEST", "first": 2 }),
    )
    .await;
    let cursor = newest["runs"]["pageInfo"]["endCursor"].clone();
    let resp = server
        .gql(
            &query,
            json!({ "order": "OLDEST", "first": 2, "after": cursor }),
            Some(token),
        )
        .await;
    assert_bad_input(
        &resp,
        Some("after"),
        "different list or ordering",
        "a NEWEST cursor with OLDEST",
    );
}

both_backends!(runs_filter_by_project);
async fn runs_filter_by_project(backend: Backend) {
    let server = TestServer::start(backend).await;
    let world = run_world(&server).await;
    let acme = &world.team;
    let project = create_project(&server, &acme.admin_token, "Finance").await;
    let empty_project = create_project(&server, &acme.admin_token, "Empty").await;
    let moved = try_move_workflow(
        &server,
        &acme.admin_token,
        &world.workflows[0],
        Some(&project),
    )
    .await;
    assert!(moved["errors"].is_null(), "{moved:#}");
    // A RESTRICTED workflow of the project, with runs the member may not see.
    let secret = create_workflow(
        &server,
        &acme.admin_token,
        json!({ "name": "Secret payouts", "projectId": project }),
    )
    .await;
    let secret = str_field(&secret, "id");
    set_visibility(&server, &acme.admin_token, &secret, "RESTRICTED").await;
    // Another company's project holding a workflow with runs.
    let globex = team(&server, "Globex").await;
    let foreign_project = create_project(&server, &globex.admin_token, "Finance").await;
    let foreign = create_workflow(
        &server,
        &globex.admin_token,
        json!({ "name": "Their invoices", "projectId": foreign_project }),
    )
    .await;
    let foreign = str_field(&foreign, "id");
    let mut extra = Vec::new();
    for i in 0..4i64 {
        let at = base_plus(3_600 * 24 * 50 + i * 60);
        extra.push(SeedRun::new(
            &acme.company_id,
            &secret,
            "succeeded",
            at,
            500,
        ));
        extra.push(SeedRun::new(
            &globex.company_id,
            &foreign,
            "failed",
            at,
            500,
        ));
    }
    insert_all(&server, &extra.iter().map(SeedRun::sql).collect::<Vec<_>>()).await;

    let query = runs_query();
    let of = |workflows: &[&str], statuses: &[&str]| -> Vec<String> {
        let rows: Vec<&SeedRun> = world
            .runs
            .iter()
            .chain(&extra)
            .filter(|r| workflows.contains(&r.workflow_id.as_str()))
            .filter(|r| statuses.is_empty() || statuses.contains(&r.status))
            .collect();
        sorted_ids(&rows, |r| (r.created_at, r.id.clone()), true)
    };
    let wf0 = world.workflows[0].as_str();
    let unknown = common::fixtures::new_id();
    let cases: Vec<(&str, &str, Value, Vec<String>)> = vec![
        (
            "member: the project's runs, not the restricted workflow's",
            &acme.member_token,
            json!({ "projectId": project }),
            of(&[wf0], &[]),
        ),
        (
            "admin: every workflow of the project",
            &acme.admin_token,
            json!({ "projectId": project }),
            of(&[wf0, &secret], &[]),
        ),
        (
            "with a status",
            &acme.admin_token,
            json!({ "projectId": project, "status": ["SUCCEEDED"] }),
            of(&[wf0, &secret], &["succeeded"]),
        ),
        (
            "with a workflow outside the project",
            &acme.admin_token,
            json!({ "projectId": project, "workflowId": world.workflows[1] }),
            vec![],
        ),
        (
            "a project without workflows",
            &acme.admin_token,
            json!({ "projectId": empty_project }),
            vec![],
        ),
        (
            "another company's project",
            &acme.admin_token,
            json!({ "projectId": foreign_project }),
            vec![],
        ),
        (
            "the other company asking for ours",
            &globex.admin_token,
            json!({ "projectId": project }),
            vec![],
        ),
        (
            "an unknown project",
            &acme.admin_token,
            json!({ "projectId": unknown }),
            vec![],
        ),
        (
            "the other company's own project",
            &globex.member_token,
            json!({ "projectId": foreign_project }),
            of(&[&foreign], &[]),
        ),
    ];
    for (what, token, filter, expected) in &cases {
        check_list(
            &server,
            token,
            &query,
            "/runs",
            json!({ "filter": filter, "order": "NEWEST" }),
            expected,
            &format!("runs by project: {what}"),
        )
        .await;
    }
    // Shared with the member, the restricted workflow's runs join the member's list.
    share(&server, &acme.admin_token, &secret, &acme.member_id, "VIEW").await;
    check_list(
        &server,
        &acme.member_token,
        &query,
        "/runs",
        json!({ "filter": { "projectId": project }, "order": "OLDEST" }),
        &of(&[wf0, &secret], &[])
            .into_iter()
            .rev()
            .collect::<Vec<_>>(),
        "runs by project: shared with the member",
    )
    .await;
    // The project a workflow is in now decides, not where it was when it ran.
    let moved = try_move_workflow(&server, &acme.admin_token, wf0, None).await;
    assert!(moved["errors"].is_null(), "{moved:#}");
    check_list(
        &server,
        &acme.member_token,
        &query,
        "/runs",
        json!({ "filter": { "projectId": project }, "order": "NEWEST" }),
        &of(&[&secret], &[]),
        "runs by project: after moving a workflow out",
    )
    .await;
}

fn iso(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------------------
// notifications and health logs
// ---------------------------------------------------------------------------

const NOTES: &str = "query($u: Boolean, $s: NotificationSeverity, $w: ID, $first: Int, $after: String, \
     $last: Int, $before: String) { notifications(unreadOnly: $u, severity: $s, workflowId: $w, \
     first: $first, after: $after, last: $last, before: $before) { ";

both_backends!(notifications_filter_by_workflow_and_page_backward);
async fn notifications_filter_by_workflow_and_page_backward(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let mut workflows = Vec::new();
    for name in ["Invoices", "Payroll"] {
        let wf = create_workflow(&server, &acme.admin_token, json!({ "name": name })).await;
        workflows.push(str_field(&wf, "id"));
    }
    let severities = ["info", "warning", "error"];
    let mut notes = Vec::new();
    for i in 0..20i64 {
        let workflow = match i % 3 {
            0 => None,
            n => Some(workflows[usize::try_from(n - 1).unwrap()].as_str()),
        };
        // Pairs share a creation time: ties are broken by id.
        let mut note = SeedNote::new(&acme.company_id, workflow, base_plus((i / 2) * 60));
        note.severity = severities[usize::try_from(i % 5 % 3).unwrap()];
        note.read = i % 4 == 0;
        notes.push(note);
    }
    insert_all(
        &server,
        &notes.iter().map(SeedNote::sql).collect::<Vec<_>>(),
    )
    .await;
    let query = format!("{NOTES}{CONNECTION} }} }}");
    for (what, vars) in [
        ("all", json!({})),
        ("workflow", json!({ "w": workflows[0] })),
        ("workflow, unread", json!({ "w": workflows[1], "u": true })),
        (
            "workflow, error",
            json!({ "w": workflows[1], "s": "ERROR" }),
        ),
        ("unread warnings", json!({ "u": true, "s": "WARNING" })),
    ] {
        let rows: Vec<&SeedNote> = notes
            .iter()
            .filter(|n| {
                vars["w"]
                    .as_str()
                    .is_none_or(|w| n.workflow_id.as_deref() == Some(w))
            })
            .filter(|n| vars["u"] != true || !n.read)
            .filter(|n| {
                vars["s"]
                    .as_str()
                    .is_none_or(|s| n.severity == s.to_lowercase())
            })
            .collect();
        assert!(!rows.is_empty(), "{what}");
        let expected = sorted_ids(&rows, |n| (n.created_at, n.id.clone()), true);
        check_list(
            &server,
            &acme.member_token,
            &query,
            "/notifications",
            vars,
            &expected,
            &format!("notifications {what}"),
        )
        .await;
    }
}

both_backends!(health_logs_filter_by_step_at_the_root_and_under_a_workflow);
async fn health_logs_filter_by_step_at_the_root_and_under_a_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = create_workflow(
        &server,
        &acme.admin_token,
        json!({ "name": "Invoices", "status": "ACTIVE", "steps": common::fixtures::step_inputs("s", 3) }),
    )
    .await;
    let (workflow, steps) = (str_field(&wf, "id"), step_ids(&wf));
    let run = SeedRun::new(&acme.company_id, &workflow, "succeeded", base_plus(0), 100);
    let mut logs = Vec::new();
    for i in 0..17i64 {
        let status = ["success", "failed", "healed_ai"][usize::try_from(i % 3).unwrap()];
        let mut log = SeedLog::new(&run, status, base_plus(10 + i / 2));
        log.step_id = Some(steps[usize::try_from(i % 4 % 3).unwrap()].clone());
        logs.push(log);
    }
    let mut statements = vec![run.sql()];
    statements.extend(logs.iter().map(SeedLog::sql));
    insert_all(&server, &statements).await;
    let root = format!(
        "query($f: HealthLogFilter, $first: Int, $after: String, $last: Int, $before: String) {{ \
           healthLogs(filter: $f, first: $first, after: $after, last: $last, before: $before) {{ {CONNECTION} }} }}"
    );
    let nested = format!(
        "query($id: ID!, $f: HealthLogFilter, $first: Int, $after: String, $last: Int, $before: String) {{ \
           workflow(id: $id) {{ healthLogs(filter: $f, first: $first, after: $after, last: $last, before: $before) {{ {CONNECTION} }} }} }}"
    );
    for step in &steps {
        for (what, filter, statuses) in [
            (
                "step",
                json!({ "stepId": step }),
                vec!["success", "failed", "healed_ai"],
            ),
            (
                "step and status",
                json!({ "stepId": step, "status": ["FAILED"] }),
                vec!["failed"],
            ),
        ] {
            let rows: Vec<&SeedLog> = logs
                .iter()
                .filter(|l| {
                    l.step_id.as_deref() == Some(step.as_str()) && statuses.contains(&l.status)
                })
                .collect();
            let expected = sorted_ids(&rows, |l| (l.created_at, l.id.clone()), true);
            check_list(
                &server,
                &acme.member_token,
                &root,
                "/healthLogs",
                json!({ "f": filter }),
                &expected,
                &format!("healthLogs {what}"),
            )
            .await;
            check_list(
                &server,
                &acme.member_token,
                &nested,
                "/workflow/healthLogs",
                json!({ "id": workflow, "f": filter }),
                &expected,
                &format!("Workflow.healthLogs {what}"),
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------
// members
// ---------------------------------------------------------------------------

const MEMBERS: &str = "query($search: String, $first: Int, $after: String, $last: Int, $before: String) { \
     members(search: $search, first: $first, after: $after, last: $last, before: $before) { ";

both_backends!(members_page_and_search_by_name_or_email);
async fn members_page_and_search_by_name_or_email(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let invite = server.invite_token(&acme.admin_token).await;
    let mut joined = vec![acme.admin_id.clone(), acme.member_id.clone()];
    for (name, email) in [
        ("Émile Zola", "ezola@acme.test"),
        ("Zoë Ångström", "zoe@acme.test"),
        ("Percent 100% Guy", "percent@acme.test"),
        ("under_score", "under@acme.test"),
        ("Bob", "bob@acme.test"),
    ] {
        let (_, payload) = server.join_company(&invite, name, email, PASSWORD).await;
        joined.push(str_field(&payload["user"], "id"));
    }
    // Another company's member with a matching name never shows.
    let globex = team(&server, "Globex").await;
    let g_invite = server.invite_token(&globex.admin_token).await;
    server
        .join_company(&g_invite, "Émile Other", "emile@globex.test", PASSWORD)
        .await;

    let query = format!("{MEMBERS}{CONNECTION} }} }}");
    let token = &acme.member_token;
    let pick = |positions: &[usize]| -> Vec<String> {
        positions.iter().map(|p| joined[*p].clone()).collect()
    };
    for (search, expected) in [
        (json!(null), pick(&[0, 1, 2, 3, 4, 5, 6])),
        (json!("   "), pick(&[0, 1, 2, 3, 4, 5, 6])),
        (json!("@acme.test"), pick(&[0, 1, 2, 3, 4, 5, 6])),
        (json!("émile"), pick(&[2])),
        (json!("ÉMILE"), pick(&[2])),
        (json!("ångström"), pick(&[3])),
        (json!("zo"), pick(&[2, 3])),
        (json!("100%"), pick(&[4])),
        (json!("_"), pick(&[5])),
        (json!("BOB@"), pick(&[6])),
        (json!("nobody"), pick(&[])),
    ] {
        check_list(
            &server,
            token,
            &query,
            "/members",
            json!({ "search": search }),
            &expected,
            &format!("members search {search}"),
        )
        .await;
    }
    let resp = server
        .gql(
            &query,
            json!({ "search": "x".repeat(201), "first": 1 }),
            Some(token),
        )
        .await;
    assert_bad_input(&resp, Some("search"), "at most 200", "an overlong search");
    // A renamed member is found by the new name, no longer by the old one.
    ok(
        &server,
        &acme.admin_token,
        "mutation { updateProfile(name: \"Ünal Admin\") { id } }",
        json!({}),
    )
    .await;
    for (search, expected) in [(json!("ünal"), pick(&[0])), (json!("ÜNAL"), pick(&[0]))] {
        check_list(
            &server,
            token,
            &query,
            "/members",
            json!({ "search": search }),
            &expected,
            &format!("members search {search} after a rename"),
        )
        .await;
    }
    // `users` still lists everyone at once.
    let data = ok(&server, token, "{ users { id } }", json!({})).await;
    let users: BTreeSet<String> = data["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| str_field(u, "id"))
        .collect();
    assert_eq!(users, joined.iter().cloned().collect());
}

// ---------------------------------------------------------------------------
// workflows by tags
// ---------------------------------------------------------------------------

both_backends!(workflows_filter_by_any_or_all_tags);
async fn workflows_filter_by_any_or_all_tags(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let tag_sets: [&[&str]; 8] = [
        &["red", "blue"],
        &["red"],
        &["blue", "green"],
        &["green"],
        &[],
        &["50%_off"],
        &["50x_off", "red-ish"],
        &["RED", "Blue", "green"],
    ];
    let mut ids = Vec::new();
    for (n, tags) in tag_sets.iter().enumerate() {
        let wf = create_workflow(
            &server,
            &acme.admin_token,
            json!({ "name": format!("W{n}"), "tags": tags }),
        )
        .await;
        ids.push(str_field(&wf, "id"));
    }
    let query = format!(
        "query($filter: WorkflowFilter, $first: Int, $after: String, $last: Int, $before: String) {{ \
           workflows(filter: $filter, orderBy: {{ field: CREATED_AT, direction: ASC }}, \
                     first: $first, after: $after, last: $last, before: $before) {{ {CONNECTION} }} }}"
    );
    let pick = |positions: &[usize]| -> Vec<String> {
        positions.iter().map(|p| ids[*p].clone()).collect()
    };
    for (filter, expected) in [
        (json!({ "tags": ["red", "green"] }), pick(&[0, 1, 2, 3, 7])),
        (
            json!({ "tags": ["red", "green"], "tagsMatch": "ANY" }),
            pick(&[0, 1, 2, 3, 7]),
        ),
        (
            json!({ "tags": ["RED", " Blue "], "tagsMatch": "ALL" }),
            pick(&[0, 7]),
        ),
        (
            json!({ "tags": ["blue"], "tagsMatch": "ALL" }),
            pick(&[0, 2, 7]),
        ),
        (
            json!({ "tags": ["red", "blue", "green"], "tagsMatch": "ALL" }),
            pick(&[7]),
        ),
        (json!({ "tags": ["50%_off"] }), pick(&[5])),
        (json!({ "tags": ["red"] }), pick(&[0, 1, 7])),
        (
            json!({ "tags": [], "tagsMatch": "ALL" }),
            pick(&[0, 1, 2, 3, 4, 5, 6, 7]),
        ),
        (
            json!({ "tag": "green", "tags": ["red", "blue"], "tagsMatch": "ANY" }),
            pick(&[2, 7]),
        ),
        (json!({ "tags": ["purple"] }), pick(&[])),
    ] {
        check_list(
            &server,
            &acme.member_token,
            &query,
            "/workflows",
            json!({ "filter": filter }),
            &expected,
            &format!("workflows {filter}"),
        )
        .await;
    }
    for (tags, needle) in [
        (json!(vec!["t"; 21]), "at most 20"),
        (json!(["fine", "qu\"ote"]), "quotes"),
        (json!([""]), "1 to 50"),
    ] {
        let resp = server
            .gql(
                &query,
                json!({ "filter": { "tags": tags }, "first": 5 }),
                Some(&acme.member_token),
            )
            .await;
        assert_bad_input(&resp, Some("filter.tags"), needle, &tags.to_string());
    }
}
