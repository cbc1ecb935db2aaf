//! Opaque secrets handed to a client once and kept by the server only as keyed hashes:
//! API keys and refresh tokens.
//!
//! A secret is `<kind prefix><43 characters: 256 random bits><8 characters: check tag>`,
//! all base64url. The kind prefix (`swk_` for API keys, `swr_` for refresh tokens) tells a
//! key from a JSON Web Token by its shape alone (a JWT is three dot-separated parts starting
//! `eyJ`) and keeps one kind from being accepted as the other. The check tag is a keyed MAC
//! of the random part: a secret the server did not mint fails it without a database read,
//! so a flood of made-up keys costs a hash each, not a query each.
//!
//! What is stored is HMAC-SHA256 of the whole secret under a key derived from the server
//! secret. A fast keyed hash is the right tool for 256-bit random secrets (there is nothing
//! to guess, so a slow password hash would only cost every request); keying it means a copy
//! of the database alone cannot even test candidate secrets. Every instance derives the
//! same keys from `JWT_SECRET`; changing that secret invalidates every API key and refresh
//! token (as it does every access token).

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::hex;
use super::mac::MacKey;

/// Random bytes in a secret.
const RANDOM_BYTES: usize = 32;
/// Bytes of the check tag.
const TAG_BYTES: usize = 6;
/// base64url characters of the random part and of the tag.
const RANDOM_CHARS: usize = 43;
const TAG_CHARS: usize = 8;

/// What a secret is for; each kind has its own prefix and its own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ApiKey,
    RefreshToken,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "swk_",
            Self::RefreshToken => "swr_",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::ApiKey => "api-key",
            Self::RefreshToken => "refresh-token",
        }
    }

    /// Whether `text` has this kind's shape (not whether it is genuine).
    pub fn is_shaped(self, text: &str) -> bool {
        text.len() == self.prefix().len() + RANDOM_CHARS + TAG_CHARS
            && text.starts_with(self.prefix())
    }
}

/// A freshly minted secret: what the client gets once and what the server keeps.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The secret, shown once.
    pub secret: String,
    /// Its keyed hash, stored.
    pub hash: String,
    /// The kind prefix and the first eight characters after it, shown to tell secrets apart.
    pub visible_prefix: String,
}

/// Mints and recognises secrets; one per process.
pub struct SecretTokens {
    hash_key: MacKey,
    api_key_tags: MacKey,
    refresh_tags: MacKey,
}

impl std::fmt::Debug for SecretTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretTokens(***)")
    }
}

impl SecretTokens {
    /// Keys derived from the server secret (`JWT_SECRET`).
    pub fn new(server_secret: &[u8]) -> Self {
        Self {
            hash_key: MacKey::derive(server_secret, "stepwise secret-token hash"),
            api_key_tags: MacKey::derive(server_secret, "stepwise api-key check"),
            refresh_tags: MacKey::derive(server_secret, "stepwise refresh-token check"),
        }
    }

    fn tags(&self, kind: SecretKind) -> &MacKey {
        match kind {
            SecretKind::ApiKey => &self.api_key_tags,
            SecretKind::RefreshToken => &self.refresh_tags,
        }
    }

    pub fn mint(&self, kind: SecretKind) -> Minted {
        let mut random = [0u8; RANDOM_BYTES];
        OsRng.fill_bytes(&mut random);
        let body = URL_SAFE_NO_PAD.encode(random);
        let tag = self.tag(kind, &body);
        let secret = format!("{}{body}{tag}", kind.prefix());
        let visible_prefix = secret[..kind.prefix().len() + 8].to_owned();
        Minted {
            hash: self.hash(&secret),
            secret,
            visible_prefix,
        }
    }

    /// The stored hash of `presented`, when it is a secret of `kind` this server minted
    /// (shape and check tag); `None` for anything else, without a database read.
    pub fn recognise(&self, kind: SecretKind, presented: &str) -> Option<String> {
        if !kind.is_shaped(presented) {
            return None;
        }
        let rest = &presented[kind.prefix().len()..];
        let (body, tag) = rest.split_at(RANDOM_CHARS);
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let label = kind.label();
        self.tags(kind)
            .verify_prefix(&[label.as_bytes(), b":", body.as_bytes()].concat(), &tag)
            .then(|| self.hash(presented))
    }

    fn tag(&self, kind: SecretKind, body: &str) -> String {
        let label = kind.label();
        let full = self
            .tags(kind)
            .tag(&[label.as_bytes(), b":", body.as_bytes()].concat());
        URL_SAFE_NO_PAD.encode(&full[..TAG_BYTES])
    }

    fn hash(&self, secret: &str) -> String {
        hex(&self.hash_key.tag(secret.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_recognised_only_as_their_own_kind() {
        let tokens = SecretTokens::new(b"a server secret of some length....");
        let key = tokens.mint(SecretKind::ApiKey);
        assert!(key.secret.starts_with("swk_"));
        assert_eq!(key.secret.len(), 4 + RANDOM_CHARS + TAG_CHARS);
        assert!(key.secret.starts_with(&key.visible_prefix));
        assert_eq!(
            tokens.recognise(SecretKind::ApiKey, &key.secret),
            Some(key.hash.clone())
        );
        assert_eq!(
            tokens.recognise(SecretKind::RefreshToken, &key.secret),
            None
        );
        let refresh = tokens.mint(SecretKind::RefreshToken);
        assert!(
            tokens
                .recognise(SecretKind::RefreshToken, &refresh.secret)
                .is_some()
        );
        assert_ne!(key.hash, refresh.hash);
        // One character changed: the tag no longer matches.
        let mut forged = key.secret.clone();
        forged.replace_range(10..11, if &key.secret[10..11] == "A" { "B" } else { "A" });
        assert_eq!(tokens.recognise(SecretKind::ApiKey, &forged), None);
        // Another server's secret is not ours.
        let other = SecretTokens::new(b"another server secret, also long..");
        assert_eq!(other.recognise(SecretKind::ApiKey, &key.secret), None);
        for junk in ["", "swk_", "eyJhbGciOi.x.y", &"swk_".repeat(20)] {
            assert_eq!(tokens.recognise(SecretKind::ApiKey, junk), None);
        }
    }
}
