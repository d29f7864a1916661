//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) through the same entry points the
//! cargo-fuzz targets call, then a bounded number of random mutations of it: no input may
//! panic. A crash found by `cargo fuzz` is added to the corpus, and this test keeps it fixed.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "corpus {} has only {} files",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        eprintln!("replaying {}", path.display());
        run(&bytes);
    }
}

/// Random byte flips, truncations and splices of corpus files.
fn mutate(target: &str, run: fn(&[u8]), cases: u32) {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        any::<prop::sample::Index>(),
    );
    runner
        .run(&strategy, |(seed, flips, cut)| {
            let mut bytes = seeds[seed].clone();
            if !bytes.is_empty() {
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            run(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
}

#[test]
fn config_corpus_replays() {
    replay("config", urbd::fuzzing::config);
}

#[test]
fn meta_corpus_replays() {
    replay("meta", urbd::fuzzing::meta);
}

#[test]
fn config_corpus_mutations() {
    mutate("config", urbd::fuzzing::config, 2000);
}

#[test]
fn meta_corpus_mutations() {
    mutate("meta", urbd::fuzzing::meta, 300);
}

#[test]
fn nbd_handshake_corpus_replays() {
    replay("nbd_handshake", urbd::fuzzing::nbd_handshake);
    mutate("nbd_handshake", urbd::fuzzing::nbd_handshake, 1000);
}

#[test]
fn nbd_request_corpus_replays() {
    replay("nbd_request", urbd::fuzzing::nbd_request);
    mutate("nbd_request", urbd::fuzzing::nbd_request, 1000);
}

#[test]
fn wire_corpus_replays() {
    replay("wire", urbd::fuzzing::wire);
    mutate("wire", urbd::fuzzing::wire, 1000);
}

#[test]
fn bitmap_corpus_replays() {
    replay("bitmap", urbd::fuzzing::bitmap);
    mutate("bitmap", urbd::fuzzing::bitmap, 1000);
}

#[test]
fn sbsave_corpus_replays() {
    // The valid sample is the corpus' first file (URBD_WRITE_CORPUS=1 rewrites it).
    let sample = urbd::fuzzing::sbsave_sample();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sbsave/valid-two-records");
    if std::env::var("URBD_WRITE_CORPUS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &sample).expect("write the sample");
    }
    assert_eq!(
        std::fs::read(&path).expect("fuzz/corpus/sbsave/valid-two-records"),
        sample,
        "the committed sample is stale (URBD_WRITE_CORPUS=1 rewrites it)"
    );
    replay("sbsave", urbd::fuzzing::sbsave);
    mutate("sbsave", urbd::fuzzing::sbsave, 1000);
}
