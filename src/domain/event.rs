//! Domain events: what committed writes announce (a run changed, a log was recorded, a
//! notification was raised, a workflow changed status). A unit of work records them
//! ([`Tx::publish`](crate::db::Tx::publish)) and its outbox delivers them after commit,
//! tagged with the unit of work's company; the event bus carries them to subscribers.

use super::Tenant;
use super::health_log::HealthLog;
use super::notification::Notification;
use super::run::Run;
use super::workflow::{Status as WorkflowStatus, Workflow};

/// Where a unit of work's committed events go: the instance's event bus, which domain
/// code knows only as this outbox (it sits above the domain).
pub type Events = dyn crate::db::Outbox<EventKind>;

/// Something that happened to one company's data.
#[derive(Debug, Clone)]
pub struct Event {
    /// The tenant the event belongs to; subscribers of other companies never see it.
    /// `None` only for an instance-wide [`EventKind::Resync`], which only the instance
    /// itself raises (never another instance: see the bus's wire format).
    pub company_id: Option<String>,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// A run changed: started, progressed, paused, finished... `health_log` is the report
    /// that caused the change, if one did.
    RunChanged {
        run: Box<Run>,
        health_log: Option<Box<HealthLog>>,
    },
    /// An executor reported a step. Only a wake-up for the bus's commit-ordered log stream,
    /// which reads the log itself, in commit order.
    HealthLogRecorded {
        health_log_id: String,
    },
    NotificationCreated {
        notification: Box<Notification>,
    },
    /// A workflow changed status; `workflow` is the row after the change.
    WorkflowStatusChanged {
        workflow: Box<Workflow>,
        /// The status before the change.
        previous: WorkflowStatus,
    },
    /// Events may have been missed (lag, lost LISTEN connection): subscribers re-read
    /// their current state.
    Resync,
}

impl Event {
    pub fn new(tenant: &Tenant, kind: EventKind) -> Self {
        Self {
            company_id: Some(tenant.id().to_owned()),
            kind,
        }
    }

    /// Whether a subscriber of `tenant` may see this event.
    pub fn is_visible_to(&self, tenant: &Tenant) -> bool {
        match &self.company_id {
            Some(company) => company == tenant.id(),
            None => matches!(self.kind, EventKind::Resync),
        }
    }
}
