//! `urbdadm dump`: the configuration printed the way `drbdadm-84 dump` prints it
//! (`adm_dump` and friends in `drbdadm_main.c`): same order, indentation of 4, names
//! padded to column 24 with values right-aligned in 3 columns, the same quoting rule,
//! and the same normalization (no `syncer`, aliases renamed, flags as `yes`/`no`).
//!
//! Two modes: plain (what `drbdadm dump` prints: each resource as written, `common`
//! separate) and expanded (what `drbdadm -d dump` prints: `common` inherited into
//! every resource and resource `disk` options into every volume).
//!
//! Differences from drbdadm, on purpose: `cmd-timeout-*` are printed only when set (this
//! drbd-utils build prints `cmd-timeout-medium 600; cmd-timeout-long 0;` in every global
//! section), `udev-always-use-vnr;` is printed when set (drbdadm drops it), and the
//! `disk { }` options of resource-level `volume N { }` blocks are printed in such blocks
//! after the host sections (plain drbdadm dump loses them).
//!
//! urbd's own `urbd-options` sections, which drbdadm does not know, are printed after the
//! resources (`all`) or after the one resource named, and only when the configuration has
//! them, so the dump of a file drbdadm reads is unchanged.

use std::fmt::Write;

use super::Config;
use super::error::ConfigError;
use super::model::{Global, Host, HostKind, MetaDiskSpec, Resource, Sections, UsageCount, Volume};
use super::options::Options;
use super::resolve::{
    device_path, effective_sections, startup_with_statements, volume_disk_options,
};
use super::urbd::{KEYWORD as URBD_OPTIONS, UrbdOptions, address_text};

/// How to dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// The node name for the `# resource X on NODE: ignored|not ignored` comment
    /// (`None`: the system host name).
    pub node: Option<String>,
    /// Inherit `common` into resources and disk options into volumes (`drbdadm -d dump`).
    pub expand: bool,
}

/// drbd-utils' `esc()`: quote when the value is empty, longer than 80 characters or has
/// a character outside `[a-zA-Z0-9/._-]`; inside quotes `"` and `\` get a backslash.
pub fn esc(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 80
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

struct Out {
    buf: String,
    indent: usize,
}

impl Out {
    fn pad(&self) -> String {
        " ".repeat(4 * self.indent)
    }

    /// `printI`: a line at the current indentation.
    fn line(&mut self, text: &str) {
        let pad = self.pad();
        let _ = writeln!(self.buf, "{pad}{text}");
    }

    /// `printA`: name left-aligned to column 24, value right-aligned in 3 columns.
    fn assign(&mut self, name: &str, value: &str) {
        let pad = self.pad();
        let width = 24usize.saturating_sub(4 * self.indent);
        let _ = writeln!(self.buf, "{pad}{name:<width$} {value:>3};");
    }

    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.indent += 1;
    }

    fn close(&mut self) {
        self.indent = self.indent.saturating_sub(1);
        self.line("}");
    }

    fn options(&mut self, name: &str, opts: &Options) {
        if opts.is_empty() {
            return;
        }
        self.open(name);
        for e in opts.iter() {
            match &e.value {
                // become-primary-on holds host names joined by spaces, printed raw.
                Some(v) if e.name == "become-primary-on" => self.assign(&e.name, v),
                Some(v) => self.assign(&e.name, &esc(v)),
                None => self.line(&format!("{};", e.name)),
            }
        }
        self.close();
    }

    fn sections(&mut self, s: &Sections) {
        self.options("options", &s.options);
        self.options("net", &s.net);
        self.options("disk", &s.disk);
        self.options("startup", &startup_with_statements(s));
        self.options("handlers", &s.handlers);
    }
}

fn system_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Dumps `which` (`None` or `"all"`: every resource, with the header, `global` and
/// `common`; a name: that resource only, as drbdadm does) for the system host name,
/// unexpanded, like `drbdadm dump`.
pub fn dump(config: &Config, which: Option<&str>) -> Result<String, ConfigError> {
    dump_with(config, which, &DumpOptions::default())
}

/// [`dump`] with a chosen node name and mode.
pub fn dump_with(
    config: &Config,
    which: Option<&str>,
    opts: &DumpOptions,
) -> Result<String, ConfigError> {
    let node = opts.node.clone().unwrap_or_else(system_hostname);
    let mut o = Out {
        buf: String::new(),
        indent: 0,
    };
    match which {
        None | Some("all") => {
            let _ = writeln!(o.buf, "# {}", config.path.display());
            global(&mut o, &config.global);
            if let Some(c) = &config.common {
                o.line("common {");
                o.indent += 1;
                o.sections(&c.sections);
                o.indent -= 1;
                o.buf.push_str("}\n\n");
            }
            for r in config.resources() {
                resource(&mut o, r, &node, opts.expand);
            }
            for u in config.resources().filter_map(Resource::urbd_options) {
                urbd_options(&mut o, u);
            }
        }
        Some(name) => {
            let r = config
                .resource(name)
                .ok_or_else(|| ConfigError::ResourceNotFound {
                    name: name.to_string(),
                })?;
            resource(&mut o, r, &node, opts.expand);
            if let Some(u) = r.urbd_options() {
                urbd_options(&mut o, u);
            }
        }
    }
    Ok(o.buf)
}

fn global(o: &mut Out, g: &Global) {
    let dialog = g.dialog_refresh.filter(|&d| d != 1);
    let usage = match g.usage_count {
        Some(UsageCount::Yes) => Some("yes"),
        Some(UsageCount::No) => Some("no"),
        Some(UsageCount::Ask) | None => None,
    };
    let any_timeout = g.cmd_timeout_short.is_some()
        || g.cmd_timeout_medium.is_some()
        || g.cmd_timeout_long.is_some();
    if g.minor_count.is_none()
        && !g.disable_ip_verification
        && dialog.is_none()
        && usage.is_none()
        && !g.udev_always_use_vnr
        && !any_timeout
    {
        return;
    }
    o.open("global");
    if g.disable_ip_verification {
        o.line("disable-ip-verification;");
    }
    if let Some(m) = g.minor_count {
        o.line(&format!("minor-count {m};"));
    }
    if let Some(d) = dialog {
        o.line(&format!("dialog-refresh {d};"));
    }
    if let Some(u) = usage {
        o.line(&format!("usage-count {u};"));
    }
    if g.udev_always_use_vnr {
        o.line("udev-always-use-vnr;");
    }
    for (name, v) in [
        ("cmd-timeout-short", g.cmd_timeout_short),
        ("cmd-timeout-medium", g.cmd_timeout_medium),
        ("cmd-timeout-long", g.cmd_timeout_long),
    ] {
        if let Some(v) = v {
            o.line(&format!("{name} {v};"));
        }
    }
    o.close();
    o.buf.push('\n');
}

fn resource(o: &mut Out, r: &Resource, node: &str, expand: bool) {
    let ignored = r.host_for(node).is_none();
    let _ = writeln!(
        o.buf,
        "# resource {} on {node}: {}, not stacked",
        esc(r.name()),
        if ignored { "ignored" } else { "not ignored" }
    );
    let _ = writeln!(o.buf, "# defined at {}:{}", r.file.display(), r.at.line);
    o.open(&format!("resource {}", esc(r.name())));
    let s = if expand {
        effective_sections(&r.sections, r.common.as_ref())
    } else {
        r.sections.clone()
    };
    for h in &r.hosts {
        host(o, r, h, &s, expand);
    }
    for v in r
        .volumes
        .iter()
        .filter(|v| !v.implicit && !v.disk_options.is_empty() && !expand)
    {
        o.open(&format!("volume {}", v.number));
        o.options("disk", &v.disk_options);
        o.close();
    }
    o.sections(&s);
    o.indent -= 1;
    o.buf.push_str("}\n\n");
}

fn urbd_options(o: &mut Out, u: &UrbdOptions) {
    let _ = writeln!(
        o.buf,
        "# {URBD_OPTIONS} {}: urbd only, drbd-utils refuses this section",
        esc(&u.resource)
    );
    o.open(&format!("{URBD_OPTIONS} {}", esc(&u.resource)));
    if let Some(a) = &u.nbd_listen {
        o.line(&format!("{:<16} {};", "nbd-listen", address_text(a)));
    }
    if let Some(t) = &u.tls {
        for (name, path) in [
            ("tls-cert", &t.cert),
            ("tls-key", &t.key),
            ("tls-ca", &t.ca),
        ] {
            o.line(&format!("{name:<16} {};", esc(&path.to_string_lossy())));
        }
    }
    if let Some(t) = &u.nbd_tls {
        o.line(&format!("{:<16} {};", "nbd-tls", t.mode.as_str()));
        o.line(&format!(
            "{:<16} {};",
            "nbd-tls-cert",
            esc(&t.cert.to_string_lossy())
        ));
        o.line(&format!(
            "{:<16} {};",
            "nbd-tls-key",
            esc(&t.key.to_string_lossy())
        ));
        if let Some(ca) = &t.ca {
            o.line(&format!(
                "{:<16} {};",
                "nbd-tls-ca",
                esc(&ca.to_string_lossy())
            ));
        }
    }
    if let Some(g) = &u.control_group {
        o.line(&format!("{:<16} {};", "control-group", esc(g)));
    }
    if let Some(a) = &u.metrics_listen {
        o.line(&format!("{:<16} {};", "metrics-listen", address_text(a)));
    }
    o.indent -= 1;
    o.buf.push_str("}\n\n");
}

fn host(o: &mut Out, r: &Resource, h: &Host, s: &Sections, expand: bool) {
    match (&h.kind, &h.address) {
        (HostKind::Floating, Some(a)) => o.open(&format!("floating {a}")),
        _ => o.open(&format!("on {}", h.display_name())),
    }
    o.options("options", &h.options);
    for v in &h.volumes {
        volume(o, r, v, s, expand);
    }
    if let (HostKind::On(_), Some(a)) = (&h.kind, &h.address) {
        o.line(&format!("{:<16} {a};", "address"));
    }
    o.close();
}

fn volume(o: &mut Out, r: &Resource, v: &Volume, s: &Sections, expand: bool) {
    if !v.implicit {
        o.open(&format!("volume {}", v.number));
    }
    let disk_opts = if expand {
        volume_disk_options(r, &s.disk, v)
    } else {
        v.disk_options.clone()
    };
    o.options("disk", &disk_opts);
    let dev = if expand {
        device_path(v)
    } else {
        v.device.clone()
    };
    let width = 19usize.saturating_sub(4 * o.indent);
    let mut line = format!("{}device{:width$}", o.pad(), "");
    if let Some(d) = dev {
        line.push_str(&esc(&d.to_string_lossy()));
        line.push(' ');
    }
    let _ = writeln!(line, "minor {};", v.minor.unwrap_or(0));
    o.buf.push_str(&line);
    if let Some(d) = &v.disk {
        o.assign("disk", &esc(&d.to_string_lossy()));
    }
    match &v.meta_disk {
        Some(MetaDiskSpec::Internal) => o.assign("meta-disk", "internal"),
        Some(MetaDiskSpec::Flexible { path }) => o.line(&format!(
            "{:<16} {};",
            "meta-disk",
            esc(&path.to_string_lossy())
        )),
        Some(MetaDiskSpec::Indexed { path, index }) => {
            o.line(&format!(
                "{:<16} {} [{index}];",
                "meta-disk",
                esc(&path.to_string_lossy())
            ));
        }
        None => {}
    }
    if !v.implicit {
        o.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_matches_drbd_utils() {
        assert_eq!(esc("/dev/vdb1"), "/dev/vdb1");
        assert_eq!(esc(""), "\"\"");
        assert_eq!(esc("a b"), "\"a b\"");
        assert_eq!(esc("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(esc(&"x".repeat(81)), format!("\"{}\"", "x".repeat(81)));
    }

    #[test]
    fn plain_dump_has_drbdadm_shape() {
        let text = "resource r0 {\n  net { protocol C; max-buffers 8k; }\n  on astapor { device /dev/drbd0; disk /dev/vdb1; meta-disk /dev/vdc1[0]; address 172.17.18.191:7788; }\n  on braavos { device /dev/drbd0; disk /dev/vdb1; meta-disk internal; address 172.17.18.192:7788; }\n}\n";
        let c = Config::parse_str(text, "/etc/drbd.d/r0.res").unwrap();
        let d = dump_with(
            &c,
            Some("r0"),
            &DumpOptions {
                node: Some("astapor".into()),
                expand: false,
            },
        )
        .unwrap();
        let want = "# resource r0 on astapor: not ignored, not stacked
# defined at /etc/drbd.d/r0.res:1
resource r0 {
    on astapor {
        device           /dev/drbd0 minor 0;
        disk             /dev/vdb1;
        meta-disk        /dev/vdc1 [0];
        address          ipv4 172.17.18.191:7788;
    }
    on braavos {
        device           /dev/drbd0 minor 0;
        disk             /dev/vdb1;
        meta-disk        internal;
        address          ipv4 172.17.18.192:7788;
    }
    net {
        protocol           C;
        max-buffers       8k;
    }
}

";
        assert_eq!(d, want);
    }
}
