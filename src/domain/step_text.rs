//! AI-written step text: a model suggests a step's label and instruction, and the
//! suggestion is applied only where no person's text would be lost.
//!
//! A field is a person's when a person edited it after an AI wrote it (`label_edited`,
//! `instruction_edited`), or when it holds text on a step no AI has written for
//! (`ai_model` empty: the text came from the recording or from a person). The first
//! suggestion applied to such a step records that ownership in the `*_edited` flags, so
//! it holds after `ai_model` is set. The decision is made under the workflow's lock that
//! every step edit takes first (the lock order), so a person's concurrent edit either
//! lands before it (and is kept) or after it.

use diesel::prelude::*;

use super::step::{MAX_TEXT_CHARS, Step};
use super::{Tenant, now, refuse_nul};
use crate::db::schema::{steps, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, NoEvents, Tx};
use crate::error::{AppError, AppResult};

/// The longest `aiModel` name.
pub const MAX_MODEL_CHARS: usize = 200;

/// A step's text fields a suggestion may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Label,
    Instruction,
}

/// What a model suggests for a step.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub field_label: Option<String>,
    pub instruction: Option<String>,
    pub ai_model: String,
    pub ai_confidence: Option<f64>,
}

/// The step after a suggestion, and which suggested fields were applied or kept as a
/// person wrote them.
#[derive(Debug, Clone)]
pub struct Suggested {
    pub step: Step,
    pub applied: Vec<TextField>,
    pub skipped: Vec<TextField>,
}

fn text(field: &str, value: Option<String>) -> AppResult<Option<String>> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(value) = &value {
        if value.chars().count() > MAX_TEXT_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("{field} must be at most {MAX_TEXT_CHARS} characters long"),
            ));
        }
        refuse_nul(field, value)?;
    }
    Ok(value)
}

/// Applies a model's suggested label and instruction to the tenant's step `step_id`
/// where they overwrite no person's text (see the module docs).
pub async fn suggest(
    db: &Db,
    tenant: &Tenant,
    step_id: &str,
    suggestion: Suggestion,
) -> AppResult<Suggested> {
    let field_label = text("fieldLabel", suggestion.field_label)?;
    let instruction = text("instruction", suggestion.instruction)?;
    if field_label.is_none() && instruction.is_none() {
        return Err(AppError::bad_input(
            "fieldLabel",
            "suggest a fieldLabel, an instruction or both",
        ));
    }
    let model = suggestion.ai_model.trim().to_owned();
    if model.is_empty() || model.chars().count() > MAX_MODEL_CHARS {
        return Err(AppError::bad_input(
            "aiModel",
            format!("aiModel must be 1 to {MAX_MODEL_CHARS} characters long"),
        ));
    }
    refuse_nul("aiModel", &model)?;
    if suggestion
        .ai_confidence
        .is_some_and(|c| !(0.0..=1.0).contains(&c))
    {
        return Err(AppError::bad_input(
            "aiConfidence",
            "aiConfidence must be between 0 and 1",
        ));
    }
    let suggestion = Suggestion {
        field_label,
        instruction,
        ai_model: model,
        ai_confidence: suggestion.ai_confidence,
    };
    let suggestion = &suggestion;
    db.write(tenant, |tx| applied(tx, step_id, suggestion).into_work())
        .await
}

async fn applied(
    tx: &mut Tx<NoEvents>,
    step_id: &str,
    suggestion: &Suggestion,
) -> AppResult<Suggested> {
    // The workflow first, like every step edit: what is read below stays until commit.
    let workflow_of_step = tx
        .steps()
        .filter(steps::id.eq(step_id))
        .select(steps::workflow_id)
        .into_subquery();
    let touched = tx
        .execute(
            tx.workflows()
                .filter(workflows::id.eq_any(workflow_of_step))
                .set(workflows::updated_at.eq(now())),
        )
        .await?;
    if touched == 0 {
        return Err(AppError::NotFound("step"));
    }
    let step: Step = tx
        .optional(
            tx.steps()
                .filter(steps::id.eq(step_id))
                .select(Step::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("step"))?;
    let no_ai_yet = step.ai_model.is_none();
    let persons_label = step.label_edited || (no_ai_yet && step.field_label.is_some());
    let persons_instruction = step.instruction_edited || (no_ai_yet && step.instruction.is_some());
    let mut applied = Vec::new();
    let mut skipped = Vec::new();
    let label = match &suggestion.field_label {
        Some(label) if !persons_label => {
            applied.push(TextField::Label);
            Some(Some(label.clone()))
        }
        Some(_) => {
            skipped.push(TextField::Label);
            None
        }
        None => None,
    };
    let instruction = match &suggestion.instruction {
        Some(text) if !persons_instruction => {
            applied.push(TextField::Instruction);
            Some(Some(text.clone()))
        }
        Some(_) => {
            skipped.push(TextField::Instruction);
            None
        }
        None => None,
    };
    if applied.is_empty() {
        return Ok(Suggested {
            step,
            applied,
            skipped,
        });
    }
    #[derive(AsChangeset)]
    #[diesel(table_name = steps)]
    struct Patch {
        field_label: Option<Option<String>>,
        instruction: Option<Option<String>>,
        ai_model: Option<String>,
        ai_confidence: Option<Option<f64>>,
        label_edited: bool,
        instruction_edited: bool,
        updated_at: chrono::NaiveDateTime,
    }
    let patch = Patch {
        field_label: label,
        instruction,
        ai_model: Some(suggestion.ai_model.clone()),
        ai_confidence: Some(suggestion.ai_confidence),
        // A person's text stays theirs once the step counts as AI-written.
        label_edited: persons_label,
        instruction_edited: persons_instruction,
        updated_at: now(),
    };
    let step = tx
        .one(
            tx.steps()
                .filter(steps::id.eq(&step.id))
                .set(&patch)
                .returning(Step::columns()),
        )
        .await?;
    Ok(Suggested {
        step,
        applied,
        skipped,
    })
}
