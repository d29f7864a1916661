//! `urbdadm demo`: two nodes on loopback with file-backed disks in a temporary folder.
//!
//! The demo runs the seed's first-time setup for real, through the same `urbdadm` commands
//! an operator types: create-md on both nodes, up, the forced promotion that starts the
//! initial full sync (shown with a progress bar), data written through the Primary's NBD
//! export, and a byte-for-byte comparison of the two replicas, then /proc/drbd and down.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::control::{self, Request, Response, RunDir};
use crate::core::ConnState;
use crate::meta;
use crate::nbd::Client;

use super::args::DemoArgs;
use super::cmd_meta::{self, Confirm};
use super::context::Context;
use super::error::CliError;
use super::output::print;

/// The two demo nodes.
const NODES: [&str; 2] = ["alpha", "beta"];

/// The demo's resource file; `@DIR@`, `@PA@` and `@PB@` are replaced with the temporary
/// folder and two free ports.
const DEMO_RES: &str = r#"# urbd demo: two nodes on loopback, file-backed disks.
resource demo {
    protocol C;
    disk {
        resync-rate 400M;
    }
    on alpha {
        device    minor 0;
        disk      "@DIR@/alpha.img";
        meta-disk "@DIR@/alpha.meta" [0];
        address   127.0.0.1:@PA@;
    }
    on beta {
        device    minor 1;
        disk      "@DIR@/beta.img";
        meta-disk "@DIR@/beta.meta" [0];
        address   127.0.0.1:@PB@;
    }
}
"#;

/// Size of one indexed meta-disk slot (128 MiB).
const META_SLOT_BYTES: u64 = 128 << 20;
/// How long the demo waits for the connection and for the initial sync at most.
const WAIT_CONNECT: Duration = Duration::from_secs(30);
const WAIT_SYNC: Duration = Duration::from_secs(600);

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    let size = parse_size(&args.size)?;
    let dir = tempfile::Builder::new()
        .prefix("urbd-demo-")
        .tempdir()
        .map_err(|e| CliError::exec(anyhow::Error::new(e).context("creating the demo folder")))?;
    let result = run_in(dir.path(), size);
    if args.keep {
        let kept = dir.keep();
        print(&format!("demo files kept in {}\n", kept.display()))?;
    }
    result
}

/// Two ports on 127.0.0.1 that are free now.
fn free_ports() -> Result<(u16, u16), CliError> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr().map(|a| (l, a.port())))
            .map_err(|e| CliError::exec(anyhow::Error::new(e).context("finding a free port")))
    };
    let (_a, pa) = bind()?;
    let (_b, pb) = bind()?;
    Ok((pa, pb))
}

fn run_in(dir: &Path, size: u64) -> Result<(), CliError> {
    let conf = dir.join("urbd.conf");
    let (pa, pb) = free_ports()?;
    let text = DEMO_RES
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PA@", &pa.to_string())
        .replace("@PB@", &pb.to_string());
    fs::write(&conf, text).map_err(|e| io_err(e, &conf))?;
    print(&format!(
        "urbd demo in {} ({} data disk per node)\n",
        dir.display(),
        human(size)
    ))?;

    for node in NODES {
        let ctx = Context {
            config_path: conf.clone(),
            config: Config::load(&conf)?,
            node: node.to_string(),
            dry_run: false,
        };
        for target in ctx.targets(&["demo".to_string()])? {
            sparse_file(&target.volume.disk, size)?;
            let dev = cmd_meta::meta_device(&target);
            sparse_file(&dev.path, META_SLOT_BYTES)?;
            print(&format!("[{node}] urbdadm create-md demo\n"))?;
            cmd_meta::create_one(&target, &Confirm::Force, false)?;
            let md = meta::read_md(&dev)?;
            print(&format!("[{node}] urbdadm get-gi demo\n{}", md.get_gi()))?;
        }
    }

    let run_a = dir.join("run-alpha");
    let run_b = dir.join("run-beta");
    let alpha = Node {
        conf: &conf,
        run_dir: &run_a,
        name: "alpha",
    };
    let beta = Node {
        conf: &conf,
        run_dir: &run_b,
        name: "beta",
    };
    let result = pair(&alpha, &beta, dir, size);
    // Down both, whatever happened (the daemons must not outlive the demo).
    let down_a = alpha.adm(&["down", "demo"]);
    let down_b = beta.adm(&["down", "demo"]);
    result?;
    down_a?;
    down_b?;
    print(&format!(
        "\nTo do the same by hand: write a resource file like {} (one `on` section per node),\n\
         then on each node `urbdadm create-md demo` and `urbdadm up demo`; on the node with the\n\
         good data `urbdadm primary --force demo`; watch `urbdadm proc` until UpToDate/UpToDate;\n\
         use the device through nbd+unix:///demo?socket=/run/urbd/demo.nbd (nbdfuse, qemu, nbdcopy).\n\
         On one machine, give each node its own URBD_RUN_DIR and --node alpha / --node beta.\n",
        conf.display()
    ))
}

/// Both nodes up, connected, the initial sync, data through NBD, both replicas compared.
fn pair(alpha: &Node<'_>, beta: &Node<'_>, dir: &Path, size: u64) -> Result<(), CliError> {
    alpha.adm(&["up", "demo"])?;
    beta.adm(&["up", "demo"])?;
    wait_for(alpha, WAIT_CONNECT, "the connection", |st| {
        st.cstate >= ConnState::Connected
    })?;
    print(&alpha.adm(&["cstate", "demo"])?)?;
    alpha.adm(&["--", "--force", "primary", "demo"])?;
    initial_sync(alpha)?;
    print(&alpha.adm(&["proc"])?)?;
    serve_and_verify(alpha, dir)?;
    compare_replicas(dir, size)?;
    print(&alpha.adm(&["status", "demo"])?)?;
    print(&alpha.adm(&["proc"])?)?;
    print(&beta.adm(&["proc"])?)?;
    alpha.adm(&["secondary", "demo"])?;
    Ok(())
}

/// Volume 0 of `node`'s resource `demo`, asked over the control socket.
fn volume_status(node: &Node<'_>) -> Result<crate::status::VolumeStatus, CliError> {
    let run = RunDir(node.run_dir.to_path_buf());
    match control::call(&run, "demo", Request::Status) {
        Ok(Response::Ok { status, .. }) => status
            .volumes
            .into_iter()
            .next()
            .ok_or_else(|| CliError::exec(anyhow::anyhow!("demo: no volume"))),
        Ok(other) => Err(CliError::exec(anyhow::anyhow!("demo: status: {other:?}"))),
        Err(e) => Err(CliError::exec(anyhow::anyhow!("demo: status: {e}"))),
    }
}

fn wait_for(
    node: &Node<'_>,
    limit: Duration,
    what: &str,
    done: impl Fn(&crate::status::VolumeStatus) -> bool,
) -> Result<(), CliError> {
    let start = Instant::now();
    loop {
        let st = volume_status(node)?;
        if done(&st) {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(CliError::exec(anyhow::anyhow!(
                "demo: waited {limit:?} for {what}; [{}] is {:?} {:?}/{:?}",
                node.name,
                st.cstate,
                st.disk,
                st.peer_disk
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The initial full sync with a progress bar (alpha is SyncSource).
fn initial_sync(alpha: &Node<'_>) -> Result<(), CliError> {
    print("[alpha] initial sync to beta\n")?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "  sync [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .map_err(|e| CliError::exec(anyhow::anyhow!("progress bar: {e}")))?
        .progress_chars("=> "),
    );
    let start = Instant::now();
    loop {
        let st = volume_status(alpha)?;
        if let Some(p) = st.sync {
            bar.set_length(p.total_bits * 4096);
            bar.set_position((p.total_bits - p.left_bits) * 4096);
        }
        if st.cstate == ConnState::Connected && st.peer_disk == crate::core::DiskState::UpToDate {
            bar.set_position(bar.length().unwrap_or(0));
            bar.finish();
            return Ok(());
        }
        if start.elapsed() > WAIT_SYNC {
            return Err(CliError::exec(anyhow::anyhow!(
                "demo: the initial sync did not finish in {WAIT_SYNC:?} ({:?} {:?}/{:?})",
                st.cstate,
                st.disk,
                st.peer_disk
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both backing files hold the same bytes.
fn compare_replicas(dir: &Path, size: u64) -> Result<(), CliError> {
    let (pa, pb) = (dir.join("alpha.img"), dir.join("beta.img"));
    let mut fa = fs::File::open(&pa).map_err(|e| io_err(e, &pa))?;
    let mut fb = fs::File::open(&pb).map_err(|e| io_err(e, &pb))?;
    let (mut ba, mut bb) = (vec![0u8; DEMO_CHUNK], vec![0u8; DEMO_CHUNK]);
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(DEMO_CHUNK as u64) as usize;
        fa.read_exact(&mut ba[..n]).map_err(|e| io_err(e, &pa))?;
        fb.read_exact(&mut bb[..n]).map_err(|e| io_err(e, &pb))?;
        if ba[..n] != bb[..n] {
            return Err(CliError::exec(anyhow::anyhow!(
                "demo: the replicas differ in the MiB at offset {offset}"
            )));
        }
        offset += n as u64;
    }
    print(&format!(
        "both replicas identical: {} and {} ({})\n",
        pa.display(),
        pb.display(),
        human(size)
    ))
}

/// Data written through alpha's NBD export with a progress bar, read back through NBD and
/// compared with the backing disk.
fn serve_and_verify(node: &Node<'_>, dir: &Path) -> Result<(), CliError> {
    let socket = node.run_dir.join("demo.nbd");
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        CliError::exec(anyhow::anyhow!(
            "demo: {what} through {}: {e}",
            socket.display()
        ))
    };
    let mut client =
        Client::connect_unix(&socket, "demo", true).map_err(|e| fail("connecting", &e))?;
    let bytes = client.info().size.min(DEMO_WRITE_BYTES);
    print(&format!(
        "[alpha] writing {} through NBD (nbd+unix:///demo?socket={})\n",
        human(bytes),
        socket.display()
    ))?;
    let bar = ProgressBar::new(bytes).with_style(
        ProgressStyle::with_template(
            "  [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .map_err(|e| CliError::exec(anyhow::anyhow!("progress bar: {e}")))?
        .progress_chars("=> "),
    );
    let mut offset = 0;
    while offset < bytes {
        let chunk = block(offset);
        client
            .write(offset, &chunk, false)
            .map_err(|e| fail("writing", &e))?;
        offset += chunk.len() as u64;
        bar.set_position(offset);
    }
    client.flush().map_err(|e| fail("flushing", &e))?;
    bar.finish();
    let mut offset = 0;
    while offset < bytes {
        let got = client
            .read(offset, DEMO_CHUNK as u32)
            .map_err(|e| fail("reading", &e))?;
        if got != block(offset) {
            return Err(CliError::exec(anyhow::anyhow!(
                "demo: data read back through NBD at offset {offset} differs from what was written"
            )));
        }
        offset += DEMO_CHUNK as u64;
    }
    client.disconnect().map_err(|e| fail("disconnecting", &e))?;
    let disk = dir.join("alpha.img");
    let mut file = fs::File::open(&disk).map_err(|e| io_err(e, &disk))?;
    let mut on_disk = vec![0u8; DEMO_CHUNK];
    let mut same = true;
    let mut offset = 0;
    while offset < bytes && same {
        file.read_exact(&mut on_disk)
            .map_err(|e| io_err(e, &disk))?;
        same = on_disk == block(offset);
        offset += DEMO_CHUNK as u64;
    }
    if !same {
        return Err(CliError::exec(anyhow::anyhow!(
            "demo: {} does not hold what was written through NBD",
            disk.display()
        )));
    }
    print(&format!(
        "[alpha] read back through NBD and from {}: identical\n",
        disk.display()
    ))?;
    Ok(())
}

/// How much the demo writes through NBD (at most the device size).
const DEMO_WRITE_BYTES: u64 = 64 << 20;
/// The demo's write size.
const DEMO_CHUNK: usize = 1 << 20;

/// Deterministic content of the chunk at `offset`, different for every chunk.
fn block(offset: u64) -> Vec<u8> {
    let mut x = offset ^ 0x9E37_79B9_7F4A_7C15;
    (0..DEMO_CHUNK / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// One demo node, driven through the real `urbdadm` binary (the commands an operator types).
struct Node<'a> {
    conf: &'a Path,
    run_dir: &'a Path,
    name: &'static str,
}

impl Node<'_> {
    /// Runs `urbdadm -c CONF --node NAME ARGS...`, prints the command, returns its stdout.
    fn adm(&self, args: &[&str]) -> Result<String, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::exec(anyhow::Error::new(e).context("finding urbdadm")))?;
        print(&format!("[{}] urbdadm {}\n", self.name, args.join(" ")))?;
        let out = std::process::Command::new(exe)
            .env("URBD_RUN_DIR", self.run_dir)
            .arg("-c")
            .arg(self.conf)
            .args(["--node", self.name])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| CliError::exec(anyhow::Error::new(e).context("running urbdadm")))?;
        if !out.status.success() {
            return Err(CliError::exec(anyhow::anyhow!(
                "demo: `urbdadm {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn sparse_file(path: &Path, size: u64) -> Result<(), CliError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_err(e, path))?;
    f.set_len(size).map_err(|e| io_err(e, path))
}

fn io_err(e: std::io::Error, path: &Path) -> CliError {
    CliError::exec(
        anyhow::Error::new(e).context(format!("demo: {}", PathBuf::from(path).display())),
    )
}

/// Parses `256M`, `1G`, `4096k` or a plain number of bytes.
fn parse_size(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => {
                    return Err(CliError::usage(format!(
                        "demo --size '{s}': unknown unit '{c}' (use k, M or G)"
                    )));
                }
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| CliError::usage(format!("demo --size '{s}': not a size")))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| CliError::usage(format!("demo --size '{s}': too large")))?;
    if bytes < (1 << 20) || bytes % 4096 != 0 {
        return Err(CliError::usage(format!(
            "demo --size '{s}': must be at least 1M and a multiple of 4k"
        )));
    }
    Ok(bytes)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").ok(), Some(256 << 20));
        assert_eq!(parse_size("1g").ok(), Some(1 << 30));
        assert_eq!(parse_size("4096k").ok(), Some(4 << 20));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("1000").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
