//! Blob storage: where screenshot bytes live, behind one small interface over the
//! `object_store` crate. The embedded default is a directory beside the SQLite file;
//! production uses an S3-compatible bucket.
//!
//! Keys are content-addressed *per company* (`<company_id>/<sha256>`), never global, so one
//! company's blobs can neither collide with nor reveal another's. What may be deleted and
//! when is decided by the screenshot domain code; this module only moves bytes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::config::{BlobArgs, DatabaseUrl};
use crate::error::{AppError, AppResult};

/// The blob store in use; cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// For logs: which store this is (no credentials).
    description: String,
    /// The directory of a local store, whose directories and files are kept private to the
    /// server's user (see [`BlobStore::put`]); `None` for S3 (which backups do not copy).
    local_root: Option<PathBuf>,
}

/// Modes of what a local store creates: screenshots are company data, not for other users
/// of the machine. (Without `unsafe` there is no umask call, so modes are set explicitly.)
#[cfg(unix)]
const PRIVATE_DIR_MODE: u32 = 0o700;
#[cfg(unix)]
const PRIVATE_FILE_MODE: u32 = 0o600;

/// A blob's key and when it was last written.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub key: String,
    pub last_modified: DateTime<Utc>,
}

/// A blob being read: its bytes arrive as a stream.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

impl BlobStore {
    /// Opens the store named by `--blob-store` (or the default beside the database).
    pub fn open(args: &BlobArgs, database: &DatabaseUrl) -> anyhow::Result<Self> {
        let location = args.blob_store.clone().map(|s| s.trim().to_owned());
        match location.as_deref() {
            Some(url) if url.starts_with("s3://") || url.starts_with("s3a://") => {
                Self::s3(args, url)
            }
            Some(url) if url.contains("://") && !url.starts_with("file://") => anyhow::bail!(
                "unsupported blob store {url:?}: use a directory, file://DIR or s3://BUCKET"
            ),
            Some(url) => Self::directory(PathBuf::from(url.strip_prefix("file://").unwrap_or(url))),
            None => Self::directory(default_directory(database)),
        }
    }

    /// A directory on the local filesystem, created if missing.
    pub fn directory(dir: PathBuf) -> anyhow::Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
        builder
            .create(&dir)
            .with_context(|| format!("creating the blob directory {}", dir.display()))?;
        // fsync: a blob must be durable before the row that points at it commits.
        let store = LocalFileSystem::new_with_prefix(&dir)
            .with_context(|| format!("opening the blob directory {}", dir.display()))?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            description: format!("directory {}", dir.display()),
            local_root: Some(dir),
        })
    }

    fn s3(args: &BlobArgs, url: &str) -> anyhow::Result<Self> {
        // `s3://bucket/prefix`: object_store takes the bucket from the URL; a prefix is ours.
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("blob store {url:?} names no bucket");
        }
        // AWS_* variables (credentials, region, endpoint...) first; explicit flags win.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = args
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &args.s3_region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &args.s3_access_key_id {
            builder = builder.with_access_key_id(key.expose());
        }
        if let Some(secret) = &args.s3_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        let s3 = builder
            .with_virtual_hosted_style_request(args.s3_virtual_hosted_style)
            .build()
            .context("configuring the S3 blob store")?;
        let prefix = prefix.trim_matches('/');
        let description = match &endpoint {
            Some(endpoint) => format!(
                "s3 bucket {bucket} at {}",
                crate::config::redact_urls(endpoint)
            ),
            None => format!("s3 bucket {bucket}"),
        };
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self {
            store,
            description,
            local_root: None,
        })
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the blobs live in a local directory (not an S3-compatible bucket).
    pub fn is_directory(&self) -> bool {
        self.local_root.is_some()
    }

    /// The key of a company's blob with this SHA-256: one namespace per company.
    pub fn key(company_id: &str, sha256_hex: &str) -> String {
        format!("{company_id}/{sha256_hex}")
    }

    /// The company a key belongs to (its first segment).
    pub fn company_of(key: &str) -> Option<&str> {
        key.split_once('/')
            .map(|(company, _)| company)
            .filter(|c| !c.is_empty())
    }

    /// Writes (or rewrites) a blob atomically: readers see the old bytes or the new ones,
    /// never a part. Content addressing makes a rewrite harmless — the bytes are equal —
    /// and it refreshes the blob's age, which keeps the sweep away from it.
    ///
    /// In a local store the company's directory is created 0700 before the write (the store
    /// would create it with the default mode) and the file is made 0600 after it; inside a
    /// private directory the file is out of other users' reach even before that.
    pub async fn put(&self, key: &str, bytes: Bytes) -> AppResult<()> {
        let location = path(key)?;
        let file = self.local_root.as_ref().map(|root| root.join(key));
        if let Some(parent) = file.as_ref().and_then(|f| f.parent()) {
            let mut builder = tokio::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            builder.mode(PRIVATE_DIR_MODE);
            builder
                .create(parent)
                .await
                .with_context(|| format!("creating the blob directory {}", parent.display()))
                .map_err(AppError::internal)?;
        }
        self.store
            .put(&location, PutPayload::from_bytes(bytes))
            .await
            .with_context(|| format!("writing blob {key} to {}", self.description))
            .map_err(AppError::internal)?;
        #[cfg(unix)]
        if let Some(file) = &file {
            use std::os::unix::fs::PermissionsExt as _;
            let private = std::fs::Permissions::from_mode(PRIVATE_FILE_MODE);
            match tokio::fs::set_permissions(file, private).await {
                Ok(()) => {}
                // Collected between the write and here (no row referenced it yet, e.g. the
                // workflow holding it was just deleted): nothing is left to make private.
                // An upload writes the blob again once its committed row protects it.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(AppError::internal(
                        anyhow::Error::new(error).context(format!("making blob {key} private")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the blob exists.
    pub async fn exists(&self, key: &str) -> AppResult<bool> {
        match self.store.head(&path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(AppError::internal(
                anyhow::Error::new(error).context(format!("looking up blob {key}")),
            )),
        }
    }

    /// The blob's bytes as a stream, or `None` when it does not exist.
    pub async fn read(&self, key: &str) -> AppResult<Option<BlobStream>> {
        match self.store.get(&path(key)?).await {
            Ok(result) => Ok(Some(
                result.into_stream().map_err(std::io::Error::other).boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(AppError::internal(
                anyhow::Error::new(error).context(format!("reading blob {key}")),
            )),
        }
    }

    /// Deletes a blob; one that is already gone is fine.
    pub async fn delete(&self, key: &str) -> AppResult<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(AppError::internal(
                anyhow::Error::new(error).context(format!("deleting blob {key}")),
            )),
        }
    }

    /// Every blob last written before `cutoff`.
    pub async fn written_before(&self, cutoff: DateTime<Utc>) -> AppResult<Vec<BlobInfo>> {
        let mut listing = self.store.list(None);
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta
                .with_context(|| format!("listing blobs in {}", self.description))
                .map_err(AppError::internal)?;
            if meta.last_modified < cutoff {
                found.push(BlobInfo {
                    key: meta.location.to_string(),
                    last_modified: meta.last_modified,
                });
            }
        }
        Ok(found)
    }
}

/// Keys are built by [`BlobStore::key`] from a UUID and a hex digest; anything else (a
/// stored key edited by hand, say) is refused rather than sent to the store.
fn path(key: &str) -> AppResult<Path> {
    Path::parse(key)
        .ok()
        .filter(|p| p.as_ref() == key && !key.is_empty())
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("malformed blob key {key:?}")))
}

/// `<sqlite file>.blobs` beside the database, or `./stepwise.blobs` on Postgres (the same
/// rule as the generated JWT secret file).
fn default_directory(database: &DatabaseUrl) -> PathBuf {
    match database {
        DatabaseUrl::Sqlite(db) => {
            let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(".blobs");
            db.with_file_name(name)
        }
        DatabaseUrl::Postgres(_) => PathBuf::from("stepwise.blobs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_company() {
        let key = BlobStore::key("c1", "ab12");
        assert_eq!(key, "c1/ab12");
        assert_eq!(BlobStore::company_of(&key), Some("c1"));
        assert_eq!(BlobStore::company_of("nokey"), None);
        assert!(path("c1/ab12").is_ok());
        assert!(path("../etc/passwd").is_err());
        assert!(path("").is_err());
    }

    #[test]
    fn the_default_directory_sits_beside_the_database() {
        let db = DatabaseUrl::Sqlite(PathBuf::from("/data/stepwise.db"));
        assert_eq!(
            default_directory(&db),
            PathBuf::from("/data/stepwise.db.blobs")
        );
    }
}
