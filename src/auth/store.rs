//! Users and roles: kept in memory for authentication, mirrored to sled on every write.
//!
//! On-disk layout (sled trees in the shared database):
//! - `users`: key = user name (UTF-8), value = JSON `{"Name","Roles","PasswordHash","Secret"}`;
//!   `PasswordHash` is an argon2id PHC string (absent for a user who cannot log in with a
//!   password), `Secret` is 32 random bytes in base64url, replaced on every password change.
//! - `roles`: key = role name (UTF-8), value = JSON `{"Name","Claims":[{"Scope","Action","Specific"}]}`.
//! - `meta`: `auth_schema_version` = u32 big-endian (`store::db::AUTH_SCHEMA`, checked there);
//!   `token_secret` = the 32 raw bytes that sign tokens.
//!
//! The trees, their names and the schema check belong to [`crate::store::db`].
//!
//! A cluster node keeps the cluster's users and roles in the same trees of its copy of the
//! stream's database, with the cluster's token secret: each change is planned here
//! ([`AccountWrite`]), published, and stored when the node's copy reads it back
//! ([`AuthStore::apply`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::claims::{Claim, Claims, Role};
use super::credentials::Credentials;
use super::password::{BasicCache, Check, hash_password, random_bytes, verify_password};
use super::token::{Payload, Token, TokenSigner, fingerprint, unix_now, validate_ttl};
use super::token_cache::TokenCache;
use super::{AuthError, Identity};

/// The user created on first start (DRP).
pub(crate) const DEFAULT_ADMIN_USER: &str = "rocketskates";

/// DRP's well-known default password, used when no admin password is configured.
pub(super) const DEFAULT_ADMIN_PASSWORD: &str = "r0cketsk8ts";

/// The role that holds `*:*:*`; it always exists and cannot be redefined.
pub(super) const SUPERUSER_ROLE: &str = "superuser";

use crate::store::db::{
    AUTH_SCHEMA, AuthTrees, OpenError, ROLES_TREE, TOKEN_SECRET_KEY, USERS_TREE,
};
use crate::store::versions::{Base, Verdict, Versions};
use crate::wire::name::MAX_NAME_BYTES;

/// The size of the secret that signs tokens.
pub(crate) const TOKEN_SECRET_BYTES: usize = 32;

/// A new random token secret (a cluster offers it as the cluster's).
pub(crate) fn new_token_secret() -> Result<Vec<u8>, AuthError> {
    Ok(random_bytes::<TOKEN_SECRET_BYTES>()?.to_vec())
}

/// A user as stored; never leaves this module except as a [`UserView`] (or privately, in an
/// [`AccountWrite`] of a cluster's stream).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Roles", default)]
    roles: Vec<String>,
    #[serde(rename = "PasswordHash", default)]
    password_hash: Option<String>,
    #[serde(rename = "Secret")]
    secret: String,
}

impl StoredUser {
    fn view(&self) -> UserView {
        UserView {
            name: self.name.clone(),
            roles: self.roles.clone(),
        }
    }
}

/// A user as shown in REST answers and events: never its password hash or secret
/// (`docs/protocol.md` §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserView {
    /// The user's unique name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The roles the user holds.
    #[serde(rename = "Roles")]
    pub roles: Vec<String>,
}

/// A request to create a user (`POST /api/v3/users`); other fields in the body are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct NewUser {
    /// The new user's name.
    #[serde(rename = "Name", default, deserialize_with = "super::null_as_empty")]
    pub name: String,
    /// Roles to grant; each must exist.
    #[serde(rename = "Roles", default, deserialize_with = "super::null_as_empty")]
    pub roles: Vec<String>,
    /// The password; without one the user can only use tokens minted for it.
    #[serde(rename = "Password", default)]
    pub password: Option<String>,
}

/// One change to the users and roles, as a node stores it, or as a cluster's stream carries
/// it (privately, beside the change's public event) to every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum AccountWrite {
    /// A user created or changed; `default_password` when the change sets the admin's password
    /// (whether it is DRP's default), `None` when it leaves it.
    SetUser {
        /// The user as it is to be stored.
        user: StoredUser,
        /// Whether the admin's new password is DRP's default.
        default_password: Option<bool>,
    },
    /// A user deleted.
    DeleteUser(String),
    /// A role created or redefined.
    SetRole(Role),
    /// A role deleted.
    DeleteRole(String),
}

impl AccountWrite {
    /// The type of the change's event: `users` or `roles`.
    pub(crate) fn ty(&self) -> &'static str {
        match self {
            AccountWrite::SetUser { .. } | AccountWrite::DeleteUser(_) => USERS_TREE,
            AccountWrite::SetRole(_) | AccountWrite::DeleteRole(_) => ROLES_TREE,
        }
    }

    /// The name of the user or role it changes.
    pub(crate) fn key(&self) -> &str {
        match self {
            AccountWrite::SetUser { user, .. } => &user.name,
            AccountWrite::SetRole(role) => &role.name,
            AccountWrite::DeleteUser(name) | AccountWrite::DeleteRole(name) => name,
        }
    }

    /// The user as answers and events show it, for a change that sets one.
    pub(crate) fn user_view(&self) -> Option<UserView> {
        match self {
            AccountWrite::SetUser { user, .. } => Some(user.view()),
            _ => None,
        }
    }

    /// The change as one header value: its JSON in base64url, so any name fits a header.
    pub(crate) fn to_header(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The change a header value carries; `None` when it carries none.
    pub(crate) fn from_header(value: &str) -> Option<AccountWrite> {
        let json = URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A password checked and hashed by [`AuthStore::hash_new_password`].
#[derive(Clone)]
pub(crate) struct HashedPassword {
    /// The argon2id hash in PHC string format.
    phc: String,
    /// Whether it is the well-known default admin password.
    is_default: bool,
}

/// The outcome of the fast authentication path.
#[derive(Debug)]
pub(crate) enum FastAuth {
    /// Decided without hashing a password.
    Done(Result<Identity, AuthError>),
    /// A password must be verified: call [`AuthStore::authenticate_slow`] on a blocking thread.
    NeedsHash,
}

/// What [`AuthStore::open`] did with the admin user `rocketskates` and its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminPassword {
    /// The admin did not exist (a first start, or it was deleted) and was created with the
    /// configured password, or DRP's default on a first start without one.
    Created,
    /// The configured password differed from the stored one and replaced it.
    Set,
    /// The configured password is the one already stored.
    Unchanged,
    /// No password was configured; the admin keeps the one it has.
    NotConfigured,
    /// No password was configured and the admin was deleted; it stays deleted.
    Absent,
}

/// The admin's state after [`AuthStore::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdminStart {
    /// What happened to the admin's password.
    pub password: AdminPassword,
    /// Whether `rocketskates` now has DRP's default password.
    pub default_password: bool,
}

/// Users, roles and token signing, shared by all core threads (`Send + Sync`, behind an `Arc`).
pub(crate) struct AuthStore {
    /// A cluster node's record of the writes its copy holds: its changes are then planned
    /// only, and stored when they come back from the cluster's stream.
    versions: Option<Versions>,
    users_tree: sled::Tree,
    roles_tree: sled::Tree,
    users: RwLock<HashMap<String, StoredUser>>,
    roles: RwLock<BTreeMap<String, Role>>,
    signer: TokenSigner,
    cache: BasicCache,
    tokens: TokenCache,
    /// A hash to verify against for unknown users, so their answer takes as long as a known one's.
    decoy_hash: OnceLock<String>,
    default_password_in_use: AtomicBool,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// A change's answer without the change.
#[cfg(test)]
fn answer<T>(changed: Result<(T, AccountWrite), AuthError>) -> Result<T, AuthError> {
    changed.map(|(answer, _)| answer)
}

/// Checks a user or role name: non-empty, at most 255 bytes, no `/`, `:` or control characters.
fn validate_name(kind: &str, name: &str) -> Result<(), AuthError> {
    crate::wire::name::check_name(&format!("{kind} name"), name).map_err(AuthError::Invalid)?;
    // Principals are `user:<name>`, and tokens in a query parameter split at the first ':'.
    if name.contains(':') {
        return Err(AuthError::Invalid(format!(
            "{kind} name {name:?} must not contain `:`"
        )));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::Invalid("the password must not be empty".into()));
    }
    Ok(())
}

fn new_secret() -> Result<String, AuthError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

fn decode<T: for<'de> Deserialize<'de>>(
    tree: &str,
    key: &[u8],
    value: &[u8],
) -> Result<T, AuthError> {
    serde_json::from_slice(value).map_err(|e| {
        AuthError::Corrupt(format!(
            "entry {:?} of tree `{tree}` is not valid JSON: {e}",
            String::from_utf8_lossy(key)
        ))
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(|e| AuthError::Corrupt(format!("cannot encode: {e}")))
}

fn superuser_role() -> Role {
    Role {
        name: SUPERUSER_ROLE.to_owned(),
        claims: vec![Claim::superuser()],
    }
}

/// The trees from the store, once their schema version is checked.
fn open_trees(db: &sled::Db) -> Result<AuthTrees, AuthError> {
    crate::store::db::auth_trees(db).map_err(|error| match error {
        OpenError::Sled(error) => AuthError::from(error),
        OpenError::Schema(stored) => AuthError::Corrupt(format!(
            "auth data has schema version {stored:?}, this herald reads version {}; use the herald that wrote it",
            AUTH_SCHEMA.version
        )),
    })
}

/// The token secret, created once and kept.
fn open_meta(meta: &sled::Tree) -> Result<Vec<u8>, AuthError> {
    if meta.get(TOKEN_SECRET_KEY)?.is_none() {
        let fresh = random_bytes::<TOKEN_SECRET_BYTES>()?;
        // Whoever stores first wins; both then read the same secret back.
        let _ = meta.compare_and_swap(TOKEN_SECRET_KEY, None::<&[u8]>, Some(&fresh[..]))?;
    }
    match meta.get(TOKEN_SECRET_KEY)? {
        Some(secret) if secret.len() == TOKEN_SECRET_BYTES => Ok(secret.to_vec()),
        _ => Err(AuthError::Corrupt(
            "the token secret in `meta` is not 32 bytes; delete key `token_secret` to make a new one (all tokens become invalid)".into(),
        )),
    }
}

impl AuthStore {
    /// Opens trees `users`, `roles` and `meta` in the shared database, then applies
    /// `admin_password` to `rocketskates` (see [`AdminPassword`]): on every start, so the
    /// configured password is the one that works. Without one, a first start creates
    /// `rocketskates` (role `superuser`) with DRP's default `r0cketsk8ts`, and a later start
    /// leaves the admin as it is. Answers what it did and whether the default password is in
    /// use, so the caller can say so in the log and in `/api/v3/info`.
    pub(crate) fn open(
        db: &sled::Db,
        admin_password: Option<&str>,
    ) -> Result<(AuthStore, AdminStart), AuthError> {
        if let Some(password) = admin_password {
            validate_password(password)?;
        }
        let AuthTrees {
            users: users_tree,
            roles: roles_tree,
            meta,
        } = open_trees(db)?;
        let secret = open_meta(&meta)?;
        let store = AuthStore::load(users_tree, roles_tree, &secret, None)?;
        let (start, change) = store.plan_admin(admin_password)?;
        if let Some(change) = change {
            store.commit(&change)?;
        }
        db.flush()?;
        Ok((store, start))
    }

    /// Opens a cluster node's copy of the cluster's users and roles in `db` (the copy of the
    /// stream's database), signing tokens with the cluster's `secret`; `versions` records the
    /// writes it holds. The admin is the caller's: see [`AuthStore::plan_admin`].
    pub(crate) fn open_copy(
        db: &sled::Db,
        secret: &[u8],
        versions: Versions,
    ) -> Result<AuthStore, AuthError> {
        if secret.len() != TOKEN_SECRET_BYTES {
            return Err(AuthError::Corrupt(format!(
                "the cluster's token secret is {} bytes, not {TOKEN_SECRET_BYTES}",
                secret.len()
            )));
        }
        let AuthTrees {
            users: users_tree,
            roles: roles_tree,
            ..
        } = open_trees(db)?;
        AuthStore::load(users_tree, roles_tree, secret, Some(versions))
    }

    /// The store with the users and roles the trees hold, and the `superuser` role.
    fn load(
        users_tree: sled::Tree,
        roles_tree: sled::Tree,
        secret: &[u8],
        versions: Option<Versions>,
    ) -> Result<AuthStore, AuthError> {
        let mut roles = BTreeMap::new();
        for entry in roles_tree.iter() {
            let (key, value) = entry?;
            let role: Role = decode(ROLES_TREE, &key, &value)?;
            roles.insert(role.name.clone(), role);
        }
        // Every node has it alike and it cannot change, so it is no write of the cluster's.
        let superuser = superuser_role();
        if roles.get(SUPERUSER_ROLE) != Some(&superuser) {
            roles_tree.insert(SUPERUSER_ROLE, encode(&superuser)?)?;
            roles.insert(SUPERUSER_ROLE.to_owned(), superuser);
        }
        let mut users = HashMap::new();
        for entry in users_tree.iter() {
            let (key, value) = entry?;
            let user: StoredUser = decode(USERS_TREE, &key, &value)?;
            users.insert(user.name.clone(), user);
        }
        Ok(AuthStore {
            versions,
            users_tree,
            roles_tree,
            users: RwLock::new(users),
            roles: RwLock::new(roles),
            signer: TokenSigner::new(secret),
            cache: BasicCache::new()?,
            tokens: TokenCache::default(),
            decoy_hash: OnceLock::new(),
            default_password_in_use: AtomicBool::new(false),
        })
    }

    /// What `admin_password` asks of `rocketskates` (see [`AdminPassword`]), and the change that
    /// does it when one is needed: the caller stores it, or a cluster node publishes it. Hashes
    /// or verifies a password: run it at start.
    pub(crate) fn plan_admin(
        &self,
        admin_password: Option<&str>,
    ) -> Result<(AdminStart, Option<AccountWrite>), AuthError> {
        if let Some(password) = admin_password {
            validate_password(password)?;
        }
        let (first_start, admin) = {
            let users = read(&self.users);
            (users.is_empty(), users.get(DEFAULT_ADMIN_USER).cloned())
        };
        let (action, default_in_use, change) = match (admin, admin_password) {
            (None, None) if !first_start => (AdminPassword::Absent, false, None),
            (None, password) => {
                let password = password.unwrap_or(DEFAULT_ADMIN_PASSWORD);
                let default = password == DEFAULT_ADMIN_PASSWORD;
                let admin = StoredUser {
                    name: DEFAULT_ADMIN_USER.to_owned(),
                    roles: vec![SUPERUSER_ROLE.to_owned()],
                    password_hash: Some(hash_password(password)?),
                    secret: new_secret()?,
                };
                let change = AccountWrite::SetUser {
                    user: admin,
                    default_password: Some(default),
                };
                (AdminPassword::Created, default, Some(change))
            }
            (Some(mut admin), Some(password)) => {
                let matches = admin
                    .password_hash
                    .as_deref()
                    .is_some_and(|hash| verify_password(hash, password).unwrap_or(false));
                let default = password == DEFAULT_ADMIN_PASSWORD;
                if matches {
                    (AdminPassword::Unchanged, default, None)
                } else {
                    // A new Secret too, so tokens minted under the old password stop working.
                    admin.password_hash = Some(hash_password(password)?);
                    admin.secret = new_secret()?;
                    let change = AccountWrite::SetUser {
                        user: admin,
                        default_password: Some(default),
                    };
                    (AdminPassword::Set, default, Some(change))
                }
            }
            // One argon2 run at startup, so the warning stays true across restarts.
            (Some(admin), None) => {
                let default = admin.password_hash.as_deref().is_some_and(|hash| {
                    verify_password(hash, DEFAULT_ADMIN_PASSWORD).unwrap_or_else(|e| {
                        // A damaged admin hash must not keep the server from starting.
                        tracing::warn!(
                            "cannot check whether {DEFAULT_ADMIN_USER} has the default password: {e}"
                        );
                        false
                    })
                });
                (AdminPassword::NotConfigured, default, None)
            }
        };
        self.default_password_in_use
            .store(default_in_use, Ordering::Relaxed);
        let start = AdminStart {
            password: action,
            default_password: default_in_use,
        };
        Ok((start, change))
    }

    /// Whether changes are planned only (a cluster node's copy), not stored.
    fn planning(&self) -> bool {
        self.versions.is_some()
    }

    /// A cluster node's record of the writes its copy holds.
    pub(crate) fn versions(&self) -> Option<&Versions> {
        self.versions.as_ref()
    }

    /// Stores `change` (a single node), or leaves it to the cluster's stream (a cluster node);
    /// answers `answer` with it.
    fn changed<T>(&self, answer: T, change: AccountWrite) -> Result<(T, AccountWrite), AuthError> {
        if !self.planning() {
            self.commit(&change)?;
        }
        Ok((answer, change))
    }

    /// Stores a change in the trees and in memory; the next request sees it.
    fn commit(&self, change: &AccountWrite) -> Result<(), AuthError> {
        match change {
            AccountWrite::SetUser {
                user,
                default_password,
            } => {
                let mut users = write(&self.users);
                self.persist_user(user)?;
                if user.name == DEFAULT_ADMIN_USER
                    && let Some(default) = default_password
                {
                    self.default_password_in_use
                        .store(*default, Ordering::Relaxed);
                }
                // A change of roles applies to the next request: cached logins are forgotten.
                if users.insert(user.name.clone(), user.clone()).is_some() {
                    self.cache.clear();
                    self.tokens.clear();
                }
            }
            AccountWrite::DeleteUser(name) => {
                let mut users = write(&self.users);
                self.users_tree.remove(name.as_bytes())?;
                self.users_tree.flush()?;
                if name == DEFAULT_ADMIN_USER {
                    self.default_password_in_use.store(false, Ordering::Relaxed);
                }
                users.remove(name);
                self.tokens.clear();
            }
            AccountWrite::SetRole(role) => {
                let mut roles = write(&self.roles);
                self.roles_tree
                    .insert(role.name.as_bytes(), encode(role)?)?;
                self.roles_tree.flush()?;
                roles.insert(role.name.clone(), role.clone());
                self.cache.clear();
                self.tokens.clear();
            }
            AccountWrite::DeleteRole(name) => {
                let mut roles = write(&self.roles);
                self.roles_tree.remove(name.as_bytes())?;
                self.roles_tree.flush()?;
                roles.remove(name);
                self.cache.clear();
                self.tokens.clear();
            }
        }
        Ok(())
    }

    /// Applies an account write read from the cluster's stream at `seq`, planned on the user's
    /// or role's write `base`, with its private part `private`: stored if `base` is still the
    /// newest write of that user or role, else refused (false), on every node alike. A write
    /// read again changes nothing.
    pub(crate) fn apply(
        &self,
        ty: &str,
        key: &str,
        private: Option<&str>,
        seq: u64,
        base: Option<Base>,
    ) -> Result<bool, AuthError> {
        let Some(versions) = &self.versions else {
            return Ok(false);
        };
        let change = private
            .and_then(AccountWrite::from_header)
            .filter(|change| change.ty() == ty && change.key() == key);
        match versions.admit(ty, key, seq, base, change.is_some())? {
            Verdict::Seen(applied) => return Ok(applied),
            Verdict::Refuse => return Ok(false),
            Verdict::Apply => {}
        }
        if let Some(change) = &change {
            self.commit(change)?;
        }
        versions.applied(ty, key, seq)?;
        Ok(true)
    }

    /// Whether `rocketskates` currently has DRP's default password (tracked across changes).
    pub(crate) fn default_password_in_use(&self) -> bool {
        self.default_password_in_use.load(Ordering::Relaxed)
    }

    /// Authentication that never hashes a password, safe on a core thread: tokens (one HMAC)
    /// and Basic credentials verified in the last five minutes with the user's current Secret.
    pub(crate) fn authenticate_fast(&self, creds: &Credentials) -> FastAuth {
        match creds {
            Credentials::Bearer(token) => FastAuth::Done(self.verify_token(token)),
            Credentials::Basic { user, password } => match self.cached_login(user, password) {
                Some(identity) => FastAuth::Done(Ok(identity)),
                // Unknown users go the slow way too, so timing does not tell which names exist.
                None => FastAuth::NeedsHash,
            },
        }
    }

    /// The check in progress of these Basic credentials to wait for, or this request's own;
    /// `None` for a token, which needs no hash.
    pub(crate) fn join_check(&self, creds: &Credentials) -> Option<Check<'_>> {
        match creds {
            Credentials::Bearer(_) => None,
            Credentials::Basic { user, password } => Some(self.cache.join(user, password)),
        }
    }

    /// Full authentication, verifying passwords with argon2id (tens of milliseconds): run it on
    /// a blocking thread. A verified password is cached for the fast path.
    pub(crate) fn authenticate_slow(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        let (user, password) = match creds {
            Credentials::Bearer(token) => return self.verify_token(token),
            Credentials::Basic { user, password } => (user, password),
        };
        if let Some(identity) = self.cached_login(user, password) {
            return Ok(identity);
        }
        let found = read(&self.users).get(user.as_str()).cloned();
        let Some(stored) = found else {
            let _ = verify_password(self.decoy_hash()?, password);
            return Err(AuthError::UnknownUser);
        };
        let Some(hash) = &stored.password_hash else {
            let _ = verify_password(self.decoy_hash()?, password);
            return Err(AuthError::BadPassword);
        };
        if !verify_password(hash, password)? {
            return Err(AuthError::BadPassword);
        }
        let identity = self.user_identity(&stored.name, stored.roles.clone());
        self.cache
            .insert(user, password, &stored.secret, identity.clone());
        Ok(identity)
    }

    /// A token for `user` carrying the user's roles, valid for `ttl` (1 s to 3 years) or until
    /// the user's password changes or the user is deleted.
    pub(crate) fn mint_token(&self, user: &str, ttl: Duration) -> Result<Token, AuthError> {
        let ttl_secs = validate_ttl(ttl)?;
        let mut payload = {
            let users = read(&self.users);
            let stored = users.get(user).ok_or_else(|| AuthError::NotFound {
                kind: USERS_TREE,
                name: user.to_owned(),
            })?;
            let mut payload = Payload::new(format!("user:{user}"), ttl_secs);
            payload.roles = stored.roles.clone();
            payload.fingerprint = Some(fingerprint(&stored.secret));
            payload
        };
        payload.user = Some(user.to_owned());
        Ok(Token {
            token: self.signer.seal(&payload)?,
            info: payload.info(ttl_secs),
        })
    }

    /// A signed, expiring token for a principal that is not a user (`runner:<uuid>`), granting
    /// exactly `claims`.
    pub(crate) fn mint_principal_token(
        &self,
        principal: &str,
        claims: Vec<Claim>,
        ttl: Duration,
    ) -> Result<Token, AuthError> {
        let ttl_secs = validate_ttl(ttl)?;
        if principal.is_empty()
            || principal.len() > 2 * MAX_NAME_BYTES
            || principal.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid(format!(
                "principal {principal:?} must be non-empty, short and free of control characters"
            )));
        }
        if principal.starts_with("user:") {
            return Err(AuthError::Invalid(
                "user principals get tokens from their user, which carry its roles".into(),
            ));
        }
        if let Some(problem) = claims.iter().find_map(Claim::problem) {
            return Err(AuthError::Invalid(problem));
        }
        let mut payload = Payload::new(principal.to_owned(), ttl_secs);
        payload.claims = Claims::new(claims).claims().to_vec();
        Ok(Token {
            token: self.signer.seal(&payload)?,
            info: payload.info(ttl_secs),
        })
    }

    /// Hashes a new password with argon2id after checking it: tens of milliseconds, so run it on
    /// a blocking thread, then store it with [`AuthStore::create_user_hashed`] or
    /// [`AuthStore::set_password_hashed`].
    pub(crate) fn hash_new_password(password: &str) -> Result<HashedPassword, AuthError> {
        validate_password(password)?;
        Ok(HashedPassword {
            phc: hash_password(password)?,
            is_default: password == DEFAULT_ADMIN_PASSWORD,
        })
    }

    /// Creates a user. Hashes the password (tens of milliseconds): run it on a blocking thread.
    #[cfg(test)]
    pub(crate) fn create_user(&self, req: NewUser) -> Result<UserView, AuthError> {
        validate_name("user", &req.name)?;
        let password = req
            .password
            .as_deref()
            .map(AuthStore::hash_new_password)
            .transpose()?;
        answer(self.create_user_hashed(req.name, req.roles, password))
    }

    /// Creates a user whose password was hashed already (quick: fit for the log thread).
    /// Answers the user and the change (stored already on a single node).
    pub(crate) fn create_user_hashed(
        &self,
        name: String,
        requested_roles: Vec<String>,
        password: Option<HashedPassword>,
    ) -> Result<(UserView, AccountWrite), AuthError> {
        validate_name("user", &name)?;
        let mut roles = Vec::with_capacity(requested_roles.len());
        for role in requested_roles {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        self.check_roles_exist(&roles)?;
        let default = password.as_ref().is_some_and(|p| p.is_default);
        let stored = StoredUser {
            name,
            roles,
            password_hash: password.map(|p| p.phc),
            secret: new_secret()?,
        };
        if read(&self.users).contains_key(&stored.name) {
            return Err(AuthError::Exists {
                kind: USERS_TREE,
                name: stored.name,
            });
        }
        let view = stored.view();
        let admin = stored.name == DEFAULT_ADMIN_USER;
        let change = AccountWrite::SetUser {
            user: stored,
            default_password: admin.then_some(default),
        };
        self.changed(view, change)
    }

    /// Sets a user's password and replaces its Secret, so its tokens and cached logins stop
    /// working at once. Hashes the password: run it on a blocking thread.
    #[cfg(test)]
    pub(crate) fn set_password(&self, name: &str, password: &str) -> Result<UserView, AuthError> {
        answer(self.set_password_hashed(name, AuthStore::hash_new_password(password)?))
    }

    /// [`AuthStore::set_password`] with a password hashed already (quick: fit for the log
    /// thread).
    pub(crate) fn set_password_hashed(
        &self,
        name: &str,
        password: HashedPassword,
    ) -> Result<(UserView, AccountWrite), AuthError> {
        let secret = new_secret()?;
        let mut stored = self.stored_user(name)?;
        stored.password_hash = Some(password.phc);
        stored.secret = secret;
        let view = stored.view();
        let change = AccountWrite::SetUser {
            user: stored,
            default_password: (name == DEFAULT_ADMIN_USER).then_some(password.is_default),
        };
        self.changed(view, change)
    }

    /// Deletes a user; its tokens and cached logins stop working at once.
    pub(crate) fn delete_user(&self, name: &str) -> Result<(UserView, AccountWrite), AuthError> {
        let view = self.stored_user(name)?.view();
        self.changed(view, AccountWrite::DeleteUser(name.to_owned()))
    }

    fn stored_user(&self, name: &str) -> Result<StoredUser, AuthError> {
        read(&self.users)
            .get(name)
            .cloned()
            .ok_or_else(|| AuthError::NotFound {
                kind: USERS_TREE,
                name: name.to_owned(),
            })
    }

    /// One user.
    pub(crate) fn get_user(&self, name: &str) -> Result<UserView, AuthError> {
        read(&self.users)
            .get(name)
            .map(StoredUser::view)
            .ok_or_else(|| AuthError::NotFound {
                kind: USERS_TREE,
                name: name.to_owned(),
            })
    }

    /// All users, by name.
    pub(crate) fn list_users(&self) -> Vec<UserView> {
        let mut views: Vec<UserView> = read(&self.users).values().map(StoredUser::view).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// Creates a role; [`AuthStore::replace_role`] changes an existing one.
    pub(crate) fn create_role(&self, role: Role) -> Result<(Role, AccountWrite), AuthError> {
        validate_name("role", &role.name)?;
        if let Some(problem) = role.claims.iter().find_map(Claim::problem) {
            return Err(AuthError::Invalid(format!(
                "role {:?}: {problem}",
                role.name
            )));
        }
        if read(&self.roles).contains_key(&role.name) {
            return Err(AuthError::Exists {
                kind: ROLES_TREE,
                name: role.name,
            });
        }
        self.changed(role.clone(), AccountWrite::SetRole(role))
    }

    /// One role.
    pub(crate) fn get_role(&self, name: &str) -> Result<Role, AuthError> {
        read(&self.roles)
            .get(name)
            .cloned()
            .ok_or_else(|| AuthError::NotFound {
                kind: ROLES_TREE,
                name: name.to_owned(),
            })
    }

    /// All roles, by name.
    pub(crate) fn list_roles(&self) -> Vec<Role> {
        read(&self.roles).values().cloned().collect()
    }

    /// Replaces a user's roles (each must exist); answers the user before and after. Applies to
    /// the next request: cached logins are forgotten, and a token never grants more than its
    /// user holds now (open websockets keep the claims they connected with).
    pub(crate) fn set_roles(
        &self,
        name: &str,
        roles: Vec<String>,
    ) -> Result<((UserView, UserView), AccountWrite), AuthError> {
        let mut unique = Vec::with_capacity(roles.len());
        for role in roles {
            if !unique.contains(&role) {
                unique.push(role);
            }
        }
        self.check_roles_exist(&unique)?;
        let mut changed = self.stored_user(name)?;
        let before = changed.view();
        changed.roles = unique;
        let after = changed.view();
        let change = AccountWrite::SetUser {
            user: changed,
            default_password: None,
        };
        self.changed((before, after), change)
    }

    /// Redefines an existing role's claims; answers the role before and after. Applies to the
    /// next request of every holder (open websockets keep the claims they connected with).
    /// `superuser` cannot be changed.
    pub(crate) fn replace_role(
        &self,
        role: Role,
    ) -> Result<((Role, Role), AccountWrite), AuthError> {
        if role.name == SUPERUSER_ROLE {
            return Err(AuthError::Invalid(
                "the superuser role cannot be changed".into(),
            ));
        }
        if let Some(problem) = role.claims.iter().find_map(Claim::problem) {
            return Err(AuthError::Invalid(format!(
                "role {:?}: {problem}",
                role.name
            )));
        }
        let before = self.get_role(&role.name)?;
        self.changed((before, role.clone()), AccountWrite::SetRole(role))
    }

    /// Deletes a role that no user holds; `superuser` cannot be deleted.
    pub(crate) fn delete_role(&self, name: &str) -> Result<(Role, AccountWrite), AuthError> {
        if name == SUPERUSER_ROLE {
            return Err(AuthError::Invalid(
                "the superuser role cannot be deleted".into(),
            ));
        }
        let holders: Vec<String> = read(&self.users)
            .values()
            .filter(|user| user.roles.iter().any(|role| role == name))
            .map(|user| user.name.clone())
            .collect();
        if !holders.is_empty() {
            return Err(AuthError::Conflict(format!(
                "role {name:?} is held by {}; take it from them first",
                holders.join(", ")
            )));
        }
        let removed = self.get_role(name)?;
        self.changed(removed, AccountWrite::DeleteRole(name.to_owned()))
    }

    fn persist_user(&self, stored: &StoredUser) -> Result<(), AuthError> {
        self.users_tree
            .insert(stored.name.as_bytes(), encode(stored)?)?;
        self.users_tree.flush()?;
        Ok(())
    }

    fn check_roles_exist(&self, names: &[String]) -> Result<(), AuthError> {
        let roles = read(&self.roles);
        match names.iter().find(|name| !roles.contains_key(name.as_str())) {
            Some(unknown) => Err(AuthError::Invalid(format!(
                "role {unknown:?} does not exist; create it first"
            ))),
            None => Ok(()),
        }
    }

    /// Makes the hash unknown users are verified against, with the same parameters as real
    /// ones; run it once at start, as the hash pool's first job, so no login pays for it.
    pub(crate) fn prepare_decoy(&self) {
        if let Err(error) = self.decoy_hash() {
            tracing::warn!("cannot prepare the password hash for unknown users: {error}");
        }
    }

    fn decoy_hash(&self) -> Result<&str, AuthError> {
        if let Some(hash) = self.decoy_hash.get() {
            return Ok(hash);
        }
        let hash = hash_password(&URL_SAFE_NO_PAD.encode(random_bytes::<16>()?))?;
        Ok(self.decoy_hash.get_or_init(|| hash))
    }

    fn cached_login(&self, user: &str, password: &str) -> Option<Identity> {
        let users = read(&self.users);
        let secret = &users.get(user)?.secret;
        self.cache.get(user, password, secret)
    }

    /// The identity of a user holding `roles`; roles that no longer exist grant nothing.
    fn user_identity(&self, name: &str, roles: Vec<String>) -> Identity {
        let claims = {
            let known = read(&self.roles);
            Claims::new(
                roles
                    .iter()
                    .filter_map(|role| known.get(role))
                    .flat_map(|role| role.claims.iter().cloned()),
            )
        };
        Identity {
            principal: format!("user:{name}"),
            user: Some(name.to_owned()),
            claims: Arc::new(claims),
            expires: None,
        }
    }

    fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let now = unix_now();
        if let Some(identity) = self.tokens.get(token, now) {
            return Ok(identity);
        }
        let generation = self.tokens.generation();
        let identity = self.verify_token_at(token, now)?;
        if let Some(expires) = identity.expires {
            self.tokens
                .insert(token, identity.clone(), expires, generation);
        }
        Ok(identity)
    }

    /// Checks a token's signature, expiry and user in full.
    fn verify_token_at(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let payload = self.signer.open(token, now)?;
        let Some(user) = payload.user else {
            return Ok(Identity {
                principal: payload.principal,
                user: None,
                claims: Arc::new(Claims::new(payload.claims)),
                expires: Some(payload.expires),
            });
        };
        let roles = {
            let users = read(&self.users);
            let stored = users.get(&user).ok_or(AuthError::BadToken)?;
            if payload.fingerprint.as_deref() != Some(fingerprint(&stored.secret).as_str()) {
                return Err(AuthError::BadToken);
            }
            // A token never grants more than its user holds now.
            payload
                .roles
                .into_iter()
                .filter(|role| stored.roles.contains(role))
                .collect()
        };
        Ok(Identity {
            expires: Some(payload.expires),
            ..self.user_identity(&user, roles)
        })
    }

    #[cfg(test)]
    fn seal(&self, payload: &Payload) -> Result<String, AuthError> {
        self.signer.seal(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> sled::Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .unwrap_or_else(|e| panic!("temporary sled db: {e}"))
    }

    fn open(db: &sled::Db, admin_password: Option<&str>) -> (AuthStore, bool) {
        let (store, start) = open_reporting(db, admin_password);
        (store, start.default_password)
    }

    fn open_reporting(db: &sled::Db, admin_password: Option<&str>) -> (AuthStore, AdminStart) {
        AuthStore::open(db, admin_password).unwrap_or_else(|e| panic!("open: {e}"))
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    fn bearer(token: &Token) -> Credentials {
        Credentials::Bearer(token.token.clone())
    }

    fn ok<T>(result: Result<T, AuthError>) -> T {
        result.unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    fn store_with_bob() -> AuthStore {
        let (store, _) = open(&temp_db(), Some("admin-pw"));
        ok(answer(store.create_role(Role {
            name: "viewer".into(),
            claims: vec![Claim::new("machines", "get", "*")],
        })));
        ok(store.create_user(NewUser {
            name: "bob".into(),
            roles: vec!["viewer".into()],
            password: Some("bobs-pw".into()),
        }));
        store
    }

    #[test]
    fn first_start_creates_rocketskates_with_the_drp_default_password_and_says_so() {
        let (store, default_in_use) = open(&temp_db(), None);
        assert!(default_in_use);
        assert!(store.default_password_in_use());
        let identity = ok(store.authenticate_slow(&basic("rocketskates", "r0cketsk8ts")));
        assert_eq!(identity.principal, "user:rocketskates");
        assert_eq!(
            ok(store.get_user("rocketskates")).roles,
            vec!["superuser".to_owned()]
        );
        assert!(identity.claims.is_superuser());
    }

    #[test]
    fn first_start_uses_the_configured_admin_password() {
        let (store, default_in_use) = open(&temp_db(), Some("s3cret"));
        assert!(!default_in_use);
        assert!(
            store
                .authenticate_slow(&basic("rocketskates", "s3cret"))
                .is_ok()
        );
        assert!(matches!(
            store.authenticate_slow(&basic("rocketskates", "r0cketsk8ts")),
            Err(AuthError::BadPassword)
        ));
    }

    #[test]
    fn an_empty_admin_password_is_refused() {
        assert!(matches!(
            AuthStore::open(&temp_db(), Some("")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn reopening_keeps_users_roles_tokens_and_the_default_password_warning() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let token = {
            let db = crate::testing::open_sled(dir.path());
            let (store, _) = open(&db, None);
            ok(answer(store.create_role(Role {
                name: "viewer".into(),
                claims: vec![Claim::new("machines", "get", "*")],
            })));
            ok(store.create_user(NewUser {
                name: "bob".into(),
                roles: vec!["viewer".into()],
                password: Some("bobs-pw".into()),
            }));
            ok(store.mint_token("bob", Duration::from_secs(60)))
        };
        let db = crate::testing::open_sled(dir.path());
        let (store, start) = open_reporting(&db, None);
        assert_eq!(start.password, AdminPassword::NotConfigured);
        assert!(start.default_password);
        assert_eq!(store.list_users().len(), 2);
        assert_eq!(store.list_roles().len(), 2);
        assert!(store.authenticate_slow(&basic("bob", "bobs-pw")).is_ok());
        let identity = ok(store.authenticate_slow(&bearer(&token)));
        assert!(identity.claims.may_see("machines", "update", "m1"));
    }

    #[test]
    fn a_configured_admin_password_is_applied_on_every_start_and_says_what_it_did() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let reopen = |password: Option<&str>| {
            let db = crate::testing::open_sled(dir.path());
            let (store, start) = open_reporting(&db, password);
            let admin_token = ok(store.mint_token(DEFAULT_ADMIN_USER, Duration::from_secs(60)));
            (store, start, admin_token)
        };
        let (_, start, old_token) = reopen(None);
        assert_eq!(
            start,
            AdminStart {
                password: AdminPassword::Created,
                default_password: true
            }
        );
        let (store, start, _) = reopen(Some("change-me"));
        assert_eq!(
            start,
            AdminStart {
                password: AdminPassword::Set,
                default_password: false
            }
        );
        ok(store.authenticate_slow(&basic(DEFAULT_ADMIN_USER, "change-me")));
        assert!(matches!(
            store.authenticate_slow(&basic(DEFAULT_ADMIN_USER, DEFAULT_ADMIN_PASSWORD)),
            Err(AuthError::BadPassword)
        ));
        assert!(
            store.authenticate_slow(&bearer(&old_token)).is_err(),
            "a token minted under the old password must stop working"
        );
        drop(store);
        let (store, start, _) = reopen(Some("change-me"));
        assert_eq!(start.password, AdminPassword::Unchanged);
        assert!(!start.default_password);
        ok(store.create_user(NewUser {
            name: "bob".into(),
            roles: vec![SUPERUSER_ROLE.into()],
            password: Some("bobs-pw".into()),
        }));
        ok(answer(store.delete_user(DEFAULT_ADMIN_USER)));
        drop(store);
        let db = crate::testing::open_sled(dir.path());
        let (store, start) = open_reporting(&db, None);
        assert_eq!(start.password, AdminPassword::Absent);
        assert!(store.get_user(DEFAULT_ADMIN_USER).is_err());
        drop((store, db));
        let (store, start, _) = reopen(Some("back-again"));
        assert_eq!(start.password, AdminPassword::Created);
        let identity = ok(store.authenticate_slow(&basic(DEFAULT_ADMIN_USER, "back-again")));
        assert!(identity.claims.is_superuser());
    }

    #[test]
    fn a_wrong_password_or_unknown_user_is_refused_with_its_reason() {
        let store = store_with_bob();
        assert!(matches!(
            store.authenticate_slow(&basic("bob", "nope")),
            Err(AuthError::BadPassword)
        ));
        assert!(matches!(
            store.authenticate_slow(&basic("alice", "bobs-pw")),
            Err(AuthError::UnknownUser)
        ));
        assert!(matches!(
            store.authenticate_fast(&basic("alice", "x")),
            FastAuth::NeedsHash
        ));
    }

    #[test]
    fn a_user_without_a_password_cannot_log_in_with_one() {
        let store = store_with_bob();
        ok(store.create_user(NewUser {
            name: "robot".into(),
            roles: vec![],
            password: None,
        }));
        assert!(matches!(
            store.authenticate_slow(&basic("robot", "")),
            Err(AuthError::BadPassword)
        ));
        let token = ok(store.mint_token("robot", Duration::from_secs(60)));
        assert!(store.authenticate_slow(&bearer(&token)).is_ok());
    }

    #[test]
    fn a_verified_password_is_then_accepted_on_the_fast_path() {
        let store = store_with_bob();
        assert!(matches!(
            store.authenticate_fast(&basic("bob", "bobs-pw")),
            FastAuth::NeedsHash
        ));
        ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        let FastAuth::Done(Ok(identity)) = store.authenticate_fast(&basic("bob", "bobs-pw")) else {
            panic!("expected a cache hit");
        };
        assert_eq!(identity.principal, "user:bob");
        assert!(matches!(
            store.authenticate_fast(&basic("bob", "wrong")),
            FastAuth::NeedsHash
        ));
    }

    #[test]
    fn the_password_cache_never_outlives_a_password_change_or_deletion() {
        let store = store_with_bob();
        ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        ok(store.set_password("bob", "new-pw"));
        assert!(matches!(
            store.authenticate_fast(&basic("bob", "bobs-pw")),
            FastAuth::NeedsHash
        ));
        assert!(matches!(
            store.authenticate_slow(&basic("bob", "bobs-pw")),
            Err(AuthError::BadPassword)
        ));
        ok(store.authenticate_slow(&basic("bob", "new-pw")));
        ok(answer(store.delete_user("bob")));
        assert!(matches!(
            store.authenticate_fast(&basic("bob", "new-pw")),
            FastAuth::NeedsHash
        ));
        assert!(matches!(
            store.authenticate_slow(&basic("bob", "new-pw")),
            Err(AuthError::UnknownUser)
        ));
    }

    #[test]
    fn a_minted_token_authenticates_on_the_fast_path_with_the_users_roles() {
        let store = store_with_bob();
        let token = ok(store.mint_token("bob", Duration::from_secs(3600)));
        assert!(!token.token.contains(':'));
        assert_eq!(token.info.principal, "user:bob");
        assert_eq!(token.info.roles, vec!["viewer".to_owned()]);
        let FastAuth::Done(Ok(identity)) = store.authenticate_fast(&bearer(&token)) else {
            panic!("expected the token to authenticate");
        };
        assert_eq!(identity.user.as_deref(), Some("bob"));
        assert!(identity.claims.allows("machines", "get", "m1"));
        assert!(!identity.claims.allows("machines", "delete", "m1"));
    }

    #[test]
    fn token_answers_serialize_in_drp_shape() {
        let store = store_with_bob();
        let token = ok(store.mint_token("bob", Duration::from_secs(60)));
        let json: serde_json::Value =
            ok(serde_json::to_value(&token).map_err(|e| AuthError::Invalid(e.to_string())));
        assert!(json["Token"].is_string());
        assert_eq!(json["Info"]["Principal"], "user:bob");
        assert!(
            json["Info"]["Expires"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let store = store_with_bob();
        let token = ok(store.mint_token("bob", Duration::from_secs(60)));
        let mut payload = ok(store.signer.open(&token.token, unix_now()));
        payload.expires = unix_now() - 1;
        let expired = ok(store.seal(&payload));
        assert!(matches!(
            store.authenticate_slow(&Credentials::Bearer(expired)),
            Err(AuthError::ExpiredToken)
        ));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_a_bad_token() {
        let store = store_with_bob();
        let token = ok(store.mint_token("bob", Duration::from_secs(60))).token;
        let (body, tag) = token.split_once('.').unwrap_or_default();
        let mut payload = ok(store.signer.open(&token, unix_now()));
        payload.roles = vec!["superuser".into()];
        let forged_body = ok(store.seal(&payload));
        let forged = format!(
            "{}.{tag}",
            forged_body.split_once('.').unwrap_or_default().0
        );
        let other = ok(store_with_bob().mint_token("bob", Duration::from_secs(60))).token;
        for bad in [
            forged,
            format!("{body}x.{tag}"),
            format!("{body}.{tag}x"),
            other,
        ] {
            assert!(
                matches!(
                    store.authenticate_slow(&Credentials::Bearer(bad.clone())),
                    Err(AuthError::BadToken)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_minted_before_a_password_change_stops_working() {
        let store = store_with_bob();
        let old = ok(store.mint_token("bob", Duration::from_secs(60)));
        ok(store.set_password("bob", "new-pw"));
        assert!(matches!(
            store.authenticate_slow(&bearer(&old)),
            Err(AuthError::BadToken)
        ));
        let new = ok(store.mint_token("bob", Duration::from_secs(60)));
        assert!(store.authenticate_slow(&bearer(&new)).is_ok());
    }

    #[test]
    fn a_deleted_users_token_stops_working_at_once_even_if_recreated() {
        let store = store_with_bob();
        let token = ok(store.mint_token("bob", Duration::from_secs(60)));
        ok(answer(store.delete_user("bob")));
        assert!(matches!(
            store.authenticate_slow(&bearer(&token)),
            Err(AuthError::BadToken)
        ));
        ok(store.create_user(NewUser {
            name: "bob".into(),
            roles: vec!["superuser".into()],
            password: Some("bobs-pw".into()),
        }));
        assert!(matches!(
            store.authenticate_slow(&bearer(&token)),
            Err(AuthError::BadToken)
        ));
    }

    #[test]
    fn a_machine_token_carries_its_principal_and_explicit_claims() {
        let store = store_with_bob();
        let principal = "runner:6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a";
        let token = ok(store.mint_principal_token(
            principal,
            vec![Claim::new(
                "machines",
                "*",
                "6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a",
            )],
            Duration::from_secs(60),
        ));
        let identity = ok(store.authenticate_slow(&bearer(&token)));
        assert_eq!(identity.principal, principal);
        assert_eq!(identity.user, None);
        assert!(identity.claims.may_see(
            "machines",
            "update",
            "6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a"
        ));
        assert!(!identity.claims.may_see("machines", "update", "other"));
        assert!(matches!(
            store.mint_principal_token(
                "user:bob",
                vec![Claim::superuser()],
                Duration::from_secs(60)
            ),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn token_lifetimes_outside_the_limits_are_invalid() {
        let store = store_with_bob();
        for ttl in [Duration::ZERO, Duration::from_secs(4 * 366 * 86400)] {
            assert!(matches!(
                store.mint_token("bob", ttl),
                Err(AuthError::Invalid(_))
            ));
        }
        assert!(matches!(
            store.mint_token("alice", Duration::from_secs(60)),
            Err(AuthError::NotFound { .. })
        ));
    }

    #[test]
    fn bad_user_names_unknown_roles_and_duplicates_are_refused() {
        let store = store_with_bob();
        let long = "x".repeat(256);
        for name in ["", "a/b", "a:b", "a\nb", "tab\t", long.as_str()] {
            let result = store.create_user(NewUser {
                name: name.into(),
                ..NewUser::default()
            });
            assert!(matches!(result, Err(AuthError::Invalid(_))), "{name:?}");
        }
        assert!(
            store
                .create_user(NewUser {
                    name: "x".repeat(255),
                    ..NewUser::default()
                })
                .is_ok()
        );
        let unknown_role = store.create_user(NewUser {
            name: "carol".into(),
            roles: vec!["nope".into()],
            password: None,
        });
        assert!(matches!(unknown_role, Err(AuthError::Invalid(_))));
        let duplicate = store.create_user(NewUser {
            name: "bob".into(),
            ..NewUser::default()
        });
        assert!(matches!(duplicate, Err(AuthError::Exists { .. })));
        assert!(matches!(
            store.get_user("carol"),
            Err(AuthError::NotFound { .. })
        ));
        assert!(matches!(
            answer(store.delete_user("carol")),
            Err(AuthError::NotFound { .. })
        ));
        assert!(matches!(
            store.set_password("bob", ""),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn roles_are_validated_and_superuser_cannot_be_redefined() {
        let store = store_with_bob();
        assert!(matches!(
            answer(store.create_role(Role {
                name: SUPERUSER_ROLE.into(),
                claims: vec![]
            })),
            Err(AuthError::Exists { .. })
        ));
        assert!(matches!(
            answer(store.create_role(Role {
                name: "r".into(),
                claims: vec![Claim::new("", "*", "*")]
            })),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            answer(store.create_role(Role {
                name: "a:b".into(),
                claims: vec![]
            })),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            ok(store.get_role(SUPERUSER_ROLE)).claims,
            vec![Claim::superuser()]
        );
        assert!(matches!(
            store.get_role("nope"),
            Err(AuthError::NotFound { .. })
        ));
    }

    #[test]
    fn no_serialized_user_carries_its_password_hash_or_secret() {
        let store = store_with_bob();
        let created = ok(store.create_user(NewUser {
            name: "carol".into(),
            roles: vec![],
            password: Some("carols-pw".into()),
        }));
        let changed = ok(store.set_password("carol", "another-pw"));
        let mut shown = vec![created, changed, ok(store.get_user("bob"))];
        shown.extend(store.list_users());
        shown.push(ok(answer(store.delete_user("carol"))));
        let secrets: Vec<String> = read(&store.users)
            .values()
            .flat_map(|user| {
                [
                    user.secret.clone(),
                    user.password_hash.clone().unwrap_or_default(),
                ]
            })
            .collect();
        for view in shown {
            let json = serde_json::to_string(&view).unwrap_or_default();
            assert!(
                !json.contains("PasswordHash")
                    && !json.contains("Secret")
                    && !json.contains("argon2"),
                "{json}"
            );
            assert!(
                secrets.iter().all(|secret| !json.contains(secret.as_str())),
                "{json}"
            );
        }
    }

    #[test]
    fn the_default_password_warning_follows_password_changes() {
        let (store, _) = open(&temp_db(), None);
        ok(store.set_password(DEFAULT_ADMIN_USER, "better"));
        assert!(!store.default_password_in_use());
        ok(store.set_password(DEFAULT_ADMIN_USER, DEFAULT_ADMIN_PASSWORD));
        assert!(store.default_password_in_use());
    }

    #[test]
    fn changing_roles_and_claims_applies_to_the_next_login_at_once() {
        let store = store_with_bob();
        ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        ok(answer(store.create_role(Role {
            name: "writer".into(),
            claims: vec![Claim::new("machines", "update", "*")],
        })));
        let (before, after) = ok(answer(
            store.set_roles("bob", vec!["writer".into(), "writer".into()]),
        ));
        assert_eq!(before.roles, vec!["viewer".to_owned()]);
        assert_eq!(after.roles, vec!["writer".to_owned()]);
        assert!(matches!(
            store.authenticate_fast(&basic("bob", "bobs-pw")),
            FastAuth::NeedsHash
        ));
        let identity = ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        assert!(identity.claims.allows("machines", "update", "m1"));

        let (_, changed) = ok(answer(store.replace_role(Role {
            name: "writer".into(),
            claims: vec![Claim::new("profiles", "update", "*")],
        })));
        assert_eq!(changed.claims, vec![Claim::new("profiles", "update", "*")]);
        let identity = ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        assert!(!identity.claims.allows("machines", "update", "m1"));
        assert!(identity.claims.allows("profiles", "update", "global"));
    }

    #[test]
    fn roles_in_use_superuser_and_unknown_roles_are_refused_changes() {
        let store = store_with_bob();
        assert!(matches!(
            answer(store.delete_role("viewer")),
            Err(AuthError::Conflict(_))
        ));
        assert!(matches!(
            answer(store.delete_role(SUPERUSER_ROLE)),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            answer(store.replace_role(superuser_role())),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            answer(store.replace_role(Role {
                name: "nope".into(),
                claims: vec![]
            })),
            Err(AuthError::NotFound { .. })
        ));
        assert!(matches!(
            answer(store.set_roles("bob", vec!["nope".into()])),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            answer(store.set_roles("nobody", vec![])),
            Err(AuthError::NotFound { .. })
        ));
        ok(answer(store.set_roles("bob", vec![])));
        assert_eq!(ok(answer(store.delete_role("viewer"))).name, "viewer");
        assert!(matches!(
            store.get_role("viewer"),
            Err(AuthError::NotFound { .. })
        ));
    }

    #[test]
    fn a_cluster_copy_stores_an_account_write_planned_on_its_newest_and_refuses_a_stale_one() {
        let db = temp_db();
        let versions = ok(Versions::open(&db).map_err(AuthError::from));
        let store = ok(AuthStore::open_copy(
            &db,
            &[7; TOKEN_SECRET_BYTES],
            versions,
        ));
        let password = ok(AuthStore::hash_new_password("bobs-pw"));
        let (_, create) = ok(store.create_user_hashed("bob".into(), vec![], Some(password)));
        assert!(store.get_user("bob").is_err(), "a copy only plans");
        let header = create.to_header();
        assert!(ok(store.apply(
            "users",
            "bob",
            Some(&header),
            5,
            Some(Base::at(0))
        )));
        ok(store.authenticate_slow(&basic("bob", "bobs-pw")));
        // Another node's create, planned on the same base, comes second.
        assert!(!ok(store.apply(
            "users",
            "bob",
            Some(&header),
            6,
            Some(Base::at(0))
        )));
        // Read again after a crash: the same answers.
        assert!(ok(store.apply(
            "users",
            "bob",
            Some(&header),
            5,
            Some(Base::at(0))
        )));
        assert!(!ok(store.apply(
            "users",
            "bob",
            Some(&header),
            6,
            Some(Base::at(0))
        )));
        // A private part that is another user's, or none, is refused.
        assert!(!ok(store.apply(
            "users",
            "carol",
            Some(&header),
            7,
            Some(Base::at(0))
        )));
        assert!(!ok(store.apply("users", "bob", None, 8, Some(Base::at(5)))));
        let (_, delete) = ok(store.delete_user("bob"));
        assert!(ok(store.apply(
            "users",
            "bob",
            Some(&delete.to_header()),
            9,
            Some(Base::at(5))
        )));
        assert!(store.get_user("bob").is_err());
        assert!(matches!(
            store.authenticate_slow(&basic("bob", "bobs-pw")),
            Err(AuthError::UnknownUser)
        ));
    }

    #[test]
    fn the_store_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AuthStore>();
    }
}
