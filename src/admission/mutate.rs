//! The fixed object as an RFC 6902 JSON Patch against the object the API server sent.
//!
//! The core fixes the object (the same planner, guards and passes as `kubeharden fix`); this
//! only says what changed. Fixes add keys, replace scalars and remove keys or list entries, so
//! the patch is small: `add`/`remove` for keys, recursion into mappings and equally long
//! lists, and a `replace` of a list whose length changed (an index-wise patch of a shortened
//! list would depend on the order of its removals).

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// The operations that turn `from` into `to`; empty when they are equal.
pub fn diff(from: &Value, to: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    walk(from, to, &mut String::new(), &mut ops);
    ops
}

fn walk(from: &Value, to: &Value, path: &mut String, ops: &mut Vec<Op>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                let len = path.len();
                push_token(path, key);
                match b.get(key) {
                    Some(new) => walk(old, new, path, ops),
                    None => ops.push(Op::Remove { path: path.clone() }),
                }
                path.truncate(len);
            }
            for (key, new) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                let len = path.len();
                push_token(path, key);
                ops.push(Op::Add {
                    path: path.clone(),
                    value: new.clone(),
                });
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                push_token(path, &i.to_string());
                walk(old, new, path, ops);
                path.truncate(len);
            }
        }
        _ => ops.push(Op::Replace {
            path: path.clone(),
            value: to.clone(),
        }),
    }
}

/// A JSON Pointer reference token (RFC 6901): `~` and `/` escaped.
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        let from = json!({"metadata": {"annotations": {}}});
        let to = json!({"metadata": {"annotations": {"a/b~c": "x"}}});
        assert_eq!(
            diff(&from, &to),
            vec![Op::Add {
                path: "/metadata/annotations/a~1b~0c".into(),
                value: json!("x")
            }]
        );
    }

    #[test]
    fn a_shortened_list_is_replaced_whole() {
        let from = json!({"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]});
        let to = json!({"add": ["CHOWN"]});
        assert_eq!(
            diff(&from, &to),
            vec![Op::Replace {
                path: "/add".into(),
                value: json!(["CHOWN"])
            }]
        );
    }

    #[test]
    fn equal_values_give_no_operation() {
        let v = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(diff(&v, &v).is_empty());
    }
}
