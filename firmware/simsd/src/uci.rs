//! UCI files read the way libuci (openwrt/uci, `file.c` and `list.c`)
//! reads them, without libuci: so that simsd takes from `/etc/config/sims`
//! exactly what `uci show sims` and LuCI show the operator. config.rs then
//! gives the sections their meaning.
//!
//! As libuci: a command per line (`config`, `option`, `list`, `package`,
//! or their first letters); words separated by blanks; `'…'` literal,
//! `"…"` and unquoted text with backslash escapes, a backslash before the
//! end of a line joining the next line; quoted text may span lines;
//! adjacent quoted and unquoted parts make one word; `#` outside quotes
//! ends the line, even inside a word. A named section declared again is
//! the same section (another type is an error); `option` sets a value
//! (an empty value changes nothing), `list` adds one (turning an option
//! into a list). Names are letters, digits and `_`; types printable.
//!
//! One deliberate difference: `;` outside quotes (libuci's command
//! separator, whose effect there depends on the quoting before it) is
//! refused, with its line.

/// A section as libuci holds it after reading the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    /// None for an anonymous section.
    pub name: Option<String>,
    /// Where it was first declared.
    pub line: usize,
    pub options: Vec<Opt>,
}

/// An option or a list, its values with the line each came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Opt {
    pub key: String,
    pub values: Vec<(String, usize)>,
    pub list: bool,
}

/// A reading error: the line and the reason.
pub type Error = (usize, String);

/// The words of one command and the line it starts on.
struct Command {
    words: Vec<String>,
    line: usize,
}

/// Splits `text` into commands.
fn commands(text: &str) -> Result<Vec<Command>, Error> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut start = 1;
    // Ends the current word; the current command.
    macro_rules! end_word {
        () => {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
        };
    }
    macro_rules! end_command {
        () => {{
            end_word!();
            if !words.is_empty() {
                out.push(Command {
                    words: std::mem::take(&mut words),
                    line: start,
                });
            }
        }};
    }
    while let Some(c) = chars.next() {
        if words.is_empty() && !in_word {
            start = line;
        }
        match c {
            '\'' => {
                in_word = true;
                let from = line;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => {
                            if x == '\n' {
                                line += 1;
                            }
                            word.push(x);
                        }
                        None => return Err((from, "unterminated '".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                let from = line;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => line += 1,
                            Some(x) => word.push(x),
                            None => return Err((from, "unterminated \"".into())),
                        },
                        Some(x) => {
                            if x == '\n' {
                                line += 1;
                            }
                            word.push(x);
                        }
                        None => return Err((from, "unterminated \"".into())),
                    }
                }
            }
            '\\' => match chars.next() {
                // A backslash before the end of a line joins the next.
                Some('\n') => line += 1,
                Some('\r') if chars.peek() == Some(&'\n') => {
                    chars.next();
                    line += 1;
                }
                Some(x) => {
                    in_word = true;
                    word.push(x);
                }
                None => {}
            },
            '#' => {
                // The rest of the line is a comment, even inside a word.
                while chars.peek().is_some_and(|&x| x != '\n') {
                    chars.next();
                }
            }
            ';' => {
                return Err((
                    line,
                    "';' outside quotes: write one command per line".into(),
                ))
            }
            '\n' => {
                end_command!();
                line += 1;
            }
            c if c.is_whitespace() => end_word!(),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if !words.is_empty() {
        out.push(Command { words, line: start });
    }
    Ok(out)
}

/// A section or option name: letters, digits, `_`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A section type: printable, no blanks.
fn is_type(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b))
}

/// Reads a UCI file into its sections, as libuci would hold them.
pub fn parse(text: &str) -> Result<Vec<Section>, Error> {
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    for Command { words, line } in commands(text)? {
        let cmd = words[0].as_str();
        let args = &words[1..];
        let arity = |min: usize, max: usize| -> Result<(), Error> {
            if args.len() < min
                || args
                    .get(..min)
                    .is_some_and(|a| a.iter().any(String::is_empty))
            {
                Err((line, "insufficient arguments".into()))
            } else if args.len() > max {
                Err((line, "too many arguments".into()))
            } else {
                Ok(())
            }
        };
        match cmd {
            "package" | "p" => {
                arity(1, 1)?;
                if !args[0]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err((line, "invalid character in name field".into()));
                }
            }
            "config" | "c" => {
                arity(1, 2)?;
                let kind = &args[0];
                if !is_type(kind) {
                    return Err((line, "invalid character in type field".into()));
                }
                let name = args.get(1).filter(|n| !n.is_empty());
                if let Some(n) = name {
                    if !is_name(n) {
                        return Err((line, "invalid character in name field".into()));
                    }
                }
                let same = name.and_then(|n| {
                    sections
                        .iter()
                        .position(|s| s.name.as_deref() == Some(n.as_str()))
                });
                current = Some(match same {
                    Some(i) if sections[i].kind != *kind => {
                        return Err((
                            line,
                            format!(
                                "section '{}' declared again with another type (line {})",
                                sections[i].name.as_deref().unwrap_or_default(),
                                sections[i].line
                            ),
                        ))
                    }
                    Some(i) => i,
                    None => {
                        sections.push(Section {
                            kind: kind.clone(),
                            name: name.cloned(),
                            line,
                            options: Vec::new(),
                        });
                        sections.len() - 1
                    }
                });
            }
            "option" | "o" | "list" | "l" => {
                let Some(cur) = current else {
                    return Err((line, format!("{cmd} before the first config section")));
                };
                arity(1, 2)?;
                let key = &args[0];
                if !is_name(key) {
                    return Err((line, "invalid character in name field".into()));
                }
                let value = args.get(1).cloned().unwrap_or_default();
                let list = cmd.starts_with('l');
                let opts = &mut sections[cur].options;
                let at = opts.iter().position(|o| &o.key == key);
                match (list, at) {
                    // An empty option value changes nothing (libuci's set).
                    (false, _) if value.is_empty() => {}
                    (false, Some(i)) => {
                        opts[i].values = vec![(value, line)];
                        opts[i].list = false;
                    }
                    (true, Some(i)) => {
                        opts[i].values.push((value, line));
                        opts[i].list = true;
                    }
                    (_, None) => opts.push(Opt {
                        key: key.clone(),
                        values: vec![(value, line)],
                        list,
                    }),
                }
            }
            _ => return Err((line, format!("unknown keyword '{cmd}'"))),
        }
    }
    Ok(sections)
}

/// `uci show <package>` of what [`parse`] read: one `key=value` line per
/// section and option, anonymous sections as `@type[i]`, values quoted
/// as uci quotes them. (For the tests that hold simsd to libuci.)
pub fn show(sections: &[Section], package: &str) -> Vec<String> {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in sections {
        let index = seen.iter().filter(|k| **k == s.kind).count();
        seen.push(&s.kind);
        let id = match &s.name {
            Some(n) => n.clone(),
            None => format!("@{}[{index}]", s.kind),
        };
        out.push(format!("{package}.{id}={}", s.kind));
        for o in &s.options {
            let vals: Vec<String> = o.values.iter().map(|(v, _)| quote(v)).collect();
            out.push(format!("{package}.{id}.{}={}", o.key, vals.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show_of(text: &str) -> Result<Vec<String>, Error> {
        parse(text).map(|s| show(&s, "sims"))
    }

    #[test]
    fn reads_as_libuci() {
        let t = "package sims\nconfig agent 'a' # c\n\toption x \"a\\\"b\"\n\toption y a\\ b#c\n\
                 \tlist z 1\n\tlist z ''\n\toption w 'multi\nline'\nconfig peer\n\toption k 'v'\"w\"x\n\
                 config agent 'a'\n\toption v ''\n\toption x 2\nconfig peer\n";
        assert_eq!(
            show_of(t).unwrap(),
            [
                "sims.a=agent",
                "sims.a.x='2'",
                "sims.a.y='a b'",
                "sims.a.z='1' ''",
                "sims.a.w='multi\nline'",
                "sims.@peer[0]=peer",
                "sims.@peer[0].k='vwx'",
                "sims.@peer[1]=peer",
            ]
        );
        // An option becomes a list in place; an option replaces a list.
        let t = "config a 'x'\n option p 1\n option q 1\n list p 2\n list q 3\n option q 9\n";
        assert_eq!(
            show_of(t).unwrap(),
            ["sims.x=a", "sims.x.p='1' '2'", "sims.x.q='9'"]
        );
        assert_eq!(
            show_of("c agent\n o x \"it's\"\n").unwrap()[1],
            "sims.@agent[0].x='it'\\''s'"
        );
    }

    #[test]
    fn refuses_what_libuci_refuses_with_the_line() {
        for (t, line, why) in [
            ("config agent 'a'\n option x 'ab\n", 2, "unterminated '"),
            ("config agent 'a'\n option x a b\n", 2, "too many arguments"),
            ("option x 1\n", 1, "before the first config section"),
            ("config agent 'a' extra\n", 1, "too many arguments"),
            ("config agent 'a-b'\n", 1, "invalid character in name field"),
            (
                "config agent 'a'\n option x-y 1\n",
                2,
                "invalid character in name field",
            ),
            ("bogus\n", 1, "unknown keyword 'bogus'"),
            ("config\n", 1, "insufficient arguments"),
            (
                "config agent 'a'\n option '' 1\n",
                2,
                "insufficient arguments",
            ),
            (
                "config agent 'a'\nconfig peer 'a'\n",
                2,
                "another type (line 1)",
            ),
            (
                "config agent 'a'\n option x 1; option y 2\n",
                2,
                "';' outside quotes",
            ),
        ] {
            let e = parse(t).unwrap_err();
            assert_eq!(e.0, line, "{t:?}: {e:?}");
            assert!(e.1.contains(why), "{t:?}: {e:?}");
        }
    }
}
