//! `urbdadm demo`: two nodes on loopback with file-backed disks in a temporary folder.
//!
//! The demo runs every step that this version of urbd can really do, on real files, through
//! the same code paths as the commands an operator types; the steps that need parts of urbd
//! not built yet are listed as such at the end, never simulated.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::meta;

use super::args::DemoArgs;
use super::cmd_meta::{self, Confirm};
use super::context::Context;
use super::error::CliError;
use super::output::print;

/// The two demo nodes.
const NODES: [&str; 2] = ["alpha", "beta"];

/// The demo's resource file; `@DIR@` is replaced with the temporary folder.
const DEMO_RES: &str = r#"# urbd demo: two nodes on loopback, file-backed disks.
resource demo {
    protocol C;
    on alpha {
        device    minor 0;
        disk      "@DIR@/alpha.img";
        meta-disk "@DIR@/alpha.meta" [0];
        address   127.0.0.1:7789;
    }
    on beta {
        device    minor 1;
        disk      "@DIR@/beta.img";
        meta-disk "@DIR@/beta.meta" [0];
        address   127.0.0.1:7790;
    }
}
"#;

/// Size of one indexed meta-disk slot (128 MiB).
const META_SLOT_BYTES: u64 = 128 << 20;

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

fn run_in(dir: &Path, size: u64) -> Result<(), CliError> {
    let conf = dir.join("urbd.conf");
    let text = DEMO_RES.replace("@DIR@", &dir.display().to_string());
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

    print(
        "\nNot available yet in this version of urbd, so not run: starting both node daemons,\n\
         the initial sync, writing through NBD and comparing the replicas.\n",
    )
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
