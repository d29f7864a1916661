//! Carrying out what the connection and the data side ask for: packets, local disk jobs,
//! completions to the data path, activity-log transactions and bitmap write-back.

use super::*;

impl Session {
    pub(super) fn drain(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some(t) = self.conn.poll_transmit() {
                busy = true;
                let socket = t.socket();
                let frame = t.frame();
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                frame.encode(&mut buf);
                self.send_bytes(socket, &buf);
                self.scratch = buf;
            }
            while let Some(e) = self.conn.poll_event() {
                busy = true;
                self.on_conn_event(now, e);
            }
            while let Some(a) = self.repl.poll_action() {
                busy = true;
                self.on_repl_action(a);
            }
            if !busy {
                return;
            }
        }
    }

    pub(super) fn on_repl_action(&mut self, a: ReplAction) {
        match a {
            ReplAction::Local { id, io } => self.local_io(id, io),
            ReplAction::Send(o) => {
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                let payload = o.payload();
                {
                    let data: &[u8] = match payload {
                        Some(Payload::App(tag)) => match self.app_ops.get(&tag) {
                            Some(Op::Write { buf, .. }) => buf.as_slice(),
                            _ => &[],
                        },
                        Some(Payload::Peer(k)) => {
                            self.peer_bufs.get(&k).map_or(&[][..], |v| v.bytes())
                        }
                        Some(Payload::Read(id)) => {
                            self.read_bufs.get(&id).map_or(&[][..], |b| b.as_slice())
                        }
                        None => &[],
                    };
                    // ns: counts data sent; checksum requests and verify replies carry
                    // digests of a read, not the read.
                    if matches!(
                        o,
                        crate::core::repl::Outgoing::Data { .. }
                            | crate::core::repl::Outgoing::RsReply { .. }
                            | crate::core::repl::Outgoing::DataReply { .. }
                    ) {
                        self.sent_bytes += data.len() as u64;
                    }
                    let digest = if self.integrity && o.payload().is_some() {
                        crc32c::crc32c(data).to_be_bytes().to_vec()
                    } else {
                        Vec::new()
                    };
                    o.encode(0, data, &digest, &mut buf);
                }
                if let Some(Payload::Read(id)) = payload
                    && let Some(b) = self.read_bufs.remove(&id)
                {
                    self.recycle(b);
                }
                if let crate::core::repl::Outgoing::Data {
                    block_id, dp_flags, ..
                } = o
                    && dp_flags
                        & (wire::dp_flags::SEND_WRITE_ACK | wire::dp_flags::SEND_RECEIVE_ACK)
                        != 0
                {
                    self.peer_waits.insert(block_id, Instant::now());
                }
                self.send_bytes(o.socket(), &buf);
                self.scratch = buf;
            }
            ReplAction::Complete { tag, res } => {
                tracing::trace!(tag, ?res, "application request complete");
                let buf = self
                    .app_bufs
                    .remove(&tag)
                    .or_else(|| self.app_ops.remove(&tag).and_then(Op::into_buf));
                let (tag, res, buf) = match self.splits.part_done(tag, res) {
                    None => (tag, res, buf),
                    // A part of a split write: the request waits for the others.
                    Some(None) => return,
                    Some(Some(done)) => (done.tag, done.res, done.buf),
                };
                if let Some(at) = self.app_started.remove(&tag) {
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.ack_latency.observe(us);
                }
                self.app_done.push(Done { tag, res, buf });
            }
            // The event loop logs it with what `on-io-error` made of it.
            ReplAction::LocalIoError { write } => self.call(PeerCall::LocalIoError { write }),
            ReplAction::ReadData { tag, at, payload } => {
                if let Payload::Peer(k) = payload {
                    if let (Some(Op::Read { buf, .. }), Some(data)) = (
                        self.app_ops.get_mut(&tag),
                        self.peer_bufs.get(&k).map(|b| b.bytes()),
                    ) {
                        let at = at as usize;
                        if let Some(dst) = buf.as_mut_slice().get_mut(at..at + data.len()) {
                            dst.copy_from_slice(data);
                        }
                    }
                    self.drop_peer_buf(k);
                }
            }
            ReplAction::Release(p) => match p {
                Payload::Peer(k) => self.drop_peer_buf(k),
                Payload::Read(id) => {
                    if let Some(b) = self.read_bufs.remove(&id) {
                        self.recycle(b);
                    }
                }
                Payload::App(_) => {}
            },
            ReplAction::WriteAl { tr, evicted } => self.write_al(&tr, &evicted),
            ReplAction::VerifyFinished {
                side,
                found,
                complete,
            } => {
                // What verify marked reaches the meta-disk (the next resync moves it).
                self.write_bitmap();
                let secs = self
                    .verify_started
                    .take()
                    .map_or(0, |t| t.elapsed().as_secs());
                if complete {
                    tracing::info!(resource = %self.cfg.resource, side = ?side,
                        "Online verify done (total {secs} sec; paused 0 sec)");
                } else {
                    tracing::warn!(resource = %self.cfg.resource, side = ?side,
                        "Online verify stopped early (connection lost)");
                }
                if found > 0 {
                    tracing::warn!(resource = %self.cfg.resource, side = ?side,
                        "Online verify found {found} 4k block out of sync! (disconnect and connect to resync them)");
                } else if complete {
                    tracing::info!(resource = %self.cfg.resource, "Online verify found 0 4k block out of sync");
                }
                self.verify_found = found;
                self.report();
            }
            ReplAction::SyncFinished {
                side,
                failed,
                same_csum,
            } => {
                if self.cfg.repl.csums {
                    let total = self.last_progress.map_or(0, |p| p.total_kib / 4);
                    let ratio = (same_csum * 100).checked_div(total).unwrap_or(0);
                    tracing::info!(resource = %self.cfg.resource,
                        "{ratio} % had equal checksums, eliminated: {}K; transferred {}K total {}K",
                        same_csum * 4, total.saturating_sub(same_csum) * 4, total * 4);
                }
                self.same_csum_blocks += same_csum;
                // The cleared bits reach the meta-disk (a crash later must not redo it).
                self.write_bitmap();
                self.finishing = self.last_progress.map(|p| crate::core::repl::SyncProgress {
                    left_kib: 0,
                    mark_left_kib: 0,
                    ..p
                });
                let target = side == SyncSide::Target;
                tracing::info!(resource = %self.cfg.resource, failed, "Resync done ({})", if target { "SyncTarget" } else { "SyncSource" });
                self.cs_override = Some(ConnState::Connected);
                if !target {
                    // `drbd_resync_finished`: the source takes its target as UpToDate (or
                    // Inconsistent with failed blocks) without waiting for its STATE; the
                    // Inconsistent of `started_sync` would hide a lost finished target
                    // from the volume (no new current UUID on a disconnect).
                    self.peer_disk = if failed == 0 {
                        DiskState::UpToDate
                    } else {
                        DiskState::Inconsistent
                    };
                }
                self.call(PeerCall::SyncFinished {
                    target,
                    failed,
                    peer: self.peer_uuids,
                });
                self.report();
            }
        }
    }

    /// An activity-log transaction, synchronously: the bitmap blocks of the extents that
    /// leave the log, then the transaction, each synced (DRBD's `drbd_al_begin_io`).
    pub(super) fn write_al(&mut self, tr: &crate::meta::AlTransaction, evicted: &[u32]) {
        let Some((dev, md)) = self.cfg.meta.as_mut() else {
            self.repl.handle_al_written();
            return;
        };
        for &e in evicted {
            let Some((first, count)) = md.bitmap.al_extent_bits(e) else {
                continue;
            };
            // `md.bitmap` stays what the meta-disk holds: only the blocks written change.
            // Their set bits go out; a bit cleared in memory stays set on disk until
            // `write_bitmap`, which first makes the data behind it durable (a 4 KiB block
            // covers 32 extents, whose resync writes may still be in the disk's cache).
            let blocks = crate::meta::Bitmap::blocks_of(first, count);
            for b in blocks.clone() {
                md.bitmap.or_block_from(self.repl.bitmap(), b);
            }
            if let Err(err) = crate::meta::write_bitmap_blocks(dev, md, blocks) {
                self.bm_on_disk_known = false;
                tracing::error!(resource = %self.cfg.resource, error = %err, "writing the bitmap of an evicted extent failed");
            }
        }
        if let Err(err) = crate::meta::write_al_transaction(dev, md, tr) {
            // DRBD detaches on a meta-data I/O error; urbd logs it and goes on (the next
            // crash recovery may then miss these extents).
            tracing::error!(resource = %self.cfg.resource, error = %err, "writing an activity-log transaction failed");
        }
        self.al_writes += 1;
        self.repl.handle_al_written();
    }

    /// The bitmap to the meta-disk (before a resync starts, so that a crash during it
    /// resumes from what is left rather than from a stale bitmap): the 4 KiB blocks that
    /// differ from what the meta-disk holds (`md.bitmap`; all of them the first time, and
    /// after a failed write), as DRBD writes only changed bitmap pages. On a large device
    /// the whole bitmap is megabytes, written while the session waits.
    pub(super) fn write_bitmap(&mut self) {
        let Some((dev, md)) = self.cfg.meta.as_mut() else {
            return;
        };
        let known = self.bm_on_disk_known;
        let mut changed: Vec<u64> = if known {
            self.repl.bitmap().changed_blocks(&md.bitmap)
        } else {
            let blocks = self.repl.bitmap().capacity() / crate::meta::bitmap::BITS_PER_BLOCK;
            (0..blocks).collect()
        };
        if changed.is_empty() {
            self.bm_written = (Instant::now(), self.repl.bitmap().count());
            return;
        }
        // Bits cleared by a resync stand for data written to the data disk: that data must
        // be durable before the bitmap says so (found by the simulation, tests/sim). A disk
        // that took no write since its last flush needs none (a SyncSource, say: its flush
        // would only wait for whatever else shares the device).
        let flush = std::mem::take(&mut self.data_dirty);
        if flush
            && let Some(f) = &self.data_sync
            && let Err(err) = f.sync_data()
        {
            self.data_dirty = true;
            tracing::error!(resource = %self.cfg.resource, error = %err, "flushing the data disk before the bitmap write-back failed");
            // Then no bit may be cleared on disk: the resync writes behind the cleared bits
            // may die with the cache in a crash (found by the simulation, tests/sim, seed
            // 0x2cabd25f0a47bd1e). New bits still go out.
            let before = md.bitmap.clone();
            md.bitmap.or_words(0, self.repl.bitmap().words());
            if known {
                changed = md.bitmap.changed_blocks(&before);
            }
        } else {
            md.bitmap = self.repl.bitmap().clone();
        }
        if changed.is_empty() {
            return;
        }
        match crate::meta::write_bitmap_blocks(dev, md, changed) {
            Ok(()) => self.bm_on_disk_known = true,
            Err(err) => {
                // What the meta-disk holds is not known now: the next write-back is whole.
                self.bm_on_disk_known = false;
                tracing::error!(resource = %self.cfg.resource, error = %err, "writing the bitmap failed");
            }
        }
        self.bm_writes += 1;
        self.bm_written = (Instant::now(), self.repl.bitmap().count());
    }

    pub(super) fn local_io(&mut self, id: u64, io: LocalIo) {
        if !self.repl.has_local_disk() {
            // Detached after an I/O error: the disk is not touched again (an
            // application request keeps its buffer in `app_ops` for the answer).
            self.repl
                .handle_local_done(Instant::now(), id, Err(Errno::EIO));
            return;
        }
        // Nothing touches the disk while a split-brain save reads it.
        let Some(io) = self.hold_local_io(id, io) else {
            return;
        };
        let (job, op) = match io {
            LocalIo::App { tag } => match self.app_ops.remove(&tag) {
                Some(op) => (Job::App { tag, write: false }, op),
                None => {
                    tracing::error!(tag, "application request vanished");
                    return;
                }
            },
            LocalIo::Write {
                key,
                offset,
                len,
                fua,
            } => {
                let data = match key {
                    Payload::Peer(k) => self.peer_bufs.get(&k).map(|v| v.bytes()),
                    _ => None,
                };
                let buf = match data {
                    Some(d) if d.len() == len as usize => self.pool.copy_of(d),
                    _ => {
                        tracing::error!(?key, "write payload missing");
                        return;
                    }
                };
                self.disk_written += u64::from(len);
                (Job::Other { write: false }, Op::Write { offset, buf, fua })
            }
            LocalIo::Discard { offset, len, zero } => (
                Job::Other { write: false },
                if zero {
                    Op::Zero {
                        offset,
                        len: u64::from(len),
                        may_trim: false,
                    }
                } else {
                    Op::Trim {
                        offset,
                        len: u64::from(len),
                    }
                },
            ),
            LocalIo::Read {
                offset,
                len,
                digest,
            } => {
                self.disk_read += u64::from(len);
                (
                    Job::Read { digest },
                    Op::Read {
                        offset,
                        buf: self.pool.take(len as usize),
                    },
                )
            }
            LocalIo::Flush => (Job::Other { write: false }, Op::Flush),
        };
        let writes = matches!(op, Op::Write { .. } | Op::Trim { .. } | Op::Zero { .. });
        let job = match job {
            Job::App { tag, .. } => Job::App { tag, write: writes },
            Job::Other { .. } => Job::Other { write: writes },
            read => read,
        };
        self.jobs.insert(id, job);
        self.disk.submit(id, op);
    }

    // ----- the event loop and status --------------------------------------------------
}
