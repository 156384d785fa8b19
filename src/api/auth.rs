//! `/v2/auth` over HTTP (etcd 2.3 semantics, docs/api.md). Who may do what - the checks the
//! other handlers call - is in `access.rs`.
//!
//! The auth state itself is the pure state machine of [`crate::state::auth`]; this module is its
//! edge, where time and slow work live:
//! * A write reads the state linearizably, validates the operation on a copy of it (so every
//!   refusal is answered at once, without proposing), hashes a new password with bcrypt
//!   (cost 10) on a blocking thread, and proposes an [`AuthCommand`] holding the hash and the
//!   state version it validated against. If another auth write got in first, the command is
//!   refused as stale and the handler starts over; otherwise the answer it computed is the
//!   one the log applied.
//! * Checking a password costs a bcrypt verification (~50-100 ms). Successful verifications
//!   are remembered ([`crate::state::auth::cache`]) in a small process-wide set keyed by a 128-bit
//!   keyed hash of the `Authorization` value together with the user's stored hash, so a
//!   changed password (a new hash) or a deleted user never matches an old entry. Failures
//!   are not remembered (a wrong password stays slow). Passwords and headers are never
//!   logged.
//!
//! Answers, as etcd 3.4 gives them: admin errors are `{"message":...}` without a newline;
//! successes end with a newline; both carry `X-Etcd-Cluster-Id`, except 401
//! `{"message":"Insufficient credentials"}`, 405 and `Invalid path`, which etcd writes before
//! it sets that header. A denied key request is error 110 in the v2 key-error shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::access::authorize_admin;
use super::params::read_body;
use super::response::{self, JSON};
use super::response::{message, method_not_allowed};
use super::{AppRef, AppState};
use crate::command::{Command, Outcome as CommandOutcome};
use crate::go::go_json;
use crate::state::auth::wire::{self, Enabled, RoleList, UserAnswer, UserList, UserWithRoles};
use crate::state::auth::{ApplyError, AuthCommand, AuthError, AuthOp, Outcome, Permissions};
use crate::store::path;

/// bcrypt cost, as etcd (`bcrypt.DefaultCost`).
const BCRYPT_COST: u32 = 10;
/// How often a write is retried when another auth write got in between.
const WRITE_ATTEMPTS: usize = 8;
/// Stands for a password hash while an operation is only being validated.
const PENDING_HASH: &str = "$pending";

/// The paths this module serves (Go's mux: `enable`, `users` and `roles` exactly, and
/// anything below `users/` and `roles/`). `path` is the decoded request path.
pub fn is_auth_path(path: &str) -> bool {
    matches!(
        path,
        "/v2/auth/enable" | "/v2/auth/users" | "/v2/auth/roles"
    ) || path.starts_with("/v2/auth/users/")
        || path.starts_with("/v2/auth/roles/")
}

/// Serve one `/v2/auth` request; `path` is the decoded request path.
pub async fn dispatch(st: AppRef, path: &str, req: Request) -> Response {
    let sub = &path["/v2/auth".len()..];
    if sub == "/enable" {
        return enable(st, req).await;
    }
    let clean = path::clean(sub);
    let pieces: Vec<&str> = clean.split('/').collect();
    let users = pieces.get(1) == Some(&"users");
    match pieces.len() {
        2 => list(st, users, req).await,
        3 => item(st, users, pieces[2], req).await,
        _ => message(400, "Invalid path"),
    }
}

// ---------------------------------------------------------------------------------------
// handlers

async fn enable(st: AppRef, req: Request) -> Response {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::PUT | Method::DELETE) {
        return method_not_allowed("GET,PUT,DELETE");
    }
    if let Err(r) = ready(&st).await {
        return r;
    }
    if method != Method::GET
        && let Err(r) = authorize_admin(&st, req.headers()).await
    {
        return r;
    }
    let op = match method {
        Method::GET => {
            let enabled = st.node.replica.read().state.auth.enabled();
            return answer(&st, 200, go_json(&Enabled { enabled }));
        }
        Method::PUT => AuthOp::Enable,
        _ => AuthOp::Disable,
    };
    match write(&st, b"", |_| op.clone()).await {
        Ok(_) => done(&st),
        Err(r) => r,
    }
}

/// `GET /v2/auth/users` and `GET /v2/auth/roles`: the 2.3 listing shapes.
async fn list(st: AppRef, users: bool, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    if let Err(r) = ready(&st).await {
        return r;
    }
    if let Err(r) = authorize_admin(&st, req.headers()).await {
        return r;
    }
    let d = st.node.replica.read();
    let auth = &d.state.auth;
    let body = if users {
        let all: Vec<UserWithRoles> = auth
            .users()
            .map(|u| UserWithRoles {
                roles: u.role_names().iter().filter_map(|r| auth.role(r)).collect(),
                user: u.user,
            })
            .collect();
        go_json(&UserList {
            users: (!all.is_empty()).then_some(all),
        })
    } else {
        go_json(&RoleList {
            roles: auth.roles(),
        })
    };
    answer(&st, 200, body)
}

/// `/v2/auth/users/<name>` and `/v2/auth/roles/<name>`.
async fn item(st: AppRef, users: bool, name: &str, req: Request) -> Response {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::PUT | Method::DELETE) {
        return method_not_allowed("GET,PUT,DELETE");
    }
    if let Err(r) = ready(&st).await {
        return r;
    }
    if let Err(r) = authorize_admin(&st, req.headers()).await {
        return r;
    }
    match (users, method) {
        (true, Method::GET) => get_user(&st, name),
        (false, Method::GET) => {
            let role = st.node.replica.read().state.auth.role(name);
            match role {
                Some(r) => answer(&st, 200, go_json(&r)),
                None => role_missing(&st, name),
            }
        }
        (true, Method::PUT) => match read_body(req.into_body()).await {
            Ok(body) => put_user(&st, name, &body).await,
            Err(r) => r,
        },
        (false, Method::PUT) => match read_body(req.into_body()).await {
            Ok(body) => put_role(&st, name, &body).await,
            Err(r) => r,
        },
        (true, _) => {
            let user = name.to_string();
            match write(&st, b"", |_| AuthOp::DeleteUser { user: user.clone() }).await {
                Ok(_) => done(&st),
                Err(r) => r,
            }
        }
        (false, _) => {
            let role = name.to_string();
            match write(&st, b"", |_| AuthOp::DeleteRole { role: role.clone() }).await {
                Ok(_) => done(&st),
                Err(r) => r,
            }
        }
    }
}

fn role_missing(st: &AppState, name: &str) -> Response {
    refused(
        st,
        &AuthError {
            status: 404,
            message: format!("auth: Role {name} does not exist."),
        },
    )
}

/// `GET /v2/auth/users/<name>`: the user with its role objects; a role that no longer
/// exists is a 404, as in etcd.
fn get_user(st: &AppState, name: &str) -> Response {
    let d = st.node.replica.read();
    let auth = &d.state.auth;
    let Some(user) = auth.user(name) else {
        return refused(
            st,
            &AuthError {
                status: 404,
                message: format!("auth: User {name} does not exist."),
            },
        );
    };
    let mut roles = Vec::new();
    for r in user.role_names() {
        match auth.role(r) {
            Some(role) => roles.push(role),
            None => return role_missing(st, r),
        }
    }
    answer(
        st,
        200,
        go_json(&UserWithRoles {
            user: user.user,
            roles,
        }),
    )
}

fn nonempty(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

async fn put_user(st: &AppState, name: &str, body: &[u8]) -> Response {
    let Ok(u) = wire::decode_user(body) else {
        return with_cluster(st, message(400, "Invalid JSON in request body."));
    };
    if u.user != name {
        return with_cluster(
            st,
            message(400, "User JSON name does not match the name in the URL"),
        );
    }
    let update = nonempty(&u.grant) || nonempty(&u.revoke);
    if update && nonempty(&u.roles) {
        return with_cluster(
            st,
            message(400, "User JSON contains both roles and grant/revoke"),
        );
    }
    let build = |password: Option<String>| {
        let user = u.user.clone();
        if update {
            AuthOp::UpdateUser {
                user,
                password,
                grant: u.grant.clone().unwrap_or_default(),
                revoke: u.revoke.clone().unwrap_or_default(),
            }
        } else if nonempty(&u.roles) {
            AuthOp::CreateUser {
                user,
                password,
                roles: u.roles.clone(),
            }
        } else {
            AuthOp::CreateOrUpdateUser {
                user,
                password,
                roles: u.roles.clone(),
            }
        }
    };
    match write(st, u.password.as_bytes(), build).await {
        Ok(Outcome::User { user, created }) => answer(
            st,
            if created { 201 } else { 200 },
            go_json(&UserAnswer {
                user: &user.user,
                roles: &user.roles,
            }),
        ),
        Ok(_) => internal(st),
        Err(r) => r,
    }
}

async fn put_role(st: &AppState, name: &str, body: &[u8]) -> Response {
    let Ok(role) = wire::decode_role(body) else {
        return with_cluster(st, message(400, "Invalid JSON in request body."));
    };
    if role.role != name {
        return with_cluster(
            st,
            message(400, "Role JSON name does not match the name in the URL"),
        );
    }
    let create =
        Permissions::is_empty(role.grant.as_ref()) && Permissions::is_empty(role.revoke.as_ref());
    if !create && !Permissions::is_empty(Some(&role.permissions)) {
        return with_cluster(
            st,
            message(400, "Role JSON contains both permissions and grant/revoke"),
        );
    }
    let op = if create {
        AuthOp::CreateRole { role }
    } else {
        AuthOp::UpdateRole {
            role: role.role,
            grant: role.grant,
            revoke: role.revoke,
        }
    };
    match write(st, b"", |_| op.clone()).await {
        // A new role echoes the request as parsed; an update shows the merged role.
        Ok(Outcome::Role(r)) => answer(st, if create { 201 } else { 200 }, go_json(&r)),
        Ok(_) => internal(st),
        Err(r) => r,
    }
}

/// Validate `build(hash)` against the current state and, when valid, propose it; retried
/// when another auth write changed the state in between. `password` (possibly empty) is
/// hashed once, only when an operation that needs it is about to be proposed.
async fn write(
    st: &AppState,
    password: &[u8],
    build: impl Fn(Option<String>) -> AuthOp,
) -> Result<Outcome, Response> {
    let mut hash: Option<String> = None;
    for _ in 0..WRITE_ATTEMPTS {
        if st.node.linearizable_read().await.is_err() {
            return Err(internal(st));
        }
        let probe = (!password.is_empty()).then(|| PENDING_HASH.to_string());
        let (base, predicted) = {
            let d = st.node.replica.read();
            let mut scratch = d.state.auth.clone();
            (d.state.auth.version(), scratch.apply_op(&build(probe)))
        };
        let predicted = predicted.map_err(|e| refused(st, &e))?;
        if !password.is_empty() && hash.is_none() {
            hash = Some(
                hash_password(password.to_vec())
                    .await
                    .ok_or_else(|| internal(st))?,
            );
        }
        let cmd = Command::Auth(AuthCommand {
            base,
            op: build(hash.clone()),
        });
        let written = st.node.propose(cmd).await.map_err(|_| internal(st))?;
        match written.result {
            // (Applied through a forwarded write, it reads as a key result with no event.)
            CommandOutcome::Auth(Ok(())) | CommandOutcome::Key(Ok(None)) => return Ok(predicted),
            CommandOutcome::Auth(Err(ApplyError::Stale)) => continue,
            CommandOutcome::Auth(Err(ApplyError::Refused(a))) => return Err(refused(st, &a)),
            CommandOutcome::Key(_) => return Err(internal(st)),
        }
    }
    tracing::warn!("auth write gave up after {WRITE_ATTEMPTS} conflicting attempts");
    Err(internal(st))
}

async fn hash_password(password: Vec<u8>) -> Option<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST).ok())
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------
// answers

fn with_cluster(st: &AppState, mut r: Response) -> Response {
    r.headers_mut()
        .insert(response::X_ETCD_CLUSTER_ID, st.cluster_id_header());
    r
}

fn refused(st: &AppState, e: &AuthError) -> Response {
    with_cluster(st, message(e.status, &e.message))
}

fn internal(st: &AppState) -> Response {
    with_cluster(st, message(500, "Internal Server Error"))
}

/// A success with a JSON body (newline-terminated, as Go's encoder writes it).
fn answer(st: &AppState, status: u16, body: String) -> Response {
    with_cluster(st, response::json(status, body + "\n"))
}

/// A success without a body (enable, disable, deletes): still typed JSON, as etcd does.
fn done(st: &AppState) -> Response {
    with_cluster(st, response::with_body(200, Some(JSON), Body::empty()))
}

async fn ready(st: &AppState) -> Result<(), Response> {
    st.node.wait_ready().await.map_err(|_| internal(st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_paths_are_gos_routes() {
        for p in [
            "/v2/auth/enable",
            "/v2/auth/users",
            "/v2/auth/users/",
            "/v2/auth/users/a",
            "/v2/auth/roles/a/b",
            "/v2/auth/roles",
        ] {
            assert!(is_auth_path(p), "{p}");
        }
        for p in [
            "/v2/auth",
            "/v2/auth/",
            "/v2/auth/enable/",
            "/v2/auth/usersx",
        ] {
            assert!(!is_auth_path(p), "{p}");
        }
    }
}
