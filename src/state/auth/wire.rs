//! The JSON of `/v2/auth`: request bodies decoded the way Go's `encoding/json` decodes them
//! into etcd's structs, and the shapes of the answers.
//!
//! etcd decodes a body with `json.NewDecoder(body).Decode(&v)`, which clients depend on in
//! small ways, all kept here:
//! * only the first JSON value is read (trailing bytes are ignored); an empty body fails;
//! * `null` at the top leaves every field at its zero value;
//! * keys match field names case-insensitively and unknown keys are ignored;
//! * `null` for a list makes it nil (`None`), for a string or a struct it changes nothing, for
//!   a pointer (`grant`, `revoke`) it makes it nil; `null` inside a list of strings is `""`;
//! * a value of the wrong type fails the whole body.
//!
//! Any failure is answered `Invalid JSON in request body.` by the caller.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Permissions, Role};

/// The body of `PUT /v2/auth/users/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    pub user: String,
    pub password: String,
    pub roles: Option<Vec<String>>,
    pub grant: Option<Vec<String>>,
    pub revoke: Option<Vec<String>>,
}

/// The body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJson;

type Decoded<T> = Result<T, BadJson>;

/// The first JSON value of a body, or None for `null`.
fn first_object(body: &[u8]) -> Decoded<Option<Map<String, Value>>> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match values.next() {
        Some(Ok(Value::Object(m))) => Ok(Some(m)),
        Some(Ok(Value::Null)) => Ok(None),
        _ => Err(BadJson),
    }
}

/// Go's case-insensitive key match (simple case folding, so `K`/`k` and `S`/`s`/`ſ` meet).
fn folds_equal(a: &str, b: &str) -> bool {
    let fold = |c: char| -> char {
        match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_lowercase().next().unwrap_or(c),
        }
    };
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// The values for field `name`, in the order Go would apply them: an exact key wins over
/// differently-cased ones (which, with a sorted map, is the best order we can know).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Vec<&'a Value> {
    let mut out: Vec<&Value> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != name && folds_equal(k, name))
        .map(|(_, v)| v)
        .collect();
    out.extend(obj.get(name));
    out
}

fn decode_string(into: &mut String, v: &Value) -> Decoded<()> {
    match v {
        Value::String(s) => *into = s.clone(),
        Value::Null => {}
        _ => return Err(BadJson),
    }
    Ok(())
}

fn decode_strings(into: &mut Option<Vec<String>>, v: &Value) -> Decoded<()> {
    match v {
        Value::Null => *into = None,
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let mut s = String::new();
                decode_string(&mut s, item)?;
                list.push(s);
            }
            *into = Some(list);
        }
        _ => return Err(BadJson),
    }
    Ok(())
}

fn decode_permissions(into: &mut Permissions, v: &Value) -> Decoded<()> {
    let obj = match v {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(BadJson),
    };
    for kv in field(obj, "kv") {
        let kv = match kv {
            Value::Null => continue,
            Value::Object(o) => o,
            _ => return Err(BadJson),
        };
        for r in field(kv, "read") {
            decode_strings(&mut into.kv.read, r)?;
        }
        for w in field(kv, "write") {
            decode_strings(&mut into.kv.write, w)?;
        }
    }
    Ok(())
}

fn decode_permissions_ptr(into: &mut Option<Permissions>, v: &Value) -> Decoded<()> {
    if v.is_null() {
        *into = None;
        return Ok(());
    }
    decode_permissions(into.get_or_insert_with(Permissions::default), v)
}

/// Decode a user request body.
pub fn decode_user(body: &[u8]) -> Decoded<UserRequest> {
    let mut u = UserRequest::default();
    let Some(obj) = first_object(body)? else {
        return Ok(u);
    };
    for v in field(&obj, "user") {
        decode_string(&mut u.user, v)?;
    }
    for v in field(&obj, "password") {
        decode_string(&mut u.password, v)?;
    }
    for v in field(&obj, "roles") {
        decode_strings(&mut u.roles, v)?;
    }
    for v in field(&obj, "grant") {
        decode_strings(&mut u.grant, v)?;
    }
    for v in field(&obj, "revoke") {
        decode_strings(&mut u.revoke, v)?;
    }
    Ok(u)
}

/// Decode a role request body.
pub fn decode_role(body: &[u8]) -> Decoded<Role> {
    let mut r = Role::default();
    let Some(obj) = first_object(body)? else {
        return Ok(r);
    };
    for v in field(&obj, "role") {
        decode_string(&mut r.role, v)?;
    }
    for v in field(&obj, "permissions") {
        decode_permissions(&mut r.permissions, v)?;
    }
    for v in field(&obj, "grant") {
        decode_permissions_ptr(&mut r.grant, v)?;
    }
    for v in field(&obj, "revoke") {
        decode_permissions_ptr(&mut r.revoke, v)?;
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// answers

/// `GET /v2/auth/enable`.
#[derive(Serialize)]
pub struct Enabled {
    pub enabled: bool,
}

/// The answer to a user `PUT`: the role *names* (`null` when there are none).
#[derive(Serialize)]
pub struct UserAnswer<'a> {
    pub user: &'a str,
    pub roles: &'a Option<Vec<String>>,
}

/// A user with its role objects (`GET` of a user, and the user listing). `roles` is left
/// out when there are none.
#[derive(Serialize)]
pub struct UserWithRoles {
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

/// `GET /v2/auth/users` (the 2.3 shape): `null` when there are no users.
#[derive(Serialize)]
pub struct UserList {
    pub users: Option<Vec<UserWithRoles>>,
}

/// `GET /v2/auth/roles` (the 2.3 shape): always includes `root`.
#[derive(Serialize)]
pub struct RoleList {
    pub roles: Vec<Role>,
}

/// Every admin error: `{"message": ...}`.
#[derive(Serialize)]
pub struct Message<'a> {
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::auth::RwPermission;

    #[test]
    fn user_bodies_decode_like_go() {
        let u = decode_user(br#"{"user":"a","password":"p","roles":["x",null]} trailing"#).unwrap();
        assert_eq!(u.user, "a");
        assert_eq!(u.password, "p");
        assert_eq!(u.roles, Some(vec!["x".into(), "".into()]));
        assert_eq!(u.grant, None);

        let u = decode_user(br#"{"USER":"b","Grant":[],"unknown":{"deep":[1]}}"#).unwrap();
        assert_eq!(u.user, "b");
        assert_eq!(u.grant, Some(vec![]));

        assert_eq!(decode_user(b"null").unwrap(), UserRequest::default());
        assert_eq!(decode_user(br#"{"user":null}"#).unwrap().user, "");
        assert_eq!(decode_user(b""), Err(BadJson));
        assert_eq!(decode_user(b"   "), Err(BadJson));
        assert_eq!(decode_user(br#"{"user":"#), Err(BadJson));
        assert_eq!(decode_user(br#"{"password":5}"#), Err(BadJson));
        assert_eq!(decode_user(br#"{"roles":"x"}"#), Err(BadJson));
        assert_eq!(decode_user(br#"["user"]"#), Err(BadJson));
        assert_eq!(decode_user(br#""user""#), Err(BadJson));
        assert_eq!(
            decode_user("{\"u\u{017F}er\":\"c\"}".as_bytes())
                .unwrap()
                .user,
            "c"
        );
    }

    #[test]
    fn role_bodies_decode_like_go() {
        let r = decode_role(
            br#"{"role":"r","permissions":{"kv":{"read":["/a"],"write":null}},"grant":{"kv":{"read":[]}},"revoke":null}"#,
        )
        .unwrap();
        assert_eq!(r.role, "r");
        assert_eq!(r.permissions.kv.read, Some(vec!["/a".into()]));
        assert_eq!(r.permissions.kv.write, None);
        assert_eq!(
            r.grant,
            Some(Permissions {
                kv: RwPermission {
                    read: Some(vec![]),
                    write: None
                }
            })
        );
        assert_eq!(r.revoke, None);
        let r = decode_role(br#"{"role":"r","permissions":null,"grant":{}}"#).unwrap();
        assert_eq!(r.permissions, Permissions::default());
        assert_eq!(r.grant, Some(Permissions::default()));
        assert_eq!(
            decode_role(br#"{"role":"r","permissions":{"kv":[]}}"#),
            Err(BadJson)
        );
        assert_eq!(decode_role(br#"{"role":"r","grant":7}"#), Err(BadJson));
    }

    #[test]
    fn answers_have_go_shapes() {
        use crate::go::go_json;
        let r = Role {
            role: "r1".into(),
            ..Default::default()
        };
        assert_eq!(
            go_json(&r),
            r#"{"role":"r1","permissions":{"kv":{"read":null,"write":null}}}"#
        );
        assert_eq!(
            go_json(&UserAnswer {
                user: "a",
                roles: &None
            }),
            r#"{"user":"a","roles":null}"#
        );
        assert_eq!(go_json(&UserList { users: None }), r#"{"users":null}"#);
        assert_eq!(
            go_json(&UserWithRoles {
                user: "a".into(),
                roles: vec![]
            }),
            r#"{"user":"a"}"#
        );
    }
}
