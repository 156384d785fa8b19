//! Commands: every change to the key space, as it travels through the Raft log.
//!
//! A command is built by the API layer from a client request (after validation) and carries
//! everything its effect depends on - in particular absolute expiry times and, for expiry,
//! the leader's clock - so that applying it is a pure function of (store, command). The
//! state machine applies commands in log order on every replica; each yields its own result,
//! which travels back to the node that proposed it.
//!
//! Commands are serialized into log entries (JSON) and so are part of the on-disk format:
//! add variants and optional fields, never change the meaning of existing ones.

use serde::{Deserialize, Serialize};

use crate::error::EtcdError;
use crate::state::State;
use crate::state::auth::ApplyError;
use crate::store::{Event, path};

/// Where cluster members are registered (v0.1's machine registry, the choices in docs/api.md).
pub const MACHINES_DIR: &str = "/_etcd/machines";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace a key (`value: Some`) or a directory (`value: None`).
    Set {
        key: String,
        value: Option<String>,
        expire_at: Option<i64>,
        refresh: bool,
    },
    /// Create a node that must not exist; `unique` makes an in-order child of `key`.
    Create {
        key: String,
        value: Option<String>,
        expire_at: Option<i64>,
        unique: bool,
    },
    /// Change an existing node (a directory only in its TTL).
    Update {
        key: String,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    },
    CompareAndSwap {
        key: String,
        prev_value: Option<String>,
        prev_index: Option<u64>,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    },
    Delete {
        key: String,
        dir: bool,
        recursive: bool,
    },
    CompareAndDelete {
        key: String,
        prev_value: Option<String>,
        prev_index: Option<u64>,
    },
    /// Remove everything due at `now` (Unix ns, the leader's clock when it proposed this).
    Expire { now: i64 },
    /// Record a member in the machine registry: `/_etcd/machines/<name>`.
    Register {
        name: String,
        peer_url: String,
        client_url: String,
    },
    /// A member leaves: its registry entry goes (when it has a name) and its id is
    /// remembered as removed (`/v2/members` then answers 410 for it).
    Unregister {
        name: String,
        #[serde(default)]
        id: Option<u64>,
    },
    /// A change to users, roles or the auth switch (`/v2/auth`); consumes no store index.
    Auth(crate::state::auth::AuthCommand),
}

/// What applying one command did, as the proposer gets it back.
///
/// On the peer port (a write forwarded to the leader, answered back) an outcome travels in
/// the encoding peers of protocol `etcd-rs/2` use: a key result as it is, an auth refusal as
/// error 1000 with its HTTP status in `index`, a stale auth command as error 101 with a fixed
/// cause ([`ApplyError::to_wire`]). Decoding turns those back into [`Outcome::Auth`]; an auth
/// command that was applied arrives as `Key(Ok(None))`, which the auth handler accepts.
// The large variant is the common one (every key write): boxing it would cost an allocation
// per write to save bytes on the rare auth command.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "WireOutcome")]
pub enum Outcome {
    /// A key-space, registry or expiry command: its event (None when nothing needs an
    /// answer, like an expiry or a registration that changed nothing), or why the store
    /// refused it.
    Key(Result<Option<Event>, EtcdError>),
    /// An auth command: applied, or refused (stale, or a refusal with its HTTP status).
    Auth(Result<(), ApplyError>),
}

/// [`Outcome`] on the peer port.
type WireOutcome = Result<Option<Event>, EtcdError>;

// Written field by field rather than through `serde(into)`, which would clone every
// outcome (an event with its previous node) of every forwarded write.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Outcome::Key(r) => r.serialize(s),
            Outcome::Auth(Ok(())) => WireOutcome::Ok(None).serialize(s),
            Outcome::Auth(Err(e)) => WireOutcome::Err(e.to_wire()).serialize(s),
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(w: WireOutcome) -> Outcome {
        match w {
            Err(e) => match ApplyError::from_wire(&e) {
                Some(a) => Outcome::Auth(Err(a)),
                None => Outcome::Key(Err(e)),
            },
            ok => Outcome::Key(ok),
        }
    }
}

impl Outcome {
    /// The result of a key-space command. An auth outcome here would be a bug (the caller
    /// proposed a key command): it reads as error 300.
    pub fn into_key(self) -> Result<Option<Event>, EtcdError> {
        match self {
            Outcome::Key(r) => r,
            Outcome::Auth(_) => Err(EtcdError::raft("an auth outcome for a key command")),
        }
    }
}

impl Command {
    /// The key a key-space command writes (None for expiry, registry and auth commands).
    pub fn key(&self) -> Option<&str> {
        match self {
            Command::Set { key, .. }
            | Command::Create { key, .. }
            | Command::Update { key, .. }
            | Command::CompareAndSwap { key, .. }
            | Command::Delete { key, .. }
            | Command::CompareAndDelete { key, .. } => Some(key),
            Command::Expire { .. }
            | Command::Register { .. }
            | Command::Unregister { .. }
            | Command::Auth(_) => None,
        }
    }

    pub fn apply(&self, state: &mut State) -> Outcome {
        match self {
            Command::Auth(cmd) => Outcome::Auth(cmd.apply(&mut state.auth)),
            _ => Outcome::Key(self.apply_to_keys(state)),
        }
    }

    /// Apply a command that is not an auth command.
    fn apply_to_keys(&self, state: &mut State) -> Result<Option<Event>, EtcdError> {
        let store = &mut state.store;
        match self {
            Command::Set {
                key,
                value,
                expire_at,
                refresh,
            } => store
                .set(key, value.clone(), *expire_at, *refresh)
                .map(Some),
            Command::Create {
                key,
                value,
                expire_at,
                unique,
            } => store
                .create(key, value.clone(), *expire_at, *unique)
                .map(Some),
            Command::Update {
                key,
                value,
                expire_at,
                refresh,
            } => store
                .update(key, value.clone(), *expire_at, *refresh)
                .map(Some),
            Command::CompareAndSwap {
                key,
                prev_value,
                prev_index,
                value,
                expire_at,
                refresh,
            } => store
                .compare_and_swap(
                    key,
                    prev_value.as_deref(),
                    *prev_index,
                    value.clone(),
                    *expire_at,
                    *refresh,
                )
                .map(Some),
            Command::Delete {
                key,
                dir,
                recursive,
            } => store.delete(key, *dir, *recursive).map(Some),
            Command::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            } => store
                .compare_and_delete(key, prev_value.as_deref(), *prev_index)
                .map(Some),
            Command::Expire { now } => {
                store.expire(*now);
                Ok(None)
            }
            Command::Register {
                name,
                peer_url,
                client_url,
            } => {
                let key = machine_key(name);
                let value = machine_value(peer_url, client_url);
                // A member that registers again with the same URLs (a restart) changes nothing.
                if store.peek_value(&key).as_deref() == Some(value.as_str()) {
                    return Ok(None);
                }
                store.set(&key, Some(value), None, false).map(Some)
            }
            Command::Unregister { name, id } => {
                if let Some(id) = id {
                    state.removed_members.insert(*id);
                }
                if name.is_empty() {
                    return Ok(None);
                }
                match store.delete(&machine_key(name), false, false) {
                    Ok(ev) => Ok(Some(ev)),
                    Err(e) if e.code == crate::error::Code::KeyNotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Command::Auth(_) => Ok(None),
        }
    }
}

impl Command {
    /// Rough payload size, to keep a batch of commands within its byte budget
    /// (`raft::node::MAX_BATCH_BYTES`).
    pub fn approx_size(&self) -> usize {
        64 + match self {
            Command::Set { key, value, .. } | Command::Create { key, value, .. } => {
                key.len() + value.as_ref().map_or(0, String::len)
            }
            Command::Update { key, value, .. } => key.len() + value.len(),
            Command::CompareAndSwap {
                key,
                prev_value,
                value,
                ..
            } => key.len() + value.len() + prev_value.as_ref().map_or(0, String::len),
            Command::Delete { key, .. } => key.len(),
            Command::CompareAndDelete {
                key, prev_value, ..
            } => key.len() + prev_value.as_ref().map_or(0, String::len),
            Command::Expire { .. } => 0,
            Command::Register {
                name,
                peer_url,
                client_url,
            } => name.len() + peer_url.len() + client_url.len(),
            Command::Unregister { name, .. } => name.len(),
            // Auth records are small (names, a password hash, a few patterns).
            Command::Auth(_) => 256,
        }
    }
}

pub fn machine_key(name: &str) -> String {
    path::join(MACHINES_DIR, name)
}

/// The registry value, in v0.1's format: `raft=<peer URL>&etcd=<client URL>`.
pub fn machine_value(peer_url: &str, client_url: &str) -> String {
    format!("raft={peer_url}&etcd={client_url}")
}

/// Parse a registry value back into (peer URL, client URL).
pub fn parse_machine_value(v: &str) -> Option<(String, String)> {
    let mut peer = None;
    let mut client = None;
    for part in v.split('&') {
        if let Some(p) = part.strip_prefix("raft=") {
            peer = Some(p.to_string());
        } else if let Some(c) = part.strip_prefix("etcd=") {
            client = Some(c.to_string());
        }
    }
    Some((peer?, client?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_is_idempotent_and_visible() {
        let mut st = State::new(100);
        let reg = Command::Register {
            name: "node0".into(),
            peer_url: "http://127.0.0.1:7001".into(),
            client_url: "http://127.0.0.1:4001".into(),
        };
        assert!(reg.apply(&mut st).into_key().unwrap().is_some());
        assert_eq!(st.store.index(), 1);
        assert!(reg.apply(&mut st).into_key().unwrap().is_none());
        assert_eq!(st.store.index(), 1, "re-registering consumes no index");
        let v = st
            .store
            .get("/_etcd/machines/node0", false, true)
            .unwrap()
            .value
            .unwrap();
        assert_eq!(v, "raft=http://127.0.0.1:7001&etcd=http://127.0.0.1:4001");
        assert_eq!(
            parse_machine_value(&v),
            Some((
                "http://127.0.0.1:7001".into(),
                "http://127.0.0.1:4001".into()
            ))
        );
        Command::Unregister {
            name: "node0".into(),
            id: None,
        }
        .apply(&mut st)
        .into_key()
        .unwrap();
        assert!(st.store.get("/_etcd/machines/node0", false, true).is_err());
        assert!(
            Command::Unregister {
                name: "node0".into(),
                id: None
            }
            .apply(&mut st)
            .into_key()
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn outcomes_keep_the_peer_ports_encoding() {
        use crate::state::auth::AuthError;
        let refused = Outcome::Auth(Err(ApplyError::Refused(AuthError {
            status: 409,
            message: "auth: already enabled".into(),
        })));
        let stale = Outcome::Auth(Err(ApplyError::Stale));
        let key_err = Outcome::Key(Err(EtcdError::new(
            crate::error::Code::KeyNotFound,
            "/a",
            7,
        )));
        for o in [refused, stale, key_err, Outcome::Key(Ok(None))] {
            let json = serde_json::to_string(&o).unwrap();
            // The etcd-rs/2 shape: a plain Result.
            assert!(
                json.starts_with("{\"Ok\"") || json.starts_with("{\"Err\""),
                "{json}"
            );
            let back: Outcome = serde_json::from_str(&json).unwrap();
            assert_eq!(back, o, "{json}");
        }
        // An applied auth command arrives as a key result with no event.
        let json = serde_json::to_string(&Outcome::Auth(Ok(()))).unwrap();
        let back: Outcome = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Outcome::Key(Ok(None)));
    }

    #[test]
    fn commands_round_trip_through_json() {
        let c = Command::CompareAndSwap {
            key: "/k".into(),
            prev_value: Some("a".into()),
            prev_index: None,
            value: "b".into(),
            expire_at: Some(1),
            refresh: false,
        };
        let back: Command = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
