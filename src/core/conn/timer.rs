//! The connection's timers: one slot each, [`TimerTable::next`] is the earliest
//! (quinn-proto's `connection/timer.rs`).

use std::time::Instant;

/// One timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// WFConnection: ask the host for another connection attempt (`connect-int`).
    Reconnect,
    /// WFReportParams: the handshake must be done by then (`connect-int`).
    Handshake,
    /// Transport up: send the next PING (`ping-int`).
    Ping,
    /// A PING is out: its PING_ACK must arrive by then (`ping-timeout`).
    PingAck,
}

const ALL: [Timer; 4] = [
    Timer::Reconnect,
    Timer::Handshake,
    Timer::Ping,
    Timer::PingAck,
];

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable {
    slots: [Option<Instant>; 4],
}

impl TimerTable {
    pub(super) fn set(&mut self, t: Timer, at: Instant) {
        self.slots[t as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, t: Timer) {
        self.slots[t as usize] = None;
    }

    pub(super) fn stop_all(&mut self) {
        self.slots = [None; 4];
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// Takes the timers due at `now`, in a fixed order.
    pub(super) fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = Vec::new();
        for t in ALL {
            if self.slots[t as usize].is_some_and(|at| at <= now) {
                self.slots[t as usize] = None;
                due.push(t);
            }
        }
        due.into_iter()
    }
}
