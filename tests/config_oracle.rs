//! drbd-utils as the oracle for `urbd::config`.
//!
//! For every example under `res-examples/` (except `urbd-only/`, which holds urbd
//! extensions drbdadm refuses) and every `on` host name in it, this runs
//! `drbdadm-84 -d -c FILE dump all` with the host name set (`unshare -u`; `-d` skips
//! drbdadm's check that the address is configured on this machine and makes it print
//! the inherited view), then:
//! 1. parses drbdadm's output with our parser and compares it with our parse of the
//!    original file: `global`, `common`, the resources in order, their host names, and
//!    for every host name the resolved [`NodeView`] (peer, address and family, protocol,
//!    volumes with device path, minor, disk, meta-disk and index, and every option of
//!    every section, normalized, in drbdadm's order);
//! 2. compares our expanded dump of each resource with drbdadm's text for it, line by
//!    line;
//! 3. feeds the output of the real `urbdadm dump all` to drbdadm-84, which must accept it and yield the same
//!    structure again (and our own parser must too).
//!
//! Nothing is compared against stored output. Without drbdadm-84 or unshare (or
//! without the right to use it) the test prints a skip line, or fails when `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod util;

use urbd::config::{Config, DumpOptions, HostKind, dump_with};
use util::drbdadm::oracle_unavailable;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("res-examples")
}

/// Runs `drbdadm-84 -d -c file dump all` as host `host`; stdout on success.
fn drbdadm_dump(file: &Path, host: &str) -> Result<String, String> {
    let out = util::drbdadm::dump_as(file, host);
    if !out.status.success() {
        return Err(format!(
            "drbdadm-84 -c {} dump all (host {host}) exited {:?}:\n{}",
            file.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn example_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![examples_dir()];
    while let Some(d) = dirs.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .expect("read res-examples")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "urbd-only") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "res" || e == "conf") {
                out.push(p);
            }
        }
    }
    out
}

fn on_host_names(c: &Config) -> Vec<String> {
    let mut names = Vec::new();
    for r in c.resources() {
        for h in &r.hosts {
            if let HostKind::On(ns) = &h.kind {
                for n in ns {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
        }
    }
    names
}

/// Runs the real `urbdadm -c FILE --node HOST dump all`; its stdout.
fn urbdadm_dump(file: &Path, host: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_urbdadm"))
        .arg("-c")
        .arg(file)
        .args(["--node", host, "dump", "all"])
        .env_remove("URBD_NODE")
        .output()
        .expect("run urbdadm");
    assert!(
        out.status.success(),
        "urbdadm -c {} dump all failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 dump")
}

/// Structural comparison of two configurations, resolved for every host name.
fn compare(what: &str, ours: &Config, theirs: &Config) {
    let (g, t) = (&ours.global, &theirs.global);
    assert_eq!(
        (
            g.minor_count,
            g.dialog_refresh.filter(|&d| d != 1),
            g.disable_ip_verification
        ),
        (
            t.minor_count,
            t.dialog_refresh.filter(|&d| d != 1),
            t.disable_ip_verification
        ),
        "{what}: global"
    );
    let usage = |c: &Config| {
        c.global
            .usage_count
            .filter(|u| *u != urbd::config::UsageCount::Ask)
    };
    assert_eq!(usage(ours), usage(theirs), "{what}: usage-count");
    assert_eq!(
        ours.common.as_ref().map(|c| &c.sections),
        theirs.common.as_ref().map(|c| &c.sections),
        "{what}: common"
    );
    assert_eq!(
        ours.resource_names(),
        theirs.resource_names(),
        "{what}: resources"
    );
    for r in ours.resources() {
        let o = theirs.resource(r.name()).expect("same names");
        assert_eq!(
            r.host_names(),
            o.host_names(),
            "{what}: hosts of {}",
            r.name()
        );
        for n in r.host_names() {
            match (r.for_node(&n), o.for_node(&n)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}: resource {} for node {n}", r.name()),
                (Err(a), Err(b)) => assert_eq!(
                    std::mem::discriminant(&a),
                    std::mem::discriminant(&b),
                    "{what}: {} for {n}: {a} vs {b}",
                    r.name()
                ),
                (a, b) => panic!(
                    "{what}: resource {} for node {n}: ours {a:?}, theirs {b:?}",
                    r.name()
                ),
            }
        }
    }
}

/// drbdadm's text for one resource: from its `# resource` line through the blank line.
fn resource_chunk<'a>(dump: &'a str, name: &str) -> Option<&'a str> {
    let start = dump.find(&format!("# resource {name} on "))?;
    let rest = &dump[start..];
    let end = rest.find("\n}\n\n").map(|i| i + 4)?;
    Some(&rest[..end])
}

#[test]
fn drbdadm_84_agrees_with_our_parser() {
    if let Some(why) = oracle_unavailable() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("config oracle cannot run and CI=true: {why}");
        }
        eprintln!("SKIP config_oracle: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = example_files();
    assert!(files.len() >= 4, "examples missing: {files:?}");
    let mut compared = 0;
    for file in &files {
        let ours = Config::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for host in on_host_names(&ours) {
            let what = format!("{} as {host}", file.display());
            // 1. drbdadm's view of the original file, parsed by us.
            let text = drbdadm_dump(file, &host).unwrap_or_else(|e| panic!("{e}"));
            let theirs_path = tmp.path().join("theirs.conf");
            std::fs::write(&theirs_path, &text).expect("write");
            let theirs = Config::load(&theirs_path)
                .unwrap_or_else(|e| panic!("{what}: parsing drbdadm's dump: {e}\n{text}"));
            compare(&what, &ours, &theirs);
            // 2. our expanded dump, resource by resource, equals drbdadm's text.
            for r in ours.resources() {
                let opts = DumpOptions {
                    node: Some(host.clone()),
                    expand: true,
                };
                let mine = dump_with(&ours, Some(r.name()), &opts).expect("dump");
                let name = urbd::config::esc(r.name());
                let theirs_chunk = resource_chunk(&text, &name)
                    .unwrap_or_else(|| panic!("{what}: no {name} in\n{text}"));
                assert_eq!(mine, theirs_chunk, "{what}: expanded dump of {name}");
            }
            // 3. `urbdadm dump all` (the real binary) goes back through drbdadm (and us).
            let plain = urbdadm_dump(file, &host);
            let ours_path = tmp.path().join("ours.conf");
            std::fs::write(&ours_path, &plain).expect("write");
            let reparsed = Config::load(&ours_path)
                .unwrap_or_else(|e| panic!("{what}: our dump does not parse: {e}\n{plain}"));
            compare(&format!("{what} (our dump, our parser)"), &ours, &reparsed);
            let again = drbdadm_dump(&ours_path, &host)
                .unwrap_or_else(|e| panic!("{what}: drbdadm refuses our dump: {e}\n{plain}"));
            std::fs::write(&theirs_path, &again).expect("write");
            let theirs2 = Config::load(&theirs_path).unwrap_or_else(|e| panic!("{what}: {e}"));
            compare(
                &format!("{what} (our dump through drbdadm)"),
                &ours,
                &theirs2,
            );
            compared += 1;
        }
    }
    assert!(compared >= 7, "too few comparisons: {compared}");
}
