//! Reading the real init's program and libraries ahead, while the boot ends
//! and the real init starts.
//!
//! Why: from a squashfs root a program is paged in one compressed block at
//! a time, as the dynamic loader maps it and its libraries; the bench showed
//! systemd taking 0.94 s from its exec to its first line from the squashfs
//! root against 0.54 s from ext4 (Debian rootfs, TCG). Once the overlay root
//! is mounted, init starts `init --warm ROOT INIT` ([`spawn_argv`]), a
//! process of its own that reads those files into the page cache on
//! another CPU while PID 1 finishes the boot and execs the real init (which
//! a thread could not do: exec ends every other thread), and that the real
//! init reaps when it ends. It reads only what the kernel and the loader
//! load to start the real init, and of each program or library only what
//! the loader reads while linking (not its code), bounded ([`MAX_FILES`],
//! [`MAX_BYTES`]), at a lower priority; anything it cannot read it skips:
//! it only saves time.

use ramstick_common::elf::{self, LIBRARY_DIRS};
use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// The command-line flag of the read-ahead process.
pub const WARM_FLAG: &str = "--warm";

/// At most this many files are read (systemd 252: 27).
const MAX_FILES: usize = 64;
/// At most this many bytes are read (systemd 252 reads about 7 MiB of its 18).
const MAX_BYTES: u64 = 64 << 20;
/// The read-ahead's nice value: it takes a CPU nobody uses, not the boot's.
const NICE: i32 = 10;

/// The files of the root being warmed, by absolute path in it.
pub trait Files {
    /// Whether `path` is a file that can be opened (following symlinks).
    fn exists(&self, path: &str) -> bool;
    /// What running `path` reads of it (reading it is what warms it), as
    /// its content (parts not read left zero) and the bytes read.
    fn read(&mut self, path: &str) -> Option<(Vec<u8>, u64)>;
}

/// What [`warm`] read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Reads `init` and what running it loads: a `#!` script's interpreter,
/// an ELF program's interpreter (the dynamic loader) and its `DT_NEEDED`
/// libraries, breadth first as the loader maps them, each path once, until
/// [`MAX_FILES`] or [`MAX_BYTES`].
pub fn warm(files: &mut dyn Files, init: &str) -> Warmed {
    let mut out = Warmed::default();
    let mut queue = VecDeque::from([init.to_string()]);
    let mut seen: HashSet<String> = queue.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if out.files.len() >= MAX_FILES || out.bytes >= MAX_BYTES {
            break;
        }
        let Some((bytes, read)) = files.read(&path) else {
            continue;
        };
        out.bytes += read;
        for next in loads(&*files, &path, &bytes) {
            if seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
        out.files.push(path);
    }
    out
}

/// The paths the kernel and the loader open to run the file `path` with
/// content `bytes`, in their order; names they would not find are left out.
fn loads(files: &dyn Files, path: &str, bytes: &[u8]) -> Vec<String> {
    if let Some(line) = bytes.strip_prefix(b"#!") {
        return crate::switchroot::shebang_interpreter(line)
            .into_iter()
            .collect();
    }
    if !elf::is_elf(bytes) {
        return Vec::new();
    }
    let mut out: Vec<String> = elf::interpreter(bytes).ok().flatten().into_iter().collect();
    let origin = Path::new(path)
        .parent()
        .map_or_else(|| "/".to_string(), |p| p.display().to_string());
    let own: Vec<String> = elf::search_path(bytes)
        .unwrap_or_default()
        .iter()
        .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
        .collect();
    for name in elf::needed_libraries(bytes).unwrap_or_default() {
        if name.contains('/') {
            out.push(name);
            continue;
        }
        let found = own
            .iter()
            .map(String::as_str)
            .chain(LIBRARY_DIRS.iter().copied())
            .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
            .find(|candidate| files.exists(candidate));
        out.extend(found);
    }
    out
}

/// The command PID 1 starts to warm `init` in the mounted root `newroot`.
pub fn spawn_argv(newroot: &Path, init: &str) -> Vec<String> {
    vec![
        "/proc/self/exe".to_string(),
        WARM_FLAG.to_string(),
        newroot.display().to_string(),
        init.to_string(),
    ]
}

/// The files of the process's own root.
struct OwnRoot;

/// How much of a file is read first: an ELF file's header and program
/// headers are in it.
const HEAD: u64 = 4096;

impl Files for OwnRoot {
    fn exists(&self, path: &str) -> bool {
        Path::new(path).is_file()
    }

    /// An ELF file's headers and data segments ([`elf::data_ranges`]), what
    /// the loader reads while it links; its code is paged in as it runs, and
    /// most of a big library's code never is. Other files whole.
    fn read(&mut self, path: &str) -> Option<(Vec<u8>, u64)> {
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut head = vec![0; usize::try_from(len.min(HEAD)).ok()?];
        file.read_exact_at(&mut head, 0).ok()?;
        if let Some(read) = elf::is_elf(&head)
            .then(|| data_segments(&file, len, &head))
            .flatten()
        {
            return Some(read);
        }
        let all = std::fs::read(path).ok()?;
        let n = all.len() as u64;
        Some((all, n))
    }
}

/// `file` (`len` bytes, starting with `head`) with only its data segments
/// read, if what the loader looks up is in them: the loader's path and the
/// library names (older layouts keep the string table with the code: then
/// `None`, and the file is read whole).
fn data_segments(file: &std::fs::File, len: u64, head: &[u8]) -> Option<(Vec<u8>, u64)> {
    let ranges = elf::data_ranges(head).ok()?;
    let mut content = vec![0; usize::try_from(len).ok()?];
    content.get_mut(..head.len())?.copy_from_slice(head);
    let mut read = head.len() as u64;
    for range in ranges {
        let part = content.get_mut(range.clone())?;
        file.read_exact_at(part, range.start as u64).ok()?;
        read += part.len() as u64;
    }
    let names = elf::needed_libraries(&content).ok()?;
    let interp = elf::interpreter(&content).ok()?;
    if names.iter().any(String::is_empty) || interp.is_some_and(|i| i.is_empty()) {
        return None;
    }
    Some((content, read))
}

/// `init --warm ROOT INIT`: lowers its priority, enters `root` (a chroot
/// follows the mount when PID 1 moves it onto /), reads, and says what it
/// read in the kernel log (debug level). Returns the exit status.
pub fn run(root: &str, init: &str) -> i32 {
    use std::io::Write;
    let mut kmsg = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .ok();
    // SAFETY: setpriority(2) on this process only; no memory is passed.
    unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) };
    // One write(2) per line: each is a record of its own in the kernel log.
    let mut say = |line: String| {
        if let Some(k) = kmsg.as_mut() {
            let _ = k.write_all(format!("<7>ramstick: {line}\n").as_bytes());
        }
    };
    if let Err(e) = nix::unistd::chroot(root).and_then(|()| nix::unistd::chdir("/")) {
        say(format!("read-ahead: cannot enter {root}: {e}"));
        return 1;
    }
    let start = Instant::now();
    let warmed = warm(&mut OwnRoot, init);
    say(format!(
        "read-ahead of {init}: {} file{}, {} KiB in {} ms",
        warmed.files.len(),
        if warmed.files.len() == 1 { "" } else { "s" },
        warmed.bytes / 1024,
        start.elapsed().as_millis()
    ));
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Files in a map, with the order they were read in.
    #[derive(Default)]
    struct Fake {
        files: HashMap<String, Vec<u8>>,
        read: Vec<String>,
    }

    impl Files for Fake {
        fn exists(&self, path: &str) -> bool {
            self.files.contains_key(path)
        }
        fn read(&mut self, path: &str) -> Option<(Vec<u8>, u64)> {
            self.read.push(path.to_string());
            let bytes = self.files.get(path).cloned()?;
            let n = bytes.len() as u64;
            Some((bytes, n))
        }
    }

    /// A real dynamic ELF program of the host (the tests need one).
    fn host_elf(path: &str) -> Option<Vec<u8>> {
        std::fs::read(path).ok().filter(|b| elf::is_elf(b))
    }

    #[test]
    fn a_script_warms_its_interpreter_and_a_missing_file_is_skipped() {
        let mut fake = Fake::default();
        fake.files
            .insert("/sbin/init".into(), b"#!/bin/sh -e\necho".to_vec());
        let warmed = warm(&mut fake, "/sbin/init");
        // /bin/sh is not there: read (tried) but not counted.
        assert_eq!(fake.read, ["/sbin/init", "/bin/sh"]);
        assert_eq!(warmed.files, ["/sbin/init"]);
        assert_eq!(warmed.bytes, 17);
        let mut none = Fake::default();
        assert_eq!(warm(&mut none, "/sbin/init"), Warmed::default());
    }

    #[test]
    fn an_elf_warms_its_loader_and_libraries_breadth_first() {
        // The host's /bin/sh as the init, with its real loader and
        // libraries placed where the search finds them.
        let Some(sh) = host_elf("/bin/sh") else {
            println!("skipped: no dynamic /bin/sh on this host");
            return;
        };
        let interp = elf::interpreter(&sh).unwrap().expect("dynamic /bin/sh");
        let needed = elf::needed_libraries(&sh).unwrap();
        assert!(!needed.is_empty());
        let mut fake = Fake::default();
        fake.files.insert("/sbin/init".into(), sh.clone());
        fake.files.insert(interp.clone(), b"loader".to_vec());
        for (i, name) in needed.iter().enumerate() {
            // The first in Debian's multiarch directory, the rest in /usr/lib:
            // each found in the first directory of the search that has it.
            let dir = if i == 0 {
                "/lib/x86_64-linux-gnu"
            } else {
                "/usr/lib"
            };
            fake.files
                .insert(format!("{dir}/{name}"), name.as_bytes().to_vec());
            // Not a directory the loader searches: never read.
            fake.files.insert(format!("/opt/{name}"), Vec::new());
        }
        let warmed = warm(&mut fake, "/sbin/init");
        let mut expected = vec!["/sbin/init".to_string(), interp];
        for (i, name) in needed.iter().enumerate() {
            let dir = if i == 0 {
                "/lib/x86_64-linux-gnu"
            } else {
                "/usr/lib"
            };
            expected.push(format!("{dir}/{name}"));
        }
        assert_eq!(warmed.files, expected);
        assert_eq!(
            fake.read, expected,
            "each file read once, in the loader's order"
        );
    }

    #[test]
    fn a_library_that_needs_itself_or_its_program_is_read_once() {
        // Two copies of the host's /bin/sh: the init, and the same bytes as
        // every library it needs (so each "library" needs them all again).
        let Some(sh) = host_elf("/bin/sh") else {
            println!("skipped: no dynamic /bin/sh on this host");
            return;
        };
        let mut fake = Fake::default();
        fake.files.insert("/sbin/init".into(), sh.clone());
        for name in elf::needed_libraries(&sh).unwrap() {
            fake.files.insert(format!("/lib/{name}"), sh.clone());
        }
        let warmed = warm(&mut fake, "/sbin/init");
        let unique: HashSet<&String> = fake.read.iter().collect();
        assert_eq!(unique.len(), fake.read.len(), "{:?}", fake.read);
        assert_eq!(
            warmed.files.len(),
            1 + elf::needed_libraries(&sh).unwrap().len()
        );
    }

    #[test]
    fn reading_stops_at_the_file_limit() {
        // A chain of scripts, each the interpreter of the one before.
        let mut fake = Fake::default();
        for i in 0..MAX_FILES + 10 {
            fake.files
                .insert(format!("/s{i}"), format!("#!/s{}\n", i + 1).into_bytes());
        }
        let warmed = warm(&mut fake, "/s0");
        assert_eq!(warmed.files.len(), MAX_FILES);
        assert_eq!(fake.read.len(), MAX_FILES);
    }

    #[test]
    fn a_host_library_is_read_without_its_code_and_parses_the_same() {
        // libc: big code, small data; its names and loader survive the
        // partial read (or it is read whole, on an older layout).
        let Some(libc) = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            println!("skipped: no glibc on this host");
            return;
        };
        let whole = std::fs::read(libc).unwrap();
        let (content, read) = OwnRoot.read(libc).unwrap();
        assert_eq!(content.len(), whole.len());
        assert!(read < whole.len() as u64 / 2, "{read} of {}", whole.len());
        assert_eq!(
            elf::needed_libraries(&content).unwrap(),
            elf::needed_libraries(&whole).unwrap()
        );
        assert_eq!(
            elf::interpreter(&content).unwrap(),
            elf::interpreter(&whole).unwrap()
        );
        // A file that is not ELF is read whole.
        let (text, n) = OwnRoot
            .read("/etc/hostname")
            .or(OwnRoot.read("/etc/passwd"))
            .unwrap();
        assert_eq!(n, text.len() as u64);
    }

    #[test]
    fn the_command_names_the_flag_the_root_and_the_init() {
        assert_eq!(
            spawn_argv(Path::new("/sysroot"), "/sbin/init"),
            ["/proc/self/exe", "--warm", "/sysroot", "/sbin/init"]
        );
    }
}
