//! `suggestStepText`: an AI's label and instruction for a step, applied only where they
//! overwrite no person's text.

use async_graphql::{Context, Enum, ID, Object};

use super::context::ContextExt as _;
use super::step::Step;
use crate::domain;
use crate::domain::step_text::{Suggested, Suggestion};

/// A step's text field an AI may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::step_text::TextField")]
pub enum StepTextField {
    /// `Step.fieldLabel`.
    Label,
    /// `Step.instruction`.
    Instruction,
}

/// What `suggestStepText` did.
pub struct StepTextSuggestion {
    suggested: Suggested,
}

/// What `suggestStepText` did: the step as it is now, and which suggested fields were
/// written or left as a person wrote them.
#[Object]
impl StepTextSuggestion {
    /// The step after the suggestion.
    async fn step(&self) -> Step {
        self.suggested.step.clone().into()
    }

    /// The suggested fields that were written.
    async fn applied(&self) -> Vec<StepTextField> {
        self.suggested.applied.iter().map(|f| (*f).into()).collect()
    }

    /// The suggested fields left alone because a person wrote or edited them.
    async fn skipped(&self) -> Vec<StepTextField> {
        self.suggested.skipped.iter().map(|f| (*f).into()).collect()
    }
}

#[derive(Default)]
pub struct StepTextMutation;

#[Object]
impl StepTextMutation {
    /// Writes an AI model's label and instruction for a step where no person's text would
    /// be lost: a field a person edited (`labelEdited`/`instructionEdited`), or that holds
    /// text on a step no AI wrote for, is left alone and listed in `skipped`. Sets
    /// `aiModel`/`aiConfidence` when anything was written.
    async fn suggest_step_text(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The step.")] step_id: ID,
        #[graphql(desc = "The suggested label; at most 2,000 characters.")] field_label: Option<
            String,
        >,
        #[graphql(desc = "The suggested instruction; at most 2,000 characters.")]
        instruction: Option<String>,
        #[graphql(desc = "The model that wrote them; 1 to 200 characters.")] ai_model: String,
        #[graphql(desc = "How sure the model is, 0 to 1.")] ai_confidence: Option<f64>,
    ) -> async_graphql::Result<StepTextSuggestion> {
        let viewer = ctx.viewer()?;
        let suggestion = Suggestion {
            field_label,
            instruction,
            ai_model,
            ai_confidence,
        };
        let suggested =
            domain::step_text::suggest(ctx.db(), &viewer.tenant, &step_id, suggestion).await?;
        Ok(StepTextSuggestion { suggested })
    }
}
