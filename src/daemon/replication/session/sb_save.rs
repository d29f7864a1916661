//! The split-brain victim saves its divergent blocks before anything overwrites them.
//!
//! When the handshake resolves a split brain (an after-sb policy or `--discard-my-data`)
//! with this node as SyncTarget, the bitmap holds exactly this node's changes since the
//! split (the peer's bits are merged only later, by the bitmap exchange). A thread copies
//! those blocks from the data disk into a save file ([`crate::sbsave`]) while the session
//! goes on answering the peer (pings, the bitmap exchange); every local disk operation
//! the data side asks for meanwhile (replicated writes of a Primary peer, resync writes,
//! checksum reads) waits in a queue, and the SYNC_UUID that starts the resync waits too.
//! Only once the file is durable do they go to the disk. If the save fails or would be
//! larger than the limit, the queued operations fail, nothing was written, and the
//! connection goes StandAlone: unsaved data is never overwritten.

use super::*;
use crate::core::SplitBrainResolution;
use crate::sbsave::{self, Header, SaveJob, SaveLimit, Saved};

/// A save in progress.
pub(super) struct Pending {
    /// Local disk operations held back until the save is durable.
    deferred: Vec<(u64, LocalIo)>,
    /// The SYNC_UUID that arrived meanwhile (the resync starts with it after the save).
    sync_uuid: Option<u64>,
    /// The thread writing the file.
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// The handshake made this node SyncTarget by resolving a split brain: start saving
    /// its own divergent blocks. False if the resync is refused (the connection is
    /// already going StandAlone).
    pub(super) fn start_split_brain_save(
        &mut self,
        now: Instant,
        resolution: SplitBrainResolution,
        peer_uuids: Uuids,
    ) -> bool {
        let res = self.cfg.resource.clone();
        let peer = self.cfg.link.peer_name.clone();
        let reason = match resolution {
            SplitBrainResolution::Manual => "connect --discard-my-data".to_owned(),
            SplitBrainResolution::Automatic { primaries } => {
                format!("after-sb-{primaries}pri policy")
            }
        };
        let runs = sbsave::plan(self.repl.bitmap(), self.cfg.size_bytes);
        let bytes: u64 = runs.iter().map(|&(_, l)| u64::from(l)).sum();
        let kib = bytes / 1024;
        let dir = self.cfg.sb_save.dir.clone();
        match self.cfg.sb_save.limit {
            SaveLimit::Off => {
                tracing::warn!(resource = %res, %peer,
                    "Split-brain victim ({reason}): {kib} KiB of this node's changes are discarded without a save ({}=off)",
                    sbsave::SAVE_MAX_ENV);
                return true;
            }
            _ if runs.is_empty() => {
                tracing::info!(resource = %res, %peer,
                    "Split-brain victim ({reason}): this node changed nothing since the split; nothing to save");
                return true;
            }
            SaveLimit::Max(max) if bytes > max => {
                self.refuse_unsaved(
                    now,
                    &format!(
                        "this node's changes since the split ({kib} KiB) exceed the split-brain save limit ({} KiB, {})",
                        max / 1024,
                        sbsave::SAVE_MAX_ENV
                    ),
                    &format!(
                        "set {}=unlimited (or a larger size, or off to discard without saving) in the daemon's environment and restart it, or copy the data yourself",
                        sbsave::SAVE_MAX_ENV
                    ),
                );
                return false;
            }
            _ => {}
        }
        if self.sb_save.is_some() {
            self.refuse_unsaved(
                now,
                "the previous split-brain save is still being written",
                "wait for it (the log says when it is done)",
            );
            return false;
        }
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let local = self.conn.local().uuids;
        let job = SaveJob {
            dir: dir.clone(),
            disk: self.cfg.disk.path.clone(),
            header: Header {
                resource: res.clone(),
                volume: self.cfg.sb_save.volume,
                node: self.cfg.sb_save.node.clone(),
                peer: peer.clone(),
                reason: reason.clone(),
                created_unix,
                device_bytes: self.cfg.size_bytes,
                records: 0,
                data_bytes: 0,
                local_uuids: [
                    local.current,
                    local.bitmap,
                    local.history[0],
                    local.history[1],
                ],
                peer_uuids: [
                    peer_uuids.current,
                    peer_uuids.bitmap,
                    peer_uuids.history[0],
                    peer_uuids.history[1],
                ],
            },
            runs,
        };
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("urbd-sb-save".into())
            .spawn(move || {
                let r = sbsave::write_save(&job).map_err(|e| e.to_string());
                let _ = tx.send(Input::SplitBrainSaved(r));
            });
        match spawned {
            Ok(t) => {
                tracing::info!(resource = %res, %peer,
                    "Split-brain victim ({reason}): saving this node's changes since the split ({} blocks, {kib} KiB) to {} before the resync overwrites them",
                    bytes.div_ceil(4096), dir.display());
                self.sb_save = Some(Pending {
                    deferred: Vec::new(),
                    sync_uuid: None,
                    thread: Some(t),
                });
                true
            }
            Err(e) => {
                self.refuse_unsaved(now, &format!("cannot start the save: {e}"), "see the error");
                false
            }
        }
    }

    /// Refuses the resync that would overwrite unsaved blocks: StandAlone, with why and
    /// what to do.
    fn refuse_unsaved(&mut self, now: Instant, why: &str, todo: &str) {
        tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
            "Split-brain save FAILED: {why}. Refusing the resync that would overwrite this node's unsaved changes: nothing was overwritten; going StandAlone. To go on: {todo}, then repeat the recovery (on this node `urbdadm connect --discard-my-data {}` if that is how it was chosen)",
            self.cfg.resource);
        self.conn
            .handle_admin(now, crate::core::ConnAdmin::Disconnect);
    }

    /// A local disk operation while a save is in progress waits for it: `None` if held,
    /// else the operation back.
    pub(super) fn hold_local_io(&mut self, id: u64, io: LocalIo) -> Option<LocalIo> {
        match &mut self.sb_save {
            Some(p) => {
                p.deferred.push((id, io));
                None
            }
            None => Some(io),
        }
    }

    /// The SYNC_UUID that starts the resync waits for the save: true if held.
    pub(super) fn hold_sync_uuid(&mut self, uuid: u64) -> bool {
        match &mut self.sb_save {
            Some(p) => {
                p.sync_uuid = Some(uuid);
                true
            }
            None => false,
        }
    }

    /// The link went down during a save: what was held for it fails (those blocks stay
    /// out of sync); the save goes on, and later operations still wait for it.
    pub(super) fn sb_save_link_down(&mut self, now: Instant) {
        let Some(p) = &mut self.sb_save else {
            return;
        };
        p.sync_uuid = None;
        let held = std::mem::take(&mut p.deferred);
        for (id, _) in held {
            self.repl.handle_local_done(now, id, Err(Errno::EIO));
        }
    }

    /// The save thread's result.
    pub(super) fn on_split_brain_saved(&mut self, now: Instant, r: Result<Saved, String>) {
        let Some(mut p) = self.sb_save.take() else {
            return;
        };
        if let Some(t) = p.thread.take() {
            // It sent its result as its last act.
            let _ = t.join();
        }
        let res = self.cfg.resource.clone();
        match r {
            Ok(saved) => {
                tracing::warn!(resource = %res, peer = %self.cfg.link.peer_name,
                    "Split-brain save: {} blocks ({} KiB) of this node's discarded changes saved to {} (`urbdadm split-brain-saves {res}` lists the saves, `urbdadm restore-split-brain-save FILE --to PATH` writes one back)",
                    saved.blocks, saved.data_bytes / 1024, saved.path.display());
                for (id, io) in p.deferred {
                    self.local_io(id, io);
                }
                if let Some(u) = p.sync_uuid {
                    self.on_sync_uuid(now, u);
                }
            }
            Err(why) => {
                // Still pending while the link goes down, so what was held fails.
                self.sb_save = Some(p);
                self.refuse_unsaved(
                    now,
                    &why,
                    &format!(
                        "fix the cause (free space in {}?)",
                        self.cfg.sb_save.dir.display()
                    ),
                );
                self.drain(now);
                self.sb_save_link_down(now);
                self.sb_save = None;
            }
        }
    }

    /// At shutdown: a save still being written is finished (its data is safe either way:
    /// nothing was overwritten while it ran).
    pub(super) fn finish_split_brain_save(&mut self) {
        if let Some(t) = self.sb_save.as_mut().and_then(|p| p.thread.take()) {
            let _ = t.join();
        }
    }
}
