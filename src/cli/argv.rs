//! drbdadm's argument conventions, mapped onto clap's.
//!
//! drbdadm passes options meant for drbdsetup after a `--`, *before* the command:
//! `drbdadm -- --discard-my-data connect optzimbra` (this is how the seed writes it). It also
//! accepts them right after the command. clap understands only the second form, so we move
//! every option that stands between a `--` (or the program name) and the command word to just
//! after the command word. Nothing else is reordered.

use std::ffi::{OsStr, OsString};

/// Global options that take a value in the following argument (`-c FILE`, `--node NAME`).
const GLOBAL_WITH_VALUE: &[&str] = &["-c", "--config", "--node"];
/// Global options without a value.
const GLOBAL_FLAGS: &[&str] = &[
    "-d",
    "--dry-run",
    "-v",
    "--verbose",
    "-h",
    "--help",
    "-V",
    "--version",
];

/// Rewrites drbdadm-style argv into the order clap parses.
///
/// Global options (`-c FILE`, `-d`, `--node NAME`, ...) stay before the command. Any other
/// option found before the command (with or without the `--` separator) is a command option and
/// moves behind the command word. A `--` that appears *after* the command is left alone.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let mut iter = args.into_iter();
    let mut out: Vec<OsString> = iter.next().into_iter().collect();
    let mut moved: Vec<OsString> = Vec::new();
    let mut rest = iter.peekable();
    while let Some(arg) = rest.next() {
        let s = arg.to_string_lossy();
        if s == "--" {
            continue; // drbdadm's separator before drbdsetup options
        }
        if GLOBAL_WITH_VALUE.contains(&s.as_ref()) {
            out.push(arg);
            if let Some(value) = rest.next() {
                out.push(value);
            }
            continue;
        }
        if is_global_inline(&s) || GLOBAL_FLAGS.contains(&s.as_ref()) {
            out.push(arg);
            continue;
        }
        if s.starts_with('-') && s.len() > 1 {
            moved.push(arg);
            continue;
        }
        // The command word: put the moved options right after it, then everything else as is.
        out.push(arg);
        out.append(&mut moved);
        out.extend(rest);
        return out;
    }
    // No command word: leave the options where clap will report them.
    out.append(&mut moved);
    out
}

fn is_global_inline(s: &str) -> bool {
    s.starts_with("--config=")
        || s.starts_with("--node=")
        || (s.starts_with("-c") && s.len() > 2 && !s.starts_with("--"))
}

/// Convenience for tests and callers holding `&str`s.
pub fn normalize_strs<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    normalize(args.iter().map(|a| a.as_ref().to_os_string()).collect())
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::normalize_strs as n;

    #[test]
    fn seed_form_moves_option_behind_command() {
        assert_eq!(
            n(&["urbdadm", "--", "--discard-my-data", "connect", "optzimbra"]),
            ["urbdadm", "connect", "--discard-my-data", "optzimbra"]
        );
    }

    #[test]
    fn option_before_command_without_separator() {
        assert_eq!(
            n(&["urbdadm", "--discard-my-data", "connect", "optzimbra"]),
            ["urbdadm", "connect", "--discard-my-data", "optzimbra"]
        );
    }

    #[test]
    fn option_after_command_is_untouched() {
        assert_eq!(
            n(&["urbdadm", "connect", "--discard-my-data", "optzimbra"]),
            ["urbdadm", "connect", "--discard-my-data", "optzimbra"]
        );
    }

    #[test]
    fn globals_stay_in_front() {
        assert_eq!(
            n(&[
                "urbdadm",
                "-c",
                "/etc/x.conf",
                "-d",
                "--",
                "--force",
                "primary",
                "r0"
            ]),
            [
                "urbdadm",
                "-c",
                "/etc/x.conf",
                "-d",
                "primary",
                "--force",
                "r0"
            ]
        );
        assert_eq!(
            n(&["urbdadm", "--node=beta", "-c/x", "--force", "primary", "r0"]),
            ["urbdadm", "--node=beta", "-c/x", "primary", "--force", "r0"]
        );
    }

    #[test]
    fn separator_after_command_is_kept() {
        assert_eq!(
            n(&["urbdadm", "dump", "--", "-x"]),
            ["urbdadm", "dump", "--", "-x"]
        );
    }

    #[test]
    fn no_command() {
        assert_eq!(n(&["urbdadm", "--", "--force"]), ["urbdadm", "--force"]);
        assert_eq!(n::<&str>(&[]), Vec::<String>::new());
    }
}
