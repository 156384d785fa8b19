//! Access decisions with `/v2/auth` on: who is asking (Basic credentials, a bcrypt check
//! remembered for a while, see `crate::state::auth::cache`), and whether they may use the admin API
//! ([`authorize_admin`]) or read or write a key ([`authorize_key`]).

use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;

use super::AppState;
use super::response::message;
use crate::error::{Code, EtcdError};
use crate::state::auth::cache::{CacheKey, VerifyCache};
use crate::state::auth::{User, basic};

/// Who is asking, once the password (if any) is checked.
enum Caller {
    /// Auth is off: everything is allowed.
    Open,
    /// No `Authorization` header.
    Guest,
    /// Bad header, unknown user or wrong password.
    Denied,
    User(User),
}

/// A caller, or a user whose password still has to be verified.
enum Claim {
    Known(Caller),
    Verify {
        user: User,
        password: Vec<u8>,
        header: Vec<u8>,
    },
}

/// First half of identifying a caller: with auth off (known without the lock) everyone is
/// let in; otherwise it reads the auth state under the state lock (cheap). As Go's
/// `Header.Get`, only the first `Authorization` value counts, and an empty one is none.
fn identify(st: &AppState, authorization: Option<&HeaderValue>) -> Claim {
    if !st.node.replica.auth_enabled() {
        return Claim::Known(Caller::Open);
    }
    let d = st.node.replica.read();
    let auth = &d.state.auth;
    if !auth.enabled() {
        return Claim::Known(Caller::Open);
    }
    let header = authorization.map(HeaderValue::as_bytes).unwrap_or_default();
    if header.is_empty() {
        return Claim::Known(Caller::Guest);
    }
    let Some((name, password)) = basic::parse(header) else {
        return Claim::Known(Caller::Denied);
    };
    match auth.user(&name) {
        Some(user) => Claim::Verify {
            user,
            password,
            header: header.to_vec(),
        },
        None => Claim::Known(Caller::Denied),
    }
}

async fn identify_async(st: &AppState, authorization: Option<&HeaderValue>) -> Caller {
    match identify(st, authorization) {
        Claim::Known(c) => c,
        Claim::Verify {
            user,
            password,
            header,
        } => {
            let key = VerifyCache::global().key(&header, &user.password);
            if VerifyCache::global().contains(key) {
                return Caller::User(user);
            }
            let hash = user.password.clone();
            let ok = tokio::task::spawn_blocking(move || {
                bcrypt::verify(&password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            verified(user, key, ok)
        }
    }
}

fn verified(user: User, key: CacheKey, ok: bool) -> Caller {
    if ok {
        VerifyCache::global().insert(key);
        Caller::User(user)
    } else {
        Caller::Denied
    }
}

fn is_admin(caller: &Caller) -> bool {
    match caller {
        Caller::Open => true,
        Caller::User(u) => u.is_admin(),
        Caller::Guest | Caller::Denied => false,
    }
}

fn admin_denied() -> Response {
    message(401, "Insufficient credentials")
}

/// May this request use the admin API? Open while auth is off; otherwise it needs Basic
/// credentials of a user holding the role `root` (no guest). Denied: 401
/// `{"message":"Insufficient credentials"}`. A password not verified recently costs a
/// bcrypt check (~50-100 ms) on a blocking thread.
pub async fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    if is_admin(&identify_async(state, headers.get(header::AUTHORIZATION)).await) {
        Ok(())
    } else {
        Err(admin_denied())
    }
}

/// The permission check of a `/v2/keys` request: `key` is the path after `/v2/keys`,
/// decoded, as sent (`""` for `/v2/keys`, `/` for `/v2/keys/`). GET and HEAD need read
/// access, every other method write access. Denied: error 110 (401) with `X-Etcd-Index: 0`.
pub async fn authorize_key(
    st: &AppState,
    authorization: Option<&HeaderValue>,
    key: &str,
    method: &Method,
    recursive: bool,
) -> Result<(), Response> {
    let write = method != Method::GET && method != Method::HEAD;
    let allowed =
        match identify_async(st, authorization).await {
            Caller::Open => true,
            Caller::Denied => false,
            Caller::Guest => st
                .node
                .replica
                .read()
                .state
                .auth
                .guest_has_access(key, write),
            Caller::User(u) => st.node.replica.read().state.auth.user_has_access(
                u.role_names(),
                key,
                write,
                recursive,
            ),
        };
    if allowed {
        Ok(())
    } else {
        Err(super::response::v2_error(&EtcdError::new(
            Code::Unauthorized,
            "Insufficient credentials",
            0,
        )))
    }
}
