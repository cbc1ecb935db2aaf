//! Workflow health: how finished runs and reported steps move a workflow between active,
//! needs_review and broken, and which notifications that raises.
//!
//! Everything here is arithmetic and rules, no SQL: [`super::run`] applies the result inside
//! the transaction that finished the run or recorded the step.

use std::time::Duration;

use super::health_log;
use super::notification::{NewNotification, Severity};
use super::workflow::{Status as WorkflowStatus, Workflow};

/// Notification kind: a workflow failed too many runs in a row.
pub const KIND_BROKEN: &str = "workflow_broken";
/// Notification kind: a broken workflow succeeded again.
pub const KIND_RECOVERED: &str = "workflow_recovered";
/// Notification kind: a low-confidence healing asks a human to check a workflow.
pub const KIND_NEEDS_REVIEW: &str = "workflow_needs_review";

/// The thresholds of the health rules (configurable; see `ServeArgs`).
#[derive(Debug, Clone, Copy)]
pub struct HealthRules {
    /// This many failed runs in a row mark a workflow broken.
    pub broken_after_failures: i32,
    /// A healed step with a confidence below this asks a human to review the workflow.
    pub review_below_confidence: f64,
    /// A running run with no report for this long is marked timed out.
    pub run_timeout: Duration,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            broken_after_failures: 3,
            review_below_confidence: 0.7,
            run_timeout: Duration::from_secs(600),
        }
    }
}

/// How a finished run counts for its workflow. Cancelled runs do not count at all; timed
/// out runs count as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// The health figures of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub status: WorkflowStatus,
    pub success_rate: f64,
    pub total_uses: i32,
    pub consecutive_failures: i32,
}

impl Figures {
    pub fn of(workflow: &Workflow) -> Self {
        Self {
            status: workflow.status,
            success_rate: workflow.success_rate,
            total_uses: workflow.total_uses,
            consecutive_failures: workflow.consecutive_failures,
        }
    }
}

/// A status change the health rules made, and the alert it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Too many failures in a row: the workflow is now broken.
    Broken,
    /// A broken workflow succeeded: it is active again.
    Recovered,
}

impl Transition {
    pub fn status(self) -> WorkflowStatus {
        match self {
            Self::Broken => WorkflowStatus::Broken,
            Self::Recovered => WorkflowStatus::Active,
        }
    }

    /// The notification announcing the change.
    pub fn notification(self, workflow: &Workflow, consecutive_failures: i32) -> NewNotification {
        match self {
            Self::Broken => NewNotification {
                workflow_id: Some(workflow.id.clone()),
                kind: KIND_BROKEN.to_owned(),
                severity: Severity::Error,
                title: format!("Workflow \"{}\" is broken", workflow.name),
                message: format!(
                    "\"{}\" failed {consecutive_failures} runs in a row and has been marked \
                     broken. Check its steps before running it again.",
                    workflow.name
                ),
            },
            Self::Recovered => NewNotification {
                workflow_id: Some(workflow.id.clone()),
                kind: KIND_RECOVERED.to_owned(),
                severity: Severity::Info,
                title: format!("Workflow \"{}\" recovered", workflow.name),
                message: format!(
                    "\"{}\" completed a run successfully and is active again.",
                    workflow.name
                ),
            },
        }
    }
}

/// What counting one finished run does to a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    /// The figures after the run (status included).
    pub figures: Figures,
    /// Whether the run sets `last_success_at` or `last_failure_at`.
    pub verdict: Verdict,
    /// The status change, when the rules made one.
    pub transition: Option<Transition>,
}

impl HealthRules {
    /// Counts a finished run: one more use, the success rate over all counted runs, the
    /// failure streak, and the broken / recovered status changes.
    pub fn count_run(&self, before: &Figures, verdict: Verdict) -> HealthUpdate {
        let total_before = i64::from(before.total_uses.max(0));
        let successes =
            successes(before.success_rate, total_before) + i64::from(verdict == Verdict::Success);
        let total_uses = before.total_uses.max(0).saturating_add(1);
        let consecutive_failures = match verdict {
            Verdict::Success => 0,
            Verdict::Failure => before.consecutive_failures.max(0).saturating_add(1),
        };
        let transition = match verdict {
            Verdict::Success if before.status == WorkflowStatus::Broken => {
                Some(Transition::Recovered)
            }
            // Only a workflow in service is judged: draft, processing and archived are a
            // person's statuses, and a run that was already going when someone set one must
            // not override it (nor may anything but a person move it out of them).
            Verdict::Failure
                if consecutive_failures >= self.broken_after_failures
                    && matches!(
                        before.status,
                        WorkflowStatus::Active | WorkflowStatus::NeedsReview
                    ) =>
            {
                Some(Transition::Broken)
            }
            _ => None,
        };
        HealthUpdate {
            figures: Figures {
                status: transition.map_or(before.status, Transition::status),
                success_rate: success_rate(successes, i64::from(total_uses)),
                total_uses,
                consecutive_failures,
            },
            verdict,
            transition,
        }
    }

    /// Whether a reported step asks a human to review its workflow: it was healed, and the
    /// healing was less sure of itself than the threshold. A healing that reported no
    /// confidence does not.
    pub fn needs_review(&self, status: health_log::Status, confidence: Option<f64>) -> bool {
        status.healing_method().is_some()
            && confidence.is_some_and(|c| c < self.review_below_confidence)
    }
}

/// The notification asking for a review after a low-confidence healing.
pub fn review_notification(
    workflow: &Workflow,
    step_number: i32,
    method: &str,
    confidence: f64,
) -> NewNotification {
    NewNotification {
        workflow_id: Some(workflow.id.clone()),
        kind: KIND_NEEDS_REVIEW.to_owned(),
        severity: Severity::Warning,
        title: format!("Workflow \"{}\" needs review", workflow.name),
        message: format!(
            "Step {step_number} of \"{}\" was healed ({method}) with a confidence of {:.0}%. \
             Check that the right element was used.",
            workflow.name,
            confidence * 100.0
        ),
    }
}

/// `successes / total`, 0 when nothing was counted yet.
pub fn success_rate(successes: i64, total: i64) -> f64 {
    if total <= 0 {
        0.0
    } else {
        // Counts stay far below 2^52, where i64 -> f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        let rate = successes.clamp(0, total) as f64 / total as f64;
        rate
    }
}

/// The successes behind a stored rate: `rate * total` is within rounding of a whole number.
fn successes(rate: f64, total: i64) -> i64 {
    if total <= 0 || !rate.is_finite() {
        return 0;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let successes = (rate * total as f64).round() as i64;
    successes.clamp(0, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(status: WorkflowStatus, rate: f64, total: i32, streak: i32) -> Figures {
        Figures {
            status,
            success_rate: rate,
            total_uses: total,
            consecutive_failures: streak,
        }
    }

    #[test]
    fn success_rate_is_successes_over_counted_runs() {
        let rules = HealthRules::default();
        let mut current = figures(WorkflowStatus::Active, 0.0, 0, 0);
        let verdicts = [
            Verdict::Success,
            Verdict::Failure,
            Verdict::Success,
            Verdict::Success,
            Verdict::Failure,
            Verdict::Success,
            Verdict::Success,
        ];
        let mut successes = 0;
        for (n, verdict) in verdicts.into_iter().enumerate() {
            successes += i32::from(verdict == Verdict::Success);
            current = rules.count_run(&current, verdict).figures;
            let total = i32::try_from(n + 1).unwrap_or(i32::MAX);
            assert_eq!(current.total_uses, total);
            assert!((current.success_rate - f64::from(successes) / f64::from(total)).abs() < 1e-12);
        }
        assert_eq!(current.success_rate, 5.0 / 7.0);
    }

    #[test]
    fn success_rate_stays_exact_over_many_runs() {
        let rules = HealthRules::default();
        let mut current = figures(WorkflowStatus::Active, 0.0, 0, 0);
        for n in 1..=10_000 {
            let verdict = if n % 3 == 0 {
                Verdict::Failure
            } else {
                Verdict::Success
            };
            current = rules.count_run(&current, verdict).figures;
        }
        assert_eq!(current.success_rate, 6_667.0 / 10_000.0);
    }

    #[test]
    fn success_rate_of_nothing_is_zero() {
        assert_eq!(success_rate(0, 0), 0.0);
        assert_eq!(success_rate(3, 4), 0.75);
        assert_eq!(successes(f64::NAN, 4), 0);
        assert_eq!(successes(1.5, 4), 4);
    }

    #[test]
    fn failures_in_a_row_break_a_workflow_once() {
        let rules = HealthRules::default();
        let mut current = figures(WorkflowStatus::Active, 1.0, 5, 0);
        for streak in 1..=2 {
            let update = rules.count_run(&current, Verdict::Failure);
            assert_eq!(update.transition, None);
            assert_eq!(update.figures.consecutive_failures, streak);
            current = update.figures;
        }
        let update = rules.count_run(&current, Verdict::Failure);
        assert_eq!(update.transition, Some(Transition::Broken));
        assert_eq!(update.figures.status, WorkflowStatus::Broken);
        assert_eq!(update.figures.consecutive_failures, 3);
        // Already broken: no second alert.
        let update = rules.count_run(&update.figures, Verdict::Failure);
        assert_eq!(update.transition, None);
        assert_eq!(update.figures.consecutive_failures, 4);
    }

    #[test]
    fn statuses_a_person_set_are_left_alone() {
        let rules = HealthRules::default();
        for status in [
            WorkflowStatus::Draft,
            WorkflowStatus::Processing,
            WorkflowStatus::Archived,
        ] {
            let failed = rules.count_run(&figures(status, 0.0, 5, 5), Verdict::Failure);
            assert_eq!(failed.transition, None, "{status:?}");
            let succeeded = rules.count_run(&figures(status, 0.0, 5, 5), Verdict::Success);
            assert_eq!(succeeded.transition, None, "{status:?}");
            assert_eq!(succeeded.figures.status, status);
        }
    }

    #[test]
    fn archived_workflows_are_never_broken() {
        let rules = HealthRules::default();
        let update = rules.count_run(
            &figures(WorkflowStatus::Archived, 0.0, 2, 2),
            Verdict::Failure,
        );
        assert_eq!(update.transition, None);
        assert_eq!(update.figures.status, WorkflowStatus::Archived);
    }

    #[test]
    fn a_success_resets_the_streak_and_recovers_a_broken_workflow() {
        let rules = HealthRules::default();
        let update = rules.count_run(
            &figures(WorkflowStatus::Broken, 0.0, 3, 3),
            Verdict::Success,
        );
        assert_eq!(update.transition, Some(Transition::Recovered));
        assert_eq!(update.figures.status, WorkflowStatus::Active);
        assert_eq!(update.figures.consecutive_failures, 0);
        assert_eq!(update.figures.success_rate, 0.25);
        let update = rules.count_run(
            &figures(WorkflowStatus::NeedsReview, 0.5, 2, 1),
            Verdict::Success,
        );
        assert_eq!(update.transition, None);
        assert_eq!(update.figures.status, WorkflowStatus::NeedsReview);
    }

    #[test]
    fn the_threshold_is_configurable() {
        let rules = HealthRules {
            broken_after_failures: 1,
            ..HealthRules::default()
        };
        let update = rules.count_run(
            &figures(WorkflowStatus::NeedsReview, 0.0, 0, 0),
            Verdict::Failure,
        );
        assert_eq!(update.transition, Some(Transition::Broken));
    }

    #[test]
    fn only_low_confidence_healing_needs_review() {
        use health_log::Status::*;
        let rules = HealthRules::default();
        assert!(rules.needs_review(HealedAi, Some(0.69)));
        assert!(rules.needs_review(HealedDeterministic, Some(0.0)));
        assert!(!rules.needs_review(HealedAi, Some(0.7)));
        assert!(!rules.needs_review(HealedAi, None));
        assert!(!rules.needs_review(Success, Some(0.1)));
        assert!(!rules.needs_review(Failed, Some(0.1)));
    }
}
