//! The NBD export over TCP with TLS (`urbd-options RES { nbd-listen ...; nbd-tls
//! on|require; nbd-tls-cert ...; nbd-tls-key ...; [nbd-tls-ca ...;] }`), end to end: a real
//! daemon, libnbd's tools (GnuTLS) as clients, with the certificate directory layout libnbd
//! reads (`ca-cert.pem`, and `client-cert.pem` + `client-key.pem` for a client
//! certificate). The NBD spec's "TLS support" section: FORCEDTLS for `require`,
//! SELECTIVETLS for `on`.

mod util;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use util::nbd::{run_bounded, run_ok};
use util::pair::*;
use util::proxy::Proxy;
use util::tls::Ca;
use util::{Ran, have_tool};

/// Seconds any one client command may take.
const CLIENT_SECS: u64 = 120;
/// The data disk: small, since every byte is encrypted by debug builds of both sides.
const DISK: u64 = 16 << 20;

/// A node with its TCP export and the certificates a test needs.
struct Setup {
    pair: Pair,
    certs: tempfile::TempDir,
    port: u16,
    /// The server certificate's CA.
    ca: Ca,
    /// A CA for client certificates (`{clients}`: its certificate file).
    clients: Ca,
}

impl Setup {
    /// alpha up and Primary (`--force`), exporting on TCP with `options` added to its
    /// `urbd-options loop` section (`{port}`, `{cert}`, `{key}`, `{clients}` are filled
    /// in). The server's certificate names 127.0.0.1 (libnbd checks the name it dialed).
    fn new(options: &str) -> Setup {
        let certs = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(certs.path(), "server-ca");
        let clients = Ca::new(certs.path(), "clients");
        let server = ca.issue(certs.path(), "server", &["127.0.0.1", "localhost"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let body = options
            .replace("{port}", &port.to_string())
            .replace("{cert}", &server.cert.display().to_string())
            .replace("{key}", &server.key.display().to_string())
            .replace("{clients}", &clients.cert.display().to_string());
        let pair = Pair::with_metadata_opts(&PairOpts {
            after: [format!("urbd-options loop {{\n{body}\n}}\n"), String::new()],
            data_bytes: DISK,
            ..PairOpts::default()
        });
        let a = pair.alpha();
        a.adm(&["up", "loop"]).ok();
        a.adm(&["primary", "--force", "loop"]).ok();
        Setup {
            pair,
            certs,
            port,
            ca,
            clients,
        }
    }

    fn alpha(&self) -> &Node {
        self.pair.alpha()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A libnbd certificate directory trusting the server's CA, with a client certificate
    /// from `client_ca` when given.
    fn client_dir(&self, name: &str, client_ca: Option<&Ca>) -> PathBuf {
        let dir = self.certs.path().join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::copy(&self.ca.cert, dir.join("ca-cert.pem")).expect("copy CA");
        if let Some(ca) = client_ca {
            ca.issue(&dir, "client", &["client.example"]);
        }
        dir
    }
}

fn tls_uri(addr: SocketAddr, dir: &Path) -> String {
    format!("nbds://{addr}/loop?tls-certificates={}", dir.display())
}

fn clear_uri(addr: SocketAddr) -> String {
    format!("nbd://{addr}/loop")
}

fn nbdinfo_size(uri: &str) -> Result<u64, String> {
    let (ok, out, err) = run_bounded(Command::new("nbdinfo").arg("--size").arg(uri), CLIENT_SECS);
    if !ok {
        return Err(format!("{out}{err}"));
    }
    out.trim()
        .parse()
        .map_err(|e| format!("nbdinfo printed {out:?}: {e}"))
}

/// Seeded pseudo-random bytes (xorshift64*).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Length of the probes looked for on the wire.
const PROBE: usize = 64;
/// Step of the scan: every probe found covers a scanned position with 8 bytes of it.
const STEP: usize = PROBE - 8 + 1;

/// Where some probe occurs in `hay`, if one does. A naive search of 32 probes in hundreds
/// of MiB takes minutes in a debug build; this looks up the 8 bytes at every STEP-th
/// position among every 8-byte window of the probes, and compares only on a hit.
fn find_probe(hay: &[u8], probes: &[&[u8]]) -> Option<usize> {
    let mut windows: std::collections::HashMap<[u8; 8], Vec<(usize, usize)>> =
        std::collections::HashMap::new();
    for (i, p) in probes.iter().enumerate() {
        assert_eq!(p.len(), PROBE);
        for off in 0..STEP {
            let w: [u8; 8] = p[off..off + 8].try_into().expect("8 bytes");
            windows.entry(w).or_default().push((i, off));
        }
    }
    let mut pos = 0;
    while pos + 8 <= hay.len() {
        let w: [u8; 8] = hay[pos..pos + 8].try_into().expect("8 bytes");
        for &(i, off) in windows.get(&w).into_iter().flatten() {
            let start = pos.checked_sub(off)?;
            if hay.get(start..start + PROBE) == Some(probes[i]) {
                return Some(start);
            }
        }
        pos += STEP;
    }
    None
}

fn tools() -> bool {
    have_tool("nbdinfo") && have_tool("nbdcopy")
}

/// `nbd-tls require` (FORCEDTLS): a TLS client reads and writes the device (nbdcopy in and
/// out, bytes compared; through a recording proxy, which never sees the data in clear); a
/// client in clear is refused; the unix socket stays in clear for local clients.
#[test]
fn require_serves_tls_clients_and_refuses_clear_ones() {
    if !tools() {
        return;
    }
    let s = Setup::new(
        "nbd-listen 127.0.0.1:{port};\nnbd-tls require;\nnbd-tls-cert \"{cert}\";\nnbd-tls-key \"{key}\";",
    );
    let dir = s.client_dir("anon", None);
    assert_eq!(nbdinfo_size(&tls_uri(s.addr(), &dir)), Ok(DISK));

    // In clear: every option gets NBD_REP_ERR_TLS_REQD, so libnbd gives up.
    let refused = nbdinfo_size(&clear_uri(s.addr()));
    let Err(why) = refused else {
        panic!("a client in clear was served");
    };
    assert!(why.contains("server requires TLS"), "{why}");
    let log = s.alpha().log();
    assert!(log.contains("TLS established"), "{log}");

    // Data in and out over TLS, through a proxy that records both directions.
    let proxy = Proxy::start(s.addr());
    let work = tempfile::tempdir().expect("tempdir");
    let data = random_bytes(0x5eed, DISK as usize);
    let src = work.path().join("in.bin");
    let back = work.path().join("out.bin");
    fs::write(&src, &data).expect("write source");
    let uri = tls_uri(proxy.addr(), &dir);
    run_ok(Command::new("nbdcopy").arg(&src).arg(&uri), CLIENT_SECS);
    run_ok(Command::new("nbdcopy").arg(&uri).arg(&back), CLIENT_SECS);
    let got = fs::read(&back).expect("read back");
    assert!(got == data, "the device does not hold what nbdcopy wrote");
    // Also through the unix socket (in clear, local): the same bytes.
    let unix = format!(
        "nbd+unix:///loop?socket={}",
        s.alpha().run_dir.join("loop.nbd").display()
    );
    let local = work.path().join("local.bin");
    run_ok(Command::new("nbdcopy").arg(&unix).arg(&local), CLIENT_SECS);
    assert!(
        fs::read(&local).expect("read") == data,
        "unix socket reads differ"
    );

    let rec = proxy.recorded();
    assert!(!rec.is_empty(), "nothing went through the proxy");
    let carried: usize = rec.iter().map(|(c, s)| c.len() + s.len()).sum();
    assert!(
        carried as u64 > 2 * DISK,
        "the proxy carried only {carried} bytes"
    );
    // 64 samples of the data: none may appear in either direction.
    let probes: Vec<&[u8]> = (0..64)
        .map(|i| {
            let off = (i * 0x1F_3A7 * 4096 + i * 977) % (data.len() - PROBE);
            &data[off..off + PROBE]
        })
        .collect();
    for (n, (c, sv)) in rec.iter().enumerate() {
        // The client's flags and NBD_OPT_STARTTLS in clear, then a TLS handshake record.
        assert_eq!(
            c.get(4 + 8..4 + 12),
            Some(&5u32.to_be_bytes()[..]),
            "connection {n}"
        );
        assert_eq!(
            c.get(20),
            Some(&0x16),
            "connection {n}: a ClientHello follows"
        );
        for (dir, stream) in [("client->server", c), ("server->client", sv)] {
            if let Some(at) = find_probe(stream, &probes) {
                panic!("connection {n}: data in clear {dir} at byte {at}");
            }
        }
    }
    // The scan finds what it should.
    let mut planted = random_bytes(7, 100_000);
    planted[54_321..54_321 + PROBE].copy_from_slice(probes[3]);
    assert_eq!(find_probe(&planted, &probes), Some(54_321));
}

/// `nbd-tls on` (SELECTIVETLS): clients in clear and clients with TLS are both served.
#[test]
fn on_serves_clear_and_tls_clients() {
    if !tools() {
        return;
    }
    let s = Setup::new(
        "nbd-listen 127.0.0.1:{port};\nnbd-tls on;\nnbd-tls-cert \"{cert}\";\nnbd-tls-key \"{key}\";",
    );
    let dir = s.client_dir("anon", None);
    assert_eq!(nbdinfo_size(&clear_uri(s.addr())), Ok(DISK));
    assert_eq!(nbdinfo_size(&tls_uri(s.addr(), &dir)), Ok(DISK));
    let status = s.alpha().adm(&["status", "loop"]).ok().stdout;
    assert!(
        status.contains(&format!("nbds://{}/loop", s.addr())),
        "{status}"
    );
    assert!(status.contains(&clear_uri(s.addr())), "{status}");
}

/// `nbd-tls-ca`: only clients with a certificate of that CA get through.
#[test]
fn client_certificates_are_checked_against_nbd_tls_ca() {
    if !tools() {
        return;
    }
    let s = Setup::new(
        "nbd-listen 127.0.0.1:{port};\nnbd-tls require;\nnbd-tls-cert \"{cert}\";\nnbd-tls-key \"{key}\";\nnbd-tls-ca \"{clients}\";",
    );
    let stranger = Ca::new(s.certs.path(), "stranger");
    let good = s.client_dir("good", Some(&s.clients));
    assert_eq!(nbdinfo_size(&tls_uri(s.addr(), &good)), Ok(DISK));
    for (name, ca) in [("none", None), ("other", Some(&stranger))] {
        let dir = s.client_dir(name, ca);
        let r = nbdinfo_size(&tls_uri(s.addr(), &dir));
        let Err(why) = r else {
            panic!("client {name} was served");
        };
        // rustls refuses the handshake with an alert.
        assert!(why.contains("TLS fatal alert"), "{name}: {why}");
    }
    let log = s.alpha().log();
    assert!(log.contains("TLS failed"), "{log}");
}

/// A TLS file that cannot be used stops `up` with its setting and path.
#[test]
fn bad_nbd_tls_file_stops_up_naming_it() {
    let certs = tempfile::tempdir().expect("tempdir");
    let missing = certs.path().join("missing.pem");
    let text = format!(
        "urbd-options loop {{ nbd-listen 127.0.0.1:1; nbd-tls require; nbd-tls-cert \"{}\"; nbd-tls-key \"{}\"; }}\n",
        missing.display(),
        missing.display()
    );
    let pair = Pair::with_metadata_opts(&PairOpts {
        after: [text, String::new()],
        ..PairOpts::default()
    });
    let a = pair.alpha();
    let out: Ran = a.adm(&["up", "loop"]);
    assert_ne!(out.code, 0, "up with a missing nbd-tls-cert succeeded");
    assert!(
        out.stderr.contains("nbd-tls-cert") && out.stderr.contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(a.pid().is_none(), "no daemon is left running");
}
