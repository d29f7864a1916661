//! The Prometheus endpoint (`urbd-options RES { metrics-listen ADDR:PORT; }`): `GET
//! /metrics` answers the text exposition format (version 0.0.4) with the resource's
//! /proc/drbd counters, states, resync progress and the ack-latency histogram, from the
//! status the event loop last published (refreshed at every state change and every 2 s).
//!
//! One thread accepts and answers one connection at a time; a request line longer than
//! [`MAX_REQUEST`] or slower than [`CLIENT_TIMEOUT`] is dropped. Only `GET /metrics` (and
//! `GET /`) are served; anything else gets 404 or 405.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::status::{LATENCY_BUCKETS_US, ResourceStatus, VolumeStatus};

/// The bytes of a request we read at most (request line and headers).
const MAX_REQUEST: u64 = 8 * 1024;
/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The status the endpoint serves, replaced by the event loop at each publish.
pub type Shared = Arc<Mutex<Option<ResourceStatus>>>;

/// Binds `addr` and serves it on a thread for the life of the daemon.
pub fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("urbd-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s, &shared) {
                            tracing::debug!(error = %e, "metrics client");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
                }
            }
        })?;
    tracing::info!(%bound, "Prometheus metrics on http://{bound}/metrics");
    Ok(bound)
}

fn answer(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The headers: read (bounded) up to the blank line, ignored.
    let mut header = String::new();
    loop {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", "/metrics" | "/") => {
            let st = shared
                .lock()
                .map(|s| s.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            ("200 OK", st.map(|s| render(&s)).unwrap_or_default())
        }
        ("GET", _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let mut w = &stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// A label value, escaped as the exposition format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text for one resource.
pub fn render(s: &ResourceStatus) -> String {
    let mut out = String::new();
    let labels = |v: &VolumeStatus| {
        format!(
            "resource=\"{}\",volume=\"{}\",minor=\"{}\"",
            esc(&s.resource),
            v.volume,
            v.minor
        )
    };
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (l, value) in rows {
            let _ = writeln!(out, "{name}{{{l}}} {value}");
        }
    };
    let per = |f: &dyn Fn(&VolumeStatus) -> String| -> Vec<(String, String)> {
        s.volumes.iter().map(|v| (labels(v), f(v))).collect()
    };
    family(
        "urbd_state",
        "gauge",
        "1 with the volume's role, peer role, disk, peer disk and connection state as labels.",
        s.volumes
            .iter()
            .map(|v| {
                (
                    format!(
                        "{},node=\"{}\",role=\"{}\",peer_role=\"{}\",disk=\"{}\",peer_disk=\"{}\",cstate=\"{}\"",
                        labels(v),
                        esc(&s.node),
                        v.role,
                        v.peer_role,
                        v.disk,
                        v.peer_disk,
                        v.cstate
                    ),
                    "1".to_string(),
                )
            })
            .collect(),
    );
    family(
        "urbd_primary",
        "gauge",
        "1 if this node is Primary.",
        per(&|v| u8::from(v.role == crate::core::Role::Primary).to_string()),
    );
    family(
        "urbd_connected",
        "gauge",
        "1 if the connection is Connected or syncing (Connected and beyond).",
        per(&|v| u8::from(v.cstate >= crate::core::ConnState::Connected).to_string()),
    );
    family(
        "urbd_up_to_date",
        "gauge",
        "1 if the local disk is UpToDate.",
        per(&|v| u8::from(v.disk == crate::core::DiskState::UpToDate).to_string()),
    );
    family(
        "urbd_suspended",
        "gauge",
        "1 while I/O is suspended (fencing).",
        per(&|v| u8::from(v.suspended).to_string()),
    );
    type Counter = (
        &'static str,
        &'static str,
        &'static str,
        fn(&VolumeStatus) -> i64,
    );
    let counters: [Counter; 11] = [
        (
            "urbd_network_sent_kib_total",
            "counter",
            "KiB sent to the peer (proc ns).",
            |v| v.counters.ns as i64,
        ),
        (
            "urbd_network_received_kib_total",
            "counter",
            "KiB received from the peer (proc nr).",
            |v| v.counters.nr as i64,
        ),
        (
            "urbd_disk_written_kib_total",
            "counter",
            "KiB written to the local disk (proc dw).",
            |v| v.counters.dw as i64,
        ),
        (
            "urbd_disk_read_kib_total",
            "counter",
            "KiB read from the local disk (proc dr).",
            |v| v.counters.dr as i64,
        ),
        (
            "urbd_activity_log_writes_total",
            "counter",
            "Activity-log transactions written (proc al).",
            |v| v.counters.al as i64,
        ),
        (
            "urbd_bitmap_writes_total",
            "counter",
            "Bitmap write-backs (proc bm).",
            |v| v.counters.bm as i64,
        ),
        (
            "urbd_local_pending",
            "gauge",
            "Local I/O in flight (proc lo).",
            |v| v.counters.lo,
        ),
        (
            "urbd_peer_pending",
            "gauge",
            "Requests sent to the peer and not answered (proc pe).",
            |v| v.counters.pe,
        ),
        (
            "urbd_unacked",
            "gauge",
            "Requests from the peer not answered yet (proc ua).",
            |v| v.counters.ua,
        ),
        (
            "urbd_application_pending",
            "gauge",
            "Application requests not completed (proc ap).",
            |v| v.counters.ap,
        ),
        (
            "urbd_epochs",
            "gauge",
            "Epochs on the fly (proc ep).",
            |v| v.counters.ep,
        ),
    ];
    for (name, kind, help, f) in counters {
        family(name, kind, help, per(&|v| f(v).to_string()));
    }
    family(
        "urbd_out_of_sync_kib",
        "gauge",
        "Data known to be out of sync, KiB (proc oos).",
        per(&|v| v.oos_kib.to_string()),
    );
    family(
        "urbd_size_bytes",
        "gauge",
        "Device size, bytes.",
        per(&|v| (v.size_sect * 512).to_string()),
    );
    let syncing: Vec<&VolumeStatus> = s.volumes.iter().filter(|v| v.sync.is_some()).collect();
    let sync_rows = |f: &dyn Fn(&crate::status::SyncProgress) -> String| -> Vec<(String, String)> {
        syncing
            .iter()
            .filter_map(|v| v.sync.as_ref().map(|p| (labels(v), f(p))))
            .collect()
    };
    family(
        "urbd_resync_total_kib",
        "gauge",
        "The running resync or verify: KiB in all.",
        sync_rows(&|p| (p.total_bits * 4).to_string()),
    );
    family(
        "urbd_resync_left_kib",
        "gauge",
        "The running resync or verify: KiB still to go.",
        sync_rows(&|p| (p.left_bits * 4).to_string()),
    );
    family(
        "urbd_resync_speed_kib_per_second",
        "gauge",
        "The running resync's average speed since it started, KiB/s.",
        sync_rows(&|p| {
            let done = p.total_bits.saturating_sub(p.left_bits) * 4;
            (done / p.elapsed_secs.max(1)).to_string()
        }),
    );
    family(
        "urbd_resync_want_kib_per_second",
        "gauge",
        "The rate the resync aims at (proc want), KiB/s.",
        sync_rows(&|p| p.want_kib_per_sec.to_string()),
    );
    // The histogram: cumulative buckets in seconds.
    let _ = writeln!(
        out,
        "# HELP urbd_ack_latency_seconds Application writes, trims and flushes from arrival to completion (protocol C: on both disks)."
    );
    let _ = writeln!(out, "# TYPE urbd_ack_latency_seconds histogram");
    for v in &s.volumes {
        let Some(h) = &v.ack_latency else {
            continue;
        };
        let l = labels(v);
        let mut cum = 0u64;
        for (i, &le) in LATENCY_BUCKETS_US.iter().enumerate() {
            cum += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "urbd_ack_latency_seconds_bucket{{{l},le=\"{}\"}} {cum}",
                le as f64 / 1e6
            );
        }
        let total = h.count();
        let _ = writeln!(
            out,
            "urbd_ack_latency_seconds_bucket{{{l},le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "urbd_ack_latency_seconds_sum{{{l}}} {}",
            h.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "urbd_ack_latency_seconds_count{{{l}}} {total}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::LatencyHistogram;

    #[test]
    fn renders_counters_states_and_a_cumulative_histogram() {
        use crate::core::{ConnState, DiskState, Role};
        let mut v = VolumeStatus {
            ack_latency: None,
            volume: 0,
            minor: 3,
            role: Role::Primary,
            peer_role: Role::Secondary,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::UpToDate,
            cstate: ConnState::Connected,
            protocol: Some('C'),
            suspended: false,
            user_isp: false,
            peer_isp: false,
            write_ordering: 'f',
            counters: crate::status::Counters::default(),
            oos_kib: 0,
            size_sect: 2048,
            uuids: None,
            md_flags: None,
            open_clients: 0,
            sync: None,
            export: None,
            kernel_device: None,
            split_brain: None,
            wfc_degraded: false,
        };
        v.counters.ns = 1024;
        v.oos_kib = 8;
        let mut h = LatencyHistogram::default();
        for us in [10, 60, 60, 3_000, 9_000_000] {
            h.observe(us);
        }
        v.ack_latency = Some(h);
        let s = ResourceStatus {
            resource: "r\"0".into(),
            node: "alpha".into(),
            pid: 1,
            version: "0".into(),
            volumes: vec![v],
        };
        let text = render(&s);
        let l = "resource=\"r\\\"0\",volume=\"0\",minor=\"3\"";
        for want in [
            format!("urbd_network_sent_kib_total{{{l}}} 1024"),
            format!("urbd_out_of_sync_kib{{{l}}} 8"),
            format!("urbd_ack_latency_seconds_bucket{{{l},le=\"0.00005\"}} 1"),
            format!("urbd_ack_latency_seconds_bucket{{{l},le=\"0.0001\"}} 3"),
            format!("urbd_ack_latency_seconds_bucket{{{l},le=\"0.005\"}} 4"),
            format!("urbd_ack_latency_seconds_bucket{{{l},le=\"2.5\"}} 4"),
            format!("urbd_ack_latency_seconds_bucket{{{l},le=\"+Inf\"}} 5"),
            format!("urbd_ack_latency_seconds_count{{{l}}} 5"),
            "# TYPE urbd_ack_latency_seconds histogram".to_string(),
        ] {
            assert!(text.contains(&want), "no {want:?} in\n{text}");
        }
        // Every sample line is NAME{LABELS} VALUE with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
