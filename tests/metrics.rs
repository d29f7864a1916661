//! The Prometheus endpoint (issue 9 point 5) with real daemons: `urbd-options loop {
//! metrics-listen 127.0.0.1:PORT; }` serves `GET /metrics` with the /proc/drbd counters
//! (equal to what `proc` shows), the states, resync progress while a resync runs, and an
//! ack-latency histogram that counts the application's writes.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use util::pair::*;
use util::repl::*;

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    (head.to_string(), body.to_string())
}

/// The value of the sample `name{...}` (labels ignored) in `body`.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn metrics_follow_proc_and_count_writes() {
    let (port, _) = util::free_port_pair();
    let pair = synced_pair(&PairOpts {
        after: [
            format!("urbd-options loop {{ metrics-listen 127.0.0.1:{port}; }}\n"),
            String::new(),
        ],
        ..quick()
    });
    let a = pair.alpha();
    write_all(
        &pair,
        a,
        (0..64u64)
            .map(|i| (i * MIB / 4, random_bytes(i, 64 << 10)))
            .collect(),
    );
    // The endpoint serves what the loop last published (at most 2 s old).
    wait_until(&pair, "the writes in the histogram", SETTLE, || {
        let (_, body) = get(port, "/metrics");
        sample(&body, "urbd_ack_latency_seconds_count").is_some_and(|c| c >= 65.0)
    });
    let (head, body) = get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains(
            "urbd_state{resource=\"loop\",volume=\"0\",minor=\"0\",node=\"alpha\",role=\"Primary\",peer_role=\"Secondary\",disk=\"UpToDate\",peer_disk=\"UpToDate\",cstate=\"Connected\"} 1"
        ),
        "{body}"
    );
    assert_eq!(sample(&body, "urbd_primary"), Some(1.0));
    assert_eq!(sample(&body, "urbd_connected"), Some(1.0));
    assert_eq!(sample(&body, "urbd_out_of_sync_kib"), Some(0.0));
    assert_eq!(sample(&body, "urbd_size_bytes"), Some(DATA_BYTES as f64));
    // Counters as proc shows them (nothing moves now: the writes are done).
    std::thread::sleep(Duration::from_millis(2500));
    let (_, body) = get(port, "/metrics");
    assert_eq!(
        sample(&body, "urbd_network_sent_kib_total"),
        Some(counter(a, "ns") as f64),
        "{body}"
    );
    assert_eq!(
        sample(&body, "urbd_disk_written_kib_total"),
        Some(counter(a, "dw") as f64)
    );
    // The histogram is cumulative and ends at the count.
    let buckets: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("urbd_ack_latency_seconds_bucket{"))
        .map(|l| {
            l.rsplit_once(' ')
                .expect("value")
                .1
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(buckets.len(), 16);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(
        buckets.last().copied(),
        sample(&body, "urbd_ack_latency_seconds_count")
    );
    assert!(sample(&body, "urbd_ack_latency_seconds_sum").is_some_and(|s| s > 0.0));

    // A resync shows its progress.
    a.adm(&["disconnect", "loop"]).ok();
    write_all(&pair, a, vec![(0, random_bytes(9, 8 * MIB as usize))]);
    wait_until(&pair, "oos in the metrics", SETTLE, || {
        let (_, body) = get(port, "/metrics");
        sample(&body, "urbd_out_of_sync_kib") == Some(8192.0)
            && sample(&body, "urbd_connected") == Some(0.0)
    });
    a.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);

    // Anything but GET /metrics.
    let (head, _) = get(port, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

/// A port that cannot be bound: `up` fails and says where.
#[test]
fn a_busy_metrics_port_fails_up() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let pair = Pair::with_metadata_opts(&PairOpts {
        after: [
            format!("urbd-options loop {{ metrics-listen 127.0.0.1:{port}; }}\n"),
            String::new(),
        ],
        ..quick()
    });
    let r = pair.alpha().adm(&["up", "loop"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("serving metrics on 127.0.0.1:{port}")),
        "{r:?}"
    );
}
