//! Short-lived signed URLs for screenshots: `GET /screenshots/{id}?expires=..&signature=..`.
//!
//! An `<img src>` cannot send an `Authorization` header, so the right to read one image is
//! carried by the URL itself: an HMAC-SHA256 over the company, the screenshot id and the
//! expiry. Only a signed-in member's query mints one, so a URL is as good as that member's
//! read access, for a few minutes. Binding the company means a row id alone, even leaked,
//! is worth nothing, and the signature of one screenshot is useless for any other.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::hex;

/// Keys shorter than this are refused: the signature is only as strong as its key.
const MIN_SECRET_BYTES: usize = 32;
/// Domain separation: a key derived from the JWT secret signs nothing a token could be.
const DERIVATION_LABEL: &[u8] = b"stepwise screenshot url signing v1";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks screenshot URLs; one per process.
pub struct UrlSigner {
    key: Vec<u8>,
    ttl: Duration,
}

/// Why a signed URL is refused. Both answer 403; the difference is only for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    BadSignature,
}

impl UrlSigner {
    /// With its own secret, or (`own_secret` = None) a key derived from the JWT secret.
    pub fn new(
        own_secret: Option<&[u8]>,
        jwt_secret: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let key = match own_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                anyhow::bail!(
                    "the screenshot URL secret must be at least {MIN_SECRET_BYTES} bytes long"
                )
            }
            Some(secret) => secret.to_vec(),
            None => {
                let mut mac = HmacSha256::new_from_slice(jwt_secret)
                    .map_err(|e| anyhow::anyhow!("deriving the URL signing key: {e}"))?;
                mac.update(DERIVATION_LABEL);
                mac.finalize().into_bytes().to_vec()
            }
        };
        Ok(Self {
            key,
            ttl: ttl.max(Duration::from_secs(1)),
        })
    }

    /// The query string (`expires=..&signature=..`) granting access to one screenshot
    /// until `now + ttl` (Unix seconds).
    pub fn sign(&self, company_id: &str, screenshot_id: &str, now: i64) -> (i64, String) {
        let expires = now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let signature = hex(&self
            .mac(company_id, screenshot_id, expires)
            .finalize()
            .into_bytes());
        (expires, signature)
    }

    /// Checks a presented signature in constant time, then the expiry.
    pub fn verify(
        &self,
        company_id: &str,
        screenshot_id: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        let presented = unhex(signature).ok_or(Refusal::BadSignature)?;
        self.mac(company_id, screenshot_id, expires)
            .verify_slice(&presented)
            .map_err(|_| Refusal::BadSignature)?;
        if expires <= now {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    fn mac(&self, company_id: &str, screenshot_id: &str, expires: i64) -> HmacSha256 {
        // Ids are UUIDs and `expires` a number, so newline-separated fields cannot be shifted
        // into one another to forge a different message.
        #[allow(clippy::expect_used)] // HMAC takes keys of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(b"screenshot\n");
        mac.update(company_id.as_bytes());
        mac.update(b"\n");
        mac.update(screenshot_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> UrlSigner {
        UrlSigner::new(None, &[7u8; 32], Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_signature_binds_company_id_and_expiry() {
        let signer = signer();
        let (expires, sig) = signer.sign("c1", "s1", 1_000);
        assert_eq!(expires, 1_060);
        assert_eq!(signer.verify("c1", "s1", expires, &sig, 1_000), Ok(()));
        assert_eq!(
            signer.verify("c2", "s1", expires, &sig, 1_000),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            signer.verify("c1", "s2", expires, &sig, 1_000),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            signer.verify("c1", "s1", expires + 1, &sig, 1_000),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            signer.verify("c1", "s1", expires, &sig, 1_060),
            Err(Refusal::Expired)
        );
        assert_eq!(
            signer.verify("c1", "s1", expires, "zz", 1_000),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn short_own_secrets_are_refused() {
        assert!(UrlSigner::new(Some(b"short"), &[0u8; 32], Duration::from_secs(1)).is_err());
    }
}
