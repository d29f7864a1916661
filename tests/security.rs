//! Security of the replication link with real daemons: the shared secret (a peer without
//! one, a random client, a replayed handshake; the wrong secret is in tests/replication.rs)
//! and TLS (`tls-cert`/`tls-key`/`tls-ca` in `urbd-options`): a sync and writes over TLS
//! with nothing in clear on the wire, and the refusals (a peer without TLS, a certificate
//! of another CA, a certificate that names another node). Every wait is bounded; [`Pair`]'s
//! `Drop` downs both nodes.

mod util;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::pair::*;
use util::proxy::Proxy;
use util::repl::*;
use util::tls::{Ca, urbd_options};

const SECRET: &str = "  net { connect-int 2; cram-hmac-alg sha256; shared-secret \"s3cret\"; }\n";

fn port_of(conf: &str, node: &str) -> u16 {
    let at = conf
        .find(&format!("on {node} {{"))
        .unwrap_or_else(|| panic!("no on {node} in {conf}"));
    let rest = &conf[at..];
    let a = rest.find("address 127.0.0.1:").expect("an address") + "address 127.0.0.1:".len();
    let end = rest[a..].find(';').expect("';'");
    rest[a..a + end].parse().expect("a port")
}

/// Routes the link through a recording proxy: beta reaches alpha only through the proxy,
/// and alpha's dials to beta go to a port where nobody listens, so beta dials both sockets
/// and every byte between the nodes passes the proxy.
fn through_proxy(pair: &mut Pair) -> Proxy {
    let dir = pair._dir.path().to_path_buf();
    let (ta, tb) = (
        fs::read_to_string(&pair.nodes[0].conf).expect("alpha's conf"),
        fs::read_to_string(&pair.nodes[1].conf).expect("beta's conf"),
    );
    let (pa, pb) = (port_of(&tb, "alpha"), port_of(&ta, "beta"));
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], pa)));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let ta = ta.replace(
        &format!("address 127.0.0.1:{pb};"),
        &format!("address 127.0.0.1:{dead};"),
    );
    let tb = tb.replace(
        &format!("address 127.0.0.1:{pa};"),
        &format!("address 127.0.0.1:{};", proxy.addr().port()),
    );
    for (i, text) in [ta, tb].into_iter().enumerate() {
        let conf = dir.join(format!("{}-proxied.conf", pair.nodes[i].name));
        fs::write(&conf, text).expect("write conf");
        pair.nodes[i].conf = conf;
    }
    proxy
}

fn frame(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = b"URBD".to_vec();
    v.extend_from_slice(&[1, 0]);
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

const INITIAL_DATA: u16 = 0xfff2;
const INITIAL_META: u16 = 0xfff1;
const HELLO: u16 = 0xfffe;
const AUTH_CHALLENGE: u16 = 0x10;
const AUTH_RESPONSE: u16 = 0x11;

fn count(n: &Node, what: &str) -> usize {
    n.log().matches(what).count()
}

// ----- shared secret ---------------------------------------------------------------------

/// DRBD's `drbd_do_auth`: a peer without `shared-secret` is refused by a node that has one
/// (and refuses it in turn), and nothing is replicated.
#[test]
fn peer_without_a_secret_never_connects() {
    let opts = PairOpts {
        extra: [SECRET.into(), "  net { connect-int 2; }\n".into()],
        ..PairOpts::default()
    };
    let pair = Pair::with_metadata_opts(&opts);
    assert_never_connects(&pair, "Authentication with peer");
    let both = format!("{}{}", pair.alpha().log(), pair.beta().log());
    assert!(!both.contains("Peer authenticated"), "{}", logs(&pair));
}

/// A client that is not the peer, from the peer's address: garbage, and a client that
/// speaks the protocol but not the secret (a random challenge response). Both are closed,
/// the node stays WFConnection, and the real peer connects afterwards.
#[test]
fn random_clients_are_refused() {
    let pair = Pair::with_metadata_opts(&PairOpts::default().both(SECRET));
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    let conf = fs::read_to_string(&a.conf).expect("conf");
    let alpha = SocketAddr::from(([127, 0, 0, 1], port_of(&conf, "alpha")));

    // Garbage.
    let mut junk = TcpStream::connect_timeout(&alpha, Duration::from_secs(5)).expect("connect");
    junk.write_all(&random_bytes(1, 4096)).expect("write");
    wait_until(&pair, "the garbage refused", SETTLE, || {
        a.log().contains("error receiving initial packet")
    });

    // The protocol, without the secret.
    let mut data = TcpStream::connect_timeout(&alpha, Duration::from_secs(5)).expect("connect");
    data.write_all(&frame(INITIAL_DATA, &[])).expect("write");
    let mut meta = TcpStream::connect_timeout(&alpha, Duration::from_secs(5)).expect("connect");
    meta.write_all(&frame(INITIAL_META, &[])).expect("write");
    let mut hello = Vec::new();
    hello.extend_from_slice(&1u32.to_be_bytes());
    hello.extend_from_slice(&1u32.to_be_bytes());
    hello.extend_from_slice(&0u64.to_be_bytes());
    let mut bytes = frame(HELLO, &hello);
    bytes.extend(frame(AUTH_CHALLENGE, &random_bytes(2, 64)));
    bytes.extend(frame(AUTH_RESPONSE, &random_bytes(3, 32)));
    data.write_all(&bytes).expect("write");
    wait_until(&pair, "the impostor refused", SETTLE, || {
        a.log().contains("Authentication of peer beta failed")
    });
    assert_ne!(cstate(a), "Connected");
    assert!(!a.log().contains("Peer authenticated"), "{}", logs(&pair));
    drop((junk, data, meta));

    // The node still takes its real peer (after a failed authentication DRBD goes
    // StandAlone, and so does urbd: `connect` again).
    wait_until(&pair, "StandAlone or WFConnection", SETTLE, || {
        matches!(cstate(a).as_str(), "StandAlone" | "WFConnection")
    });
    a.adm(&["connect", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    wait_until(&pair, "Connected", SETTLE, || {
        cstate(a) == "Connected" && cstate(b) == "Connected"
    });
    assert!(a.log().contains("Peer authenticated"), "{}", logs(&pair));
}

/// A recorded handshake of the real peer, replayed to the node from the peer's address,
/// is refused: the node's challenge is new, so the recorded response does not match it.
#[test]
fn replayed_handshake_is_refused() {
    let mut pair = Pair::with_metadata_opts(&PairOpts::default().both(SECRET));
    let proxy = through_proxy(&mut pair);
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    wait_until(&pair, "Connected through the proxy", SETTLE, || {
        cstate(a) == "Connected" && cstate(b) == "Connected"
    });
    assert!(a.log().contains("Peer authenticated"), "{}", logs(&pair));
    b.adm(&["down", "loop"]).ok();
    wait_until(&pair, "alpha WFConnection", SETTLE, || {
        cstate(a) == "WFConnection"
    });
    let recorded: Vec<Vec<u8>> = proxy
        .recorded()
        .into_iter()
        .map(|(from_beta, _)| from_beta)
        .filter(|r| r.len() >= 16)
        .collect();
    assert!(
        recorded
            .iter()
            .any(|r| r[..16] == frame(INITIAL_DATA, &[])[..]),
        "a data socket was recorded"
    );
    drop(proxy);

    let conf = fs::read_to_string(&a.conf).expect("conf");
    let alpha = SocketAddr::from(([127, 0, 0, 1], port_of(&conf, "alpha")));
    let authenticated = count(a, "Peer authenticated");
    let failed = count(a, "Authentication of peer beta failed");
    let mut replayers = Vec::new();
    for r in &recorded {
        let mut s = TcpStream::connect_timeout(&alpha, Duration::from_secs(5)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // The node may close the socket before it has read everything: that is the point.
        let _ = s.write_all(r);
        replayers.push(s);
    }
    wait_until(&pair, "the replay refused", SETTLE, || {
        count(a, "Authentication of peer beta failed") > failed
    });
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_ne!(cstate(a), "Connected", "{}", logs(&pair));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(a, "Peer authenticated"),
        authenticated,
        "{}",
        logs(&pair)
    );
}

// ----- TLS -------------------------------------------------------------------------------

/// Certificates for alpha and beta from one CA, and a pair configured with them.
struct TlsSetup {
    _certs: tempfile::TempDir,
    pair: Pair,
}

fn tls_pair(beta: impl FnOnce(&std::path::Path, &Ca) -> String) -> TlsSetup {
    let certs = tempfile::tempdir().expect("tempdir");
    let d = certs.path();
    let ca = Ca::new(d, "ca");
    let alpha = ca.issue(d, "alpha", &["alpha"]);
    let opts = PairOpts {
        after: [urbd_options(&alpha, &ca.cert), beta(d, &ca)],
        ..quick()
    };
    TlsSetup {
        pair: Pair::with_metadata_opts(&opts),
        _certs: certs,
    }
}

/// The initial sync and writes over TLS through a recording proxy: the disks end
/// identical, the wire carries TLS records after the initial frames, and none of the data
/// written appears on it in clear.
#[test]
fn tls_link_syncs_and_replicates() {
    let mut setup = tls_pair(|d, ca| urbd_options(&ca.issue(d, "beta", &["beta"]), &ca.cert));
    let proxy = through_proxy(&mut setup.pair);
    let pair = &setup.pair;
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    wait_until(pair, "Connected", SETTLE, || {
        cstate(a) == "Connected" && cstate(b) == "Connected"
    });
    assert!(a.log().contains("tls=true"), "{}", logs(pair));
    // Data before the initial sync, so that the resync moves it.
    let before = random_bytes(40, 3 * MIB as usize);
    a.adm(&["primary", "--force", "loop"]).ok();
    write_all(pair, a, vec![(MIB, before.clone())]);
    wait_synced(pair);
    let after = random_bytes(41, 2 * MIB as usize);
    write_all(
        pair,
        a,
        vec![
            (20 * MIB, after.clone()),
            (MIB + 8192, random_bytes(42, 4096)),
        ],
    );
    wait_disks_identical(pair);
    let beta_disk = fs::read(&b.data).expect("beta's disk");
    assert_eq!(&beta_disk[20 * MIB as usize..22 * MIB as usize], &after[..]);

    let recorded = proxy.recorded();
    assert!(recorded.len() >= 2, "both sockets went through the proxy");
    let mut total = 0;
    for (i, (from_beta, from_alpha)) in recorded.iter().enumerate() {
        total += from_beta.len() + from_alpha.len();
        if from_beta.len() > 16 {
            // The initial frame in clear, then a TLS handshake record (ClientHello).
            assert_eq!(from_beta[0..4], *b"URBD", "connection {i}");
            assert_eq!(
                from_beta[16], 0x16,
                "connection {i}: a TLS handshake record follows"
            );
        }
        for stream in [from_beta, from_alpha] {
            for pattern in [&before, &after] {
                let probe = &pattern[4096..4096 + 64];
                assert!(
                    !stream.windows(64).any(|w| w == probe),
                    "connection {i}: written data in clear on the wire"
                );
            }
        }
    }
    assert!(
        total as u64 > 5 * MIB,
        "the data went through the proxy ({total} bytes)"
    );
}

#[test]
fn tls_peer_without_tls_is_refused() {
    let setup = tls_pair(|_, _| String::new());
    assert_never_connects(&setup.pair, "dropping the connection: TLS");
}

#[test]
fn tls_certificate_of_another_ca_is_refused() {
    let setup = tls_pair(|d, _| {
        let other = Ca::new(d, "other-ca");
        urbd_options(&other.issue(d, "beta", &["beta"]), &other.cert)
    });
    assert_never_connects(&setup.pair, "dropping the connection: TLS");
    // Whichever node accepted the connection found the other's certificate of an unknown
    // issuer (both dial, so either may be the TLS server of a given attempt; the dialer
    // then only sees the server's UnknownCA alert).
    let logs = format!("{}{}", setup.pair.alpha().log(), setup.pair.beta().log());
    assert!(
        logs.contains("UnknownIssuer") || logs.contains("unknown issuer"),
        "{logs}"
    );
}

/// A certificate from the right CA for another node name cannot stand in for the peer.
#[test]
fn tls_certificate_for_another_node_is_refused() {
    let setup = tls_pair(|d, ca| urbd_options(&ca.issue(d, "beta", &["gamma"]), &ca.cert));
    assert_never_connects(&setup.pair, "dropping the connection: TLS");
    let log = setup.pair.alpha().log();
    assert!(
        log.contains("NotValidForName") || log.contains("not valid for name"),
        "{log}"
    );
}

// ----- control socket ----------------------------------------------------------------------

/// `urbdadm ARGS` for `n`, run as uid 65534 (nobody) with primary group `gid` and the
/// supplementary `groups` (none: `--clear-groups`), through setpriv.
fn adm_as_nobody(n: &Node, gid: u32, groups: &[u32], args: &[&str]) -> util::Ran {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg("--reuid=65534").arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(env!("CARGO_BIN_EXE_urbdadm"))
        .env_remove("URBD_NODE")
        .env_remove("URBD_LOG")
        .env("URBD_KERNEL_NBD", "0")
        .env("URBD_RUN_DIR", &n.run_dir)
        .arg("-c")
        .arg(&n.conf)
        .args(["--node", n.name])
        .args(args)
        .stdin(std::process::Stdio::null());
    util::run_within(&mut cmd, Duration::from_secs(20))
        .unwrap_or_else(|r| panic!("urbdadm as nobody hung: {}", r.stderr))
}

fn mode_and_group(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).expect("stat the socket");
    (m.mode() & 0o7777, m.gid())
}

/// Lets uid 65534 reach the configuration and the run directory (the test's folder is
/// 0700).
fn open_folders(pair: &Pair) {
    use std::os::unix::fs::PermissionsExt;
    for p in [pair._dir.path(), pair.alpha().run_dir.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Without `control-group`: the socket is 0600, a non-root user is refused by the kernel
/// (a clear message from urbdadm), and, when the file mode would let it in, by the daemon.
#[test]
fn control_socket_is_root_only_by_default() {
    if !util::have_root() || !util::have_tool("setpriv") {
        return;
    }
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    open_folders(&pair);
    let sock = a.socket();
    assert_eq!(mode_and_group(&sock).0, 0o600);

    let out = adm_as_nobody(a, 65534, &[], &["cstate", "loop"]);
    let stderr = &out.stderr;
    assert!(out.code != 0, "nobody drove the resource: {stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains("only root"),
        "{stderr}"
    );

    // The daemon's own check, when the file mode is too open.
    chmod(&sock, 0o666);
    let out = adm_as_nobody(a, 65534, &[], &["disconnect", "loop"]);
    let stderr = &out.stderr;
    assert!(out.code != 0, "nobody drove the resource: {stderr}");
    assert!(
        stderr.contains("permission denied: only root may drive resource loop (uid 65534"),
        "{stderr}"
    );
    assert!(a.log().contains("control request refused"), "{}", a.log());
    assert_eq!(
        cstate(a),
        "WFConnection",
        "the refused disconnect changed nothing"
    );
    // Root still can.
    a.adm(&["disconnect", "loop"]).ok();
}

/// With `control-group nogroup`: the socket is 0660 root:nogroup; a user whose primary or
/// supplementary group it is may drive the resource, anyone else is refused.
#[test]
fn control_group_members_may_drive_the_socket() {
    if !util::have_root() || !util::have_tool("setpriv") {
        return;
    }
    let gid = 65534; // nogroup on Debian
    let opts = PairOpts {
        after: [
            "urbd-options loop { control-group nogroup; }\n".into(),
            String::new(),
        ],
        ..PairOpts::default()
    };
    let pair = Pair::with_metadata_opts(&opts);
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    open_folders(&pair);
    let sock = a.socket();
    assert_eq!(mode_and_group(&sock), (0o660, gid));

    for (primary, groups) in [(gid, vec![]), (1, vec![gid])] {
        let out = adm_as_nobody(a, primary, &groups, &["cstate", "loop"]);
        assert!(
            out.code == 0,
            "gid {primary} groups {groups:?}: {}",
            out.stderr
        );
        assert_eq!(out.stdout.trim(), "WFConnection");
    }
    let out = adm_as_nobody(a, 1, &[], &["cstate", "loop"]);
    let stderr = &out.stderr;
    assert!(out.code != 0, "a non-member drove the resource");
    assert!(stderr.contains("permission denied"), "{stderr}");

    chmod(&sock, 0o666);
    let out = adm_as_nobody(a, 1, &[], &["cstate", "loop"]);
    let stderr = &out.stderr;
    assert!(out.code != 0, "a non-member drove the resource");
    assert!(
        stderr.contains("uid 65534 is neither root nor in group nogroup"),
        "{stderr}"
    );
}

/// A TLS file that cannot be used stops `up` with a message naming the file and setting.
#[test]
fn tls_file_errors_name_the_file() {
    let certs = tempfile::tempdir().expect("tempdir");
    let d = certs.path();
    let ca = Ca::new(d, "ca");
    let leaf = ca.issue(d, "alpha", &["alpha"]);
    let missing = d.join("missing-key.pem");
    let not_pem = d.join("not-a-cert.pem");
    fs::write(&not_pem, "hello\n").expect("write");
    for (cert, key, what, path) in [
        (&leaf.cert, &missing, "tls-key", &missing),
        (&not_pem, &leaf.key, "tls-cert", &not_pem),
        (&leaf.cert, &ca.cert, "tls-key", &ca.cert),
    ] {
        let text = format!(
            "urbd-options loop {{ tls-cert \"{}\"; tls-key \"{}\"; tls-ca \"{}\"; }}\n",
            cert.display(),
            key.display(),
            ca.cert.display()
        );
        let pair = Pair::with_metadata_opts(&PairOpts {
            after: [text, String::new()],
            ..PairOpts::default()
        });
        let a = pair.alpha();
        let out = a.adm(&["up", "loop"]);
        assert_ne!(out.code, 0, "up with a bad {what} succeeded");
        assert!(
            out.stderr.contains(what) && out.stderr.contains(&path.display().to_string()),
            "{what} {}: {}",
            path.display(),
            out.stderr
        );
        assert!(a.pid().is_none(), "no daemon is left running");
    }
}
