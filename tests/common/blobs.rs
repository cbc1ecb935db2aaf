//! Blob stores for the screenshot tests: the server's default directory, or a bucket on a
//! real S3-compatible server (moto, from PyPI, run in a virtualenv under `target/`).
//!
//! moto is installed by `tests/blobs/install-moto` the first time a test needs it (under a
//! file lock, so concurrently running test binaries install it once) and started once per
//! test binary; it exits when the binary does (it serves until its stdin closes). Each test
//! gets its own bucket, so tests stay independent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{Backend, TestDb};

/// Which blob store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobBackend {
    /// The embedded default: a directory beside the SQLite file (or `./stepwise.blobs`).
    Directory,
    /// An S3-compatible bucket (moto).
    S3,
}

/// A test's blob store, seen from outside the server: what keys exist, and a way to plant
/// blobs the server did not write (a crash's leftovers).
pub struct TestBlobs {
    pub backend: BlobBackend,
    store: Arc<dyn ObjectStore>,
    env: Vec<(String, String)>,
}

impl TestBlobs {
    /// The store for a server about to run on `db`. For directories this is the server's
    /// default location (so the default is what gets tested); for S3, a fresh bucket.
    pub async fn create(backend: BlobBackend, db: &TestDb) -> TestBlobs {
        match backend {
            BlobBackend::Directory => {
                let dir = match db.backend {
                    Backend::Sqlite => db.dir.join("stepwise.db.blobs"),
                    Backend::Postgres => db.dir.join("stepwise.blobs"),
                };
                std::fs::create_dir_all(&dir).expect("create blob dir");
                let store = LocalFileSystem::new_with_prefix(&dir).expect("open blob dir");
                TestBlobs {
                    backend,
                    store: Arc::new(store),
                    env: Vec::new(),
                }
            }
            BlobBackend::S3 => {
                let endpoint = format!("http://127.0.0.1:{}", moto_port());
                let bucket = format!("stepwise-{}", uuid::Uuid::now_v7().simple());
                // moto does not check signatures: a plain PUT creates the bucket.
                let resp = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("http client")
                    .put(format!("{endpoint}/{bucket}"))
                    .send()
                    .await
                    .expect("create bucket");
                assert!(
                    resp.status().is_success(),
                    "creating bucket {bucket}: {}",
                    resp.status()
                );
                let store = AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_endpoint(&endpoint)
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_access_key_id("test")
                    .with_secret_access_key("test")
                    .build()
                    .expect("S3 client");
                let env = [
                    ("STEPWISE_BLOB_STORE", format!("s3://{bucket}")),
                    ("STEPWISE_S3_ENDPOINT", endpoint),
                    ("STEPWISE_S3_REGION", "us-east-1".to_owned()),
                    ("STEPWISE_S3_ACCESS_KEY_ID", "test".to_owned()),
                    ("STEPWISE_S3_SECRET_ACCESS_KEY", "test".to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                TestBlobs {
                    backend,
                    store: Arc::new(store),
                    env,
                }
            }
        }
    }

    /// Environment for `stepwise serve` to use this store.
    pub fn server_env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// Every key in the store, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list blobs");
        keys.sort();
        keys
    }

    /// The bytes at `key`, if any.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.store.get(&ObjectPath::from(key)).await {
            Ok(result) => Some(result.bytes().await.expect("read blob").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading blob {key}: {e}"),
        }
    }

    /// Writes a blob behind the server's back.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .expect("plant blob");
    }
}

// ---------------------------------------------------------------------------
// moto
// ---------------------------------------------------------------------------

/// `tests/blobs` in the source tree.
fn blobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("blobs")
}

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("moto-venv")
}

struct Moto {
    port: u16,
    // Held for the life of the test binary: when it exits, moto reads EOF and stops.
    _stdin: ChildStdin,
    _child: Child,
}

/// The port of this test binary's moto server, installing and starting it on first use.
pub fn moto_port() -> u16 {
    static MOTO: OnceLock<Result<Mutex<Moto>, String>> = OnceLock::new();
    match MOTO.get_or_init(|| start_moto().map(Mutex::new)) {
        Ok(moto) => moto.lock().unwrap_or_else(|e| e.into_inner()).port,
        Err(e) => panic!("{e}"),
    }
}

fn install_moto() -> Result<(), String> {
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stepwise-moto-install.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let output = Command::new(blobs_dir().join("install-moto"))
        .arg(venv_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run tests/blobs/install-moto (python3 is needed): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tests/blobs/install-moto failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn start_moto() -> Result<Moto, String> {
    install_moto()?;
    let mut child = Command::new(venv_dir().join("bin").join("python"))
        .arg(blobs_dir().join("moto_server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start moto: {e}"))?;
    let stdin = child.stdin.take().ok_or("moto stdin")?;
    let stdout = child.stdout.take().ok_or("moto stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so moto never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "moto did not report its port within 60s".to_owned())?;
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("unexpected line from moto: {line:?}"))?;
    Ok(Moto {
        port,
        _stdin: stdin,
        _child: child,
    })
}

// ---------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------

/// POSTs `query` as a GraphQL multipart request (the spec async-graphql implements) with
/// `bytes` as the file at `variables.file`; returns the response body, whatever the status.
pub async fn multipart_request(
    server: &super::TestServer,
    client: &reqwest::Client,
    token: Option<&str>,
    query: &str,
    mut variables: serde_json::Value,
    bytes: Vec<u8>,
) -> serde_json::Value {
    use reqwest::multipart::{Form, Part};
    variables["file"] = serde_json::Value::Null;
    let operations = serde_json::json!({ "query": query, "variables": variables });
    let form = Form::new()
        .text("operations", operations.to_string())
        .text(
            "map",
            serde_json::json!({ "0": ["variables.file"] }).to_string(),
        )
        .part(
            "0",
            Part::bytes(bytes)
                .file_name("screenshot.png")
                .mime_str("image/png")
                .expect("mime"),
        );
    let mut request = client.post(server.url("/graphql")).multipart(form);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("multipart request");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("multipart request answered {status} with non-JSON: {body}"))
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// A real, decodable PNG of `width`×`height` RGB pixels whose colour is derived from `seed`
/// (so different seeds give different bytes). Uncompressed (stored) deflate keeps this
/// encoder tiny.
pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&[seed, (x % 256) as u8, (y % 256) as u8]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
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

/// A baseline JPEG header (SOI, JFIF, SOF0 with the size), a start of scan with a few
/// bytes of (meaningless) scan data, and EOI: enough for the type, size and data checks.
pub fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x00,
    ]);
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01]);
    out.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3F, 0x00,
    ]);
    out.extend_from_slice(&[0xD2, 0xCF, 0x20]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A JPEG header (SOI, JFIF, SOF0) and EOI with no scan: a size and no pixels.
pub fn jpeg_header_only(width: u16, height: u16) -> Vec<u8> {
    let image = jpeg(width, height);
    let scan = image
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("jpeg() writes a scan");
    let mut out = image[..scan].to_vec();
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// An extended-format WebP: a `VP8X` chunk carrying the canvas size and a lossless `VP8L`
/// bitstream header of the same size.
pub fn webp(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut vp8l = vec![0x2F];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    vp8l.extend_from_slice(&[0x00, 0x00, 0x00]);
    webp_with(width, height, Some(&vp8l))
}

/// A WebP canvas (`VP8X`) with no bitstream chunk: a size and no pixels.
pub fn webp_canvas_only(width: u32, height: u32) -> Vec<u8> {
    webp_with(width, height, None)
}

fn webp_with(width: u32, height: u32, vp8l: Option<&[u8]>) -> Vec<u8> {
    let mut vp8x = vec![0u8; 4];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&(vp8x.len() as u32).to_le_bytes());
    body.extend_from_slice(&vp8x);
    if let Some(vp8l) = vp8l {
        body.extend_from_slice(b"VP8L");
        body.extend_from_slice(&(vp8l.len() as u32).to_le_bytes());
        body.extend_from_slice(vp8l);
        if vp8l.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A PNG signature and `IHDR` claiming `width`×`height`, then `IEND`: a header, no pixels
/// (45 bytes).
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Hex SHA-256, as the server computes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Test generation
// ---------------------------------------------------------------------------

/// `every_store!(name)` generates `mod name` with one test per database backend × blob
/// store, each calling `name(Backend, BlobBackend)`. Postgres variants skip (loudly) when
/// Postgres is unreachable outside CI, like `both_backends!`.
#[macro_export]
macro_rules! every_store {
    ($name:ident) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common::Backend;
            use $crate::common::blobs::BlobBackend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_directory() {
                super::$name(Backend::Sqlite, BlobBackend::Directory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_s3() {
                super::$name(Backend::Sqlite, BlobBackend::S3).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_directory() {
                if !Backend::Postgres.available().await {
                    return;
                }
                super::$name(Backend::Postgres, BlobBackend::Directory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_s3() {
                if !Backend::Postgres.available().await {
                    return;
                }
                super::$name(Backend::Postgres, BlobBackend::S3).await;
            }
        }
    };
}
