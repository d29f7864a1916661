//! `urbd-options`: parsing, every error, node resolution and dump.

use std::net::SocketAddr;

use proptest::prelude::*;

use crate::config::limits::MAX_RESOURCES;
use crate::config::{Config, ConfigError, DumpOptions, dump_with};

/// A valid two-host resource `name` (ports from `port`, so several can coexist).
fn res(name: &str, port: u16) -> String {
    format!(
        "resource {name} {{
  on a {{ device minor {m}; disk /d{name}; meta-disk internal; address 10.0.0.1:{port}; }}
  on b {{ device minor {m}; disk /d{name}; meta-disk internal; address 10.0.0.2:{port}; }}
}}
",
        m = port - 7000
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_str(text, "t.conf")
}

/// The error for `text`, which must be a configuration error (exit code 10).
fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 10, "{e}");
            e
        }
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn nbd_listen_reaches_every_node_of_its_resource_only() {
    let text = format!(
        "{}{}urbd-options r {{\n    nbd-listen 0.0.0.0:10809;  # comment\n}}\n",
        res("r", 7000),
        res("s", 7001)
    );
    let c = parse(&text).unwrap();
    let r = c.resource("r").unwrap();
    for node in ["a", "b"] {
        assert_eq!(
            r.for_node(node).unwrap().nbd_listen,
            Some(sa("0.0.0.0:10809"))
        );
    }
    assert_eq!(
        c.resource("s").unwrap().for_node("a").unwrap().nbd_listen,
        None
    );
    let u = c.urbd_options("r").unwrap();
    assert_eq!(u.resource, "r");
    assert_eq!((u.at.file.as_str(), u.at.line, u.at.col), ("t.conf", 9, 14));
    assert!(c.urbd_options("s").is_none());
    assert!(c.urbd_options("nope").is_none());
}

#[test]
fn address_forms_are_drbds() {
    for (written, want) in [
        ("10.1.2.3:10809", "10.1.2.3:10809"),
        ("ipv4 127.0.0.1:1", "127.0.0.1:1"),
        ("ipv6 [::1]:10809", "[::1]:10809"),
        ("ipv6 [fd00::12:1]:65535", "[fd00::12:1]:65535"),
        ("ipv6 [::ffff:10.0.0.1]:10809", "[::ffff:10.0.0.1]:10809"),
    ] {
        let text = format!(
            "{}urbd-options r {{ nbd-listen {written}; }}",
            res("r", 7000)
        );
        let c = parse(&text).unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(c.urbd_options("r").unwrap().nbd_listen, Some(sa(want)));
    }
}

#[test]
fn section_may_come_before_the_resource_and_may_be_empty() {
    let text = format!("urbd-options \"r\" {{ }}\n{}", res("r", 7000));
    let c = parse(&text).unwrap();
    assert_eq!(c.urbd_options("r").unwrap().nbd_listen, None);
    assert_eq!(
        c.resource("r").unwrap().for_node("a").unwrap().nbd_listen,
        None
    );
}

#[test]
fn unknown_resource_is_named_at_its_place() {
    let text = format!(
        "{}\nurbd-options optzimbar {{ nbd-listen 0.0.0.0:10809; }}",
        res("r", 7000)
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::UnknownResource { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "t.conf:6:14: urbd-options names resource 'optzimbar', which is not defined in any file read"
    );
}

#[test]
fn second_section_for_a_resource_is_refused_with_both_places() {
    let text = format!(
        "{}urbd-options r {{ nbd-listen 0.0.0.0:1; }}\nurbd-options r {{ }}\n",
        res("r", 7000)
    );
    let e = err(&text);
    assert_eq!(
        e.to_string(),
        "t.conf:6:14: urbd-options section for resource 'r' already used at t.conf:5:14"
    );
    // even when neither names an existing resource: the duplicate is found first
    let e = err("urbd-options x { }\nurbd-options x { }\n");
    assert!(matches!(e, ConfigError::Duplicate { .. }), "{e:?}");
}

#[test]
fn second_nbd_listen_is_refused() {
    let text = format!(
        "{}urbd-options r {{\n nbd-listen 0.0.0.0:1;\n nbd-listen 0.0.0.0:2;\n}}",
        res("r", 7000)
    );
    let e = err(&text).to_string();
    assert!(
        e.starts_with("t.conf:7:2: option 'r: nbd-listen' already used at t.conf:6:2"),
        "{e}"
    );
}

#[test]
fn bad_addresses_are_refused_at_the_value() {
    for (written, want) in [
        (
            "999.1.1.1:10809",
            "t.conf:5:29: invalid value 'ipv4 999.1.1.1:10809' for nbd-listen: not an IPv4 address",
        ),
        (
            "ipv6 [fe80::1%eth0]:10809",
            "t.conf:5:29: invalid value 'ipv6 [fe80::1%eth0]:10809' for nbd-listen: IPv6 zone indexes (%...) are not supported here",
        ),
        (
            "0.0.0.0:0",
            "t.conf:5:37: invalid value '0' for port: 0 out of range [1..65535]",
        ),
        (
            "0.0.0.0:65536",
            "t.conf:5:37: invalid value '65536' for port: 65536 out of range [1..65535]",
        ),
        (
            "0.0.0.0;",
            "t.conf:5:36: syntax error: expected ':', found ';'",
        ),
        (
            "localhost:10809",
            "t.conf:5:29: syntax error: expected ipv4 | ipv6 | <ipv4 address>, found 'localhost'",
        ),
        (
            "ipv6 [10.0.0.1]:1",
            "t.conf:5:35: syntax error: expected an IPv6 address, found address '10.0.0.1'",
        ),
        (
            "ipv6 ::1:10809",
            "t.conf:5:34: syntax error: expected '[', found address '::1:1080'",
        ),
        (
            "sdp 10.0.0.1:1",
            "t.conf:5:29: 'address family sdp' is valid DRBD but not supported by urbd",
        ),
    ] {
        let text = format!(
            "{}urbd-options r {{ nbd-listen {written}; }}",
            res("r", 7000)
        );
        assert_eq!(err(&text).to_string(), want, "{written}");
    }
}

#[test]
fn unknown_option_names_the_section() {
    for (body, word) in [("nbd-port 10809;", "nbd-port"), ("protocol C;", "protocol")] {
        let text = format!("{}urbd-options r {{\n  {body}\n}}", res("r", 7000));
        let e = err(&text);
        assert!(matches!(e, ConfigError::Unknown { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "t.conf:6:3: unknown option '{word}' in urbd-options section of resource r \
                 (urbd options: nbd-listen, tls-cert, tls-key, tls-ca, nbd-tls, nbd-tls-cert, nbd-tls-key, nbd-tls-ca, control-group, metrics-listen)"
            )
        );
    }
    let e = err(&format!("{}urbd-options r {{ ; }}", res("r", 7000))).to_string();
    assert!(
        e.contains("expected an option of the urbd-options section or '}'"),
        "{e}"
    );
    let e = err("urbd-options { }").to_string();
    assert!(e.contains("expected a resource name"), "{e}");
    let e = err("urbd-options r { nbd-listen 0.0.0.0:1; ").to_string();
    assert!(e.contains("found end of file"), "{e}");
}

#[test]
fn section_is_top_level_only() {
    let text = res("r", 7000).replacen("resource r {", "resource r {\n urbd-options r { }", 1);
    let e = err(&text).to_string();
    assert!(e.starts_with("t.conf:2:2:"), "{e}");
}

#[test]
fn number_of_sections_is_capped() {
    let text: String = (0..=MAX_RESOURCES)
        .map(|i| format!("urbd-options r{i} {{ }}\n"))
        .collect();
    let e = err(&text);
    assert!(matches!(e, ConfigError::Limit { .. }), "{e:?}");
}

#[test]
fn parsing_without_includes_knows_the_section() {
    let text = format!(
        "{}urbd-options r {{ nbd-listen 0.0.0.0:10809; }}",
        res("r", 7000)
    );
    let c = Config::parse_str_no_includes(&text, "fuzz.conf").unwrap();
    assert!(c.urbd_options("r").is_some());
}

fn dump_as_a(c: &Config, which: Option<&str>) -> String {
    let opts = DumpOptions {
        node: Some("a".into()),
        expand: false,
    };
    dump_with(c, which, &opts).unwrap()
}

#[test]
fn dump_prints_sections_after_the_resources_and_round_trips() {
    let plain = format!("{}{}", res("r", 7000), res("s", 7001));
    let without = parse(&plain).unwrap();
    let text = format!(
        "{plain}urbd-options s {{ nbd-listen ipv6 [::1]:10810; }}\nurbd-options r {{ nbd-listen 0.0.0.0:10809; }}\n"
    );
    let with = parse(&text).unwrap();
    let all = dump_as_a(&with, None);
    // exactly the drbd dump, then the sections in resource order
    let want_tail = "# urbd-options r: urbd only, drbd-utils refuses this section
urbd-options r {
    nbd-listen       ipv4 0.0.0.0:10809;
}

# urbd-options s: urbd only, drbd-utils refuses this section
urbd-options s {
    nbd-listen       ipv6 [::1]:10810;
}

";
    assert_eq!(all, format!("{}{want_tail}", dump_as_a(&without, None)));
    let again = Config::parse_str(&all, "again.conf").unwrap();
    assert_eq!(
        again.urbd_options("s").unwrap().nbd_listen,
        Some(sa("[::1]:10810"))
    );
    assert_eq!(
        again
            .resource("r")
            .unwrap()
            .for_node("b")
            .unwrap()
            .nbd_listen,
        Some(sa("0.0.0.0:10809"))
    );
    // one resource: its own section follows it
    let one = dump_as_a(&with, Some("r"));
    assert_eq!(
        one,
        format!(
            "{}{}",
            dump_as_a(&without, Some("r")),
            want_tail.split("\n\n").next().unwrap().to_string() + "\n\n"
        )
    );
    // a configuration without sections dumps no trace of them
    assert!(!dump_as_a(&without, None).contains("urbd-options"));
    let empty = parse(&format!("{plain}urbd-options r {{ }}")).unwrap();
    assert!(dump_as_a(&empty, Some("r")).ends_with("urbd-options r {\n}\n\n"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Whatever is accepted around a section is dumped and accepted again, with the same
    /// sections.
    #[test]
    fn mutated_section_never_panics(pos in 0usize..120, len in 0usize..12, ins in "\\PC{0,10}") {
        let mut s = format!("{}urbd-options r {{ nbd-listen ipv6 [::1]:10809; }}\n", res("r", 7000));
        let pos = s.len() - 120 + pos.min(119);
        let start = (0..=pos).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
        s.replace_range(start..end, &ins);
        if let Ok(c) = Config::parse_str_no_includes(&s, "fuzz.conf") {
            let text = dump_as_a(&c, None);
            let again = Config::parse_str_no_includes(&text, "again.conf");
            prop_assert!(again.is_ok(), "{}", text);
            let again = again.unwrap();
            for r in c.resources() {
                prop_assert_eq!(c.urbd_options(r.name()).map(|u| u.nbd_listen), again.urbd_options(r.name()).map(|u| u.nbd_listen));
            }
        }
    }
}

#[test]
fn tls_files_and_control_group_reach_every_node() {
    let text = format!(
        "{}urbd-options r {{\n  tls-cert /etc/urbd/node.pem;\n  tls-key \"/etc/urbd/node key.pem\";\n  tls-ca /etc/urbd/ca.pem;\n  control-group drbd-admins;\n}}\n",
        res("r", 7000)
    );
    let c = parse(&text).unwrap();
    for node in ["a", "b"] {
        let v = c.resource("r").unwrap().for_node(node).unwrap();
        let t = v.tls.expect("tls");
        assert_eq!(t.cert, std::path::PathBuf::from("/etc/urbd/node.pem"));
        assert_eq!(t.key, std::path::PathBuf::from("/etc/urbd/node key.pem"));
        assert_eq!(t.ca, std::path::PathBuf::from("/etc/urbd/ca.pem"));
        assert_eq!(v.control_group.as_deref(), Some("drbd-admins"));
    }
    let dumped = dump_with(&c, None, &DumpOptions::default()).unwrap();
    assert!(
        dumped.contains("tls-key          \"/etc/urbd/node key.pem\";"),
        "{dumped}"
    );
    assert!(dumped.contains("control-group    drbd-admins;"), "{dumped}");
    // The dump reads back to the same settings.
    let again = parse(&dumped).unwrap();
    assert_eq!(
        again.urbd_options("r"),
        c.urbd_options("r")
            .map(|u| {
                let mut u = u.clone();
                u.at = again.urbd_options("r").unwrap().at.clone();
                u
            })
            .as_ref()
    );
}

#[test]
fn tls_needs_all_three_files() {
    for (given, missing) in [
        ("tls-cert /c;", "tls-key, tls-ca"),
        ("tls-cert /c; tls-key /k;", "tls-ca"),
        ("tls-ca /a; tls-key /k;", "tls-cert"),
    ] {
        let e = err(&format!("{}urbd-options r {{ {given} }}", res("r", 7000)));
        let msg = e.to_string();
        assert!(
            msg.contains("TLS needs tls-cert, tls-key and tls-ca"),
            "{msg}"
        );
        assert!(msg.ends_with(&format!("missing: {missing}")), "{msg}");
    }
    let e = err(&format!(
        "{}urbd-options r {{ tls-ca /a; tls-ca /b; }}",
        res("r", 7000)
    ));
    assert!(e.to_string().contains("already used"), "{e}");
    let e = err(&format!(
        "{}urbd-options r {{ control-group -x; }}",
        res("r", 7000)
    ));
    assert!(e.to_string().contains("not a group name"), "{e}");
}

#[test]
fn nbd_tls_reaches_every_node_and_round_trips() {
    for (mode, want) in [
        ("on", crate::config::NbdTlsMode::On),
        ("require", crate::config::NbdTlsMode::Require),
    ] {
        let text = format!(
            "{}urbd-options r {{\n  nbd-listen 0.0.0.0:10809;\n  nbd-tls {mode};\n  nbd-tls-cert /etc/urbd/nbd.pem;\n  nbd-tls-key \"/etc/urbd/nbd key.pem\";\n  nbd-tls-ca /etc/urbd/clients.pem;\n}}\n",
            res("r", 7000)
        );
        let c = parse(&text).unwrap();
        for node in ["a", "b"] {
            let v = c.resource("r").unwrap().for_node(node).unwrap();
            let t = v.nbd_tls.expect("nbd tls");
            assert_eq!(t.mode, want);
            assert_eq!(t.cert, std::path::PathBuf::from("/etc/urbd/nbd.pem"));
            assert_eq!(t.key, std::path::PathBuf::from("/etc/urbd/nbd key.pem"));
            assert_eq!(
                t.ca,
                Some(std::path::PathBuf::from("/etc/urbd/clients.pem"))
            );
            // The replication link's TLS is a separate setting.
            assert_eq!(v.tls, None);
        }
        let dumped = dump_with(&c, None, &DumpOptions::default()).unwrap();
        assert!(
            dumped.contains(&format!("nbd-tls          {mode};")),
            "{dumped}"
        );
        let again = parse(&dumped).unwrap();
        assert_eq!(
            again.urbd_options("r").unwrap().nbd_tls,
            c.urbd_options("r").unwrap().nbd_tls
        );
    }
    // `off` is the default and takes no files; the CA is optional.
    let c = parse(&format!(
        "{}urbd-options r {{ nbd-listen 127.0.0.1:1; nbd-tls off; }}",
        res("r", 7000)
    ))
    .unwrap();
    assert_eq!(c.urbd_options("r").unwrap().nbd_tls, None);
    let c = parse(&format!(
        "{}urbd-options r {{ nbd-listen 127.0.0.1:1; nbd-tls require; nbd-tls-key /k; nbd-tls-cert /c; }}",
        res("r", 7000)
    ))
    .unwrap();
    assert_eq!(
        c.urbd_options("r").unwrap().nbd_tls.clone().unwrap().ca,
        None
    );
}

#[test]
fn nbd_tls_half_settings_are_refused() {
    for (given, says) in [
        (
            "nbd-listen 127.0.0.1:1; nbd-tls on; nbd-tls-cert /c;",
            "nbd-tls on needs nbd-tls-cert and nbd-tls-key",
        ),
        (
            "nbd-tls require; nbd-tls-cert /c; nbd-tls-key /k;",
            "nbd-tls require needs nbd-listen",
        ),
        (
            "nbd-listen 127.0.0.1:1; nbd-tls-cert /c; nbd-tls-key /k;",
            "take effect only with nbd-tls on or require",
        ),
        (
            "nbd-listen 127.0.0.1:1; nbd-tls off; nbd-tls-ca /a;",
            "take effect only with nbd-tls on or require",
        ),
        ("nbd-tls yes;", "expected off, on or require"),
        ("nbd-tls on; nbd-tls off;", "already used"),
    ] {
        let e = err(&format!("{}urbd-options r {{ {given} }}", res("r", 7000)));
        assert!(e.to_string().contains(says), "{given}: {e}");
    }
}
