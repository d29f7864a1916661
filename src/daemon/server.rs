//! The event loop: control requests from the socket, signals, and a periodic refresh of
//! the published status, all handled one at a time by the thread that owns the runtime.

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::control::protocol::read_request;
use crate::control::{ControlError, FailKind, Response, write_message};

use std::sync::Arc;

use super::access::ControlAccess;
use super::replication::{Host, PeerCall};
use super::runtime::{HostFactory, Next, Runtime};

/// How often the published status (counters) is refreshed without a state change.
const REFRESH: Duration = Duration::from_secs(2);
/// How long a client may take to send its request.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// An input of the event loop.
enum Event {
    /// A request, where to send the answer, and where the connection says it has
    /// written the answer (the loop waits for that before the process exits).
    Request(crate::control::Request, SyncSender<Response>, Receiver<()>),
    Signal(i32),
    /// A replication session's call (answered through the session's queue).
    Peer(PeerCall),
}

/// The event loop's queue, made before the runtime attaches anything (a replication
/// session started at attach calls into the loop).
pub struct Queue {
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

/// A new queue.
pub fn queue() -> Queue {
    let (tx, rx) = mpsc::channel();
    Queue { tx, rx }
}

impl Queue {
    /// How sessions reach the loop.
    pub fn host_factory(&self) -> HostFactory {
        let tx = self.tx.clone();
        Arc::new(move || Box::new(LoopHost { tx: tx.clone() }) as Box<dyn Host>)
    }
}

/// A session's way into the event loop.
struct LoopHost {
    tx: Sender<Event>,
}

impl Host for LoopHost {
    fn notify(&self, call: PeerCall) -> bool {
        self.tx.send(Event::Peer(call)).is_ok()
    }
}

/// Runs until `down` or SIGTERM/SIGINT. Returns when the resource is down.
pub fn run(
    runtime: &mut Runtime,
    listener: UnixListener,
    queue: Queue,
    access: ControlAccess,
) -> std::io::Result<()> {
    let Queue { tx, rx } = queue;
    spawn_signals(tx.clone())?;
    spawn_acceptor(listener, tx, access)?;
    event_loop(runtime, &rx);
    Ok(())
}

fn event_loop(runtime: &mut Runtime, rx: &Receiver<Event>) {
    loop {
        match rx.recv_timeout(REFRESH) {
            Ok(Event::Request(request, reply, written)) => {
                tracing::debug!(?request, "control request");
                let (response, next) = runtime.handle(request);
                if next == Next::Exit {
                    // The answer comes after the cleanup, lock released included, so that
                    // an `up` right after `down` finds the resource free.
                    runtime.release_files();
                    let _ = reply.send(response);
                    let _ = written.recv_timeout(CLIENT_WRITE_TIMEOUT);
                    return;
                }
                runtime.publish();
                let _ = reply.send(response);
            }
            Ok(Event::Peer(call)) => {
                runtime.handle_peer_call(call);
                runtime.publish();
            }
            Ok(Event::Signal(sig)) => {
                tracing::info!(signal = sig, "terminating");
                runtime.terminate();
                runtime.release_files();
                return;
            }
            Err(RecvTimeoutError::Timeout) => runtime.publish(),
            Err(RecvTimeoutError::Disconnected) => {
                tracing::error!("control threads gone; going down");
                runtime.terminate();
                runtime.release_files();
                return;
            }
        }
    }
}

fn spawn_signals(tx: Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(Event::Signal(sig));
            }
        })?;
    Ok(())
}

fn spawn_acceptor(
    listener: UnixListener,
    tx: Sender<Event>,
    access: ControlAccess,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if serve(s, &tx, &access).is_err() {
                            // The event loop is gone: the daemon is exiting.
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                }
            }
        })?;
    Ok(())
}

/// One connection: one request, one answer. Err only when the event loop has stopped.
///
/// A client that may not drive the resource gets its request read (bounded in size and
/// time, so that it is not cut off while it writes) and answered with the refusal; the
/// request never reaches the event loop.
fn serve(stream: UnixStream, tx: &Sender<Event>, access: &ControlAccess) -> Result<(), ()> {
    let _ = stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    let allowed = access.check(&stream);
    let mut reader = BufReader::new(&stream);
    let response = match read_request(&mut reader) {
        Ok(_) if allowed.is_err() => {
            let message = allowed.err().map(|d| {
                tracing::warn!(uid = d.uid, "control request refused: {}", d.message);
                d.message
            });
            Response::Failed {
                kind: FailKind::Denied,
                message: message.unwrap_or_default(),
            }
        }
        Ok(request) => {
            let (reply_tx, reply_rx) = mpsc::sync_channel(1);
            let (written_tx, written_rx) = mpsc::sync_channel(1);
            tx.send(Event::Request(request, reply_tx, written_rx))
                .map_err(|_| ())?;
            let Ok(response) = reply_rx.recv() else {
                return Err(());
            };
            let mut w = &stream;
            if let Err(e) = write_message(&mut w, &response) {
                tracing::debug!(error = %e, "client went away before the answer");
            }
            let _ = written_tx.send(());
            return Ok(());
        }
        Err(ControlError::Truncated) => return Ok(()),
        Err(e) => Response::Failed {
            kind: FailKind::BadRequest,
            message: e.to_string(),
        },
    };
    let mut w = &stream;
    if let Err(e) = write_message(&mut w, &response) {
        tracing::debug!(error = %e, "client went away before the answer");
    }
    Ok(())
}
