//! Tests of the module as a whole: inheritance, node resolution, every error, includes,
//! and never panicking on any input.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

const SEED: &str = r#"
resource optzimbra {
    protocol C;
    startup { wfc-timeout 30; degr-wfc-timeout 15; }
    net { after-sb-0pri discard-zero-changes; after-sb-1pri discard-secondary; after-sb-2pri disconnect; }
    syncer { rate 40M; verify-alg sha1; }
    on astapor {
        device /dev/drbd0;
        disk /dev/vdb1;
        address 172.17.18.191:7788;
        meta-disk /dev/vdc1[0];
    }
    on braavos {
        device /dev/drbd0;
        disk /dev/vdb1;
        address 172.17.18.192:7788;
        meta-disk /dev/vdc1 [0];
    }
}
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_str(text, "t.res")
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 10);
            e.to_string()
        }
    }
}

/// A two-host resource body around `extra` (resource level) with host statements `h`.
fn two_hosts(extra: &str) -> String {
    format!(
        "resource r {{ {extra}
  on a {{ device minor 0; disk /d0; meta-disk internal; address 10.0.0.1:7000; }}
  on b {{ device minor 0; disk /d0; meta-disk internal; address 10.0.0.2:7000; }}
}}"
    )
}

// ---- node resolution ----------------------------------------------------------------

#[test]
fn seed_resolves_for_both_nodes() {
    let c = parse(SEED).unwrap();
    assert_eq!(c.resource_names(), ["optzimbra"]);
    let r = c.resource("optzimbra").unwrap();
    assert_eq!(r.host_names(), ["astapor", "braavos"]);
    let v = r.for_node("astapor").unwrap();
    assert_eq!(v.node, "astapor");
    assert_eq!(v.address.to_string(), "ipv4 172.17.18.191:7788");
    assert_eq!(v.address.port, 7788);
    let peer = v.peer.as_ref().unwrap();
    assert_eq!(peer.name, "braavos");
    assert_eq!(peer.address.host, "172.17.18.192");
    assert_eq!(v.protocol, Protocol::C);
    assert_eq!(v.volumes.len(), 1);
    let vol = &v.volumes[0];
    assert_eq!((vol.volume, vol.minor), (0, 0));
    assert_eq!(vol.device_path.as_deref(), Some(Path::new("/dev/drbd0")));
    assert_eq!(vol.disk, PathBuf::from("/dev/vdb1"));
    assert_eq!(
        vol.meta_disk,
        MetaDiskSpec::Indexed {
            path: "/dev/vdc1".into(),
            index: 0
        }
    );
    // syncer rate -> disk resync-rate, verify-alg -> net
    assert_eq!(v.disk.get("resync-rate"), Some("40M"));
    assert_eq!(v.disk.get_scaled("resync-rate"), Some(Ok(40 * 1024)));
    assert_eq!(v.net.get("verify-alg"), Some("sha1"));
    assert_eq!(vol.disk_opts.get("resync-rate"), Some("40M"));
    let b = r.for_node("braavos").unwrap();
    assert_eq!(b.peer.unwrap().name, "astapor");
}

#[test]
fn no_section_for_this_node_names_node_and_hosts() {
    let c = parse(SEED).unwrap();
    let e = c
        .resource("optzimbra")
        .unwrap()
        .for_node("carcosa")
        .unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("t.res:2:20: "), "{s}");
    assert!(
        s.contains("carcosa") && s.contains("astapor, braavos"),
        "{s}"
    );
    assert_eq!(e.exit_code(), 10);
}

#[test]
fn a_node_needs_a_peer() {
    let c = parse(
        "resource r { on a { device minor 0; disk /d; meta-disk internal; address 10.0.0.1:1; } }",
    )
    .unwrap();
    let e = c.resource("r").unwrap().for_node("a").unwrap_err();
    assert!(matches!(e, ConfigError::NeedTwoHosts { .. }), "{e}");
    assert!(e.to_string().contains("needs two host sections"), "{e}");
}

#[test]
fn loopback_pair_on_one_machine() {
    let text = "resource loop {
  on alpha { device minor 0; disk /tmp/a.img; meta-disk /tmp/a.meta[0]; address 127.0.0.1:7789; }
  on beta { device minor 1; disk /tmp/b.img; meta-disk /tmp/b.meta[0]; address 127.0.0.1:7790; }
}";
    let c = parse(text).unwrap();
    let r = c.resource("loop").unwrap();
    let a = r.for_node("alpha").unwrap();
    let b = r.for_node("beta").unwrap();
    assert_eq!((a.address.port, b.address.port), (7789, 7790));
    assert_eq!(a.peer.unwrap().address.port, 7790);
    assert_eq!(b.volumes[0].minor, 1);
    assert_eq!(
        b.volumes[0].device_path.as_deref(),
        Some(Path::new("/dev/drbd1"))
    );
}

#[test]
fn multi_name_and_floating_sections() {
    let text = "resource r {
  device minor 3; disk /d; meta-disk internal;
  on a b { address 10.0.0.1:7000; }
  floating ipv6 [fd00::2]:7000;
}";
    let c = parse(text).unwrap();
    let r = c.resource("r").unwrap();
    assert_eq!(r.host_names(), ["a", "b", "ipv6 [fd00::2]:7000"]);
    let v = r.for_node("b").unwrap();
    assert_eq!(v.peer.unwrap().address.to_string(), "ipv6 [fd00::2]:7000");
    let f = r.for_node("fd00::2").unwrap();
    assert_eq!(f.address.family, AddressFamily::Ipv6);
    assert_eq!(f.volumes[0].minor, 3);
}

// ---- inheritance --------------------------------------------------------------------

#[test]
fn common_is_inherited_option_by_option() {
    let text = format!(
        "common {{ net {{ protocol A; max-buffers 8k; }} disk {{ on-io-error detach; }}
                  startup {{ wfc-timeout 5; become-primary-on a; }} handlers {{ split-brain \"x y\"; }} }}
         {}",
        two_hosts("net { protocol B; } disk { no-md-flushes; }")
    );
    let c = parse(&text).unwrap();
    let v = c.resource("r").unwrap().for_node("a").unwrap();
    assert_eq!(v.protocol, Protocol::B);
    let net: Vec<_> = v
        .net
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(net, [("max-buffers", Some("8k")), ("protocol", Some("B"))]);
    assert_eq!(v.disk.get("md-flushes"), Some("no"));
    assert_eq!(v.disk.get("on-io-error"), Some("detach"));
    assert_eq!(v.startup.get("become-primary-on"), Some("a"));
    assert_eq!(v.handlers.get("split-brain"), Some("x y"));
    // resource disk options (common included) reach the volume
    assert_eq!(v.volumes[0].disk_opts.get("on-io-error"), Some("detach"));
}

#[test]
fn resource_statements_are_inherited_only_when_written_before_the_host() {
    let before = "resource r { device minor 0; disk /d; meta-disk internal;
        on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }";
    assert!(parse(before).is_ok());
    let after = "resource r { on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; }
        device minor 0; disk /d; meta-disk internal; }";
    // drbdadm: the host sections had no volume; then the resource-level volume 0 is
    // not in any host, which is fine for drbdadm too: nothing to resolve.
    let c = parse(after).unwrap();
    assert!(
        c.resource("r")
            .unwrap()
            .for_node("a")
            .unwrap()
            .volumes
            .is_empty()
    );
}

#[test]
fn volume_level_disk_options_lose_to_resource_disk_options() {
    let text = "resource r {
  disk { resync-rate 1M; }
  volume 0 { device minor 0; meta-disk internal; disk { resync-rate 5M; c-max-rate 300M; } }
  on a { volume 0 { disk /a; } address 10.0.0.1:1; }
  on b { volume 0 { disk /b; } address 10.0.0.2:1; }
}";
    let c = parse(text).unwrap();
    let v = c.resource("r").unwrap().for_node("b").unwrap();
    assert_eq!(v.volumes[0].disk_opts.get("resync-rate"), Some("1M"));
    assert_eq!(v.volumes[0].disk_opts.get("c-max-rate"), Some("300M"));
    assert_eq!(v.volumes[0].disk, PathBuf::from("/b"));
}

#[test]
fn flags_aliases_and_deprecated_options_normalize() {
    let c = parse(&two_hosts(
        "net { allow-two-primaries; tcp-cork no; always-asbp yes; no-tcp-cork; }
         disk { rate 10M; after r; delay-probe-volume 5; }
         handlers { outdate-peer /bin/true; }",
    ))
    .unwrap();
    let s = &c.resource("r").unwrap().sections;
    let net: Vec<_> = s
        .net
        .iter()
        .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        net,
        [
            "allow-two-primaries=yes",
            "tcp-cork=no",
            "always-asbp=yes",
            "tcp-cork=no"
        ]
    );
    assert_eq!(s.disk.get("resync-rate"), Some("10M"));
    assert_eq!(s.disk.get("resync-after"), Some("r"));
    assert!(!s.disk.contains("delay-probe-volume"));
    assert_eq!(s.handlers.get("fence-peer"), Some("/bin/true"));
}

#[test]
fn device_forms() {
    let dev = |stmt: &str| {
        let text = format!(
            "resource r {{ {stmt} disk /d; meta-disk internal; on a {{ address 10.0.0.1:1; }} on b {{ address 10.0.0.2:1; }} }}"
        );
        parse(&text).map(|c| {
            let v = c.resource("r").unwrap().for_node("a").unwrap();
            (
                v.volumes[0].device_path.clone().unwrap(),
                v.volumes[0].minor,
            )
        })
    };
    assert_eq!(dev("device /dev/drbd7;").unwrap(), ("/dev/drbd7".into(), 7));
    assert_eq!(dev("device drbd7;").unwrap(), ("/dev/drbd7".into(), 7));
    assert_eq!(dev("device minor 9;").unwrap(), ("/dev/drbd9".into(), 9));
    assert_eq!(
        dev("device /dev/drbd_x minor 2;").unwrap(),
        ("/dev/drbd_x".into(), 2)
    );
    assert_eq!(dev("device /dev/nbd3;").unwrap(), ("/dev/nbd3".into(), 3));
    assert_eq!(
        dev("device /dev/nbd3 minor 0;").unwrap(),
        ("/dev/nbd3".into(), 0)
    );
    let e = dev("device /dev/drbd1 minor 2;").unwrap_err().to_string();
    assert!(e.contains("must match"), "{e}");
    let e = dev("device /dev/sda;").unwrap_err().to_string();
    assert!(e.contains("must start with /dev/drbd"), "{e}");
    let e = dev("device /dev/drbd_x;").unwrap_err().to_string();
    assert!(e.contains("no minor given"), "{e}");
}

#[test]
fn meta_disk_forms() {
    let md = |stmt: &str| {
        let text = format!(
            "resource r {{ device minor 0; disk /d; {stmt} on a {{ address 10.0.0.1:1; }} on b {{ address 10.0.0.2:1; }} }}"
        );
        parse(&text).map(|c| {
            c.resource("r").unwrap().for_node("a").unwrap().volumes[0]
                .meta_disk
                .clone()
        })
    };
    assert_eq!(md("meta-disk internal;").unwrap(), MetaDiskSpec::Internal);
    assert_eq!(
        md("meta-disk /m[3];").unwrap(),
        MetaDiskSpec::Indexed {
            path: "/m".into(),
            index: 3
        }
    );
    assert_eq!(
        md("meta-disk /m [3];").unwrap(),
        MetaDiskSpec::Indexed {
            path: "/m".into(),
            index: 3
        }
    );
    assert_eq!(
        md("meta-disk /m;").unwrap(),
        MetaDiskSpec::Flexible { path: "/m".into() }
    );
    assert_eq!(
        md("flexible-meta-disk /m;").unwrap(),
        MetaDiskSpec::Flexible { path: "/m".into() }
    );
    assert_eq!(
        md("flexible-meta-disk internal;").unwrap(),
        MetaDiskSpec::Internal
    );
    assert!(md("meta-disk internal [0];").is_err());
}

// ---- errors -------------------------------------------------------------------------

#[test]
fn syntax_error_says_expected_and_found_with_position() {
    let e = err("resource r {\n  on a {\n    disk /d\n  }\n}");
    assert_eq!(e, "t.res:4:3: syntax error: expected ';', found '}'");
    let e = err("resourse r { }");
    assert!(
        e.starts_with("t.res:1:1: syntax error: expected global | common | resource"),
        "{e}"
    );
    let e = err("resource r {");
    assert!(e.contains("found end of file"), "{e}");
}

#[test]
fn unknown_option_names_the_section() {
    let e = err(&two_hosts("net { foo 1; }"));
    assert!(
        e.starts_with("t.res:1:20: unknown option 'foo' in net section of resource r"),
        "{e}"
    );
    let e = err(&two_hosts("net { size 1G; }"));
    assert!(e.contains("belongs in the disk section"), "{e}");
    let e = err(&two_hosts("syncer { no-disk-flushes; }"));
    assert!(e.contains("syncer section"), "{e}");
    let e = err("global { frobnicate; }");
    assert!(
        e.contains("unknown keyword 'frobnicate' in global section"),
        "{e}"
    );
    let e = err(&two_hosts("bogus;"));
    assert!(e.contains("unknown keyword 'bogus' in resource r"), "{e}");
    // drbdadm refuses discard-my-data in a configuration file
    assert!(err(&two_hosts("net { discard-my-data; }")).contains("discard-my-data"));
}

#[test]
fn invalid_values_are_refused() {
    let e = err(&two_hosts("net { max-buffers 8; }"));
    assert!(
        e.contains("invalid value '8' for max-buffers: 8 out of range [32..131072]"),
        "{e}"
    );
    let e = err(&two_hosts("protocol D;"));
    assert!(e.contains("protocol"), "{e}");
    let e = err(&two_hosts("disk { size 10x; }"));
    assert!(e.contains("not a valid unit"), "{e}");
    let e = err(&two_hosts("disk { on-io-error explode; }"));
    assert!(e.contains("expected one of: pass_on"), "{e}");
    let e = err(
        "resource r { on a { device minor 0; disk /d; meta-disk internal; address 10.0.0.1:99999; } }",
    );
    assert!(e.contains("port"), "{e}");
}

#[test]
fn duplicates_are_refused_with_both_places() {
    let r = |name: &str, minor: u32, port: u32| {
        format!(
            "resource {name} {{ on a {{ device minor {minor}; disk /d{name}; meta-disk internal; address 10.0.0.1:{port}; }}
                               on b {{ device minor {minor}; disk /d{name}; meta-disk internal; address 10.0.0.2:{port}; }} }}\n"
        )
    };
    let e = err(&format!("{}{}", r("x", 0, 1), r("x", 1, 2)));
    assert!(
        e.starts_with("t.res:3:10: resource 'x' already used at t.res:1:10"),
        "{e}"
    );
    let e = err(&format!("{}{}", r("x", 0, 1), r("y", 0, 2)));
    assert!(e.contains("minor 'a:0' already used at t.res:1:"), "{e}");
    let e = err(&format!("{}{}", r("x", 0, 1), r("y", 1, 1)));
    assert!(e.contains("address '10.0.0.1:1' already used"), "{e}");
    let e = err(&two_hosts("net { } net { }"));
    assert!(e.contains("net section"), "{e}");
    let e = err("global { } global { }");
    assert!(e.contains("'global' already used"), "{e}");
    let e = err("resource r { on a { address 10.0.0.1:1; address 10.0.0.1:2; } }");
    assert!(e.contains("address statement"), "{e}");
}

#[test]
fn loopback_addresses_are_unique_per_host_name() {
    let t = |p2: u32| {
        format!(
            "resource r {{ on a {{ device minor 0; disk /d; meta-disk internal; address 127.0.0.1:1; }}
                          on b {{ device minor 0; disk /d; meta-disk internal; address 127.0.0.1:{p2}; }} }}"
        )
    };
    assert!(parse(&t(1)).is_ok());
    let e = err(&format!(
        "{} resource s {{ on a {{ device minor 1; disk /e; meta-disk internal; address 127.0.0.1:1; }}
                         on b {{ device minor 1; disk /e; meta-disk internal; address 127.0.0.1:2; }} }}",
        t(3)
    ));
    assert!(e.contains("address 'a:127.0.0.1:1'"), "{e}");
}

#[test]
fn missing_statements_name_the_keyword_and_host() {
    let e = err("resource r { on a { device minor 0; disk /d; address 10.0.0.1:1; } }");
    assert_eq!(
        e,
        "t.res:1:14: in resource r, on a: 'meta-disk' statement missing"
    );
    let e = err("resource r { on a { device minor 0; meta-disk internal; address 10.0.0.1:1; } }");
    assert!(e.contains("'disk' statement missing"), "{e}");
    let e = err("resource r { on a { device minor 0; disk /d; meta-disk internal; } }");
    assert!(e.contains("'address' statement missing"), "{e}");
    let e = err("resource r { on a { disk /d; meta-disk internal; address 10.0.0.1:1; } }");
    assert!(e.contains("'device' statement missing"), "{e}");
}

#[test]
fn volume_rules() {
    let e = err("resource r {
  on a { volume 0 { device minor 0; disk /d; meta-disk internal; } address 10.0.0.1:1; }
  on b { device minor 0; disk /d; meta-disk internal; address 10.0.0.2:1; } }");
    assert!(
        e.contains("all host sections must define the same volumes"),
        "{e}"
    );
    let e = err("resource r { on a { disk /d; volume 1 { } } }");
    assert!(e.contains("mixing explicit and implicit volumes"), "{e}");
    let e = err("resource r { volume 1 { } volume 1 { } }");
    assert!(e.contains("volume '1' already used"), "{e}");
}

#[test]
fn references_between_resources() {
    let e = err(&two_hosts("disk { resync-after nothere; }"));
    assert!(e.contains("'nothere' mentioned in 'resync-after'"), "{e}");
    let e = err(&two_hosts("startup { become-primary-on both; }"));
    assert!(e.contains("allow-two-primaries is not set"), "{e}");
    let e = err(&two_hosts("startup { become-primary-on zed; }"));
    assert!(e.contains("'zed'"), "{e}");
    assert!(
        parse(&two_hosts(
            "net { allow-two-primaries; } startup { become-primary-on both; }"
        ))
        .is_ok()
    );
}

#[test]
fn unsupported_drbd_features_say_so() {
    let e = err("resource r { stacked-on-top-of x { } }");
    assert!(e.contains("not supported by urbd"), "{e}");
    let e = err("resource r { on a { address sdp 10.0.0.1:1; } }");
    assert!(e.contains("not supported by urbd"), "{e}");
}

#[test]
fn reserved_words_are_not_names_unless_quoted() {
    assert!(err("resource net { }").contains("expected a resource name"));
    let c = parse("resource \"net\" { }").unwrap();
    assert_eq!(c.resource_names(), ["net"]);
}

#[test]
fn skip_blocks_and_comments() {
    let c = parse("# c\nskip { a { b { } } } skip name { x; }\nresource r { } # end").unwrap();
    assert_eq!(c.resource_names(), ["r"]);
    let deep = format!("skip {}{}", "{".repeat(100), "}".repeat(100));
    assert!(matches!(parse(&deep), Err(ConfigError::Limit { .. })));
}

// ---- files and includes -------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let d = tempfile::tempdir().unwrap();
    let top = write(
        d.path(),
        "drbd.conf",
        "include \"drbd.d/*.res\";\ninclude \"none/*.res\";\n",
    );
    write(
        d.path(),
        "drbd.d/a.res",
        &two_hosts("").replace("resource r", "resource a"),
    );
    write(d.path(), "drbd.d/b.res", "include \"*.res\";\n"); // sees a.res and itself: skipped
    let c = Config::load(&top).unwrap();
    assert_eq!(c.resource_names(), ["a"]);
    assert_eq!(c.files.len(), 3);
    // a plain path that does not exist is an error naming the file
    let bad = write(d.path(), "bad.conf", "include \"missing.res\";");
    let e = Config::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.conf:1:1") && e.contains("missing.res"),
        "{e}"
    );
}

#[test]
fn include_cycles_and_depth_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.conf", "include \"b.conf\";");
    write(d.path(), "b.conf", "include \"a.conf\";");
    assert!(matches!(
        Config::load(&a),
        Err(ConfigError::IncludeCycle { .. })
    ));
    for i in 0..20 {
        write(
            d.path(),
            &format!("d{i}.conf"),
            &format!("include \"d{}.conf\";", i + 1),
        );
    }
    write(d.path(), "d20.conf", "");
    let e = Config::load(&d.path().join("d0.conf")).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Limit {
                what: "include depth",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unreadable_and_oversized_files_are_named() {
    let e = Config::load(Path::new("/nonexistent/urbd.conf")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/urbd.conf"), "{e}");
    assert_eq!(e.exit_code(), 10);
    let d = tempfile::tempdir().unwrap();
    let big = write(
        d.path(),
        "big.conf",
        &"#".repeat(limits::MAX_FILE_SIZE as usize + 1),
    );
    assert!(matches!(
        Config::load(&big),
        Err(ConfigError::Limit {
            what: "file size",
            ..
        })
    ));
}

#[test]
fn dump_round_trips_through_our_parser() {
    let c = parse(SEED).unwrap();
    let text = dump_with(
        &c,
        None,
        &DumpOptions {
            node: Some("astapor".into()),
            expand: false,
        },
    )
    .unwrap();
    let again = parse(&text).unwrap();
    let r = again.resource("optzimbra").unwrap();
    assert_eq!(
        r.for_node("astapor").unwrap(),
        c.resource("optzimbra")
            .unwrap()
            .for_node("astapor")
            .unwrap()
    );
    assert!(matches!(
        dump(&c, Some("nope")),
        Err(ConfigError::ResourceNotFound { .. })
    ));
}

#[test]
fn default_path_prefers_urbd_conf() {
    let p = default_config_path();
    assert!(p == Path::new("/etc/urbd.conf") || p == Path::new("/etc/drbd.conf"));
}

// ---- never panic --------------------------------------------------------------------

/// Pieces that build plausible and implausible configurations.
const ATOMS: &[&str] = &[
    "resource",
    "r",
    "on",
    "a",
    "b",
    "{",
    "}",
    ";",
    "[",
    "]",
    ":",
    "device",
    "minor",
    "0",
    "disk",
    "/d",
    "meta-disk",
    "internal",
    "address",
    "10.0.0.1",
    "ipv6",
    "fd00::1",
    "7788",
    "net",
    "syncer",
    "rate",
    "10M",
    "volume",
    "1",
    "floating",
    "common",
    "global",
    "include",
    "\"x\"",
    "skip",
    "protocol",
    "C",
    "startup",
    "become-primary-on",
    "both",
    "\"",
    "#",
    "\n",
    "yes",
    "no",
    "99999999",
    "urbd-options",
    "nbd-listen",
    "metrics-listen",
    "0.0.0.0",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = Config::parse_str(&s, "fuzz.res");
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Config::parse_str(&String::from_utf8_lossy(&b), "fuzz.res");
    }

    #[test]
    fn token_soup_never_panics(parts in proptest::collection::vec(proptest::sample::select(ATOMS), 0..80)) {
        let text = parts.join(" ");
        if let Ok(c) = Config::parse_str(&text, "fuzz.res") {
            let _ = dump_with(&c, None, &DumpOptions { node: Some("a".into()), expand: true });
            for r in c.resources() {
                for n in r.host_names() { let _ = r.for_node(&n); }
            }
        }
    }

    #[test]
    fn mutated_seed_never_panics(pos in 0usize..SEED.len(), len in 0usize..20, ins in "\\PC{0,10}") {
        let mut s = SEED.to_string();
        let start = (0..=pos).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len()).min(s.len());
        s.replace_range(start..end, &ins);
        if let Ok(c) = Config::parse_str(&s, "fuzz.res") {
            let text = dump_with(&c, None, &DumpOptions { node: Some("astapor".into()), expand: false }).unwrap();
            // whatever we accept and dump, we accept again
            prop_assert!(Config::parse_str(&text, "again.res").is_ok(), "{}", text);
            for r in c.resources() {
                let _ = r.for_node("astapor");
            }
        }
    }
}

// ---- shipped examples ---------------------------------------------------------------

#[test]
fn shipped_examples_load_and_resolve() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("res-examples");
    let c = Config::load(&dir.join("drbd.conf")).unwrap();
    assert_eq!(c.resource_names(), ["optzimbra"]);
    assert_eq!(c.global.usage_count, Some(UsageCount::No));
    let v = c
        .resource("optzimbra")
        .unwrap()
        .for_node("braavos")
        .unwrap();
    assert_eq!(v.address.to_string(), "ipv4 172.17.18.192:7788");
    assert_eq!(
        v.volumes[0].meta_disk,
        MetaDiskSpec::Indexed {
            path: "/dev/vdc1".into(),
            index: 0
        }
    );
    let nbd = Config::load(&dir.join("urbd-only/nbd.res")).unwrap();
    let a = nbd.resource("nbdloop").unwrap().for_node("alpha").unwrap();
    assert_eq!(
        a.volumes[0].device_path.as_deref(),
        Some(Path::new("/dev/nbd0"))
    );
    for f in ["loopback.res", "full.res", "optzimbra.res"] {
        let c = Config::load(&dir.join(f)).unwrap();
        for r in c.resources() {
            for n in r.host_names() {
                r.for_node(&n).unwrap_or_else(|e| panic!("{f}: {e}"));
            }
        }
    }
}

/// drbdadm's `discard-node-NODENAME` for after-sb-0pri (`convert_discard_opt` in
/// drbd-utils `user/v84/drbdadm_main.c`); other policies keep their word lists.
#[test]
fn after_sb_0pri_takes_discard_node_name() {
    let c = parse(&two_hosts("net { after-sb-0pri discard-node-b; }")).unwrap();
    let v = c.resource("r").unwrap().for_node("a").unwrap();
    assert_eq!(v.net.get("after-sb-0pri"), Some("discard-node-b"));
    let e = err(&two_hosts("net { after-sb-0pri discard-node-; }"));
    assert!(e.contains("expected one of"), "{e}");
    let e = err(&two_hosts("net { after-sb-1pri discard-node-b; }"));
    assert!(e.contains("expected one of"), "{e}");
}
