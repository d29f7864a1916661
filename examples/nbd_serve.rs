//! Serves one file, block device or memory disk over NBD until Ctrl-C / SIGTERM: the data
//! path without the daemon, for trying clients and measuring.
//!
//! ```text
//! cargo run --release --example nbd_serve -- --socket /tmp/r0.sock [--name r0]
//!     [--tcp 127.0.0.1:10809] [--cached] [--read-only] (--file PATH | --mem BYTES)
//! ```
//! `--cached` opens without O_DIRECT (page cache), the fair comparison with nbdkit's file
//! plugin; the default is O_DIRECT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use urbd::io::{BackendSpec, CacheMode, MemDisk, open_backend};
use urbd::nbd::{DataPath, ExportConfig, Gate};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("URBD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = ExportConfig {
        name: "r0".into(),
        unix_socket: None,
        tcp: None,
        read_only: false,
        tls: None,
    };
    let (mut file, mut mem, mut cached) = (None::<PathBuf>, None::<u64>, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--socket" => cfg.unix_socket = Some(val()?.into()),
            "--name" => cfg.name = val()?,
            "--tcp" => cfg.tcp = Some(val()?.parse()?),
            "--file" => file = Some(val()?.into()),
            "--mem" => mem = Some(val()?.parse()?),
            "--cached" => cached = true,
            "--read-only" => cfg.read_only = true,
            other => bail!("unknown argument {other}"),
        }
    }
    let backend: Box<dyn urbd::io::Backend> = match (file, mem) {
        (Some(path), None) => {
            let mut spec = BackendSpec::new(path);
            spec.read_only = cfg.read_only;
            if cached {
                spec.cache = CacheMode::Cached;
            }
            open_backend(&spec)?
        }
        (None, Some(size)) => Box::new(MemDisk::new(size).backend()),
        _ => bail!("need exactly one of --file PATH or --mem BYTES"),
    };
    // Block SIGINT/SIGTERM before the I/O thread exists so it inherits the mask and the
    // signal reaches only the sigwait below.
    // SAFETY: plain sigset manipulation.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let dp = DataPath::start(cfg, backend, Arc::new(Gate::new()))?;
    if let Some(a) = dp.tcp_addr() {
        eprintln!("listening on tcp {a}");
    }
    if let Some(p) = dp.unix_socket() {
        eprintln!("listening on {}", p.display());
    }
    // SAFETY: sigwait on the blocked set.
    unsafe {
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    dp.stop()?;
    Ok(())
}
