//! The TOML subset that `board-configs/*.toml` and `Cross.toml` use, parsed
//! by hand so that xtask needs no TOML crate: `[dotted.table]` headers,
//! `key = value` with values a basic string ("..." with `\"`, `\\`, `\n`,
//! `\t` escapes), `true`/`false`, a decimal integer, or an array of those
//! (it may span lines); `#` comments. Anything else is an error with its
//! line number, never silently skipped.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One `key = value` line: the table it is in ("" for the root), its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub table: String,
    pub key: String,
    pub value: Value,
    pub line: usize,
}

pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    let mut table = String::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let mut line = strip_comment(lines[i]).trim().to_string();
        i += 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {lineno}: unterminated table header"))?
                .trim();
            if name.is_empty() || name.starts_with('[') || !name.split('.').all(is_bare_key) {
                return Err(format!("line {lineno}: unsupported table header [{name}]"));
            }
            table = name.to_string();
            continue;
        }
        let (key, _) = line
            .split_once('=')
            .ok_or_else(|| format!("line {lineno}: expected `key = value`"))?;
        let key = key.trim().to_string();
        if !is_bare_key(&key) {
            return Err(format!("line {lineno}: unsupported key `{key}`"));
        }
        // An array may continue over the following lines until its `]`.
        while unbalanced(&line) {
            let Some(next) = lines.get(i) else {
                return Err(format!("line {lineno}: unterminated array"));
            };
            line.push(' ');
            line.push_str(strip_comment(next).trim());
            i += 1;
        }
        let raw = line.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
        let (value, rest) = parse_value(raw).map_err(|e| format!("line {lineno}: {e}"))?;
        if !rest.trim().is_empty() {
            return Err(format!("line {lineno}: trailing `{}`", rest.trim()));
        }
        if out.iter().any(|e| e.table == table && e.key == key) {
            return Err(format!("line {lineno}: duplicate key `{key}`"));
        }
        out.push(Entry {
            table: table.clone(),
            key,
            value,
            line: lineno,
        });
    }
    Ok(out)
}

fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Cuts a `#` comment that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

/// More `[` than `]` outside strings: an array continues on the next line.
fn unbalanced(line: &str) -> bool {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth > 0
}

fn parse_value(s: &str) -> Result<(Value, &str), String> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((Value::Str(out), &rest[i + 1..])),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => return Err(format!("unsupported escape \\{other:?}")),
                },
                c => out.push(c),
            }
        }
        return Err("unterminated string".into());
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(']') {
                return Ok((Value::Array(items), r));
            }
            let (v, r) = parse_value(rest)?;
            items.push(v);
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with(']') {
                return Err("expected `,` or `]` in array".into());
            }
        }
    }
    let end = s
        .find(|c: char| c == ',' || c == ']' || c.is_whitespace())
        .unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    match word {
        "true" => Ok((Value::Bool(true), rest)),
        "false" => Ok((Value::Bool(false), rest)),
        _ => word
            .parse::<i64>()
            .map(|n| (Value::Int(n), rest))
            .map_err(|_| format!("unsupported value `{word}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset() {
        let t = r#"
# comment
name = "a # not a comment" # comment
flag = true
n = -3
list = ["x", "y\"z"]
multi = [
    "one",  # first
    "two",
]

[target.mips-unknown-linux-musl]
build-std = true
[target.x.env]
passthrough = []
"#;
        let e = parse(t).unwrap();
        let get = |table: &str, key: &str| {
            e.iter()
                .find(|x| x.table == table && x.key == key)
                .map(|x| x.value.clone())
        };
        assert_eq!(
            get("", "name"),
            Some(Value::Str("a # not a comment".into()))
        );
        assert_eq!(get("", "flag"), Some(Value::Bool(true)));
        assert_eq!(get("", "n"), Some(Value::Int(-3)));
        assert_eq!(
            get("", "list"),
            Some(Value::Array(vec![
                Value::Str("x".into()),
                Value::Str("y\"z".into())
            ]))
        );
        assert_eq!(
            get("", "multi"),
            Some(Value::Array(vec![
                Value::Str("one".into()),
                Value::Str("two".into())
            ]))
        );
        assert_eq!(
            get("target.mips-unknown-linux-musl", "build-std"),
            Some(Value::Bool(true))
        );
        assert_eq!(
            get("target.x.env", "passthrough"),
            Some(Value::Array(vec![]))
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (t, line) in [
            ("a = 1\nb = \"x", "line 2"),
            ("a = 1\nb = nope", "line 2"),
            ("[[array.of.tables]]", "line 1"),
            ("a = 1\na = 2", "line 2"),
            ("a = [\"x\"", "line 1"),
            ("a = 1 2", "line 1"),
            ("x.y = 1", "line 1"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.starts_with(line), "{t:?}: {e}");
        }
    }
}
