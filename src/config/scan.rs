//! Reading the command line and the environment: Go-style flags (`-f v`, `-f=v`, `--f`) in
//! any era's spelling, then `ETCD_*` variables for what the command line did not set, into
//! [`Settings`] (the last value given for each setting, and where it came from).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::flags::{Kind, Setting, lookup};
use super::{ConfigError, usage_error};

#[derive(Debug, Clone)]
pub(super) enum Source {
    /// The flag as typed, dashes included (`-m`, `--snapshot-count`).
    Flag(String),
    /// The environment variable name.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// One value given for a setting, with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Given {
    pub(super) setting: Setting,
    pub(super) value: String,
    pub(super) source: Source,
}

impl Given {
    pub(super) fn invalid(&self, reason: &str) -> ConfigError {
        usage_error(format!(
            "invalid value {:?} for {}: {reason}",
            self.value, self.source
        ))
    }
}

/// Boolean of a stored value: flags store `true`/`false`; the environment rule is "true
/// unless `0` or `false`".
pub(super) fn truthy(value: &str) -> bool {
    let value = value.trim();
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

pub(super) fn parse_u64(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Reads the arguments left to right. `Ok(None)` means help was asked for.
pub(super) fn scan(args: &[String]) -> Result<Option<Vec<Given>>, ConfigError> {
    let mut given = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if let Some(extra) = rest.next() {
                return Err(unexpected(extra));
            }
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(unexpected(arg));
        }
        let dashes = if arg.starts_with("--") { 2 } else { 1 };
        let body = &arg[dashes..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(usage_error(format!("bad flag syntax: {arg}")));
        }
        let (name, attached) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let typed = format!("{}{name}", &arg[..dashes]);
        if name == "h" || name == "help" {
            return Ok(None);
        }
        let Some(flag) = lookup(name) else {
            return Err(usage_error(format!(
                "flag provided but not defined: {typed}"
            )));
        };
        let value = match (flag.kind, attached) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(value)) => match crate::go::parse_bool(value) {
                Some(b) => b.to_string(),
                None => {
                    return Err(usage_error(format!(
                        "invalid boolean value {value:?} for flag {typed}: parse error"
                    )));
                }
            },
            (_, Some(value)) => value.to_string(),
            (_, None) => match rest.next() {
                Some(value) => value.clone(),
                None => return Err(usage_error(format!("flag needs an argument: {typed}"))),
            },
        };
        let item = Given {
            setting: flag.setting,
            value,
            source: Source::Flag(typed),
        };
        if flag.kind == Kind::Number && parse_u64(&item.value).is_none() {
            return Err(item.invalid("parse error"));
        }
        given.push(item);
    }
    Ok(Some(given))
}

pub(super) fn unexpected(arg: &str) -> ConfigError {
    usage_error(format!(
        "unexpected argument {arg:?}: etcd takes only flags"
    ))
}

/// The chosen value of every setting group that was given.
pub(super) struct Settings {
    pub(super) map: BTreeMap<Setting, Given>,
}

impl Settings {
    pub(super) fn get(&self, group: Setting) -> Option<&Given> {
        self.map.get(&group)
    }

    /// The value when given and not blank.
    pub(super) fn text(&self, group: Setting) -> Option<&Given> {
        self.get(group).filter(|g| !g.value.trim().is_empty())
    }

    pub(super) fn path(&self, group: Setting) -> Option<PathBuf> {
        self.text(group).map(|g| PathBuf::from(&g.value))
    }

    pub(super) fn flag(&self, group: Setting) -> bool {
        self.get(group).is_some_and(|g| truthy(&g.value))
    }

    pub(super) fn number<T: TryFrom<u64>>(
        &self,
        group: Setting,
        default: T,
        min: u64,
    ) -> Result<T, ConfigError> {
        let Some(g) = self.get(group) else {
            return Ok(default);
        };
        let n = parse_u64(&g.value).ok_or_else(|| g.invalid("parse error"))?;
        if n < min {
            return Err(g.invalid(&format!("must be at least {min}")));
        }
        T::try_from(n).map_err(|_| g.invalid("value out of range"))
    }
}
