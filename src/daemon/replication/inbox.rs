//! The session's input queue and its doorbell.
//!
//! Producers (the NBD thread, the socket receivers, the connector, the daemon's event loop)
//! push [`Input`]s into a channel; the session thread drains it between waits on its
//! io_uring, where its disk I/O completes too. So that the session sleeps in one place, the
//! queue has an eventfd doorbell that the session keeps a read armed on while it sleeps. A
//! producer rings it only when the session said it is going to sleep: under load, when the
//! session is busy anyway, pushing an input costs no system call and wakes nobody.
//!
//! The handshake is the usual one (Dekker's, with sequentially consistent fences): the
//! session announces `sleeping`, then looks at the queue once more before it waits; a
//! producer pushes, then looks at `sleeping`. At least one of them sees the other.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc::{self, Receiver, SendError, Sender};

use super::Input;

struct Bell {
    efd: OwnedFd,
    sleeping: AtomicBool,
}

impl Bell {
    fn ring(&self) {
        ring_eventfd(self.efd.as_raw_fd());
    }
}

/// Adds 1 to the eventfd `fd` (wakes whoever reads or polls it).
pub(super) fn ring_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a valid u64 to an eventfd the caller owns.
    let _ = unsafe { libc::write(fd, (&raw const one).cast(), std::mem::size_of::<u64>()) };
}

/// The producers' end (cloned freely).
#[derive(Clone)]
pub struct InputTx {
    tx: Sender<Input>,
    bell: Arc<Bell>,
}

impl InputTx {
    /// Queues `input`, waking the session if it sleeps. Fails (handing the input back) once
    /// the session has stopped (the bridge then does the request locally, so the input
    /// comes back whole).
    #[allow(clippy::result_large_err)]
    pub fn send(&self, input: Input) -> Result<(), SendError<Input>> {
        self.tx.send(input)?;
        fence(Ordering::SeqCst);
        if self.bell.sleeping.load(Ordering::Relaxed)
            && self.bell.sleeping.swap(false, Ordering::AcqRel)
        {
            self.bell.ring();
        }
        Ok(())
    }
}

/// The session's end.
pub struct Inbox {
    rx: Receiver<Input>,
    bell: Arc<Bell>,
}

impl Inbox {
    /// A queue with its doorbell.
    pub fn new() -> std::io::Result<(InputTx, Inbox)> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bell = Arc::new(Bell {
            efd,
            sleeping: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        Ok((
            InputTx {
                tx,
                bell: bell.clone(),
            },
            Inbox { rx, bell },
        ))
    }

    /// The next queued input, if any.
    pub fn try_recv(&self) -> Option<Input> {
        self.rx.try_recv().ok()
    }

    /// Announces that the session is about to sleep and looks at the queue a last time: an
    /// input returned here must be handled before sleeping (the announcement is withdrawn);
    /// `None` means every later input rings the doorbell.
    pub fn prepare_sleep(&self) -> Option<Input> {
        self.bell.sleeping.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let got = self.try_recv();
        if got.is_some() {
            self.bell.sleeping.store(false, Ordering::Release);
        }
        got
    }

    /// The session is awake again (whether or not the doorbell rang).
    pub fn woke(&self) {
        self.bell.sleeping.store(false, Ordering::Release);
    }

    /// The doorbell's eventfd, for the session's armed read.
    pub fn doorbell_fd(&self) -> RawFd {
        self.bell.efd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(fd: RawFd) -> u64 {
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a valid u64 from a non-blocking eventfd.
        let n = unsafe { libc::read(fd, (&raw mut v).cast(), 8) };
        if n == 8 { v } else { 0 }
    }

    #[test]
    fn the_doorbell_rings_only_for_a_sleeping_session() {
        let (tx, inbox) = Inbox::new().expect("eventfd");
        // SAFETY: setting O_NONBLOCK on our own fd.
        unsafe {
            let fd = inbox.doorbell_fd();
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            );
        }
        // Awake: queued silently.
        tx.send(Input::Stop).expect("send");
        assert_eq!(count(inbox.doorbell_fd()), 0);
        // Going to sleep with something queued: it is handed back, no ring needed.
        assert!(matches!(inbox.prepare_sleep(), Some(Input::Stop)));
        tx.send(Input::Stop).expect("send");
        assert_eq!(count(inbox.doorbell_fd()), 0);
        assert!(inbox.try_recv().is_some());
        // Asleep with an empty queue: the next send rings once, the one after does not.
        assert!(inbox.prepare_sleep().is_none());
        tx.send(Input::Stop).expect("send");
        tx.send(Input::Stop).expect("send");
        assert_eq!(count(inbox.doorbell_fd()), 1);
        inbox.woke();
        assert!(inbox.try_recv().is_some());
        assert!(inbox.try_recv().is_some());
        assert!(inbox.try_recv().is_none());
    }

    #[test]
    fn no_wakeup_is_lost_between_threads() {
        let (tx, inbox) = Inbox::new().expect("eventfd");
        let producer = std::thread::spawn(move || {
            for _ in 0..20_000 {
                tx.send(Input::Stop).expect("send");
            }
        });
        let mut got = 0;
        while got < 20_000 {
            while inbox.try_recv().is_some() {
                got += 1;
            }
            if got == 20_000 {
                break;
            }
            match inbox.prepare_sleep() {
                Some(_) => got += 1,
                None => {
                    // Blocking read: returns only if a producer rang (a lost wakeup hangs
                    // here and the test times out).
                    let _ = count(inbox.doorbell_fd());
                    inbox.woke();
                }
            }
        }
        producer.join().expect("producer");
    }
}
