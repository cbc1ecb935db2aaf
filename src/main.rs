use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use stepwise::config::{Cli, Command, DatabaseUrl, LogFormat, MigrateAction, redact_urls};
use stepwise::db::migrations::{self, Action};
use tracing_subscriber::EnvFilter;

// Why not the system allocator: see the mimalloc entry in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Errors from any layer may quote the database URL (or an S3 endpoint), with
            // its password.
            let message = redact_urls(&format!("{error:#}"));
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => stepwise::server::serve(*args).await,
        Command::Backup(args) => {
            let manifest = stepwise::backup::backup(&args).await?;
            println!(
                "backed up {} screenshot(s) and {} blob(s) ({} bytes) into {}",
                manifest.screenshots,
                manifest.blobs,
                manifest.blob_bytes,
                args.destination.display()
            );
            if !manifest.blobs_included {
                eprintln!(
                    "note: screenshot bytes live in an S3 bucket and are not in the backup; \
                     keep them with bucket versioning or replication"
                );
            }
            Ok(())
        }
        Command::Restore(args) => {
            let restored = stepwise::backup::restore(&args).await?;
            println!(
                "restored {} into {} and {} blob(s) into {}",
                args.backup.display(),
                restored.database.display(),
                restored.blobs,
                restored.blob_store
            );
            if !restored.blobs_included {
                eprintln!(
                    "note: the backup holds no screenshot bytes (they were in an S3 bucket); \
                     point --blob-store at that bucket"
                );
            }
            Ok(())
        }
        Command::Seed(args) => {
            let seeded = stepwise::seed::demo(&args).await?;
            println!(
                "seeded {} workflow(s) with {} step(s) and {} screenshot(s), {} run(s) and {} \
                 health log(s) into a new company, {:?}",
                seeded.workflows,
                seeded.steps,
                seeded.screenshots,
                seeded.runs,
                seeded.health_logs,
                seeded.company
            );
            println!("admin:    {}", seeded.admin_email);
            println!("member:   {}", seeded.member_email);
            println!("password: {}", seeded.password);
            println!(
                "sign in with `mutation {{ login(email: \"{}\", password: \"{}\") {{ token }} }}` \
                 in GraphiQL (`stepwise serve`, then http://127.0.0.1:8080/graphql)",
                seeded.admin_email, seeded.password
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", stepwise::graphql::sdl());
            Ok(())
        }
        Command::Migrate { action, database } => {
            let url = DatabaseUrl::parse(&database.database_url)?;
            let (action, verb) = match action {
                MigrateAction::Run => (Action::RunPending, "applied"),
                MigrateAction::Revert { all: false } => (Action::RevertLast, "reverted"),
                MigrateAction::Revert { all: true } => (Action::RevertAll, "reverted"),
                MigrateAction::Status => (Action::Status, ""),
            };
            let states = migrations::perform(&url, action).await?;
            if matches!(action, Action::RunPending) {
                let db = stepwise::db::Db::connect(&database)?;
                stepwise::domain::upkeep::complete(&db, &states).await?;
            }
            for state in &states {
                let word = match action {
                    Action::Status if state.applied => "applied",
                    Action::Status => "pending",
                    _ => verb,
                };
                println!("{word}  {}", state.name);
            }
            if states.is_empty() && !matches!(action, Action::Status) {
                println!("nothing to do");
            }
            Ok(())
        }
    }
}

/// Logs go to stdout: human-readable text by default, JSON lines for collectors.
/// `RUST_LOG` overrides the default level (info).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
