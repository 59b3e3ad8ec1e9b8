//! The one option parser of xtask: `--switch`, `--name value`,
//! `--name=value` (a name may repeat: `--target a --target b`), and
//! everything after `--` passed through untouched (libtest arguments).
//! Anything else is an error that names it.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct Opts {
    switches: BTreeSet<String>,
    values: Vec<(String, String)>,
    /// What followed `--`.
    pub rest: Vec<String>,
}

/// Parses `args` knowing these switches and value options.
pub fn parse(args: &[String], switches: &[&str], values: &[&str]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            o.rest = it.cloned().collect();
            break;
        }
        if switches.contains(&a.as_str()) {
            o.switches.insert(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if !values.contains(&name) {
            return Err(format!("unknown option {a}"));
        }
        let v = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        o.values.push((name.to_string(), v));
    }
    Ok(o)
}

impl Opts {
    pub fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    /// The last value given for `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `name`, in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `name`'s value as a number, or `default` if not given.
    pub fn num(&self, name: &str, default: u64) -> Result<u64, String> {
        self.value(name).map_or(Ok(default), |v| num(name, v))
    }

    /// The router targets named: every `--target <t>`, and `--all` (kept
    /// as the word `--all`, which selects every board).
    pub fn targets(&self) -> Vec<String> {
        let mut v = self.values("--target");
        if self.has("--all") {
            v.push("--all".into());
        }
        v
    }

    /// Whether anything but the router-target options was given.
    pub fn first_besides_targets(&self) -> Option<String> {
        self.switches
            .iter()
            .find(|s| *s != "--all")
            .cloned()
            .or_else(|| {
                self.values
                    .iter()
                    .find(|(n, _)| n != "--target")
                    .map(|(n, _)| n.clone())
            })
    }
}

/// `v` as a number; the error names the option.
pub fn num(name: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{name} needs a number, not {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn switches_values_and_passthrough() {
        let o = parse(
            &args(&[
                "--moves",
                "3",
                "--debug",
                "--delays=0,5",
                "--target",
                "a",
                "--target=b",
                "--",
                "--exact",
                "x",
            ]),
            &["--debug", "--all"],
            &["--moves", "--delays", "--target"],
        )
        .unwrap();
        assert!(o.has("--debug"));
        assert!(!o.has("--all"));
        assert_eq!(o.num("--moves", 10).unwrap(), 3);
        assert_eq!(o.num("--pairs", 8).unwrap(), 8);
        assert_eq!(o.value("--delays"), Some("0,5"));
        assert_eq!(o.targets(), ["a", "b"]);
        assert_eq!(o.rest, ["--exact", "x"]);
        assert_eq!(o.first_besides_targets().as_deref(), Some("--debug"));
    }

    #[test]
    fn errors_name_the_option() {
        let e = parse(&args(&["--moves"]), &[], &["--moves"]).unwrap_err();
        assert_eq!(e, "--moves needs a value");
        let e = parse(&args(&["--nope"]), &["--debug"], &["--moves"]).unwrap_err();
        assert_eq!(e, "unknown option --nope");
        let e = parse(&args(&["--debug=1"]), &["--debug"], &[]).unwrap_err();
        assert_eq!(e, "unknown option --debug=1");
        let o = parse(&args(&["--moves", "x"]), &[], &["--moves"]).unwrap();
        assert!(o.num("--moves", 1).is_err());
        let o = parse(&args(&["--all"]), &["--all"], &["--target"]).unwrap();
        assert_eq!(o.targets(), ["--all"]);
        assert_eq!(o.first_besides_targets(), None);
    }
}
