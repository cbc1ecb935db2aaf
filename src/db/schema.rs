//! The one portable schema for both backends.
//!
//! Only types that mean the same on SQLite and PostgreSQL are used: ids and JSON are `Text`,
//! timestamps are `Timestamp` holding UTC. The migration trees must produce exactly these
//! columns on each backend (the test suite applies both).

diesel::table! {
    companies (id) {
        id -> Text,
        name -> Text,
        invite_token -> Text,
        settings -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        company_id -> Text,
        email -> Text,
        password_hash -> Text,
        name -> Text,
        role -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        search_name -> Text,
    }
}

diesel::table! {
    workflows (id) {
        id -> Text,
        company_id -> Text,
        created_by -> Nullable<Text>,
        name -> Text,
        description -> Nullable<Text>,
        status -> Text,
        success_rate -> Double,
        total_uses -> Integer,
        consecutive_failures -> Integer,
        last_success_at -> Nullable<Timestamp>,
        last_failure_at -> Nullable<Timestamp>,
        tags -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        search_name -> Text,
        current_version -> Integer,
        project_id -> Nullable<Text>,
        visibility -> Text,
    }
}

diesel::table! {
    screenshots (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        hash -> Text,
        storage_key -> Text,
        content_type -> Text,
        size_bytes -> BigInt,
        width -> Integer,
        height -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    steps (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        step_number -> Integer,
        action_type -> Text,
        selectors -> Text,
        element_meta -> Text,
        page_context -> Text,
        action_data -> Text,
        dom_context -> Text,
        screenshot_id -> Nullable<Text>,
        field_label -> Nullable<Text>,
        instruction -> Nullable<Text>,
        ai_confidence -> Nullable<Double>,
        ai_model -> Nullable<Text>,
        label_edited -> Bool,
        instruction_edited -> Bool,
        edited_by -> Nullable<Text>,
        edited_at -> Nullable<Timestamp>,
        healed_selectors -> Nullable<Text>,
        healed_at -> Nullable<Timestamp>,
        healing_confidence -> Nullable<Double>,
        healing_method -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    runs (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        started_by -> Nullable<Text>,
        status -> Text,
        steps_total -> Integer,
        steps_completed -> Integer,
        steps_failed -> Integer,
        steps_healed -> Integer,
        current_step_id -> Nullable<Text>,
        error -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
        trigger_kind -> Text,
        priority -> Integer,
        not_before -> Nullable<Timestamp>,
        input -> Nullable<Text>,
        output -> Nullable<Text>,
        attempt -> Integer,
        max_attempts -> Integer,
        lease_id -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        retry_of -> Nullable<Text>,
        from_step_id -> Nullable<Text>,
        trigger_id -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        workflow_version -> Nullable<Integer>,
    }
}

diesel::table! {
    health_logs (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        run_id -> Text,
        step_id -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        status -> Text,
        error_type -> Nullable<Text>,
        error_message -> Nullable<Text>,
        healing_confidence -> Nullable<Double>,
        deterministic_score -> Nullable<Double>,
        ai_score -> Nullable<Double>,
        page_url -> Nullable<Text>,
        execution_time_ms -> Nullable<Integer>,
        created_at -> Timestamp,
        commit_seq -> BigInt,
    }
}

diesel::table! {
    notifications (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Nullable<Text>,
        kind -> Text,
        severity -> Text,
        title -> Text,
        message -> Text,
        read -> Bool,
        read_at -> Nullable<Timestamp>,
        read_by -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    schedules (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        name -> Nullable<Text>,
        cron -> Text,
        timezone -> Text,
        input -> Nullable<Text>,
        priority -> Integer,
        enabled -> Bool,
        next_fire_at -> Nullable<Timestamp>,
        last_fired_at -> Nullable<Timestamp>,
        last_run_id -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        name -> Nullable<Text>,
        enabled -> Bool,
        secret_salt -> Text,
        previous_secret_salt -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamp>,
        secret_rotated_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        company_id -> Text,
        name -> Text,
        role -> Text,
        prefix -> Text,
        secret_hash -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        revoked_by -> Nullable<Text>,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        company_id -> Text,
        user_id -> Text,
        created_at -> Timestamp,
        last_used_at -> Timestamp,
        expires_at -> Timestamp,
        user_agent -> Nullable<Text>,
        client_address -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        company_id -> Text,
        session_id -> Text,
        created_at -> Timestamp,
        rotated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    user_settings (user_id) {
        user_id -> Text,
        company_id -> Text,
        time_zone -> Text,
        locale -> Text,
        notification_severities -> Text,
        muted_notification_kinds -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        company_id -> Text,
        created_at -> Timestamp,
        actor_type -> Text,
        actor_id -> Nullable<Text>,
        actor_label -> Nullable<Text>,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        client_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        summary -> Text,
    }
}

diesel::table! {
    retention_policies (company_id) {
        company_id -> Text,
        run_max_age_days -> Nullable<Integer>,
        runs_kept_per_workflow -> Nullable<Integer>,
        notification_max_age_days -> Nullable<Integer>,
        version -> BigInt,
        updated_at -> Timestamp,
        next_sweep_at -> Timestamp,
        claimed_by -> Nullable<Text>,
        claimed_until -> Nullable<Timestamp>,
        audit_max_age_days -> Nullable<Integer>,
    }
}

diesel::table! {
    workflow_step_snapshots (company_id, workflow_id, hash) {
        company_id -> Text,
        workflow_id -> Text,
        hash -> Text,
        action_type -> Text,
        selectors -> Text,
        element_meta -> Text,
        page_context -> Text,
        action_data -> Text,
        dom_context -> Text,
        screenshot_id -> Nullable<Text>,
        field_label -> Nullable<Text>,
        instruction -> Nullable<Text>,
        ai_confidence -> Nullable<Double>,
        ai_model -> Nullable<Text>,
        label_edited -> Bool,
        instruction_edited -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    workflow_versions (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        number -> Integer,
        name -> Text,
        description -> Nullable<Text>,
        tags -> Text,
        steps -> Text,
        summary -> Text,
        restored_from -> Nullable<Integer>,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    projects (id) {
        id -> Text,
        company_id -> Text,
        name -> Text,
        description -> Nullable<Text>,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    workflow_shares (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        user_id -> Text,
        permission -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    workflow_share_links (id) {
        id -> Text,
        company_id -> Text,
        workflow_id -> Text,
        token_hash -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        access_count -> BigInt,
        last_accessed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    workflow_templates (id) {
        id -> Text,
        company_id -> Text,
        name -> Text,
        search_name -> Text,
        description -> Nullable<Text>,
        tags -> Text,
        visibility -> Text,
        published -> Bool,
        parameters -> Text,
        steps -> Text,
        step_count -> Integer,
        includes_screenshots -> Bool,
        source_workflow_id -> Nullable<Text>,
        source_version -> Nullable<Integer>,
        created_by -> Nullable<Text>,
        usage_count -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    template_screenshots (id) {
        id -> Text,
        company_id -> Text,
        template_id -> Text,
        hash -> Text,
        storage_key -> Text,
        content_type -> Text,
        size_bytes -> BigInt,
        width -> Integer,
        height -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    template_ratings (template_id, user_id) {
        company_id -> Text,
        template_id -> Text,
        user_id -> Text,
        stars -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(users -> companies (company_id));
diesel::joinable!(workflows -> companies (company_id));
diesel::joinable!(workflows -> users (created_by));
diesel::joinable!(steps -> workflows (workflow_id));
diesel::joinable!(steps -> screenshots (screenshot_id));
diesel::joinable!(screenshots -> workflows (workflow_id));
diesel::joinable!(runs -> workflows (workflow_id));
diesel::joinable!(health_logs -> runs (run_id));
diesel::joinable!(notifications -> companies (company_id));
diesel::joinable!(workflow_versions -> workflows (workflow_id));
diesel::joinable!(workflow_shares -> workflows (workflow_id));
diesel::joinable!(workflow_share_links -> workflows (workflow_id));
diesel::joinable!(template_ratings -> workflow_templates (template_id));
diesel::joinable!(template_screenshots -> workflow_templates (template_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));

diesel::allow_tables_to_appear_in_same_query!(
    companies,
    users,
    workflows,
    screenshots,
    steps,
    runs,
    health_logs,
    notifications,
    schedules,
    webhooks,
    api_keys,
    sessions,
    refresh_tokens,
    user_settings,
    audit_log,
    retention_policies,
    workflow_step_snapshots,
    workflow_versions,
    projects,
    workflow_shares,
    workflow_share_links,
    workflow_templates,
    template_screenshots,
    template_ratings,
);
