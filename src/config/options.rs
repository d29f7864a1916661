//! Option names per section, their value kinds and units, and the ordered option list.
//!
//! The names and the section each belongs to are those of drbd-utils 8.4's scanner
//! (`drbdadm_scanner.fl`); kinds, ranges and scales are drbdsetup's option tables
//! (`config_flags.c`, `linux/drbd_limits.h`). drbdadm itself range-checks only some numeric
//! options and none of the enumerations; urbd checks them all at load time, because
//! drbdsetup would refuse the same values at `up` time.

use serde::Serialize;

use super::units::{NumberError, Scale, parse_scaled};

/// A section that holds options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Section {
    /// `net { }`: connection options (drbdsetup `net-options`).
    Net,
    /// `disk { }`: backing device options (drbdsetup `disk-options`/`attach`).
    Disk,
    /// `startup { }`: drbdadm's own timeouts for `wait-connect`.
    Startup,
    /// `options { }`: resource options (drbdsetup `resource-options`).
    Options,
    /// `handlers { }`: commands drbd runs on events.
    Handlers,
}

impl Section {
    /// The keyword that opens the section.
    pub fn keyword(self) -> &'static str {
        match self {
            Section::Net => "net",
            Section::Disk => "disk",
            Section::Startup => "startup",
            Section::Options => "options",
            Section::Handlers => "handlers",
        }
    }
}

/// What values an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValueKind {
    /// A number in `min..=max` after conversion to `scale`; `unit` says what one is.
    Numeric {
        /// Smallest value, in `scale` units.
        min: u64,
        /// Largest value, in `scale` units.
        max: u64,
        /// The unit of a bare number.
        scale: Scale,
        /// What the number measures, e.g. `1/10 seconds`.
        unit: &'static str,
    },
    /// `yes` or `no`; written alone it means `yes`.
    Boolean,
    /// One word out of a list.
    Enum(&'static [&'static str]),
    /// Free text (algorithm names, secrets, commands, resource names).
    Text,
    /// `A`, `B` or `C` (case-insensitive; drbdadm upper-cases it).
    Protocol,
}

/// How an option is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `name value;`
    Value,
    /// `name [yes|no];`
    Flag,
    /// `no-name;` (8.3 syntax) meaning `name no;`
    Negated,
}

/// One option as the scanner knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The word written in the file.
    pub word: &'static str,
    /// The name it is stored under after normalization (`rate` is `resync-rate`).
    pub name: &'static str,
    /// Where it may appear.
    pub section: Section,
    /// Its values.
    pub kind: ValueKind,
    pub(crate) form: Form,
    /// Whether the 8.3 `syncer { }` section accepts it.
    pub in_syncer: bool,
}

const fn num(min: u64, max: u64, scale: Scale, unit: &'static str) -> ValueKind {
    ValueKind::Numeric {
        min,
        max,
        scale,
        unit,
    }
}

const ON_IO_ERROR: &[&str] = &["pass_on", "call-local-io-error", "detach"];
const FENCING: &[&str] = &["dont-care", "resource-only", "resource-and-stonith"];
const READ_BALANCING: &[&str] = &[
    "prefer-local",
    "prefer-remote",
    "round-robin",
    "least-pending",
    "when-congested-remote",
    "32K-striping",
    "64K-striping",
    "128K-striping",
    "256K-striping",
    "512K-striping",
    "1M-striping",
];
const AFTER_SB_0P: &[&str] = &[
    "disconnect",
    "discard-younger-primary",
    "discard-older-primary",
    "discard-zero-changes",
    "discard-least-changes",
    "discard-local",
    "discard-remote",
];
const AFTER_SB_1P: &[&str] = &[
    "disconnect",
    "consensus",
    "violently-as0p",
    "discard-secondary",
    "call-pri-lost-after-sb",
];
const AFTER_SB_2P: &[&str] = &["disconnect", "violently-as0p", "call-pri-lost-after-sb"];
const RR_CONFLICT: &[&str] = &["disconnect", "violently", "call-pri-lost"];
const ON_NO_DATA: &[&str] = &["io-error", "suspend-io"];
const ON_CONGESTION: &[&str] = &["block", "pull-ahead", "disconnect"];

macro_rules! spec {
    ($word:expr, $name:expr, $section:ident, $kind:expr, $form:ident, $syncer:expr) => {
        OptionSpec {
            word: $word,
            name: $name,
            section: Section::$section,
            kind: $kind,
            form: Form::$form,
            in_syncer: $syncer,
        }
    };
}

use ValueKind::{Boolean, Text};

/// Every option drbd-utils 8.4 accepts in a configuration file.
pub const OPTIONS: &[OptionSpec] = &[
    // disk
    spec!(
        "size",
        "size",
        Disk,
        num(0, 2 << 40, Scale::Sectors, "sectors"),
        Value,
        false
    ),
    spec!(
        "on-io-error",
        "on-io-error",
        Disk,
        ValueKind::Enum(ON_IO_ERROR),
        Value,
        false
    ),
    spec!(
        "fencing",
        "fencing",
        Disk,
        ValueKind::Enum(FENCING),
        Value,
        false
    ),
    spec!(
        "max-bio-bvecs",
        "max-bio-bvecs",
        Disk,
        num(0, 128, Scale::One, "count"),
        Value,
        false
    ),
    spec!(
        "disk-timeout",
        "disk-timeout",
        Disk,
        num(0, 6000, Scale::One, "1/10 seconds"),
        Value,
        false
    ),
    spec!(
        "read-balancing",
        "read-balancing",
        Disk,
        ValueKind::Enum(READ_BALANCING),
        Value,
        false
    ),
    spec!(
        "rs-discard-granularity",
        "rs-discard-granularity",
        Disk,
        num(0, 1 << 20, Scale::One, "bytes"),
        Value,
        false
    ),
    spec!(
        "resync-rate",
        "resync-rate",
        Disk,
        num(1, 4 << 20, Scale::Kibi, "KiB/second"),
        Value,
        false
    ),
    spec!(
        "rate",
        "resync-rate",
        Disk,
        num(1, 4 << 20, Scale::Kibi, "KiB/second"),
        Value,
        true
    ),
    spec!("resync-after", "resync-after", Disk, Text, Value, false),
    spec!("after", "resync-after", Disk, Text, Value, true),
    // al-extents is clamped by the kernel; drbdadm does not range-check it.
    spec!(
        "al-extents",
        "al-extents",
        Disk,
        num(0, u64::MAX, Scale::One, "extents"),
        Value,
        true
    ),
    spec!(
        "c-plan-ahead",
        "c-plan-ahead",
        Disk,
        num(0, 300, Scale::One, "1/10 seconds"),
        Value,
        true
    ),
    spec!(
        "c-delay-target",
        "c-delay-target",
        Disk,
        num(1, 100, Scale::One, "1/10 seconds"),
        Value,
        true
    ),
    spec!(
        "c-fill-target",
        "c-fill-target",
        Disk,
        num(0, 1 << 20, Scale::Sectors, "sectors"),
        Value,
        true
    ),
    spec!(
        "c-max-rate",
        "c-max-rate",
        Disk,
        num(250, 4 << 20, Scale::Kibi, "KiB/second"),
        Value,
        true
    ),
    spec!(
        "c-min-rate",
        "c-min-rate",
        Disk,
        num(0, 4 << 20, Scale::Kibi, "KiB/second"),
        Value,
        true
    ),
    spec!(
        "disable-write-same",
        "disable-write-same",
        Disk,
        Boolean,
        Flag,
        false
    ),
    spec!("use-bmbv", "use-bmbv", Disk, Boolean, Flag, false),
    spec!("disk-barrier", "disk-barrier", Disk, Boolean, Flag, false),
    spec!("disk-flushes", "disk-flushes", Disk, Boolean, Flag, false),
    spec!("disk-drain", "disk-drain", Disk, Boolean, Flag, false),
    spec!("md-flushes", "md-flushes", Disk, Boolean, Flag, false),
    spec!("al-updates", "al-updates", Disk, Boolean, Flag, false),
    spec!(
        "discard-zeroes-if-aligned",
        "discard-zeroes-if-aligned",
        Disk,
        Boolean,
        Flag,
        false
    ),
    spec!(
        "no-disk-barrier",
        "disk-barrier",
        Disk,
        Boolean,
        Negated,
        false
    ),
    spec!(
        "no-disk-flushes",
        "disk-flushes",
        Disk,
        Boolean,
        Negated,
        false
    ),
    spec!("no-disk-drain", "disk-drain", Disk, Boolean, Negated, false),
    spec!("no-md-flushes", "md-flushes", Disk, Boolean, Negated, false),
    // net
    spec!(
        "protocol",
        "protocol",
        Net,
        ValueKind::Protocol,
        Value,
        false
    ),
    spec!(
        "timeout",
        "timeout",
        Net,
        num(1, 600, Scale::One, "1/10 seconds"),
        Value,
        false
    ),
    spec!(
        "ko-count",
        "ko-count",
        Net,
        num(0, 200, Scale::One, "count"),
        Value,
        false
    ),
    spec!(
        "ping-int",
        "ping-int",
        Net,
        num(1, 120, Scale::One, "seconds"),
        Value,
        false
    ),
    spec!(
        "max-buffers",
        "max-buffers",
        Net,
        num(32, 131072, Scale::One, "pages"),
        Value,
        false
    ),
    spec!(
        "sndbuf-size",
        "sndbuf-size",
        Net,
        num(0, 10 << 20, Scale::One, "bytes"),
        Value,
        false
    ),
    spec!(
        "rcvbuf-size",
        "rcvbuf-size",
        Net,
        num(0, 10 << 20, Scale::One, "bytes"),
        Value,
        false
    ),
    spec!(
        "connect-int",
        "connect-int",
        Net,
        num(1, 120, Scale::One, "seconds"),
        Value,
        false
    ),
    spec!("cram-hmac-alg", "cram-hmac-alg", Net, Text, Value, false),
    spec!("shared-secret", "shared-secret", Net, Text, Value, false),
    spec!(
        "max-epoch-size",
        "max-epoch-size",
        Net,
        num(1, 20000, Scale::One, "requests"),
        Value,
        false
    ),
    spec!(
        "after-sb-0pri",
        "after-sb-0pri",
        Net,
        ValueKind::Enum(AFTER_SB_0P),
        Value,
        false
    ),
    spec!(
        "after-sb-1pri",
        "after-sb-1pri",
        Net,
        ValueKind::Enum(AFTER_SB_1P),
        Value,
        false
    ),
    spec!(
        "after-sb-2pri",
        "after-sb-2pri",
        Net,
        ValueKind::Enum(AFTER_SB_2P),
        Value,
        false
    ),
    spec!(
        "rr-conflict",
        "rr-conflict",
        Net,
        ValueKind::Enum(RR_CONFLICT),
        Value,
        false
    ),
    spec!(
        "ping-timeout",
        "ping-timeout",
        Net,
        num(1, 300, Scale::One, "1/10 seconds"),
        Value,
        false
    ),
    spec!(
        "unplug-watermark",
        "unplug-watermark",
        Net,
        num(1, 131072, Scale::One, "requests"),
        Value,
        false
    ),
    spec!(
        "data-integrity-alg",
        "data-integrity-alg",
        Net,
        Text,
        Value,
        false
    ),
    spec!(
        "on-congestion",
        "on-congestion",
        Net,
        ValueKind::Enum(ON_CONGESTION),
        Value,
        false
    ),
    spec!(
        "socket-check-timeout",
        "socket-check-timeout",
        Net,
        num(0, 300, Scale::One, "1/10 seconds"),
        Value,
        false
    ),
    spec!(
        "congestion-fill",
        "congestion-fill",
        Net,
        num(0, 10 << 21, Scale::Sectors, "sectors"),
        Value,
        false
    ),
    spec!(
        "congestion-extents",
        "congestion-extents",
        Net,
        num(67, 0xfffe, Scale::One, "extents"),
        Value,
        false
    ),
    spec!("verify-alg", "verify-alg", Net, Text, Value, true),
    spec!("csums-alg", "csums-alg", Net, Text, Value, true),
    spec!(
        "allow-two-primaries",
        "allow-two-primaries",
        Net,
        Boolean,
        Flag,
        false
    ),
    spec!("always-asbp", "always-asbp", Net, Boolean, Flag, false),
    spec!("tcp-cork", "tcp-cork", Net, Boolean, Flag, false),
    spec!(
        "csums-after-crash-only",
        "csums-after-crash-only",
        Net,
        Boolean,
        Flag,
        false
    ),
    spec!("use-rle", "use-rle", Net, Boolean, Flag, true),
    spec!("no-tcp-cork", "tcp-cork", Net, Boolean, Negated, false),
    // startup (stacked-timeouts and become-primary-on are statements of their own)
    spec!(
        "wfc-timeout",
        "wfc-timeout",
        Startup,
        num(0, 300000, Scale::One, "seconds"),
        Value,
        false
    ),
    spec!(
        "degr-wfc-timeout",
        "degr-wfc-timeout",
        Startup,
        num(0, 300000, Scale::One, "seconds"),
        Value,
        false
    ),
    spec!(
        "outdated-wfc-timeout",
        "outdated-wfc-timeout",
        Startup,
        num(0, 300000, Scale::One, "seconds"),
        Value,
        false
    ),
    spec!(
        "wait-after-sb",
        "wait-after-sb",
        Startup,
        Boolean,
        Flag,
        false
    ),
    // options
    spec!("cpu-mask", "cpu-mask", Options, Text, Value, true),
    spec!(
        "on-no-data-accessible",
        "on-no-data-accessible",
        Options,
        ValueKind::Enum(ON_NO_DATA),
        Value,
        true
    ),
    // handlers
    spec!(
        "pri-on-incon-degr",
        "pri-on-incon-degr",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!(
        "pri-lost-after-sb",
        "pri-lost-after-sb",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!("pri-lost", "pri-lost", Handlers, Text, Value, false),
    spec!(
        "initial-split-brain",
        "initial-split-brain",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!("split-brain", "split-brain", Handlers, Text, Value, false),
    spec!("outdate-peer", "fence-peer", Handlers, Text, Value, false),
    spec!("fence-peer", "fence-peer", Handlers, Text, Value, false),
    spec!("unfence-peer", "unfence-peer", Handlers, Text, Value, false),
    spec!(
        "local-io-error",
        "local-io-error",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!(
        "before-resync-target",
        "before-resync-target",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!(
        "after-resync-target",
        "after-resync-target",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!(
        "before-resync-source",
        "before-resync-source",
        Handlers,
        Text,
        Value,
        false
    ),
    spec!("out-of-sync", "out-of-sync", Handlers, Text, Value, false),
];

/// 8.3 options that drbd-utils 8.4 still parses (with a value) and then drops, in any
/// option section.
pub const DEPRECATED: &[&str] = &[
    "delay-probe-volume",
    "delay-probe-interval",
    "throttle-threshold",
    "hold-off-threshold",
];

/// The option written as `word` in `section`, if that section has it.
pub fn lookup(section: Section, word: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|s| s.section == section && s.word == word)
}

/// The option written as `word` inside an 8.3 `syncer { }` section.
pub fn lookup_syncer(word: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.in_syncer && s.word == word)
}

/// The option stored under the normalized `name` (names are unique across sections).
pub fn spec_of(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.name == name && s.word == name)
}

/// Checks `value` against the option's kind and returns it normalized the way
/// `drbdadm dump` prints it (only the protocol letter changes: it is upper-cased).
pub(crate) fn check_value(spec: &OptionSpec, value: &str) -> Result<String, String> {
    match spec.kind {
        ValueKind::Numeric {
            min,
            max,
            scale,
            unit,
        } => {
            let n = parse_scaled(value, scale).map_err(|e| e.to_string())?;
            if n < min || n > max {
                let u = match scale {
                    Scale::One => "",
                    Scale::Kibi => "k",
                    Scale::Sectors => "s",
                };
                return Err(format!("{n}{u} out of range [{min}..{max}]{u} ({unit})"));
            }
            Ok(value.to_string())
        }
        ValueKind::Boolean => match value {
            "yes" | "no" => Ok(value.to_string()),
            _ => Err("expected yes or no".into()),
        },
        ValueKind::Enum(words) => {
            // drbdadm also takes discard-node-NODENAME for after-sb-0pri (it becomes
            // discard-local or discard-remote per node).
            let discard_node = std::ptr::eq(words, AFTER_SB_0P)
                && value
                    .strip_prefix("discard-node-")
                    .is_some_and(|n| !n.is_empty());
            if words.contains(&value) || discard_node {
                Ok(value.to_string())
            } else {
                Err(format!("expected one of: {}", words.join(", ")))
            }
        }
        ValueKind::Text => Ok(value.to_string()),
        ValueKind::Protocol => match value {
            "A" | "a" => Ok("A".into()),
            "B" | "b" => Ok("B".into()),
            "C" | "c" => Ok("C".into()),
            _ => Err("unknown protocol, should be one of A, B, C".into()),
        },
    }
}

/// One option as stored: normalized name and value (`None` only for `stacked-timeouts`,
/// which drbdadm prints without a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionEntry {
    /// Normalized name (`resync-rate`, never `rate`; `tcp-cork`, never `no-tcp-cork`).
    pub name: String,
    /// The value as written (unquoted), `yes`/`no` for flags, upper-case protocol.
    pub value: Option<String>,
}

/// An ordered list of options, in the order drbdadm keeps them. A name may repeat
/// (drbdsetup then sees both and the last one wins), so lookups return the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Options {
    entries: Vec<OptionEntry>,
}

impl Options {
    /// No options.
    pub fn new() -> Options {
        Options::default()
    }

    /// The effective value of `name` (the last occurrence); `Some("")` for a valueless
    /// entry.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name == name)
            .map(|e| e.value.as_deref().unwrap_or(""))
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// A boolean option's effective value, if set.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "yes")
    }

    /// A numeric option's effective value converted to the option's scale (e.g.
    /// `resync-rate 10M` is 10240 KiB/s), if set. Unknown names are `None`.
    pub fn get_scaled(&self, name: &str) -> Option<Result<u64, NumberError>> {
        let v = self.get(name)?;
        match spec_of(name)?.kind {
            ValueKind::Numeric { scale, .. } => Some(parse_scaled(v, scale)),
            _ => None,
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &OptionEntry> {
        self.entries.iter()
    }

    /// Number of entries (repeats counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry.
    pub fn push(&mut self, name: impl Into<String>, value: Option<String>) {
        self.entries.push(OptionEntry {
            name: name.into(),
            value,
        });
    }

    /// Appends all of `other`.
    pub(crate) fn extend(&mut self, other: Options) {
        self.entries.extend(other.entries);
    }

    /// drbdadm's `expand_opts`: every option of `from` whose name is not set here yet is
    /// put in front, one at a time, so inherited options end up before the own ones in
    /// reverse order of `from`.
    pub(crate) fn inherit(&mut self, from: &Options) {
        for e in &from.entries {
            if !self.contains(&e.name) {
                self.entries.insert(0, e.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_sections() {
        for s in OPTIONS {
            for t in OPTIONS {
                if s.name == t.name {
                    assert_eq!(s.section, t.section, "{}", s.name);
                }
            }
            assert!(spec_of(s.name).is_some(), "{}", s.name);
        }
    }

    #[test]
    fn aliases_and_syncer() {
        assert_eq!(
            lookup(Section::Disk, "rate").map(|s| s.name),
            Some("resync-rate")
        );
        assert_eq!(
            lookup(Section::Handlers, "outdate-peer").map(|s| s.name),
            Some("fence-peer")
        );
        assert_eq!(
            lookup_syncer("verify-alg").map(|s| s.section),
            Some(Section::Net)
        );
        assert_eq!(
            lookup_syncer("cpu-mask").map(|s| s.section),
            Some(Section::Options)
        );
        assert!(lookup_syncer("no-disk-flushes").is_none());
        assert!(lookup(Section::Net, "size").is_none());
    }

    #[test]
    fn values_are_checked() {
        let mb = spec_of("max-buffers").unwrap();
        assert!(
            check_value(mb, "8")
                .unwrap_err()
                .contains("out of range [32..131072]")
        );
        assert_eq!(check_value(mb, "8k").unwrap(), "8k");
        let p = spec_of("protocol").unwrap();
        assert_eq!(check_value(p, "c").unwrap(), "C");
        assert!(check_value(p, "D").is_err());
        let f = spec_of("fencing").unwrap();
        assert!(check_value(f, "resource-only").is_ok());
        assert!(
            check_value(f, "sometimes")
                .unwrap_err()
                .contains("dont-care")
        );
        let r = spec_of("resync-rate").unwrap();
        assert!(check_value(r, "10x").is_err());
        assert!(check_value(r, "5G").is_err());
    }

    #[test]
    fn inherit_prepends_like_drbdadm() {
        let mut own = Options::new();
        own.push("protocol", Some("C".into()));
        own.push("after-sb-0pri", Some("disconnect".into()));
        let mut common = Options::new();
        for (n, v) in [
            ("protocol", "B"),
            ("max-buffers", "8k"),
            ("verify-alg", "sha1"),
        ] {
            common.push(n, Some(v.into()));
        }
        own.inherit(&common);
        let names: Vec<_> = own.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["verify-alg", "max-buffers", "protocol", "after-sb-0pri"]
        );
        assert_eq!(own.get("protocol"), Some("C"));
    }

    #[test]
    fn scaled_lookup() {
        let mut o = Options::new();
        o.push("resync-rate", Some("10M".into()));
        o.push("size", Some("1G".into()));
        assert_eq!(o.get_scaled("resync-rate"), Some(Ok(10240)));
        assert_eq!(o.get_scaled("size"), Some(Ok(2 << 20)));
        assert_eq!(o.get_scaled("nope"), None);
    }
}
