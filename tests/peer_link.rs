//! The peer transport on real loopback sockets: establishing the data and meta sockets in
//! every start order (docs/PROTOCOL.md §1), refusing strangers and bad first frames, the
//! stop flag, and frame I/O over an established link (§2).
//!
//! Every wait is bounded: each `establish` runs under a watchdog that sets its stop flag.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use urbd::daemon::peer::{
    FrameError, FrameReader, Link, LinkConfig, LinkError, Listener, establish, write_frame,
};
use urbd::wire::{
    Barrier as BarrierPkt, Data, Frame, FrameHeader, HEADER_LEN, MAX_DATA, Packet, PacketType,
    WireError, dp_flags,
};

/// How long any single `establish` may run before the watchdog stops it.
const WATCHDOG: Duration = Duration::from_secs(15);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A seeded generator (splitmix64), so every run draws the same delays.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn config(local: &Listener, peer: &Listener, name: &str) -> LinkConfig {
    LinkConfig {
        local: local.local_addr(),
        peer: peer.local_addr(),
        peer_name: name.to_string(),
        connect_int: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
    }
}

/// Runs `establish` with a watchdog: returns the link, or panics naming `who` if it did not
/// come within [`WATCHDOG`].
fn establish_bounded(listener: &Listener, cfg: &LinkConfig, seed: u64, who: &str) -> Link {
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + WATCHDOG;
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Release);
        });
        let result = establish(listener, cfg, &stop, &mut rng(seed));
        done.store(true, Ordering::Release);
        match result {
            Ok(Some(link)) => link,
            Ok(None) => panic!("{who}: no link within {WATCHDOG:?}"),
            Err(e) => panic!("{who}: {e}"),
        }
    })
}

/// Both nodes: `a_delay`/`b_delay` after a common start.
fn connect_pair(
    la: &Listener,
    lb: &Listener,
    a_delay: Duration,
    b_delay: Duration,
    seed: u64,
) -> (Link, Link) {
    connect_pair_logged(la, lb, a_delay, b_delay, seed, &Capture::default())
}

/// [`connect_pair`], with both nodes' logs going to `cap`.
fn connect_pair_logged(
    la: &Listener,
    lb: &Listener,
    a_delay: Duration,
    b_delay: Duration,
    seed: u64,
    cap: &Capture,
) -> (Link, Link) {
    let ca = config(la, lb, "b");
    let cb = config(lb, la, "a");
    let start = Barrier::new(2);
    thread::scope(|s| {
        let a = s.spawn(|| {
            logged(cap, || {
                start.wait();
                thread::sleep(a_delay);
                establish_bounded(la, &ca, seed, "a")
            })
        });
        let b = s.spawn(|| {
            logged(cap, || {
                start.wait();
                thread::sleep(b_delay);
                establish_bounded(lb, &cb, seed ^ 0xdead_beef, "b")
            })
        });
        (a.join().expect("a"), b.join().expect("b"))
    })
}

/// The two links are the two ends of the same sockets, one side holds resolve-conflicts,
/// and frames cross both sockets both ways.
fn assert_one_link(a: &Link, b: &Link) {
    assert_ne!(
        a.accepted, b.accepted,
        "exactly one node accepted the meta socket"
    );
    for (x, y, what) in [(&a.data, &b.data, "data"), (&a.meta, &b.meta, "meta")] {
        assert_eq!(
            x.local_addr().expect("addr"),
            y.peer_addr().expect("addr"),
            "{what} sockets are one connection"
        );
        assert_eq!(x.peer_addr().expect("addr"), y.local_addr().expect("addr"));
    }
    let mut scratch = Vec::new();
    let mut reader = FrameReader::new();
    for (from, to, sock) in [
        (a, b, "data"),
        (b, a, "data"),
        (a, b, "meta"),
        (b, a, "meta"),
    ] {
        let (mut w, mut r) = match sock {
            "data" => (&from.data, &to.data),
            _ => (&from.meta, &to.meta),
        };
        r.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let frame = if sock == "data" {
            Frame::new(0, Packet::Barrier(BarrierPkt { epoch: 0x0102_0304 }))
        } else {
            Frame::new(0, Packet::Ping)
        };
        write_frame(&mut w, &frame, &mut scratch).expect("write");
        let (h, payload) = reader.read(&mut r).expect("read");
        assert_eq!(
            Packet::decode(h.ty, payload).expect("decode"),
            frame.packet,
            "{sock}"
        );
        r.set_read_timeout(None).expect("timeout");
    }
}

fn listeners(a: &str, b: &str) -> (Listener, Listener) {
    (
        Listener::bind(addr(a)).expect("bind a"),
        Listener::bind(addr(b)).expect("bind b"),
    )
}

/// §1: a's attempt starts 300 ms before b's (both listeners are bound, as after `up`).
#[test]
fn a_starts_first() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let (a, b) = connect_pair(&la, &lb, Duration::ZERO, Duration::from_millis(300), 1);
    assert_one_link(&a, &b);
}

/// §1: b's attempt starts first.
#[test]
fn b_starts_first() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let (a, b) = connect_pair(&la, &lb, Duration::from_millis(300), Duration::ZERO, 2);
    assert_one_link(&a, &b);
}

/// §1: while the peer is down its port refuses, and the dial is retried every
/// `connect-int`. Once the peer's listener is bound (its `establish` not yet running),
/// both dials land in its backlog: this node dialed both sockets, and the peer, starting
/// later, accepts both.
#[test]
fn a_refused_dial_is_retried_until_the_peer_listens() {
    let la = Listener::bind(addr("127.0.0.1:0")).expect("bind a");
    // Reserve an address for b, then free it so that a's dials are refused.
    let b_addr = Listener::bind(addr("127.0.0.1:0"))
        .expect("bind")
        .local_addr();
    let ca = LinkConfig {
        local: la.local_addr(),
        peer: b_addr,
        peer_name: "b".into(),
        connect_int: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
    };
    let cap = Capture::default();
    let (a, lb, waited) = thread::scope(|s| {
        let a = s.spawn(|| logged(&cap, || establish_bounded(&la, &ca, 30, "a")));
        thread::sleep(Duration::from_millis(300));
        let Ok(lb) = Listener::bind(b_addr) else {
            eprintln!("skipped: {b_addr} was taken meanwhile");
            return (None, None, Duration::ZERO);
        };
        let t = Instant::now();
        let a = a.join().expect("a");
        (Some(a), Some(lb), t.elapsed())
    });
    let (Some(a), Some(lb)) = (a, lb) else { return };
    assert!(!a.accepted, "a dialed both sockets");
    assert!(
        waited < Duration::from_secs(1),
        "a retried within connect-int: {waited:?}"
    );
    assert!(
        cap.text().contains("cannot connect"),
        "log:\n{}",
        cap.text()
    );
    let b = establish_bounded(&lb, &config(&lb, &la, "a"), 31, "b");
    assert!(b.accepted);
    assert_one_link(&a, &b);
}

/// §1: both nodes dial at the same moment, over and over, on listeners kept across
/// attempts (leftovers of crossed tries stay queued on them). Every round must converge.
#[test]
fn simultaneous_start_converges_every_time() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let cap = Capture::default();
    for round in 0..50u64 {
        let t = Instant::now();
        let (a, b) = connect_pair_logged(&la, &lb, Duration::ZERO, Duration::ZERO, round, &cap);
        assert_one_link(&a, &b);
        slowest = slowest.max(t.elapsed());
    }
    let log = cap.text();
    eprintln!(
        "50 simultaneous starts in {:?}, slowest {slowest:?}; {} data and {} meta crosses",
        started.elapsed(),
        log.matches("initial packet S crossed").count(),
        log.matches("initial packet M crossed").count(),
    );
}

/// §1 over IPv6 loopback (skipped where the host has no ::1).
#[test]
fn ipv6_loopback() {
    let Ok(la) = Listener::bind(addr("[::1]:0")) else {
        eprintln!("skipped: cannot bind [::1]");
        return;
    };
    let lb = Listener::bind(addr("[::1]:0")).expect("bind b");
    let (a, b) = connect_pair(&la, &lb, Duration::ZERO, Duration::from_millis(50), 3);
    assert_one_link(&a, &b);
    assert!(a.data.peer_addr().expect("addr").is_ipv6());
}

/// Collects what `tracing` writes, to check what was logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

/// Runs `f` with this thread's log going to `cap`.
fn logged<T>(cap: &Capture, f: impl FnOnce() -> T) -> T {
    let cap = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || cap.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, f)
}

/// Waits until the server side closes `s` (EOF or reset); returns how long that took.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the connection was not closed within {limit:?}")
            }
            Err(_) => return t.elapsed(),
        }
    }
}

/// A connection from an address that is not the peer's is refused and logged with that
/// address; the attempt goes on, and the real peer (whose dials come from its own
/// configured address, 127.0.0.2) gets through.
#[test]
fn connections_from_strangers_are_refused() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.2:0");
    let mut ca = config(&la, &lb, "b");
    // a's first dial lands in b's backlog; a long connect-int makes a wait seconds for b
    // to dial the meta socket, so the attempt is still running while the stranger calls.
    ca.connect_int = Duration::from_secs(5);
    let cb = config(&lb, &la, "a");
    let cap = Capture::default();
    let a_up = Barrier::new(2);
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| {
            logged(&cap, || {
                a_up.wait();
                establish_bounded(&la, &ca, 7, "a")
            })
        });
        a_up.wait();
        // A stranger: 127.0.0.1 is not b's address.
        let mut stranger = TcpStream::connect(la.local_addr()).expect("connect");
        let _ = stranger.write_all(b"hello?");
        closed_within(&mut stranger, Duration::from_secs(5));
        let b = establish_bounded(&lb, &cb, 8, "b");
        (a.join().expect("a"), b)
    });
    assert_one_link(&a, &b);
    assert_eq!(
        a.data.peer_addr().expect("addr").ip(),
        addr("127.0.0.2:0").ip(),
        "b dialed from its configured address"
    );
    let log = cap.text();
    assert!(
        log.contains("WARN") && log.contains("refusing a connection from 127.0.0.1:"),
        "log:\n{log}"
    );
}

/// Connections from the peer's address that send garbage, a frame that is not an
/// initial one, or nothing at all within the timeout are closed and logged; the attempt
/// goes on.
#[test]
fn bad_and_silent_first_frames_are_closed() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let mut ca = config(&la, &lb, "b");
    ca.timeout = Duration::from_millis(300);
    // Keeps a's attempt running while the bad connections call (see above).
    ca.connect_int = Duration::from_secs(5);
    let cb = config(&lb, &la, "a");
    let cap = Capture::default();
    let a_up = Barrier::new(2);
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| {
            logged(&cap, || {
                a_up.wait();
                establish_bounded(&la, &ca, 9, "a")
            })
        });
        a_up.wait();

        let mut garbage = TcpStream::connect(la.local_addr()).expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let took = closed_within(&mut garbage, Duration::from_secs(5));
        assert!(took < Duration::from_millis(250), "garbage closed at once");

        let mut wrong = TcpStream::connect(la.local_addr()).expect("connect");
        let mut ping = Vec::new();
        Frame::new(0, Packet::Ping).encode(&mut ping);
        wrong.write_all(&ping).expect("write");
        closed_within(&mut wrong, Duration::from_secs(5));

        let mut silent = TcpStream::connect(la.local_addr()).expect("connect");
        let took = closed_within(&mut silent, Duration::from_secs(5));
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "silent connection closed after the 300 ms timeout, not {took:?}"
        );

        let b = establish_bounded(&lb, &cb, 10, "b");
        (a.join().expect("a"), b)
    });
    assert_one_link(&a, &b);
    let log = cap.text();
    assert!(log.contains("bad frame magic"), "log:\n{log}");
    assert!(log.contains("first frame is PING"), "log:\n{log}");
    assert!(log.contains("no initial packet within"), "log:\n{log}");
}

/// A stop flag already set ends the attempt before any dial.
#[test]
fn stop_already_set_returns_at_once() {
    let la = Listener::bind(addr("127.0.0.1:0")).expect("bind");
    let lb = Listener::bind(addr("127.0.0.1:0")).expect("bind");
    let cfg = config(&la, &lb, "b");
    let t = Instant::now();
    let r = establish(&la, &cfg, &AtomicBool::new(true), &mut rng(12));
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert!(t.elapsed() < Duration::from_millis(50));
}

/// A peer that never comes: dials are refused and retried, and the stop flag is seen
/// within about 100 ms of being set.
#[test]
fn stop_latency_is_bounded() {
    let la = Listener::bind(addr("127.0.0.1:0")).expect("bind");
    let nobody = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = LinkConfig {
        local: la.local_addr(),
        peer: nobody,
        peer_name: "nobody".into(),
        connect_int: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
    };
    let stop = AtomicBool::new(false);
    let set_at = Mutex::new(None);
    let returned_at = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            *set_at.lock().expect("lock") = Some(Instant::now());
            stop.store(true, Ordering::Release);
        });
        let r = establish(&la, &cfg, &stop, &mut rng(13));
        assert!(matches!(r, Ok(None)), "{r:?}");
        Instant::now()
    });
    let set_at = set_at.lock().expect("lock").expect("stop was set");
    let latency = returned_at.saturating_duration_since(set_at);
    assert!(latency < Duration::from_millis(250), "{latency:?}");
}

#[test]
fn a_peer_address_equal_to_our_own_is_a_config_error() {
    let la = Listener::bind(addr("127.0.0.1:0")).expect("bind");
    let cfg = LinkConfig {
        local: la.local_addr(),
        peer: la.local_addr(),
        peer_name: "me".into(),
        connect_int: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
    };
    let r = establish(&la, &cfg, &AtomicBool::new(false), &mut rng(14));
    let err = r.expect_err("config error");
    assert!(matches!(err, LinkError::Config { .. }));
    assert!(err.to_string().contains("peer me at"), "{err}");
}

/// §2 over an established link: a 1 MiB data frame written without copying, read back
/// whole; a frame cut by end-of-file is `Truncated`; end-of-file between frames is
/// `Closed`.
#[test]
fn frames_cross_a_link() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let (a, b) = connect_pair(&la, &lb, Duration::ZERO, Duration::from_millis(20), 20);
    let block: Vec<u8> = (0..MAX_DATA).map(|i| (i % 251) as u8).collect();
    let frame = Frame::new(
        2,
        Packet::Data(Data {
            sector: 1 << 20,
            block_id: 0xfeed,
            seq: 42,
            dp_flags: dp_flags::SEND_WRITE_ACK | dp_flags::FUA,
            digest: &[],
            payload: &block,
        }),
    );
    b.data
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = FrameReader::new();
    thread::scope(|s| {
        s.spawn(|| {
            let mut scratch = Vec::new();
            let mut w = &a.data;
            for _ in 0..3 {
                write_frame(&mut w, &frame, &mut scratch).expect("write");
            }
            // Half a frame, then end of file.
            let mut half = Vec::new();
            Frame::new(0, Packet::Barrier(BarrierPkt { epoch: 1 })).encode(&mut half);
            w.write_all(&half[..HEADER_LEN + 2]).expect("write");
            a.data.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut r = &b.data;
        for _ in 0..3 {
            let (h, payload) = reader.read(&mut r).expect("read");
            assert_eq!((h.ty, h.volume), (PacketType::DATA, 2));
            let Packet::Data(d) = Packet::decode(h.ty, payload).expect("decode") else {
                panic!("not data");
            };
            assert_eq!((d.sector, d.block_id, d.seq), (1 << 20, 0xfeed, 42));
            assert!(d.payload == block.as_slice(), "1 MiB block intact");
        }
        let err = reader.read(&mut r).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    got: 18,
                    expected: 20
                }
            ),
            "{err:?}"
        );
    });

    // End of file at a frame boundary.
    let mut scratch = Vec::new();
    let mut w = &b.meta;
    write_frame(&mut w, &Frame::new(0, Packet::PingAck), &mut scratch).expect("write");
    b.meta.shutdown(Shutdown::Write).expect("shutdown");
    let mut r = &a.meta;
    a.meta
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (h, _) = reader.read(&mut r).expect("ping ack");
    assert_eq!(h.ty, PacketType::PING_ACK);
    assert!(matches!(reader.read(&mut r), Err(FrameError::Closed)));
}

/// §2: a header announcing more than its type's cap fails at once, while the stream stays
/// open and no payload byte was sent: the reader never waits for the announced bytes.
#[test]
fn oversize_length_fails_before_any_payload_is_read() {
    let (la, lb) = listeners("127.0.0.1:0", "127.0.0.1:0");
    let (a, b) = connect_pair(&la, &lb, Duration::from_millis(20), Duration::ZERO, 21);
    let mut head = Vec::new();
    FrameHeader {
        flags: 0,
        ty: PacketType::PING,
        volume: 0,
        len: 0,
    }
    .encode(&mut head);
    head[12..16].copy_from_slice(&5000u32.to_be_bytes());
    (&a.meta).write_all(&head).expect("write");
    b.meta
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = Instant::now();
    let err = FrameReader::new().read(&mut &b.meta).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Wire(WireError::TooLong {
                what: "payload",
                max: 4096
            })
        ),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "did not wait for a payload"
    );
    // The same for a data frame a byte over MAX_DATA_PAYLOAD.
    let mut head = Vec::new();
    FrameHeader {
        flags: 0,
        ty: PacketType::DATA,
        volume: 0,
        len: urbd::wire::MAX_DATA_PAYLOAD + 1,
    }
    .encode(&mut head);
    (&a.data).write_all(&head).expect("write");
    b.data
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let err = FrameReader::new().read(&mut &b.data).unwrap_err();
    assert!(
        matches!(err, FrameError::Wire(WireError::TooLong { .. })),
        "{err:?}"
    );
}
