//! Keyed message authentication (HMAC-SHA256) for what the server signs and later takes
//! back: stream cursors handed to clients, event envelopes passed between instances. Each
//! use derives its own key from the server secret under a label, so a tag made for one
//! purpose is worthless for any other.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A key for one purpose.
#[derive(Clone)]
pub struct MacKey(Vec<u8>);

impl MacKey {
    /// The key for `label`, derived from the server secret (every instance sharing that
    /// secret derives the same key).
    pub fn derive(secret: &[u8], label: &str) -> Self {
        Self(Self::hmac(secret, label.as_bytes()).to_vec())
    }

    /// The tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; 32] {
        Self::hmac(&self.0, message)
    }

    /// Whether `tag` is `message`'s, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    /// Whether `tag` is a prefix of `message`'s tag (a truncated tag, at least 4 bytes),
    /// compared in constant time.
    pub fn verify_prefix(&self, message: &[u8], tag: &[u8]) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(message);
        tag.len() >= 4 && mac.verify_truncated_left(tag).is_ok()
    }

    fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length, so building it cannot fail; an all-zero tag would
        // only make every verification fail, never succeed.
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            return [0; 32];
        };
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_for_their_message_and_purpose() {
        let cursors = MacKey::derive(b"secret", "cursors");
        let events = MacKey::derive(b"secret", "events");
        let tag = cursors.tag(b"message");
        assert!(cursors.verify(b"message", &tag));
        assert!(!cursors.verify(b"massage", &tag));
        assert!(!events.verify(b"message", &tag));
        assert!(!cursors.verify(b"message", &tag[..31]));
    }
}
