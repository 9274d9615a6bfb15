//! `pack` of a tree with a file that keeps changing while it is read (a
//! writer thread rewrites it in a loop, growing and shrinking it): under
//! `Changing::Fail` the pack fails with `Error::Changed`; under
//! `Changing::Settle` it succeeds and names the file, stores it as one read
//! saw it (its size is its data's length; every byte is one the writer
//! wrote there), keeps nothing of the reads it gave up, and stores every
//! other file exactly. And `verify_with`: what it lets off and what it
//! still compares. No root needed.

use ramstick_squash::{
    pack, unpack, verify, verify_with, ChangedFile, Changing, Compressor, Error, PackOptions,
    PackStats, UnpackOptions, VerifyOptions,
};
use ramstick_testkit::TempDir;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The byte the writer puts at `offset`, whatever the file's length:
/// never zero (a hole read as zeros would show), not compressible (given-up
/// blocks left in the image would show in its size).
fn byte_at(offset: u64) -> u8 {
    let mut x = (offset / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x >> ((offset % 8) * 8)) as u8 | 1
}

fn pattern(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(byte_at).collect()
}

const MIB: u64 = 1 << 20;

/// A thread that rewrites `path` until stopped: in place up to 8 MiB
/// (growing it), then cut to 6 MiB, and again. The file never holds
/// anything but `byte_at(offset)` at an offset, and is never empty.
struct Writer {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Writer {
    fn start(path: &Path) -> Writer {
        fs::write(path, pattern(0, 6 * MIB as usize)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r, p) = (stop.clone(), rounds.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || -> std::io::Result<()> {
            let file = File::options().write(true).open(&p)?;
            let all = pattern(0, 8 * MIB as usize);
            while !s.load(Ordering::Relaxed) {
                for (i, chunk) in all.chunks(64 << 10).enumerate() {
                    file.write_all_at(chunk, i as u64 * (64 << 10))?;
                }
                file.set_len(6 * MIB)?;
                r.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        let w = Writer {
            stop,
            rounds,
            thread: Some(thread),
        };
        let t = Instant::now();
        while w.rounds.load(Ordering::Relaxed) == 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "writer stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
        w
    }

    /// Stops the writer; returns how many rounds it wrote.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        self.rounds.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn scratch(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.mkdir("src/sub");
    dir
}

/// The quiet files beside the busy one (incompressible): `(path, bytes)`.
fn quiet_files(src: &Path) -> u64 {
    let files: [(&str, usize); 5] = [
        ("a", 300_000),
        ("sub/b", 5_000),
        ("sub/c", 1 << 20),
        ("sub/dup1", 200_000),
        ("sub/dup2", 200_000),
    ];
    let mut total = 0;
    for (i, (name, len)) in files.iter().enumerate() {
        let seed = if name.starts_with("sub/dup") {
            99
        } else {
            i as u64
        };
        let bytes = ramstick_testkit::noise_seeded(*len, false, seed);
        fs::write(src.join(name), bytes).unwrap();
        if *name != "sub/dup2" {
            total += *len as u64;
        }
    }
    total
}

fn options(changing: Changing) -> PackOptions<'static> {
    PackOptions {
        compressor: Compressor::Zstd(3),
        threads: 2,
        changing,
        ..PackOptions::default()
    }
}

#[test]
fn a_file_that_keeps_changing_fails_or_is_stored_as_one_read_saw_it() {
    let dir = scratch("changing");
    let src = dir.join("src");
    let quiet = quiet_files(&src);
    let busy = src.join("busy");
    let writer = Writer::start(&busy);
    fs::hard_link(&busy, src.join("sub/busy-link")).unwrap();
    let image = dir.join("img");

    let err = pack(&src, &image, &options(Changing::Fail)).unwrap_err();
    assert!(
        matches!(&err, Error::Changed { path, .. } if path == &busy),
        "{err}"
    );

    let stats: PackStats = pack(&src, &image, &options(Changing::Settle)).unwrap();
    let rounds = writer.stop();
    println!("{stats:?}, the writer wrote {rounds} rounds");
    let names: Vec<&Path> = stats.changed.iter().map(|c| c.path.as_path()).collect();
    assert_eq!(names, [Path::new("/busy"), Path::new("/sub/busy-link")]);
    let size = stats.changed[0].size;
    assert!(stats.changed.iter().all(|c| c.size == size));
    assert!((1..=8 * MIB).contains(&size), "stored {size} bytes");
    // Only the read kept left data: the image holds the stored bytes (raw:
    // they do not compress) and little else.
    assert_eq!(stats.bytes_in, quiet + size);
    assert!(
        stats.image_size < quiet + size + (64 << 10),
        "{} bytes of image for {} bytes of files",
        stats.image_size,
        quiet + size
    );

    // Read back: the busy file as one read saw it, hardlinks kept.
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    unpack(&image, &out, &UnpackOptions::default()).unwrap();
    let stored = fs::read(out.join("busy")).unwrap();
    assert_eq!(stored.len() as u64, size);
    if let Some(i) = (0..stored.len()).find(|&i| stored[i] != byte_at(i as u64)) {
        panic!("byte {i} of the stored file was never written there");
    }
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&out.join("busy")), ino(&out.join("sub/busy-link")));
    assert_eq!(verify(&image, &out, &Default::default()).unwrap(), []);

    // Against the source: all the rest compares exactly; the busy file's
    // metadata still does.
    let read_back = VerifyOptions {
        changing: &stats.changed,
        ..VerifyOptions::default()
    };
    let found = verify_with(&image, &src, &read_back).unwrap();
    assert_eq!(found.differences, []);
    fs::set_permissions(&busy, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("sub/b"), b"other").unwrap();
    let found = verify_with(&image, &src, &read_back).unwrap();
    let text: Vec<String> = found.differences.iter().map(|d| d.to_string()).collect();
    let busy_lines: Vec<&String> = text.iter().filter(|t| t.contains("busy")).collect();
    assert_eq!(
        busy_lines,
        [
            "/busy: mode 0644 in the image, 0600 in the directory",
            "/sub/busy-link: mode 0644 in the image, 0600 in the directory"
        ],
        "{text:?}"
    );
    // (and its mtime, if the second turned since the pack)
    assert!(text.iter().any(|t| t.starts_with("/sub/b: size 5000")));
    let others = text.iter().filter(|t| t.starts_with("/sub/b:")).count();
    assert_eq!(text.len(), 2 + others, "{text:?}");
}

#[test]
fn verify_lets_off_a_file_written_since_the_pack_and_nothing_older() {
    let dir = scratch("since");
    let src = dir.join("src");
    fs::write(src.join("log"), b"one\n").unwrap();
    fs::write(src.join("sub/quiet"), b"quiet\n").unwrap();
    let image = dir.join("img");
    let began = SystemTime::now() - Duration::from_secs(1);
    let stats = pack(&src, &image, &options(Changing::Settle)).unwrap();
    assert_eq!(stats.changed, []);
    let mut log = File::options().append(true).open(src.join("log")).unwrap();
    log.write_all(b"two\n").unwrap();
    drop(log);
    let plain = verify(&image, &src, &Default::default()).unwrap();
    assert!(
        plain.iter().any(|d| d.what.starts_with("size 4")),
        "{plain:?}"
    );

    let since = |t| VerifyOptions {
        changed_since: Some(t),
        ..VerifyOptions::default()
    };
    let found = verify_with(&image, &src, &since(began)).unwrap();
    assert_eq!(found.differences, []);
    assert_eq!(found.changed.len(), 1);
    let ChangedFile { path, size, .. } = &found.changed[0];
    assert_eq!((path.as_path(), *size), (Path::new("/log"), 4));
    // Written before that time: a difference.
    let later = SystemTime::now() + Duration::from_secs(60);
    let found = verify_with(&image, &src, &since(later)).unwrap();
    assert_eq!(found.changed, []);
    assert_eq!(found.differences, plain);
    // Not the content only: a file written since with another mode differs.
    fs::set_permissions(src.join("log"), fs::Permissions::from_mode(0o600)).unwrap();
    let found = verify_with(&image, &src, &since(began)).unwrap();
    let what: Vec<&str> = found.differences.iter().map(|d| d.what.as_str()).collect();
    assert!(what.len() == 1 && what[0].starts_with("mode"), "{what:?}");
}
