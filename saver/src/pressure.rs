//! Measuring the RAM upper, for the daemon's watch ([`crate::watch`]) and
//! `saver status`: how full its filesystem is, how much RAM it holds
//! against what the kernel still has available, and which directories
//! fill it.

use crate::session::Paths;
use crate::space;
use crate::watch::Sample;
use ramstick_common::meminfo;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The kernel's memory figures.
const MEMINFO: &str = "/proc/meminfo";
/// Where the zram devices' statistics are.
const SYS_BLOCK: &str = "/sys/block";
/// Files are counted in their directory this deep at most (`/home/me/.cache`):
/// deep enough to name a cache, shallow enough to add up its many subdirectories.
const DEPTH: usize = 3;
/// The walk stops after this many entries: a warning must not wait for a
/// walk of millions of files (what it found so far is named).
const MAX_ENTRIES: u64 = 200_000;
/// How many directories a warning names.
const TOP: usize = 5;

/// `mem_used_total` of a zram device's `mm_stat` (its third field): the
/// RAM the device takes, compressed data and allocator overhead included.
pub fn zram_mem_used(mm_stat: &str) -> Option<u64> {
    mm_stat.split_whitespace().nth(2)?.parse().ok()
}

/// Where the figures are read (the system's, or a test's).
pub struct Sources {
    pub upper_mount: PathBuf,
    pub sys_block: PathBuf,
    pub meminfo: PathBuf,
}

impl Sources {
    pub fn system(paths: &Paths) -> Sources {
        Sources {
            upper_mount: paths.upper_mount.clone(),
            sys_block: SYS_BLOCK.into(),
            meminfo: MEMINFO.into(),
        }
    }

    /// A look at the upper of kind `upper` (boot.json's: "zram0", "tmpfs").
    /// Its filesystem is full when nothing is available any more, as `df`
    /// counts (ext4 keeps some blocks for itself). A zram upper holds the
    /// RAM its device takes; a tmpfs upper holds its used pages (the
    /// filesystem's use).
    pub fn sample(&self, upper: &str) -> Sample {
        let fs = space::usage(&self.upper_mount)
            .ok()
            .map(|u| (u.used, u.used.saturating_add(u.free)));
        let held = if upper.starts_with("zram") {
            std::fs::read_to_string(self.sys_block.join(upper).join("mm_stat"))
                .ok()
                .and_then(|text| zram_mem_used(&text))
        } else {
            fs.map(|(used, _)| used)
        };
        let available = std::fs::read_to_string(&self.meminfo)
            .ok()
            .and_then(|text| meminfo::mem_available(&text));
        Sample {
            fs,
            ram: held.zip(available),
        }
    }
}

/// The directories of `upperdir` whose files take the most bytes, as the
/// user's paths (`/root/fill`), largest first, at most [`TOP`]. A file
/// counts in its directory, or in that directory's ancestor [`DEPTH`]
/// levels down from the root when it is deeper; each inode once, by the
/// blocks it takes. The walk stays on the upper's filesystem and stops
/// after [`MAX_ENTRIES`] entries; unreadable directories are skipped (this
/// only names what fills the upper).
pub fn largest_dirs(upperdir: &Path) -> Vec<(String, u64)> {
    let Ok(root) = std::fs::symlink_metadata(upperdir) else {
        return Vec::new();
    };
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut entries = 0u64;
    let mut todo: Vec<(PathBuf, Vec<String>)> = vec![(upperdir.to_path_buf(), Vec::new())];
    while let Some((dir, names)) = todo.pop() {
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            entries += 1;
            if entries > MAX_ENTRIES {
                todo.clear();
                break;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != root.dev() {
                continue;
            }
            if meta.is_dir() {
                // Below DEPTH a file counts in its ancestor at DEPTH.
                let mut below = names.clone();
                if below.len() < DEPTH {
                    below.push(entry.file_name().to_string_lossy().into_owned());
                }
                todo.push((entry.path(), below));
            } else if meta.blocks() > 0 && seen.insert(meta.ino()) {
                let shown = names.iter().fold(String::new(), |p, n| p + "/" + n);
                let key = if shown.is_empty() { "/".into() } else { shown };
                *bytes.entry(key).or_default() += meta.blocks() * 512;
            }
        }
    }
    let mut largest: Vec<(String, u64)> = bytes.into_iter().collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    largest.truncate(TOP);
    largest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn zram_s_memory_is_the_third_field_of_mm_stat() {
        let line = "  8192000  4096000  4300800        0  4300800        2        0        0\n";
        assert_eq!(zram_mem_used(line), Some(4_300_800));
        assert_eq!(zram_mem_used("1 2\n"), None);
        assert_eq!(zram_mem_used("1 2 x\n"), None);
    }

    #[test]
    fn a_sample_reads_the_filesystem_zram_and_meminfo() {
        let dir = ramstick_testkit::TempDir::new("saver-pressure");
        dir.mkdir("block/zram1");
        fs::write(dir.join("block/zram1/mm_stat"), "10 5 7000 0 7000 0 0 0\n").unwrap();
        fs::write(
            dir.join("meminfo"),
            "MemTotal: 100 kB\nMemAvailable: 3 kB\n",
        )
        .unwrap();
        let src = Sources {
            upper_mount: dir.path().to_path_buf(),
            sys_block: dir.join("block"),
            meminfo: dir.join("meminfo"),
        };
        let s = src.sample("zram1");
        let (used, size) = s.fs.unwrap();
        assert!(used > 0 && used <= size, "{s:?}");
        assert_eq!(s.ram, Some((7000, 3072)));
        // A tmpfs upper holds what its filesystem uses.
        let tmpfs = src.sample("tmpfs");
        assert_eq!(tmpfs.ram, Some((tmpfs.fs.unwrap().0, 3072)));
        // A missing figure leaves the RAM pressure unknown, not zero.
        assert_eq!(src.sample("zram0").ram, None);
        fs::write(dir.join("meminfo"), "MemTotal: 100 kB\n").unwrap();
        assert_eq!(src.sample("zram1").ram, None);
        let gone = Sources {
            upper_mount: dir.join("missing"),
            ..src
        };
        assert_eq!(gone.sample("tmpfs"), Sample::default());
    }

    #[test]
    fn the_largest_directories_are_counted_down_to_three_levels() {
        let dir = ramstick_testkit::TempDir::new("saver-largest");
        dir.mkdir("root/fill/sub/deeper/deepest");
        dir.mkdir("etc");
        dir.mkdir("empty");
        fs::write(dir.join("root/fill/a"), vec![7u8; 300_000]).unwrap();
        fs::write(dir.join("root/fill/sub/deeper/b"), vec![7u8; 100_000]).unwrap();
        fs::write(
            dir.join("root/fill/sub/deeper/deepest/c"),
            vec![7u8; 100_000],
        )
        .unwrap();
        // Counted once.
        fs::hard_link(dir.join("root/fill/a"), dir.join("root/fill/a2")).unwrap();
        fs::write(dir.join("etc/hostname"), vec![7u8; 5_000]).unwrap();
        fs::write(dir.join("top"), vec![7u8; 20_000]).unwrap();
        // A sparse file takes no room.
        fs::File::create(dir.join("empty/sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let largest = largest_dirs(dir.path());
        let names: Vec<&str> = largest.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["/root/fill", "/root/fill/sub", "/", "/etc"],
            "{largest:?}"
        );
        assert!(largest[0].1 >= 300_000, "{largest:?}");
        assert!(largest[1].1 >= 200_000, "{largest:?}");
        assert!(largest_dirs(&dir.join("missing")).is_empty());
    }
}
