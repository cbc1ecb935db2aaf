//! `stepwise seed --demo`: fills an empty database with a demo company, so GraphiQL has
//! something to show in the first minute: an admin and a member (their passwords printed),
//! workflows with steps and screenshots (small PNGs drawn here, stored through the blob
//! store), runs in the statuses the platform produces, the health logs of their step
//! reports, and the notifications the health rules raise.
//!
//! Everything is written through the domain functions the API uses (sign-up, joining,
//! recording workflows, uploading screenshots, starting, reporting, finishing, pausing,
//! cancelling and timing out runs), so the demo data obeys every rule real data does, on
//! SQLite and PostgreSQL alike. It refuses a database that already holds a company.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::json;

use crate::blobs::BlobStore;
use crate::config::{DEFAULT_MAX_PIXELS, DatabaseUrl, SeedArgs};
use crate::crypto::password::Passwords;
use crate::crypto::secret_token::SecretTokens;
use crate::db::{Db, migrations};
use crate::domain::account::{self, Credentials, SignedIn};
use crate::domain::health::HealthRules;
use crate::domain::health_log::{self, StepOutcome};
use crate::domain::run::queue::Enqueue;
use crate::domain::run::{self, Finish, Outcome};
use crate::domain::screenshot::{self, ImageLimits};
use crate::domain::session::SessionRules;
use crate::domain::step::NewStep;
use crate::domain::workflow::{self, NewWorkflow, Status};
use crate::domain::{Tenant, company};
use crate::events::EventBus;

/// The JSON limit of the demo's run inputs and outputs (the server's default).
const DEMO_JSON_MAX_BYTES: usize = 64 * 1024;

/// What the demo made, for the command to print.
#[derive(Debug)]
pub struct Seeded {
    pub company: String,
    pub admin_email: String,
    pub member_email: String,
    /// The same for both members; generated, so no demo database shares one.
    pub password: String,
    pub workflows: usize,
    pub steps: usize,
    pub screenshots: usize,
    pub runs: usize,
    pub health_logs: usize,
}

/// A demo workflow: name, description, tags, and each step's action and label.
type DemoWorkflow = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// The demo's workflows.
const WORKFLOWS: &[DemoWorkflow] = &[
    (
        "Checkout with a saved card",
        "Buys the cheapest item in the shop with the card on file.",
        &["shop", "payments"],
        &[
            ("navigate", "Open the shop"),
            ("click", "Add the first item to the cart"),
            ("click", "Go to checkout"),
            ("select", "Pick the saved card"),
            ("click", "Place the order"),
        ],
    ),
    (
        "Upload a supplier invoice",
        "Files a PDF invoice in the accounting system.",
        &["finance"],
        &[
            ("navigate", "Open Accounts payable"),
            ("click", "New invoice"),
            ("upload", "Attach the PDF"),
            ("click", "Submit for approval"),
        ],
    ),
    (
        "Onboard a new hire",
        "Creates accounts for a new colleague.",
        &["hr", "it"],
        &[
            ("navigate", "Open the admin console"),
            ("type", "Full name"),
            ("type", "Work email"),
            ("click", "Create account"),
        ],
    ),
];

/// Fills the database `args` names with the demo, after applying pending migrations.
pub async fn demo(args: &SeedArgs) -> anyhow::Result<Seeded> {
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    let applied = migrations::perform(&url, migrations::Action::RunPending)
        .await
        .context("applying database migrations")?;
    let db = Db::connect(&args.database)?;
    crate::domain::upkeep::complete(&db, &applied).await?;
    let companies = company::count_all(&db).await.map_err(domain_failure)?;
    if companies > 0 {
        anyhow::bail!(
            "the database already holds data ({companies} compan{}); `seed --demo` only fills \
             an empty database",
            if companies == 1 { "y" } else { "ies" }
        );
    }
    let blobs = BlobStore::open(&args.blobs, &url)?;
    let passwords = Passwords::new(0, Duration::from_secs(60));
    let events = EventBus::new();
    // The demo's own rules: the defaults, and a run timeout of zero for the one run the
    // sweeper is asked to time out.
    let rules = HealthRules {
        broken_after_failures: 3,
        review_below_confidence: 0.7,
        run_timeout: Duration::from_secs(600),
    };
    let password = new_password();
    let admin_email = args.admin_email.trim().to_lowercase();
    // Signing up opens a session whose refresh token nobody will see: it is minted under a
    // throw-away key and lapses at once, so the demo leaves no usable credential behind.
    let mut throwaway = [0u8; 32];
    OsRng.fill_bytes(&mut throwaway);
    let sessions = SessionRules {
        refresh_ttl: chrono::TimeDelta::seconds(1),
        tokens: Arc::new(SecretTokens::new(&throwaway)),
    };
    let SignedIn {
        company,
        user: admin,
        ..
    } = account::signup(
        &db,
        &passwords,
        &sessions,
        "Demo Company",
        Credentials {
            name: "Demo Admin".into(),
            email: admin_email.clone(),
            password: password.clone(),
        },
    )
    .await
    .map_err(domain_failure)?;
    let tenant = Tenant::new(company.id.clone());
    let member_email = match admin_email.split_once('@') {
        Some((_, domain)) => format!("member@{domain}"),
        None => "member@demo.example".to_owned(),
    };
    let SignedIn { user: member, .. } = account::join(
        &db,
        &passwords,
        &sessions,
        &company.invite_token,
        Credentials {
            name: "Demo Member".into(),
            email: member_email.clone(),
            password: password.clone(),
        },
    )
    .await
    .map_err(domain_failure)?;

    let mut seeded = Seeded {
        company: company.name.clone(),
        admin_email,
        member_email,
        password,
        workflows: 0,
        steps: 0,
        screenshots: 0,
        runs: 0,
        health_logs: 0,
    };
    let limits = ImageLimits {
        max_bytes: 5 * 1024 * 1024,
        max_pixels: DEFAULT_MAX_PIXELS,
    };
    let mut flows = Vec::new();
    for (index, (name, description, tags, steps)) in WORKFLOWS.iter().enumerate() {
        let new = NewWorkflow {
            name: (*name).to_owned(),
            description: Some((*description).to_owned()),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            status: Some(Status::Active),
            steps: steps
                .iter()
                .enumerate()
                .map(|(n, (action, label))| demo_step(action, label, n))
                .collect(),
        };
        let author = if index == 2 { &member.id } else { &admin.id };
        let flow = workflow::create(&db, &tenant, author, new)
            .await
            .map_err(domain_failure)?;
        let step_ids: Vec<String> =
            crate::domain::step::heads_of_workflows(&db, &tenant, std::slice::from_ref(&flow.id))
                .await
                .map_err(domain_failure)?
                .into_iter()
                .map(|step| step.id)
                .collect();
        for (n, step_id) in step_ids.iter().enumerate() {
            let image = Bytes::from(screenshot_png(index, n, step_ids.len()));
            screenshot::upload(&db, &blobs, &tenant, &flow.id, Some(step_id), image, limits)
                .await
                .map_err(domain_failure)?;
            seeded.screenshots += 1;
        }
        seeded.workflows += 1;
        seeded.steps += step_ids.len();
        flows.push((flow.id, step_ids));
    }
    let [
        (checkout, checkout_steps),
        (invoice, invoice_steps),
        (onboarding, onboarding_steps),
    ] = flows.as_slice()
    else {
        anyhow::bail!("the demo workflows were not all created");
    };
    let by = &admin.id;
    let report = |run: String, step: String, outcome: StepOutcome| {
        let (db, events, rules, tenant) = (&db, &events, &rules, &tenant);
        async move {
            run::report_step(db, events, rules, tenant, &run, &step, outcome, None)
                .await
                .map_err(domain_failure)
        }
    };

    // A run timed out by the sweeper (first, while it is the only running run).
    let stale = run::start(&db, &events, &tenant, Some(by), onboarding)
        .await
        .map_err(domain_failure)?;
    report(
        stale.id.clone(),
        onboarding_steps[0].clone(),
        outcome(health_log::Status::Success),
    )
    .await?;
    seeded.health_logs += 1;
    let timeout_now = HealthRules {
        run_timeout: Duration::ZERO,
        ..rules
    };
    run::time_out_stale_runs(&db, &events, &timeout_now)
        .await
        .map_err(domain_failure)?;
    seeded.runs += 1;

    // Checkout: two clean successes, then a low-confidence AI healing that puts the
    // workflow up for review (a warning).
    for _ in 0..2 {
        let done = run::start(&db, &events, &tenant, Some(by), checkout)
            .await
            .map_err(domain_failure)?;
        for step in checkout_steps {
            report(
                done.id.clone(),
                step.clone(),
                outcome(health_log::Status::Success),
            )
            .await?;
            seeded.health_logs += 1;
        }
        run::finish(
            &db,
            &events,
            &rules,
            &tenant,
            &done.id,
            Finish {
                outcome: Outcome::Succeeded,
                error: None,
                output: None,
                lease_id: None,
            },
            DEMO_JSON_MAX_BYTES,
        )
        .await
        .map_err(domain_failure)?;
        seeded.runs += 1;
    }
    let healed = run::start(&db, &events, &tenant, Some(by), checkout)
        .await
        .map_err(domain_failure)?;
    for (n, step) in checkout_steps.iter().enumerate() {
        let mut result = outcome(health_log::Status::Success);
        if n == 3 {
            result = StepOutcome {
                status: health_log::Status::HealedAi,
                healing_confidence: Some(0.55),
                ai_score: Some(0.55),
                deterministic_score: Some(0.2),
                ..result
            };
        }
        report(healed.id.clone(), step.clone(), result).await?;
        seeded.health_logs += 1;
    }
    run::finish(
        &db,
        &events,
        &rules,
        &tenant,
        &healed.id,
        Finish {
            outcome: Outcome::Succeeded,
            error: None,
            output: None,
            lease_id: None,
        },
        DEMO_JSON_MAX_BYTES,
    )
    .await
    .map_err(domain_failure)?;
    seeded.runs += 1;

    // Invoices: three failures in a row break the workflow (an error notification).
    for attempt in 0..3 {
        let failed = run::start(&db, &events, &tenant, Some(by), invoice)
            .await
            .map_err(domain_failure)?;
        report(
            failed.id.clone(),
            invoice_steps[0].clone(),
            outcome(health_log::Status::Success),
        )
        .await?;
        let broken = StepOutcome {
            status: health_log::Status::Failed,
            error_type: Some("element_not_found".into()),
            error_message: Some(format!(
                "No element matches #upload-pdf (attempt {})",
                attempt + 1
            )),
            page_url: Some("https://accounts.demo.example/invoices/new".into()),
            ..outcome(health_log::Status::Failed)
        };
        report(failed.id.clone(), invoice_steps[2].clone(), broken).await?;
        seeded.health_logs += 2;
        run::finish(
            &db,
            &events,
            &rules,
            &tenant,
            &failed.id,
            Finish {
                outcome: Outcome::Failed,
                error: Some("The upload button was not found".into()),
                output: None,
                lease_id: None,
            },
            DEMO_JSON_MAX_BYTES,
        )
        .await
        .map_err(domain_failure)?;
        seeded.runs += 1;
    }

    // Onboarding: one paused, one cancelled, one still running.
    let paused = run::start(&db, &events, &tenant, Some(&member.id), onboarding)
        .await
        .map_err(domain_failure)?;
    report(
        paused.id.clone(),
        onboarding_steps[0].clone(),
        outcome(health_log::Status::Success),
    )
    .await?;
    run::pause(&db, &events, &tenant, &paused.id)
        .await
        .map_err(domain_failure)?;
    let cancelled = run::start(&db, &events, &tenant, Some(by), onboarding)
        .await
        .map_err(domain_failure)?;
    run::cancel(
        &db,
        &events,
        &tenant,
        &cancelled.id,
        Some("Started by mistake".into()),
    )
    .await
    .map_err(domain_failure)?;
    let running = run::start(&db, &events, &tenant, Some(&member.id), onboarding)
        .await
        .map_err(domain_failure)?;
    for step in onboarding_steps.iter().take(2) {
        report(
            running.id.clone(),
            step.clone(),
            outcome(health_log::Status::Success),
        )
        .await?;
    }
    seeded.health_logs += 3;
    seeded.runs += 3;

    // Checkout waits in the queue for an executor to claim it.
    run::queue::enqueue(
        &db,
        &events,
        &tenant,
        Some(by),
        Enqueue {
            workflow_id: checkout.clone(),
            input: Some(json!({ "customer": "demo@example.com" })),
            priority: Some(10),
            not_before: None,
            max_attempts: None,
            idempotency_key: None,
        },
        DEMO_JSON_MAX_BYTES,
    )
    .await
    .map_err(domain_failure)?;
    seeded.runs += 1;
    Ok(seeded)
}

fn outcome(status: health_log::Status) -> StepOutcome {
    StepOutcome {
        status,
        error_type: None,
        error_message: None,
        healing_confidence: None,
        deterministic_score: None,
        ai_score: None,
        page_url: None,
        execution_time_ms: Some(420),
        idempotency_key: None,
        healed_selectors: None,
        healing_method: None,
    }
}

fn demo_step(action: &str, label: &str, n: usize) -> NewStep {
    NewStep {
        action_type: action.to_owned(),
        selectors: Some(json!({ "css": format!("#demo-step-{}", n + 1) })),
        element_meta: Some(json!({ "tag": "button", "text": label })),
        page_context: Some(json!({ "title": "Demo", "url": "https://app.demo.example/" })),
        action_data: None,
        dom_context: None,
        field_label: Some(label.to_owned()),
        instruction: Some(format!("{label}.")),
        ai_confidence: Some(0.9),
        ai_model: Some("demo".into()),
        screenshot_id: None,
    }
}

/// A domain error as the command reports it (the API's message; internals in the log).
fn domain_failure(error: crate::error::AppError) -> anyhow::Error {
    match error {
        crate::error::AppError::Internal(error) => error,
        other => anyhow::anyhow!("{}", async_graphql::Error::from(other).message),
    }
}

/// 18 random characters, URL-safe: printed once, for the demo's two members.
fn new_password() -> String {
    let mut bytes = [0u8; 12];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Screenshots
// ---------------------------------------------------------------------------

const WIDTH: usize = 160;
const HEIGHT: usize = 100;

/// A small screenshot-like picture for step `step` of `steps` of workflow `workflow`: a
/// title bar in the workflow's colour, a page, and a highlighted element that moves with
/// the step, so every step's image differs (they are stored by content).
fn screenshot_png(workflow: usize, step: usize, steps: usize) -> Vec<u8> {
    const COLOURS: [[u8; 3]; 3] = [[37, 99, 235], [220, 38, 38], [22, 163, 74]];
    let accent = COLOURS[workflow % COLOURS.len()];
    let target_x = 20 + (step * (WIDTH - 60)) / steps.max(1);
    let mut pixels = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let pixel = if y < 14 {
                accent
            } else if (60..76).contains(&y) && (target_x..target_x + 40).contains(&x) {
                [250, 204, 21]
            } else if y % 12 == 0 && (10..WIDTH - 10).contains(&x) {
                [209, 213, 219]
            } else {
                [248, 250, 252]
            };
            pixels.extend_from_slice(&pixel);
        }
    }
    png_rgb(WIDTH, HEIGHT, &pixels)
}

/// Encodes 8-bit RGB `pixels` as a PNG whose image data is deflate's uncompressed
/// ("stored") blocks: a valid PNG every decoder reads, for pictures too small to be worth a
/// compressor (or a dependency).
fn png_rgb(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    // Each row: filter type 0 (none), then the row's bytes.
    let mut raw = Vec::with_capacity(height * (width * 3 + 1));
    for row in pixels.chunks_exact(width * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    // zlib: header (deflate, 32 KiB window, no dictionary), stored blocks, Adler-32.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(u16::MAX as usize).collect();
    for (index, block) in blocks.iter().enumerate() {
        let last = u8::from(index + 1 == blocks.len());
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        zlib.push(last);
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&u32::try_from(width).unwrap_or(0).to_be_bytes());
    header.extend_from_slice(&u32::try_from(height).unwrap_or(0).to_be_bytes());
    // 8 bits per channel, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, as PNG uses it), bit by bit: a few kilobytes per picture.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_standard_check_values() {
        // The check values of both algorithms' catalogue entries.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // PNG's empty IEND chunk always ends with the same CRC.
        let png = png_rgb(1, 1, &[0, 0, 0]);
        assert_eq!(&png[png.len() - 4..], &[0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    fn demo_screenshots_are_pngs_the_upload_accepts() {
        let png = screenshot_png(0, 1, 5);
        let Ok(info) = screenshot::inspect(&png, DEFAULT_MAX_PIXELS) else {
            panic!("the upload refuses the demo PNG");
        };
        assert_eq!((info.width, info.height), (WIDTH as i32, HEIGHT as i32));
        assert_ne!(screenshot_png(0, 1, 5), screenshot_png(0, 2, 5));
    }
}
