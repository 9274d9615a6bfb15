//! The initramfs's busybox: built from Debian bookworm's busybox source
//! (the upstream tarball with Debian's patch series, its CVE fixes
//! included) as a static musl binary with only the applets ramstick needs
//! ([`CONFIG`]): ~420 KB where Debian's `busybox-static` (glibc, ~400
//! applets) is 2 MB, which keeps the initramfs under 4 MiB.
//!
//! Cached in `target/ramstick/cache/busybox-<hash>/` (the hash covers the
//! two sources and [`CONFIG`]), built in a partial directory renamed when
//! complete. Reproducible: no timestamp, a fixed build tag.

use crate::cache::Hasher;
use crate::{build, deps};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian keeps busybox's source package.
const POOL: &str = "http://deb.debian.org/debian/pool/main/b/busybox/";

/// A source file of the package and its pinned sha256.
struct Source {
    name: &'static str,
    sha256: &'static str,
}

/// Upstream's tarball, as Debian ships it.
const ORIG: Source = Source {
    name: "busybox_1.35.0.orig.tar.bz2",
    sha256: "faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694",
};

/// Debian's packaging with its patch series: bookworm's security update
/// 1:1.35.0-4+deb12u1, the version its `busybox-static` has.
const DEBIAN: Source = Source {
    name: "busybox_1.35.0-4+deb12u1.debian.tar.xz",
    sha256: "1cacbe095ef4880ea7879933c8e3c5075d1527cd6fbcb626a9b41e5daefd1a46",
};

/// The directory the orig tarball unpacks into.
const TREE: &str = "busybox-1.35.0";

/// What `busybox --help` shows in place of the build date.
const BUILD_TAG: &str = "Debian 1:1.35.0-4+deb12u1, ramstick";

/// The applets init runs itself; the build fails if one is missing.
const INIT_NEEDS: &[&str] = &["sh", "mkswap"];

/// A group of options with the reason they are on.
pub struct Group {
    pub why: &'static str,
    /// Whitespace-separated `NAME` (for `CONFIG_NAME=y`) or `NAME=value`.
    pub options: &'static str,
}

/// Everything on besides `make allnoconfig`'s defaults.
pub const CONFIG: &[Group] = &[
    Group {
        why: "static (the initramfs has no libc); runs its applets by name, without symlinks",
        options:
            "STATIC BUSYBOX FEATURE_PREFER_APPLETS LONG_OPTS SHOW_USAGE FEATURE_VERBOSE_USAGE \
             FEATURE_DEVPTS FEATURE_BUFFERS_USE_MALLOC",
    },
    Group {
        why: "ash, the emergency shell: line editing, history, job control, $((…)), applets",
        options: "SH_IS_ASH SHELL_ASH ASH ASH_OPTIMIZE_FOR_SIZE ASH_INTERNAL_GLOB ASH_BASH_COMPAT \
             ASH_JOB_CONTROL ASH_ALIAS ASH_ECHO ASH_PRINTF ASH_TEST ASH_GETOPTS ASH_CMDCMD \
             FEATURE_SH_MATH FEATURE_SH_READ_FRAC FEATURE_SH_STANDALONE FEATURE_EDITING \
             FEATURE_EDITING_HISTORY=255 FEATURE_TAB_COMPLETION FEATURE_EDITING_FANCY_PROMPT",
    },
    Group {
        why: "the basic file tools, to look around and repair by hand",
        options:
            "BASENAME CAT CHMOD CHOWN CHROOT CP CUT DATE DD DF DIRNAME DU ECHO FEATURE_FANCY_ECHO \
             ENV FALSE HEAD FEATURE_FANCY_HEAD LN LS FEATURE_LS_FILETYPES FEATURE_LS_FOLLOWLINKS \
             FEATURE_LS_RECURSIVE FEATURE_LS_SORTFILES FEATURE_LS_TIMESTAMPS FEATURE_LS_USERNAME \
             FEATURE_LS_COLOR MD5SUM SHA256SUM MKDIR MKNOD MV OD PRINTF PWD READLINK RM RMDIR SEQ \
             SLEEP FEATURE_FANCY_SLEEP SORT STAT FEATURE_STAT_FORMAT SYNC FEATURE_SYNC_FANCY TAIL \
             FEATURE_FANCY_TAIL TEE TEST TEST1 TEST2 TOUCH TR TRUE UNAME UNIQ WC WHICH HEXDUMP \
             FEATURE_HUMAN_READABLE",
    },
    Group {
        why: "disks and boot: init runs `busybox mkswap`; the rest to mount and boot by hand",
        options: "MOUNT FEATURE_MOUNT_FLAGS FEATURE_MOUNT_FSTAB FEATURE_MOUNT_LOOP UMOUNT \
             FEATURE_UMOUNT_ALL LOSETUP MKSWAP SWAPON SWAPOFF BLKID FEATURE_BLKID_TYPE VOLUMEID \
             FEATURE_VOLUMEID_EXT FEATURE_VOLUMEID_FAT FEATURE_VOLUMEID_LINUXSWAP \
             FEATURE_VOLUMEID_LUKS FEATURE_VOLUMEID_SQUASHFS DMESG FEATURE_DMESG_PRETTY \
             SWITCH_ROOT HALT POWEROFF REBOOT",
    },
    Group {
        why: "processes and memory",
        options: "PS FEATURE_PS_WIDE FEATURE_SHOW_THREADS KILL KILLALL FREE UPTIME",
    },
    Group {
        why: "text tools: to search logs and edit configuration files by hand",
        options: "GREP EGREP FGREP FEATURE_GREP_CONTEXT SED AWK FIND FEATURE_FIND_PRINT0 \
             FEATURE_FIND_TYPE FEATURE_FIND_MAXDEPTH FEATURE_FIND_EXEC FEATURE_FIND_SIZE XARGS \
             LESS MORE VI FEATURE_VI_8BIT FEATURE_VI_COLON FEATURE_VI_YANKMARK FEATURE_VI_SEARCH \
             FEATURE_VI_WIN_RESIZE",
    },
    Group {
        why: "kernel modules by hand",
        options: "INSMOD RMMOD LSMOD MODPROBE FEATURE_MODPROBE_BLACKLIST",
    },
    Group {
        why: "archives: to copy files off or onto the stick",
        options:
            "GZIP FEATURE_GZIP_DECOMPRESS GUNZIP ZCAT FEATURE_SEAMLESS_GZ TAR FEATURE_TAR_CREATE \
             CPIO",
    },
    Group {
        why: "the terminal, and `timeout` for commands that may hang",
        options: "STTY CLEAR RESET TIMEOUT",
    },
];

/// `(NAME, value)` of every option of `groups`.
fn options(groups: &[Group]) -> Vec<(&'static str, &'static str)> {
    groups
        .iter()
        .flat_map(|g| g.options.split_whitespace())
        .map(|o| o.split_once('=').unwrap_or((o, "y")))
        .collect()
}

/// `config` (a `.config`) with every line about an option of `groups`
/// replaced by `CONFIG_NAME=value` lines at its end, each group after its
/// reason as a comment.
fn with_options(config: &str, groups: &[Group]) -> String {
    let wanted = options(groups);
    let mentions = |line: &str, name: &str| {
        let set = line.strip_prefix("CONFIG_").and_then(|l| l.split_once('='));
        let unset = line
            .strip_prefix("# CONFIG_")
            .and_then(|l| l.strip_suffix(" is not set"));
        set.map(|(n, _)| n) == Some(name) || unset == Some(name)
    };
    let mut out: String = config
        .lines()
        .filter(|l| !wanted.iter().any(|(name, _)| mentions(l, name)))
        .flat_map(|l| [l, "\n"])
        .collect();
    for group in groups {
        out.push_str(&format!("# ramstick: {}\n", group.why));
        for (name, value) in options(std::slice::from_ref(group)) {
            out.push_str(&format!("CONFIG_{name}={value}\n"));
        }
    }
    out
}

/// Fails naming every option of `wanted` that `config` does not have at its
/// value (a typo, or an option `make oldconfig` dropped for a dependency).
fn check_config(config: &str, wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(name, value)| {
            !config
                .lines()
                .any(|l| l == format!("CONFIG_{name}={value}"))
        })
        .map(|(name, _)| *name)
        .collect();
    ensure!(
        missing.is_empty(),
        "busybox's .config lacks these options after make oldconfig \
         (misspelt, or a dependency is off): {}",
        missing.join(", ")
    );
    Ok(())
}

/// The initramfs's busybox, built unless the cache has it; Debian's
/// `busybox-static` when the pinned source cannot be fetched any more.
pub fn busybox() -> Result<PathBuf> {
    let mut h = Hasher::default();
    h.str(ORIG.sha256);
    h.str(DEBIAN.sha256);
    h.str(BUILD_TAG);
    for (name, value) in options(CONFIG) {
        h.str(name);
        h.str(value);
    }
    let cache = crate::target_dir().join("ramstick/cache");
    let dir = cache.join(format!("busybox-{:016x}", h.finish()));
    let binary = dir.join("busybox");
    if binary.is_file() {
        return Ok(binary);
    }
    deps::ensure(&[
        ("make", "make"),
        ("musl-gcc", "musl-tools"),
        ("bzip2", "bzip2"),
        ("xz", "xz-utils"),
        ("patch", "patch"),
        ("curl", "curl"),
        ("sha256sum", "coreutils"),
    ])?;
    deps::ensure_packages(&["linux-libc-dev"])?;
    // Debian's pool drops a version some time after a newer one replaces
    // it: a stick must still build then, with the bigger busybox.
    let sources = fetch(&ORIG, &cache.join("dl"))
        .and_then(|orig| Ok((orig, fetch(&DEBIAN, &cache.join("dl"))?)));
    let (orig, debian) = match sources {
        Ok(sources) => sources,
        Err(e) => {
            println!(
                "warning: {e:#}\nwarning: the initramfs gets Debian's busybox-static instead \
                 (about 0.4 MB more compressed); pin the current source in xtask/src/busybox.rs"
            );
            return deps::busybox_static();
        }
    };
    let partial = crate::image::unique_partial(&dir);
    deps::remove_if_exists(&partial)?;
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let started = std::time::Instant::now();
    println!("building busybox in {}", partial.display());
    build_in(&partial, &orig, &debian)?;
    println!("busybox built in {:.0?}", started.elapsed());
    if let Err(e) = fs::rename(&partial, &dir) {
        // A concurrent xtask may have finished the same build first.
        deps::remove_if_exists(&partial)?;
        if !binary.is_file() {
            return Err(e).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), dir.display())
            });
        }
    }
    Ok(binary)
}

/// Builds into `out/busybox` (and `out/.config`) from the two sources; the
/// source tree is removed afterwards.
fn build_in(out: &Path, orig: &Path, debian: &Path) -> Result<()> {
    deps::run(deps::cmd("tar").arg("-xjf").arg(orig).arg("-C").arg(out))?;
    let src = out.join(TREE);
    deps::run(deps::cmd("tar").arg("-xJf").arg(debian).arg("-C").arg(&src))?;
    apply_patches(&src)?;
    let log = out.join("build.log");
    make(&src, &log, &["allnoconfig"], None)?;
    let config_path = src.join(".config");
    let wanted = options(CONFIG);
    let config = read(&config_path)?;
    fs::write(&config_path, with_options(&config, CONFIG))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    // oldconfig asks about each option the list made visible: "" (Enter)
    // takes its default, as `yes "" | make oldconfig` does.
    let answers = out.join("oldconfig-answers");
    fs::write(&answers, "\n".repeat(1 << 14))
        .with_context(|| format!("cannot write {}", answers.display()))?;
    make(&src, &log, &["oldconfig"], Some(&answers))?;
    deps::remove_if_exists(&answers)?;
    check_config(&read(&config_path)?, &wanted)?;
    let headers = kernel_headers(&src)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    make(
        &src,
        &log,
        &[
            &format!("-j{jobs}"),
            "CC=musl-gcc",
            &format!("EXTRA_CFLAGS=-I{}", headers.display()),
            &format!("BB_EXTRA_VERSION={BUILD_TAG}"),
        ],
        None,
    )?;
    let built = src.join("busybox");
    build::check_static(&built)?;
    let list = deps::output(Command::new(&built).arg("--list"))?;
    for applet in INIT_NEEDS {
        ensure!(
            list.lines().any(|l| l == *applet),
            "the built busybox has no {applet} applet (init runs it)"
        );
    }
    for name in ["busybox", ".config"] {
        fs::rename(src.join(name), out.join(name))
            .with_context(|| format!("cannot move {name} out of {}", src.display()))?;
    }
    deps::remove_if_exists(&src)
}

/// Applies `debian/patches/series` in order (`patch -p1`).
fn apply_patches(src: &Path) -> Result<()> {
    let series = read(&src.join("debian/patches/series"))?;
    for patch in series_patches(&series) {
        let file = src.join("debian/patches").join(patch);
        let input =
            fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
        deps::run(
            deps::cmd("patch")
                .args(["-p1", "-s", "--no-backup-if-mismatch"])
                .current_dir(src)
                .stdin(input),
        )
        .with_context(|| format!("applying {}", file.display()))?;
    }
    Ok(())
}

/// The patch names of a quilt `series` file (no comments, no blank lines).
fn series_patches(series: &str) -> Vec<&str> {
    series
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// `make target…` in `src` with a fixed environment (no timestamp, no
/// inherited flags) and `stdin` (else none); its output is appended to
/// `log`, named on failure.
fn make(src: &Path, log: &Path, args: &[&str], stdin: Option<&Path>) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut cmd = deps::cmd("make");
    cmd.args(args)
        .current_dir(src)
        .env("KCONFIG_NOTIMESTAMP", "1")
        .env("SOURCE_DATE_EPOCH", "0")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("CFLAGS")
        .env_remove("CPPFLAGS")
        .env_remove("LDFLAGS")
        .stdin(match stdin {
            Some(path) => fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .into(),
            None => Stdio::null(),
        })
        .stdout(file)
        .stderr(err);
    deps::run(&mut cmd).with_context(|| format!("see {}", log.display()))
}

/// A directory of symlinks to the kernel headers Debian installs, which
/// musl-gcc does not search by itself (busybox includes `<linux/…>`).
fn kernel_headers(src: &Path) -> Result<PathBuf> {
    let dir = src.join("kernel-headers");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, target) in [
        ("linux", "/usr/include/linux"),
        ("asm", "/usr/include/x86_64-linux-gnu/asm"),
        ("asm-generic", "/usr/include/asm-generic"),
        ("mtd", "/usr/include/mtd"),
    ] {
        ensure!(
            Path::new(target).is_dir(),
            "{target} is missing (linux-libc-dev)"
        );
        std::os::unix::fs::symlink(target, dir.join(name))
            .with_context(|| format!("cannot link {}", dir.join(name).display()))?;
    }
    Ok(dir)
}

/// `source` in `dir`, downloaded from [`POOL`] unless there; its sha256 is
/// checked either way.
fn fetch(source: &Source, dir: &Path) -> Result<PathBuf> {
    let file = dir.join(source.name);
    if !file.is_file() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let partial = crate::image::unique_partial(&file);
        let url = format!("{POOL}{}", source.name.replace('+', "%2B"));
        println!("downloading {url}");
        deps::run(
            deps::cmd("curl")
                .args(["-fsSL", "--retry", "3", "-o"])
                .arg(&partial)
                .arg(&url),
        )?;
        check_sha256(&partial, source.sha256)?;
        fs::rename(&partial, &file).with_context(|| {
            format!("cannot rename {} to {}", partial.display(), file.display())
        })?;
    }
    check_sha256(&file, source.sha256)?;
    Ok(file)
}

/// Fails unless `file`'s sha256 is `expected`; a wrong download is removed.
fn check_sha256(file: &Path, expected: &str) -> Result<()> {
    let out = deps::output(deps::cmd("sha256sum").arg(file))?;
    let actual = out.split_whitespace().next().unwrap_or("");
    if actual != expected {
        deps::remove_if_exists(file)?;
        bail!(
            "{} has sha256 {actual}, expected {expected} (removed: the next run fetches it again)",
            file.display()
        );
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &[Group] = &[
        Group {
            why: "a",
            options: "ASH FEATURE_EDITING_HISTORY=255",
        },
        Group {
            why: "b",
            options: "LS",
        },
    ];

    #[test]
    fn the_option_list_becomes_config_lines_replacing_the_old_ones() {
        let wanted = options(GROUPS);
        assert_eq!(
            wanted,
            [
                ("ASH", "y"),
                ("FEATURE_EDITING_HISTORY", "255"),
                ("LS", "y")
            ]
        );
        let before = "CONFIG_HAVE_DOT_CONFIG=y\n# CONFIG_ASH is not set\n\
                      CONFIG_FEATURE_EDITING_HISTORY=0\n# CONFIG_LS_X is not set\n\
                      # CONFIG_LSMOD is not set\n";
        assert_eq!(
            with_options(before, GROUPS),
            "CONFIG_HAVE_DOT_CONFIG=y\n# CONFIG_LS_X is not set\n# CONFIG_LSMOD is not set\n\
             # ramstick: a\nCONFIG_ASH=y\nCONFIG_FEATURE_EDITING_HISTORY=255\n\
             # ramstick: b\nCONFIG_LS=y\n"
        );
    }

    #[test]
    fn an_option_missing_after_oldconfig_is_an_error_naming_it() {
        let wanted = options(GROUPS);
        let good = "CONFIG_ASH=y\nCONFIG_FEATURE_EDITING_HISTORY=255\nCONFIG_LS=y\n";
        check_config(good, &wanted).unwrap();
        let dropped = "CONFIG_ASH=y\nCONFIG_FEATURE_EDITING_HISTORY=0\n# CONFIG_LS is not set\n";
        let err = check_config(dropped, &wanted).unwrap_err().to_string();
        assert!(
            err.contains("FEATURE_EDITING_HISTORY, LS") && !err.contains("ASH,"),
            "{err}"
        );
    }

    #[test]
    fn the_series_lists_patches_in_order_without_comments() {
        let series = "# header\n\none.patch\n# two.patch\nthree.diff -p1\n";
        assert_eq!(series_patches(series), ["one.patch", "three.diff"]);
    }

    #[test]
    fn every_option_is_listed_once_and_init_needs_its_applets() {
        let wanted = options(CONFIG);
        let mut names: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let all = names.len();
        names.dedup();
        assert_eq!(names.len(), all, "an option is listed twice");
        for applet in ["ASH", "MKSWAP", "BUSYBOX", "STATIC", "TIMEOUT"] {
            assert!(names.contains(&applet), "{applet}");
        }
    }
}
