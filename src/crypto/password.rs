//! Password hashing with argon2id (the crate's defaults follow OWASP's recommendation).
//!
//! Hashing is deliberately slow, so it runs on the blocking pool, never on the async runtime.
//! It is also deliberately memory-hard: each hash or verification allocates 19 MiB. The
//! blocking pool grows to 512 threads, so unbounded, 300 concurrent anonymous logins took
//! the server from 84 MB to 4.76 GB. [`Passwords`] therefore runs at most a few at a time
//! (about two per core: more would only queue for the CPU inside the pool); callers beyond
//! that wait in line for a bounded time and are then told to retry (UNAVAILABLE).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

use crate::error::{AppError, AppResult};

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Long enough for any passphrase, short enough that nobody makes us hash a megabyte.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Checked against when the email is unknown, so a login for an unknown address takes as
/// long as one with a wrong password and timing does not reveal who has an account.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_blocking("stepwise-dummy-password").ok());

pub fn check_policy(password: &str) -> AppResult<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AppError::bad_input(
            "password",
            format!("password must be at least {MIN_PASSWORD_CHARS} characters long"),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(AppError::bad_input(
            "password",
            format!("password must be at most {MAX_PASSWORD_CHARS} characters long"),
        ));
    }
    Ok(())
}

/// What a caller who waited too long for a hashing slot is told to wait before retrying.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Hashes and verifies passwords, a bounded number at a time; one per process.
pub struct Passwords {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Passwords {
    /// At most `concurrency` hashes at once (0: two per available core); a caller waits at
    /// most `queue_timeout` for a slot.
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Self {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(2, |cores| cores.get() * 2),
            n => n,
        };
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            queue_timeout,
        }
    }

    /// A slot for one hash. The permit moves into the blocking task, so a request that is
    /// cancelled while its hash runs still holds the slot until the hash ends: the bound
    /// is on hashes running, not on requests waiting for them.
    async fn slot(&self) -> AppResult<OwnedSemaphorePermit> {
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(AppError::internal(closed)),
            Err(_) => Err(AppError::Unavailable {
                message: "too many sign-ins at once; try again shortly",
                retry_after: BUSY_RETRY_AFTER,
            }),
        }
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            hash_blocking(&password)
        })
        .await
        .map_err(AppError::internal)?
    }

    /// Whether `password` matches `stored`; with `stored = None` it still spends the same
    /// time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> AppResult<bool> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            verify_blocking(&password, stored)
        })
        .await
        .map_err(AppError::internal)?
    }
}

fn verify_blocking(password: &str, stored: Option<String>) -> AppResult<bool> {
    let known = stored.is_some();
    let Some(hash) = stored.or_else(|| DUMMY_HASH.clone()) else {
        return Ok(false);
    };
    let parsed = PasswordHash::new(&hash)
        .map_err(|e| AppError::internal(anyhow::anyhow!("stored hash: {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && known)
}

fn hash_blocking(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing a password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_a_bounded_number_at_a_time_and_callers_wait_a_bounded_time() {
        let passwords = Passwords::new(1, Duration::from_millis(1));
        // The only slot is taken: the next caller gives up with a retryable error.
        let held = passwords.slot().await;
        assert!(held.is_ok());
        let refused = passwords.hash("correct horse".into()).await;
        assert!(
            matches!(refused, Err(AppError::Unavailable { .. })),
            "{:?}",
            refused.err()
        );
        drop(held);
        let hash = passwords.hash("correct horse".into()).await;
        let hash = hash.unwrap_or_else(|e| panic!("{e:?}"));
        let verified = passwords
            .verify("correct horse".into(), Some(hash.clone()))
            .await;
        assert!(matches!(verified, Ok(true)));
        let wrong = passwords.verify("wrong horse".into(), Some(hash)).await;
        assert!(matches!(wrong, Ok(false)));
        let unknown = passwords.verify("correct horse".into(), None).await;
        assert!(matches!(unknown, Ok(false)));
    }
}
