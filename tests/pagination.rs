//! Lists as a client pages through them: the `workflows` connection (filters, every
//! ordering in both directions, ties, rows arriving between pages, bad arguments) and the
//! notification inbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::fixtures::*;
use common::{Backend, TestServer, assert_error_code, parse_datetime, str_field};
use serde_json::{Value, json};

const WORKFLOWS_PAGE: &str = "query($filter: WorkflowFilter, $orderBy: WorkflowOrder, $first: Int, \
     $after: String, $last: Int, $before: String) { \
     workflows(filter: $filter, orderBy: $orderBy, first: $first, after: $after, last: $last, before: $before) { \
       totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } \
       edges { cursor node { id name status tags successRate createdAt updatedAt createdBy { id } } } \
       nodes { id } } }";

const FIELDS: [&str; 4] = ["CREATED_AT", "UPDATED_AT", "NAME", "SUCCESS_RATE"];
const DIRECTIONS: [&str; 2] = ["ASC", "DESC"];

/// One `workflows` page; panics on errors. Also checks the page is self-consistent.
async fn workflows_page(server: &TestServer, token: &str, vars: Value) -> Value {
    let data = ok(server, token, WORKFLOWS_PAGE, vars.clone()).await;
    let conn = data["workflows"].clone();
    let ids = edge_ids(&conn);
    assert_eq!(node_ids(&conn), ids, "`nodes` must match `edges` ({vars})");
    let edges = conn["edges"].as_array().unwrap();
    if let (Some(first), Some(last)) = (edges.first(), edges.last()) {
        assert_eq!(
            conn["pageInfo"]["startCursor"], first["cursor"],
            "startCursor ({vars})"
        );
        assert_eq!(
            conn["pageInfo"]["endCursor"], last["cursor"],
            "endCursor ({vars})"
        );
    }
    conn
}

/// The ids of one `workflows` page with `filter`, plus its totalCount.
async fn filtered(server: &TestServer, token: &str, filter: Value) -> (HashSet<String>, i64) {
    let conn = workflows_page(server, token, json!({ "filter": filter, "first": 100 })).await;
    let ids: HashSet<String> = edge_ids(&conn).into_iter().collect();
    (ids, conn["totalCount"].as_i64().unwrap())
}

/// Pages through the whole list `size` rows at a time, forward (`first`/`after`) or
/// backward (`last`/`before`), and returns the ids in list order. After the first page,
/// `arrivals` are created (to check that new rows do not disturb the walk).
async fn walk(
    server: &TestServer,
    token: &str,
    order: &Value,
    forward: bool,
    size: i64,
    arrivals: &[Value],
) -> Vec<String> {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor: Option<String> = None;
    for round in 0.. {
        assert!(round < 100, "paging {order} never ended");
        let vars = if forward {
            json!({ "orderBy": order, "first": size, "after": cursor })
        } else {
            json!({ "orderBy": order, "last": size, "before": cursor })
        };
        let conn = workflows_page(server, token, vars.clone()).await;
        let ids = edge_ids(&conn);
        assert!(
            ids.len() as i64 <= size,
            "page larger than asked for ({vars}): {conn:#}"
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
                "a page that is not the last must be full ({vars}): {conn:#}"
            );
        }
        let next = if forward {
            &info["endCursor"]
        } else {
            &info["startCursor"]
        };
        cursor = next.as_str().map(str::to_owned);
        pages.push(ids);
        if round == 0 {
            for input in arrivals {
                create_workflow(server, token, input.clone()).await;
            }
        }
        if !more {
            break;
        }
    }
    if !forward {
        pages.reverse();
    }
    pages.concat()
}

/// Asserts `nodes` are sorted by `field` in `direction` (ties allowed).
#[track_caller]
fn assert_sorted(nodes: &[Value], field: &str, direction: &str) {
    for pair in nodes.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let ordering = match field {
            "CREATED_AT" => parse_datetime(&a["createdAt"]).cmp(&parse_datetime(&b["createdAt"])),
            "UPDATED_AT" => parse_datetime(&a["updatedAt"]).cmp(&parse_datetime(&b["updatedAt"])),
            "NAME" => a["name"].as_str().unwrap().cmp(b["name"].as_str().unwrap()),
            "SUCCESS_RATE" => a["successRate"]
                .as_f64()
                .unwrap()
                .partial_cmp(&b["successRate"].as_f64().unwrap())
                .unwrap(),
            _ => unreachable!(),
        };
        let wrong = if direction == "ASC" {
            ordering.is_gt()
        } else {
            ordering.is_lt()
        };
        assert!(!wrong, "not sorted by {field} {direction}: {a} before {b}");
    }
}

#[track_caller]
fn assert_no_repeats(ids: &[String], context: &str) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{context}: a row was returned twice: {ids:?}"
    );
}

const NAMES: [&str; 3] = ["Billing", "Onboarding", "Payroll"];

/// `count` workflows whose names, creation times, update times and success rates all
/// have ties (set with SQL, as no mutation sets them).
async fn tied_workflows(server: &TestServer, team: &Team, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut sql = String::new();
    for i in 0..count {
        let token = if i % 2 == 0 {
            &team.admin_token
        } else {
            &team.member_token
        };
        let wf = create_workflow(server, token, json!({ "name": NAMES[i % 3] })).await;
        let id = str_field(&wf, "id");
        let i = i as i64;
        sql.push_str(&format!(
            "UPDATE workflows SET created_at = {}, updated_at = {}, success_rate = {} WHERE id = {};\n",
            ts_at((i / 4) * 60),
            ts_at(10_000 + (i % 4) * 60),
            [0.0, 0.5, 1.0][(i as usize / 2) % 3],
            lit(&id)
        ));
        ids.push(id);
    }
    server.sql(&sql).await;
    ids
}

// ---------------------------------------------------------------------------
// Orderings
// ---------------------------------------------------------------------------

both_backends!(every_ordering_pages_forward_and_backward);
async fn every_ordering_pages_forward_and_backward(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let all: HashSet<String> = tied_workflows(&server, &acme, 12)
        .await
        .into_iter()
        .collect();
    let token = &acme.member_token;

    for field in FIELDS {
        for direction in DIRECTIONS {
            let order = json!({ "field": field, "direction": direction });
            let context = format!("orderBy {field} {direction}");
            let big =
                workflows_page(&server, token, json!({ "orderBy": order, "first": 100 })).await;
            assert_eq!(big["totalCount"], 12, "{context}");
            assert_eq!(big["pageInfo"]["hasNextPage"], false, "{context}");
            assert_eq!(big["pageInfo"]["hasPreviousPage"], false, "{context}");
            let expected = edge_ids(&big);
            assert_eq!(
                expected.iter().cloned().collect::<HashSet<_>>(),
                all,
                "{context}: one page lists every row"
            );
            let nodes: Vec<Value> = big["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .collect();
            assert_sorted(&nodes, field, direction);

            let forward = walk(&server, token, &order, true, 3, &[]).await;
            assert_no_repeats(&forward, &format!("{context}, first: 3"));
            assert_eq!(
                forward, expected,
                "{context}: paging forward by 3 must match one big page"
            );

            let backward = walk(&server, token, &order, false, 3, &[]).await;
            assert_no_repeats(&backward, &format!("{context}, last: 3"));
            assert_eq!(
                backward, expected,
                "{context}: paging backward by 3 must match one big page"
            );

            // Odd page sizes that do not divide the list.
            assert_eq!(
                walk(&server, token, &order, true, 5, &[]).await,
                expected,
                "{context}, first: 5"
            );
            assert_eq!(
                walk(&server, token, &order, false, 5, &[]).await,
                expected,
                "{context}, last: 5"
            );

            // A page starting in the middle of a tie.
            let after = big["edges"][4]["cursor"].clone();
            let mid = workflows_page(
                &server,
                token,
                json!({ "orderBy": order, "first": 4, "after": after }),
            )
            .await;
            assert_eq!(
                edge_ids(&mid),
                expected[5..9].to_vec(),
                "{context}: first 4 after the 5th row"
            );
            assert_eq!(mid["pageInfo"]["hasNextPage"], true);
            let before = big["edges"][7]["cursor"].clone();
            let mid = workflows_page(
                &server,
                token,
                json!({ "orderBy": order, "last": 4, "before": before }),
            )
            .await;
            assert_eq!(
                edge_ids(&mid),
                expected[3..7].to_vec(),
                "{context}: last 4 before the 8th row"
            );
            assert_eq!(mid["pageInfo"]["hasPreviousPage"], true);
        }
    }

    // The default order is newest first.
    let default = workflows_page(&server, token, json!({ "first": 100 })).await;
    let newest = workflows_page(
        &server,
        token,
        json!({ "first": 100, "orderBy": { "field": "CREATED_AT", "direction": "DESC" } }),
    )
    .await;
    assert_eq!(
        edge_ids(&default),
        edge_ids(&newest),
        "default orderBy is CREATED_AT DESC"
    );
}

both_backends!(rows_added_while_paging_do_not_disturb_the_walk);
async fn rows_added_while_paging_do_not_disturb_the_walk(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    tied_workflows(&server, &acme, 10).await;
    let token = &acme.admin_token;

    let mut batch = 0;
    for (field, direction) in [
        ("NAME", "ASC"),
        ("NAME", "DESC"),
        ("CREATED_AT", "DESC"),
        ("CREATED_AT", "ASC"),
        ("SUCCESS_RATE", "DESC"),
        ("UPDATED_AT", "ASC"),
    ] {
        for forward in [true, false] {
            let order = json!({ "field": field, "direction": direction });
            let context = format!(
                "orderBy {field} {direction}, {}",
                if forward { "forward" } else { "backward" }
            );
            let big =
                workflows_page(&server, token, json!({ "orderBy": order, "first": 100 })).await;
            let original = edge_ids(&big);
            batch += 1;
            // Names that sort before, among and after the existing ones.
            let arrivals: Vec<Value> = ["Aardvark", "Billing", "Onboarding", "Zebra"]
                .iter()
                .map(|name| json!({ "name": name, "description": format!("arrival {batch}") }))
                .collect();
            let walked = walk(&server, token, &order, forward, 3, &arrivals).await;
            assert_no_repeats(&walked, &context);
            let seen: Vec<String> = walked
                .iter()
                .filter(|id| original.contains(id))
                .cloned()
                .collect();
            assert_eq!(
                seen, original,
                "{context}: rows inserted between pages made the walk skip or reorder existing rows"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// Creates a workflow and returns its id.
async fn make(server: &TestServer, token: &str, input: Value) -> String {
    str_field(&create_workflow(server, token, input).await, "id")
}

both_backends!(filters_narrow_the_list);
async fn filters_narrow_the_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let (admin, member) = (&acme.admin_token, &acme.member_token);
    let w1 = make(
        &server,
        admin,
        json!({ "name": "Monthly Invoice Run", "tags": ["billing", "eu"], "status": "ACTIVE" }),
    )
    .await;
    let w2 = make(
        &server,
        member,
        json!({ "name": "invoice archive", "tags": ["billing"] }),
    )
    .await;
    let w3 = make(
        &server,
        member,
        json!({ "name": "Payroll", "tags": ["hr", "eu-west"], "status": "PROCESSING" }),
    )
    .await;
    let w4 = make(&server, admin, json!({ "name": "100% done" })).await;
    ok(
        &server,
        admin,
        "mutation($id: ID!) { archiveWorkflow(id: $id) { id } }",
        json!({ "id": w4 }),
    )
    .await;
    let w5 = make(
        &server,
        admin,
        json!({ "name": "Form_A", "status": "ACTIVE" }),
    )
    .await;
    set_status(&server, admin, &w5, "NEEDS_REVIEW").await;
    let w6 = make(
        &server,
        member,
        json!({ "name": "Broken thing", "status": "ACTIVE" }),
    )
    .await;
    set_status(&server, member, &w6, "BROKEN").await;
    server
        .sql(&format!(
            "UPDATE workflows SET updated_at = '2020-01-01 00:00:00' WHERE id IN ({}, {});",
            lit(&w1),
            lit(&w2)
        ))
        .await;

    let set = |ids: &[&String]| {
        ids.iter()
            .map(|s| (*s).clone())
            .collect::<HashSet<String>>()
    };
    let cases: Vec<(&str, Value, HashSet<String>)> = vec![
        (
            "no filter (archived included)",
            json!(null),
            set(&[&w1, &w2, &w3, &w4, &w5, &w6]),
        ),
        (
            "empty filter",
            json!({}),
            set(&[&w1, &w2, &w3, &w4, &w5, &w6]),
        ),
        (
            "status ACTIVE",
            json!({ "status": ["ACTIVE"] }),
            set(&[&w1]),
        ),
        (
            "status DRAFT or ARCHIVED",
            json!({ "status": ["DRAFT", "ARCHIVED"] }),
            set(&[&w2, &w4]),
        ),
        (
            "status PROCESSING, NEEDS_REVIEW or BROKEN",
            json!({ "status": ["PROCESSING", "NEEDS_REVIEW", "BROKEN"] }),
            set(&[&w3, &w5, &w6]),
        ),
        (
            "status ARCHIVED",
            json!({ "status": ["ARCHIVED"] }),
            set(&[&w4]),
        ),
        ("tag billing", json!({ "tag": "billing" }), set(&[&w1, &w2])),
        ("tag eu (not eu-west)", json!({ "tag": "eu" }), set(&[&w1])),
        ("unknown tag", json!({ "tag": "nope" }), set(&[])),
        (
            "search INVOICE",
            json!({ "search": "INVOICE" }),
            set(&[&w1, &w2]),
        ),
        (
            "search 'invoice run'",
            json!({ "search": "invoice run" }),
            set(&[&w1]),
        ),
        ("search 'ROLL'", json!({ "search": "ROLL" }), set(&[&w3])),
        (
            "search '%' (literal, not a wildcard)",
            json!({ "search": "%" }),
            set(&[&w4]),
        ),
        (
            "search '_' (literal, not a wildcard)",
            json!({ "search": "_" }),
            set(&[&w5]),
        ),
        ("search with no match", json!({ "search": "zzz" }), set(&[])),
        (
            "createdBy member",
            json!({ "createdBy": acme.member_id }),
            set(&[&w2, &w3, &w6]),
        ),
        (
            "createdBy admin",
            json!({ "createdBy": acme.admin_id }),
            set(&[&w1, &w4, &w5]),
        ),
        (
            "updatedSince 2024",
            json!({ "updatedSince": "2024-01-01T00:00:00Z" }),
            set(&[&w3, &w4, &w5, &w6]),
        ),
        (
            "updatedSince 2019",
            json!({ "updatedSince": "2019-01-01T00:00:00Z" }),
            set(&[&w1, &w2, &w3, &w4, &w5, &w6]),
        ),
        (
            "updatedSince next year",
            json!({ "updatedSince": (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339() }),
            set(&[]),
        ),
        (
            "status, tag and search together",
            json!({ "status": ["DRAFT", "ACTIVE"], "tag": "billing", "search": "invoice" }),
            set(&[&w1, &w2]),
        ),
        (
            "status, tag, search and createdBy together",
            json!({ "status": ["DRAFT", "ACTIVE"], "tag": "billing", "search": "invoice", "createdBy": acme.member_id }),
            set(&[&w2]),
        ),
        (
            "createdBy and updatedSince",
            json!({ "createdBy": acme.member_id, "updatedSince": "2024-01-01T00:00:00Z" }),
            set(&[&w3, &w6]),
        ),
    ];
    for (what, filter, expected) in cases {
        let (ids, total) = filtered(&server, member, filter.clone()).await;
        assert_eq!(ids, expected, "filter: {what} ({filter})");
        assert_eq!(
            total,
            expected.len() as i64,
            "totalCount with filter: {what}"
        );
        // totalCount counts the whole filtered list, not the page.
        let page = workflows_page(&server, member, json!({ "filter": filter, "first": 1 })).await;
        assert_eq!(
            page["totalCount"].as_i64(),
            Some(expected.len() as i64),
            "totalCount with first: 1, filter: {what}"
        );
        assert_eq!(
            page["pageInfo"]["hasNextPage"],
            expected.len() > 1,
            "hasNextPage with first: 1, filter: {what}"
        );
    }

    // A filtered list pages like any other.
    let filter = json!({ "status": ["ACTIVE", "DRAFT", "ARCHIVED", "BROKEN"] });
    let order = json!({ "field": "NAME", "direction": "ASC" });
    let big = workflows_page(
        &server,
        member,
        json!({ "filter": filter, "orderBy": order, "first": 100 }),
    )
    .await;
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = workflows_page(
            &server,
            member,
            json!({ "filter": filter, "orderBy": order, "first": 1, "after": after }),
        )
        .await;
        walked.extend(edge_ids(&page));
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        assert!(walked.len() < 10, "endless paging");
    }
    assert_eq!(walked, edge_ids(&big));
    assert_eq!(walked.len(), 4);
}

// ---------------------------------------------------------------------------
// Bad arguments
// ---------------------------------------------------------------------------

both_backends!(bad_paging_arguments_are_user_errors);
async fn bad_paging_arguments_are_user_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = &acme.member_token;
    for i in 0..21 {
        create_workflow(&server, token, json!({ "name": format!("W{i:02}") })).await;
    }
    insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: None,
            severity: "info",
            title: "n1",
            read_by: None,
            created_at: ts_at(1),
        },
    )
    .await;
    insert_notification(
        &server,
        &NotificationRow {
            company_id: &acme.company_id,
            workflow_id: None,
            severity: "info",
            title: "n2",
            read_by: None,
            created_at: ts_at(2),
        },
    )
    .await;

    // Defaults and limits that are fine.
    let page = workflows_page(&server, token, json!({})).await;
    assert_eq!(edge_ids(&page).len(), 20, "the default page size is 20");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["totalCount"], 21);
    let page = workflows_page(&server, token, json!({ "first": 100 })).await;
    assert_eq!(edge_ids(&page).len(), 21);
    let page = workflows_page(&server, token, json!({ "last": 100 })).await;
    assert_eq!(edge_ids(&page).len(), 21);

    let name_order = json!({ "field": "NAME", "direction": "ASC" });
    let name_page =
        workflows_page(&server, token, json!({ "orderBy": name_order, "first": 2 })).await;
    let name_cursor = name_page["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Control: the cursor works with the ordering it came from.
    let next = workflows_page(
        &server,
        token,
        json!({ "orderBy": name_order, "first": 2, "after": name_cursor }),
    )
    .await;
    assert_eq!(next["edges"][0]["node"]["name"], "W02");
    let notes = ok(
        &server,
        token,
        "{ notifications(first: 1) { pageInfo { endCursor } } }",
        json!({}),
    )
    .await;
    let note_cursor = str_field(&notes["notifications"]["pageInfo"], "endCursor");

    let random_bytes: Vec<u8> = uuid::Uuid::now_v7()
        .as_bytes()
        .iter()
        .rev()
        .chain(uuid::Uuid::now_v7().as_bytes())
        .copied()
        .collect();
    let forged_json =
        URL_SAFE_NO_PAD.encode(br#"{"o":"workflows:nope","key":{"text":"W05"},"id":"x"}"#);
    let cases: Vec<(&str, Value)> = vec![
        ("first: 101", json!({ "first": 101 })),
        ("last: 101", json!({ "last": 101 })),
        ("first: -1", json!({ "first": -1 })),
        ("last: -1", json!({ "last": -1 })),
        ("first and last", json!({ "first": 3, "last": 3 })),
        (
            "a base64 string that is not a cursor",
            json!({ "first": 3, "after": STANDARD.encode("not a cursor") }),
        ),
        (
            "random base64url bytes",
            json!({ "first": 3, "after": URL_SAFE_NO_PAD.encode(&random_bytes) }),
        ),
        (
            "random standard base64 bytes",
            json!({ "last": 3, "before": STANDARD.encode(&random_bytes) }),
        ),
        (
            "forged JSON cursor",
            json!({ "first": 3, "after": forged_json }),
        ),
        (
            "garbage",
            json!({ "first": 3, "after": "%%%not base64%%%" }),
        ),
        (
            "a NAME cursor with CREATED_AT",
            json!({ "first": 3, "after": name_cursor, "orderBy": { "field": "CREATED_AT", "direction": "DESC" } }),
        ),
        (
            "a NAME cursor with SUCCESS_RATE (before)",
            json!({ "last": 3, "before": name_cursor, "orderBy": { "field": "SUCCESS_RATE", "direction": "ASC" } }),
        ),
        (
            "a NAME cursor with the default order",
            json!({ "first": 3, "after": name_cursor }),
        ),
        (
            "a notifications cursor",
            json!({ "first": 3, "after": note_cursor }),
        ),
    ];
    for (what, vars) in cases {
        let resp = server.gql(WORKFLOWS_PAGE, vars.clone(), Some(token)).await;
        assert_error_code(
            &resp,
            "BAD_USER_INPUT",
            &format!("workflows with {what} ({vars})"),
        );
        assert!(
            resp["data"].is_null() || resp["data"]["workflows"].is_null(),
            "{what}: {resp:#}"
        );
    }

    // The same rules hold on the other connections.
    let wf_cursor = str_field(&page["pageInfo"], "endCursor");
    for (what, query) in [
        (
            "notifications first: 101",
            "{ notifications(first: 101) { totalCount } }".to_owned(),
        ),
        (
            "notifications first: -1",
            "{ notifications(first: -1) { totalCount } }".to_owned(),
        ),
        (
            "notifications with a workflows cursor",
            format!("{{ notifications(first: 1, after: \"{wf_cursor}\") {{ totalCount }} }}"),
        ),
        (
            "runs first: 101",
            "{ runs(first: 101) { totalCount } }".to_owned(),
        ),
        (
            "runs last: -1",
            "{ runs(last: -1) { totalCount } }".to_owned(),
        ),
        (
            "runs first and last",
            "{ runs(first: 1, last: 1) { totalCount } }".to_owned(),
        ),
        (
            "healthLogs last: 101",
            "{ healthLogs(last: 101) { totalCount } }".to_owned(),
        ),
        (
            "healthLogs with garbage after",
            "{ healthLogs(first: 1, after: \"bm9wZQ\") { totalCount } }".to_owned(),
        ),
    ] {
        let resp = server.gql(&query, json!({}), Some(token)).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
    }
}

// ---------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------

const NOTIFICATIONS_PAGE: &str = "query($unreadOnly: Boolean, $severity: NotificationSeverity, $first: Int, $after: String) { \
     notifications(unreadOnly: $unreadOnly, severity: $severity, first: $first, after: $after) { \
       totalCount pageInfo { hasNextPage endCursor } \
       edges { cursor node { id workflow { id } kind severity title message read readAt readBy { id } createdAt } } } \
     unreadNotificationCount }";

/// Every notification matching `vars`, paging by `size`; returns (ids, nodes).
async fn inbox(
    server: &TestServer,
    token: &str,
    vars: Value,
    size: i64,
) -> (Vec<String>, Vec<Value>) {
    let mut nodes: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let mut v = vars.clone();
        v["first"] = json!(size);
        v["after"] = json!(after);
        let data = ok(server, token, NOTIFICATIONS_PAGE, v).await;
        let conn = &data["notifications"];
        nodes.extend(
            conn["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone()),
        );
        if conn["pageInfo"]["hasNextPage"] != true {
            let ids = nodes.iter().map(|n| str_field(n, "id")).collect();
            return (ids, nodes);
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    panic!("notification paging never ended ({vars})");
}

async fn unread_count(server: &TestServer, token: &str) -> i64 {
    ok(server, token, "{ unreadNotificationCount }", json!({})).await["unreadNotificationCount"]
        .as_i64()
        .unwrap()
}

both_backends!(notification_inbox);
async fn notification_inbox(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let wf = simple_workflow(&server, &acme.admin_token, "Flow", 1).await;
    let wf_id = str_field(&wf, "id");
    let specs: [(&str, Option<&str>, i64, Option<&str>); 7] = [
        ("info", None, 0, None),
        ("warning", None, 10, None),
        ("error", None, 20, None),
        ("error", Some(acme.admin_id.as_str()), 20, None),
        ("info", Some(acme.admin_id.as_str()), 30, None),
        ("error", None, 40, Some(wf_id.as_str())),
        ("warning", None, 50, None),
    ];
    let mut n = Vec::new();
    let mut sql = String::new();
    for (i, (severity, read_by, at, workflow)) in specs.iter().enumerate() {
        let (id, insert) = notification_sql(&NotificationRow {
            company_id: &acme.company_id,
            workflow_id: *workflow,
            severity,
            title: &format!("Note {i}"),
            read_by: *read_by,
            created_at: ts_at(*at),
        });
        sql.push_str(&insert);
        n.push(id);
    }
    server.sql(&sql).await;
    let token = &acme.member_token;

    // Everything, newest first, the same whatever the page size.
    let (all, nodes) = inbox(&server, token, json!({}), 100).await;
    assert_eq!(all.len(), 7);
    for pair in nodes.windows(2) {
        assert!(
            parse_datetime(&pair[0]["createdAt"]) >= parse_datetime(&pair[1]["createdAt"]),
            "notifications must be newest first: {:#}",
            json!(nodes)
        );
    }
    assert_eq!(&all[..3], &[n[6].clone(), n[5].clone(), n[4].clone()]);
    assert_eq!(&all[5..], &[n[1].clone(), n[0].clone()]);
    let tied: HashSet<&String> = all[3..5].iter().collect();
    assert_eq!(tied, [&n[2], &n[3]].into_iter().collect::<HashSet<_>>());
    for size in [1, 2, 3] {
        let (paged, _) = inbox(&server, token, json!({}), size).await;
        assert_eq!(paged, all, "paging notifications by {size}");
    }
    let by_id = |id: &String| {
        nodes
            .iter()
            .find(|x| x["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    let linked = by_id(&n[5]);
    assert_eq!(linked["workflow"]["id"], wf_id.as_str());
    assert_eq!(linked["severity"], "ERROR");
    assert_eq!(linked["kind"], "workflow_broken");
    assert_eq!(linked["title"], "Note 5");
    assert_eq!(linked["message"], "Note 5 (details)");
    assert_eq!(linked["read"], false);
    assert!(linked["readAt"].is_null() && linked["readBy"].is_null());
    let read = by_id(&n[4]);
    assert_eq!(read["read"], true);
    assert_eq!(read["readBy"]["id"], acme.admin_id.as_str());
    assert!(by_id(&n[0])["workflow"].is_null());

    // Filters.
    let unread = vec![
        n[6].clone(),
        n[5].clone(),
        n[2].clone(),
        n[1].clone(),
        n[0].clone(),
    ];
    for size in [2, 100] {
        let (ids, _) = inbox(&server, token, json!({ "unreadOnly": true }), size).await;
        assert_eq!(ids, unread, "unreadOnly, page size {size}");
    }
    let (ids, _) = inbox(&server, token, json!({ "unreadOnly": false }), 100).await;
    assert_eq!(ids, all, "unreadOnly: false lists everything");
    let (ids, _) = inbox(&server, token, json!({ "severity": "ERROR" }), 1).await;
    assert_eq!(ids[0], n[5]);
    assert_eq!(
        ids[1..].iter().collect::<HashSet<_>>(),
        [&n[2], &n[3]].into_iter().collect::<HashSet<_>>()
    );
    let (ids, _) = inbox(
        &server,
        token,
        json!({ "severity": "ERROR", "unreadOnly": true }),
        1,
    )
    .await;
    assert_eq!(ids, vec![n[5].clone(), n[2].clone()]);
    let (ids, _) = inbox(&server, token, json!({ "severity": "INFO" }), 100).await;
    assert_eq!(ids, vec![n[4].clone(), n[0].clone()]);
    let (ids, _) = inbox(
        &server,
        token,
        json!({ "severity": "WARNING", "unreadOnly": true }),
        100,
    )
    .await;
    assert_eq!(ids, vec![n[6].clone(), n[1].clone()]);
    let data = ok(
        &server,
        token,
        NOTIFICATIONS_PAGE,
        json!({ "unreadOnly": true, "first": 1 }),
    )
    .await;
    assert_eq!(data["notifications"]["totalCount"], 5);
    assert_eq!(data["unreadNotificationCount"], 5);
    assert_eq!(
        unread_count(&server, &acme.admin_token).await,
        5,
        "the inbox is the company's"
    );

    // Marking one as read.
    let mark =
        "mutation($id: ID!) { markNotificationRead(id: $id) { id read readAt readBy { id } } }";
    let before_mark = chrono::Utc::now() - chrono::Duration::seconds(5);
    let marked =
        ok(&server, token, mark, json!({ "id": n[1] })).await["markNotificationRead"].clone();
    assert_eq!(marked["id"], n[1].as_str());
    assert_eq!(marked["read"], true);
    assert_eq!(marked["readBy"]["id"], acme.member_id.as_str());
    let read_at = parse_datetime(&marked["readAt"]);
    assert!(
        read_at >= before_mark && read_at <= chrono::Utc::now() + chrono::Duration::seconds(5),
        "readAt {read_at}"
    );
    assert_eq!(unread_count(&server, token).await, 4);

    // Idempotent: the first reader and time are kept.
    let again =
        ok(&server, &acme.admin_token, mark, json!({ "id": n[1] })).await["markNotificationRead"]
            .clone();
    assert_eq!(
        again, marked,
        "marking a read notification again changes nothing"
    );
    let old = ok(&server, token, mark, json!({ "id": n[3] })).await["markNotificationRead"].clone();
    assert_eq!(
        old["readBy"]["id"],
        acme.admin_id.as_str(),
        "already read by the admin"
    );
    assert_eq!(old["readAt"], by_id(&n[3])["readAt"]);
    assert_eq!(unread_count(&server, token).await, 4);

    let resp = server
        .gql(mark, json!({ "id": new_id() }), Some(token))
        .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "markNotificationRead with an unknown id",
    );

    // Marking everything.
    let all_read = "mutation { markAllNotificationsRead }";
    let count = ok(&server, &acme.admin_token, all_read, json!({})).await;
    assert_eq!(count["markAllNotificationsRead"], 4, "number newly marked");
    assert_eq!(unread_count(&server, token).await, 0);
    let (ids, _) = inbox(&server, token, json!({ "unreadOnly": true }), 100).await;
    assert!(ids.is_empty(), "{ids:?}");
    let (_, nodes) = inbox(&server, token, json!({}), 100).await;
    for node in &nodes {
        assert_eq!(node["read"], true, "{node:#}");
        assert!(!node["readAt"].is_null(), "{node:#}");
    }
    let find = |id: &String| {
        nodes
            .iter()
            .find(|x| x["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(
        find(&n[6])["readBy"]["id"],
        acme.admin_id.as_str(),
        "markAll records who read them"
    );
    assert_eq!(
        find(&n[1])["readBy"]["id"],
        acme.member_id.as_str(),
        "markAll keeps earlier readers"
    );
    assert_eq!(find(&n[1])["readAt"], marked["readAt"]);
    let count = ok(&server, token, all_read, json!({})).await;
    assert_eq!(count["markAllNotificationsRead"], 0, "nothing left to mark");
}

/// The ids of `conn`'s edges and its pageInfo flags.
fn page_of(conn: &Value) -> (Vec<String>, bool, bool, Option<String>, Option<String>) {
    (
        edge_ids(conn),
        conn["pageInfo"]["hasNextPage"].as_bool().unwrap(),
        conn["pageInfo"]["hasPreviousPage"].as_bool().unwrap(),
        conn["pageInfo"]["startCursor"].as_str().map(str::to_owned),
        conn["pageInfo"]["endCursor"].as_str().map(str::to_owned),
    )
}

both_backends!(nested_connections_page_like_root_lists);
/// `Workflow.runs`, `Workflow.healthLogs` and `Run.healthLogs` under a list of workflows
/// are read for all parents at once; each parent's pages, cursors, flags and counts must
/// be exactly those of the same list asked for alone.
async fn nested_connections_page_like_root_lists(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let token = acme.member_token.as_str();
    let mut workflows = Vec::new();
    for (w, runs) in [(0, 7), (1, 3), (2, 0)] {
        let wf = simple_workflow(&server, token, &format!("Flow {w}"), 1).await;
        let id = str_field(&wf, "id");
        for r in 0..runs {
            // Two runs (and their logs) share each timestamp: ties are broken by id.
            let run = insert_run(
                &server,
                &RunRow {
                    company_id: &acme.company_id,
                    workflow_id: &id,
                    started_by: None,
                    status: if r % 3 == 0 { "failed" } else { "succeeded" },
                    current_step_id: None,
                    error: None,
                    created_at: ts_at(100 + r / 2),
                },
            )
            .await;
            for l in 0..(r % 4) {
                insert_health_log(
                    &server,
                    &HealthLogRow {
                        company_id: &acme.company_id,
                        workflow_id: &id,
                        run_id: &run,
                        step_id: None,
                        status: if l == 0 { "failed" } else { "success" },
                        error_message: None,
                        created_at: ts_at(200 + r / 2),
                    },
                )
                .await;
            }
        }
        workflows.push(id);
    }
    const PAGE: &str = "totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }";
    let nested = format!(
        "query($rf: Int, $ra: String, $rl: Int, $rb: String, \
               $lf: Int, $la: String, $ll: Int, $lb: String) {{ \
         workflows(first: 10, orderBy: {{ field: CREATED_AT, direction: ASC }}) {{ edges {{ node {{ id \
           runs(first: $rf, after: $ra, last: $rl, before: $rb) {{ {PAGE} \
             edges {{ cursor node {{ id healthLogs(first: 2) {{ {PAGE} edges {{ node {{ id }} }} }} }} }} }} \
           healthLogs(first: $lf, after: $la, last: $ll, before: $lb, \
                      filter: {{ status: [SUCCESS] }}) {{ {PAGE} edges {{ node {{ id }} }} }} \
         }} }} }} }}"
    );
    let runs_alone = format!(
        "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {{ \
         workflow(id: $id) {{ runs(first: $first, after: $after, last: $last, before: $before) {{ \
           {PAGE} edges {{ cursor node {{ id healthLogs(first: 2) {{ {PAGE} edges {{ node {{ id }} }} }} }} }} }} }} \
         runs(workflowId: $id, first: $first, after: $after, last: $last, before: $before) {{ \
           {PAGE} edges {{ node {{ id }} }} }} }}"
    );
    let logs_alone = format!(
        "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {{ \
         healthLogs(filter: {{ workflowId: $id, status: [SUCCESS] }}, first: $first, \
                    after: $after, last: $last, before: $before) {{ {PAGE} edges {{ node {{ id }} }} }} }}"
    );
    // Walk each workflow's runs and (successful) logs forward and backward, two at a time,
    // through the nested list; every page must equal the one asked for alone.
    for (list, alone) in [("runs", &runs_alone), ("healthLogs", &logs_alone)] {
        for forward in [true, false] {
            let mut cursors: Vec<Option<String>> = vec![None; workflows.len()];
            for step in 0..5 {
                for (i, id) in workflows.iter().enumerate() {
                    if step > 0 && cursors[i].is_none() {
                        continue;
                    }
                    let mut vars = if forward {
                        json!({ "first": 2, "after": cursors[i] })
                    } else {
                        json!({ "last": 2, "before": cursors[i] })
                    };
                    // The other list of the nested query pages from its start.
                    let prefix = if list == "runs" { "r" } else { "l" };
                    let mut nested_vars = json!({});
                    for (short, long) in [
                        ("f", "first"),
                        ("a", "after"),
                        ("l", "last"),
                        ("b", "before"),
                    ] {
                        nested_vars[format!("{prefix}{short}")] = vars[long].clone();
                    }
                    let data = ok(&server, token, &nested, nested_vars).await;
                    let node = data["workflows"]["edges"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| &e["node"])
                        .find(|n| n["id"] == id.as_str())
                        .unwrap()
                        .clone();
                    vars["id"] = json!(id);
                    let one = ok(&server, token, alone, vars).await;
                    if list == "runs" {
                        assert_eq!(node["runs"], one["workflow"]["runs"], "{list} of {i}");
                        assert_eq!(page_of(&node["runs"]), page_of(&one["runs"]));
                        assert_eq!(node["runs"]["totalCount"], one["runs"]["totalCount"]);
                    } else {
                        assert_eq!(node["healthLogs"], one["healthLogs"], "{list} of {i}");
                    }
                    let (_, next, previous, start, end) = page_of(&node[list]);
                    cursors[i] = if forward {
                        next.then_some(end).flatten()
                    } else {
                        previous.then_some(start).flatten()
                    };
                }
            }
            assert!(
                cursors.iter().all(Option::is_none),
                "every {list} walk reached the end: {cursors:?}"
            );
        }
    }
}
