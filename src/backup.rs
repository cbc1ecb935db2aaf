//! `stepwise backup` and `stepwise restore`: an online copy of an SQLite deployment (the
//! database and its screenshot blobs) and its restoration into a new location.
//!
//! A backup is a directory, created with mode 0700 (its files 0600: it holds password
//! hashes and invite tokens):
//!
//! ```text
//! <backup>/manifest.json   format version, when, what (counts), which stepwise made it
//! <backup>/stepwise.db     the database, a consistent snapshot made by `VACUUM INTO`
//! <backup>/blobs/<company id>/<sha256>   every screenshot blob the snapshot references
//! ```
//!
//! It is built under a temporary name beside the destination and renamed into place when
//! complete, so a directory with the final name is always a whole backup.
//!
//! Consistency with a running server: blobs are written before the row that references
//! them commits, and removed only after that row is gone. So blobs are copied in two passes
//! around the snapshot: every blob present first, then the snapshot, then any blob the
//! snapshot references that appeared meanwhile. A referenced blob that is still missing
//! (its workflow deleted in that instant) fails the backup rather than leave a hole.
//!
//! Only SQLite and directory blob stores are copied. PostgreSQL has its own tools (pg_dump,
//! point-in-time recovery), and a bucket keeps its own history (versioning, replication);
//! with an S3 store the backup holds the database alone and says so.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};

use crate::blobs::BlobStore;
use crate::config::{BackupArgs, DatabaseUrl, RestoreArgs};
use crate::db::schema::screenshots;
use crate::error::AppError;

/// Version of the backup layout; `restore` refuses others.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "stepwise.db";
const BLOBS: &str = "blobs";

/// What `manifest.json` records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    /// The `stepwise` version that made the backup.
    pub stepwise_version: String,
    /// Screenshot rows in the database.
    pub screenshots: usize,
    /// Blob files in `blobs/` (a blob several screenshots share is stored once).
    pub blobs: usize,
    pub blob_bytes: u64,
    /// False when the blob store is a bucket, which the backup does not copy.
    pub blobs_included: bool,
}

/// Makes a backup of the database and blob store `args` name into `args.destination`.
pub async fn backup(args: &BackupArgs) -> anyhow::Result<Manifest> {
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    let DatabaseUrl::Sqlite(database) = &url else {
        bail!(
            "`stepwise backup` copies SQLite databases; back up PostgreSQL with pg_dump or \
             point-in-time recovery (README, \"Backups\")"
        );
    };
    if !database.is_file() {
        bail!("no SQLite database at {}", database.display());
    }
    let destination = &args.destination;
    if destination.exists() {
        bail!(
            "{} already exists; name a new directory",
            destination.display()
        );
    }
    let store = BlobStore::open(&args.blobs, &url)?;
    let partial = sibling(destination, ".partial")?;
    if partial.exists() {
        // Left by a backup that was killed; nothing else writes there.
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    private_dir(&partial)?;
    let result = fill(database, &store, &partial).await;
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    fs::rename(&partial, destination)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    sync_dir(destination.parent().unwrap_or(Path::new(".")));
    Ok(manifest)
}

async fn fill(database: &Path, store: &BlobStore, dir: &Path) -> anyhow::Result<Manifest> {
    let blobs_dir = dir.join(BLOBS);
    private_dir(&blobs_dir)?;
    let mut copied = HashSet::new();
    if store.is_directory() {
        // Pass 1: everything there now (blobs referenced by rows committed before the
        // snapshot are among them, or written before it and caught by pass 2).
        for blob in store
            .written_before(DateTime::<Utc>::MAX_UTC)
            .await
            .map_err(blob_error)?
        {
            if blob_path(&blobs_dir, &blob.key).is_err() {
                tracing::warn!(key = %blob.key, "not a screenshot blob; not backed up");
                continue;
            }
            // A blob removed since the listing was not referenced by the snapshot to come.
            copy_blob(store, &blob.key, &blobs_dir, &mut copied).await?;
        }
    }

    let snapshot = dir.join(DATABASE);
    // VACUUM INTO wants a missing or empty file: an empty one keeps the mode we set.
    private_file(&snapshot)?;
    let (screenshots, keys) = {
        let (source, snapshot) = (database.to_owned(), snapshot.clone());
        tokio::task::spawn_blocking(move || snapshot_database(&source, &snapshot))
            .await
            .context("the snapshot task")??
    };

    let mut missing = Vec::new();
    if store.is_directory() {
        // Pass 2: what the snapshot references and pass 1 did not see.
        for key in &keys {
            if !copied.contains(key) && !copy_blob(store, key, &blobs_dir, &mut copied).await? {
                missing.push(key.clone());
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} of the {} screenshot blob(s) the database references are not in the {} \
             (e.g. {}): is --blob-store / STEPWISE_BLOB_STORE the server's? If it is, they \
             were deleted during the backup; run it again",
            missing.len(),
            keys.len(),
            store.description(),
            missing[0]
        );
    }
    let blob_bytes = copied_bytes(&blobs_dir, &copied)?;
    let manifest = Manifest {
        format: FORMAT,
        created_at: Utc::now(),
        stepwise_version: env!("CARGO_PKG_VERSION").to_owned(),
        screenshots,
        blobs: copied.len(),
        blob_bytes,
        blobs_included: store.is_directory(),
    };
    let mut file = private_file(&dir.join(MANIFEST))?;
    file.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
    file.sync_all()?;
    sync_dir(&blobs_dir);
    sync_dir(dir);
    Ok(manifest)
}

/// `VACUUM INTO` the (empty) `snapshot` file: one read transaction, so a consistent copy
/// while the server keeps writing (WAL readers do not block the writer). Returns the
/// number of screenshots in the snapshot and the blob keys they reference.
fn snapshot_database(source: &Path, snapshot: &Path) -> anyhow::Result<(usize, Vec<String>)> {
    let mut conn = SqliteConnection::establish(&source.to_string_lossy())
        .with_context(|| format!("opening {}", source.display()))?;
    // A writer holding the lock for a moment must not fail the backup.
    diesel::sql_query("PRAGMA busy_timeout = 30000").execute(&mut conn)?;
    diesel::sql_query("VACUUM INTO ?")
        .bind::<Text, _>(snapshot.to_string_lossy().into_owned())
        .execute(&mut conn)
        .with_context(|| format!("VACUUM INTO {}", snapshot.display()))?;
    let mut copy = SqliteConnection::establish(&snapshot.to_string_lossy())
        .with_context(|| format!("opening the snapshot {}", snapshot.display()))?;
    let rows: i64 = screenshots::table
        .count()
        .get_result(&mut copy)
        .context("counting the snapshot's screenshots")?;
    let keys: Vec<String> = screenshots::table
        .select(screenshots::storage_key)
        .distinct()
        .load(&mut copy)
        .context("reading the snapshot's screenshot keys")?;
    Ok((usize::try_from(rows).unwrap_or_default(), keys))
}

/// Copies one blob into `<blobs_dir>/<key>` (0600); false when the store no longer has it.
async fn copy_blob(
    store: &BlobStore,
    key: &str,
    blobs_dir: &Path,
    copied: &mut HashSet<String>,
) -> anyhow::Result<bool> {
    let target = blob_path(blobs_dir, key)?;
    let Some(mut stream) = store.read(key).await.map_err(blob_error)? else {
        return Ok(false);
    };
    if let Some(parent) = target.parent() {
        private_dir_all(parent)?;
    }
    let mut file = private_file(&target)?;
    while let Some(chunk) = stream
        .try_next()
        .await
        .with_context(|| format!("reading blob {key}"))?
    {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    copied.insert(key.to_owned());
    Ok(true)
}

fn copied_bytes(blobs_dir: &Path, copied: &HashSet<String>) -> anyhow::Result<u64> {
    let mut total = 0;
    for key in copied {
        total += fs::metadata(blob_path(blobs_dir, key)?)?.len();
    }
    Ok(total)
}

/// What `restore` did.
#[derive(Debug)]
pub struct Restored {
    pub database: PathBuf,
    pub blob_store: String,
    pub blobs: usize,
    /// False when the backup was made from an S3 store and holds no blobs.
    pub blobs_included: bool,
}

/// Restores the backup in `args.backup` into the database and blob store `args` name.
pub async fn restore(args: &RestoreArgs) -> anyhow::Result<Restored> {
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(args.backup.join(MANIFEST))
            .with_context(|| format!("{} is not a stepwise backup", args.backup.display()))?,
    )
    .context("reading the backup's manifest.json")?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not the format {FORMAT} this stepwise reads",
            manifest.format
        );
    }
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    let DatabaseUrl::Sqlite(database) = &url else {
        bail!("`stepwise restore` restores into SQLite; name the new file with --database-url");
    };
    if database.exists() && !args.force {
        bail!(
            "{} already exists; restore into a new location, or pass --force to replace it",
            database.display()
        );
    }
    if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }

    // Blobs first: a database whose screenshots have no bytes must never be in place.
    let store = BlobStore::open(&args.blobs, &url)?;
    let blobs = backed_up_blobs(&args.backup.join(BLOBS))?;
    for (key, path) in &blobs {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        store.put(key, bytes.into()).await.map_err(blob_error)?;
    }

    // The database under a temporary name, then renamed over the target: never half a file.
    let staging = sibling(database, ".restoring")?;
    let _ = fs::remove_file(&staging);
    {
        let mut target = private_file(&staging)?;
        let mut source = File::open(args.backup.join(DATABASE))
            .with_context(|| format!("opening the backup's {DATABASE}"))?;
        std::io::copy(&mut source, &mut target)?;
        target.sync_all()?;
    }
    // Another database's write-ahead log beside the new file would be replayed into it.
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(sibling(database, suffix)?);
    }
    fs::rename(&staging, database)
        .with_context(|| format!("moving the database into {}", database.display()))?;
    sync_dir(database.parent().unwrap_or(Path::new(".")));
    Ok(Restored {
        database: database.clone(),
        blob_store: store.description().to_owned(),
        blobs: blobs.len(),
        blobs_included: manifest.blobs_included,
    })
}

/// `(key, file)` of every blob in a backup's `blobs/` directory (`<company>/<sha256>`).
fn backed_up_blobs(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for company in fs::read_dir(dir)? {
        let company = company?;
        if !company.file_type()?.is_dir() {
            continue;
        }
        for blob in fs::read_dir(company.path())? {
            let blob = blob?;
            if !blob.file_type()?.is_file() {
                continue;
            }
            let key = format!(
                "{}/{}",
                company.file_name().to_string_lossy(),
                blob.file_name().to_string_lossy()
            );
            blob_path(dir, &key)?;
            found.push((key, blob.path()));
        }
    }
    Ok(found)
}

/// `<dir>/<company>/<sha256>` for a key; refuses anything else (no `..`, no absolute path),
/// so neither a stored key nor a crafted backup can write outside the directory.
fn blob_path(dir: &Path, key: &str) -> anyhow::Result<PathBuf> {
    let parts: Vec<&str> = key.split('/').collect();
    let valid = parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        bail!("unexpected blob key {key:?}");
    }
    Ok(dir.join(parts[0]).join(parts[1]))
}

/// Blob store failures are `AppError::Internal` with the detail inside.
fn blob_error(error: AppError) -> anyhow::Error {
    match error {
        AppError::Internal(error) => error,
        other => anyhow::anyhow!("blob store: {other:?}"),
    }
}

/// `<path><suffix>` beside `path`.
fn sibling(path: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

fn private_dir(path: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn private_dir_all(path: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// A new file readable by its owner only.
fn private_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Makes renames and new entries in `dir` durable; best effort (not every filesystem can).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_stay_inside_the_backup() {
        let dir = Path::new("/b");
        assert_eq!(
            blob_path(dir, "0190-ab/c0ffee").ok(),
            Some(PathBuf::from("/b/0190-ab/c0ffee"))
        );
        for bad in [
            "../x/y",
            "a/..",
            "/etc/passwd",
            "a/b/c",
            "a",
            "a/",
            "a/b.c",
            "",
        ] {
            assert!(blob_path(dir, bad).is_err(), "{bad:?} accepted");
        }
    }
}
