//! Access tokens: short-lived HS256 JSON Web Tokens carrying the user, their company and
//! role, and the session they belong to (`sid`). A token is only ever accepted while its
//! session lasts (the credential check in `auth::credential`); its short lifetime
//! (`--jwt-ttl-seconds`, 15 minutes by default) is renewed with the session's refresh token.
//!
//! Validation is pinned to HS256 and requires every claim we issue; `nbf` is checked (it is
//! off by default in jsonwebtoken) and the leeway is a few seconds, not the crate's minute.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound as _, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Role as ViewerRole, Viewer};
use crate::config::{DatabaseUrl, JwtArgs};
use crate::domain::Tenant;
use crate::domain::user::Role;

/// Secrets shorter than this are refused: HS256 is only as strong as its key.
const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated between the issuing and the verifying instance.
const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    company_id: String,
    role: String,
    /// The session the token belongs to.
    sid: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// A freshly issued token and when it stops being accepted.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies tokens; one per process, shared by every request.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: chrono::Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], args: &JwtArgs) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            bail!("the JWT secret must be at least {MIN_SECRET_BYTES} bytes long");
        }
        let ttl = i64::try_from(args.jwt_ttl_seconds)
            .ok()
            .filter(|s| *s > 0)
            .context("JWT_TTL_SECONDS must be a positive number of seconds")?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&args.jwt_issuer]);
        validation.set_audience(&[&args.jwt_audience]);
        validation.set_required_spec_claims(&["sub", "exp", "nbf", "iss", "aud"]);
        // `sid` is required by the claims type itself: a token without one (issued before
        // sessions existed) does not decode, and its holder signs in again.
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            ttl: chrono::Duration::seconds(ttl),
        })
    }

    /// An access token for `user_id` (with `role`) in session `session_id`.
    pub fn issue(
        &self,
        user_id: &str,
        tenant: &Tenant,
        role: Role,
        session_id: &str,
    ) -> anyhow::Result<IssuedToken> {
        // Whole seconds: that is what the `exp` claim can say.
        let now = Utc::now().trunc_subsecs(0);
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user_id.to_owned(),
            company_id: tenant.id().to_owned(),
            role: role.as_str().to_owned(),
            sid: session_id.to_owned(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a token")?;
        Ok(IssuedToken { token, expires_at })
    }

    /// The viewer a token speaks for and when the token expires (Unix seconds), or `None`
    /// for any token we did not issue as-is.
    pub fn verify(&self, token: &str) -> Option<(Viewer, i64)> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.company_id.is_empty() || claims.sid.is_empty() {
            return None;
        }
        let viewer = Viewer {
            tenant: Tenant::new(claims.company_id),
            role: ViewerRole::of_user(Role::parse(&claims.role)?),
            principal: Principal::Member {
                user_id: claims.sub,
                session_id: claims.sid,
            },
        };
        Some((viewer, claims.exp))
    }
}

/// The signing secret: `JWT_SECRET` if set, else the one kept in the secret file, else a new
/// random one written to that file so tokens survive a restart.
pub fn load_or_create_secret(args: &JwtArgs, database: &DatabaseUrl) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &args.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = args
        .jwt_secret_file
        .clone()
        .unwrap_or_else(|| default_secret_file(database));
    match std::fs::read_to_string(&path) {
        Ok(stored) => {
            tracing::info!(path = %path.display(), "using the JWT secret kept in the secret file");
            Ok(stored.trim().as_bytes().to_vec())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_secret_file(&path),
        Err(error) => {
            Err(error).with_context(|| format!("reading the JWT secret file {}", path.display()))
        }
    }
}

fn default_secret_file(database: &DatabaseUrl) -> PathBuf {
    match database {
        DatabaseUrl::Sqlite(db) => {
            let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(".jwt-secret");
            db.with_file_name(name)
        }
        DatabaseUrl::Postgres(_) => PathBuf::from("stepwise.jwt-secret"),
    }
}

fn create_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = [0u8; 48];
    OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    // create_new: two instances starting at once must not overwrite each other's secret.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing the JWT secret file {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "JWT_SECRET is not set: generated a random signing secret and stored it in this file; \
                 set JWT_SECRET in production, and give every instance the same one"
            );
            Ok(secret.into_bytes())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().as_bytes().to_vec())
        }
        Err(error) => {
            Err(error).with_context(|| format!("creating the JWT secret file {}", path.display()))
        }
    }
}
