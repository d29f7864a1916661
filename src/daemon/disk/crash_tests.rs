//! Metadata crash ordering (DESIGN.md, correctness rule 5: "ordered so that a crash between
//! any two writes leaves metadata that attaches").
//!
//! A scenario runs the real metadata code on a file, the way the daemon sequences it:
//! create-md, attach (recovery, then the unclean superblock with the agreed size), promote,
//! activity-log transactions with evictions (the evicted extents' bitmap blocks first, as
//! the session's `write_al` does), periodic and resync bitmap write-backs, a crash and the
//! attach that recovers from it, a clean `down` (secondary, bitmap, empty log, clean
//! superblock), and a crash followed by an offline `apply-al`. Every metadata write and sync
//! is recorded (`meta::device::trace`), split into 4 KiB chunks.
//!
//! Then, for crash states built from the initial (zeroed) image:
//! - every prefix of the chunks (writes land in the order they were issued);
//! - every chunk torn after each 512-byte sector;
//! - writes between two syncs landing out of order: each suffix and each single chunk of
//!   such a group on top of everything synced before it (a disk may persist the writes
//!   issued since the last flush in any order);
//!
//! the image must attach as the daemon attaches it (`read_md`, the recovery plan, `recover`,
//! write-back), without the full-sync fallback, and every block the daemon held out of sync
//! at that moment must still be out of sync afterwards. drbdmeta (when installed) must accept
//! each prefix state: `apply-al` (what `drbdadm attach` runs first) then `dump-md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use crate::core::MdUpdate;
use crate::meta::device::trace::{self, Event};
use crate::meta::{
    self, AlUpdate, AlWriter, Bitmap, CreateOptions, Layout, MdFlags, MetaDevice, MetaError,
    Recovery,
};

use super::AttachedDisk;

const DATA_BYTES: u64 = 1 << 30;
const AL_EXTENTS: u16 = 6;
const CHUNK: usize = 4096;
const SECTOR: usize = 512;
/// Crash states checked at most (the scenario yields a few thousand).
const MAX_STATES: usize = 20_000;

/// One recorded 4 KiB (or shorter) piece of a write.
struct Chunk {
    offset: u64,
    bytes: Vec<u8>,
    /// Writes between two syncs share an epoch.
    epoch: usize,
    /// Blocks out of sync in the daemon's memory when it was issued (`None` during
    /// create-md: there is nothing to keep yet, and "no metadata" is the right answer).
    must: Option<Rc<Bitmap>>,
    /// What the scenario was doing, for messages.
    step: Rc<str>,
}

struct Scenario {
    dev: MetaDevice,
    chunks: Vec<Chunk>,
    epoch: usize,
    /// The daemon's in-memory bitmap (`None` before the first attach).
    memory: Option<Bitmap>,
}

impl Scenario {
    /// Runs `f` recording its metadata writes, tagged with what must stay out of sync.
    fn run<T>(&mut self, step: &str, f: impl FnOnce(&MetaDevice) -> T) -> T {
        trace::start(&self.dev.path);
        let out = f(&self.dev);
        let events = trace::stop();
        let must = self.memory.clone().map(Rc::new);
        let step: Rc<str> = step.into();
        for e in events {
            match e {
                Event::Sync => self.epoch += 1,
                Event::Write { offset, bytes } => {
                    for (i, piece) in bytes.chunks(CHUNK).enumerate() {
                        self.chunks.push(Chunk {
                            offset: offset + (i * CHUNK) as u64,
                            bytes: piece.to_vec(),
                            epoch: self.epoch,
                            must: must.clone(),
                            step: step.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    fn memory(&mut self) -> &mut Bitmap {
        self.memory.as_mut().expect("attached")
    }
}

/// The daemon's attach: read, recover (writing back what recovery changed), then the
/// superblock the core writes (unclean while attached, the agreed size).
fn attach(s: &mut Scenario, step: &str, flags: u32) -> AttachedDisk {
    let label = "r0/0";
    let (md, notes) = s.run(step, |dev| {
        let mut md = meta::read_md(dev).expect("read_md");
        let notes = super::recover(label, dev, &mut md).expect("recover");
        (md, notes)
    });
    let data = std::fs::File::open(&s.dev.path).expect("open");
    let mut sb = md.superblock.clone();
    sb.al_nr_extents = u32::from(AL_EXTENTS);
    let mut disk = AttachedDisk {
        meta: s.dev.clone(),
        superblock: sb,
        data,
        direct: false,
        metadata: md,
        notes,
    };
    let size_sect = DATA_BYTES / 512;
    let recovered = super::bitmap_for(&disk, size_sect);
    // The recovered bits join what the daemon holds out of sync.
    match s.memory.as_mut() {
        Some(m) => {
            m.or_words(0, recovered.words());
        }
        None => s.memory = Some(recovered),
    }
    persist(s, &mut disk, "attach: unclean superblock", flags, false);
    disk
}

fn persist(s: &mut Scenario, disk: &mut AttachedDisk, step: &str, flags: u32, clean: bool) {
    let mut uuids = disk.superblock.uuids;
    uuids.current = uuids
        .current
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    // As the core does: a clean detach also sets MDF_AL_CLEAN.
    let flags = if clean {
        flags | MdFlags::AL_CLEAN
    } else {
        flags
    };
    let update = MdUpdate {
        uuids,
        flags: MdFlags(flags),
        la_size_sect: DATA_BYTES / 512,
        clean,
    };
    s.run(step, |_| super::persist(disk, &update).expect("persist"));
}

/// The session's whole-bitmap write-back.
fn write_bitmap(s: &mut Scenario, disk: &mut AttachedDisk, step: &str) {
    let bitmap = s.memory().clone();
    s.run(step, |_| {
        super::persist_bitmap(disk, &bitmap).expect("bitmap")
    });
}

/// Application writes to `extents`, each first recorded in the activity log (the least
/// recently used extent leaves, its bitmap blocks written first), then blocks of it marked
/// out of sync (the node is disconnected).
fn activity(s: &mut Scenario, disk: &mut AttachedDisk, extents: &[u32], writeback_every: usize) {
    let replay = disk.metadata.replay_al().expect("replayable log");
    let mut w = AlWriter::resume(AL_EXTENTS, &replay);
    let mut lru: Vec<usize> = (0..usize::from(AL_EXTENTS)).collect();
    for (n, &extent) in extents.iter().enumerate() {
        let slot = match w.slots().iter().position(|&e| e == extent) {
            Some(slot) => slot,
            None => {
                let slot = lru[0];
                let old = w.slots()[slot];
                let evicted: Vec<u32> = (old != u32::MAX).then_some(old).into_iter().collect();
                let tr = w
                    .record(&[AlUpdate {
                        slot: slot as u16,
                        extent,
                    }])
                    .expect("transaction");
                let memory = s.memory().clone();
                let md = &mut disk.metadata;
                md.superblock = disk.superblock.clone();
                s.run(
                    &format!("AL transaction {} (extent {extent})", tr.tr_number),
                    |dev| {
                        md.bitmap = memory;
                        for &e in &evicted {
                            if let Some((first, count)) = md.bitmap.al_extent_bits(e) {
                                meta::write_bitmap_range(dev, md, first, count).expect("evict");
                            }
                        }
                        meta::write_al_transaction(dev, md, &tr).expect("transaction");
                    },
                );
                slot
            }
        };
        lru.retain(|&x| x != slot);
        lru.push(slot);
        let first = u64::from(extent) * 1024 + (n as u64 * 37) % 1000;
        s.memory().set_range(first, 3).expect("in range");
        if writeback_every > 0 && n % writeback_every == writeback_every - 1 {
            write_bitmap(s, disk, "periodic bitmap write-back");
        }
    }
}

fn scenario(dir: &Path) -> (Vec<u8>, Scenario) {
    let path = dir.join("meta.img");
    let size = meta::required_meta_bytes(&Layout::FlexExternal, DATA_BYTES);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("meta file");
    let initial = vec![0u8; size as usize];
    let mut s = Scenario {
        dev: MetaDevice::new(&path, Layout::FlexExternal),
        chunks: Vec::new(),
        epoch: 0,
        memory: None,
    };
    s.run("create-md", |dev| {
        meta::create_md(dev, &CreateOptions::new(DATA_BYTES)).expect("create-md")
    });
    let secondary = MdFlags::CONSISTENT | MdFlags::WAS_UP_TO_DATE;
    let primary = secondary | MdFlags::PRIMARY_IND;

    // up, primary, writes with evictions, a resync that clears bits, more writes, crash.
    let mut disk = attach(&mut s, "attach after create-md", secondary);
    persist(&mut s, &mut disk, "promote", primary, false);
    activity(
        &mut s,
        &mut disk,
        &[0, 1, 2, 3, 4, 5, 6, 7, 0, 8, 255, 100],
        5,
    );
    let cleared = s.memory().count();
    s.memory().clear_range(0, 1024).expect("range");
    assert!(s.memory().count() < cleared);
    write_bitmap(&mut s, &mut disk, "resync progress write-back");
    activity(&mut s, &mut disk, &[9, 1, 2, 200, 3, 4, 10, 11, 12], 0);
    drop(disk); // crash: nothing more reaches the disk

    // Attach after the crash (apply-al), primary again, writes, then a clean down.
    let mut disk = attach(&mut s, "attach after a crash (apply-al)", primary);
    activity(&mut s, &mut disk, &[13, 14, 9, 15, 16, 17, 18, 255], 4);
    persist(&mut s, &mut disk, "secondary", secondary, false);
    write_bitmap(&mut s, &mut disk, "down: bitmap");
    persist(
        &mut s,
        &mut disk,
        "down: empty log, clean superblock",
        secondary,
        true,
    );

    // up, primary, writes, `down` while still Primary.
    let mut disk = attach(&mut s, "attach after down", secondary);
    persist(&mut s, &mut disk, "promote", primary, false);
    activity(&mut s, &mut disk, &[30, 31, 32, 33, 34, 35, 36], 3);
    write_bitmap(&mut s, &mut disk, "down of a Primary: bitmap");
    persist(
        &mut s,
        &mut disk,
        "down of a Primary: empty log, clean superblock",
        primary,
        true,
    );

    // up, primary, writes, crash; then `urbdadm apply-al` offline.
    let mut disk = attach(&mut s, "attach after the Primary's down", primary);
    activity(&mut s, &mut disk, &[20, 21, 22, 23, 24, 25, 26, 27, 20], 0);
    drop(disk);
    s.run("apply-al (offline)", |dev| {
        meta::apply_al(dev).expect("apply-al")
    });
    let _ = attach(&mut s, "attach after apply-al", secondary);
    (initial, s)
}

/// A crash state: the image, and what must still be out of sync (from every moment the
/// crash may have happened at).
struct State {
    image: Vec<u8>,
    must: Vec<Option<Rc<Bitmap>>>,
    what: String,
    /// Writes landed in order: drbdmeta is asked too.
    prefix: bool,
}

fn apply(image: &mut [u8], c: &Chunk, len: usize) {
    let at = c.offset as usize;
    image[at..at + len].copy_from_slice(&c.bytes[..len]);
}

fn states(initial: &[u8], chunks: &[Chunk]) -> Vec<State> {
    let mut out = Vec::new();
    let mut image = initial.to_vec();
    let must_at = |i: usize| chunks.get(i).and_then(|c| c.must.clone());
    // Prefixes and torn writes.
    for (i, c) in chunks.iter().enumerate() {
        out.push(State {
            image: image.clone(),
            must: vec![i.checked_sub(1).and_then(must_at), must_at(i)],
            what: format!("crash before write {i} ({})", c.step),
            prefix: true,
        });
        for cut in (SECTOR..c.bytes.len()).step_by(SECTOR) {
            let mut torn = image.clone();
            apply(&mut torn, c, cut);
            out.push(State {
                image: torn,
                must: vec![must_at(i)],
                what: format!("write {i} ({}) torn after {cut} bytes", c.step),
                prefix: false,
            });
        }
        apply(&mut image, c, c.bytes.len());
    }
    out.push(State {
        image: image.clone(),
        must: vec![chunks.len().checked_sub(1).and_then(must_at)],
        what: "after every write".into(),
        prefix: true,
    });
    // Writes of one epoch landing out of order.
    let mut start = 0;
    let mut synced = initial.to_vec();
    while start < chunks.len() {
        let epoch = chunks[start].epoch;
        let end = chunks[start..]
            .iter()
            .position(|c| c.epoch != epoch)
            .map_or(chunks.len(), |n| start + n);
        let last = must_at(end - 1);
        if end - start >= 2 {
            for from in start + 1..end {
                let mut img = synced.clone();
                for c in &chunks[from..end] {
                    apply(&mut img, c, c.bytes.len());
                }
                out.push(State {
                    image: img,
                    must: vec![last.clone()],
                    what: format!("writes {from}..{end} of epoch {start}..{end} ({}) landed, earlier ones not", chunks[from].step),
                    prefix: false,
                });
            }
            for (x, c) in chunks.iter().enumerate().take(end).skip(start) {
                let mut img = synced.clone();
                apply(&mut img, c, c.bytes.len());
                out.push(State {
                    image: img,
                    must: vec![last.clone()],
                    what: format!("only write {x} of epoch {start}..{end} ({}) landed", c.step),
                    prefix: false,
                });
            }
        }
        for c in &chunks[start..end] {
            apply(&mut synced, c, c.bytes.len());
        }
        start = end;
    }
    out
}

/// drbdmeta, when installed (required under CI=true).
fn drbdmeta() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("drbdmeta"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "drbdmeta is missing (CI=true: install drbd-utils via .ci/run)"
        );
        eprintln!("SKIPPED (drbdmeta part): drbdmeta is not installed");
    }
    found
}

fn run_drbdmeta(tool: &Path, dev: &MetaDevice, cmd: &str) -> Result<(), String> {
    let out = Command::new(tool)
        .args(["--force", "-", "v08"])
        .arg(&dev.path)
        .arg(dev.layout.drbdmeta_index())
        .arg(cmd)
        .output()
        .map_err(|e| format!("drbdmeta: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "drbdmeta {cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Attaches the image as the daemon would; checks what must stay out of sync.
fn check(state: &State, path: &Path, tool: Option<&Path>) -> Result<(), String> {
    std::fs::write(path, &state.image).map_err(|e| e.to_string())?;
    let dev = MetaDevice::new(path, Layout::FlexExternal);
    let must: Vec<&Rc<Bitmap>> = state.must.iter().flatten().collect();
    let mut md = match meta::read_md(&dev) {
        Ok(md) => md,
        // Before create-md's superblock exists there is no metadata, and `up` says so.
        Err(MetaError::BadMagic { found: 0, .. }) if must.is_empty() => return Ok(()),
        Err(e) => return Err(format!("read_md refused: {e}")),
    };
    let plan = md.plan_attach();
    if plan.recovery == Recovery::FullSync {
        return Err(format!("full-sync fallback: {:?}", plan.damage));
    }
    md.recover().map_err(|e| format!("recover: {e}"))?;
    for m in must {
        let have_words = md.bitmap.words();
        for (w, &want) in m.words().iter().enumerate() {
            let have = have_words.get(w).copied().unwrap_or(0);
            if want & !have != 0 {
                let bit = w as u64 * 64 + u64::from((want & !have).trailing_zeros());
                return Err(format!(
                    "block {bit} was out of sync before the crash and is clean after attach \
                     ({:?})",
                    plan.recovery
                ));
            }
        }
    }
    if state.prefix {
        // What the daemon writes back reads back clean and the same.
        meta::write_md(&dev, &md).map_err(|e| format!("write_md: {e}"))?;
        let again = meta::read_md(&dev).map_err(|e| format!("re-read: {e}"))?;
        if again.plan_attach().recovery != Recovery::Nothing || again.bitmap != md.bitmap {
            return Err("recovered metadata does not read back as written".into());
        }
        if let Some(tool) = tool {
            std::fs::write(path, &state.image).map_err(|e| e.to_string())?;
            run_drbdmeta(tool, &dev, "apply-al")?;
            run_drbdmeta(tool, &dev, "dump-md")?;
        }
    }
    Ok(())
}

#[test]
fn every_crash_point_of_the_metadata_writes_attaches() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (initial, s) = scenario(dir.path());
    let writes = s.chunks.len();
    let epochs = s.chunks.last().map_or(0, |c| c.epoch + 1);
    let all = states(&initial, &s.chunks);
    assert!(writes > 100, "the scenario wrote only {writes} chunks");
    assert!(all.len() <= MAX_STATES, "{} states", all.len());
    let tool = drbdmeta();
    let path = dir.path().join("state.img");
    let mut failures: HashMap<String, Vec<String>> = HashMap::new();
    for st in &all {
        if let Err(e) = check(st, &path, tool.as_deref()) {
            failures.entry(e).or_default().push(st.what.clone());
        }
    }
    eprintln!(
        "{} chunks in {epochs} sync epochs, {} crash states checked in {:?}",
        writes,
        all.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        let mut msg = String::new();
        for (e, whats) in &failures {
            msg.push_str(&format!(
                "{e}\n  {} states, e.g. {}\n",
                whats.len(),
                whats.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        panic!("crash states that do not attach correctly:\n{msg}");
    }
}
