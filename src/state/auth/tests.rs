//! The auth state machine against the answers of etcd 3.4 (docs/api.md).

use super::*;

fn run(st: &mut AuthState, op: AuthOp) -> Result<Outcome, AuthError> {
    st.apply_op(&op)
}

fn err(st: &mut AuthState, op: AuthOp) -> (u16, String) {
    let before = st.clone();
    let e = run(st, op).expect_err("should be refused");
    assert_eq!(*st, before, "a refusal changes nothing");
    (e.status, e.message)
}

fn create(user: &str, hash: Option<&str>, roles: Option<&[&str]>) -> AuthOp {
    AuthOp::CreateOrUpdateUser {
        user: user.into(),
        password: hash.map(str::to_string),
        roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn role(name: &str, read: Option<&[&str]>, write: Option<&[&str]>) -> Role {
    Role {
        role: name.into(),
        permissions: Permissions {
            kv: RwPermission {
                read: read.map(names),
                write: write.map(names),
            },
        },
        grant: None,
        revoke: None,
    }
}

fn perms(read: &[&str], write: &[&str]) -> Option<Permissions> {
    Some(Permissions {
        kv: RwPermission {
            read: Some(names(read)),
            write: Some(names(write)),
        },
    })
}

#[test]
fn enabling_needs_root_and_creates_guest() {
    let mut st = AuthState::default();
    assert_eq!(
        err(&mut st, AuthOp::Enable),
        (
            409,
            "auth: No root user available, please create one".into()
        )
    );
    assert_eq!(
        err(&mut st, AuthOp::Disable),
        (409, "auth: already disabled".into())
    );
    let out = run(&mut st, create("root", Some("$h1"), None)).unwrap();
    let Outcome::User { user, created } = out else {
        panic!("{out:?}")
    };
    assert!(created);
    assert_eq!(user.roles, Some(names(&["root"])));
    run(&mut st, AuthOp::Enable).unwrap();
    assert!(st.enabled());
    assert_eq!(st.role(GUEST), Some(Role::everything(GUEST)));
    assert_eq!(
        err(&mut st, AuthOp::Enable),
        (409, "auth: already enabled".into())
    );
    assert_eq!(
        err(
            &mut st,
            AuthOp::DeleteUser {
                user: "root".into()
            }
        ),
        (
            403,
            "auth: Cannot delete root user while auth is enabled.".into()
        )
    );
    // A guest role that exists is kept as it is.
    run(&mut st, AuthOp::Disable).unwrap();
    run(
        &mut st,
        AuthOp::UpdateRole {
            role: GUEST.into(),
            grant: None,
            revoke: perms(&["/*"], &[]),
        },
    )
    .unwrap();
    run(&mut st, AuthOp::Enable).unwrap();
    assert_eq!(
        st.role(GUEST).unwrap().permissions.kv.read,
        Some(names(&[]))
    );
}

#[test]
fn users_follow_etcds_merge_rules() {
    let mut st = AuthState::default();
    assert_eq!(
        err(&mut st, create("alice", None, None)),
        (
            400,
            "auth: Cannot create user alice with an empty password".into()
        )
    );
    run(&mut st, create("alice", Some("$a"), None)).unwrap();
    assert_eq!(st.user("alice").unwrap().roles, None);
    // Nothing given: the nil role list becomes an empty one, which counts as a change...
    let out = run(&mut st, create("alice", None, None)).unwrap();
    assert_eq!(
        out,
        Outcome::User {
            user: User {
                user: "alice".into(),
                password: "$a".into(),
                roles: Some(vec![])
            },
            created: false
        }
    );
    // ...once.
    assert_eq!(
        err(&mut st, create("alice", None, None)),
        (
            400,
            "auth: User not updated. Use grant/revoke/password to update the user.".into()
        )
    );
    // A new password is a change.
    run(&mut st, create("alice", Some("$a2"), None)).unwrap();
    assert_eq!(st.user("alice").unwrap().password, "$a2");

    // Create with roles: create only, roles kept as given.
    let mk = |hash: Option<&str>| AuthOp::CreateUser {
        user: "bob".into(),
        password: hash.map(str::to_string),
        roles: Some(names(&["nope", "a"])),
    };
    assert_eq!(
        err(&mut st, mk(None)),
        (
            400,
            "auth: Cannot create user bob with an empty password".into()
        )
    );
    run(&mut st, mk(Some("$b"))).unwrap();
    assert_eq!(st.user("bob").unwrap().roles, Some(names(&["nope", "a"])));
    assert_eq!(
        err(&mut st, mk(Some("$b"))),
        (409, "auth: User bob already exists.".into())
    );

    let upd = |user: &str, grant: &[&str], revoke: &[&str]| AuthOp::UpdateUser {
        user: user.into(),
        password: None,
        grant: names(grant),
        revoke: names(revoke),
    };
    assert_eq!(
        err(&mut st, upd("carol", &["x"], &[])),
        (404, "auth: User carol does not exist.".into())
    );
    let out = run(&mut st, upd("alice", &["y", "x"], &[])).unwrap();
    let Outcome::User { user, .. } = out else {
        panic!()
    };
    assert_eq!(user.roles, Some(names(&["x", "y"])));
    assert_eq!(
        err(&mut st, upd("alice", &["x"], &[])),
        (409, "auth: Granting duplicate role x for user alice".into())
    );
    assert_eq!(
        err(&mut st, upd("alice", &[], &["q"])),
        (409, "auth: Revoking ungranted role q for user alice".into())
    );
    run(&mut st, upd("alice", &[], &["x", "y"])).unwrap();
    assert_eq!(st.user("alice").unwrap().roles, Some(vec![]));

    assert_eq!(
        err(
            &mut st,
            AuthOp::DeleteUser {
                user: "nobody".into()
            }
        ),
        (404, "auth: User nobody does not exist".into())
    );
    run(&mut st, AuthOp::DeleteUser { user: "bob".into() }).unwrap();
    assert!(st.user("bob").is_none());
}

#[test]
fn root_user_always_holds_root() {
    let mut st = AuthState::default();
    run(
        &mut st,
        AuthOp::CreateUser {
            user: "root".into(),
            password: Some("$r".into()),
            roles: Some(names(&["x"])),
        },
    )
    .unwrap();
    assert_eq!(st.user("root").unwrap().roles, Some(names(&["x", "root"])));
    run(
        &mut st,
        AuthOp::UpdateUser {
            user: "root".into(),
            password: None,
            grant: vec![],
            revoke: names(&["root"]),
        },
    )
    .unwrap();
    // Revoked in storage, attached again on every read.
    assert!(st.user("root").unwrap().is_admin());
}

#[test]
fn roles_follow_etcds_merge_rules() {
    let mut st = AuthState::default();
    for op in [
        AuthOp::CreateRole {
            role: role("root", None, None),
        },
        AuthOp::DeleteRole {
            role: "root".into(),
        },
        AuthOp::UpdateRole {
            role: "root".into(),
            grant: perms(&["/x"], &[]),
            revoke: None,
        },
    ] {
        assert_eq!(
            err(&mut st, op),
            (403, "auth: Cannot modify role root: is root role.".into())
        );
    }
    let mut r2 = role("r2", Some(&["/b", "/a*"]), None);
    r2.grant = perms(&[], &[]);
    run(&mut st, AuthOp::CreateRole { role: r2.clone() }).unwrap();
    assert_eq!(st.role("r2"), Some(r2.clone()));
    assert_eq!(
        err(&mut st, AuthOp::CreateRole { role: r2 }),
        (409, "auth: Role r2 already exists.".into())
    );
    let grant = |read: &[&str], write: &[&str]| AuthOp::UpdateRole {
        role: "r2".into(),
        grant: perms(read, write),
        revoke: None,
    };
    let revoke = |read: &[&str], write: &[&str]| AuthOp::UpdateRole {
        role: "r2".into(),
        grant: None,
        revoke: perms(read, write),
    };
    let out = run(&mut st, grant(&["/c"], &["/z", "/y"])).unwrap();
    assert_eq!(
        out,
        Outcome::Role(role("r2", Some(&["/a*", "/b", "/c"]), Some(&["/y", "/z"])))
    );
    assert_eq!(
        err(&mut st, grant(&["/c"], &[])),
        (409, "auth: Granting duplicate read permission /c".into())
    );
    assert_eq!(
        err(&mut st, grant(&[], &["/z"])),
        (409, "auth: Granting duplicate write permission /z".into())
    );
    assert_eq!(
        err(&mut st, revoke(&[], &["/nope"])),
        (
            400,
            "auth: Role not updated. Use grant/revoke to update the role.".into()
        )
    );
    run(&mut st, revoke(&[], &["/z", "/y"])).unwrap();
    assert_eq!(
        st.role("r2"),
        Some(role("r2", Some(&["/a*", "/b", "/c"]), Some(&[])))
    );
    assert_eq!(
        err(
            &mut st,
            AuthOp::UpdateRole {
                role: "r9".into(),
                grant: None,
                revoke: perms(&["/a*"], &[])
            }
        ),
        (404, "auth: Role r9 does not exist.".into())
    );
    assert_eq!(
        err(&mut st, AuthOp::DeleteRole { role: "r9".into() }),
        (404, "auth: Role r9 doesn't exist.".into())
    );
    let listed: Vec<String> = st.roles().into_iter().map(|r| r.role).collect();
    assert_eq!(listed, names(&["r2", "root"]));
    run(&mut st, AuthOp::DeleteRole { role: "r2".into() }).unwrap();
    assert_eq!(st.roles(), vec![Role::root()]);
}

#[test]
fn patterns_and_access() {
    assert!(pattern_matches("/foo*", "/foobar"));
    assert!(pattern_matches("*", ""));
    assert!(pattern_matches("/rkt/*", "/rkt/"));
    assert!(!pattern_matches("/rkt/*", "/rkt"));
    assert!(pattern_matches("/a", "/a"));
    assert!(!pattern_matches("/a", "/a/b"));
    assert!(!pattern_matches("", ""));

    let mut st = AuthState::default();
    run(
        &mut st,
        AuthOp::CreateRole {
            role: role("s", Some(&["/s"]), Some(&["/foo*"])),
        },
    )
    .unwrap();
    run(
        &mut st,
        AuthOp::CreateRole {
            role: role("guest", Some(&["/s"]), None),
        },
    )
    .unwrap();
    let roles = names(&["missing", "s"]);
    assert!(st.user_has_access(&roles, "/s", false, false));
    assert!(!st.user_has_access(&roles, "/s", true, false));
    assert!(
        !st.user_has_access(&roles, "/s", false, true),
        "recursive needs *"
    );
    assert!(st.user_has_access(&roles, "/foo/x", true, true));
    assert!(!st.user_has_access(&roles, "/fo", true, false));
    assert!(st.user_has_access(&names(&["root"]), "", true, true));
    // Guest ignores recursion and only reads here.
    assert!(st.guest_has_access("/s", false));
    assert!(!st.guest_has_access("/s", true));
    run(
        &mut st,
        AuthOp::DeleteRole {
            role: "guest".into(),
        },
    )
    .unwrap();
    assert!(!st.guest_has_access("/s", false));
}

#[test]
fn commands_are_compare_and_swap_on_the_version() {
    let mut st = AuthState::default();
    let cmd = |base| AuthCommand {
        base,
        op: create("root", Some("$r"), None),
    };
    assert_eq!(st.version(), 0);
    cmd(0).apply(&mut st).unwrap();
    assert_eq!(st.version(), 1);
    // The same command again is stale: it was validated against version 0.
    let e = cmd(0).apply(&mut st).unwrap_err();
    assert_eq!(e, ApplyError::Stale);
    // On the peer port it travels as an etcd error and reads back the same.
    assert_eq!(ApplyError::from_wire(&e.to_wire()), Some(ApplyError::Stale));
    assert_eq!(st.version(), 1);
    // Current base, but refused: the refusal comes back with its status and message.
    let e = AuthCommand {
        base: 1,
        op: AuthOp::Disable,
    }
    .apply(&mut st)
    .unwrap_err();
    let refused = ApplyError::Refused(AuthError {
        status: 409,
        message: "auth: already disabled".into(),
    });
    assert_eq!(e, refused);
    assert_eq!(ApplyError::from_wire(&e.to_wire()), Some(refused));
    assert_eq!(st.version(), 1);
    let back: AuthState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
    assert_eq!(back, st);
    let empty: AuthState = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, AuthState::default());
}

#[test]
fn auth_state_rides_in_store_snapshots_and_old_snapshots_load() {
    use crate::command::Command;
    use crate::state::State;
    use crate::store::StoreSnapshot;
    let mut store = State::new(10);
    use crate::command::Outcome;
    let applied = |o: Outcome| assert_eq!(o, Outcome::Auth(Ok(())));
    applied(
        Command::Auth(AuthCommand {
            base: 0,
            op: create("root", Some("$r"), None),
        })
        .apply(&mut store),
    );
    applied(
        Command::Auth(AuthCommand {
            base: 1,
            op: AuthOp::Enable,
        })
        .apply(&mut store),
    );
    assert_eq!(store.store.index(), 0, "auth writes take no store index");
    let json = serde_json::to_value(store.snapshot()).unwrap();
    let mut restored = State::new(10);
    restored
        .restore(serde_json::from_value(json.clone()).unwrap())
        .unwrap();
    assert_eq!(restored.auth, store.auth);
    assert!(restored.auth.enabled());
    // A snapshot written before auth existed has no `auth` field.
    let mut old = json;
    old.as_object_mut().unwrap().remove("auth");
    let snap: StoreSnapshot = serde_json::from_value(old).unwrap();
    restored.restore(snap).unwrap();
    assert_eq!(restored.auth, AuthState::default());
}
