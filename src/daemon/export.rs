//! The seam to the data path. The daemon talks to the NBD export of each volume only
//! through [`Export`]; until the NBD server is plugged in, [`NoExport`] stands in (nothing
//! is exported, nobody can open the device, all counters are zero).
//!
//! To plug the data path in, change [`make_export`]: it is the only place the daemon
//! creates exports.

use crate::config::{NodeView, VolumeView};
use crate::status::Counters;

/// One volume's export (an NBD export of the replicated device).
///
/// The daemon calls, in its single control thread:
/// - [`Export::set_serving`] after every state change (attach, detach, primary,
///   secondary, down), in the order the core decided them;
/// - [`Export::open_clients`] right before a demotion or `down`, which are refused while it
///   is not zero (DRBD's "(-12) Device is held open by someone");
/// - [`Export::counters`] whenever it reports status (requests and every 2 seconds);
/// - [`Export::stop`] once, at shutdown, after the disks are detached (on SIGTERM: before,
///   so that no client holds the device open).
pub trait Export: Send {
    /// `None`: serve the device (this node is Primary with UpToDate data). `Some(reason)`:
    /// refuse new clients and fail I/O with that reason.
    fn set_serving(&self, reason: Option<&str>);
    /// Clients that have the device open.
    fn open_clients(&self) -> usize;
    /// The data path's counters for /proc/drbd (`al` and `bm` included).
    fn counters(&self) -> Counters;
    /// Disconnects every client and stops serving for good.
    fn stop(self: Box<Self>);
}

/// No data path: nothing is exported.
#[derive(Debug, Default)]
pub struct NoExport;

impl Export for NoExport {
    fn set_serving(&self, reason: Option<&str>) {
        tracing::debug!(
            ?reason,
            "no data path on this build: serving state noted only"
        );
    }

    fn open_clients(&self) -> usize {
        0
    }

    fn counters(&self) -> Counters {
        // One epoch "on the fly", as DRBD shows for an idle device.
        Counters {
            ep: 1,
            ..Counters::default()
        }
    }

    fn stop(self: Box<Self>) {}
}

/// Creates the export of one volume. The NBD server replaces [`NoExport`] here.
pub fn make_export(_view: &NodeView, _volume: &VolumeView) -> Box<dyn Export> {
    Box::new(NoExport)
}
