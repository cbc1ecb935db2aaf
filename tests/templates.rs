//! Templates: publishing a workflow version with typed parameters, instantiating it with
//! values substituted (and wrong values refused by name), the PUBLIC catalogue seen by
//! other companies without anything of the publisher, usage, ratings, search, unpublishing
//! and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::blobs::{multipart_request, png};
use common::fixtures::*;
use common::lifecycle::*;
use common::runs::{outcome, report_step, start_run};
use common::{Backend, TestServer, assert_error_code, str_field};
use serde_json::{Value, json};

/// A workflow of `token`'s company whose steps use placeholders; returns (id, step ids).
async fn parameterised_workflow(server: &TestServer, token: &str) -> (String, Vec<String>) {
    let workflow = create_workflow(
        server,
        token,
        json!({
            "name": "Onboard a customer",
            "description": "Signs a customer up",
            "status": "ACTIVE",
            "tags": ["onboarding"],
            "steps": [
                { "actionType": "type", "fieldLabel": "Email", "instruction": "Type {{email}} twice ({{count}} times?)",
                  "selectors": { "css": "#email" },
                  "actionData": { "value": "{{email}}", "count": "{{count}}", "remember": "{{remember}}",
                                  "note": "x{{count}}y", "password": "{{token}}", "kept": "{{ not_a_placeholder }}" } },
                { "actionType": "click", "fieldLabel": "Submit", "pageContext": { "url": "https://app.test/{{email}}" } },
            ],
        }),
    )
    .await;
    (str_field(&workflow, "id"), step_ids(&workflow))
}

fn parameters() -> Value {
    json!([
        { "name": "email", "type": "STRING", "description": "Who signs up", "required": true },
        { "name": "count", "type": "NUMBER", "default": 3 },
        { "name": "remember", "type": "BOOLEAN", "default": false },
        { "name": "token", "type": "SECRET", "required": true },
    ])
}

both_backends!(a_template_instantiates_with_its_parameters_substituted);
async fn a_template_instantiates_with_its_parameters_substituted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let admin = acme.admin_token.as_str();
    let (workflow, _) = parameterised_workflow(&server, admin).await;

    // Every placeholder used must be declared.
    let resp = try_publish(
        &server,
        admin,
        json!({ "w": workflow, "name": "T", "v": "COMPANY",
                "p": [{ "name": "email", "type": "STRING", "required": true }] }),
    )
    .await;
    assert_error_code(&resp, "BAD_USER_INPUT", "an undeclared placeholder");
    assert_eq!(resp["errors"][0]["extensions"]["field"], "parameters");
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("{{count}}"),
        "{resp:#}"
    );
    // Declarations are checked, each named.
    for (parameters, field) in [
        (
            json!([{ "name": "1st", "type": "STRING" }]),
            "parameters[0].name",
        ),
        (
            json!([{ "name": "a", "type": "STRING" }, { "name": "a", "type": "NUMBER" }]),
            "parameters[1].name",
        ),
        (
            json!([{ "name": "n", "type": "NUMBER", "default": "three" }]),
            "parameters[0].default",
        ),
        (
            json!([{ "name": "s", "type": "SECRET", "default": "hunter2" }]),
            "parameters[0].default",
        ),
        (
            json!([{ "name": "r", "type": "STRING", "required": true, "default": "x" }]),
            "parameters[0].default",
        ),
    ] {
        let resp = try_publish(
            &server,
            admin,
            json!({ "w": workflow, "name": "T", "v": "COMPANY", "p": parameters }),
        )
        .await;
        assert_error_code(&resp, "BAD_USER_INPUT", field);
        assert_eq!(resp["errors"][0]["extensions"]["field"], field, "{resp:#}");
    }
    let too_many: Vec<Value> = (0..51)
        .map(|i| json!({ "name": format!("p{i}"), "type": "STRING" }))
        .collect();
    let resp = try_publish(
        &server,
        admin,
        json!({ "w": workflow, "name": "T", "v": "COMPANY", "p": too_many }),
    )
    .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["field"], "parameters",
        "{resp:#}"
    );

    let template = publish(
        &server,
        admin,
        json!({ "w": workflow, "name": "Onboarding", "d": "Sign up a customer", "v": "COMPANY",
                "p": parameters(), "tags": ["Onboarding", "crm"] }),
    )
    .await;
    let template_id = str_field(&template, "id");
    assert_eq!(template["stepCount"], 2);
    assert_eq!(template["sourceVersion"], 1);
    assert_eq!(template["sourceWorkflow"]["id"], workflow.as_str());
    assert_eq!(template["createdBy"]["id"], acme.admin_id.as_str());
    assert_eq!(template["tags"], json!(["onboarding", "crm"]));
    assert_eq!(template["isOwn"], true);
    assert_eq!(
        template["parameters"][1],
        json!({ "name": "count", "type": "NUMBER", "description": null, "default": 3, "required": false })
    );
    assert_eq!(template["steps"][0]["actionData"]["value"], "{{email}}");

    // Wrong values are refused, naming the parameter.
    for (values, field, what) in [
        (
            json!({ "count": 2, "token": "t" }),
            "parameters.email",
            "a missing required value",
        ),
        (
            json!({ "email": "a@b.test", "token": "t", "count": "3" }),
            "parameters.count",
            "a number as text",
        ),
        (
            json!({ "email": "a@b.test", "token": "t", "remember": "yes" }),
            "parameters.remember",
            "a boolean as text",
        ),
        (
            json!({ "email": 7, "token": "t" }),
            "parameters.email",
            "a number for a string",
        ),
        (
            json!({ "email": "a@b.test", "token": "t", "bogus": 1 }),
            "parameters.bogus",
            "an unknown parameter",
        ),
        (
            json!({ "email": "x".repeat(4_097), "token": "t" }),
            "parameters.email",
            "an oversized value",
        ),
        (json!(["a@b.test"]), "parameters", "not an object"),
    ] {
        let resp = try_instantiate(&server, &acme.member_token, &template_id, values).await;
        assert_error_code(&resp, "BAD_USER_INPUT", what);
        assert_eq!(
            resp["errors"][0]["extensions"]["field"], field,
            "{what}: {resp:#}"
        );
    }
    // A value that makes a substituted step too large is refused too (the instruction
    // holds `{{email}}`: 4,000 characters of it pass the value's own limit but not the
    // step's), and no refusal created anything.
    let before = server.sql_count("workflows").await;
    let resp = try_instantiate(
        &server,
        &acme.member_token,
        &template_id,
        json!({ "email": "e".repeat(4_000), "token": "t" }),
    )
    .await;
    assert_error_code(
        &resp,
        "BAD_USER_INPUT",
        "a substituted step over its limits",
    );
    assert_eq!(
        resp["errors"][0]["extensions"]["field"], "parameters",
        "{resp:#}"
    );
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("step 1's instruction"),
        "{resp:#}"
    );
    assert_eq!(server.sql_count("workflows").await, before);

    let resp = try_instantiate(
        &server,
        &acme.member_token,
        &template_id,
        json!({ "email": "ada@customer.test", "token": "s3cret", "remember": true }),
    )
    .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let created = &resp["data"]["instantiateTemplate"];
    assert_eq!(created["name"], "Onboarding");
    assert_eq!(created["status"], "DRAFT");
    assert_eq!(created["description"], "Sign up a customer");
    assert_eq!(created["tags"], json!(["onboarding", "crm"]));
    assert_eq!(created["createdBy"]["id"], acme.member_id.as_str());
    assert_eq!(created["currentVersion"], 1);
    let step = &created["steps"][0];
    assert_eq!(
        step["instruction"],
        "Type ada@customer.test twice (3 times?)"
    );
    assert_eq!(
        step["actionData"],
        json!({ "value": "ada@customer.test", "count": 3, "remember": true, "note": "x3y",
                "password": "s3cret", "kept": "{{ not_a_placeholder }}" }),
        "whole-string placeholders become typed values"
    );
    assert_eq!(
        created["steps"][1]["pageContext"],
        json!({ "url": "https://app.test/ada@customer.test" })
    );
    let new_id_ = str_field(created, "id");
    let (_, history) = versions(&server, &acme.member_token, &new_id_).await;
    assert_eq!(history.len(), 1, "instantiating makes one version");
    assert_eq!(
        history[0]["summary"],
        "created from template \"Onboarding\""
    );

    let data = ok(
        &server,
        admin,
        "query($id: ID!) { template(id: $id) { usageCount } }",
        json!({ "id": template_id }),
    )
    .await;
    assert_eq!(data["template"]["usageCount"], 1);
}

both_backends!(a_public_template_is_a_catalogue_entry_that_leaks_nothing_of_its_publisher);
async fn a_public_template_is_a_catalogue_entry_that_leaks_nothing_of_its_publisher(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let acme = team(&server, "Acme").await;
    let globex = team(&server, "Globex").await;
    let admin = acme.admin_token.as_str();
    let (workflow, steps) = parameterised_workflow(&server, admin).await;
    let upload = multipart_request(
        &server,
        &server.client,
        Some(admin),
        "mutation($w: ID!, $s: ID, $file: Upload!) { uploadScreenshot(workflowId: $w, stepId: $s, file: $file) { id } }",
        json!({ "w": workflow, "s": steps[0] }),
        png(4, 3, 9),
    )
    .await;
    let screenshot = str_field(&upload["data"]["uploadScreenshot"], "id");
    let run = str_field(&start_run(&server, admin, &workflow).await, "id");
    let report = report_step(&server, admin, &run, &steps[0], outcome("SUCCESS")).await;
    let log = str_field(&report["healthLog"], "id");
    let project = create_project(&server, admin, "Acme project").await;
    try_move_workflow(&server, admin, &workflow, Some(&project)).await;
    let (_, versions_of_source) = versions(&server, admin, &workflow).await;

    // A member who did not create the workflow may not publish it to every company.
    let public = json!({ "w": workflow, "name": "Public onboarding", "v": "PUBLIC", "p": parameters(),
                         "tags": ["onboarding"], "shots": true });
    let resp = try_publish(&server, &acme.member_token, public.clone()).await;
    assert_error_code(
        &resp,
        "FORBIDDEN",
        "a member publishing someone else's workflow publicly",
    );
    let template = publish(&server, admin, public).await;
    let template_id = str_field(&template, "id");
    let own_copy = &template["steps"][0]["screenshot"];
    assert_ne!(
        own_copy["id"],
        screenshot.as_str(),
        "the template's screenshot is a copy"
    );
    let private = publish(
        &server,
        admin,
        json!({ "w": workflow, "name": "Private onboarding", "v": "COMPANY", "p": parameters() }),
    )
    .await;
    let private_id = str_field(&private, "id");
    assert!(
        private["steps"][0]["screenshot"].is_null(),
        "screenshots only when chosen"
    );

    // Another company: the PUBLIC template, and not the COMPANY one.
    let gb = globex.member_token.as_str();
    let query = format!("query($id: ID!) {{ template(id: $id) {{ {TEMPLATE_FIELDS} }} }}");
    let resp = server
        .gql(&query, json!({ "id": template_id }), Some(gb))
        .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let seen = &resp["data"]["template"];
    assert_eq!(seen["name"], "Public onboarding");
    assert_eq!(seen["isOwn"], false);
    assert!(
        seen["createdBy"].is_null()
            && seen["sourceWorkflow"].is_null()
            && seen["sourceVersion"].is_null(),
        "{seen:#}"
    );
    assert_eq!(seen["steps"][0]["actionData"]["value"], "{{email}}");
    let list = ok(
        &server,
        gb,
        &format!("{{ templates(filter: {{ scope: CATALOGUE }}) {{ totalCount nodes {{ {TEMPLATE_FIELDS} }} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(
        node_ids(&list["templates"]),
        std::slice::from_ref(&template_id)
    );
    // Nothing of Acme beyond the template itself, anywhere in what Globex reads.
    let acme_ids: Vec<&str> = vec![
        &acme.company_id,
        &acme.admin_id,
        &acme.member_id,
        &workflow,
        &steps[0],
        &steps[1],
        &screenshot,
        &run,
        &log,
        &project,
    ]
    .into_iter()
    .map(String::as_str)
    .chain(versions_of_source.iter().map(|v| v["id"].as_str().unwrap()))
    .collect();
    for answer in [&resp, &list] {
        let text = answer.to_string();
        for id in &acme_ids {
            assert!(
                !text.contains(id),
                "the catalogue leaks Acme's id {id}: {answer:#}"
            );
        }
        assert!(
            !text.contains("admin@acme") && !text.contains("Acme project"),
            "{answer:#}"
        );
    }
    // Its screenshot is served through its own signed URL.
    let url = str_field(&seen["steps"][0]["screenshot"], "url");
    let image = server.get(&url).await;
    assert_eq!(image.status(), 200);
    assert_eq!(image.bytes().await.unwrap().to_vec(), png(4, 3, 9));

    // The COMPANY template is answered like a missing one, and is in no list.
    let resp = server
        .gql(&query, json!({ "id": private_id }), Some(gb))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "another company's COMPANY template");
    let missing = server
        .gql(&query, json!({ "id": new_id() }), Some(gb))
        .await;
    assert_eq!(
        resp["errors"][0]["message"],
        missing["errors"][0]["message"]
    );
    let all = ok(
        &server,
        gb,
        "{ templates(first: 100) { totalCount nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        node_ids(&all["templates"]),
        std::slice::from_ref(&template_id)
    );
    let resp = try_instantiate(
        &server,
        gb,
        &private_id,
        json!({ "email": "x", "token": "y" }),
    )
    .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "instantiating another company's COMPANY template",
    );

    // Globex uses the PUBLIC one: a workflow of Globex, without Acme's screenshots.
    let resp = try_instantiate(
        &server,
        gb,
        &template_id,
        json!({ "email": "g@globex.test", "token": "t" }),
    )
    .await;
    assert!(resp["errors"].is_null(), "{resp:#}");
    let theirs = &resp["data"]["instantiateTemplate"];
    assert!(theirs["steps"][0]["screenshot"].is_null());
    let text = resp.to_string();
    for id in &acme_ids {
        assert!(
            !text.contains(id),
            "the new workflow leaks Acme's id {id}: {resp:#}"
        );
    }
    // Acme's own use of it brings the screenshot along.
    let resp = try_instantiate(
        &server,
        admin,
        &template_id,
        json!({ "email": "a@acme.test", "token": "t" }),
    )
    .await;
    assert_eq!(
        resp["data"]["instantiateTemplate"]["steps"][0]["screenshot"]["id"],
        screenshot.as_str(),
        "{resp:#}"
    );

    // Ratings from both companies, averaged; each member sees their own.
    let rate = "mutation($t: ID!, $s: Int!) { rateTemplate(templateId: $t, stars: $s) { ratingAverage ratingCount viewerRating } }";
    ok(&server, gb, rate, json!({ "t": template_id, "s": 4 })).await;
    let data = ok(&server, admin, rate, json!({ "t": template_id, "s": 2 })).await;
    assert_eq!(
        data["rateTemplate"],
        json!({ "ratingAverage": 3.0, "ratingCount": 2, "viewerRating": 2 })
    );
    let data = ok(&server, gb, rate, json!({ "t": template_id, "s": 5 })).await;
    assert_eq!(
        data["rateTemplate"],
        json!({ "ratingAverage": 3.5, "ratingCount": 2, "viewerRating": 5 })
    );
    for stars in [0, 6, -1] {
        let resp = server
            .gql(rate, json!({ "t": template_id, "s": stars }), Some(gb))
            .await;
        assert_eq!(
            resp["errors"][0]["extensions"]["field"], "stars",
            "{resp:#}"
        );
    }
    let resp = server
        .gql(rate, json!({ "t": private_id, "s": 5 }), Some(gb))
        .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "rating another company's COMPANY template",
    );
    let data = ok(
        &server,
        gb,
        "query($id: ID!) { template(id: $id) { usageCount } }",
        json!({ "id": template_id }),
    )
    .await;
    assert_eq!(data["template"]["usageCount"], 2);

    // Search by name and tag.
    let search = "query($f: TemplateFilter) { templates(filter: $f) { nodes { id } } }";
    for (filter, expected) in [
        (json!({ "search": "PUBLIC onb" }), vec![template_id.clone()]),
        (json!({ "search": "nothing like it" }), vec![]),
        (json!({ "tag": "ONBOARDING" }), vec![template_id.clone()]),
        (json!({ "tag": "crm" }), vec![]),
        (json!({ "scope": "COMPANY" }), vec![]),
    ] {
        let data = ok(&server, gb, search, json!({ "f": filter })).await;
        assert_eq!(node_ids(&data["templates"]), expected, "{filter}");
    }
    let data = ok(
        &server,
        admin,
        search,
        json!({ "f": { "scope": "COMPANY" } }),
    )
    .await;
    assert_eq!(node_ids(&data["templates"]).len(), 2);

    // Unpublishing: out of the catalogue and out of use; the company still sees it.
    let unpublish = "mutation($id: ID!) { unpublishTemplate(id: $id) { id published } }";
    let resp = server
        .gql(
            unpublish,
            json!({ "id": template_id }),
            Some(&acme.member_token),
        )
        .await;
    assert_error_code(
        &resp,
        "FORBIDDEN",
        "a member unpublishing the admin's template",
    );
    let resp = server
        .gql(unpublish, json!({ "id": template_id }), Some(gb))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "another company unpublishing");
    let data = ok(&server, admin, unpublish, json!({ "id": template_id })).await;
    assert_eq!(data["unpublishTemplate"]["published"], false);
    let resp = server
        .gql(&query, json!({ "id": template_id }), Some(gb))
        .await;
    assert_error_code(
        &resp,
        "NOT_FOUND",
        "an unpublished template to another company",
    );
    let resp = try_instantiate(
        &server,
        admin,
        &template_id,
        json!({ "email": "a", "token": "t" }),
    )
    .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["field"], "templateId",
        "{resp:#}"
    );

    // Deleting: gone, with its ratings; Acme's screenshot bytes stay for its workflows.
    let resp = server
        .gql(
            "mutation($id: ID!) { deleteTemplate(id: $id) }",
            json!({ "id": template_id }),
            Some(gb),
        )
        .await;
    assert_error_code(&resp, "NOT_FOUND", "another company deleting");
    ok(
        &server,
        admin,
        "mutation($id: ID!) { deleteTemplate(id: $id) }",
        json!({ "id": template_id }),
    )
    .await;
    let resp = server
        .gql(&query, json!({ "id": template_id }), Some(admin))
        .await;
    assert_error_code(&resp, "NOT_FOUND", "a deleted template");
    assert_eq!(
        server
            .sql_count(&format!(
                "template_ratings WHERE template_id = {}",
                lit(&template_id)
            ))
            .await,
        0
    );
    let shot = ok(
        &server,
        admin,
        "query($id: ID!) { screenshot(id: $id) { url } }",
        json!({ "id": screenshot }),
    )
    .await;
    let image = server.get(&str_field(&shot["screenshot"], "url")).await;
    assert_eq!(
        image.status(),
        200,
        "the workflow's screenshot is still served"
    );
}
