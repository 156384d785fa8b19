//! Key paths: how a key from a URL becomes the canonical path the tree is keyed by.
//!
//! etcd keys are POSIX-style absolute paths. Every key is cleaned before it reaches the tree:
//! a leading `/` is added, repeated slashes collapse, `.` and `..` are resolved (never above
//! the root) and a trailing slash is dropped, so `/foo/`, `foo` and `/a/../foo` all name
//! `/foo`. The root is `/`.
//!
//! A segment that starts with `_` is *hidden*: v2 listings omit it, and a watcher on an
//! ancestor is not told about changes below it. Hidden nodes are still readable, writable and
//! watchable by their exact path.

/// Clean a key into its canonical absolute form (`/` for the root).
pub fn clean(key: &str) -> String {
    if is_clean(key) {
        return key.to_string();
    }
    resolve(key)
}

/// [`clean`] done the long way: split, drop the empty and `.` segments, resolve `..`.
fn resolve(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(key.len() + 1);
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// Is `key` already in its clean form: `/`, or `/` and segments none of which is empty,
/// `.` or `..`? (Almost every key a client sends is.)
fn is_clean(key: &str) -> bool {
    match key.strip_prefix('/') {
        Some("") => true,
        Some(rest) => rest.split('/').all(|seg| !matches!(seg, "" | "." | "..")),
        None => false,
    }
}

/// The segments of a clean path (`/a/b` -> `["a", "b"]`, `/` -> `[]`).
pub fn segments(clean_path: &str) -> impl Iterator<Item = &str> {
    clean_path.split('/').filter(|s| !s.is_empty())
}

/// Join a clean directory path and a child name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Split a clean path into (parent, last segment). The root has no parent.
pub fn split(clean_path: &str) -> Option<(&str, &str)> {
    if clean_path == "/" {
        return None;
    }
    let pos = clean_path.rfind('/')?;
    let parent = if pos == 0 { "/" } else { &clean_path[..pos] };
    Some((parent, &clean_path[pos + 1..]))
}

/// The path itself and every ancestor, root first: `/a/b` -> `/`, `/a`, `/a/b`.
pub fn ancestors_and_self(clean_path: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut cur = String::new();
    for seg in segments(clean_path) {
        cur.push('/');
        cur.push_str(seg);
        out.push(cur.clone());
    }
    out
}

/// Is `path` equal to `prefix` or below it on a segment boundary?
/// (`/foo` covers `/foo` and `/foo/x`, not `/foobar`; `/` covers everything.)
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Is this node's own name hidden (starts with `_`)?
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('_')
}

/// Does the part of `key` below `watch` contain a hidden segment? Used to keep watchers on
/// an ancestor from seeing changes to hidden keys (etcd's `isHidden`). When `watch` is deeper
/// than `key` (a directory delete reaching a watcher below it) nothing is hidden.
pub fn hidden_below(watch: &str, key: &str) -> bool {
    if watch.len() > key.len() || !is_under(key, watch) {
        return false;
    }
    let rest = if watch == "/" {
        key
    } else {
        &key[watch.len()..]
    };
    segments(rest).any(is_hidden_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_normalises() {
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("foo"), "/foo");
        assert_eq!(clean("/foo/"), "/foo");
        assert_eq!(clean("//foo///bar//"), "/foo/bar");
        assert_eq!(clean("/a/./b/../c"), "/a/c");
        assert_eq!(clean("/../../x"), "/x");
        assert_eq!(clean("/a b/é"), "/a b/é");
    }

    #[test]
    fn a_key_taken_as_clean_is_one_resolving_would_leave_alone() {
        // Every string of up to 7 characters from `/`, `.`, `a`.
        let mut keys = vec![String::new()];
        let mut level = keys.clone();
        for _ in 0..7 {
            level = level
                .iter()
                .flat_map(|k| ["/", ".", "a"].map(|c| format!("{k}{c}")))
                .collect();
            keys.extend(level.iter().cloned());
        }
        for k in &keys {
            assert_eq!(is_clean(k), resolve(k) == *k, "{k:?}");
            assert_eq!(clean(k), resolve(k), "{k:?}");
        }
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(ancestors_and_self("/a/b"), vec!["/", "/a", "/a/b"]);
        assert_eq!(ancestors_and_self("/"), vec!["/"]);
    }

    #[test]
    fn under_is_segment_based() {
        assert!(is_under("/foo", "/foo"));
        assert!(is_under("/foo/x", "/foo"));
        assert!(!is_under("/foobar", "/foo"));
        assert!(is_under("/anything", "/"));
    }

    #[test]
    fn hidden_segments_below_the_watch() {
        assert!(hidden_below("/", "/_etcd/machines/a"));
        assert!(hidden_below("/a", "/a/_b/c"));
        assert!(!hidden_below("/a/_b", "/a/_b/c"));
        assert!(!hidden_below("/_a", "/_a"));
        assert!(!hidden_below("/a/b/c", "/a"));
    }
}
