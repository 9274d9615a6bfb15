//! switch_root: check the real init can run in the new root (it exists, is
//! executable, its ELF loader or `#!` interpreter is there too), free the
//! initramfs (without crossing into other mounts), move the new root onto /,
//! chroot, exec.

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use ramstick_common::tree::resolve_in_root;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where a real init usually lives, for the "not found" message.
const CANDIDATES: &[&str] = &[
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/sbin/openrc-init",
    "/bin/busybox",
    "/bin/sh",
];

/// The init program inside `newroot`, checked to be runnable there (see
/// [`check_runnable`]), or an error saying what is missing and which
/// candidates are present.
pub fn find_init(newroot: &Path, init: &str) -> Result<PathBuf> {
    let host = match executable_in(newroot, init) {
        Ok(host) => host,
        Err(Missing::NotFound) => bail!(
            "{init} does not exist in the new root. {}",
            candidates_hint(newroot)
        ),
        Err(Missing::NotExecutable) => bail!(
            "{init} exists in the new root but is not an executable file. {}",
            candidates_hint(newroot)
        ),
    };
    check_runnable(newroot, init, &host, 0)
        .map_err(|e| anyhow::anyhow!("{e:#}. {}", candidates_hint(newroot)))?;
    Ok(host)
}

/// "Candidates present: …. Boot with ramstick.init=<one of them>".
fn candidates_hint(newroot: &Path) -> String {
    let found: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|c| resolve_in_root(newroot, Path::new(c)).is_some())
        .collect();
    format!(
        "Candidates present: {}. Boot with ramstick.init=<one of them>",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    )
}

/// Why a program path cannot be executed.
enum Missing {
    NotFound,
    NotExecutable,
}

/// `path` resolved inside `newroot` (symlinks as a chroot sees them) to an
/// executable regular file: its host path.
fn executable_in(newroot: &Path, path: &str) -> std::result::Result<PathBuf, Missing> {
    let host = resolve_in_root(newroot, Path::new(path)).ok_or(Missing::NotFound)?;
    match std::fs::metadata(&host) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(host),
        Ok(_) => Err(Missing::NotExecutable),
        Err(_) => Err(Missing::NotFound),
    }
}

/// How many `#!` interpreters may be chained (the kernel stops after a few).
const MAX_SCRIPT_DEPTH: u32 = 4;
/// How much of a script the kernel reads for its `#!` line (BINPRM_BUF_SIZE).
const SHEBANG_LEN: usize = 256;

/// Whether the kernel could exec `path` (host file `host`) once `newroot`
/// is `/`: an ELF's program interpreter (dynamic loader) and a script's
/// `#!` interpreter must exist there, recursively. Checked before the
/// initramfs is freed, because a failed exec after that leaves no shell.
/// An ELF this parser cannot read (e.g. 32-bit) is let through: only what
/// certainly fails is refused.
pub fn check_runnable(newroot: &Path, path: &str, host: &Path, depth: u32) -> Result<()> {
    let bytes = std::fs::read(host).with_context(|| format!("cannot read {path}"))?;
    if let Some(line) = bytes.strip_prefix(b"#!") {
        let interp = shebang_interpreter(line)
            .with_context(|| format!("{path} starts with #! but names no interpreter"))?;
        if depth >= MAX_SCRIPT_DEPTH {
            bail!("{path}: too many nested #! interpreters");
        }
        let interp_host = match executable_in(newroot, &interp) {
            Ok(h) => h,
            Err(Missing::NotFound) => {
                bail!("{path} is a script for {interp}, which does not exist in the new root")
            }
            Err(Missing::NotExecutable) => bail!(
                "{path} is a script for {interp}, which is not an executable file in the new root"
            ),
        };
        return check_runnable(newroot, &interp, &interp_host, depth + 1);
    }
    if !ramstick_common::elf::is_elf(&bytes) {
        bail!("{path} is neither an ELF program nor a #! script: the kernel cannot execute it");
    }
    let interp = match ramstick_common::elf::interpreter(&bytes) {
        Ok(Some(interp)) => interp,
        Ok(None) => return Ok(()),
        Err(e) => {
            log::debug!("{path}: not checked ({e})");
            return Ok(());
        }
    };
    match executable_in(newroot, &interp) {
        Ok(h) if std::fs::read(&h).is_ok_and(|b| ramstick_common::elf::is_elf(&b)) => Ok(()),
        Ok(_) => bail!(
            "{path} needs the program interpreter {interp}, which is not an ELF program in the new root"
        ),
        Err(Missing::NotFound) => bail!(
            "{path} needs the program interpreter {interp}, which does not exist in the new root"
        ),
        Err(Missing::NotExecutable) => bail!(
            "{path} needs the program interpreter {interp}, which is not an executable file in the new root"
        ),
    }
}

/// The interpreter of a `#!` line (the bytes after `#!`), as the kernel
/// reads it: blanks skipped, then up to a blank or the end of the line.
pub(crate) fn shebang_interpreter(line: &[u8]) -> Option<String> {
    let line = &line[..line.len().min(SHEBANG_LEN - 2)];
    let end = line.iter().position(|&c| c == b'\n').unwrap_or(line.len());
    let text = String::from_utf8_lossy(&line[..end]);
    let interp = text
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t', '\0'])
        .next()?;
    (!interp.is_empty()).then(|| interp.to_string())
}

/// Whether `/` is the initramfs (ramfs or tmpfs) — the only root we may wipe.
fn root_is_initramfs() -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    match statfs("/") {
        Ok(s) => s.filesystem_type() == RAMFS_MAGIC || s.filesystem_type() == TMPFS_MAGIC,
        Err(_) => false,
    }
}

/// Replace the initramfs by `newroot` and exec `init` there. Only returns on error.
pub fn switch_root(newroot: &Path, init: &str) -> Result<Infallible> {
    find_init(newroot, init)?;
    if std::process::id() != 1 || !root_is_initramfs() {
        bail!("refusing to switch root: not PID 1 running from an initramfs");
    }
    std::env::set_current_dir(newroot)
        .with_context(|| format!("cannot chdir to {}", newroot.display()))?;
    match ramstick_common::tree::remove_contents(Path::new("/"), true) {
        Ok(n) => log::debug!("freed the initramfs ({n} entries)"),
        Err(e) => log::warn!("cannot free all of the initramfs: {e}"),
    }
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("cannot move the new root onto /")?;
    nix::unistd::chroot(".").context("cannot chroot into the new root")?;
    std::env::set_current_dir("/").context("cannot chdir to / in the new root")?;
    let prog = CString::new(init).context("init path contains a NUL byte")?;
    log::info!("switching root to {init}");
    let err = nix::unistd::execv(&prog, &[&prog]);
    Err(anyhow::anyhow!("cannot execute {init}: {err:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::TempDir;
    use std::os::unix::fs::symlink;

    /// A dynamic program of the host and its loader (a static ELF itself).
    fn host_dynamic() -> (PathBuf, String) {
        let bin = PathBuf::from("/bin/true");
        let bytes = std::fs::read(&bin).unwrap();
        let interp = ramstick_common::elf::interpreter(&bytes)
            .unwrap()
            .expect("/bin/true is dynamic on the build host");
        (bin, interp)
    }

    fn copy_exec(from: &Path, to: &Path) {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write_exec(to: &Path, text: &str) {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, text).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A new root whose /bin/busybox is a real static ELF (the host's loader).
    fn fixture(name: &str) -> TempDir {
        let d = TempDir::new(&format!("sr-{name}"));
        std::fs::create_dir_all(d.join("sbin")).unwrap();
        let (_, loader) = host_dynamic();
        copy_exec(Path::new(&loader), &d.join("bin/busybox"));
        d
    }

    fn error(d: &Path, init: &str) -> String {
        find_init(d, init)
            .map(|p| format!("unexpectedly runnable: {}", p.display()))
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    #[test]
    fn relative_and_absolute_links_resolve_inside_the_root() {
        let d = fixture("links");
        symlink("../bin/busybox", d.join("sbin/init")).unwrap();
        symlink("/bin/busybox", d.join("sbin/abs")).unwrap();
        symlink("../../../../../bin/busybox", d.join("sbin/deep")).unwrap();
        for p in ["/sbin/init", "/sbin/abs", "/sbin/deep"] {
            assert_eq!(find_init(&d, p).ok(), Some(d.join("bin/busybox")), "{p}");
        }
    }

    #[test]
    fn a_missing_init_lists_candidates() {
        let d = fixture("missing");
        let err = error(&d, "/sbin/init");
        assert!(err.contains("/sbin/init does not exist"), "{err}");
        assert!(err.contains("Candidates present: /bin/busybox"), "{err}");
        assert!(err.contains("ramstick.init="), "{err}");
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let d = fixture("loop");
        symlink("/sbin/b", d.join("sbin/a")).unwrap();
        symlink("/sbin/a", d.join("sbin/b")).unwrap();
        assert!(find_init(&d, "/sbin/a").is_err());
    }

    #[test]
    fn a_non_executable_init_is_refused() {
        let d = fixture("noexec");
        std::fs::write(d.join("sbin/init"), "x").unwrap();
        assert!(error(&d, "/sbin/init").contains("not an executable file"));
    }

    #[test]
    fn a_static_program_runs() {
        let d = fixture("static");
        assert_eq!(
            find_init(&d, "/bin/busybox").ok(),
            Some(d.join("bin/busybox"))
        );
    }

    #[test]
    fn a_dynamic_program_needs_its_loader_inside_the_root() {
        let d = fixture("dynamic");
        let (bin, loader) = host_dynamic();
        copy_exec(&bin, &d.join("sbin/init"));
        // The host has the loader; the new root does not.
        let err = error(&d, "/sbin/init");
        assert!(
            err.contains(&format!(
                "/sbin/init needs the program interpreter {loader}, which does not exist in the new root"
            )),
            "{err}"
        );
        assert!(err.contains("ramstick.init="), "{err}");
        // An absolute symlink to the host's real loader path is resolved
        // inside the root, where its target is missing.
        let real = std::fs::canonicalize(&loader).unwrap();
        std::fs::create_dir_all(d.join(loader.trim_start_matches('/')).parent().unwrap()).unwrap();
        symlink(&real, d.join(loader.trim_start_matches('/'))).unwrap();
        assert!(error(&d, "/sbin/init").contains("does not exist in the new root"));
        // With the target in the root (through a second absolute link,
        // resolved inside the root again) it runs.
        let inside = d.join(real.strip_prefix("/").unwrap());
        let moved = d.join("usr/lib/ld-real.so");
        copy_exec(Path::new(&loader), &moved);
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        symlink("/usr/lib/ld-real.so", &inside).unwrap();
        assert_eq!(find_init(&d, "/sbin/init").ok(), Some(d.join("sbin/init")));
    }

    #[test]
    fn a_script_needs_its_interpreter_inside_the_root() {
        let d = fixture("script");
        write_exec(&d.join("sbin/init"), "#!/usr/bin/python3 -u\nprint()\n");
        let err = error(&d, "/sbin/init");
        assert!(
            err.contains(
                "/sbin/init is a script for /usr/bin/python3, which does not exist in the new root"
            ),
            "{err}"
        );
        // Blanks after #!, an argument, the interpreter through a symlink.
        write_exec(&d.join("sbin/init"), "#! \t/bin/sh -e\nexec true\n");
        std::fs::create_dir_all(d.join("bin")).unwrap();
        symlink("busybox", d.join("bin/sh")).unwrap();
        assert_eq!(find_init(&d, "/sbin/init").ok(), Some(d.join("sbin/init")));
        // A script for a script for a dynamic program without its loader.
        let (bin, loader) = host_dynamic();
        copy_exec(&bin, &d.join("usr/bin/dyn"));
        write_exec(&d.join("usr/bin/wrapper"), "#!/usr/bin/dyn\n");
        write_exec(&d.join("sbin/init"), "#!/usr/bin/wrapper\n");
        let err = error(&d, "/sbin/init");
        assert!(
            err.contains(&format!(
                "/usr/bin/dyn needs the program interpreter {loader}"
            )),
            "{err}"
        );
        // A script calling itself stops.
        write_exec(&d.join("sbin/init"), "#!/sbin/init\n");
        assert!(error(&d, "/sbin/init").contains("too many nested"));
        // No interpreter named; an interpreter that is not executable.
        write_exec(&d.join("sbin/init"), "#!  \n");
        assert!(error(&d, "/sbin/init").contains("names no interpreter"));
        std::fs::write(d.join("usr/bin/plain"), "#!/bin/sh\n").unwrap();
        write_exec(&d.join("sbin/init"), "#!/usr/bin/plain\n");
        assert!(error(&d, "/sbin/init").contains("/usr/bin/plain, which is not an executable file"));
    }

    #[test]
    fn neither_elf_nor_script_is_refused() {
        let d = fixture("text");
        write_exec(&d.join("sbin/init"), "echo hi\n");
        assert!(error(&d, "/sbin/init").contains("neither an ELF program nor a #! script"));
    }

    #[test]
    fn shebang_parsing() {
        assert_eq!(
            shebang_interpreter(b"/bin/sh\n").as_deref(),
            Some("/bin/sh")
        );
        assert_eq!(
            shebang_interpreter(b" /bin/sh -e\n").as_deref(),
            Some("/bin/sh")
        );
        assert_eq!(shebang_interpreter(b"/bin/sh").as_deref(), Some("/bin/sh"));
        assert_eq!(shebang_interpreter(b"\t\n/bin/sh"), None);
        assert_eq!(shebang_interpreter(b""), None);
    }
}
