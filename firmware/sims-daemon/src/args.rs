//! The daemons' option reader: the command line one word at a time, with
//! `--name=value` taken apart and values parsed with a clear error.

use std::process::ExitCode;
use std::str::FromStr;

/// A bad command line: the reason and the usage on stderr, exit status 2.
pub fn usage_error(program: &str, reason: &str, usage: &str) -> ExitCode {
    eprintln!("{program}: {reason}\n\n{usage}");
    ExitCode::from(2)
}

/// The exit status of a daemon's run: failure, logged, if it ended on an
/// error.
pub fn exit_status(run: Result<(), String>) -> ExitCode {
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line after the program name, one word at a time, with
/// `--name=value` taken apart.
pub struct Args {
    words: std::vec::IntoIter<String>,
    /// The value of the last `--name=value`, until taken.
    inline: Option<(String, String)>,
}

impl Args {
    pub fn from_env() -> Args {
        Args::new(std::env::args().skip(1).collect())
    }

    pub fn new(words: Vec<String>) -> Args {
        Args {
            words: words.into_iter(),
            inline: None,
        }
    }

    /// The words of `line` split at whitespace (the daemons' tests).
    pub fn from_line(line: &str) -> Args {
        Args::new(line.split_whitespace().map(String::from).collect())
    }

    /// The next option or word. Err if the previous option was a switch
    /// given a value (`--json=yes`).
    pub fn next_word(&mut self) -> Result<Option<String>, String> {
        if let Some((name, _)) = self.inline.take() {
            return Err(format!("{name} takes no value"));
        }
        let Some(w) = self.words.next() else {
            return Ok(None);
        };
        if let Some((name, value)) = w.strip_prefix("--").and_then(|r| r.split_once('=')) {
            let name = format!("--{name}");
            self.inline = Some((name.clone(), value.to_string()));
            return Ok(Some(name));
        }
        Ok(Some(w))
    }

    /// The value of option `name` (just returned by `next_word`).
    pub fn value<T: FromStr>(&mut self, name: &str) -> Result<T, String> {
        let v = match self.inline.take() {
            Some((_, v)) => v,
            None => self
                .words
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        v.parse()
            .map_err(|_| format!("{name}: '{v}' is not a valid value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn options_with_separate_and_inline_values() {
        let mut a = words("-c /etc/x --state-dir=/run/s status --json");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("-c"));
        assert_eq!(a.value::<String>("-c").unwrap(), "/etc/x");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("--state-dir"));
        assert_eq!(a.value::<String>("--state-dir").unwrap(), "/run/s");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("status"));
        assert_eq!(a.next_word().unwrap().as_deref(), Some("--json"));
        assert_eq!(a.next_word().unwrap(), None);
    }

    #[test]
    fn bad_values_and_switch_values_are_errors() {
        let mut a = words("--port nope");
        a.next_word().unwrap();
        assert_eq!(
            a.value::<u16>("--port").unwrap_err(),
            "--port: 'nope' is not a valid value"
        );
        let mut a = words("--port");
        a.next_word().unwrap();
        assert_eq!(
            a.value::<u16>("--port").unwrap_err(),
            "--port needs a value"
        );
        let mut a = words("--json=yes");
        a.next_word().unwrap();
        assert_eq!(a.next_word().unwrap_err(), "--json takes no value");
    }
}
