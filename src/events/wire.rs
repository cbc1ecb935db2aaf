//! The envelope events travel in between instances, on every transport (PostgreSQL
//! NOTIFY, NATS JetStream).
//!
//! Anything that can reach the channel can write to it: PostgreSQL lets every role that
//! may connect `NOTIFY` and `LISTEN` on any channel, and a NATS account may be shared. So
//! an envelope is believed only when its HMAC verifies under a key derived from the server
//! secret every instance shares, and it carries ids, never row contents: a listener
//! without the key learns which ids changed, not what they hold, and a forger cannot make
//! an instance deliver anything. The receiving instance reads the rows itself
//! ([`super::remote`]).
//!
//! `v1.<hex HMAC-SHA256 of the JSON>.<JSON>`; the JSON is
//! `{"v":1,"i":envelope id,"o":origin,"e":[...]}`.
//!
//! Versioning: `v` changes only when a reader of the previous version would misread an
//! envelope. Additions keep it: readers ignore fields they do not know (the envelope id
//! `i` was added that way; an envelope without one is still read) and skip event kinds
//! they do not know, so instances of adjacent versions run side by side during a rolling
//! upgrade. A new event kind is a new [`WireEvent`] variant here and its rows in
//! `remote.rs`; no transport changes.

use serde::{Deserialize, Serialize};

use super::{Event, EventKind};
use crate::crypto::hex;
use crate::crypto::mac::MacKey;
use crate::domain::workflow::Status as WorkflowStatus;

/// The envelope format this build writes and reads.
pub const VERSION: u8 = 1;
const PREFIX: &str = "v1.";
/// Label of the envelope key derived from the server secret.
const KEY_LABEL: &str = "stepwise event envelope v1";

/// One batch of events from one instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    /// Unique per envelope, so one received twice (a JetStream redelivery, a publisher's
    /// retry) is delivered once; each event is identified by this id and its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i: Option<String>,
    /// The instance that published the events (it ignores its own).
    pub o: String,
    pub e: Vec<WireEvent>,
}

/// An event as it travels: the company and the ids of what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum WireEvent {
    Run {
        c: String,
        run: String,
        log: Option<String>,
    },
    Log {
        c: String,
        log: String,
    },
    Notification {
        c: String,
        notification: String,
    },
    WorkflowStatus {
        c: String,
        workflow: String,
        /// The status before, as its stored text; an envelope naming a status this build
        /// does not know does not parse (malformed).
        #[serde(with = "status_text")]
        previous: WorkflowStatus,
    },
    Resync {
        c: String,
    },
    /// A kind a newer instance sends that this one does not know.
    #[serde(other)]
    Unknown,
}

impl WireEvent {
    /// The wire form of a committed event; `None` for what never leaves the instance (an
    /// instance-wide resync is about this instance's own link).
    pub fn of(event: &Event) -> Option<Self> {
        let c = event.company_id.clone()?;
        Some(match &event.kind {
            EventKind::RunChanged { run, health_log } => Self::Run {
                c,
                run: run.id.clone(),
                log: health_log.as_ref().map(|log| log.id.clone()),
            },
            EventKind::HealthLogRecorded { health_log_id } => Self::Log {
                c,
                log: health_log_id.clone(),
            },
            EventKind::NotificationCreated { notification } => Self::Notification {
                c,
                notification: notification.id.clone(),
            },
            EventKind::WorkflowStatusChanged { workflow, previous } => Self::WorkflowStatus {
                c,
                workflow: workflow.id.clone(),
                previous: *previous,
            },
            EventKind::Resync => Self::Resync { c },
        })
    }
}

/// A workflow status on the wire: the text it is stored as (`needs_review`, ...).
mod status_text {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::WorkflowStatus;

    pub fn serialize<S: Serializer>(status: &WorkflowStatus, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(status.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<WorkflowStatus, D::Error> {
        let text = String::deserialize(input)?;
        WorkflowStatus::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format_args!("unknown workflow status {text:?}"))
        })
    }
}

/// Why an envelope was dropped (a `/metrics` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not in the signed format at all.
    Unsigned,
    /// Signed, but not with our key: forged, or an instance with another secret.
    BadSignature,
    /// Signed correctly but not an envelope we can read.
    Malformed,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
        }
    }
}

/// Signs envelopes and checks them; one per instance.
pub struct Sealer {
    key: MacKey,
}

impl Sealer {
    pub fn new(server_secret: &[u8]) -> Self {
        Self {
            key: MacKey::derive(server_secret, KEY_LABEL),
        }
    }

    /// Bytes the signature and framing add to an envelope's JSON.
    pub const OVERHEAD: usize = PREFIX.len() + 64 + 1;

    /// The NOTIFY payload carrying `json` (an [`Envelope`] serialised).
    pub fn seal(&self, json: &str) -> String {
        format!("{PREFIX}{}.{json}", hex(&self.key.tag(json.as_bytes())))
    }

    /// The envelope in `payload`, if it verifies. Nothing of an unverified payload is
    /// parsed.
    pub fn open(&self, payload: &str) -> Result<Envelope, Rejection> {
        let rest = payload.strip_prefix(PREFIX).ok_or(Rejection::Unsigned)?;
        let (tag, json) = rest.split_once('.').ok_or(Rejection::Unsigned)?;
        let tag = unhex32(tag).ok_or(Rejection::Unsigned)?;
        if !self.key.verify(json.as_bytes(), &tag) {
            return Err(Rejection::BadSignature);
        }
        let envelope: Envelope = serde_json::from_str(json).map_err(|_| Rejection::Malformed)?;
        if envelope.v != VERSION {
            return Err(Rejection::Malformed);
        }
        Ok(envelope)
    }
}

/// A sealed envelope, ready to send.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The envelope id (also JetStream's `Nats-Msg-Id`).
    pub id: String,
    pub payload: String,
}

/// Packs events into signed envelopes of at most `max_bytes` each. Ids are small, so an
/// event never outgrows an envelope; events that stay on this instance (an instance-wide
/// resync) are left out.
pub fn pack<'e>(
    origin: &str,
    sealer: &Sealer,
    events: impl IntoIterator<Item = &'e Event>,
    max_bytes: usize,
) -> Vec<Sealed> {
    let budget = max_bytes.saturating_sub(Sealer::OVERHEAD);
    let head = |id: &str| format!("{{\"v\":{VERSION},\"i\":\"{id}\",\"o\":\"{origin}\",\"e\":[");
    let mut sealed = Vec::new();
    let mut id = crate::domain::new_id();
    let mut current = head(&id);
    let mut empty = true;
    for event in events {
        let Some(wire) = WireEvent::of(event) else {
            continue;
        };
        let Ok(json) = serde_json::to_string(&wire) else {
            continue;
        };
        if !empty && current.len() + json.len() + 2 > budget {
            current.push_str("]}");
            sealed.push(Sealed {
                payload: sealer.seal(&current),
                id: std::mem::replace(&mut id, crate::domain::new_id()),
            });
            current = head(&id);
            empty = true;
        }
        if !empty {
            current.push(',');
        }
        current.push_str(&json);
        empty = false;
    }
    if !empty {
        current.push_str("]}");
        sealed.push(Sealed {
            payload: sealer.seal(&current),
            id,
        });
    }
    sealed
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn log_event(company: &str) -> Event {
        Event {
            company_id: Some(company.into()),
            kind: EventKind::HealthLogRecorded {
                health_log_id: "0190f000-0000-7000-8000-000000000000".into(),
            },
        }
    }

    #[test]
    fn envelopes_stay_under_the_size_limit_and_keep_every_event() {
        let sealer = Sealer::new(b"secret");
        let events: Vec<_> = (0..500).map(|_| log_event(&"c".repeat(36))).collect();
        let sealed = pack("me", &sealer, &events, 7_800);
        assert!(sealed.len() > 1);
        let mut delivered = 0;
        let mut ids = std::collections::HashSet::new();
        for envelope in &sealed {
            assert!(envelope.payload.len() < 7_800, "{}", envelope.payload.len());
            let opened = sealer.open(&envelope.payload).expect("a signed envelope");
            assert_eq!(opened.i.as_deref(), Some(envelope.id.as_str()));
            assert!(ids.insert(envelope.id.clone()), "envelope ids are unique");
            delivered += opened.e.len();
        }
        assert_eq!(delivered, 500);
    }

    #[test]
    fn instance_wide_resyncs_never_leave_the_instance() {
        let sealer = Sealer::new(b"secret");
        let resync = Event {
            company_id: None,
            kind: EventKind::Resync,
        };
        assert!(pack("me", &sealer, [&resync], 7_800).is_empty());
    }

    #[test]
    fn envelopes_without_an_id_are_still_read() {
        let sealer = Sealer::new(b"secret");
        let old = sealer.seal(r#"{"v":1,"o":"older","e":[{"t":"resync","c":"acme"}]}"#);
        let opened = sealer.open(&old).expect("an older instance's envelope");
        assert_eq!(opened.i, None);
        assert_eq!(opened.e, vec![WireEvent::Resync { c: "acme".into() }]);
    }

    fn envelope() -> String {
        serde_json::json!({
            "v": 1, "o": "me",
            "e": [{ "t": "run", "c": "acme", "run": "r1", "log": null },
                  { "t": "from_the_future", "c": "acme" }]
        })
        .to_string()
    }

    #[test]
    fn only_envelopes_signed_with_the_shared_secret_open() {
        let sealer = Sealer::new(b"secret of every instance");
        let sealed = sealer.seal(&envelope());
        let opened = sealer.open(&sealed).map(|e| e.e);
        assert_eq!(
            opened,
            Ok(vec![
                WireEvent::Run {
                    c: "acme".into(),
                    run: "r1".into(),
                    log: None
                },
                WireEvent::Unknown
            ])
        );
        let other = Sealer::new(b"another secret");
        assert_eq!(other.open(&sealed).err(), Some(Rejection::BadSignature));
        assert_eq!(sealer.open(&envelope()).err(), Some(Rejection::Unsigned));
        let tampered = sealed.replace("\"r1\"", "\"r2\"");
        assert_eq!(sealer.open(&tampered).err(), Some(Rejection::BadSignature));
        let garbage = sealer.seal("not json");
        assert_eq!(sealer.open(&garbage).err(), Some(Rejection::Malformed));
    }

    fn status_envelope(previous: &str) -> String {
        serde_json::json!({
            "v": 1, "o": "me",
            "e": [{ "t": "workflow_status", "c": "acme", "workflow": "w1", "previous": previous }]
        })
        .to_string()
    }

    #[test]
    fn workflow_statuses_travel_as_their_text() {
        let sealer = Sealer::new(b"secret of every instance");
        let opened = sealer.open(&sealer.seal(&status_envelope("needs_review")));
        let expected = WireEvent::WorkflowStatus {
            c: "acme".into(),
            workflow: "w1".into(),
            previous: WorkflowStatus::NeedsReview,
        };
        assert_eq!(opened.map(|e| e.e), Ok(vec![expected.clone()]));
        let json = serde_json::to_value(&expected).ok();
        assert_eq!(
            json.as_ref().and_then(|j| j["previous"].as_str()),
            Some("needs_review")
        );
        let unknown = sealer.seal(&status_envelope("on_fire"));
        assert_eq!(sealer.open(&unknown).err(), Some(Rejection::Malformed));
    }
}
