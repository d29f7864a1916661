//! urbd's own top file: `res-examples/urbd-only/urbd.conf` includes the DRBD configuration
//! `res-examples/drbd.conf` and adds an `urbd-options` section.
//!
//! Checks that urbd reads the section through the include, that the real `urbdadm dump`
//! prints it only for the urbd file, and (drbd-utils as the oracle) that drbdadm-84 still
//! accepts the included `drbd.conf` while it refuses the urbd file, which is why the
//! settings live there. Without drbdadm-84 or `unshare -u` the oracle test prints a
//! SKIPPED line, or fails when `CI=true`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod util;

use urbd::config::Config;
use util::drbdadm::oracle_unavailable;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("res-examples")
}

fn urbd_conf() -> PathBuf {
    examples().join("urbd-only/urbd.conf")
}

#[test]
fn urbd_conf_adds_nbd_listen_to_the_included_resource() {
    let c = Config::load(&urbd_conf()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.resource_names(), ["optzimbra"]);
    assert!(
        c.files
            .iter()
            .any(|f| f.ends_with("res-examples/drbd.d/optzimbra.res")),
        "{:?}",
        c.files
    );
    let want: SocketAddr = "0.0.0.0:10809".parse().unwrap();
    let r = c.resource("optzimbra").unwrap();
    assert_eq!(r.for_node("astapor").unwrap().nbd_listen, Some(want));
    assert_eq!(r.for_node("braavos").unwrap().nbd_listen, Some(want));
    assert_eq!(
        c.urbd_options("optzimbra").and_then(|u| u.nbd_listen),
        Some(want)
    );
    // the DRBD configuration alone has no urbd settings
    let drbd = Config::load(&examples().join("drbd.conf")).unwrap();
    assert!(drbd.urbd_options("optzimbra").is_none());
    let v = drbd.resource("optzimbra").unwrap().for_node("astapor");
    assert_eq!(v.unwrap().nbd_listen, None);
}

fn urbdadm_dump(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_urbdadm"))
        .arg("-c")
        .arg(file)
        .args(["--node", "astapor", "dump", "all"])
        .env_remove("URBD_NODE")
        .output()
        .expect("run urbdadm");
    assert!(
        out.status.success(),
        "urbdadm -c {} dump all: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn urbdadm_dump_prints_the_section_only_for_the_urbd_file() {
    let urbd = urbdadm_dump(&urbd_conf());
    let drbd = urbdadm_dump(&examples().join("drbd.conf"));
    assert!(!drbd.contains("urbd-options"), "{drbd}");
    assert!(
        urbd.ends_with("urbd-options optzimbra {\n    nbd-listen       ipv4 0.0.0.0:10809;\n}\n\n"),
        "{urbd}"
    );
    // the same resources, in the same text (only the header names another file)
    let body = |d: &str| {
        d.lines()
            .skip(1)
            .take_while(|l| !l.starts_with("# urbd-options"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&urbd), body(&drbd));
}

fn drbdadm_dump(file: &Path, host: &str) -> Output {
    util::drbdadm::dump_as(file, host)
}

#[test]
fn drbdadm_84_reads_the_included_drbd_conf_and_refuses_urbd_conf() {
    if let Some(why) = oracle_unavailable() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("drbdadm-84 oracle cannot run and CI=true: {why}");
        }
        eprintln!("SKIPPED config_urbd drbdadm oracle: {why}");
        return;
    }
    for host in ["astapor", "braavos"] {
        let out = drbdadm_dump(&examples().join("drbd.conf"), host);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "drbdadm-84 refuses res-examples/drbd.conf as {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("resource optzimbra {"), "{stdout}");
        assert!(!stdout.contains("urbd-options"), "{stdout}");
    }
    let out = drbdadm_dump(&urbd_conf(), "astapor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("but got 'urbd-options'"),
        "drbdadm-84 should refuse urbd.conf: status {:?}, stderr {stderr}",
        out.status.code()
    );
}
