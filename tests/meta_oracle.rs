//! Oracle tests: urbd's metadata code against `drbdmeta` (drbd-utils), on sparse files and
//! loop devices, for all three layouts.
//!
//! Needs `drbdmeta`, `losetup` and root (for loop devices). Without them the tests print a
//! skip line and pass, unless `CI=true`, where they fail.
//!
//! drbdmeta is always called as `drbdmeta --force - v08 DEV INDEX CMD`: `-` as the DRBD
//! device means no minor, hence no lock file shared between parallel tests.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use urbd::meta::{
    self, AlUpdate, AlWriter, CreateOptions, Existing, Layout, MdFlags, MetaDevice, MetaError,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Odd size above 3 GiB: not 4 KiB aligned, exercises internal metadata rounding.
const BIG: u64 = 3 * GIB + 5 * 4096 + 512;

// ---------------------------------------------------------------------------------------
// Environment

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// True if the tools are there; otherwise fails under CI=true, or prints a skip line.
fn tools(test: &str) -> bool {
    let mut missing = Vec::new();
    for tool in ["drbdmeta", "losetup"] {
        if !in_path(tool) {
            missing.push(tool.to_owned());
        }
    }
    if !rustix::process::geteuid().is_root() {
        missing.push("root (for loop devices)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: this test must run)");
    }
    eprintln!("SKIP {msg}");
    false
}

/// A temporary directory plus the loop devices made in it; everything is removed on drop,
/// also when a test fails.
struct Env {
    dir: tempfile::TempDir,
    loops: Vec<PathBuf>,
}

static LOSETUP: Mutex<()> = Mutex::new(());

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            loops: Vec::new(),
        }
    }

    /// A sparse file of `size` bytes.
    fn file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        let f = File::create(&p).expect("create file");
        f.set_len(size).expect("set_len");
        p
    }

    /// A loop device over `file`.
    fn loop_dev(&mut self, file: &Path, read_only: bool) -> PathBuf {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd.arg(file).output().expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        self.loops.push(dev.clone());
        dev
    }

    /// A sparse file, or a loop device over one.
    fn device(&mut self, name: &str, size: u64, on_loop: bool) -> (PathBuf, PathBuf) {
        let file = self.file(name, size);
        let dev = if on_loop {
            self.loop_dev(&file, false)
        } else {
            file.clone()
        };
        (dev, file)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for dev in self.loops.drain(..).rev() {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

fn drbdmeta(dev: &MetaDevice, verbose: usize, args: &[&str]) -> Output {
    let mut cmd = Command::new("drbdmeta");
    for _ in 0..verbose {
        cmd.arg("-v");
    }
    cmd.args(["--force", "-", "v08"])
        .arg(&dev.path)
        .arg(dev.layout.drbdmeta_index())
        .args(args);
    cmd.output().expect("run drbdmeta")
}

fn drbdmeta_ok(dev: &MetaDevice, args: &[&str]) -> String {
    let out = drbdmeta(dev, 0, args);
    assert!(
        out.status.success(),
        "drbdmeta {args:?} on {} failed: {}{}",
        dev.path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The dump without the header comment (date, host, command line), and with the uuid
/// block's flags line elided: drbdmeta < 9.33 prints 0 there whatever the flags are
/// (flags are compared through get-gi instead).
fn body(dump: &str) -> String {
    let mut out = Vec::new();
    let mut skip = 0;
    for l in dump.lines() {
        if l == "# DRBD meta data dump" {
            skip = 3;
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if l.starts_with("    flags 0x") {
            out.push("    flags <elided>;");
            continue;
        }
        out.push(l);
    }
    out.join("\n")
}

fn assert_same_dump(ours: &str, theirs: &str, what: &str) {
    let (a, b) = (body(ours), body(theirs));
    if a != b {
        for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
            if x != y {
                panic!(
                    "{what}: dumps differ at line {i}:\n urbd:     {x}\n drbdmeta: {y}\n--- urbd:\n{a}\n--- drbdmeta:\n{b}"
                );
            }
        }
        panic!("{what}: dumps differ in length:\n--- urbd:\n{a}\n--- drbdmeta:\n{b}");
    }
}

fn file_hash(path: &Path) -> u64 {
    let mut f = File::open(path).expect("open for hash");
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read for hash");
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    h.finish()
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = File::open(path).expect("open");
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).expect("read range");
    buf
}

fn layouts_for(size: u64) -> Vec<Layout> {
    let mut v = vec![Layout::FlexExternal, Layout::Internal];
    if size >= 128 * MIB {
        v.push(Layout::Indexed(0));
    }
    if size >= 256 * MIB {
        v.push(Layout::Indexed(1));
    }
    v
}

const SIZES: [u64; 3] = [64 * MIB, GIB, BIG];

// ---------------------------------------------------------------------------------------
// 1. urbd writes, drbdmeta reads (and urbd's create-md equals drbdmeta's byte for byte)

#[test]
fn urbd_create_md_is_what_drbdmeta_creates() {
    if !tools("urbd_create_md_is_what_drbdmeta_creates") {
        return;
    }
    let mut env = Env::new();
    for on_loop in [false, true] {
        for size in SIZES {
            for layout in layouts_for(size) {
                let what = format!(
                    "{layout} on {} of {size} bytes",
                    if on_loop { "loop" } else { "file" }
                );
                let (ours_dev, ours_file) =
                    env.device(&format!("u-{on_loop}-{size}-{layout:?}"), size, on_loop);
                let (ref_dev, ref_file) =
                    env.device(&format!("d-{on_loop}-{size}-{layout:?}"), size, on_loop);
                let ours = MetaDevice::new(&ours_dev, layout);
                let reference = MetaDevice::new(&ref_dev, layout);
                // A data disk that the smallest meta device still covers.
                let data = if layout == Layout::Internal {
                    0
                } else {
                    512 * MIB
                };
                let md = meta::create_md(&ours, &CreateOptions::new(data))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                drbdmeta_ok(&reference, &["create-md"]);

                // drbdmeta accepts ours and shows the same values.
                let theirs = drbdmeta_ok(&ours, &["dump-md"]);
                assert_same_dump(&md.dump_md(), &theirs, &what);
                assert_eq!(drbdmeta_ok(&ours, &["get-gi"]), md.get_gi(), "{what}");
                assert_eq!(drbdmeta_ok(&ours, &["show-gi"]), md.show_gi(), "{what}");
                assert_eq!(drbdmeta_ok(&ours, &["dstate"]), md.dstate(), "{what}");

                // Byte for byte: superblock, activity log, first 64 KiB of bitmap.
                let g = &md.geometry;
                for (name, off, len) in [
                    ("superblock", g.md_offset, 4096),
                    (
                        "activity log",
                        g.al_byte_offset(),
                        u64::from(g.al_blocks()) * 4096,
                    ),
                    (
                        "bitmap",
                        g.bm_byte_offset(),
                        65536.min(g.area_end() - g.bm_byte_offset()),
                    ),
                ] {
                    assert!(
                        read_range(&ours_file, off, len) == read_range(&ref_file, off, len),
                        "{what}: {name} at {off} differs from drbdmeta's"
                    );
                }
                // And we read back what drbdmeta wrote, identically.
                let back = meta::read_md(&reference).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back.superblock, md.superblock, "{what}");
                assert_eq!(back.geometry, md.geometry, "{what}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. drbdmeta writes (create-md, restore-md with chosen values), urbd reads

/// A dump file with chosen values, written by hand (not by urbd's dump code).
fn handmade_dump(la: u64, flags: u32, words: &[u64]) -> String {
    let mut s = String::from("version \"v08\";\nuuid {\n");
    s.push_str(
        "    0x1234567890ABCDEE; 0x00000000DEADBEEF; 0x0000000000C0FFEE; 0x7000000000000001;\n",
    );
    s.push_str(&format!("    flags 0x{flags:08X};\n}}\n"));
    s.push_str(&format!("la-size-sect {la};\nbm-byte-per-bit 4096;\n"));
    s.push_str("device-uuid 0x0123456789ABCDEF;\nla-peer-max-bio-size 131072;\n");
    s.push_str("al-stripes 1;\nal-stripe-size-4k 8;\nbm {\n");
    for w in words {
        s.push_str(&format!(" 0x{w:016X};"));
    }
    s.push_str("\n}\n");
    s
}

/// Bit pattern: some single bits, a run crossing words, a long run of ones, the last bit.
fn pattern(la: u64) -> (Vec<u64>, u64) {
    let bits = la.div_ceil(8);
    let n_words = (meta::bm_bytes(la) / 8) as usize;
    let mut words = vec![0u64; n_words];
    let mut set = |b: u64| {
        if b < bits {
            words[(b / 64) as usize] |= 1 << (b % 64);
        }
    };
    for b in [0, 1, 63, 64, 4095, 4096, 100_000, bits.saturating_sub(1)] {
        set(b);
    }
    for b in 1000..1100 {
        set(b);
    }
    for b in 20_480..20_480 + 64 * 40 {
        set(b);
    }
    let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
    (words, count)
}

#[test]
fn drbdmeta_metadata_is_read_by_urbd() {
    if !tools("drbdmeta_metadata_is_read_by_urbd") {
        return;
    }
    let mut env = Env::new();
    for on_loop in [false, true] {
        for size in SIZES {
            for layout in layouts_for(size) {
                let what = format!(
                    "{layout} on {} of {size} bytes",
                    if on_loop { "loop" } else { "file" }
                );
                let (dev, _file) =
                    env.device(&format!("r-{on_loop}-{size}-{layout:?}"), size, on_loop);
                let dev = MetaDevice::new(&dev, layout);
                drbdmeta_ok(&dev, &["create-md"]);
                let md = meta::read_md(&dev).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_same_dump(&md.dump_md(), &drbdmeta_ok(&dev, &["dump-md"]), &what);
                assert_eq!(md.superblock.uuids.current, meta::UUID_JUST_CREATED);
                assert!(md.al.invalid_blocks().next().is_none(), "{what}");
                md.verify_al().unwrap();

                // restore-md with chosen la-size, UUIDs, flags and bits; one clean, one
                // unclean (AL_CLEAN missing: both dumps carry the "unclean" marker).
                let la = (md.max_usable_sectors().min(size / 512) / 3) | 1;
                for flags in [0x93u32, 0x13] {
                    let (words, count) = pattern(la);
                    let dump_path = env.dir.path().join("restore.txt");
                    fs::write(&dump_path, handmade_dump(la, flags, &words)).unwrap();
                    drbdmeta_ok(&dev, &["restore-md", dump_path.to_str().unwrap()]);
                    let md = meta::read_md(&dev).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let sb = &md.superblock;
                    assert_eq!(sb.la_size_sect, la, "{what}");
                    assert_eq!(sb.uuids.current, 0x1234_5678_90AB_CDEE);
                    assert_eq!(sb.uuids.bitmap, 0xDEAD_BEEF);
                    assert_eq!(sb.uuids.history, [0xC0FFEE, 0x7000_0000_0000_0001]);
                    assert_eq!(sb.flags, MdFlags(flags), "{what}");
                    assert_eq!(sb.device_uuid, 0x0123_4567_89AB_CDEF);
                    assert_eq!(sb.la_peer_max_bio_size, 131_072);
                    assert_eq!(md.bitmap.words(), &words[..], "{what}");
                    assert_eq!(md.bitmap.count(), count);
                    assert_eq!(md.is_clean(), flags & MdFlags::AL_CLEAN != 0);
                    let theirs = drbdmeta_ok(&dev, &["dump-md"]);
                    assert_same_dump(&md.dump_md(), &theirs, &what);
                    assert!(theirs.contains(&format!("# bits-set {count};")), "{what}");
                    assert_eq!(drbdmeta_ok(&dev, &["get-gi"]), md.get_gi(), "{what}");
                    assert_eq!(drbdmeta_ok(&dev, &["show-gi"]), md.show_gi(), "{what}");
                    assert_eq!(drbdmeta_ok(&dev, &["dstate"]), md.dstate(), "{what}");
                }

                // urbd's dump (with the real flags) restores to the same metadata.
                let md = meta::read_md(&dev).unwrap();
                let mut clean = md.clone();
                clean.superblock.flags.set(MdFlags::AL_CLEAN, true);
                meta::write_superblock(&dev, &clean.superblock).unwrap();
                let ours = meta::read_md(&dev).unwrap().dump_md();
                let dump_path = env.dir.path().join("ours.txt");
                fs::write(&dump_path, &ours).unwrap();
                drbdmeta_ok(&dev, &["restore-md", dump_path.to_str().unwrap()]);
                let again = meta::read_md(&dev).unwrap();
                assert_eq!(again.superblock, clean.superblock, "{what}");
                assert_eq!(again.bitmap, clean.bitmap, "{what}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. bits and AL extents written by urbd show up in drbdmeta

#[test]
fn urbd_bits_and_al_are_seen_by_drbdmeta() {
    if !tools("urbd_bits_and_al_are_seen_by_drbdmeta") {
        return;
    }
    let mut env = Env::new();
    for (on_loop, size, layout) in [
        (false, GIB, Layout::Indexed(1)),
        (true, BIG, Layout::Internal),
        (false, 64 * MIB, Layout::FlexExternal),
        (true, GIB, Layout::Indexed(0)),
    ] {
        let what = format!(
            "{layout} on {} of {size} bytes",
            if on_loop { "loop" } else { "file" }
        );
        let (dev, _file) = env.device(&format!("b-{on_loop}-{size}-{layout:?}"), size, on_loop);
        let dev = MetaDevice::new(&dev, layout);
        let data = if layout == Layout::Internal {
            0
        } else {
            256 * MIB
        };
        let mut md = meta::create_md(&dev, &CreateOptions::new(data)).unwrap();

        // Agree on a size (what the kernel does on first connect), then mark bits.
        let la = if layout == Layout::Internal {
            md.max_usable_sectors()
        } else {
            data / 512
        };
        md.superblock.la_size_sect = la;
        md.superblock.uuids.current = 0x5555_0000_0000_0001;
        md.superblock.flags =
            MdFlags(MdFlags::AL_CLEAN | MdFlags::CONSISTENT | MdFlags::WAS_UP_TO_DATE);
        meta::write_superblock(&dev, &md.superblock).unwrap();
        let mut md = meta::read_md(&dev).unwrap();
        let last = md.bitmap.bits() - 1;
        let (mid, span) = (md.bitmap.bits() / 3, md.bitmap.bits() / 4);
        for (first, count) in [(0u64, 1u64), (70, 200), (mid, span), (last, 1)] {
            md.bitmap.set_range(first, count).unwrap();
            meta::write_bitmap_range(&dev, &md, first, count).unwrap();
        }
        let theirs = drbdmeta_ok(&dev, &["dump-md"]);
        assert_same_dump(&md.dump_md(), &theirs, &what);
        assert!(
            theirs.contains(&format!("# bits-set {};", md.bitmap.count())),
            "{what}"
        );
        assert_eq!(meta::read_md(&dev).unwrap().bitmap, md.bitmap);
        md.bitmap.clear_range(mid + 10, span / 2).unwrap();
        meta::write_bitmap_range(&dev, &md, mid + 10, span / 2).unwrap();
        assert_same_dump(&md.dump_md(), &drbdmeta_ok(&dev, &["dump-md"]), &what);

        // A Primary records extents in the AL, then "crashes" (unclean, PRIMARY_IND).
        md.superblock.flags =
            MdFlags(MdFlags::CONSISTENT | MdFlags::WAS_UP_TO_DATE | MdFlags::PRIMARY_IND);
        md.superblock.magic = meta::MD_MAGIC_84_UNCLEAN;
        md.superblock.al_nr_extents = 1237;
        meta::write_superblock(&dev, &md.superblock).unwrap();
        let mut writer = AlWriter::new(1237, 0);
        let max_extent = (la * 512 / (4 * MIB)) as u32;
        // 11 transactions: the 8-block ring wraps; slot 2 is reused (its old extent is
        // no longer active).
        for i in 0..11u32 {
            let ups = [
                AlUpdate {
                    slot: (i % 6) as u16,
                    extent: (i * 7) % max_extent,
                },
                AlUpdate {
                    slot: 100 + i as u16,
                    extent: max_extent - 1 - i,
                },
            ];
            let tr = writer.record(&ups).unwrap();
            meta::write_al_transaction(&dev, &mut md, &tr).unwrap();
        }
        let md = meta::read_md(&dev).unwrap();
        md.verify_al().unwrap();
        let replay = md.replay_al().unwrap();
        assert_eq!(replay.newest_tr_number, Some(10));

        // drbdmeta sees 8 valid update transactions (dump-md -v x10 prints the AL).
        let out = drbdmeta(&dev, 10, &["dump-md"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.matches("\tmagic: 0x69cb65a2").count(),
            8,
            "{what}:\n{text}"
        );
        assert!(!text.contains("INVALID"), "{what}:\n{text}");

        // apply-al marks exactly the extents our replay predicts.
        let mut predicted = md.clone();
        let newly = predicted.apply_al().unwrap();
        assert!(newly > 0);
        drbdmeta_ok(&dev, &["apply-al"]);
        let after = meta::read_md(&dev).unwrap();
        assert_eq!(after.bitmap, predicted.bitmap, "{what}: apply-al bitmap");
        assert_eq!(
            after.superblock, predicted.superblock,
            "{what}: apply-al superblock"
        );
        assert_eq!(
            after.al, predicted.al,
            "{what}: apply-al re-initialises the AL"
        );
        assert_same_dump(&after.dump_md(), &drbdmeta_ok(&dev, &["dump-md"]), &what);
    }
}

// ---------------------------------------------------------------------------------------
// 4. bad input: clear errors naming the file, nothing written

#[test]
fn bad_input_is_refused_without_writing() {
    if !tools("bad_input_is_refused_without_writing") {
        return;
    }
    let mut env = Env::new();

    // Meta-disk too small: indexed slot 1 needs 256 MiB.
    let small = env.file("small.img", 64 * MIB);
    let before = file_hash(&small);
    let dev = MetaDevice::new(&small, Layout::Indexed(1));
    let e = meta::create_md(&dev, &CreateOptions::new(GIB)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, MetaError::TooSmall { .. }), "{msg}");
    assert!(
        msg.contains("small.img") && msg.contains("268435456 bytes (256 MiB)"),
        "{msg}"
    );
    assert_eq!(file_hash(&small), before);
    // Flexible external: 100 KiB cannot hold a bitmap for 10 GiB (needs 36 KiB + 320 KiB).
    let tiny = env.file("tiny.img", 100 * 1024);
    let dev = MetaDevice::new(&tiny, Layout::FlexExternal);
    assert_eq!(
        meta::required_meta_bytes(&Layout::FlexExternal, 10 * GIB),
        36_864 + 327_680
    );
    let e = meta::create_md(&dev, &CreateOptions::new(10 * GIB)).unwrap_err();
    assert!(e.to_string().contains("needs 364544 bytes (1 MiB)"), "{e}");
    assert_eq!(
        file_hash(&tiny),
        file_hash(&env.file("zero.img", 100 * 1024))
    );
    // Internal on a disk too small for anything.
    let dev = MetaDevice::new(env.file("t2.img", 60 * 1024), Layout::Internal);
    assert!(matches!(
        meta::create_md(&dev, &CreateOptions::default()),
        Err(MetaError::TooSmall { .. })
    ));

    // Read-only loop device (root ignores file modes, so chmod would not do).
    let backing = env.file("ro.img", GIB);
    let rw = MetaDevice::new(&backing, Layout::Indexed(0));
    meta::create_md(&rw, &CreateOptions::new(GIB)).unwrap();
    let before = file_hash(&backing);
    let ro_dev = env.loop_dev(&backing, true);
    for layout in [Layout::Indexed(0), Layout::FlexExternal, Layout::Internal] {
        let ro = MetaDevice::new(&ro_dev, layout);
        let e = meta::create_md(&ro, &CreateOptions::new(GIB)).unwrap_err();
        assert!(matches!(e, MetaError::ReadOnly { .. }), "{e}");
        assert!(e.to_string().contains(ro_dev.to_str().unwrap()), "{e}");
    }
    let ro = MetaDevice::new(&ro_dev, Layout::Indexed(0));
    let md = meta::read_md(&ro).expect("reading a read-only device works");
    let e = meta::write_superblock(&ro, &md.superblock).unwrap_err();
    assert!(matches!(e, MetaError::ReadOnly { .. }), "{e}");
    assert_eq!(file_hash(&backing), before);

    // Wrong magic.
    let f = env.file("magic.img", 200 * MIB);
    let dev = MetaDevice::new(&f, Layout::Indexed(0));
    let e = meta::read_md(&dev).unwrap_err();
    assert!(
        e.to_string().contains("magic.img") && e.to_string().contains("no metadata"),
        "{e}"
    );
    meta::create_md(&dev, &CreateOptions::new(GIB)).unwrap();
    let mut file = OpenOptions::new().write(true).open(&f).unwrap();
    file.seek(SeekFrom::Start(60)).unwrap();
    file.write_all(&0x8374_026Au32.to_be_bytes()).unwrap();
    drop(file);
    let e = meta::read_md(&dev).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            MetaError::BadMagic {
                found: 0x8374_026A,
                expected: 0x8374_026B,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("magic.img") && msg.contains("0x8374026a") && msg.contains("0.7"),
        "{msg}"
    );
    // The superblock of another layout is not taken for this one.
    let other = MetaDevice::new(&f, Layout::FlexExternal);
    let e = meta::read_md(&other).unwrap_err();
    assert!(e.to_string().contains("magic.img"), "{e}");

    // Bad AL checksum: read_md still works (like drbdmeta), verify_al names the block.
    let f = env.file("al.img", 200 * MIB);
    let dev = MetaDevice::new(&f, Layout::Indexed(0));
    meta::create_md(&dev, &CreateOptions::new(GIB)).unwrap();
    let before = file_hash(&f);
    let file = OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all_at(&[0x42], 4096 + 3 * 4096 + 1000).unwrap();
    drop(file);
    let corrupted = file_hash(&f);
    assert_ne!(before, corrupted);
    let md = meta::read_md(&dev).unwrap();
    let e = md.verify_al().unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            MetaError::BadAlBlock {
                index: 3,
                offset: 16384,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("al.img") && msg.contains("checksum"), "{msg}");
    assert_eq!(file_hash(&f), corrupted, "reading wrote nothing");

    // Truncated: a bitmap that runs past the end of the device.
    let f = env.file("trunc.img", MIB);
    let dev = MetaDevice::new(&f, Layout::FlexExternal);
    let mut md = meta::create_md(&dev, &CreateOptions::new(GIB)).unwrap();
    md.superblock.la_size_sect = 2 * GIB / 512;
    meta::write_superblock(&dev, &md.superblock).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(80 * 1024)
        .unwrap();
    let e = meta::read_md(&dev).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, MetaError::Truncated { what: "bitmap", .. }),
        "{msg}"
    );
    assert!(msg.contains("trunc.img"), "{msg}");
    // Shorter than a superblock.
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert!(
        meta::read_md(&dev)
            .unwrap_err()
            .to_string()
            .contains("trunc.img")
    );

    // Garbage never panics.
    let f = env.file("garbage.img", 300 * MIB);
    let file = OpenOptions::new().write(true).open(&f).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 64 * 1024];
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    for off in [0, 128 * MIB, 300 * MIB - 64 * 1024] {
        file.write_all_at(&buf, off).unwrap();
    }
    drop(file);
    for layout in [
        Layout::Indexed(0),
        Layout::Indexed(1),
        Layout::FlexExternal,
        Layout::Internal,
    ] {
        assert!(meta::read_md(&MetaDevice::new(&f, layout)).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// probe

#[test]
fn probe_finds_metadata_and_signatures() {
    if !tools("probe_finds_metadata_and_signatures") {
        return;
    }
    let env = Env::new();
    let f = env.file("p.img", 200 * MIB);
    let dev = MetaDevice::new(&f, Layout::Internal);
    assert_eq!(meta::probe(&dev).unwrap(), Existing::Nothing);
    // ext4 superblock magic and the extents feature.
    let file = OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all_at(&0xEF53u16.to_le_bytes(), 0x438).unwrap();
    file.write_all_at(&0x40u32.to_le_bytes(), 0x460).unwrap();
    drop(file);
    assert_eq!(
        meta::probe(&dev).unwrap(),
        Existing::FilesystemSignature("ext4".into())
    );
    drbdmeta_ok(&dev, &["create-md"]);
    assert!(matches!(
        meta::probe(&dev).unwrap(),
        Existing::ValidMetadata {
            current_uuid: 4,
            clean: true,
            la_size_sect: 0,
            ..
        }
    ));
    let ext = MetaDevice::new(&f, Layout::Indexed(0));
    assert_eq!(
        meta::probe(&ext).unwrap(),
        Existing::FilesystemSignature("ext4".into())
    );
}

#[test]
fn oversized_la_size_is_clipped_like_drbdmeta() {
    if !tools("oversized_la_size_is_clipped_like_drbdmeta") {
        return;
    }
    let env = Env::new();
    for (size, layout) in [(MIB, Layout::FlexExternal), (64 * MIB, Layout::Internal)] {
        let f = env.file(&format!("clip-{layout:?}.img"), size);
        let dev = MetaDevice::new(&f, layout);
        let mut md = meta::create_md(&dev, &CreateOptions::default()).unwrap();
        md.superblock.la_size_sect = md.max_usable_sectors() + 12345;
        meta::write_superblock(&dev, &md.superblock).unwrap();
        let md = meta::read_md(&dev).unwrap();
        assert_eq!(md.effective_la_size_sect(), md.max_usable_sectors());
        let ours = md.dump_md();
        assert!(ours.starts_with("# la-size-sect was too big"), "{ours}");
        assert_same_dump(
            &ours,
            &drbdmeta_ok(&dev, &["dump-md"]),
            &format!("{layout}"),
        );
    }
}
