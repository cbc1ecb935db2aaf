//! Screenshots: the images recorded with steps, de-duplicated per company by SHA-256.
//!
//! The bytes live in the [`BlobStore`] under `<company_id>/<sha256>`; a row here is what
//! makes a blob *referenced*. Two rules keep rows and blobs consistent without a
//! distributed transaction:
//!
//! 1. **Blob first, row second.** An upload writes the blob, then inserts the row. A crash
//!    or a failed insert in between leaves an unreferenced blob (collected later by
//!    [`sweep_blobs`]), never a row pointing at nothing.
//! 2. **Deciding a blob's fate is serialised per company.** The upload's insert and the
//!    collector's "no row references it → delete" both run in a transaction that first
//!    takes the company row's lock ([`lock_company`]). Either the upload commits first (the
//!    collector then sees the row and keeps the blob) or the collector deletes first (the
//!    upload, after committing, finds the blob gone and writes it again — it still holds the
//!    bytes). So a blob that has a row is never left deleted, even when an upload of the same
//!    bytes races a workflow deletion or the sweep.

use bytes::Bytes;
use chrono::{NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use sha2::{Digest as _, Sha256};

use super::visibility::{self, Need};
use super::{Tenant, new_id, now, version};
use crate::blobs::BlobStore;
use crate::crypto::hex;
use crate::db::schema::{companies, screenshots, steps, template_screenshots, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// The formats a screenshot may have, recognised by their magic bytes (never by the
/// client's file name or declared content type).
pub const ACCEPTED_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];
/// Larger images than this (per side) are refused: no real screen is this big, and the
/// limit keeps `i32` columns and browsers safe.
const MAX_SIDE_PIXELS: usize = 65_535;
pub use crate::config::DEFAULT_MAX_PIXELS;
/// How much the hasher takes at a time.
const HASH_CHUNK_BYTES: usize = 64 * 1024;
/// At most this many blobs are examined per sweep; the next sweep takes the rest.
const SWEEP_BATCH: usize = 1_000;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = screenshots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Screenshot {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    /// Hex SHA-256 of the bytes; unique within a company, never across companies.
    pub hash: String,
    pub storage_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub width: i32,
    pub height: i32,
    pub created_at: NaiveDateTime,
}

impl TenantRow for Screenshot {
    type Table = screenshots::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Screenshot> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("screenshot"))
}

/// The tenant's screenshots among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Screenshot>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.screenshots()
            .filter(screenshots::id.eq_any(ids))
            .select(Screenshot::columns()),
    )
    .await
}

/// The screenshots recorded for the given workflows, oldest first.
pub async fn of_workflows(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<Screenshot>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.screenshots()
            .filter(screenshots::workflow_id.eq_any(workflow_ids))
            .order((screenshots::created_at.asc(), screenshots::id.asc()))
            .select(Screenshot::columns()),
    )
    .await
}

/// What the signed-URL endpoint serves: a screenshot, or a screenshot a template includes
/// (with an id of its own, so a template shows none of its publisher's ids).
#[derive(Debug, Clone)]
pub struct SignedImage {
    pub id: String,
    /// The company the URL's signature binds.
    pub company_id: String,
    pub hash: String,
    pub storage_key: String,
    pub content_type: String,
    pub size_bytes: i64,
}

/// One image by id in *any* company, for the signed-URL endpoint: the caller must then
/// check the URL's signature, which binds the row's company. Unscoped on purpose: the
/// request carries no token, only the signed URL.
pub async fn find_for_signed_url(db: &Db, id: &str) -> AppResult<Option<SignedImage>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let row: Option<(String, String, String, String, String, i64)> = all
        .optional(
            all.screenshots()
                .filter(screenshots::id.eq(id))
                .select((
                    screenshots::id,
                    screenshots::company_id,
                    screenshots::hash,
                    screenshots::storage_key,
                    screenshots::content_type,
                    screenshots::size_bytes,
                ))
                .limit(1),
        )
        .await?;
    let row = match row {
        Some(row) => Some(row),
        None => {
            all.optional(
                all.template_screenshots()
                    .filter(template_screenshots::id.eq(id))
                    .select((
                        template_screenshots::id,
                        template_screenshots::company_id,
                        template_screenshots::hash,
                        template_screenshots::storage_key,
                        template_screenshots::content_type,
                        template_screenshots::size_bytes,
                    ))
                    .limit(1),
            )
            .await?
        }
    };
    Ok(row.map(
        |(id, company_id, hash, storage_key, content_type, size_bytes)| SignedImage {
            id,
            company_id,
            hash,
            storage_key,
            content_type,
            size_bytes,
        },
    ))
}

/// How large an upload may be.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Bytes of the file.
    pub max_bytes: usize,
    /// Pixels of the image (width × height).
    pub max_pixels: u64,
}

/// What the magic bytes say an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub content_type: &'static str,
    pub width: i32,
    pub height: i32,
}

/// Recognises PNG, JPEG and WebP by content, reads the dimensions, and refuses files that
/// are cut short (a missing PNG `IEND`, JPEG end marker or WebP RIFF length), that carry no
/// pixel data behind their header (no PNG `IDAT`, no JPEG start of scan, no WebP `VP8 `/
/// `VP8L` bitstream), or that claim more than `max_pixels` pixels.
pub fn inspect(bytes: &[u8], max_pixels: u64) -> AppResult<ImageInfo> {
    let refuse = |message: &str| Err(AppError::bad_input("file", message));
    let content_type = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => "image/png",
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Webp) => "image/webp",
        _ => return refuse("file must be a PNG, JPEG or WebP image"),
    };
    let complete = match content_type {
        "image/png" => bytes.ends_with(&[0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]),
        // Some encoders pad after the end-of-image marker; look near the end only.
        "image/jpeg" => bytes[bytes.len().saturating_sub(64)..]
            .windows(2)
            .any(|w| w == [0xFF, 0xD9]),
        _ => bytes
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .and_then(|riff| usize::try_from(riff).ok())
            .is_some_and(|riff| riff.checked_add(8) == Some(bytes.len())),
    };
    if !complete {
        return refuse("the image is truncated");
    }
    let has_pixels = match content_type {
        "image/png" => png_has_image_data(bytes),
        "image/jpeg" => jpeg_has_scan(bytes),
        _ => webp_has_bitstream(bytes),
    };
    if !has_pixels {
        return refuse("the image has a header but no image data");
    }
    let size = match imagesize::blob_size(bytes) {
        Ok(size) if size.width > 0 && size.height > 0 => size,
        _ => return refuse("the image's dimensions cannot be read"),
    };
    if size.width > MAX_SIDE_PIXELS || size.height > MAX_SIDE_PIXELS {
        return refuse("the image is larger than 65535 pixels on a side");
    }
    let area = (size.width as u64).saturating_mul(size.height as u64);
    if area > max_pixels {
        return Err(AppError::bad_input(
            "file",
            format!(
                "the image has {area} pixels ({}×{}); at most {max_pixels} are accepted",
                size.width, size.height
            ),
        ));
    }
    Ok(ImageInfo {
        content_type,
        width: i32::try_from(size.width).map_err(AppError::internal)?,
        height: i32::try_from(size.height).map_err(AppError::internal)?,
    })
}

/// Whether a PNG has a non-empty `IDAT` chunk before `IEND`. Walks the chunk headers
/// only (length, type), so the cost is one step per chunk.
fn png_has_image_data(bytes: &[u8]) -> bool {
    let mut at = 8; // the signature
    while let Some(header) = bytes.get(at..at + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"IDAT" => return length > 0 && at + 12 + length <= bytes.len(),
            b"IEND" => return false,
            _ => at = at.saturating_add(12).saturating_add(length),
        }
    }
    false
}

/// Whether a JPEG reaches a start-of-scan marker (`FFDA`) with entropy-coded data after
/// its header, walking the marker segments from the start of the image.
fn jpeg_has_scan(bytes: &[u8]) -> bool {
    let mut at = 2; // SOI
    loop {
        if bytes.get(at) != Some(&0xFF) {
            return false;
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return false;
        };
        at += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return false, // end of image before any scan
            _ => {}
        }
        let Some(length) = bytes
            .get(at..at + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .filter(|l| *l >= 2)
        else {
            return false;
        };
        if marker == 0xDA {
            // The scan header, then at least one byte of data before the end marker.
            return at + length + 2 < bytes.len();
        }
        at += length;
    }
}

/// Whether a WebP carries a `VP8 ` (lossy) or `VP8L` (lossless) bitstream chunk; a `VP8X`
/// header alone only declares a canvas.
fn webp_has_bitstream(bytes: &[u8]) -> bool {
    let mut at = 12; // RIFF, size, WEBP
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let fits = at
            .checked_add(8)
            .and_then(|start| start.checked_add(size))
            .is_some_and(|end| end <= bytes.len());
        if matches!(&header[0..4], b"VP8 " | b"VP8L") {
            return size > 0 && fits;
        }
        // Chunks are padded to an even size.
        at = at
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    false
}

/// Hex SHA-256, fed a chunk at a time as the bytes arrived.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for chunk in bytes.chunks(HASH_CHUNK_BYTES) {
        hasher.update(chunk);
    }
    hex(&hasher.finalize())
}

/// Takes the company row's lock, serialising every decision about this company's blobs
/// (see the module notes). A no-op write is the portable way: it takes a row lock on
/// Postgres that does not block inserts referencing the company, and on SQLite the write
/// transaction is already the single writer.
async fn lock_company<E: Send>(tx: &mut Tx<E>) -> AppResult<()> {
    tx.execute(
        tx.company()
            .set(companies::updated_at.eq(companies::updated_at)),
    )
    .await?;
    Ok(())
}

/// Stores an uploaded screenshot for a workflow, optionally showing it on one of the
/// workflow's steps. The same bytes uploaded again by the same company return the existing
/// screenshot (and store nothing new).
pub async fn upload(
    db: &Db,
    blobs: &BlobStore,
    tenant: &Tenant,
    workflow_id: &str,
    step_id: Option<&str>,
    bytes: Bytes,
    limits: ImageLimits,
) -> AppResult<Screenshot> {
    let ImageLimits {
        max_bytes,
        max_pixels,
    } = limits;
    if bytes.is_empty() {
        return Err(AppError::bad_input("file", "file is empty"));
    }
    if bytes.len() > max_bytes {
        return Err(AppError::bad_input(
            "file",
            format!("file is larger than the limit of {max_bytes} bytes"),
        ));
    }
    let image = inspect(&bytes, max_pixels)?;
    let hash = sha256_hex(&bytes);
    let key = BlobStore::key(tenant.id(), &hash);

    // Refuse unknown targets before writing anything. The read's connection goes back
    // before the blob is written and the unit of work below takes one.
    let existing = {
        let mut tx = db.read(tenant).await?;
        let known: Option<String> = tx
            .optional(
                tx.workflows()
                    .filter(workflows::id.eq(workflow_id))
                    .select(workflows::id)
                    .limit(1),
            )
            .await?;
        if known.is_none() {
            return Err(AppError::NotFound("workflow"));
        }
        visibility::require(&mut tx, workflow_id, Need::Edit).await?;
        if let Some(step_id) = step_id {
            let step: Option<String> = tx
                .optional(
                    tx.steps()
                        .filter(steps::workflow_id.eq(workflow_id))
                        .filter(steps::id.eq(step_id))
                        .select(steps::id)
                        .limit(1),
                )
                .await?;
            if step.is_none() {
                return Err(AppError::NotFound("step"));
            }
        }
        find_by_hash(&mut tx, &hash).await?
    };
    // Blob first, row second, and the blob outside the unit of work: that may run again.
    if existing.is_none() {
        blobs.put(&key, bytes.clone()).await?;
    }

    let new_row = Screenshot {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: workflow_id.to_owned(),
        hash: hash.clone(),
        storage_key: key.clone(),
        content_type: image.content_type.to_owned(),
        size_bytes: i64::try_from(bytes.len()).map_err(AppError::internal)?,
        width: image.width,
        height: image.height,
        created_at: now(),
    };
    let new_row = &new_row;
    let row = db
        .write(tenant, |tx| {
            recorded(tx, workflow_id, step_id, new_row).into_work()
        })
        .await?;

    // The row is committed. If the blob is not there — the collector removed it before our
    // row existed, or an earlier upload crashed after losing it — write it now: we hold the
    // bytes, and from here on the row protects it.
    if !blobs.exists(&key).await? {
        blobs.put(&key, bytes).await?;
    }
    Ok(row)
}

/// The screenshot row of an upload, under the company lock: the one a concurrent upload
/// of the same bytes committed first, or `new_row`; shown on `step_id` when given.
async fn recorded(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    step_id: Option<&str>,
    new_row: &Screenshot,
) -> AppResult<Screenshot> {
    lock_company(tx).await?;
    visibility::require(tx, workflow_id, Need::Edit).await?;
    // Re-read under the lock: a concurrent upload of the same bytes may have won.
    let row = match find_by_hash(tx, &new_row.hash).await? {
        Some(row) => row,
        None => {
            let mut row = new_row.clone();
            tx.insert(&mut row).await?;
            row
        }
    };
    if let Some(step_id) = step_id {
        let at = now();
        // The workflow before its step: the lock order of the `domain` docs.
        super::step::touch_workflow(tx, workflow_id, at).await?;
        let attached = tx
            .execute(
                tx.steps()
                    .filter(steps::workflow_id.eq(workflow_id))
                    .filter(steps::id.eq(step_id))
                    .set((steps::screenshot_id.eq(&row.id), steps::updated_at.eq(at))),
            )
            .await?;
        if attached == 0 {
            return Err(AppError::NotFound("step"));
        }
        let number: i32 = tx
            .one(
                tx.steps()
                    .filter(steps::id.eq(step_id))
                    .select(steps::step_number),
            )
            .await?;
        version::changed(
            tx,
            workflow_id,
            format!("changed the screenshot of step {number}"),
        );
    }
    Ok(row)
}

/// The company's screenshot of these bytes, whichever workflow holds it: bytes are
/// stored once per company, also when a member uploading them may not see that workflow
/// (they hold the bytes already; the row's workflow stays hidden from them).
async fn find_by_hash<E: Send>(tx: &mut Tx<E>, hash: &str) -> AppResult<Option<Screenshot>> {
    let mut company = tx.company_wide();
    company
        .optional(
            company
                .screenshots()
                .filter(screenshots::hash.eq(hash))
                .select(Screenshot::columns())
                .limit(1),
        )
        .await
}

/// Deletes the company's blob at `key` unless a screenshot row references it, deciding
/// under the company lock. Answers whether it was deleted.
pub async fn collect_blob(
    db: &Db,
    blobs: &BlobStore,
    tenant: &Tenant,
    key: &str,
) -> AppResult<bool> {
    db.write(tenant, |tx| collected(tx, blobs, key).into_work())
        .await
}

/// The one write body that does I/O outside the database, on purpose: the blob is deleted
/// while the company lock is held, so no upload can commit a row for it meanwhile. Should
/// the unit of work run again (PostgreSQL contention), deleting a blob that is already
/// gone does nothing, so a repeat is harmless.
async fn collected(tx: &mut Tx<NoEvents>, blobs: &BlobStore, key: &str) -> AppResult<bool> {
    lock_company(tx).await?;
    // Whoever asked, every row of the company counts: a member's view must not decide
    // that bytes another workflow shows are unreferenced.
    let mut company = tx.company_wide();
    let references: i64 = company
        .one(
            company
                .screenshots()
                .filter(screenshots::storage_key.eq(key))
                .count(),
        )
        .await?;
    // Templates that include the image keep it too.
    let template_references: i64 = company
        .one(
            company
                .template_screenshots()
                .filter(template_screenshots::storage_key.eq(key))
                .count(),
        )
        .await?;
    if references > 0 || template_references > 0 {
        return Ok(false);
    }
    blobs.delete(key).await?;
    Ok(true)
}

/// After screenshot rows were deleted: removes their blobs if nothing references them any
/// more. Failures are logged, not returned: the rows are gone either way, and the sweep
/// collects what is left.
pub async fn release_blobs(db: &Db, blobs: &BlobStore, tenant: &Tenant, keys: &[String]) {
    for key in keys {
        if let Err(error) = collect_blob(db, blobs, tenant, key).await {
            tracing::warn!(key = %key, ?error, "could not remove an unreferenced blob; the sweep will");
        }
    }
}

/// The sweep: removes blobs that no screenshot row references and that were last written
/// longer than `grace` ago (younger ones may belong to an upload whose row is not committed
/// yet). Answers how many it removed. Safe on several instances at once.
pub async fn sweep_blobs(
    db: &Db,
    blobs: &BlobStore,
    grace: std::time::Duration,
) -> AppResult<usize> {
    let grace = TimeDelta::from_std(grace).map_err(AppError::internal)?;
    let Some(cutoff) = Utc::now().checked_sub_signed(grace) else {
        return Ok(0);
    };
    let mut candidates = blobs.written_before(cutoff).await?;
    candidates.truncate(SWEEP_BATCH);
    let keys: Vec<String> = candidates.into_iter().map(|b| b.key).collect();
    // The sweep acts for no viewer: one cheap read across companies finds the few blobs
    // worth a locked look, then each is decided as its own company's.
    let referenced: Vec<String> = {
        let mut tx = db.read_unscoped().await?;
        let mut all = tx.unscoped();
        let mut referenced: Vec<String> = all
            .load(
                all.screenshots()
                    .filter(screenshots::storage_key.eq_any(&keys))
                    .select(screenshots::storage_key),
            )
            .await?;
        referenced.extend(
            all.load::<_, String>(
                all.template_screenshots()
                    .filter(template_screenshots::storage_key.eq_any(&keys))
                    .select(template_screenshots::storage_key),
            )
            .await?,
        );
        referenced
    };
    let mut removed = 0;
    for key in keys.iter().filter(|k| !referenced.contains(k)) {
        let Some(company_id) = BlobStore::company_of(key) else {
            tracing::warn!(key = %key, "blob key names no company; left alone");
            continue;
        };
        let tenant = Tenant::new(company_id.to_owned());
        match collect_blob(db, blobs, &tenant, key).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(key = %key, ?error, "could not remove an unreferenced blob")
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some (not necessarily valid) compressed pixel data.
    const ZLIB: &[u8] = &[0x78, 0x01, 0x00];

    /// A PNG of `width`×`height` with the given chunks after `IHDR` (CRCs are not checked).
    fn png(width: u32, height: u32, chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut out = vec![0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let mut chunk = |kind: &[u8; 4], data: &[u8], crc: [u8; 4]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc);
        };
        chunk(b"IHDR", &ihdr, [0; 4]);
        for (kind, data) in chunks {
            chunk(kind, data, [0; 4]);
        }
        chunk(b"IEND", &[], [0xAE, 0x42, 0x60, 0x82]);
        out
    }

    /// A JPEG (SOI, SOF0 with the size, optionally a scan, EOI).
    fn jpeg(width: u16, height: u16, scan: bool) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08];
        out.extend_from_slice(&height.to_be_bytes());
        out.extend_from_slice(&width.to_be_bytes());
        out.extend_from_slice(&[0x01, 0x01, 0x11, 0x00]);
        if scan {
            out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
            out.extend_from_slice(&[0x12, 0x34, 0x56]);
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    /// A WebP made of the given chunks, with a correct RIFF length.
    fn webp(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (kind, data) in chunks {
            body.extend_from_slice(*kind);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn vp8x(width: u32, height: u32) -> Vec<u8> {
        let mut data = vec![0u8; 4];
        data.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
        data.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
        data
    }

    /// A VP8L header: signature, then 14-bit width-1 and height-1, alpha and version bits.
    fn vp8l(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | ((height - 1) << 14);
        let mut data = vec![0x2F];
        data.extend_from_slice(&bits.to_le_bytes());
        data.push(0);
        data
    }

    fn inspected(bytes: &[u8]) -> Result<ImageInfo, String> {
        inspect(bytes, DEFAULT_MAX_PIXELS).map_err(|e| e.client_message())
    }

    #[test]
    fn images_are_recognised_by_their_bytes() {
        let image = png(2, 3, &[(b"IDAT", ZLIB)]);
        let info = inspected(&image);
        assert_eq!(
            info,
            Ok(ImageInfo {
                content_type: "image/png",
                width: 2,
                height: 3
            })
        );
        assert!(inspected(b"GIF89a....").is_err());
        assert!(inspected(&image[..30]).is_err());
        let info = inspected(&jpeg(800, 600, true)).map(|i| (i.content_type, i.width, i.height));
        assert_eq!(info, Ok(("image/jpeg", 800, 600)));
        let lossless = webp(&[(b"VP8X", vp8x(1280, 720)), (b"VP8L", vp8l(1280, 720))]);
        let info = inspected(&lossless).map(|i| (i.content_type, i.width, i.height));
        assert_eq!(info, Ok(("image/webp", 1280, 720)));
        let simple = webp(&[(b"VP8L", vp8l(16, 9))]);
        assert_eq!(inspected(&simple).map(|i| (i.width, i.height)), Ok((16, 9)));
    }

    #[test]
    fn headers_without_image_data_are_refused() {
        let no_data = "the image has a header but no image data";
        // The 45-byte PNG of the issue: a header claiming 65535×65535 and nothing else.
        let bomb = png(65_535, 65_535, &[]);
        assert_eq!(bomb.len(), 45);
        assert_eq!(inspected(&bomb).err().as_deref(), Some(no_data));
        // Ancillary chunks are not image data; an empty IDAT is none either.
        let text_only = png(10, 10, &[(b"tEXt", &b"Comment\0hi"[..])]);
        assert_eq!(inspected(&text_only).err().as_deref(), Some(no_data));
        let empty_idat = png(10, 10, &[(b"IDAT", &[][..])]);
        assert_eq!(inspected(&empty_idat).err().as_deref(), Some(no_data));
        // A JPEG header with no start of scan.
        assert_eq!(
            inspected(&jpeg(800, 600, false)).err().as_deref(),
            Some(no_data)
        );
        // A WebP canvas (VP8X) with no bitstream.
        let canvas_only = webp(&[(b"VP8X", vp8x(16_000, 16_000))]);
        assert_eq!(inspected(&canvas_only).err().as_deref(), Some(no_data));
        // A chunk length running past the end of the file is not data either.
        let mut lying = png(10, 10, &[(b"IDAT", &[1u8, 2, 3][..])]);
        lying[33..37].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(inspected(&lying).err().as_deref(), Some(no_data));
    }

    #[test]
    fn the_pixel_count_is_capped() {
        let huge = png(65_535, 65_535, &[(b"IDAT", ZLIB)]);
        let refused = inspected(&huge).err().unwrap_or_default();
        assert!(refused.contains("at most 50000000"), "{refused}");
        // Exactly at the cap is fine; one row more is not.
        let at_cap = png(10_000, 5_000, &[(b"IDAT", ZLIB)]);
        assert!(inspected(&at_cap).is_ok());
        let over = png(10_000, 5_001, &[(b"IDAT", ZLIB)]);
        assert!(inspected(&over).is_err());
        assert!(inspect(&at_cap, 1_000).is_err());
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
