//! Planning from a bitmap, writing a save durably, listing, validating and restoring.

use super::*;

fn bitmap_with(device_bytes: u64, blocks: &[(u64, u64)]) -> Bitmap {
    let mut b = Bitmap::new(device_bytes / 512);
    for &(first, count) in blocks {
        b.set_range(first, count).expect("in range");
    }
    b
}

#[test]
fn plan_follows_runs_and_cuts_long_ones() {
    let dev = 64 << 20;
    let b = bitmap_with(dev, &[(0, 1), (2, 3), (63, 2), (1000, 600)]);
    let p = plan(&b, dev);
    assert_eq!(
        p,
        vec![
            (0, 4096),
            (2 * 4096, 3 * 4096),
            (63 * 4096, 2 * 4096),
            (1000 * 4096, 1 << 20),
            (1256 * 4096, 1 << 20),
            (1512 * 4096, 88 * 4096),
        ]
    );
    assert!(plan(&bitmap_with(dev, &[]), dev).is_empty());
}

#[test]
fn plan_clips_the_last_partial_block() {
    // 10 sectors: two bits, the second covers 1 KiB of the device.
    let dev = 5120;
    let b = bitmap_with(dev, &[(0, 2)]);
    assert_eq!(plan(&b, dev), vec![(0, 5120)]);
}

#[test]
fn limits_parse() {
    assert_eq!(SaveLimit::parse("1G"), Ok(SaveLimit::Max(1 << 30)));
    assert_eq!(SaveLimit::parse("4096"), Ok(SaveLimit::Max(4096)));
    assert_eq!(SaveLimit::parse("unlimited"), Ok(SaveLimit::Unlimited));
    assert_eq!(SaveLimit::parse("off"), Ok(SaveLimit::Off));
    assert!(SaveLimit::parse("lots").is_err());
}

#[test]
fn stamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
    assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
}

fn job(dir: &Path, disk: &Path, runs: Vec<(u64, u32)>) -> SaveJob {
    SaveJob {
        dir: dir.to_owned(),
        disk: disk.to_owned(),
        header: Header {
            resource: "r0".into(),
            volume: 0,
            node: "beta".into(),
            peer: "alpha".into(),
            reason: "test".into(),
            created_unix: 1_700_000_000,
            device_bytes: 1 << 20,
            records: 0,
            data_bytes: 0,
            local_uuids: [1, 2, 3, 4],
            peer_uuids: [5, 6, 7, 8],
        },
        runs,
    }
}

#[test]
fn save_list_validate_restore() {
    let t = tempfile::tempdir().expect("tempdir");
    let disk = t.path().join("disk.img");
    let content: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&disk, &content).expect("disk");
    let dir = t.path().join("state/r0");
    let runs = vec![(0, 4096), (65536, 8192)];
    let saved = write_save(&job(&dir, &disk, runs.clone())).expect("saved");
    assert_eq!(saved.blocks, 3);
    assert_eq!(
        saved.path.file_name().and_then(|n| n.to_str()),
        Some("split-brain-20231114T221320Z-v0.blocks")
    );
    // A second save in the same second gets its own name.
    let again = write_save(&job(&dir, &disk, runs)).expect("saved");
    assert_ne!(again.path, saved.path);
    // No temporary file is left.
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let l = list(&dir);
    assert_eq!(l.len(), 2);
    assert!(l[0].looks_complete());
    let (h, end) = validate(&saved.path).expect("valid");
    assert_eq!((h.records, h.data_bytes, end), (2, 12288, 65536 + 8192));

    let target_path = t.path().join("target.img");
    fs::write(&target_path, vec![0u8; 1 << 20]).expect("target");
    let target = OpenOptions::new()
        .write(true)
        .open(&target_path)
        .expect("open");
    let r = restore(&saved.path, &target).expect("restored");
    assert_eq!(r.records, 2);
    let got = fs::read(&target_path).expect("read");
    assert_eq!(got[..4096], content[..4096]);
    assert_eq!(got[65536..73728], content[65536..73728]);
    assert!(got[4096..65536].iter().all(|&b| b == 0));
    assert!(got[73728..].iter().all(|&b| b == 0));
}

#[test]
fn a_damaged_save_restores_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let disk = t.path().join("disk.img");
    fs::write(&disk, vec![0x5A; 1 << 20]).expect("disk");
    let saved = write_save(&job(t.path(), &disk, vec![(0, 4096), (8192, 4096)])).expect("saved");
    let good = fs::read(&saved.path).expect("read");
    let target_path = t.path().join("target.img");
    for bad in [
        {
            let mut b = good.clone();
            b[good.len() - 100] ^= 1;
            b
        },
        good[..good.len() - 5000].to_vec(),
    ] {
        fs::write(&saved.path, &bad).expect("damage");
        fs::write(&target_path, vec![0u8; 1 << 20]).expect("target");
        let target = OpenOptions::new()
            .write(true)
            .open(&target_path)
            .expect("open");
        let e = restore(&saved.path, &target).expect_err("refused");
        assert!(matches!(e, RestoreError::Save(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&saved.path.display().to_string()) && msg.contains("byte offset"),
            "{msg}"
        );
        assert!(
            fs::read(&target_path)
                .expect("read")
                .iter()
                .all(|&b| b == 0),
            "nothing written"
        );
    }
    assert!(!list(t.path())[0].looks_complete());
}

#[test]
fn a_failed_save_leaves_no_file() {
    let t = tempfile::tempdir().expect("tempdir");
    let disk = t.path().join("small.img");
    fs::write(&disk, vec![0; 4096]).expect("disk");
    // The second record is past the end of the disk file: reading fails.
    let e = write_save(&job(t.path(), &disk, vec![(0, 4096), (65536, 4096)])).expect_err("fails");
    assert!(
        e.to_string().contains("reading 4096 bytes at offset 65536"),
        "{e}"
    );
    let names: Vec<_> = fs::read_dir(t.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "only the disk: {names:?}");
}
