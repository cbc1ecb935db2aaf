//! Accounts: signing up a new company, joining one with its invite token, logging in, and
//! what a member changes about their own account (password, name, email).
//!
//! Sign-ins run before anyone is signed in, so they are the only functions here that do
//! not take a [`Tenant`]: they produce one. Each opens a session ([`session::open`]) and
//! records itself in the audit log, in the same transaction as the rest of its work.

use diesel::prelude::*;

use crate::db::Columns as _;

use serde_json::json;

use super::audit::{self, Action, Target};
use super::company::{self, Company};
use super::session::{self, Opened, SessionRules};
use super::user::{self, Role, User, normalize_email};
use super::{Tenant, new_id, now, required_name};
use crate::crypto::password::{self, Passwords};
use crate::db::schema::{companies, users};
use crate::db::{Actor, Db, IntoWork as _, NoEvents, Tx};
use crate::error::{AppError, AppResult};

/// A member who just signed in: their company, their account and their new session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub company: Company,
    pub user: User,
    pub session: Opened,
}

/// Invite tokens are 43 characters (32 random bytes, base64url); a much longer one cannot
/// match and is not worth a lookup.
const MAX_INVITE_TOKEN_BYTES: usize = 128;

/// What a person types to create an account.
pub struct Credentials {
    pub name: String,
    pub email: String,
    pub password: String,
}

/// A validated new member, with the password already hashed (hashing happens before any
/// transaction opens, so a slow hash never holds a database connection).
struct NewMember {
    name: String,
    email: String,
    password_hash: String,
}

impl NewMember {
    async fn from_credentials(passwords: &Passwords, credentials: Credentials) -> AppResult<Self> {
        let name = required_name("name", &credentials.name, user::MAX_NAME_CHARS)?;
        let email = normalize_email(&credentials.email)?;
        password::check_policy(&credentials.password)?;
        let password_hash = passwords.hash(credentials.password).await?;
        Ok(Self {
            name,
            email,
            password_hash,
        })
    }

    /// The member's row in the unit of work's company.
    fn to_user(&self, tenant: &Tenant, role: Role) -> User {
        let at = now();
        User {
            id: new_id(),
            company_id: tenant.id().to_owned(),
            email: self.email.clone(),
            password_hash: self.password_hash.clone(),
            name: self.name.clone(),
            role,
            created_at: at,
            updated_at: at,
            search_name: user::search_key(&self.name),
        }
    }
}

/// Creates a company and its first admin, both or neither, and signs the admin in.
pub async fn signup(
    db: &Db,
    passwords: &Passwords,
    sessions: &SessionRules,
    company_name: &str,
    credentials: Credentials,
) -> AppResult<SignedIn> {
    let company_name = required_name("companyName", company_name, company::MAX_NAME_CHARS)?;
    let member = NewMember::from_credentials(passwords, credentials).await?;
    let at = now();
    let company = Company {
        id: new_id(),
        name: company_name,
        invite_token: company::new_invite_token(),
        settings: "{}".to_owned(),
        created_at: at,
        updated_at: at,
    };
    // The unit of work acts for the company it creates.
    let tenant = Tenant::new(company.id.clone());
    let (company, member) = (&company, &member);
    db.write(&tenant, |tx| {
        signed_up(tx, sessions, company, member).into_work()
    })
    .await
}

async fn signed_up(
    tx: &mut Tx<NoEvents>,
    sessions: &SessionRules,
    company: &Company,
    member: &NewMember,
) -> AppResult<SignedIn> {
    // A company row belongs to no tenant yet: it is the tenant.
    tx.unscoped().insert(companies::table, company).await?;
    let mut user = member.to_user(tx.tenant(), Role::Admin);
    tx.insert(&mut user).await.map_err(email_conflict)?;
    let session = session::open(tx, sessions, &user.id).await?;
    audit::record_as(
        tx,
        &Actor::User(user.id.clone()),
        Action::SignedUp,
        Target::company(&company.id),
        json!({ "companyName": company.name, "email": user.email }),
    )
    .await?;
    Ok(SignedIn {
        company: company.clone(),
        user,
        session,
    })
}

/// Adds a regular member to the company whose invite token was given.
///
/// The token is checked before the password is hashed, so a wrong token costs a lookup,
/// not a hash; it is checked again in the transaction, in case it was rotated meanwhile.
pub async fn join(
    db: &Db,
    passwords: &Passwords,
    sessions: &SessionRules,
    invite_token: &str,
    credentials: Credentials,
) -> AppResult<SignedIn> {
    let invite_token = invite_token.trim();
    if invite_token.is_empty() {
        return Err(AppError::bad_input(
            "inviteToken",
            "inviteToken must not be empty",
        ));
    }
    if invite_token.len() > MAX_INVITE_TOKEN_BYTES {
        return Err(invalid_invite_token());
    }
    // Unscoped on purpose: nobody is signed in yet, and the token is what names the company.
    let company_id: String = {
        let mut tx = db.read_unscoped().await?;
        let mut all = tx.unscoped();
        all.optional(
            all.companies()
                .filter(companies::invite_token.eq(invite_token))
                .select(companies::id)
                .limit(1),
        )
        .await?
        .ok_or_else(invalid_invite_token)?
    };
    let member = NewMember::from_credentials(passwords, credentials).await?;
    let tenant = Tenant::new(company_id);
    let member = &member;
    db.write(&tenant, |tx| {
        joined(tx, sessions, invite_token, member).into_work()
    })
    .await
}

async fn joined(
    tx: &mut Tx<NoEvents>,
    sessions: &SessionRules,
    invite_token: &str,
    member: &NewMember,
) -> AppResult<SignedIn> {
    let company: Company = tx
        .optional(
            tx.company()
                .filter(companies::invite_token.eq(invite_token))
                .select(Company::columns()),
        )
        .await?
        .ok_or_else(invalid_invite_token)?;
    let mut user = member.to_user(tx.tenant(), Role::Regular);
    tx.insert(&mut user).await.map_err(email_conflict)?;
    let session = session::open(tx, sessions, &user.id).await?;
    audit::record_as(
        tx,
        &Actor::User(user.id.clone()),
        Action::MemberJoined,
        Target::user(&user.id),
        json!({ "email": user.email }),
    )
    .await?;
    Ok(SignedIn {
        company,
        user,
        session,
    })
}

fn invalid_invite_token() -> AppError {
    AppError::bad_input("inviteToken", "invalid invite token")
}

/// Signs in the account matching these credentials, opening a session. A wrong email and a
/// wrong password give the same error, after the same amount of work (the audit entry a
/// wrong password for a known account writes is not visible to the caller).
pub async fn log_in(
    db: &Db,
    passwords: &Passwords,
    sessions: &SessionRules,
    email: &str,
    password: String,
) -> AppResult<SignedIn> {
    let rejected = || AppError::Unauthenticated("invalid email or password");
    // A malformed address cannot belong to anyone; still spend the hashing time.
    let found = match normalize_email(email) {
        Ok(email) => user::find_by_email(db, &email).await?,
        Err(_) => None,
    };
    let stored = found.as_ref().map(|u| u.password_hash.clone());
    let verified = passwords.verify(password, stored).await?;
    let Some(user) = found else {
        // No account, no company to keep an entry in.
        return Err(rejected());
    };
    let tenant = Tenant::new(user.company_id.clone());
    let user = &user;
    if !verified {
        db.write(&tenant, |tx| failed_sign_in(tx, user).into_work())
            .await?;
        return Err(rejected());
    }
    db.write(&tenant, |tx| signed_in(tx, sessions, user).into_work())
        .await
}

async fn failed_sign_in(tx: &mut Tx<NoEvents>, user: &User) -> AppResult<()> {
    audit::record(
        tx,
        Action::SignInFailed,
        Target::user(&user.id),
        json!({ "email": user.email }),
    )
    .await
}

async fn signed_in(
    tx: &mut Tx<NoEvents>,
    sessions: &SessionRules,
    user: &User,
) -> AppResult<SignedIn> {
    // The account as it is now, under the transaction (it may have been removed or
    // changed while the password was being checked).
    let user: User = tx
        .optional(
            tx.users()
                .filter(users::id.eq(&user.id))
                .select(User::columns()),
        )
        .await?
        .ok_or(AppError::Unauthenticated("invalid email or password"))?;
    let company: Company = tx
        .optional(tx.company().select(Company::columns()))
        .await?
        .ok_or(AppError::NotFound("company"))?;
    let session = session::open(tx, sessions, &user.id).await?;
    audit::record_as(
        tx,
        &Actor::User(user.id.clone()),
        Action::SignInSucceeded,
        Target::user(&user.id),
        json!({ "email": user.email }),
    )
    .await?;
    Ok(SignedIn {
        company,
        user,
        session,
    })
}

/// Changes a member's password after checking their current one, and ends every other
/// session of theirs (`keep_session`, the one asking, stays). Answers the ended sessions.
pub async fn change_password(
    db: &Db,
    passwords: &Passwords,
    tenant: &Tenant,
    user_id: &str,
    keep_session: &str,
    current: String,
    new: String,
) -> AppResult<Vec<String>> {
    password::check_policy(&new).map_err(|_| {
        AppError::bad_input(
            "newPassword",
            format!(
                "newPassword must be {} to {} characters long",
                password::MIN_PASSWORD_CHARS,
                password::MAX_PASSWORD_CHARS
            ),
        )
    })?;
    let user = user::find(db, tenant, user_id)
        .await
        .map_err(|error| match error {
            AppError::NotFound(_) => AppError::Unauthenticated("this account no longer exists"),
            other => other,
        })?;
    if !passwords.verify(current, Some(user.password_hash)).await? {
        return Err(AppError::bad_input(
            "currentPassword",
            "currentPassword is not this account's password",
        ));
    }
    let new_hash = passwords.hash(new).await?;
    let new_hash = &new_hash;
    db.write(tenant, |tx| {
        password_changed(tx, user_id, keep_session, new_hash).into_work()
    })
    .await
}

async fn password_changed(
    tx: &mut Tx<NoEvents>,
    user_id: &str,
    keep_session: &str,
    new_hash: &str,
) -> AppResult<Vec<String>> {
    let changed = tx
        .execute(tx.users().filter(users::id.eq(user_id)).set((
            users::password_hash.eq(new_hash),
            users::updated_at.eq(now()),
        )))
        .await?;
    if changed == 0 {
        return Err(AppError::Unauthenticated("this account no longer exists"));
    }
    let ended = session::end_others(tx, user_id, Some(keep_session)).await?;
    audit::record(
        tx,
        Action::PasswordChanged,
        Target::user(user_id),
        json!({ "sessionsEnded": ended.len() }),
    )
    .await?;
    Ok(ended)
}

/// Changes a member's display name and/or login email (another account's email is
/// CONFLICT). Changing nothing is allowed and records nothing.
pub async fn update_profile(
    db: &Db,
    tenant: &Tenant,
    user_id: &str,
    name: Option<&str>,
    email: Option<&str>,
) -> AppResult<User> {
    let name = name
        .map(|name| required_name("name", name, user::MAX_NAME_CHARS))
        .transpose()?;
    let email = email.map(normalize_email).transpose()?;
    let (name, email) = (name.as_deref(), email.as_deref());
    db.write(tenant, |tx| {
        profile_updated(tx, user_id, name, email).into_work()
    })
    .await
}

async fn profile_updated(
    tx: &mut Tx<NoEvents>,
    user_id: &str,
    name: Option<&str>,
    email: Option<&str>,
) -> AppResult<User> {
    let before: User = tx
        .optional(
            tx.users()
                .filter(users::id.eq(user_id))
                .select(User::columns()),
        )
        .await?
        .ok_or(AppError::Unauthenticated("this account no longer exists"))?;
    let name = name.unwrap_or(&before.name);
    let email = email.unwrap_or(&before.email);
    if name == before.name && email == before.email {
        return Ok(before);
    }
    let after: User = tx
        .one(
            tx.users()
                .filter(users::id.eq(user_id))
                .set((
                    users::search_name.eq(user::search_key(name)),
                    users::name.eq(name),
                    users::email.eq(email),
                    users::updated_at.eq(now()),
                ))
                .returning(User::columns()),
        )
        .await
        .map_err(|error| {
            if error.is_unique_violation() {
                AppError::Conflict("another account already uses this email".to_owned())
            } else {
                error
            }
        })?;
    audit::record(
        tx,
        Action::ProfileUpdated,
        Target::user(user_id),
        json!({
            "before": { "name": before.name, "email": before.email },
            "after": { "name": after.name, "email": after.email },
        }),
    )
    .await?;
    Ok(after)
}

/// The only unique value of a new member is their email.
fn email_conflict(error: AppError) -> AppError {
    if error.is_unique_violation() {
        AppError::Conflict("an account with this email already exists".to_owned())
    } else {
        error
    }
}
