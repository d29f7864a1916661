//! Recursive-descent parser for one file, following drbd-utils 8.4's hand-written parser
//! (`drbdadm_parser.c`): what it accepts, what it normalizes while parsing (syncer
//! options, aliases, `no-` flags, protocol case), and which statements it checks for
//! repetition within a resource. Includes are handed to the [`Loader`].

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::include::Loader;
use super::lexer::{Token, TokenKind, is_reserved, tokenize};
use super::limits::{MAX_HOSTS, MAX_SKIP_NESTING};
use super::model::{
    Address, AddressFamily, Common, Global, Host, HostKind, Resource, Sections, UsageCount, Volume,
};
use super::options::{self, Options, Section, check_value};
use super::units::{Scale, parse_scaled};
use super::urbd::KEYWORD as URBD_OPTIONS;

type Result<T> = std::result::Result<T, ConfigError>;

mod sections;
mod urbd;
mod volumes;

use volumes::{check_volume_sets, inherit_volumes, insert_volume, vol0};

pub(crate) struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    file: String,
    canonical: PathBuf,
    loader: &'a mut Loader,
}

/// Statements that may appear once per resource (drbdadm's `check_upr`).
#[derive(Default)]
struct Once {
    seen: Vec<(String, Location)>,
}

impl Once {
    fn check(&mut self, what: &str, key: String, at: &Location) -> Result<()> {
        if let Some((_, first)) = self.seen.iter().find(|(k, _)| *k == key) {
            return Err(ConfigError::Duplicate {
                at: at.clone(),
                what: what.to_string(),
                name: key,
                first: first.clone(),
            });
        }
        self.seen.push((key, at.clone()));
        Ok(())
    }
}

/// What kind of block `parse_resource_body` is reading.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Common,
    Resource,
}

impl<'a> Parser<'a> {
    /// Tokenizes `text` (from `file`, whose canonical path is `canonical`).
    pub(crate) fn new(
        text: &str,
        file: &str,
        canonical: PathBuf,
        loader: &'a mut Loader,
    ) -> Result<Parser<'a>> {
        Ok(Parser {
            toks: tokenize(text, file)?,
            pos: 0,
            file: file.to_string(),
            canonical,
            loader,
        })
    }

    // ---- token helpers -------------------------------------------------------------

    fn peek(&self) -> &TokenKind {
        self.toks
            .get(self.pos)
            .map(|t| &t.kind)
            .unwrap_or(&TokenKind::Eof)
    }

    fn here(&self) -> Location {
        match self.toks.get(self.pos).or_else(|| self.toks.last()) {
            Some(t) => Location::new(self.file.clone(), t.line, t.col),
            None => Location::new(self.file.clone(), 1, 1),
        }
    }

    fn bump(&mut self) -> (TokenKind, Location) {
        let at = self.here();
        let kind = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        (kind, at)
    }

    fn expected(&self, expected: &str) -> ConfigError {
        ConfigError::Syntax {
            at: self.here(),
            expected: expected.to_string(),
            found: self.peek().describe(),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        *self.peek() == TokenKind::Punct(c)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), TokenKind::Word(x) if x == w)
    }

    fn punct(&mut self, c: char) -> Result<Location> {
        if self.is_punct(c) {
            Ok(self.bump().1)
        } else {
            Err(self.expected(&format!("'{c}'")))
        }
    }

    /// drbdadm's `TK_STRING`: an unquoted non-reserved word or a quoted string.
    fn string(&mut self, what: &str) -> Result<(String, Location)> {
        match self.peek().clone() {
            TokenKind::Word(w) if !is_reserved(&w) => {
                let at = self.bump().1;
                Ok((w, at))
            }
            TokenKind::Quoted(s) => {
                let at = self.bump().1;
                Ok((s, at))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// drbdadm's `TK_INTEGER` read as a plain number in `0..=max`.
    fn integer(&mut self, what: &str, min: u64, max: u64) -> Result<(u64, Location)> {
        match self.peek().clone() {
            TokenKind::Number(n) => {
                let at = self.here();
                let v = parse_scaled(&n, Scale::One).map_err(|e| ConfigError::InvalidValue {
                    at: at.clone(),
                    option: what.to_string(),
                    value: n.clone(),
                    reason: e.to_string(),
                })?;
                if v < min || v > max {
                    return Err(ConfigError::InvalidValue {
                        at,
                        option: what.to_string(),
                        value: n,
                        reason: format!("{v} out of range [{min}..{max}]"),
                    });
                }
                self.bump();
                Ok((v, at))
            }
            _ => Err(self.expected(&format!("a number ({what})"))),
        }
    }

    // ---- top level -----------------------------------------------------------------

    /// Parses the whole file into the loader.
    pub(crate) fn parse_file(mut self) -> Result<()> {
        loop {
            let (kind, at) = self.bump();
            match kind {
                TokenKind::Eof => return Ok(()),
                TokenKind::Word(w) if w == "global" => {
                    let g = self.parse_global()?;
                    self.loader.set_global(g, at)?;
                }
                TokenKind::Word(w) if w == "common" => {
                    self.punct('{')?;
                    let sections = self.parse_resource_body(Block::Common, "common", None)?.0;
                    self.loader.set_common(Common { sections, at })?;
                }
                TokenKind::Word(w) if w == "resource" => {
                    let (name, name_at) = self.string("a resource name")?;
                    if name.is_empty() || name.chars().any(|c| c.is_control()) {
                        return Err(ConfigError::Invalid {
                            at: name_at,
                            message: "resource name is empty or contains control characters".into(),
                        });
                    }
                    self.loader.claim_resource_name(&name, &name_at)?;
                    let open = self.punct('{')?;
                    let (sections, volumes, hosts) =
                        self.parse_resource_body(Block::Resource, &name, Some(&open))?;
                    let res = Resource {
                        name,
                        at: open,
                        file: self.canonical.clone(),
                        sections,
                        volumes,
                        hosts,
                        common: None,
                        urbd: None,
                    };
                    self.loader.add_resource(res)?;
                }
                TokenKind::Word(w) if w == URBD_OPTIONS => {
                    let u = self.parse_urbd_options()?;
                    self.loader.add_urbd_options(u)?;
                }
                TokenKind::Word(w) if w == "skip" => self.parse_skip()?,
                TokenKind::Word(w) if w == "include" => {
                    let (pattern, _) = self.string("a file name or glob")?;
                    self.punct(';')?;
                    let dir = self
                        .canonical
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    let display_dir = Path::new(&self.file)
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    self.loader.include(&pattern, &dir, &display_dir, &at)?;
                }
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: "global | common | resource | skip | include | urbd-options"
                            .into(),
                        found: other.describe(),
                    });
                }
            }
        }
    }

    fn parse_skip(&mut self) -> Result<()> {
        if !self.is_punct('{') {
            self.string("'{' or a name after skip")?;
        }
        self.punct('{')?;
        let mut level = 1usize;
        while level > 0 {
            let (kind, at) = self.bump();
            match kind {
                TokenKind::Punct('{') => {
                    level += 1;
                    if level > MAX_SKIP_NESTING {
                        return Err(ConfigError::Limit {
                            at,
                            what: "skip block nesting",
                            limit: MAX_SKIP_NESTING as u64,
                        });
                    }
                }
                TokenKind::Punct('}') => level -= 1,
                TokenKind::Eof => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: "'}' closing the skip block".into(),
                        found: "end of file".into(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_global(&mut self) -> Result<Global> {
        self.punct('{')?;
        let mut g = Global::default();
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => return Ok(g),
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: "a global option".into(),
                        found: other.describe(),
                    });
                }
            };
            let small =
                |p: &mut Parser<'_>, what: &str, max: u64, min: u64| -> Result<Option<u32>> {
                    let (v, _) = p.integer(what, min, max)?;
                    Ok(u32::try_from(v).ok())
                };
            match w.as_str() {
                "usage-count" => {
                    let (v, vat) = self.bump();
                    g.usage_count = Some(match v {
                        TokenKind::Word(ref x) if x == "yes" => UsageCount::Yes,
                        TokenKind::Word(ref x) if x == "no" => UsageCount::No,
                        TokenKind::Word(ref x) if x == "ask" => UsageCount::Ask,
                        other => {
                            return Err(ConfigError::Syntax {
                                at: vat,
                                expected: "yes | no | ask".into(),
                                found: other.describe(),
                            });
                        }
                    });
                }
                "minor-count" => g.minor_count = small(self, "minor-count", 255, 1)?,
                "dialog-refresh" => g.dialog_refresh = small(self, "dialog-refresh", 600, 0)?,
                "cmd-timeout-short" => {
                    g.cmd_timeout_short = small(self, "cmd-timeout-short", 900, 0)?
                }
                "cmd-timeout-medium" => {
                    g.cmd_timeout_medium = small(self, "cmd-timeout-medium", 900, 0)?
                }
                "cmd-timeout-long" => g.cmd_timeout_long = small(self, "cmd-timeout-long", 900, 0)?,
                "disable-ip-verification" => g.disable_ip_verification = true,
                "udev-always-use-vnr" => g.udev_always_use_vnr = true,
                _ => {
                    return Err(ConfigError::Unknown {
                        at,
                        what: "keyword",
                        word: w,
                        section: "global section (usage-count, minor-count, dialog-refresh, \
                                  disable-ip-verification, udev-always-use-vnr, cmd-timeout-*)"
                            .into(),
                    });
                }
            }
            self.punct(';')?;
        }
    }

    // ---- resource / common ---------------------------------------------------------

    #[allow(clippy::type_complexity)]
    fn parse_resource_body(
        &mut self,
        block: Block,
        name: &str,
        _open: Option<&Location>,
    ) -> Result<(Sections, Vec<Volume>, Vec<Host>)> {
        let mut s = Sections::default();
        let mut volumes: Vec<Volume> = Vec::new();
        let mut hosts: Vec<Host> = Vec::new();
        let mut once = Once::default();
        let ctx = match block {
            Block::Common => "common section".to_string(),
            Block::Resource => format!("resource {name}"),
        };
        let end = loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => break at,
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected:
                            "protocol | on | floating | volume | device | disk | meta-disk | \
                                   net | disk | syncer | startup | options | handlers | '}'"
                                .into(),
                        found: other.describe(),
                    });
                }
            };
            let only_resource = |what: &str| -> Result<()> {
                if block == Block::Common {
                    return Err(ConfigError::Invalid {
                        at: at.clone(),
                        message: format!("'{what}' is not allowed in the common section"),
                    });
                }
                Ok(())
            };
            match w.as_str() {
                "protocol" => {
                    once.check("protocol statement", format!("{name}: protocol"), &at)?;
                    let (v, vat) = self.string("A | B | C")?;
                    let spec = options::spec_of("protocol").ok_or_else(|| internal(&at))?;
                    let v = check_value(spec, &v).map_err(|reason| ConfigError::InvalidValue {
                        at: vat,
                        option: "protocol".into(),
                        value: v.clone(),
                        reason,
                    })?;
                    s.net.push("protocol", Some(v));
                    self.punct(';')?;
                }
                "on" => {
                    only_resource("on")?;
                    let names = self.parse_host_names(&at)?;
                    let host =
                        self.parse_host(name, HostKind::On(names), None, &at, &volumes, &mut once)?;
                    push_host(&mut hosts, host, &at)?;
                }
                "floating" => {
                    only_resource("floating")?;
                    let addr = self.parse_address_value()?;
                    let host = self.parse_host(
                        name,
                        HostKind::Floating,
                        Some(addr),
                        &at,
                        &volumes,
                        &mut once,
                    )?;
                    push_host(&mut hosts, host, &at)?;
                }
                "ignore-on" => {
                    only_resource("ignore-on")?;
                    // Deprecated in 8.4 and without effect; drbdadm warns and goes on.
                    self.string("a host name")?;
                    self.punct(';')?;
                }
                "disk" => {
                    if self.is_punct('{') {
                        self.bump();
                        once.check("disk section", format!("{name}:disk"), &at)?;
                        let o = self.parse_options(Section::Disk, &ctx)?;
                        s.disk.extend(o);
                    } else {
                        only_resource("disk")?;
                        let (p, _) = self.string("a disk path or '{'")?;
                        self.punct(';')?;
                        vol0(&mut volumes, &at)?.disk = Some(PathBuf::from(p));
                    }
                }
                "device" => {
                    only_resource("device")?;
                    once.check("device statement", format!("{name}:device"), &at)?;
                    let v = vol0(&mut volumes, &at)?;
                    self.parse_device(v)?;
                }
                "meta-disk" | "flexible-meta-disk" => {
                    only_resource(&w)?;
                    let v = vol0(&mut volumes, &at)?;
                    v.meta_disk = Some(self.parse_meta_disk(w == "flexible-meta-disk")?);
                }
                "volume" => {
                    only_resource("volume")?;
                    let v = self.parse_volume(&at)?;
                    insert_volume(&mut volumes, v)?;
                }
                "net" => {
                    once.check("net section", format!("{name}:net"), &at)?;
                    self.punct('{')?;
                    let o = self.parse_options(Section::Net, &ctx)?;
                    s.net.extend(o);
                }
                "syncer" => {
                    once.check("syncer section", format!("{name}:syncer"), &at)?;
                    self.punct('{')?;
                    self.parse_syncer(&mut s, &ctx)?;
                }
                "startup" => {
                    once.check("startup section", format!("{name}:startup"), &at)?;
                    self.punct('{')?;
                    let o = self.parse_startup(&mut s, &ctx)?;
                    s.startup = o;
                }
                "handlers" => {
                    once.check("handlers section", format!("{name}:handlers"), &at)?;
                    self.punct('{')?;
                    s.handlers = self.parse_options(Section::Handlers, &ctx)?;
                }
                "options" => {
                    once.check(
                        "resource options section",
                        format!("{name}:res_options"),
                        &at,
                    )?;
                    self.punct('{')?;
                    let o = self.parse_options(Section::Options, &ctx)?;
                    s.options.extend(o);
                }
                "stacked-on-top-of" | "proxy" | "_this_host" | "_remote_host" => {
                    return Err(unsupported(&w, at));
                }
                _ => {
                    return Err(ConfigError::Unknown {
                        at,
                        what: "keyword",
                        word: w,
                        section: ctx,
                    });
                }
            }
        };
        if block == Block::Resource {
            check_volume_sets(name, &hosts, &end)?;
        }
        Ok((s, volumes, hosts))
    }

    fn parse_host_names(&mut self, at: &Location) -> Result<Vec<String>> {
        let mut names = Vec::new();
        while !self.is_punct('{') {
            let (n, _) = self.string("a host name or '{'")?;
            names.push(n);
            if names.len() > MAX_HOSTS {
                return Err(ConfigError::Limit {
                    at: at.clone(),
                    what: "host names in one section",
                    limit: MAX_HOSTS as u64,
                });
            }
        }
        if names.is_empty() {
            return Err(self.expected("a host name"));
        }
        self.punct('{')?;
        Ok(names)
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_host(
        &mut self,
        res: &str,
        kind: HostKind,
        floating: Option<Address>,
        at: &Location,
        res_volumes: &[Volume],
        once: &mut Once,
    ) -> Result<Host> {
        let is_floating = floating.is_some();
        let mut host = Host {
            kind,
            address: floating,
            volumes: Vec::new(),
            options: Options::new(),
            at: at.clone(),
        };
        let mut has_body = true;
        if is_floating {
            if self.is_punct(';') {
                self.bump();
                has_body = false;
            } else {
                self.punct('{')?;
            }
        }
        let names = host.names();
        for h in &names {
            once.check("host section", format!("{res}: on {h}"), at)?;
        }
        let per_host = |once: &mut Once, what: &str, key: &str, at: &Location| -> Result<()> {
            for h in &names {
                once.check(what, format!("{res}:{h}:{key}"), at)?;
            }
            Ok(())
        };
        let ctx = format!("resource {res}, on {}", names.join(" "));
        // A floating section written `floating ADDR;` has no body.
        if has_body {
            loop {
                let (kind, sat) = self.bump();
                let w = match kind {
                    TokenKind::Punct('}') => break,
                    TokenKind::Word(w) => w,
                    other => {
                        return Err(ConfigError::Syntax {
                        at: sat,
                        expected: "disk | device | address | meta-disk | flexible-meta-disk | volume | options | '}'".into(),
                        found: other.describe(),
                    });
                    }
                };
                match w.as_str() {
                    "disk" => {
                        // drbdadm counts `disk PATH;` and `disk { }` as one statement and so
                        // refuses its own `-d dump` output (which has both); urbd counts them
                        // apart.
                        if self.is_punct('{') {
                            per_host(once, "disk options section", "disk-options", &sat)?;
                            self.bump();
                            let v = vol0(&mut host.volumes, &sat)?;
                            v.disk_options = self.parse_options(Section::Disk, &ctx)?;
                        } else {
                            per_host(once, "disk statement", "disk", &sat)?;
                            let v = vol0(&mut host.volumes, &sat)?;
                            let (p, _) = self.string("a disk path or '{'")?;
                            self.punct(';')?;
                            v.disk = Some(PathBuf::from(p));
                        }
                    }
                    "device" => {
                        per_host(once, "device statement", "device", &sat)?;
                        let v = vol0(&mut host.volumes, &sat)?;
                        self.parse_device(v)?;
                    }
                    "meta-disk" | "flexible-meta-disk" => {
                        per_host(once, "meta-disk statement", "meta-disk", &sat)?;
                        let v = vol0(&mut host.volumes, &sat)?;
                        v.meta_disk = Some(self.parse_meta_disk(w == "flexible-meta-disk")?);
                    }
                    "address" => {
                        if is_floating {
                            return Err(ConfigError::Invalid {
                                at: sat,
                                message:
                                    "address statement not allowed for floating {} host sections"
                                        .into(),
                            });
                        }
                        per_host(once, "address statement", "address", &sat)?;
                        host.address = Some(self.parse_address_value()?);
                        self.punct(';')?;
                    }
                    "volume" => {
                        let v = self.parse_volume(&sat)?;
                        insert_volume(&mut host.volumes, v)?;
                    }
                    "options" => {
                        self.punct('{')?;
                        host.options = self.parse_options(Section::Options, &ctx)?;
                    }
                    "alternate-link-address" | "proxy" => return Err(unsupported(&w, sat)),
                    _ => {
                        return Err(ConfigError::Unknown {
                            at: sat,
                            what: "keyword",
                            word: w,
                            section: ctx,
                        });
                    }
                }
            }
        }
        inherit_volumes(res_volumes, &mut host);
        // REQUIRE_ALL: what drbdadm demands of every `on`/`floating` section.
        let hname = host.display_name();
        let missing = |keyword: &'static str| ConfigError::Missing {
            at: at.clone(),
            resource: res.to_string(),
            host: hname.clone(),
            keyword,
        };
        if host.address.is_none() {
            return Err(missing("address"));
        }
        for v in &host.volumes {
            if v.device.is_none() && v.minor.is_none() {
                return Err(missing("device"));
            }
            if v.disk.is_none() {
                return Err(missing("disk"));
            }
            if v.meta_disk.is_none() {
                return Err(missing("meta-disk"));
            }
        }
        if host.volumes.iter().any(|v| v.implicit) && host.volumes.iter().any(|v| v.number != 0) {
            return Err(ConfigError::Invalid {
                at: at.clone(),
                message: format!(
                    "in resource {res}: you must not mix implicit and explicit volumes"
                ),
            });
        }
        Ok(host)
    }

    /// `[ipv4|ipv6] ADDR:PORT` (without the `;`).
    fn parse_address_value(&mut self) -> Result<Address> {
        let (kind, at) = self.bump();
        let (family, host) = match kind {
            TokenKind::Word(w) if w == "ipv4" => match self.bump() {
                (TokenKind::Ipv4(a), _) => (AddressFamily::Ipv4, a),
                (other, oat) => {
                    return Err(ConfigError::Syntax {
                        at: oat,
                        expected: "an IPv4 address".into(),
                        found: other.describe(),
                    });
                }
            },
            TokenKind::Word(w) if w == "ipv6" => {
                self.punct('[')?;
                match self.bump() {
                    (TokenKind::Ipv6(a), _) => {
                        self.punct(']')?;
                        (AddressFamily::Ipv6, a)
                    }
                    (other, oat) => {
                        return Err(ConfigError::Syntax {
                            at: oat,
                            expected: "an IPv6 address".into(),
                            found: other.describe(),
                        });
                    }
                }
            }
            TokenKind::Word(w) if w == "ssocks" || w == "sdp" || w == "sci" => {
                return Err(unsupported(&format!("address family {w}"), at));
            }
            TokenKind::Ipv4(a) => (AddressFamily::Ipv4, a),
            other => {
                return Err(ConfigError::Syntax {
                    at,
                    expected: "ipv4 | ipv6 | <ipv4 address>".into(),
                    found: other.describe(),
                });
            }
        };
        self.punct(':')?;
        let (port, _) = self.integer("port", 1, 65535)?;
        let port = u16::try_from(port).map_err(|_| internal(&at))?;
        Ok(Address { family, host, port })
    }
}

fn internal(at: &Location) -> ConfigError {
    ConfigError::Invalid {
        at: at.clone(),
        message: "value out of range".into(),
    }
}

fn unsupported(what: &str, at: Location) -> ConfigError {
    ConfigError::Invalid {
        at,
        message: format!("'{what}' is valid DRBD but not supported by urbd"),
    }
}

fn unknown_option(section: Section, word: &str, at: Location, ctx: &str) -> ConfigError {
    let elsewhere = options::OPTIONS
        .iter()
        .find(|s| s.word == word)
        .map(|s| format!(" ('{word}' belongs in the {} section)", s.section.keyword()))
        .unwrap_or_default();
    ConfigError::Unknown {
        at,
        what: "option",
        word: word.to_string(),
        section: format!("{} section of {ctx}{elsewhere}", section.keyword()),
    }
}

fn push_host(hosts: &mut Vec<Host>, host: Host, at: &Location) -> Result<()> {
    if hosts.len() >= MAX_HOSTS {
        return Err(ConfigError::Limit {
            at: at.clone(),
            what: "host sections in one resource",
            limit: MAX_HOSTS as u64,
        });
    }
    hosts.push(host);
    Ok(())
}
