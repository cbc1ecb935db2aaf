//! `HealthLogEvent.cursor`: where a `healthLogRecorded` client resumes with `after`.
//!
//! A resume replays from the database, so the cursor decides how much work a subscription
//! starts with. It is signed (only positions this server handed out are accepted: a cursor
//! forged to "the beginning" would replay a company's whole history) and carries when its
//! log was recorded, so a resume further back than the replay window is refused with a
//! coded error telling the client to start afresh (and read older logs with the
//! `healthLogs` query, page by page).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::crypto::mac::MacKey;
use crate::domain::health_log::StreamPosition;
use crate::error::{AppError, AppResult};

/// Label of the cursor key derived from the server secret.
const KEY_LABEL: &str = "stepwise health log stream cursor v1";
/// Longer cursors are refused unread; real ones are ~150 characters.
const MAX_CURSOR_CHARS: usize = 512;

/// Signs and checks stream cursors; one per instance, the same on every instance.
#[derive(Clone, Debug)]
pub struct StreamCursors {
    key: MacKey,
    /// How far back a resume may reach.
    pub replay_window: Duration,
}

#[derive(Serialize, Deserialize)]
struct Body {
    /// Stream position: commit sequence and log id.
    s: i64,
    i: String,
    /// When the log was recorded, in Unix microseconds.
    t: i64,
}

impl StreamCursors {
    pub fn new(server_secret: &[u8], replay_window: Duration) -> Self {
        Self {
            key: MacKey::derive(server_secret, KEY_LABEL),
            replay_window,
        }
    }

    /// The cursor of a log at `position`, recorded at `created_at`.
    pub fn encode(&self, position: &StreamPosition, created_at: NaiveDateTime) -> String {
        let body = Body {
            s: position.seq,
            i: position.id.clone(),
            t: created_at.and_utc().timestamp_micros(),
        };
        // Serialising plain data cannot fail; an empty body would only fail to verify.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let tag = self.key.tag(&json);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The position to resume after, if the cursor is one of ours and recent enough.
    pub fn decode(&self, raw: &str, now: NaiveDateTime) -> AppResult<StreamPosition> {
        let invalid = || {
            AppError::bad_input(
                "after",
                "after is not a cursor this server issued; subscribe again without it",
            )
        };
        if raw.len() > MAX_CURSOR_CHARS {
            return Err(invalid());
        }
        let (body, tag) = raw.split_once('.').ok_or_else(invalid)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if !self.key.verify(&body, &tag) {
            return Err(invalid());
        }
        let body: Body = serde_json::from_slice(&body).map_err(|_| invalid())?;
        let window = i64::try_from(self.replay_window.as_micros()).unwrap_or(i64::MAX);
        let age = now.and_utc().timestamp_micros().saturating_sub(body.t);
        if age > window {
            return Err(AppError::bad_input(
                "after",
                format!(
                    "after is older than the replay window of {} seconds; subscribe again \
                     without it and read older logs with the healthLogs query",
                    self.replay_window.as_secs()
                ),
            ));
        }
        Ok(StreamPosition {
            seq: body.s,
            id: body.i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursors() -> StreamCursors {
        StreamCursors::new(b"secret", Duration::from_secs(3_600))
    }

    fn position() -> StreamPosition {
        StreamPosition {
            seq: 42,
            id: "0190f000-0000-7000-8000-000000000000".into(),
        }
    }

    #[test]
    fn cursors_round_trip_within_the_window() {
        let now = crate::domain::now();
        let cursor = cursors().encode(&position(), now);
        assert_eq!(cursors().decode(&cursor, now).ok(), Some(position()));
    }

    #[test]
    fn forged_foreign_and_old_cursors_are_refused() {
        let now = crate::domain::now();
        let cursor = cursors().encode(&position(), now);
        let other = StreamCursors::new(b"another secret", Duration::from_secs(3_600));
        assert!(other.decode(&cursor, now).is_err());
        let (body, tag) = cursor.split_once('.').unwrap_or_default();
        let forged = URL_SAFE_NO_PAD
            .encode(br#"{"s":0,"i":"","t":0}"#)
            .to_string();
        assert!(cursors().decode(&format!("{forged}.{tag}"), now).is_err());
        assert!(cursors().decode(body, now).is_err());
        let old = cursors().encode(&position(), now - chrono::TimeDelta::hours(2));
        let refused = cursors().decode(&old, now);
        assert!(
            matches!(&refused, Err(AppError::BadUserInput { message, .. }) if message.contains("replay window")),
            "{:?}",
            refused.map_err(|e| e.client_message())
        );
    }
}
