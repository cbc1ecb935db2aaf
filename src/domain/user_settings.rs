//! A member's own settings: time zone, locale, and which notifications they want pushed to
//! them (`notificationCreated`). Typed and validated: a time zone is an IANA name, a locale
//! a BCP 47 language tag, the notification lists name known severities and kinds. No row
//! means the defaults.
//!
//! Notification preferences are also kept as [`NotificationPreferences`], a small `Copy`
//! value (two bit sets) that a subscription compares each event against, and that can be
//! part of a key subscriptions are grouped by.

use std::str::FromStr as _;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::notification::{Kind, Severity};
use super::{Tenant, now};
use crate::db::schema::user_settings;
use crate::db::{Db, IntoWork as _, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const DEFAULT_TIME_ZONE: &str = "UTC";
pub const DEFAULT_LOCALE: &str = "en";
/// Longest locale tag accepted.
const MAX_LOCALE_CHARS: usize = 35;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_settings, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct Row {
    user_id: String,
    company_id: String,
    time_zone: String,
    locale: String,
    notification_severities: String,
    muted_notification_kinds: String,
    updated_at: NaiveDateTime,
}

impl TenantRow for Row {
    type Table = user_settings::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// Which notifications a member wants pushed: severities wanted and kinds muted, as bit
/// sets over [`Severity::ALL`] and [`Kind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotificationPreferences {
    severities: u8,
    muted_kinds: u32,
}

impl Default for NotificationPreferences {
    /// Everything.
    fn default() -> Self {
        Self::new(Severity::ALL, &[])
    }
}

fn bit<T: PartialEq>(all: &[T], item: &T) -> u32 {
    all.iter()
        .position(|x| x == item)
        .map_or(0, |i| 1u32 << (i % 32))
}

impl NotificationPreferences {
    pub fn new(severities: &[Severity], muted_kinds: &[Kind]) -> Self {
        let severities = severities
            .iter()
            .fold(0u32, |set, s| set | bit(Severity::ALL, s));
        Self {
            severities: u8::try_from(severities).unwrap_or(u8::MAX),
            muted_kinds: muted_kinds.iter().fold(0, |set, k| set | bit(Kind::ALL, k)),
        }
    }

    /// Whether a notification of `severity` and `kind` is pushed to the member. Kinds the
    /// server does not know (yet) are never muted.
    pub fn wants(&self, severity: Severity, kind: &str) -> bool {
        let severity_wanted = u32::from(self.severities) & bit(Severity::ALL, &severity) != 0;
        let muted = Kind::parse(kind).is_some_and(|k| self.muted_kinds & bit(Kind::ALL, &k) != 0);
        severity_wanted && !muted
    }

    pub fn severities(&self) -> Vec<Severity> {
        Severity::ALL
            .iter()
            .copied()
            .filter(|s| u32::from(self.severities) & bit(Severity::ALL, s) != 0)
            .collect()
    }

    pub fn muted_kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .filter(|k| self.muted_kinds & bit(Kind::ALL, k) != 0)
            .collect()
    }
}

/// A member's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub time_zone: String,
    pub locale: String,
    pub notifications: NotificationPreferences,
    /// When they were last changed; `None` while they are the defaults.
    pub updated_at: Option<NaiveDateTime>,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self {
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            locale: DEFAULT_LOCALE.to_owned(),
            notifications: NotificationPreferences::default(),
            updated_at: None,
        }
    }
}

impl UserSettings {
    fn from_row(row: Row) -> AppResult<Self> {
        let severities: Vec<String> = serde_json::from_str(&row.notification_severities)
            .map_err(|e| AppError::internal(anyhow::anyhow!("user_settings severities: {e}")))?;
        let kinds: Vec<String> = serde_json::from_str(&row.muted_notification_kinds)
            .map_err(|e| AppError::internal(anyhow::anyhow!("user_settings kinds: {e}")))?;
        // Texts this server no longer knows are dropped rather than failing the read.
        let severities: Vec<Severity> = severities
            .iter()
            .filter_map(|s| Severity::parse(s))
            .collect();
        let kinds: Vec<Kind> = kinds.iter().filter_map(|k| Kind::parse(k)).collect();
        Ok(Self {
            time_zone: row.time_zone,
            locale: row.locale,
            notifications: NotificationPreferences::new(&severities, &kinds),
            updated_at: Some(row.updated_at),
        })
    }
}

/// A change of settings; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub notification_severities: Option<Vec<Severity>>,
    pub muted_notification_kinds: Option<Vec<Kind>>,
}

/// The member's settings (the defaults when they never changed any).
pub async fn get(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<UserSettings> {
    let mut tx = db.read(tenant).await?;
    read(&mut tx, user_id).await
}

async fn read<E: Send>(tx: &mut Tx<E>, user_id: &str) -> AppResult<UserSettings> {
    let row: Option<Row> = tx
        .optional(
            tx.user_settings()
                .filter(user_settings::user_id.eq(user_id))
                .select(Row::columns()),
        )
        .await?;
    row.map_or_else(|| Ok(UserSettings::default()), UserSettings::from_row)
}

/// Only the notification preferences (what `notificationCreated` filters by).
pub async fn notification_preferences(
    db: &Db,
    tenant: &Tenant,
    user_id: &str,
) -> AppResult<NotificationPreferences> {
    Ok(get(db, tenant, user_id).await?.notifications)
}

/// Applies `patch` to the member's settings, validating every field first.
pub async fn update(
    db: &Db,
    tenant: &Tenant,
    user_id: &str,
    patch: SettingsPatch,
) -> AppResult<UserSettings> {
    let time_zone = patch.time_zone.as_deref().map(time_zone).transpose()?;
    let locale = patch.locale.as_deref().map(locale).transpose()?;
    let severities = patch
        .notification_severities
        .map(|list| {
            super::filter_values::<Severity, Severity>("notificationSeverities", Some(list))
        })
        .transpose()?;
    let kinds = patch
        .muted_notification_kinds
        .map(|list| super::filter_values::<Kind, Kind>("mutedNotificationKinds", Some(list)))
        .transpose()?;
    let patch = &SettingsPatch {
        time_zone,
        locale,
        notification_severities: severities,
        muted_notification_kinds: kinds,
    };
    db.write(tenant, |tx| updated(tx, user_id, patch).into_work())
        .await
}

async fn updated(
    tx: &mut Tx<NoEvents>,
    user_id: &str,
    patch: &SettingsPatch,
) -> AppResult<UserSettings> {
    let current = read(tx, user_id).await?;
    let notifications = NotificationPreferences::new(
        patch
            .notification_severities
            .as_deref()
            .unwrap_or(&current.notifications.severities()),
        patch
            .muted_notification_kinds
            .as_deref()
            .unwrap_or(&current.notifications.muted_kinds()),
    );
    let texts = |items: Vec<&'static str>| serde_json::Value::from(items).to_string();
    let mut row = Row {
        user_id: user_id.to_owned(),
        company_id: tx.tenant().id().to_owned(),
        time_zone: patch.time_zone.clone().unwrap_or(current.time_zone),
        locale: patch.locale.clone().unwrap_or(current.locale),
        notification_severities: texts(
            notifications
                .severities()
                .into_iter()
                .map(Severity::as_str)
                .collect(),
        ),
        muted_notification_kinds: texts(
            notifications
                .muted_kinds()
                .into_iter()
                .map(Kind::as_str)
                .collect(),
        ),
        updated_at: now(),
    };
    tx.execute(
        tx.user_settings()
            .filter(user_settings::user_id.eq(user_id))
            .delete(),
    )
    .await?;
    tx.insert(&mut row).await.map_err(|error| {
        if error.is_foreign_key_violation() {
            AppError::Unauthenticated("this account no longer exists")
        } else {
            error
        }
    })?;
    UserSettings::from_row(row)
}

/// An IANA time zone name (`Europe/Paris`, `UTC`), as the database of `chrono-tz` knows it.
fn time_zone(raw: &str) -> AppResult<String> {
    let raw = raw.trim();
    chrono_tz::Tz::from_str(raw)
        .map(|zone| zone.name().to_owned())
        .map_err(|_| {
            AppError::bad_input(
                "timeZone",
                "timeZone must be an IANA time zone name such as Europe/Paris or UTC",
            )
        })
}

/// A BCP 47 language tag of the common shape `language[-Script][-REGION]`
/// (`en`, `fr-CA`, `zh-Hant-TW`, `es-419`), normalised to its usual case.
fn locale(raw: &str) -> AppResult<String> {
    let invalid = || {
        AppError::bad_input(
            "locale",
            "locale must be a language tag such as en, fr-CA or zh-Hant-TW",
        )
    };
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_LOCALE_CHARS {
        return Err(invalid());
    }
    let mut parts = raw.split(['-', '_']);
    let language = parts.next().ok_or_else(invalid)?;
    if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    let mut tag = language.to_ascii_lowercase();
    let mut rest: Vec<&str> = parts.collect();
    if let Some(script) = rest.first().copied()
        && script.len() == 4
        && script.chars().all(|c| c.is_ascii_alphabetic())
    {
        tag.push('-');
        tag.push_str(&script[..1].to_ascii_uppercase());
        tag.push_str(&script[1..].to_ascii_lowercase());
        rest.remove(0);
    }
    match rest.as_slice() {
        [] => {}
        [region]
            if (region.len() == 2 && region.chars().all(|c| c.is_ascii_alphabetic()))
                || (region.len() == 3 && region.chars().all(|c| c.is_ascii_digit())) =>
        {
            tag.push('-');
            tag.push_str(&region.to_ascii_uppercase());
        }
        _ => return Err(invalid()),
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_filter_by_severity_and_muted_kind() {
        let all = NotificationPreferences::default();
        assert!(all.wants(Severity::Info, "workflow_recovered"));
        assert!(all.wants(Severity::Error, "something_new"));
        let errors_only = NotificationPreferences::new(&[Severity::Error], &[Kind::WorkflowBroken]);
        assert!(!errors_only.wants(Severity::Warning, "workflow_needs_review"));
        assert!(!errors_only.wants(Severity::Error, "workflow_broken"));
        assert!(errors_only.wants(Severity::Error, "a_kind_added_later"));
        assert_eq!(errors_only.severities(), vec![Severity::Error]);
        assert_eq!(errors_only.muted_kinds(), vec![Kind::WorkflowBroken]);
        assert_ne!(all, errors_only);
    }

    #[test]
    fn time_zones_and_locales_are_validated_and_normalised() {
        assert_eq!(
            time_zone(" Europe/Paris ").ok().as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(time_zone("UTC").ok().as_deref(), Some("UTC"));
        for bad in ["", "Mars/Olympus", "Europe/Paris; DROP", "+02:00"] {
            assert!(time_zone(bad).is_err(), "{bad}");
        }
        assert_eq!(locale("EN").ok().as_deref(), Some("en"));
        assert_eq!(locale("fr_ca").ok().as_deref(), Some("fr-CA"));
        assert_eq!(locale("zh-hant-tw").ok().as_deref(), Some("zh-Hant-TW"));
        assert_eq!(locale("es-419").ok().as_deref(), Some("es-419"));
        for bad in ["", "e", "english", "en-", "en-US-x", "12", &"a".repeat(40)] {
            assert!(locale(bad).is_err(), "{bad}");
        }
    }
}
