//! Auth: the users, roles and the on/off switch of etcd 2.3's `/v2/auth`, as a pure state
//! machine that travels through the Raft log like every write.
//!
//! Why it exists: etcd 2.1 added access control to the v2 key space. A *user* has a bcrypt
//! password hash and a list of role names; a *role* has key patterns it may read and write.
//! While auth is off (the default) everything is open. Once it is on, every `/v2/keys`
//! request is checked against the roles of the user named in its `Authorization: Basic`
//! header, or against the `guest` role when there is no header, and the `/v2/auth`
//! management API needs a user holding the built-in `root` role (docs/api.md).
//!
//! How data enters and leaves:
//! * The HTTP layer (`api::auth`) parses a request, hashes a new password with bcrypt
//!   *before* proposing (so applying never hashes, reads a clock or draws random salt), and
//!   proposes a [`Command::Auth`](crate::command::Command) carrying an [`AuthCommand`].
//! * Every replica applies it with [`AuthCommand::apply`] on the [`AuthState`] embedded in the
//!   store; the state is part of the store snapshot.
//! * The key-access checks ([`AuthState::user_has_access`], [`AuthState::guest_has_access`])
//!   are pure functions of the state; verifying a password (bcrypt, slow on purpose) happens
//!   at the edge, in `api::auth`, which remembers successful checks in [`cache`].
//!
//! What must stay true:
//! * Applying is deterministic and atomic: an operation either fails and changes nothing, or
//!   succeeds and bumps [`AuthState::version`] by one.
//! * An [`AuthCommand`] carries the version its proposer validated against (`base`). Apply
//!   refuses a command whose base is not the current version ([`ApplyError::Stale`]); the
//!   proposer then re-reads the state and tries again. So the answer a handler computed from
//!   the state it saw (the merged user or role it echoes, or the refusal it renders) is
//!   exactly what the log applied, even when two auth writes race or the proposer is a
//!   follower that had not caught up yet. Apply still runs the full validation itself.
//! * The `root` role is built in (read/write `/*`), is never stored and cannot be changed;
//!   the user `root` always holds it (added on create and on every read).
//!
//! Documented differences from upstream:
//! * etcd keeps users and roles as JSON under an internal `/2/...` prefix of the v2 store, so
//!   its auth writes consume store indexes and make key events. Here they live beside the
//!   tree: auth writes consume no store index and create no key event or watch wake-up.
//! * `/v1` is not covered by auth (etcd 2.x had no auth on its v1 API either).
//! * An empty permission pattern matches nothing (etcd's matcher indexes its last byte and
//!   would panic on it).
//!
//! Shapes (what the wire shows) follow Go's structs field by field, including the
//! difference between an absent list (`null`) and an empty one (`[]`), because etcd's
//! "not updated" checks compare with Go's `reflect.DeepEqual`, where the two differ.

pub mod basic;
pub mod cache;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Code, EtcdError};

/// The built-in admin role and the user that always holds it.
pub const ROOT: &str = "root";
/// The role checked for requests without an `Authorization` header.
pub const GUEST: &str = "guest";

/// Read and write key patterns. `None` is Go's nil slice (`null` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwPermission {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub kv: RwPermission,
}

impl Permissions {
    /// Go's `Permissions.IsEmpty` on a possibly-nil pointer.
    pub fn is_empty(p: Option<&Permissions>) -> bool {
        p.is_none_or(|p| {
            p.kv.read.as_ref().is_none_or(Vec::is_empty)
                && p.kv.write.as_ref().is_none_or(Vec::is_empty)
        })
    }
}

/// A role as etcd stores and shows it. `grant`/`revoke` are request fields, but a role
/// created with them (empty) keeps and shows them, as etcd does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub role: String,
    pub permissions: Permissions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Permissions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Permissions>,
}

impl Role {
    fn everything(name: &str) -> Role {
        let all = Some(vec!["/*".to_string()]);
        Role {
            role: name.to_string(),
            permissions: Permissions {
                kv: RwPermission {
                    read: all.clone(),
                    write: all,
                },
            },
            grant: None,
            revoke: None,
        }
    }

    /// The built-in `root` role.
    pub fn root() -> Role {
        Role::everything(ROOT)
    }

    fn patterns(&self, write: bool) -> &[String] {
        let kv = &self.permissions.kv;
        let list = if write { &kv.write } else { &kv.read };
        list.as_deref().unwrap_or_default()
    }

    /// May this role read (or write) exactly `key`? `root` may do anything.
    pub fn has_key_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT || self.patterns(write).iter().any(|p| pattern_matches(p, key))
    }

    /// May this role act on `key` and everything below it? Only prefix (`*`) patterns
    /// count. `root` may do anything.
    pub fn has_recursive_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT
            || self
                .patterns(write)
                .iter()
                .any(|p| p.strip_suffix('*').is_some_and(|pre| key.starts_with(pre)))
    }
}

/// A pattern ending in `*` matches every key starting with the rest; any other pattern
/// matches only itself. An empty pattern matches nothing.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

/// A user as stored: the bcrypt hash of the password and the role names (`None` = Go's nil,
/// as a user created without roles has).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user: String,
    pub password: String,
    pub roles: Option<Vec<String>>,
}

impl User {
    pub fn role_names(&self) -> &[String] {
        self.roles.as_deref().unwrap_or_default()
    }

    pub fn is_admin(&self) -> bool {
        self.role_names().iter().any(|r| r == ROOT)
    }

    /// The user `root` always holds the role `root`.
    fn attach_root(mut self) -> User {
        if self.user == ROOT && !self.is_admin() {
            self.roles
                .get_or_insert_with(Vec::new)
                .push(ROOT.to_string());
        }
        self
    }
}

/// Everything auth knows, part of the store (and of its snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    users: BTreeMap<String, User>,
    /// Stored roles; never `root`.
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    /// Successful auth writes so far (the compare-and-swap point of [`AuthCommand`]).
    #[serde(default)]
    version: u64,
}

/// One change to the auth state. Passwords are bcrypt hashes already (`None`: no password
/// was given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuthOp {
    Enable,
    Disable,
    /// Create a user that must not exist yet (`PUT` with `roles`, or a new user).
    CreateUser {
        user: String,
        password: Option<String>,
        roles: Option<Vec<String>>,
    },
    /// `PUT` without roles or grant/revoke: create, or change the password of, a user.
    CreateOrUpdateUser {
        user: String,
        password: Option<String>,
        roles: Option<Vec<String>>,
    },
    /// Grant and revoke role names (and maybe change the password) of an existing user.
    UpdateUser {
        user: String,
        password: Option<String>,
        grant: Vec<String>,
        revoke: Vec<String>,
    },
    DeleteUser {
        user: String,
    },
    CreateRole {
        role: Role,
    },
    UpdateRole {
        role: String,
        grant: Option<Permissions>,
        revoke: Option<Permissions>,
    },
    DeleteRole {
        role: String,
    },
}

/// An auth write as it travels through the log: the operation and the state version it
/// was validated against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthCommand {
    pub base: u64,
    pub op: AuthOp,
}

/// What a successful operation answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// The user as written (hash included: the API layer drops it), and whether it is new.
    User {
        user: User,
        created: bool,
    },
    Role(Role),
}

/// A refusal of the auth store: HTTP status and the message (`auth: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: String) -> AuthError {
    AuthError {
        status,
        message: format!("auth: {message}"),
    }
}

/// Why applying an [`AuthCommand`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The state changed since the proposer validated: re-read and try again.
    Stale,
    Refused(AuthError),
}

/// The cause that marks a stale auth command in the peer port's encoding.
const STALE_CAUSE: &str = "auth: state changed, retry";

impl ApplyError {
    /// How the peer port (protocol `etcd-rs/2`) carries an auth failure: a refusal as error
    /// 1000 with its HTTP status in `index`, a stale command as error 101 with a fixed cause
    /// (see `command::Outcome`).
    pub fn to_wire(&self) -> EtcdError {
        match self {
            ApplyError::Stale => EtcdError::new(Code::TestFailed, STALE_CAUSE, 0),
            ApplyError::Refused(a) => {
                EtcdError::new(Code::AuthRefused, a.message.clone(), a.status.into())
            }
        }
    }

    /// Read an auth failure back from the peer port's encoding (None: a key error).
    pub fn from_wire(e: &EtcdError) -> Option<ApplyError> {
        match e.code {
            Code::TestFailed if e.cause == STALE_CAUSE => Some(ApplyError::Stale),
            Code::AuthRefused => Some(ApplyError::Refused(AuthError {
                status: u16::try_from(e.index).unwrap_or(500),
                message: e.cause.clone(),
            })),
            _ => None,
        }
    }
}

impl AuthCommand {
    /// Apply on a replica: refuse a stale command, else run (and validate) the operation.
    pub fn apply(&self, state: &mut AuthState) -> Result<(), ApplyError> {
        if self.base != state.version {
            return Err(ApplyError::Stale);
        }
        state
            .apply_op(&self.op)
            .map(|_| ())
            .map_err(ApplyError::Refused)
    }
}

fn sorted(set: BTreeSet<String>) -> Option<Vec<String>> {
    Some(set.into_iter().collect())
}

fn set_of(list: &Option<Vec<String>>) -> BTreeSet<String> {
    list.iter().flatten().cloned().collect()
}

impl AuthState {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A user as etcd reads it (the user `root` with the role `root` attached).
    pub fn user(&self, name: &str) -> Option<User> {
        self.users.get(name).cloned().map(User::attach_root)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = User> + '_ {
        self.users.values().cloned().map(User::attach_root)
    }

    /// A role by name; `root` is built in.
    pub fn role(&self, name: &str) -> Option<Role> {
        if name == ROOT {
            return Some(Role::root());
        }
        self.roles.get(name).cloned()
    }

    /// Every role, `root` included, sorted by name.
    pub fn roles(&self) -> Vec<Role> {
        let mut all: Vec<Role> = self.roles.values().cloned().collect();
        let at = all.partition_point(|r| r.role.as_str() < ROOT);
        all.insert(at, Role::root());
        all
    }

    /// May a user holding `roles` access `key`? Any one existing role may grant it; with
    /// `recursive`, only prefix patterns count.
    pub fn user_has_access(
        &self,
        roles: &[String],
        key: &str,
        write: bool,
        recursive: bool,
    ) -> bool {
        roles.iter().filter_map(|r| self.role(r)).any(|role| {
            if recursive {
                role.has_recursive_access(key, write)
            } else {
                role.has_key_access(key, write)
            }
        })
    }

    /// May an anonymous request access `key`? Only the `guest` role counts, and a
    /// recursive flag is ignored (as etcd does).
    pub fn guest_has_access(&self, key: &str, write: bool) -> bool {
        self.roles
            .get(GUEST)
            .is_some_and(|g| g.has_key_access(key, write))
    }

    /// Run one operation: validate it against the current state and, when it is valid,
    /// perform it. A refusal leaves the state as it was.
    pub fn apply_op(&mut self, op: &AuthOp) -> Result<Outcome, AuthError> {
        let out = match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Err(refuse(409, "already enabled".into()));
                }
                if !self.users.contains_key(ROOT) {
                    return Err(refuse(
                        409,
                        "No root user available, please create one".into(),
                    ));
                }
                self.roles
                    .entry(GUEST.to_string())
                    .or_insert_with(|| Role::everything(GUEST));
                self.enabled = true;
                Outcome::Done
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Err(refuse(409, "already disabled".into()));
                }
                self.enabled = false;
                Outcome::Done
            }
            AuthOp::CreateUser {
                user,
                password,
                roles,
            } => self.create_user(user, password, roles, false)?,
            AuthOp::CreateOrUpdateUser {
                user,
                password,
                roles,
            } => {
                if self.users.contains_key(user) {
                    self.update_user(user, password, &[], &[])?
                } else {
                    self.create_user(user, password, roles, true)?
                }
            }
            AuthOp::UpdateUser {
                user,
                password,
                grant,
                revoke,
            } => self.update_user(user, password, grant, revoke)?,
            AuthOp::DeleteUser { user } => {
                if self.enabled && user == ROOT {
                    return Err(refuse(
                        403,
                        "Cannot delete root user while auth is enabled.".into(),
                    ));
                }
                if self.users.remove(user).is_none() {
                    return Err(refuse(404, format!("User {user} does not exist")));
                }
                Outcome::Done
            }
            AuthOp::CreateRole { role } => {
                if role.role == ROOT {
                    return Err(root_is_immutable());
                }
                if self.roles.contains_key(&role.role) {
                    return Err(refuse(409, format!("Role {} already exists.", role.role)));
                }
                self.roles.insert(role.role.clone(), role.clone());
                Outcome::Role(role.clone())
            }
            AuthOp::UpdateRole {
                role,
                grant,
                revoke,
            } => {
                if role == ROOT {
                    return Err(root_is_immutable());
                }
                let Some(old) = self.roles.get(role) else {
                    return Err(refuse(404, format!("Role {role} does not exist.")));
                };
                let new = merge_role(old, grant.as_ref(), revoke.as_ref())?;
                if &new == old {
                    return Err(refuse(
                        400,
                        "Role not updated. Use grant/revoke to update the role.".into(),
                    ));
                }
                self.roles.insert(role.clone(), new.clone());
                Outcome::Role(new)
            }
            AuthOp::DeleteRole { role } => {
                if role == ROOT {
                    return Err(root_is_immutable());
                }
                if self.roles.remove(role).is_none() {
                    return Err(refuse(404, format!("Role {role} doesn't exist.")));
                }
                Outcome::Done
            }
        };
        self.version += 1;
        Ok(out)
    }

    fn create_user(
        &mut self,
        name: &str,
        password: &Option<String>,
        roles: &Option<Vec<String>>,
        created: bool,
    ) -> Result<Outcome, AuthError> {
        let Some(hash) = password.as_ref().filter(|p| !p.is_empty()) else {
            return Err(refuse(
                400,
                format!("Cannot create user {name} with an empty password"),
            ));
        };
        if self.users.contains_key(name) {
            return Err(refuse(409, format!("User {name} already exists.")));
        }
        let user = User {
            user: name.to_string(),
            password: hash.clone(),
            roles: roles.clone(),
        }
        .attach_root();
        self.users.insert(name.to_string(), user.clone());
        Ok(Outcome::User { user, created })
    }

    /// etcd's `User.merge`: a new password (if given), then the grants, then the revokes;
    /// the result's roles are a sorted set. Changing nothing is refused.
    fn update_user(
        &mut self,
        name: &str,
        password: &Option<String>,
        grant: &[String],
        revoke: &[String],
    ) -> Result<Outcome, AuthError> {
        let Some(old) = self.user(name) else {
            return Err(refuse(404, format!("User {name} does not exist.")));
        };
        let mut roles = set_of(&old.roles);
        for g in grant {
            if !roles.insert(g.clone()) {
                return Err(refuse(
                    409,
                    format!("Granting duplicate role {g} for user {name}"),
                ));
            }
        }
        for r in revoke {
            if !roles.remove(r) {
                return Err(refuse(
                    409,
                    format!("Revoking ungranted role {r} for user {name}"),
                ));
            }
        }
        let new = User {
            user: old.user.clone(),
            password: password
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| old.password.clone()),
            roles: sorted(roles),
        };
        if new == old {
            return Err(refuse(
                400,
                "User not updated. Use grant/revoke/password to update the user.".into(),
            ));
        }
        self.users.insert(name.to_string(), new.clone());
        Ok(Outcome::User {
            user: new,
            created: false,
        })
    }
}

fn root_is_immutable() -> AuthError {
    refuse(403, format!("Cannot modify role {ROOT}: is root role."))
}

/// etcd's `Role.merge`: grants (a duplicate is refused), then revokes (absent patterns are
/// skipped). Each side that was given comes out as a sorted set.
fn merge_role(
    old: &Role,
    grant: Option<&Permissions>,
    revoke: Option<&Permissions>,
) -> Result<Role, AuthError> {
    let mut kv = old.permissions.kv.clone();
    if let Some(g) = grant {
        let mut read = set_of(&kv.read);
        for p in g.kv.read.iter().flatten() {
            if !read.insert(p.clone()) {
                return Err(refuse(
                    409,
                    format!("Granting duplicate read permission {p}"),
                ));
            }
        }
        let mut write = set_of(&kv.write);
        for p in g.kv.write.iter().flatten() {
            if !write.insert(p.clone()) {
                return Err(refuse(
                    409,
                    format!("Granting duplicate write permission {p}"),
                ));
            }
        }
        kv = RwPermission {
            read: sorted(read),
            write: sorted(write),
        };
    }
    if let Some(r) = revoke {
        let mut read = set_of(&kv.read);
        let mut write = set_of(&kv.write);
        for p in r.kv.read.iter().flatten() {
            read.remove(p);
        }
        for p in r.kv.write.iter().flatten() {
            write.remove(p);
        }
        kv = RwPermission {
            read: sorted(read),
            write: sorted(write),
        };
    }
    Ok(Role {
        role: old.role.clone(),
        permissions: Permissions { kv },
        grant: None,
        revoke: None,
    })
}

#[cfg(test)]
mod tests;
