//! Prints commands and replies the way `redis-cli` users expect to read them.
use redis::Value;

/// `SET greeting "hello, tern"`: arguments with spaces, quotes or non-printables are quoted.
pub fn command_line(args: &[&str]) -> String {
    args.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '\\');
            if plain {
                (*arg).to_owned()
            } else {
                format!("{arg:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One-line rendering of a reply: `OK`, `(integer) 3`, `"abc"`, `(nil)`, `["a", (nil)]`.
pub fn reply(value: &Value) -> String {
    match value {
        Value::Nil => "(nil)".to_owned(),
        Value::Okay => "OK".to_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => format!("(integer) {n}"),
        Value::BulkString(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        Value::Array(items) | Value::Set(items) => {
            if items.is_empty() {
                "(empty array)".to_owned()
            } else {
                let inner: Vec<String> = items.iter().map(reply).collect();
                format!("[{}]", inner.join(", "))
            }
        }
        Value::ServerError(err) => format!("(error) {err}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_commands_like_redis_cli() {
        let cases: &[(&[&str], &str)] = &[
            (&["GET", "k"], "GET k"),
            (
                &["SET", "greeting", "hello, tern"],
                r#"SET greeting "hello, tern""#,
            ),
            (&["SET", "k", ""], r#"SET k """#),
            (&["SET", "k", "say \"hi\""], r#"SET k "say \"hi\"""#),
        ];
        for (args, want) in cases {
            assert_eq!(command_line(args), *want, "args {args:?}");
        }
    }

    #[test]
    fn renders_replies_on_one_line() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::Okay, "OK"),
            (Value::Nil, "(nil)"),
            (Value::Int(-3), "(integer) -3"),
            (Value::BulkString(b"hi".to_vec()), r#""hi""#),
            (Value::Array(vec![]), "(empty array)"),
            (
                Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Nil]),
                r#"["a", (nil)]"#,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(reply(&value), want);
        }
    }
}
