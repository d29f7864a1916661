//! A session's settings from the resource's configuration (`net` and `disk` sections),
//! with DRBD 8.4's defaults and units.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{Address, NodeView, Protocol, VolumeView};
use crate::core::conn::{AuthConfig, ConnConfig, LocalDisk, NetTimers};
use crate::core::repl::ReplConfig;
use crate::core::{AfterSb, Policies};
use crate::io::{BackendSpec, CacheMode};
use crate::wire::WireProtocol;

use super::super::peer::{LinkConfig, PeerTls};
use super::SessionConfig;

fn socket_addr(a: &Address) -> Result<SocketAddr, String> {
    let ip: IpAddr = a
        .host
        .parse()
        .map_err(|_| format!("address {} is not an IP address", a.host))?;
    Ok(SocketAddr::new(ip, a.port))
}

fn scaled(view: &NodeView, name: &str, default: u64) -> Result<u64, String> {
    match view.net.get_scaled(name) {
        None => Ok(default),
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(format!("net option {name}: {e}")),
    }
}

fn policy(view: &NodeView, name: &str) -> AfterSb {
    match view.net.get(name) {
        // drbdadm's `convert_discard_opt`: discard-node-NAME is discard-local on NAME and
        // discard-remote on the other node (the name is checked in `session_config`).
        Some(v) if v.starts_with("discard-node-") => {
            if v["discard-node-".len()..] == *view.node {
                AfterSb::DiscardLocal
            } else {
                AfterSb::DiscardRemote
            }
        }
        Some("discard-younger-primary") => AfterSb::DiscardYoungerPrimary,
        Some("discard-older-primary") => AfterSb::DiscardOlderPrimary,
        Some("discard-zero-changes") => AfterSb::DiscardZeroChanges,
        Some("discard-least-changes") => AfterSb::DiscardLeastChanges,
        Some("discard-local") => AfterSb::DiscardLocal,
        Some("discard-remote") => AfterSb::DiscardRemote,
        Some("consensus") => AfterSb::Consensus,
        Some("discard-secondary") => AfterSb::DiscardSecondary,
        Some("call-pri-lost-after-sb") | Some("call-pri-lost") => AfterSb::CallHelper,
        Some("violently-as0p") | Some("violently") => AfterSb::Violently,
        _ => AfterSb::Disconnect,
    }
}

/// The dynamic resync controller, when the disk section sets `c-plan-ahead` above 0. urbd
/// keeps the fixed `resync-rate` otherwise: DRBD 8.4's default `c-plan-ahead 20` makes
/// `resync-rate` only a starting point, which surprises admins who set it.
fn controller_config(
    volume: &VolumeView,
    rate: u64,
) -> Result<Option<crate::core::repl::ControllerConfig>, String> {
    let get = |name: &str, default: u64| match volume.disk_opts.get_scaled(name) {
        None => Ok(default),
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(format!("disk option {name}: {e}")),
    };
    let d = crate::core::repl::ControllerConfig::default();
    let plan_ahead = get("c-plan-ahead", 0)?;
    if plan_ahead == 0 {
        return Ok(None);
    }
    let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Some(crate::core::repl::ControllerConfig {
        resync_rate_kib: rate,
        plan_ahead_ds: small(plan_ahead),
        delay_target_ds: small(get("c-delay-target", u64::from(d.delay_target_ds))?),
        fill_target_sect: get("c-fill-target", d.fill_target_sect)?,
        max_rate_kib: get("c-max-rate", d.max_rate_kib)?,
        min_rate_kib: get("c-min-rate", d.min_rate_kib)?,
    }))
}

/// A digest option of the net section: unset, or crc32c (the one algorithm urbd has).
fn crc32c_only(view: &NodeView, name: &str) -> Result<String, String> {
    match view.net.get(name) {
        None => Ok(String::new()),
        Some(a) if a.eq_ignore_ascii_case("crc32c") => Ok("crc32c".to_owned()),
        Some(a) => Err(format!("{name} {a} is not supported by urbd; use crc32c")),
    }
}

/// The session's configuration for `volume`, or `None` when the resource has no peer.
pub fn session_config(
    view: &NodeView,
    volume: &VolumeView,
    local: LocalDisk,
    size_bytes: u64,
    direct: bool,
    meta: Option<(crate::meta::MetaDevice, crate::meta::Metadata)>,
) -> Result<Option<SessionConfig>, String> {
    let Some(peer) = &view.peer else {
        return Ok(None);
    };
    let timers = NetTimers {
        connect_int: Duration::from_secs(scaled(view, "connect-int", 10)?.max(1)),
        ping_int: Duration::from_secs(scaled(view, "ping-int", 10)?.max(1)),
        ping_timeout: Duration::from_millis(scaled(view, "ping-timeout", 5)?.max(1) * 100),
        timeout: Duration::from_millis(scaled(view, "timeout", 60)?.max(1) * 100),
    };
    let auth = match (view.net.get("cram-hmac-alg"), view.net.get("shared-secret")) {
        (Some(alg), _) if !alg.eq_ignore_ascii_case("sha256") => {
            return Err(format!(
                "cram-hmac-alg {alg} is not supported by urbd; use sha256"
            ));
        }
        (Some(_), Some(secret)) => Some(AuthConfig {
            shared_secret: secret.as_bytes().to_vec(),
        }),
        (Some(_), None) => return Err("cram-hmac-alg needs a shared-secret".into()),
        _ => None,
    };
    let protocol = match view.protocol {
        Protocol::A => WireProtocol::A,
        Protocol::B => WireProtocol::B,
        Protocol::C => WireProtocol::C,
    };
    if let Some(node) = view
        .net
        .get("after-sb-0pri")
        .and_then(|v| v.strip_prefix("discard-node-"))
    {
        let known = |names: &str| names.split(' ').any(|n| n == node);
        if !known(&view.node) && !known(&peer.name) {
            return Err(format!(
                "after-sb-0pri discard-node-{node}: the node name is not known; valid node names are: '{} {}'",
                view.node, peer.name
            ));
        }
    }
    let mut conn = ConnConfig::new(peer.name.clone());
    conn.timers = timers;
    conn.auth = auth;
    conn.protocol = protocol;
    conn.policies = Policies {
        after_sb_0p: policy(view, "after-sb-0pri"),
        after_sb_1p: policy(view, "after-sb-1pri"),
        after_sb_2p: policy(view, "after-sb-2pri"),
        always_asbp: view.net.get_bool("always-asbp").unwrap_or(false),
        rr_conflict: policy(view, "rr-conflict"),
    };
    conn.two_primaries = view.net.get_bool("allow-two-primaries").unwrap_or(false);
    conn.integrity_alg = crc32c_only(view, "data-integrity-alg")?;
    conn.csums_alg = crc32c_only(view, "csums-alg")?;
    conn.verify_alg = crc32c_only(view, "verify-alg")?;
    let rate = match volume.disk_opts.get_scaled("resync-rate") {
        None => 250,
        Some(Ok(v)) => v.max(1),
        Some(Err(e)) => return Err(format!("disk option resync-rate: {e}")),
    };
    let controller = controller_config(volume, rate)?;
    let repl = ReplConfig {
        protocol,
        flush_at_barrier: volume.disk_opts.get("disk-flushes") != Some("no"),
        resync_rate_kib: rate,
        csums: !conn.csums_alg.is_empty(),
        controller,
        ..ReplConfig::default()
    };
    let mut disk = BackendSpec::new(&volume.disk);
    disk.cache = if direct {
        CacheMode::Direct
    } else {
        CacheMode::Cached
    };
    disk.size_limit = Some(size_bytes);
    let tls = match &view.tls {
        None => None,
        Some(files) => Some(PeerTls::load(files, &peer.name).map_err(|e| e.to_string())?),
    };
    Ok(Some(SessionConfig {
        resource: view.resource.clone(),
        tls,
        link: LinkConfig {
            local: socket_addr(&view.address)?,
            peer: socket_addr(&peer.address)?,
            peer_name: peer.name.clone(),
            connect_int: timers.connect_int,
            timeout: timers.timeout,
        },
        conn,
        repl,
        disk,
        size_bytes,
        local,
        ko_count: u32::try_from(scaled(view, "ko-count", 7)?).unwrap_or(u32::MAX),
        meta,
        fencing: crate::core::Fencing::from_option(volume.disk_opts.get("fencing")),
        sb_save: super::session::SbSaveConfig {
            dir: crate::control::StateDir::from_env().resource(&view.resource),
            node: view.node.clone(),
            volume: volume.volume,
            limit: crate::sbsave::SaveLimit::from_env()?,
        },
    }))
}

/// The resync as status shows it.
pub fn status_progress(p: crate::core::repl::SyncProgress) -> crate::status::SyncProgress {
    crate::status::SyncProgress {
        total_bits: p.total_kib / 4,
        left_bits: p.left_kib / 4,
        mark_age_secs: p.mark_age.as_secs(),
        mark_left_bits: p.mark_left_kib / 4,
        elapsed_secs: p.elapsed.as_secs(),
        want_kib_per_sec: p.want_kib_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn view(node: &str, net: &str) -> NodeView {
        let text = format!(
            "resource r {{ net {{ {net} }}
  on a {{ device minor 0; disk /d0; meta-disk internal; address 127.0.0.1:7000; }}
  on b {{ device minor 1; disk /d1; meta-disk internal; address 127.0.0.1:7001; }}
}}"
        );
        let c = Config::parse_str(&text, "t.res").expect("parse");
        c.resource("r").expect("r").for_node(node).expect("node")
    }

    #[test]
    fn discard_node_name_is_local_on_that_node_and_remote_on_the_other() {
        let net = "after-sb-0pri discard-node-b;";
        assert_eq!(
            policy(&view("b", net), "after-sb-0pri"),
            AfterSb::DiscardLocal
        );
        assert_eq!(
            policy(&view("a", net), "after-sb-0pri"),
            AfterSb::DiscardRemote
        );
        assert_eq!(
            policy(
                &view("a", "after-sb-1pri call-pri-lost-after-sb;"),
                "after-sb-1pri"
            ),
            AfterSb::CallHelper
        );
        assert_eq!(policy(&view("a", ""), "rr-conflict"), AfterSb::Disconnect);
    }

    #[test]
    fn discard_node_of_an_unknown_node_is_refused() {
        let v = view("a", "after-sb-0pri discard-node-c;");
        let local = LocalDisk {
            uuids: crate::meta::Uuids::default(),
            role: crate::core::Role::Secondary,
            disk: crate::core::DiskState::UpToDate,
            crashed_primary: false,
            oos_bits: 0,
            backing_sect: 2048,
            user_sect: 0,
            current_sect: 0,
        };
        let e = session_config(&v, &v.volumes[0], local, 1 << 20, false, None)
            .expect_err("unknown node");
        assert!(e.contains("discard-node-c") && e.contains("'a b'"), "{e}");
    }
}
