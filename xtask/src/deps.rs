//! Host prerequisites: find the tools xtask runs, install the Debian
//! packages that provide missing ones (as root) or say which `sudo apt-get`
//! line to run, fetch `.deb` contents without installing them, and run
//! commands with errors that name them.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// Directories searched besides `$PATH` (non-root PATHs often lack sbin).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The full path of `cmd` on `$PATH`, `/usr/sbin` or `/sbin`.
pub fn find_command(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(cmd))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A [`Command`] for `program`, resolved through [`find_command`] so that
/// sbin tools work for non-root users too.
pub fn cmd(program: &str) -> Command {
    Command::new(find_command(program).unwrap_or_else(|| PathBuf::from(program)))
}

/// Makes sure every `(command, debian package)` is available.
pub fn ensure(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(command, _)| find_command(command).is_none())
        .map(|(_, package)| *package)
        .collect();
    install(&missing)
}

/// Makes sure every `(file or directory, debian package)` exists.
pub fn ensure_files(files: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = files
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    install(&missing)
}

/// Makes sure Debian `packages` are installed (for libraries, which have no
/// command to look for: e.g. `libclang-dev` for loopdev-3's bindgen build).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    install(&missing)
}

/// Installs `packages` with apt-get as root; otherwise fails with the line to run.
fn install(packages: &[&str]) -> Result<()> {
    let mut packages: Vec<&str> = packages.to_vec();
    packages.sort_unstable();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !is_root() {
        bail!("missing host packages; install them with:\nsudo apt-get install -y {list}");
    }
    apt_update()?;
    println!("installing host packages: {list}");
    run(cmd("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(&packages))
}

/// `apt-get update`, at most once per process (root only).
pub fn apt_update() -> Result<()> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    if !is_root() {
        bail!("the apt package lists are empty or stale; run:\nsudo apt-get update");
    }
    println!("running apt-get update");
    run(cmd("apt-get").args(["update", "-q"]))
}

/// Adds the musl target with rustup when it is not installed.
pub fn ensure_musl_target() -> Result<()> {
    const TARGET: &str = "x86_64-unknown-linux-musl";
    let Some(rustup) = find_command("rustup") else {
        println!("note: rustup not found; assuming the toolchain has {TARGET}");
        return Ok(());
    };
    let installed = output(Command::new(&rustup).args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    println!("installing the Rust target {TARGET}");
    run(Command::new(&rustup).args(["target", "add", TARGET]))
}

/// Runs `command`; a failure or non-zero exit is an error naming it.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs `command` and returns its stdout; stderr is included in the error.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", describe(command)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("{} printed non-UTF-8", describe(command)))
}

/// Runs `command` with `input` on its stdin.
pub fn run_with_input(command: &mut Command, input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", describe(command)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("cannot write to {}", describe(command)))?;
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

/// `program arg1 arg2…` for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Downloads Debian package `package` (without installing it) and extracts
/// it into `<into>/<package>/`, which is returned. Cached: an existing
/// extraction is reused without network access.
pub fn fetch_deb(package: &str, into: &Path) -> Result<PathBuf> {
    let dest = into.join(package);
    if dest.is_dir() {
        return Ok(dest);
    }
    ensure(&[("dpkg-deb", "dpkg")])?;
    let deb = download_deb(package, &into.join("dl"))?;
    let partial = into.join(format!("{package}.partial-{}", std::process::id()));
    remove_if_exists(&partial)?;
    run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    if let Err(e) = std::fs::rename(&partial, &dest) {
        // A concurrent xtask may have finished the same extraction first.
        remove_if_exists(&partial)?;
        if !dest.is_dir() {
            return Err(e).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), dest.display())
            });
        }
    }
    // The extracted tree is the cache; the .deb is not needed any more.
    remove_if_exists(&deb)?;
    Ok(dest)
}

/// The `.deb` of Debian package `package` in the directory `dir`,
/// downloaded with `apt-get download` unless one is there already.
pub fn download_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    if let Ok(deb) = find_deb(dir, package) {
        return Ok(deb);
    }
    ensure(&[("apt-get", "apt"), ("apt-cache", "apt")])?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("downloading {package} into {}", dir.display());
    let download = |dir: &Path| {
        run(cmd("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir))
    };
    if download(dir).is_err() {
        // An empty or stale package cache is the usual reason.
        apt_update()?;
        download(dir)?;
    }
    find_deb(dir, package)
}

/// The newest `<package>_*.deb` in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop().with_context(|| {
        format!(
            "apt-get download left no {prefix}*.deb in {}",
            dir.display()
        )
    })
}

/// Removes a file or directory tree if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    let result = match path.symlink_metadata() {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.with_context(|| format!("cannot remove {}", path.display()))
}

/// The static busybox from Debian's `busybox-static` package, fetched into
/// `target/debs/` (the host's own busybox is not needed).
pub fn busybox_static() -> Result<PathBuf> {
    program_from_deb("busybox-static", "bin/busybox")
}

/// The static e2fsck from Debian's `e2fsck-static` package (init checks the
/// data filesystem with it), fetched like [`busybox_static`].
pub fn e2fsck_static() -> Result<PathBuf> {
    program_from_deb("e2fsck-static", "sbin/e2fsck.static")
}

/// `path` inside Debian package `package`, extracted into `target/debs/`.
fn program_from_deb(package: &str, path: &str) -> Result<PathBuf> {
    let root = fetch_deb(package, &crate::target_dir().join("debs"))?;
    let program = root.join(path);
    if !program.is_file() {
        bail!(
            "{} is missing from the {package} package",
            program.display()
        );
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_commands_in_sbin_and_describes_commands() {
        assert!(find_command("sh").is_some());
        assert!(find_command("no-such-command-ramstick").is_none());
        let mut c = Command::new("echo");
        c.args(["a", "b"]);
        assert_eq!(describe(&c), "echo a b");
        assert_eq!(output(&mut c).unwrap(), "a b\n");
        let err = run(&mut Command::new("false")).unwrap_err();
        assert!(err.to_string().contains("false failed"), "{err}");
    }

    #[test]
    fn nothing_missing_installs_nothing() {
        ensure(&[("sh", "dash")]).unwrap();
        ensure_files(&[("/", "base-files")]).unwrap();
    }
}
