//! Tokens of the drbd.conf language, split the way drbd-utils' flex scanner
//! (`user/v84/drbdadm_scanner.fl`) splits them.
//!
//! The scanner takes the longest match at every position; between matches of equal length
//! the earlier rule wins, in this order: keywords, IPv4 address, IPv6 address, number,
//! quoted string, word. So `10.0.0.1` is an address, `123` and `10M` are numbers, `10k`
//! is a word (the number rule only knows the suffixes `M K G s`), and `fd00::1` is an
//! IPv6 address. Keywords are words that equal a reserved word; whether a reserved word
//! may stand where a name is expected is the parser's business ([`is_reserved`]).

use super::error::{ConfigError, Location};
use super::limits::{MAX_QUOTED_LEN, MAX_TOKENS, MAX_WORD_LEN};

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// One of `{ } ; [ ] :`.
    Punct(char),
    /// `[a-zA-Z0-9/._-]{1,128}` that is not a number or an address; may be a reserved word.
    Word(String),
    /// A double-quoted string, already unescaped.
    Quoted(String),
    /// `[0-9]{1,8}[MKGs]?`.
    Number(String),
    /// A dotted IPv4 address.
    Ipv4(String),
    /// An IPv6 address (with optional `%zone`).
    Ipv6(String),
    /// Any other single character.
    Other(char),
    /// End of the file.
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub line: u32,
    pub col: u32,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Punct(c) | TokenKind::Other(c) => format!("'{c}'"),
            TokenKind::Word(w) => format!("'{w}'"),
            TokenKind::Quoted(s) => format!("\"{}\"", short(s)),
            TokenKind::Number(n) => format!("number '{n}'"),
            TokenKind::Ipv4(a) | TokenKind::Ipv6(a) => format!("address '{a}'"),
            TokenKind::Eof => "end of file".to_string(),
        }
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 20 {
        let mut t: String = s.chars().take(20).collect();
        t.push_str("...");
        t
    } else {
        s.to_string()
    }
}

/// The reserved words of drbd-utils 8.4's scanner. A reserved word is never a name
/// (resource, host, path) unless it is quoted.
const RESERVED: &[&str] = &[
    "on",
    "ignore-on",
    "stacked-on-top-of",
    "floating",
    "no",
    "net",
    "yes",
    "ask",
    "skip",
    "disk",
    "proxy",
    "minor",
    "inside",
    "volume",
    "cmd-timeout-short",
    "cmd-timeout-medium",
    "cmd-timeout-long",
    "syncer",
    "device",
    "global",
    "common",
    "options",
    "outside",
    "address",
    "alternate-link-address",
    "startup",
    "include",
    "handlers",
    "minor-count",
    "disable-ip-verification",
    "udev-always-use-vnr",
    "dialog-refresh",
    "resource",
    "meta-disk",
    "flexible-meta-disk",
    "usage-count",
    "_this_host",
    "_remote_host",
    "sci",
    "ssocks",
    "sdp",
    "ipv4",
    "ipv6",
    "size",
    "on-io-error",
    "fencing",
    "max-bio-bvecs",
    "disk-timeout",
    "read-balancing",
    "rs-discard-granularity",
    "disable-write-same",
    "use-bmbv",
    "disk-barrier",
    "disk-flushes",
    "disk-drain",
    "md-flushes",
    "no-disk-barrier",
    "no-disk-flushes",
    "no-disk-drain",
    "no-md-flushes",
    "timeout",
    "protocol",
    "ko-count",
    "ping-int",
    "max-buffers",
    "sndbuf-size",
    "rcvbuf-size",
    "connect-int",
    "cram-hmac-alg",
    "shared-secret",
    "max-epoch-size",
    "after-sb-0pri",
    "after-sb-1pri",
    "after-sb-2pri",
    "rr-conflict",
    "ping-timeout",
    "unplug-watermark",
    "data-integrity-alg",
    "on-congestion",
    "socket-check-timeout",
    "congestion-fill",
    "congestion-extents",
    "allow-two-primaries",
    "always-asbp",
    "no-tcp-cork",
    "tcp-cork",
    "discard-my-data",
    "rate",
    "resync-rate",
    "after",
    "resync-after",
    "verify-alg",
    "csums-alg",
    "csums-after-crash-only",
    "al-extents",
    "al-updates",
    "discard-zeroes-if-aligned",
    "cpu-mask",
    "use-rle",
    "delay-probe-volume",
    "delay-probe-interval",
    "c-plan-ahead",
    "c-delay-target",
    "c-fill-target",
    "c-max-rate",
    "c-min-rate",
    "throttle-threshold",
    "hold-off-threshold",
    "on-no-data-accessible",
    "wfc-timeout",
    "degr-wfc-timeout",
    "outdated-wfc-timeout",
    "stacked-timeouts",
    "become-primary-on",
    "wait-after-sb",
    "pri-on-incon-degr",
    "pri-lost-after-sb",
    "pri-lost",
    "initial-split-brain",
    "split-brain",
    "outdate-peer",
    "fence-peer",
    "unfence-peer",
    "local-io-error",
    "before-resync-target",
    "after-resync-target",
    "before-resync-source",
    "memlimit",
    "read-loops",
    "compression",
    "bwlimit",
    "plugin",
    "out-of-sync",
];

/// Whether `word` is a reserved word of the scanner (and so cannot be an unquoted name).
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-')
}

/// End positions of `[0-9]{1,3}` ... style bounded runs of bytes matching `pred`, for
/// every start position in `starts`.
fn runs(s: &[u8], starts: &[usize], pred: fn(u8) -> bool, min: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for &p in starts {
        let mut n = 0;
        while n < max && p + n < s.len() && pred(s[p + n]) {
            n += 1;
            if n >= min {
                out.push(p + n);
            }
        }
    }
    dedup(out)
}

fn lit(s: &[u8], starts: &[usize], c: u8) -> Vec<usize> {
    dedup(
        starts
            .iter()
            .filter(|&&p| s.get(p) == Some(&c))
            .map(|&p| p + 1)
            .collect(),
    )
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    dedup(a.iter().chain(b).copied().collect())
}

/// A sub-pattern: the end positions reachable from a set of start positions.
type Pattern<'a> = &'a dyn Fn(&[u8], &[usize]) -> Vec<usize>;

/// `x{lo,hi}` over a sub-pattern given as a function of start sets.
fn repeat(s: &[u8], starts: &[usize], lo: usize, hi: usize, f: Pattern<'_>) -> Vec<usize> {
    let mut cur = starts.to_vec();
    let mut acc = if lo == 0 { cur.clone() } else { Vec::new() };
    for i in 1..=hi {
        cur = f(s, &cur);
        if cur.is_empty() {
            break;
        }
        if i >= lo {
            acc = union(&acc, &cur);
        }
    }
    acc
}

fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// `({SNUMB}"."){3}{SNUMB}` with `SNUMB = [0-9]{1,3}`: possible match ends.
fn ipv4_ends(s: &[u8], starts: &[usize]) -> Vec<usize> {
    let group = |s: &[u8], st: &[usize]| lit(s, &runs(s, st, digit, 1, 3), b'.');
    let three = repeat(s, starts, 3, 3, &group);
    runs(s, &three, digit, 1, 3)
}

/// The scanner's IPV6ADDR pattern: possible match ends.
fn ipv6_ends(s: &[u8], start: usize) -> Vec<usize> {
    let st = [start];
    let hex4 = |s: &[u8], st: &[usize]| runs(s, st, hex, 1, 4);
    // (({HEX4}":"){0,5}{HEX4})? ":" {HEX4}? ":" ({HEX4}(":"{HEX4}){0,5})? ("%"{STRING})?
    let head = {
        let reps = repeat(s, &st, 0, 5, &|s, st| lit(s, &hex4(s, st), b':'));
        union(&st, &hex4(s, &reps))
    };
    let c1 = lit(s, &head, b':');
    let mid = union(&c1, &hex4(s, &c1));
    let c2 = lit(s, &mid, b':');
    let tail = {
        let first = hex4(s, &c2);
        let more = repeat(s, &first, 0, 5, &|s, st| hex4(s, &lit(s, st, b':')));
        union(&c2, &more)
    };
    let zone = runs(s, &lit(s, &tail, b'%'), is_word_byte, 1, MAX_WORD_LEN);
    let a = union(&tail, &zone);
    // "::" [fF]{4} ":" {IPV4ADDR}
    let b = {
        let p = lit(s, &lit(s, &st, b':'), b':');
        let f = runs(s, &p, |b| b == b'f' || b == b'F', 4, 4);
        ipv4_ends(s, &lit(s, &f, b':'))
    };
    union(&a, &b)
}

/// Splits one file's text into tokens. Never panics; refuses over-long tokens and more
/// than [`MAX_TOKENS`] tokens.
pub(crate) fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, ConfigError> {
    let s = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0usize;
    let mut line = 1u32;
    let mut line_start = 0usize;
    let col_of = |i: usize, line_start: usize| -> u32 {
        let n = text
            .get(line_start..i)
            .map(|t| t.chars().count())
            .unwrap_or(i - line_start);
        u32::try_from(n + 1).unwrap_or(u32::MAX)
    };
    while i < s.len() {
        let b = s[i];
        match b {
            b'\n' => {
                line = line.saturating_add(1);
                i += 1;
                line_start = i;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        let col = col_of(i, line_start);
        let at = || Location::new(file, line, col);
        if toks.len() >= MAX_TOKENS {
            return Err(ConfigError::Limit {
                at: at(),
                what: "number of tokens",
                limit: MAX_TOKENS as u64,
            });
        }
        if b == b'"' {
            let (kind, end) =
                quoted(s, i).map_err(|message| ConfigError::Lexical { at: at(), message })?;
            toks.push(Token { kind, line, col });
            i = end;
            continue;
        }
        // Longest match among the address, number and word rules.
        let word_end = {
            let mut e = i;
            while e < s.len() && is_word_byte(s[e]) {
                e += 1;
            }
            e
        };
        let ipv4_end = ipv4_ends(s, &[i]).last().copied().unwrap_or(i);
        let ipv6_end = ipv6_ends(s, i).last().copied().unwrap_or(i);
        let num_end = {
            let d = runs(s, &[i], digit, 1, 8).last().copied().unwrap_or(i);
            if d > i && d < s.len() && matches!(s[d], b'M' | b'K' | b'G' | b's') {
                d + 1
            } else {
                d
            }
        };
        let best = word_end.max(ipv4_end).max(ipv6_end).max(num_end);
        if best == i {
            let c = text.get(i..).and_then(|t| t.chars().next()).unwrap_or('?');
            let kind = if "{};[]:".contains(c) {
                TokenKind::Punct(c)
            } else {
                TokenKind::Other(c)
            };
            toks.push(Token { kind, line, col });
            i += c.len_utf8();
            continue;
        }
        // All matched bytes are ASCII, so slicing at `best` is on a char boundary.
        let lexeme = text.get(i..best).unwrap_or_default().to_string();
        let kind = if ipv4_end == best {
            TokenKind::Ipv4(lexeme)
        } else if ipv6_end == best {
            TokenKind::Ipv6(lexeme)
        } else if num_end == best {
            TokenKind::Number(lexeme)
        } else {
            if best - i > MAX_WORD_LEN {
                return Err(ConfigError::Lexical {
                    at: at(),
                    message: format!(
                        "token too long (more than {MAX_WORD_LEN} characters): '{}...'",
                        short(&lexeme)
                    ),
                });
            }
            TokenKind::Word(lexeme)
        };
        toks.push(Token { kind, line, col });
        i = best;
    }
    let col = col_of(s.len(), line_start);
    toks.push(Token {
        kind: TokenKind::Eof,
        line,
        col,
    });
    Ok(toks)
}

/// A double-quoted string starting at `start` (the quote). Backslash escapes the next
/// character (any character: `\n` is `n`), as drbd-utils' `unescape()` does.
fn quoted(s: &[u8], start: usize) -> Result<(TokenKind, usize), String> {
    let mut out = Vec::new();
    let mut i = start + 1;
    let mut n = 0usize;
    loop {
        match s.get(i) {
            None | Some(b'\n') => {
                return Err(
                    "unterminated double quoted string (no newlines allowed inside)".into(),
                );
            }
            Some(b'"') => break,
            Some(b'\\') => match s.get(i + 1) {
                None | Some(b'\n') => {
                    return Err(
                        "unterminated double quoted string (no newlines allowed inside)".into(),
                    );
                }
                Some(&c) => {
                    out.push(c);
                    i += 2;
                }
            },
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
        n += 1;
        if n > MAX_QUOTED_LEN {
            return Err(format!(
                "double quoted string too long (more than {MAX_QUOTED_LEN} characters)"
            ));
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok((TokenKind::Quoted(text), i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(t: &str) -> Vec<TokenKind> {
        tokenize(t, "t")
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn splits_like_flex() {
        use TokenKind::*;
        assert_eq!(
            kinds("address 10.0.0.1:7788; # c\nsize 10G;"),
            vec![
                Word("address".into()),
                Ipv4("10.0.0.1".into()),
                Punct(':'),
                Number("7788".into()),
                Punct(';'),
                Word("size".into()),
                Number("10G".into()),
                Punct(';'),
                Eof
            ]
        );
        assert_eq!(kinds("10k")[0], Word("10k".into()));
        assert_eq!(kinds("123456789")[0], Word("123456789".into()));
        assert_eq!(kinds("12345678")[0], Number("12345678".into()));
        assert_eq!(kinds("10.0.0.1.5")[0], Word("10.0.0.1.5".into()));
        assert_eq!(kinds("1.2.3.4")[0], Ipv4("1.2.3.4".into()));
    }

    #[test]
    fn ipv6_addresses() {
        use TokenKind::*;
        assert_eq!(
            kinds("[fd00::1]:7789"),
            vec![
                Punct('['),
                Ipv6("fd00::1".into()),
                Punct(']'),
                Punct(':'),
                Number("7789".into()),
                Eof
            ]
        );
        assert_eq!(kinds("::1")[0], Ipv6("::1".into()));
        assert_eq!(kinds("fe80::1%eth0")[0], Ipv6("fe80::1%eth0".into()));
        assert_eq!(kinds("::ffff:1.2.3.4")[0], Ipv6("::ffff:1.2.3.4".into()));
        assert_eq!(kinds("1:2:3:4:5:6:7:8")[0], Ipv6("1:2:3:4:5:6:7:8".into()));
    }

    #[test]
    fn quoted_strings_unescape() {
        assert_eq!(
            kinds(r#""a\"b c\\d""#)[0],
            TokenKind::Quoted("a\"b c\\d".into())
        );
        assert_eq!(kinds(r#""""#)[0], TokenKind::Quoted(String::new()));
    }

    #[test]
    fn positions_are_line_and_column() {
        let t = tokenize("a {\n  b;\n}", "f").unwrap();
        assert_eq!((t[2].line, t[2].col), (2, 3));
        assert_eq!((t[4].line, t[4].col), (3, 1));
    }

    #[test]
    fn lexical_errors_have_positions() {
        let e = tokenize("x \"abc\ndef\"", "f.res").unwrap_err();
        assert!(e.to_string().starts_with("f.res:1:3: unterminated"), "{e}");
        let long = "a".repeat(129);
        let e = tokenize(&long, "f.res").unwrap_err();
        assert!(e.to_string().contains("token too long"), "{e}");
        assert!(tokenize(&"a".repeat(128), "f").is_ok());
        let e = tokenize(&format!("\"{}\"", "q".repeat(256)), "f").unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn other_characters_are_tokens() {
        assert_eq!(
            kinds("é=")[..2],
            [TokenKind::Other('é'), TokenKind::Other('=')]
        );
    }
}
