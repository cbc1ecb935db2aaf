//! Accounts: signing up a new company, joining one with its invite token, and logging in.
//!
//! These run before anyone is signed in, so they are the only functions here that do not
//! take a [`Tenant`]: they produce one.

use diesel::prelude::*;

use crate::db::Columns as _;

use super::company::{self, Company};
use super::user::{self, Role, User, normalize_email};
use super::{Tenant, new_id, now, required_name};
use crate::crypto::password::{self, Passwords};
use crate::db::schema::companies;
use crate::db::{Db, IntoWork as _, NoEvents, Tx};
use crate::error::{AppError, AppResult};

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

/// Creates a company and its first admin, both or neither.
pub async fn signup(
    db: &Db,
    passwords: &Passwords,
    company_name: &str,
    credentials: Credentials,
) -> AppResult<(Company, User)> {
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
    db.write(&tenant, |tx| signed_up(tx, company, member).into_work())
        .await
}

async fn signed_up(
    tx: &mut Tx<NoEvents>,
    company: &Company,
    member: &NewMember,
) -> AppResult<(Company, User)> {
    // A company row belongs to no tenant yet: it is the tenant.
    tx.unscoped().insert(companies::table, company).await?;
    let mut user = member.to_user(tx.tenant(), Role::Admin);
    tx.insert(&mut user).await.map_err(email_conflict)?;
    Ok((company.clone(), user))
}

/// Adds a regular member to the company whose invite token was given.
///
/// The token is checked before the password is hashed, so a wrong token costs a lookup,
/// not a hash; it is checked again in the transaction, in case it was rotated meanwhile.
pub async fn join(
    db: &Db,
    passwords: &Passwords,
    invite_token: &str,
    credentials: Credentials,
) -> AppResult<(Company, User)> {
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
    db.write(&tenant, |tx| joined(tx, invite_token, member).into_work())
        .await
}

async fn joined(
    tx: &mut Tx<NoEvents>,
    invite_token: &str,
    member: &NewMember,
) -> AppResult<(Company, User)> {
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
    Ok((company, user))
}

fn invalid_invite_token() -> AppError {
    AppError::bad_input("inviteToken", "invalid invite token")
}

/// The account matching these credentials. A wrong email and a wrong password give the
/// same error, after the same amount of work.
pub async fn authenticate(
    db: &Db,
    passwords: &Passwords,
    email: &str,
    password: String,
) -> AppResult<User> {
    let rejected = || AppError::Unauthenticated("invalid email or password");
    // A malformed address cannot belong to anyone; still spend the hashing time.
    let found = match normalize_email(email) {
        Ok(email) => user::find_by_email(db, &email).await?,
        Err(_) => None,
    };
    let stored = found.as_ref().map(|u| u.password_hash.clone());
    if passwords.verify(password, stored).await? {
        found.ok_or_else(rejected)
    } else {
        Err(rejected())
    }
}

/// The only unique value of a new member is their email.
fn email_conflict(error: AppError) -> AppError {
    if error.is_unique_violation() {
        AppError::Conflict("an account with this email already exists".to_owned())
    } else {
        error
    }
}
