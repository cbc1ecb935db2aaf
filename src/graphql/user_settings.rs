//! A member's own settings: `userSettings` and `updateUserSettings`.

use async_graphql::{Context, Enum, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::notification::NotificationSeverity;
use crate::domain;
use crate::domain::user_settings::SettingsPatch;

/// A kind of notification the platform raises (`Notification.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::notification::Kind")]
// The names are the kinds' own (`workflow_broken`, ...); more kinds will not all be
// about workflows.
#[allow(clippy::enum_variant_names)]
pub enum NotificationKind {
    /// A workflow failed too many runs in a row (`workflow_broken`).
    WorkflowBroken,
    /// A broken workflow succeeded again (`workflow_recovered`).
    WorkflowRecovered,
    /// A healing was not confident enough and the workflow needs review
    /// (`workflow_needs_review`).
    WorkflowNeedsReview,
}

/// The signed-in member's own settings.
pub struct UserSettings(domain::user_settings::UserSettings);

/// The signed-in member's own settings.
#[Object]
impl UserSettings {
    /// IANA time zone to show times in, e.g. `Europe/Paris` (default `UTC`).
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    /// BCP 47 language tag, e.g. `en` or `fr-CA` (default `en`).
    async fn locale(&self) -> &str {
        &self.0.locale
    }

    /// The severities of notifications pushed to the member (`notificationCreated`);
    /// default: all.
    async fn notification_severities(&self) -> Vec<NotificationSeverity> {
        self.0
            .notifications
            .severities()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// Kinds of notification never pushed to the member, whatever their severity; default:
    /// none. (Kinds added to the server later are pushed until muted.)
    async fn muted_notification_kinds(&self) -> Vec<NotificationKind> {
        self.0
            .notifications
            .muted_kinds()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// When the member last changed them; null while they are the defaults.
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at.map(|at| at.and_utc())
    }
}

/// A change of settings; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UserSettingsInput {
    /// An IANA time zone name, e.g. `Europe/Paris` or `UTC`.
    time_zone: Option<String>,
    /// A BCP 47 language tag, e.g. `en`, `fr-CA`, `zh-Hant-TW`.
    locale: Option<String>,
    /// The severities to push (at most 32 values; duplicates ignored); empty: none.
    notification_severities: Option<Vec<NotificationSeverity>>,
    /// The kinds never to push (at most 32 values; duplicates ignored); empty: none muted.
    muted_notification_kinds: Option<Vec<NotificationKind>>,
}

#[derive(Default)]
pub struct UserSettingsQuery;

#[Object]
impl UserSettingsQuery {
    /// The signed-in member's own settings.
    async fn user_settings(&self, ctx: &Context<'_>) -> async_graphql::Result<UserSettings> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let settings = domain::user_settings::get(ctx.db(), &viewer.tenant, user_id).await?;
        Ok(UserSettings(settings))
    }
}

#[derive(Default)]
pub struct UserSettingsMutation;

#[Object]
impl UserSettingsMutation {
    /// Changes the signed-in member's own settings. A time zone that is not an IANA name,
    /// or a locale that is not a language tag, is BAD_USER_INPUT naming the field.
    /// Notification preferences apply to `notificationCreated` subscriptions started after
    /// the change.
    async fn update_user_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change.")] input: UserSettingsInput,
    ) -> async_graphql::Result<UserSettings> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        // Bounded as sent, before anything per value.
        let severities = input
            .notification_severities
            .map(|list| domain::filter_values("notificationSeverities", Some(list)))
            .transpose()?;
        let kinds = input
            .muted_notification_kinds
            .map(|list| domain::filter_values("mutedNotificationKinds", Some(list)))
            .transpose()?;
        let patch = SettingsPatch {
            time_zone: input.time_zone,
            locale: input.locale,
            notification_severities: severities,
            muted_notification_kinds: kinds,
        };
        let settings =
            domain::user_settings::update(ctx.db(), &viewer.tenant, user_id, patch).await?;
        Ok(UserSettings(settings))
    }
}
