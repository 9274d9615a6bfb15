//! `ramstick-unlock`: opens the stick's LUKS container in the initramfs.
//!
//! ```text
//! ramstick-unlock <container> <mapping name> [--keyfile <path>] [--tries <n>]
//! ```
//!
//! init (static musl) runs this glibc binary because libcryptsetup (and
//! libdevmapper under it) exist only as shared libraries on Debian; the
//! initramfs carries it with its library closure only when the image is built
//! for LUKS. On success `/dev/mapper/<mapping name>` exists (libdevmapper
//! creates the node itself: init sets `DM_DISABLE_UDEV=1`, there is no udev in
//! the initramfs).
//!
//! With `--keyfile` the file's bytes are the passphrase and nobody types;
//! when the file is missing or does not open the container it asks on the
//! console like without one. The prompt names the container, does not echo, and a wrong passphrase
//! is said so and asked again, up to `--tries` times.
//!
//! Secrets: the passphrase (or key file contents) lives only in a
//! [`Zeroizing`] buffer, wiped when dropped, and is never printed. The volume
//! key never reaches this program: libcryptsetup derives it in its own
//! memory, hands it to dm-crypt and wipes it (`crypt_safe_free`).
//!
//! Exit status: 0 opened, [`EXIT_WRONG`] every passphrase was wrong, 1 any
//! other error (said on stderr).

use anyhow::{bail, Context, Result};
use libcryptsetup_rs::consts::flags::CryptActivate;
use libcryptsetup_rs::consts::vals::EncryptionFormat;
use libcryptsetup_rs::{CryptDevice, CryptInit, LibcryptErr};
use nix::sys::termios::{self, LocalFlags, SetArg};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use zeroize::Zeroizing;

/// Exit status when no passphrase opened the container.
const EXIT_WRONG: u8 = 2;
/// The longest passphrase read from the console (cryptsetup's own limit is 512).
const MAX_PASSPHRASE: usize = 512;
/// The largest key file taken (cryptsetup's default limit is 8 MiB).
const MAX_KEYFILE: u64 = 8 << 20;

/// The command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    container: PathBuf,
    name: String,
    keyfile: Option<PathBuf>,
    tries: u32,
}

/// How the unlock ended when it did not fail outright.
enum Outcome {
    Opened,
    AllWrong,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|a| unlock(&a));
    match result {
        Ok(Outcome::Opened) => ExitCode::SUCCESS,
        Ok(Outcome::AllWrong) => ExitCode::from(EXIT_WRONG),
        Err(e) => {
            eprintln!("ramstick-unlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Args> {
    const USAGE: &str =
        "usage: ramstick-unlock <container> <mapping name> [--keyfile <path>] [--tries <n>]";
    let mut positional = Vec::new();
    let mut keyfile = None;
    let mut tries = 3;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keyfile" => keyfile = Some(PathBuf::from(it.next().context(USAGE)?)),
            "--tries" => {
                let n = it.next().context(USAGE)?;
                tries = n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("--tries {n:?}: use a number from 1"))?;
            }
            _ if arg.starts_with("--") => bail!("unknown option {arg}; {USAGE}"),
            _ => positional.push(arg.clone()),
        }
    }
    let [container, name] = <[String; 2]>::try_from(positional).ok().context(USAGE)?;
    Ok(Args {
        container: PathBuf::from(container),
        name,
        keyfile,
        tries,
    })
}

/// Load the LUKS header of `a.container` and open it as `a.name`.
fn unlock(a: &Args) -> Result<Outcome> {
    let shown = a.container.display();
    let mut device =
        CryptInit::init(&a.container).map_err(|e| anyhow::anyhow!("cannot open {shown}: {e}"))?;
    // Single user, no other cryptsetup: no lock files under /run/cryptsetup.
    device
        .settings_handle()
        .metadata_locking(false)
        .map_err(|e| anyhow::anyhow!("cannot turn metadata locking off: {e}"))?;
    device
        .context_handle()
        .load::<()>(None, None)
        .map_err(|e| anyhow::anyhow!("{shown} has no valid LUKS header: {e}"))?;
    if !matches!(
        device.format_handle().get_type(),
        Ok(EncryptionFormat::Luks1 | EncryptionFormat::Luks2)
    ) {
        bail!("{shown} is not a LUKS container");
    }

    if let Some(keyfile) = &a.keyfile {
        match read_keyfile(keyfile) {
            Ok(key) => {
                let started = Instant::now();
                if activate(&mut device, &a.name, &key)? {
                    let secs = started.elapsed().as_secs_f64();
                    println!("ramstick: {shown} unlocked with the key file in {secs:.1} s");
                    return Ok(Outcome::Opened);
                }
                println!(
                    "ramstick: the key file {} does not unlock {shown}",
                    keyfile.display()
                );
            }
            // A missing key file must not lock the owner out: ask instead.
            Err(e) => println!("ramstick: {e:#}; asking for the passphrase"),
        }
    }
    for attempt in 1..=a.tries {
        let Some(passphrase) = prompt(&format!("Passphrase for {shown}: "))? else {
            bail!("the console input ended before a passphrase was typed");
        };
        let started = Instant::now();
        if activate(&mut device, &a.name, &passphrase)? {
            let secs = started.elapsed().as_secs_f64();
            println!("ramstick: {shown} unlocked in {secs:.1} s");
            return Ok(Outcome::Opened);
        }
        println!(
            "ramstick: wrong passphrase for {shown} (attempt {attempt} of {})",
            a.tries
        );
    }
    Ok(Outcome::AllWrong)
}

/// Try one passphrase. `Ok(false)`: it opens no key slot (EPERM).
fn activate(device: &mut CryptDevice, name: &str, passphrase: &[u8]) -> Result<bool> {
    match device.activate_handle().activate_by_passphrase(
        Some(name),
        None,
        passphrase,
        CryptActivate::empty(),
    ) {
        Ok(_) => Ok(true),
        Err(LibcryptErr::IOError(e)) if e.raw_os_error() == Some(nix::libc::EPERM) => Ok(false),
        Err(e) => bail!("cannot activate /dev/mapper/{name}: {e}"),
    }
}

/// The whole key file, as cryptsetup takes it without offset or size options.
fn read_keyfile(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?
        .len();
    if len == 0 || len > MAX_KEYFILE {
        bail!(
            "the key file {} has {len} bytes; it must have 1 to {MAX_KEYFILE}",
            path.display()
        );
    }
    let key = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    Ok(key)
}

/// Print `text`, read one line from stdin without echo (when stdin is a
/// terminal). `None` at end of input. The echo goes off before the prompt
/// shows, so nothing typed after it appears is echoed.
fn prompt(text: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut out = std::io::stdout();
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)
            .context("cannot turn the console echo off")?;
    }
    write!(out, "{text}").and_then(|_| out.flush())?;
    let line = read_line(&stdin);
    if let Some(saved) = &saved {
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, saved)
            .context("cannot turn the console echo back on")?;
    } else {
        writeln!(out)?;
    }
    line
}

/// Bytes up to a newline (not included; a trailing CR is dropped too), into
/// a buffer that never reallocates (a reallocation would leave a copy).
fn read_line(stdin: &std::io::Stdin) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE));
    let mut byte = [0u8; 1];
    loop {
        let n = match nix::unistd::read(stdin.as_fd(), &mut byte) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("cannot read the console"),
        };
        if n == 0 {
            return Ok((!line.is_empty()).then_some(line));
        }
        match byte[0] {
            b'\n' => break,
            b'\r' => {}
            b if line.len() < MAX_PASSPHRASE => line.push(b),
            _ => {}
        }
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse_args(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn command_line() {
        assert_eq!(
            args(&["/dev/vda2", "ramstick"]).unwrap(),
            Args {
                container: "/dev/vda2".into(),
                name: "ramstick".into(),
                keyfile: None,
                tries: 3,
            }
        );
        assert_eq!(
            args(&["--tries", "5", "/dev/sda2", "x", "--keyfile", "/etc/k"]).unwrap(),
            Args {
                container: "/dev/sda2".into(),
                name: "x".into(),
                keyfile: Some("/etc/k".into()),
                tries: 5,
            }
        );
        for bad in [
            &["/dev/vda2"][..],
            &["a", "b", "c"],
            &["a", "b", "--tries", "0"],
            &["a", "b", "--tries"],
            &["a", "b", "--echo"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyfile_limits() {
        let dir = ramstick_testkit::TempDir::new("unlock");
        dir.file("empty", "", 0o600).file("key", "secret\n", 0o600);
        assert!(read_keyfile(&dir.join("empty")).is_err());
        assert_eq!(
            read_keyfile(&dir.join("key")).unwrap().as_slice(),
            b"secret\n"
        );
        assert!(read_keyfile(&dir.join("missing")).is_err());
    }
}
