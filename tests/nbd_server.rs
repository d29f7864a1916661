//! The NBD server in-process, driven by urbd's own client and by raw sockets speaking
//! broken protocol on purpose. Every test is bounded (socket read timeouts) and stops its
//! data path on drop.

mod util;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::nbd as nbdutil;

use nbdutil::*;
use urbd::io::{BackendSpec, FaultBackend, MemDisk, open_backend};
use urbd::nbd::proto::{Command, ErrorCode, cmd_flags, tx_flags};
use urbd::nbd::{Client, ClientError, Gate};

fn mem(size: u64) -> (MemDisk, Box<dyn urbd::io::Backend>) {
    let disk = MemDisk::new(size);
    let be = Box::new(disk.backend());
    (disk, be)
}

fn err_code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Request { code, .. }) => code,
        other => panic!("expected a request error, got {other:?}"),
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn read_write_flush_trim_zero_both_reply_styles() {
    let (disk, be) = mem(8 << 20);
    let srv = Served::start("r0", be);
    for structured in [false, true] {
        let mut c = srv.client(structured);
        let info = *c.info();
        assert_eq!(info.size, 8 << 20);
        assert_eq!(info.structured, structured);
        assert_eq!(info.min_block, 1);
        assert_eq!(info.preferred_block, 4096);
        assert_eq!(info.max_payload, 32 << 20);
        for f in [
            tx_flags::HAS_FLAGS,
            tx_flags::SEND_FLUSH,
            tx_flags::SEND_FUA,
            tx_flags::SEND_TRIM,
            tx_flags::SEND_WRITE_ZEROES,
            tx_flags::CAN_MULTI_CONN,
        ] {
            assert_ne!(info.flags & f, 0, "flag {f:#x}");
        }
        assert_eq!(info.flags & tx_flags::READ_ONLY, 0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        c.write(12345, &data, false).unwrap();
        assert_eq!(c.read(12345, data.len() as u32).unwrap(), data);
        assert!(disk.dirty_pages() > 0);
        c.flush().unwrap();
        assert_eq!(disk.dirty_pages(), 0);
        c.write(0, b"durable", true).unwrap();
        assert_eq!(disk.dirty_pages(), 0, "FUA write is durable when acked");
        c.write_zeroes(12345, 1000, true).unwrap();
        assert_eq!(c.read(12345, 1000).unwrap(), vec![0; 1000]);
        c.trim(1 << 20, 1 << 20).unwrap();
        c.disconnect().unwrap();
    }
    let counters = srv.gate.counters();
    assert!(counters.dw >= 190 && counters.dr >= 190, "{counters:?}");
    wait_until("clients to close", || srv.gate.open_clients() == 0);
    srv.stop();
}

#[test]
fn pipelined_requests_on_a_direct_file_complete_out_of_order() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(64 << 20).unwrap();
    let srv = Served::start("r0", open_backend(&BackendSpec::new(f.path())).unwrap());
    let mut c = srv.client(true);
    // 200 writes in flight at once, unaligned ones among them, then reads.
    let mut cookies = std::collections::HashMap::new();
    for i in 0..200u64 {
        let off = i * 65_536 + (i % 3) * 511;
        let data = vec![(i % 250) as u8 + 1; 4096 + (i as usize % 5) * 1000];
        let ck = c
            .send_request(Command::WRITE, 0, off, data.len() as u32, &data)
            .unwrap();
        cookies.insert(ck, (off, data));
    }
    let mut order = Vec::new();
    for _ in 0..200 {
        let (ck, res) = c.recv_reply().unwrap();
        res.unwrap();
        order.push(ck);
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 200);
    c.flush().unwrap();
    for (off, data) in cookies.values() {
        assert_eq!(&c.read(*off, data.len() as u32).unwrap(), data);
    }
    // Unaligned overlapping writes into one block from two connections.
    let mut c2 = srv.client(false);
    c.write(60_000, b"AAAA", false).unwrap();
    c2.write(60_002, b"BB", false).unwrap();
    assert_eq!(c.read(59_998, 8).unwrap(), b"\0\0AABB\0\0");
    drop(c2);
    srv.stop();
}

#[test]
fn flush_on_one_connection_covers_writes_of_another() {
    let (disk, be) = mem(1 << 20);
    let srv = Served::start("r0", be);
    let mut a = srv.client(false);
    let mut b = srv.client(true);
    a.write(0, &[1u8; 8192], false).unwrap();
    assert!(disk.dirty_pages() >= 2);
    b.flush().unwrap();
    assert_eq!(
        disk.dirty_pages(),
        0,
        "CAN_MULTI_CONN: B's flush made A's write durable"
    );
    a.write(8192, &[2u8; 4096], false).unwrap();
    disk.crash(None);
    assert_eq!(disk.read(0, 8192), vec![1u8; 8192]);
    assert_eq!(
        disk.read(8192, 4096),
        vec![0u8; 4096],
        "unflushed write lost in a crash"
    );
    srv.stop();
}

#[test]
fn gate_refuses_with_the_reason_and_counts_clients() {
    let (_disk, be) = mem(1 << 20);
    let gate = Arc::new(Gate::refusing("optzimbra is Secondary"));
    let srv = Served::start_with("optzimbra", be, false, gate.clone());
    match Client::connect_unix(&srv.sock, "optzimbra", false) {
        Err(ClientError::OptionRefused { msg, ty, .. }) => {
            assert_eq!(msg, "optzimbra is Secondary");
            assert_eq!(ty.0, (1 << 31) + 6);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("refused gate admitted a client"),
    }
    // EXPORT_NAME has no error path: the server closes.
    let mut s = srv.raw();
    raw_greet(&mut s, 3);
    raw_option(&mut s, 1, b"optzimbra");
    assert!(closed_by_peer(&mut s));

    gate.set_serving(None);
    let c = srv.client(false);
    wait_until("open client counted", || gate.open_clients() == 1);
    // Unknown export names.
    match Client::connect_unix(&srv.sock, "nope", false) {
        Err(ClientError::OptionRefused { ty, .. }) => assert_eq!(ty.0, (1 << 31) + 6),
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
    // A refusal does not affect clients already in transmission.
    gate.set_serving(Some("going away"));
    let mut c = c;
    c.write(0, b"still here", false).unwrap();
    drop(c);
    wait_until("client closed", || gate.open_clients() == 0);
    srv.stop();
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let (disk, be) = mem(1 << 20);
    disk.write_durable(0, b"hello");
    let srv = Served::start_with("ro", be, true, Arc::new(Gate::new()));
    let mut c = srv.client(true);
    assert_ne!(c.info().flags & tx_flags::READ_ONLY, 0);
    assert_eq!(c.info().flags & tx_flags::SEND_TRIM, 0);
    assert_eq!(err_code(c.write(0, b"x", false)), ErrorCode::EPERM);
    assert_eq!(c.read(0, 5).unwrap(), b"hello");
    srv.stop();
}

#[test]
fn request_errors_follow_the_spec_and_the_connection_survives() {
    let (disk, be) = mem(1 << 20);
    let srv = Served::start("r0", be);
    let mut c = srv.client(false);
    let size = 1u64 << 20;
    assert_eq!(err_code(c.read(size - 1, 2)), ErrorCode::EINVAL);
    assert_eq!(err_code(c.write(size, b"x", false)), ErrorCode::ENOSPC);
    assert_eq!(err_code(c.trim(size, 1)), ErrorCode::EINVAL);
    assert_eq!(
        err_code(c.write_zeroes(size - 1, 2, false)),
        ErrorCode::ENOSPC
    );
    assert_eq!(err_code(c.read(0, 0)), ErrorCode::EINVAL);
    // Oversized read: EINVAL, nothing allocated.
    let ck = c
        .send_request(Command::READ, 0, 0, (32 << 20) + 1, &[])
        .unwrap();
    let (got, res) = c.recv_reply().unwrap();
    assert_eq!(got, ck);
    assert_eq!(err_code(res), ErrorCode::EINVAL);
    // Unknown command, unknown flag, flag on the wrong command.
    for (cmd, flags) in [
        (Command(77), 0),
        (Command::READ, 1 << 12),
        (Command::WRITE, cmd_flags::NO_HOLE),
        (Command::BLOCK_STATUS, 0),
        (Command::READ, cmd_flags::DF), // DF without structured replies
    ] {
        let payload = if cmd == Command::WRITE {
            vec![0u8; 16]
        } else {
            vec![]
        };
        c.send_request(cmd, flags, 0, 16, &payload).unwrap();
        assert_eq!(err_code(c.recv_reply().unwrap().1), ErrorCode::EINVAL);
    }
    // Still serving on the same connection.
    c.write(0, b"ok", false).unwrap();
    assert_eq!(c.read(0, 2).unwrap(), b"ok");

    // Oversized write: the payload is skipped, EINVAL, connection kept in sync.
    let mut s = raw_transmission(&srv);
    let big = (32u32 << 20) + 4096;
    raw_request(&mut s, 0, 1, 42, 0, big);
    let chunk = vec![0xEEu8; 1 << 20];
    let mut left = big as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    assert_eq!(raw_simple_reply(&mut s), (42, 22));
    raw_request(&mut s, 0, 3, 43, 0, 0); // flush
    assert_eq!(raw_simple_reply(&mut s), (43, 0));
    assert_eq!(
        disk.read(0, 2),
        b"ok",
        "the oversized write was not executed"
    );

    // Bad request magic: framing error, that connection is closed; others keep working.
    s.write_all(&[0xAB; 28]).unwrap();
    assert!(closed_by_peer(&mut s));
    assert_eq!(c.read(0, 2).unwrap(), b"ok");
    srv.stop();
}

#[test]
fn structured_errors_carry_a_message() {
    let disk = MemDisk::new(1 << 20);
    let (be, faults) = FaultBackend::new(disk.backend());
    let srv = Served::start("r0", Box::new(be));
    let mut c = srv.client(true);
    faults.fail_reads(8, 1);
    match c.read(4096, 512) {
        Err(ClientError::Request { code, msg }) => {
            assert_eq!(code, ErrorCode::EIO);
            assert!(!msg.is_empty());
        }
        other => panic!("expected EIO, got {other:?}"),
    }
    faults.fail_writes(0, 1);
    assert_eq!(err_code(c.write(0, b"x", true)), ErrorCode::EIO);
    faults.fail_flushes(true);
    assert_eq!(err_code(c.flush()), ErrorCode::EIO);
    faults.clear();
    c.flush().unwrap();
    assert_eq!(c.read(4096, 512).unwrap(), vec![0; 512]);
    drop(c);
    srv.stop();
}

#[test]
fn broken_handshakes_are_answered_or_closed_and_others_keep_being_served() {
    let (_disk, be) = mem(1 << 20);
    let srv = Served::start("r0", be);
    let mut good = srv.client(false);

    // Garbage instead of client flags: unknown flags, closed.
    let mut s = srv.raw();
    let mut g = [0u8; 18];
    std::io::Read::read_exact(&mut s, &mut g).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut s));

    // Truncated handshake: half an option, then the client disappears.
    let mut s = srv.raw();
    raw_greet(&mut s, 1);
    s.write_all(&IHAVEOPT.to_be_bytes()[..5]).unwrap();
    drop(s);

    // Unknown option, malformed GO, oversized option: answered, negotiation continues.
    let mut s = srv.raw();
    raw_greet(&mut s, 3);
    raw_option(&mut s, 0xDEAD, b"??");
    assert_eq!(raw_option_reply(&mut s).1, (1 << 31) + 1);
    raw_option(&mut s, 7, &[0, 0, 1, 0, b'x']);
    assert_eq!(raw_option_reply(&mut s).1, (1 << 31) + 3);
    raw_option(&mut s, 7, &vec![0u8; 100_000]);
    assert_eq!(raw_option_reply(&mut s).1, (1 << 31) + 9);
    // ... and GO still works afterwards.
    raw_option(&mut s, 7, &go_data("r0"));
    loop {
        let (_, ty, _) = raw_option_reply(&mut s);
        if ty == 1 {
            break;
        }
    }
    raw_request(&mut s, 0, 0, 1, 0, 4);
    assert_eq!(raw_simple_reply(&mut s), (1, 0));

    // Bad option magic: closed.
    let mut s2 = srv.raw();
    raw_greet(&mut s2, 3);
    s2.write_all(&[0x55; 16]).unwrap();
    assert!(closed_by_peer(&mut s2));

    // Too many options: closed.
    let mut s3 = srv.raw();
    raw_greet(&mut s3, 3);
    for _ in 0..40 {
        raw_option(&mut s3, 0xBEEF, b"");
    }
    assert!(closed_by_peer(&mut s3));

    good.write(0, b"alive", false).unwrap();
    assert_eq!(good.read(0, 5).unwrap(), b"alive");
    srv.stop();
}

#[test]
fn client_vanishing_mid_payload_drops_the_partial_write() {
    let (disk, be) = mem(1 << 20);
    let srv = Served::start("r0", be);
    let mut good = srv.client(true);
    for partial in [100usize, 200_000, 2_000_000] {
        let mut s = raw_transmission(&srv);
        raw_request(&mut s, 0, 1, 9, 0, 4 << 20);
        s.write_all(&vec![0xCCu8; partial]).unwrap();
        drop(s);
    }
    // Mid-header too.
    let mut s = raw_transmission(&srv);
    s.write_all(&0x2560_9513u32.to_be_bytes()).unwrap();
    drop(s);
    wait_until("vanished clients closed", || srv.gate.open_clients() == 1);
    assert_eq!(disk.read(0, 4096), vec![0u8; 4096]);
    good.write(0, b"fine", false).unwrap();
    assert_eq!(good.read(0, 4).unwrap(), b"fine");
    srv.stop();
}

#[test]
fn stop_finishes_flushes_and_closes_clients() {
    let (disk, be) = mem(1 << 20);
    let srv = Served::start("r0", be);
    let mut c = srv.client(false);
    c.write(0, &[5u8; 4096], false).unwrap();
    assert!(disk.dirty_pages() > 0);
    let sock = srv.sock.clone();
    srv.stop();
    assert_eq!(disk.dirty_pages(), 0, "stop flushed the backend");
    assert!(!sock.exists(), "socket file removed");
    assert!(c.read(0, 1).is_err(), "client was disconnected");
}

#[test]
fn tcp_listener_and_unix_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (_disk, be) = mem(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let cfg = urbd::nbd::ExportConfig {
        name: "r0".into(),
        unix_socket: Some(sock.clone()),
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        read_only: false,
        tls: None,
    };
    let dp = urbd::nbd::DataPath::start(cfg, be, Arc::new(Gate::new())).unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = Client::connect_tcp(dp.tcp_addr().unwrap(), "r0", true).unwrap();
    c.write(10, b"tcp", true).unwrap();
    assert_eq!(c.read(10, 3).unwrap(), b"tcp");
    dp.stop().unwrap();
}

#[test]
fn seeded_garbage_on_many_connections_never_hurts_a_good_client() {
    let (disk, be) = mem(4 << 20);
    let srv = Served::start("r0", be);
    let mut good = srv.client(true);
    good.write(0, b"precious", true).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64; // fixed seed: failures replay
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..40 {
        let mut s = if round % 2 == 0 {
            srv.raw()
        } else {
            raw_transmission(&srv)
        };
        let len = (rnd() % 5000) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if round % 4 == 1 && junk.len() >= 4 {
            // Start with a valid request magic so the header decoder gets exercised.
            junk[..4].copy_from_slice(&0x2560_9513u32.to_be_bytes());
        }
        let _ = s.write_all(&junk);
        drop(s);
    }
    good.write(8, b" data", false).unwrap();
    assert_eq!(good.read(0, 13).unwrap(), b"precious data");
    wait_until("garbage connections closed", || {
        srv.gate.open_clients() == 1
    });
    drop(good);
    srv.stop();
    assert_eq!(disk.read(0, 8), b"precious");
}

#[test]
fn a_client_that_does_not_read_replies_is_paused_not_buffered() {
    let (disk, be) = mem(8 << 20);
    disk.write_durable(0, &[0x5Au8; 1 << 20]);
    let srv = Served::start("r0", be);
    let mut c = srv.client(true);
    // 160 MiB of read replies requested before reading any: more than the per-connection
    // reply queue, so the server must pause this client, and resume as replies drain.
    let n = 160;
    for _ in 0..n {
        c.send_request(Command::READ, 0, 0, 1 << 20, &[]).unwrap();
    }
    for _ in 0..n {
        let (_, res) = c.recv_reply().unwrap();
        assert_eq!(res.unwrap(), vec![0x5Au8; 1 << 20]);
    }
    let mut other = srv.client(false);
    assert_eq!(other.read(0, 1).unwrap(), vec![0x5A]);
    srv.stop();
}

/// A memory backend whose writes take 50 ms (an io_uring timeout stands for the disk), and
/// whose flushes are instant: if the server sent a FLUSH to the backend before earlier
/// writes completed, the flush would persist nothing of them.
struct SlowWrites {
    inner: urbd::io::MemBackend,
    pending: std::collections::HashMap<u64, (u64, urbd::io::Op, Box<io_uring::types::Timespec>)>,
    next: u64,
}

impl urbd::io::Backend for SlowWrites {
    fn info(&self) -> urbd::io::BackendInfo {
        self.inner.info()
    }
    fn submit(&mut self, ctx: &mut urbd::io::IoCtx<'_>, tag: u64, op: urbd::io::Op) {
        if !matches!(op, urbd::io::Op::Write { .. }) {
            return self.inner.submit(ctx, tag, op);
        }
        self.next += 1;
        let ts = Box::new(io_uring::types::Timespec::new().nsec(50_000_000));
        let entry = io_uring::opcode::Timeout::new(&*ts as *const _).build();
        self.pending.insert(self.next, (tag, op, ts));
        // SAFETY: the timespec is boxed in `pending` until the CQE arrives.
        unsafe { ctx.push(entry, self.next) }.unwrap();
    }
    fn complete(&mut self, ctx: &mut urbd::io::IoCtx<'_>, key: u64, _res: i32) {
        if let Some((tag, op, _ts)) = self.pending.remove(&key) {
            self.inner.submit(ctx, tag, op);
        }
    }
    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[test]
fn flush_waits_for_writes_still_in_flight_on_any_connection() {
    let disk = MemDisk::new(1 << 20);
    let be = SlowWrites {
        inner: disk.backend(),
        pending: Default::default(),
        next: 0,
    };
    let srv = Served::start("r0", Box::new(be));
    let mut a = srv.client(false);
    let mut b = srv.client(false);
    let t = Instant::now();
    let w = a
        .send_request(Command::WRITE, 0, 0, 4096, &[7u8; 4096])
        .unwrap();
    // Make sure the server has received A's write before B's flush.
    std::thread::sleep(Duration::from_millis(10));
    b.flush().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "flush did not wait"
    );
    assert_eq!(disk.dirty_pages(), 0, "the flush covered A's write");
    assert_eq!(disk.read_durable(0, 4096), vec![7u8; 4096]);
    let (got, res) = a.recv_reply().unwrap();
    assert_eq!(got, w);
    res.unwrap();
    srv.stop();
}
