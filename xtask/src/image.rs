//! A bootable GPT disk image from a rootfs tree, built without root:
//!
//! * partition 1 `ESP`: FAT32 (`mkfs.vfat` + mtools) with a standalone GRUB
//!   as `EFI/BOOT/BOOTX64.EFI`, `/vmlinuz-<kver>`, `/initramfs-<kver>.img`,
//!   the boot menu record `/grub/ramstick-menu.json` with `/grub/grub.cfg`
//!   made from it (see [`ramstick_common::bootmenu`]), and the
//!   `/ramstick-esp.id` marker GRUB searches for;
//! * partition 2 `RAMSTICK`: ext4 (`mkfs.ext4 -d`) holding
//!   `rootfs.squashfs` (the tree without kernel modules, firmware and
//!   `boot/`, plus the saver hook for its init system and the other files
//!   of [`crate::hooks`], which the tree itself never gets),
//!   `modules-<kver>.squashfs` (the content of
//!   `lib/modules/<kver>`), `firmware.squashfs` (the content of
//!   `lib/firmware`) and an empty `user/`; everything root:root 0644/0755
//!   but `user/` (uid 1000), whoever builds (see [`crate::owners`]), and
//!   `errors=remount-ro` in the superblock.
//!
//! With `--luks-passphrase-file` partition 2 is a LUKS2 container (label
//! `RAMSTICK`, argon2id) holding that ext4: the ext4 is made 16 MiB smaller
//! than the partition and `cryptsetup reencrypt --encrypt
//! --reduce-device-size 16M` encrypts the file in place, in user space (no
//! device-mapper, no root). The initramfs then carries the unlock program
//! (see [`initramfs::Luks`]); init finds the container by its label.
//!
//! The partition table is written by `sfdisk` on the image file and the two
//! filesystems are copied in at their offsets. Everything is built in a
//! scratch directory under `target/` and `<out>.partial`; only a complete
//! image is renamed to `out`.

use crate::build::{self, Binaries};
use crate::cache::Hasher;
use crate::deps;
use crate::hooks::{self, Saver};
use crate::initramfs::{self, partial_path};
use crate::kernel::{self, Kernel};
use crate::{owners, rootfs};
use anyhow::{bail, Context, Result};
use ramstick_common::bootmenu::{self, Menu};
use ramstick_common::tree::resolve_in_root;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const MIB: u64 = 1 << 20;
/// The smallest ESP (FAT32 needs ≥ 33 MiB; 64 leaves room for kernels).
const ESP_MIN: u64 = 64 * MIB;
/// Space before the first partition and after the last (GPT backup).
pub(crate) const GPT_GAP: u64 = MIB;
const GRUB_STUB: &str = include_str!("../../grub/stub.cfg");
const GRUB_MODULES: &str = "part_gpt fat ext2 search search_fs_file search_label normal linux \
                            serial terminal echo test configfile all_video gfxterm";
const GRUB_DIR: &str = "/usr/lib/grub/x86_64-efi";
use ramstick_common::bootmenu::ESP_LABEL;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

const TOOLS: &[(&str, &str)] = &[
    ("mksquashfs", "squashfs-tools"),
    ("mkfs.vfat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("grub-mkstandalone", "grub-common"),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The root filesystem tree (needs sbin/init).
    #[arg(long)]
    pub rootfs: PathBuf,
    /// The disk image to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Total image size, e.g. 512M or 2G (default: just what is needed).
    #[arg(long)]
    pub size: Option<String>,
    /// Encrypt the persist partition (LUKS2) with the passphrase in this
    /// file (one trailing newline is not part of it).
    #[arg(long)]
    pub luks_passphrase_file: Option<PathBuf>,
    /// Also unlock with this key file, carried in the initramfs at
    /// /etc/ramstick/luks.key (whoever can read the ESP can read it).
    #[arg(long, requires = "luks_passphrase_file")]
    pub luks_keyfile_in_initramfs: Option<PathBuf>,
    /// argon2id memory cost of the key slots in KiB.
    #[arg(long, default_value_t = LUKS_TEST_MEMORY_KIB, requires = "luks_passphrase_file")]
    pub luks_pbkdf_memory: u32,
    /// argon2id time cost (passes) of the key slots; ignored with --luks-iter-time.
    #[arg(long, default_value_t = LUKS_TEST_ITERATIONS, requires = "luks_passphrase_file")]
    pub luks_pbkdf_iterations: u32,
    /// Let cryptsetup benchmark this machine for a key derivation of this
    /// many ms instead of a fixed time cost (e.g. 2000 for a real stick).
    #[arg(long, requires = "luks_passphrase_file")]
    pub luks_iter_time: Option<u32>,
    /// Build the stick although nothing will save its sessions: no saver
    /// hook is added (e.g. a tree whose init system is not recognised);
    /// every boot says so.
    #[arg(long)]
    pub no_saver: bool,
    #[command(flatten)]
    pub kernel: crate::KernelArgs,
}

/// The default argon2id memory cost (KiB): small, so that unlocking in QEMU
/// without KVM takes about a second. A real stick should use more (README).
pub const LUKS_TEST_MEMORY_KIB: u32 = 16 * 1024;
/// The default argon2id time cost (passes), see [`LUKS_TEST_MEMORY_KIB`].
pub const LUKS_TEST_ITERATIONS: u32 = 4;
/// The room the LUKS2 header takes at the start of the partition.
const LUKS_HEADER: u64 = 16 * MIB;

/// How to encrypt the persist partition.
#[derive(Debug, Clone)]
pub struct LuksSpec {
    /// The passphrase (without a trailing newline).
    pub passphrase_file: PathBuf,
    /// A second key slot opened by this file, which the initramfs carries.
    pub keyfile_in_initramfs: Option<PathBuf>,
    pub pbkdf_memory_kib: u32,
    /// `None`: `iterations` passes; `Some(ms)`: cryptsetup's benchmark.
    pub iter_time_ms: Option<u32>,
    pub iterations: u32,
    /// The glibc unlock program (see [`build::unlock_binary`]).
    pub unlock: PathBuf,
}

/// Everything [`build`] needs (the e2e harness fills it directly).
#[derive(Debug, Clone)]
pub struct Spec {
    pub rootfs: PathBuf,
    pub out: PathBuf,
    /// Total size in bytes (rounded down to MiB); `None`: what is needed.
    pub size: Option<u64>,
    /// Used unless the rootfs ships its own kernel (`boot/vmlinuz-<kver>`).
    pub kernel: Kernel,
    pub bins: Binaries,
    /// Appended to every GRUB entry's `linux` line.
    pub extra_cmdline: String,
    /// Host file → name in the persist filesystem (e.g. an `upperfs.squashfs`).
    pub persist_extra: Vec<(PathBuf, String)>,
    /// Names to leave out of the persist filesystem (e.g. `rootfs.squashfs`).
    pub omit: Vec<String>,
}

/// `cargo xtask image`.
pub fn run(a: &Args) -> Result<()> {
    let luks = match &a.luks_passphrase_file {
        None => None,
        Some(file) => Some(LuksSpec {
            passphrase_file: file.clone(),
            keyfile_in_initramfs: a.luks_keyfile_in_initramfs.clone(),
            pbkdf_memory_kib: a.luks_pbkdf_memory,
            iter_time_ms: a.luks_iter_time,
            iterations: a.luks_pbkdf_iterations,
            unlock: build::unlock_binary()?,
        }),
    };
    let size = a.size.as_deref().map(parse_size).transpose()?;
    check_rootfs(&a.rootfs)?;
    let kernel = match kernel::from_rootfs(&a.rootfs) {
        Some(k) => {
            if a.kernel.kernel.is_some() {
                println!(
                    "note: {} ships kernel {}; it is used instead of --kernel",
                    a.rootfs.display(),
                    k.version
                );
            }
            k
        }
        None => kernel::resolve(&a.kernel)?,
    };
    let bins = build::static_binaries()?;
    let spec = Spec {
        rootfs: a.rootfs.clone(),
        out: a.out.clone(),
        size,
        kernel,
        bins,
        extra_cmdline: String::new(),
        persist_extra: Vec::new(),
        omit: Vec::new(),
    };
    let saver = if a.no_saver {
        Saver::None
    } else {
        Saver::Required
    };
    build_full(&spec, luks.as_ref(), saver)?;
    println!("disk image: {}", a.out.display());
    Ok(())
}

/// A size like `512M` or `2G`: an integer with an optional K/M/G/T suffix
/// (powers of 1024, optionally followed by `iB` or `B`); plain bytes without.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}: expected e.g. 512M or 2G"))?;
    let unit = suffix.trim_end_matches("iB").trim_end_matches('B');
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!("invalid size {text:?}: unknown unit {suffix:?} (use K, M, G or T)"),
    };
    number
        .checked_mul(1 << shift)
        .with_context(|| format!("size {text:?} is too large"))
}

/// The rootfs must be a directory with an `sbin/init` (possibly a symlink,
/// resolved inside the tree).
pub fn check_rootfs(rootfs: &Path) -> Result<()> {
    let meta = rootfs
        .metadata()
        .with_context(|| format!("rootfs {} does not exist", rootfs.display()))?;
    if !meta.is_dir() {
        bail!("rootfs {} is not a directory", rootfs.display());
    }
    let init = resolve_in_root(rootfs, Path::new("sbin/init"));
    if !init.is_some_and(|p| p.is_file()) {
        bail!(
            "rootfs {} has no sbin/init (or it is a dangling symlink): not a root filesystem",
            rootfs.display()
        );
    }
    Ok(())
}

/// Removes the scratch directory, and the partial image unless committed.
struct Scratch {
    dir: PathBuf,
    partial: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort cleanup; errors here cannot be reported usefully.
        let _ = deps::remove_if_exists(&self.dir);
        let _ = deps::remove_if_exists(&self.partial);
        // The parent `tmp/` goes too once no other build uses it.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Builds the disk image described by `spec`.
pub fn build(spec: &Spec) -> Result<()> {
    build_encrypted(spec, None)
}

/// Builds the disk image described by `spec`, with the persist partition
/// encrypted when `luks` is given.
pub fn build_encrypted(spec: &Spec, luks: Option<&LuksSpec>) -> Result<()> {
    build_full(spec, luks, Saver::Required)
}

/// [`build_encrypted`], with the saver hook as `saver` says.
pub fn build_full(spec: &Spec, luks: Option<&LuksSpec>, saver: Saver) -> Result<()> {
    check_rootfs(&spec.rootfs)?;
    let hooks = hooks::plan(&spec.rootfs, saver)?;
    for line in hooks.describe() {
        println!("rootfs.squashfs: {line}");
    }
    if luks.is_some() {
        deps::ensure(&[("cryptsetup", "cryptsetup-bin")])?;
    }
    deps::ensure(TOOLS)?;
    deps::ensure_files(&[(GRUB_DIR, "grub-efi-amd64-bin")])?;
    let kernel = kernel::from_rootfs(&spec.rootfs).unwrap_or_else(|| spec.kernel.clone());
    let name = spec
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--out has no file name")?;
    let scratch = Scratch {
        dir: crate::target_dir()
            .join("ramstick/tmp")
            .join(format!("{name}-{}", std::process::id())),
        partial: partial_path(&spec.out),
    };
    deps::remove_if_exists(&scratch.dir)?;
    fs::create_dir_all(&scratch.dir)
        .with_context(|| format!("cannot create {}", scratch.dir.display()))?;
    if let Some(parent) = spec.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let work = &scratch.dir;

    let initrd = work.join("initramfs.img");
    let initramfs_luks = luks.map(|l| initramfs::Luks {
        unlock: l.unlock.clone(),
        keyfile: l.keyfile_in_initramfs.clone(),
    });
    initramfs::build_with(
        &spec.bins,
        &kernel.modules_dir,
        &kernel.version,
        &initrd,
        initramfs_luks.as_ref(),
    )?;
    let persist = work.join("persist");
    stage_persist(spec, &kernel, &hooks, work, &persist)?;
    let esp = work.join("esp.img");
    let mut cmdline = spec.extra_cmdline.clone();
    if luks.is_some_and(|l| l.keyfile_in_initramfs.is_some()) {
        cmdline = format!(
            "ramstick.luks.keyfile=/{} {cmdline}",
            initramfs::KEYFILE_IN_ARCHIVE
        );
    }
    let esp_size = make_esp(&esp, work, &kernel, &initrd, &cmdline)?;

    let header = if luks.is_some() { LUKS_HEADER } else { 0 };
    let persist_min = round_up_mib(dir_size(&persist)? * 13 / 10) + 64 * MIB + header;
    let needed = GPT_GAP + esp_size + persist_min + GPT_GAP;
    let total = match spec.size {
        None => needed,
        Some(given) if given / MIB * MIB < needed => bail!(
            "image size {} MiB is too small: this rootfs needs at least {} MiB",
            given / MIB,
            needed / MIB
        ),
        Some(given) => given / MIB * MIB,
    };
    let persist_size = total - 2 * GPT_GAP - esp_size;
    let ext4 = work.join("persist.img");
    make_persist_ext4(&ext4, persist_size - header, &persist)?;
    if let Some(luks) = luks {
        encrypt(&ext4, persist_size, luks, work)?;
    }

    let layout = Layout {
        total,
        esp_size,
        persist_size,
    };
    write_disk(&scratch.partial, &layout, &esp, &ext4)?;
    fs::rename(&scratch.partial, &spec.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            scratch.partial.display(),
            spec.out.display()
        )
    })?;
    println!(
        "{}: {} MiB (ESP {} MiB, RAMSTICK {} MiB), kernel {}",
        spec.out.display(),
        total / MIB,
        esp_size / MIB,
        persist_size / MIB,
        kernel.version
    );
    Ok(())
}

pub(crate) fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

/// Total size of the regular files below `dir`.
pub(crate) fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The persist filesystem's content: the squashfs images, `user/` and the
/// extra files, minus `spec.omit`.
fn stage_persist(
    spec: &Spec,
    kernel: &Kernel,
    hooks: &hooks::Plan,
    work: &Path,
    persist: &Path,
) -> Result<()> {
    fs::create_dir_all(persist).with_context(|| format!("cannot create {}", persist.display()))?;
    let wanted = |name: &str| !spec.omit.iter().any(|o| o == name);
    let rootfs = &spec.rootfs;
    if wanted("rootfs.squashfs") {
        let modules_rel = resolve_in_root(rootfs, Path::new("lib/modules"))
            .and_then(|p| p.strip_prefix(rootfs).ok().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("lib/modules"));
        // The empty mountpoint for the modules image, whatever the tree has there.
        let pseudo = format!("{}/{} d 755 0 0", modules_rel.display(), kernel.version);
        let (hook_files, replaced) = hooks.mksquashfs_args(work)?;
        let mut options = vec!["-p".to_string(), pseudo];
        for p in hook_files {
            options.extend(["-p".to_string(), p]);
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let mut excludes = vec![rootfs::MARKER.to_string()];
        excludes.extend(replaced);
        for dir in [
            "lib/modules",
            "lib/firmware",
            "usr/lib/modules",
            "usr/lib/firmware",
            "boot",
        ] {
            excludes.push(format!("{dir}/*"));
        }
        squashfs(
            rootfs,
            &persist.join("rootfs.squashfs"),
            &options,
            &excludes,
        )?;
    }
    let modules_image = format!("modules-{}.squashfs", kernel.version);
    if wanted(&modules_image) {
        let cached = modules_squashfs(kernel)?;
        let dest = persist.join(&modules_image);
        if fs::hard_link(&cached, &dest).is_err() {
            fs::copy(&cached, &dest).with_context(|| {
                format!("cannot copy {} to {}", cached.display(), dest.display())
            })?;
        }
    }
    if wanted("firmware.squashfs") {
        let firmware = resolve_in_root(rootfs, Path::new("lib/firmware"))
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| work.join("empty"));
        fs::create_dir_all(work.join("empty")).context("cannot create the empty firmware dir")?;
        squashfs(&firmware, &persist.join("firmware.squashfs"), &[], &[])?;
    }
    if wanted("user") {
        let user = persist.join("user");
        // Its owner on the stick is set by make_persist_ext4 (crate::owners).
        fs::create_dir_all(&user).with_context(|| format!("cannot create {}", user.display()))?;
    }
    for (host, name) in &spec.persist_extra {
        if !wanted(name) {
            continue;
        }
        let dest = persist.join(name);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(host, &dest)
            .with_context(|| format!("cannot copy {} to {}", host.display(), dest.display()))?;
    }
    Ok(())
}

/// `modules-<kver>.squashfs` for `kernel`, cached in `target/ramstick/cache/`
/// (keyed by version, modules.dep and the squashfs options): it is the
/// biggest image and the same for every disk built with that kernel.
fn modules_squashfs(kernel: &Kernel) -> Result<PathBuf> {
    let dep_path = kernel.modules_dir.join("modules.dep");
    let dep = fs::read(&dep_path).with_context(|| format!("cannot read {}", dep_path.display()))?;
    let mut h = Hasher::default();
    h.field(&dep);
    h.field(kernel.modules_dir.as_os_str().as_encoded_bytes());
    h.str(&SQUASHFS_OPTIONS.join(" "));
    h.field(&[u8::from(deps::is_root())]);
    let hash = h.finish();
    let dir = crate::target_dir().join("ramstick/cache");
    let image = dir.join(format!("modules-{}-{hash:016x}.squashfs", kernel.version));
    if image.is_file() {
        return Ok(image);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = unique_partial(&image);
    squashfs(&kernel.modules_dir, &partial, &[], &[])?;
    fs::rename(&partial, &image)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), image.display()))?;
    Ok(image)
}

/// `<path>.partial-<pid>`: a temporary name no concurrent xtask shares.
fn unique_partial(path: &Path) -> PathBuf {
    let mut name = partial_path(path).into_os_string();
    name.push(format!("-{}", std::process::id()));
    PathBuf::from(name)
}

/// zstd at a moderate level: level 15 (the default) takes 8× longer on the
/// kernel modules for 15% less size.
const SQUASHFS_OPTIONS: &[&str] = &[
    "-comp",
    "zstd",
    "-Xcompression-level",
    "9",
    "-noappend",
    "-quiet",
    "-no-progress",
];

/// `mksquashfs src out` with [`SQUASHFS_OPTIONS`], extra options and `-e` excludes.
fn squashfs(src: &Path, out: &Path, extra: &[&str], excludes: &[String]) -> Result<()> {
    let mut cmd = deps::cmd("mksquashfs");
    cmd.arg(src).arg(out).args(SQUASHFS_OPTIONS).args(extra);
    if !deps::is_root() {
        cmd.arg("-all-root");
    }
    if !excludes.is_empty() {
        cmd.args(["-wildcards", "-e"]).args(excludes);
    }
    deps::run(&mut cmd)
}

/// Builds the FAT32 ESP image at `esp`; returns its size.
pub(crate) fn make_esp(
    esp: &Path,
    work: &Path,
    kernel: &Kernel,
    initrd: &Path,
    extra: &str,
) -> Result<u64> {
    let grub = grub_efi()?;
    let menu = Menu::new(&kernel.version, extra)?;
    let cfg = work.join("grub.cfg");
    fs::write(&cfg, menu.render()).with_context(|| format!("cannot write {}", cfg.display()))?;
    let record = work.join("ramstick-menu.json");
    fs::write(&record, menu.to_json())
        .with_context(|| format!("cannot write {}", record.display()))?;
    let id = work.join(bootmenu::ESP_ID);
    fs::write(&id, "ramstick ESP\n").with_context(|| format!("cannot write {}", id.display()))?;
    let on_esp = |name: &str| format!("::/{name}");
    let files: [(&Path, String); 6] = [
        (&grub, on_esp("EFI/BOOT/BOOTX64.EFI")),
        (&cfg, on_esp(bootmenu::GRUB_CFG)),
        (&record, on_esp(bootmenu::MENU_RECORD)),
        (&id, on_esp(bootmenu::ESP_ID)),
        (&kernel.vmlinuz, on_esp(&bootmenu::vmlinuz(&kernel.version))),
        (initrd, on_esp(&bootmenu::initramfs(&kernel.version))),
    ];
    let mut content = 0;
    for (src, _) in &files {
        content += src
            .metadata()
            .with_context(|| format!("cannot stat {}", src.display()))?
            .len();
    }
    let size = ESP_MIN.max(round_up_mib(content * 5 / 4 + 16 * MIB));
    File::create(esp)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot create {}", esp.display()))?;
    deps::run(
        deps::cmd("mkfs.vfat")
            .args(["-F", "32", "-n", ESP_LABEL])
            .arg(esp)
            .stdout(std::process::Stdio::null()),
    )?;
    deps::run(
        deps::cmd("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp)
            .args(["::/EFI", "::/EFI/BOOT", "::/grub"]),
    )?;
    for (src, dest) in files {
        deps::run(
            deps::cmd("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(esp)
                .arg(src)
                .arg(dest),
        )?;
    }
    Ok(size)
}

/// The standalone GRUB EFI binary with `grub/stub.cfg` embedded, cached in
/// `target/grub/` by a hash of its inputs (stub, modules, GRUB build).
fn grub_efi() -> Result<PathBuf> {
    let mut h = Hasher::default();
    h.str(GRUB_STUB);
    h.str(GRUB_MODULES);
    for file in ["kernel.img", "moddep.lst"] {
        h.file(&Path::new(GRUB_DIR).join(file))?;
    }
    let hash = h.finish();
    let dir = crate::target_dir().join("grub");
    let efi = dir.join(format!("bootx64-{hash:016x}.efi"));
    if efi.is_file() {
        return Ok(efi);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stub = dir.join(format!("stub-{}.cfg", std::process::id()));
    fs::write(&stub, GRUB_STUB).with_context(|| format!("cannot write {}", stub.display()))?;
    let partial = unique_partial(&efi);
    let result = deps::run(
        deps::cmd("grub-mkstandalone")
            .args(["-O", "x86_64-efi", "--locales=", "--themes=", "--fonts="])
            .arg(format!("--modules={GRUB_MODULES}"))
            .arg("-o")
            .arg(&partial)
            .arg(format!("boot/grub/grub.cfg={}", stub.display())),
    );
    // Best effort: a leftover stub file is harmless.
    let _ = fs::remove_file(&stub);
    result?;
    fs::rename(&partial, &efi)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), efi.display()))?;
    Ok(efi)
}

/// `mkfs.ext4 -d content` into a new `size`-byte image file (owners as in `content`).
pub(crate) fn make_ext4(image: &Path, size: u64, content: &Path) -> Result<()> {
    mkfs_ext4(image, size, content, &[])
}

/// The stick's data filesystem: [`make_ext4`] with `errors=remount-ro` in
/// the superblock (an error found while running stops writes instead of
/// spreading damage; the kernel's default is to go on) and every owner and
/// mode set by [`owners::normalize`], whoever runs the build.
pub(crate) fn make_persist_ext4(image: &Path, size: u64, content: &Path) -> Result<()> {
    mkfs_ext4(
        image,
        size,
        content,
        &["-e", "remount-ro", "-E", "root_owner=0:0"],
    )?;
    owners::normalize(image, content)
}

fn mkfs_ext4(image: &Path, size: u64, content: &Path, extra: &[&str]) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot create {}", image.display()))?;
    deps::run(
        deps::cmd("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-L", "RAMSTICK"])
            .args(extra)
            .arg("-d")
            .arg(content)
            .arg(image),
    )
}

/// Encrypts the ext4 image file `image` in place into a LUKS2 container of
/// `size` bytes (the file grows to it: the header takes the room the ext4
/// left free), with the label `RAMSTICK` that init's auto-detection matches.
fn encrypt(image: &Path, size: u64, luks: &LuksSpec, work: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = fs::read(&luks.passphrase_file)
        .with_context(|| format!("cannot read {}", luks.passphrase_file.display()))?;
    let passphrase = strip_newline(&text);
    if passphrase.is_empty() {
        bail!(
            "the passphrase file {} is empty",
            luks.passphrase_file.display()
        );
    }
    // cryptsetup takes a key file byte for byte: write the passphrase as typed.
    let key = work.join("luks-passphrase");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| std::io::Write::write_all(&mut f, passphrase))
        .with_context(|| format!("cannot write {}", key.display()))?;
    File::options()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("cannot grow {}", image.display()))?;
    let cost = pbkdf_args(luks);
    let result = deps::run(
        deps::cmd("cryptsetup")
            .args(["reencrypt", "--encrypt", "--type", "luks2", "--batch-mode"])
            .args(["--reduce-device-size", &format!("{}M", LUKS_HEADER / MIB)])
            .args(["--label", "RAMSTICK", "--key-file"])
            .arg(&key)
            .args(&cost)
            .arg(image),
    )
    .and_then(|()| match &luks.keyfile_in_initramfs {
        None => Ok(()),
        Some(keyfile) => deps::run(
            deps::cmd("cryptsetup")
                .args(["luksAddKey", "--batch-mode", "--key-file"])
                .arg(&key)
                .args(&cost)
                .arg(image)
                .arg(keyfile),
        ),
    });
    fs::remove_file(&key).with_context(|| format!("cannot remove {}", key.display()))?;
    result.with_context(|| format!("cannot encrypt {}", image.display()))
}

/// `text` without one trailing `\n` or `\r\n`.
fn strip_newline(text: &[u8]) -> &[u8] {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.strip_suffix(b"\r").unwrap_or(text)
}

/// cryptsetup's key-slot cost options for `luks`.
fn pbkdf_args(luks: &LuksSpec) -> Vec<String> {
    let mut args = vec![
        "--pbkdf".to_string(),
        "argon2id".to_string(),
        "--pbkdf-memory".to_string(),
        luks.pbkdf_memory_kib.to_string(),
        "--pbkdf-parallel".to_string(),
        "1".to_string(),
    ];
    match luks.iter_time_ms {
        Some(ms) => args.extend(["--iter-time".to_string(), ms.to_string()]),
        None => args.extend([
            "--pbkdf-force-iterations".to_string(),
            luks.iterations.to_string(),
        ]),
    }
    args
}

/// Partition sizes in bytes (all MiB multiples).
pub(crate) struct Layout {
    pub(crate) total: u64,
    pub(crate) esp_size: u64,
    pub(crate) persist_size: u64,
}

impl Layout {
    fn esp_offset(&self) -> u64 {
        GPT_GAP
    }

    fn persist_offset(&self) -> u64 {
        GPT_GAP + self.esp_size
    }

    /// The sfdisk script for this layout.
    fn sfdisk_script(&self) -> String {
        let s = |bytes: u64| bytes / 512;
        format!(
            "label: gpt\nunit: sectors\nfirst-lba: {}\n\
             start={}, size={}, type={ESP_TYPE}, name=\"ESP\"\n\
             start={}, size={}, type={LINUX_TYPE}, name=\"RAMSTICK\"\n",
            s(GPT_GAP),
            s(self.esp_offset()),
            s(self.esp_size),
            s(self.persist_offset()),
            s(self.persist_size),
        )
    }
}

/// Creates the GPT disk `path` and copies the filesystems in.
pub(crate) fn write_disk(path: &Path, layout: &Layout, esp: &Path, ext4: &Path) -> Result<()> {
    let disk = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    disk.set_len(layout.total)
        .with_context(|| format!("cannot size {}", path.display()))?;
    deps::run_with_input(
        deps::cmd("sfdisk")
            .args([
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                "--wipe",
                "never",
            ])
            .arg(path),
        &layout.sfdisk_script(),
    )?;
    copy_at(&disk, layout.esp_offset(), esp)?;
    copy_at(&disk, layout.persist_offset(), ext4)?;
    disk.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Copies `src` into `disk` at `offset`, skipping all-zero MiB blocks (the
/// disk file is sparse and already zero there).
fn copy_at(disk: &File, offset: u64, src: &Path) -> Result<()> {
    let mut input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input
                .read(&mut buf[filled..])
                .with_context(|| format!("cannot read {}", src.display()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(());
        }
        let chunk = &buf[..filled];
        if chunk.iter().any(|&b| b != 0) {
            disk.write_all_at(chunk, pos)
                .context("cannot write the disk image")?;
        }
        pos += filled as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks_options() {
        assert_eq!(strip_newline(b"secret\n"), b"secret");
        assert_eq!(strip_newline(b"secret\r\n"), b"secret");
        assert_eq!(strip_newline(b"secret\n\n"), b"secret\n");
        assert_eq!(strip_newline(b"secret"), b"secret");
        let mut luks = LuksSpec {
            passphrase_file: PathBuf::from("p"),
            keyfile_in_initramfs: None,
            pbkdf_memory_kib: 1024,
            iter_time_ms: None,
            iterations: 4,
            unlock: PathBuf::from("u"),
        };
        assert_eq!(
            pbkdf_args(&luks).join(" "),
            "--pbkdf argon2id --pbkdf-memory 1024 --pbkdf-parallel 1 --pbkdf-force-iterations 4"
        );
        luks.iter_time_ms = Some(2000);
        assert!(pbkdf_args(&luks)
            .join(" ")
            .ends_with("--pbkdf-parallel 1 --iter-time 2000"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_size("2G").unwrap(), 2048 * MIB);
        assert_eq!(parse_size("2GiB").unwrap(), 2048 * MIB);
        assert_eq!(parse_size("64k").unwrap(), 64 * 1024);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12X").unwrap_err().to_string().contains("12X"));
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn sfdisk_script_is_mib_aligned() {
        let layout = Layout {
            total: 200 * MIB,
            esp_size: 64 * MIB,
            persist_size: 134 * MIB,
        };
        assert_eq!(
            layout.sfdisk_script(),
            "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
             start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\n\
             start=133120, size=274432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"RAMSTICK\"\n"
        );
    }

    #[test]
    fn rootfs_checks_name_the_path() {
        let dir = std::env::temp_dir().join(format!("ramstick-imgroot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let err = check_rootfs(&dir).unwrap_err().to_string();
        assert!(err.contains(&dir.display().to_string()) && err.contains("does not exist"));
        fs::create_dir_all(dir.join("bin")).unwrap();
        let err = check_rootfs(&dir).unwrap_err().to_string();
        assert!(err.contains("no sbin/init"), "{err}");
        fs::create_dir_all(dir.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.join("sbin/init")).unwrap();
        // Dangling inside the tree, even if the host has /bin/busybox.
        assert!(check_rootfs(&dir).is_err());
        fs::write(dir.join("bin/busybox"), "").unwrap();
        check_rootfs(&dir).unwrap();
        let file = dir.join("bin/busybox");
        assert!(check_rootfs(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copy_at_writes_at_offset_and_keeps_holes() {
        let dir = std::env::temp_dir().join(format!("ramstick-copyat-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src");
        let mut data = vec![0u8; 3 * MIB as usize + 10];
        data[5] = 1;
        data[3 * MIB as usize + 9] = 2;
        fs::write(&src, &data).unwrap();
        let disk_path = dir.join("disk");
        let disk = File::create(&disk_path).unwrap();
        disk.set_len(8 * MIB).unwrap();
        copy_at(&disk, MIB, &src).unwrap();
        let out = fs::read(&disk_path).unwrap();
        assert_eq!(&out[MIB as usize..MIB as usize + data.len()], &data[..]);
        assert!(out[..MIB as usize].iter().all(|&b| b == 0));
        fs::remove_dir_all(&dir).unwrap();
    }
}
