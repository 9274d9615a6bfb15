//! The harness of the privileged test binaries (`harness = false` in their
//! Cargo.toml): [`main_with`] runs named cases, each in a fresh directory on
//! a scratch tmpfs in a private mount namespace, prints a line per case
//! (`ok`, `skipped` with the reason, `FAIL` with the message) and a summary.
//!
//! As root it runs every case. Otherwise it enters an unprivileged user
//! namespace with its own mount namespace (the process is root there, mapped
//! to the caller's uid, as zram-generator's tests do): tmpfs, bind and
//! overlay mounts, whiteouts, fifos and `user.*` xattrs work there, so the
//! cases that need no more run for every contributor. A case declares what
//! only real root may do ([`Root`]) and is skipped there with that reason;
//! it declares the commands it runs ([`Tool`]) and is skipped, naming the
//! package, when one is missing.
//!
//! With `RAMSTICK_NO_SKIP=1` ([`NO_SKIP`], set by `cargo xtask test` as
//! root) every skip is a failure: a root CI run that skipped proves nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

use crate::tools::{have, SBIN};
use crate::{Ctx, Mounted, TempDir, Tool};

/// The variable that turns every skip into a failure when it is `1`.
pub const NO_SKIP: &str = "RAMSTICK_NO_SKIP";

/// Whether skips are failures in this run ([`NO_SKIP`]).
pub fn no_skip() -> bool {
    std::env::var(NO_SKIP).is_ok_and(|v| v == "1")
}

/// Says that the running ordinary `#[test]` checked nothing, and why.
/// libtest has no "skipped" result (the test still shows `ok`; the reason
/// is on stderr, shown with `--nocapture`), so under [`NO_SKIP`] this
/// panics: the test fails with the reason. The caller returns after it.
pub fn skip(why: &str) {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    assert!(
        !no_skip(),
        "{test} skipped ({why}), but {NO_SKIP}=1 forbids skips"
    );
    eprintln!("skipped {test}: {why}");
}

/// What only real root (the initial user namespace) may do, never the root
/// of an unprivileged user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// Loop devices, and so mounts of squashfs or ext4 images: the kernel
    /// mounts no block filesystem in a user namespace.
    LoopDevices,
    /// Device nodes but whiteouts (`c 0 0`): mknod needs `CAP_MKNOD` in the
    /// initial namespace.
    DeviceNodes,
    /// Files owned by others: only the caller's uid is mapped.
    ForeignOwners,
    /// `trusted.*` xattrs: they need `CAP_SYS_ADMIN` in the initial namespace.
    TrustedXattrs,
    /// zram devices (sysfs writes of the host's).
    Zram,
    /// The API filesystems init mounts: devtmpfs never mounts in a user
    /// namespace.
    ApiFilesystems,
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Root::LoopDevices => "loop devices",
            Root::DeviceNodes => "device nodes",
            Root::ForeignOwners => "files of other owners",
            Root::TrustedXattrs => "trusted.* xattrs",
            Root::Zram => "zram devices",
            Root::ApiFilesystems => "devtmpfs",
        })
    }
}

/// How a case ended when it did not fail.
pub enum Outcome {
    Passed,
    Skipped(String),
}

/// What a case returns: `Err` is the failure message.
pub type CaseResult = Result<Outcome, String>;

/// A named test case, run on its own fresh scratch directory, with what it
/// needs to run at all.
pub struct Case {
    name: &'static str,
    run: fn(&Path) -> CaseResult,
    root: &'static [Root],
    tools: &'static [Tool],
}

impl Case {
    /// A case that needs no more than an unprivileged user namespace allows.
    pub const fn new(name: &'static str, run: fn(&Path) -> CaseResult) -> Case {
        Case {
            name,
            run,
            root: &[],
            tools: &[],
        }
    }

    /// The case needs real root for each of `needs`.
    pub const fn root(self, needs: &'static [Root]) -> Case {
        Case {
            root: needs,
            ..self
        }
    }

    /// The case runs each of `tools`.
    pub const fn tools(self, tools: &'static [Tool]) -> Case {
        Case { tools, ..self }
    }

    /// The name of its directory: the name with only plain characters, as
    /// the path goes into mount options, where `:` and `,` are separators.
    fn dir_name(&self) -> String {
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-';
        (self.name.chars())
            .map(|c| if plain(c) { c } else { '_' })
            .collect()
    }

    /// Why the case cannot run here, if it cannot.
    fn cannot_run(&self, place: Place) -> Option<String> {
        if place == Place::UserNamespace && !self.root.is_empty() {
            let needs: Vec<String> = self.root.iter().map(Root::to_string).collect();
            return Some(format!(
                "not root, and it needs real root for {}",
                needs.join(", ")
            ));
        }
        let (command, package) = self.tools.iter().find(|(command, _)| !have(command))?;
        Some(format!(
            "{command} is not installed: apt-get install {package}"
        ))
    }
}

/// Where the cases run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    UserNamespace,
}

/// Runs `cases` as the `harness = false` test binary `name` (see the module
/// doc). Must be called while the process is still single-threaded: a
/// multi-threaded process cannot enter a user namespace.
pub fn main_with(name: &str, cases: &[Case]) -> ExitCode {
    let mut tally = Tally::default();
    add_sbin_to_path();
    let (scratch, place) = match isolate(name) {
        Ok(isolated) => isolated,
        Err(Isolation::Failed(e)) => {
            tally.record("setup", Err(e));
            return tally.finish(name);
        }
        Err(Isolation::Refused(why)) => {
            println!("{name}: {} cases, none can run: {why}", cases.len());
            for case in cases {
                tally.record(case.name, Ok(Outcome::Skipped(why.clone())));
            }
            return tally.finish(name);
        }
    };
    match place {
        Place::Root => println!("{name}: {} cases, as root", cases.len()),
        Place::UserNamespace => println!(
            "{name}: {} cases, not root: in an unprivileged user namespace",
            cases.len()
        ),
    }
    for case in cases {
        let dir = scratch.mount.target.join(case.dir_name());
        let result = match case.cannot_run(place) {
            Some(why) => Ok(Outcome::Skipped(why)),
            None => std::fs::create_dir(&dir)
                .ctx("create case dir")
                .and_then(|()| (case.run)(&dir)),
        };
        tally.record(case.name, result);
        // Free the scratch memory of a finished case.
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(scratch);
    tally.finish(name)
}

/// The counts, and the printing of each result.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn record(&mut self, case: &str, result: CaseResult) {
        match result {
            Ok(Outcome::Passed) => {
                self.passed += 1;
                println!("ok {case}");
            }
            Ok(Outcome::Skipped(why)) if no_skip() => {
                self.failed += 1;
                println!("FAIL {case}: skipped ({why}), but {NO_SKIP}=1 forbids skips");
            }
            Ok(Outcome::Skipped(why)) => {
                self.skipped += 1;
                println!("skipped {case}: {why}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {case}: {e}");
            }
        }
    }

    fn finish(self, name: &str) -> ExitCode {
        let Tally {
            passed,
            failed,
            skipped,
        } = self;
        println!("{name}: {passed} passed, {failed} failed, {skipped} skipped");
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Lets cases run sbin tools by name (`losetup`, `mkfs.ext4`) when the
/// caller's `$PATH` lacks those directories, as [`tool`] finds them there.
fn add_sbin_to_path() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for sbin in SBIN {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(PathBuf::from(sbin));
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
    }
}

/// Why no case can run.
enum Isolation {
    /// As root: a broken setup, a failure.
    Failed(String),
    /// Not root, and no user namespace: every case is skipped.
    Refused(String),
}

/// The scratch tmpfs, unmounted and then removed on drop (fields drop in
/// order).
struct Scratch {
    mount: Mounted,
    _dir: TempDir,
}

/// Enters a private mount namespace (in a user namespace of our own when
/// not root) and mounts the scratch tmpfs, which `name` tags. Root of a
/// user namespace already (a rootless container, `unshare -r`) may mount
/// there but no more than in ours: its cases run as in ours.
fn isolate(name: &str) -> Result<(Scratch, Place), Isolation> {
    let place = if !geteuid().is_root() {
        enter_user_namespace().map_err(|e| {
            Isolation::Refused(format!(
                "needs root or an unprivileged user namespace ({e})"
            ))
        })?;
        Place::UserNamespace
    } else {
        unshare(CloneFlags::CLONE_NEWNS)
            .ctx("unshare(CLONE_NEWNS)")
            .map_err(Isolation::Failed)?;
        if in_initial_user_namespace() {
            Place::Root
        } else {
            Place::UserNamespace
        }
    };
    let scratch = (|| {
        // Nothing mounted here propagates to the host's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .ctx("make / rprivate")?;
        let dir = TempDir::new(name);
        let mount = Mounted::tmpfs_sized(&dir, "6g")?;
        Ok(Scratch { mount, _dir: dir })
    })();
    scratch.map(|s| (s, place)).map_err(Isolation::Failed)
}

/// Whether this process is in the initial user namespace, whose uid map is
/// the identity of every uid.
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields == ["0", "0", "4294967295"]
    })
}

/// Becomes root of a new user namespace (mapped to the caller's uid and
/// gid) that owns a new mount namespace.
fn enter_user_namespace() -> Result<(), String> {
    let (uid, gid) = (geteuid(), getegid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .ctx("unshare(CLONE_NEWUSER | CLONE_NEWNS)")?;
    // An unprivileged process may write its gid_map only once setgroups is
    // denied (else it could drop a group that denies it access).
    std::fs::write("/proc/self/setgroups", "deny").ctx("deny setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).ctx("write uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).ctx("write gid_map")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(_: &Path) -> CaseResult {
        Ok(Outcome::Passed)
    }

    #[test]
    fn a_case_says_why_it_cannot_run() {
        let anywhere = Case::new("a: one, two", passes).tools(&[("sh", "dash")]);
        assert_eq!(anywhere.dir_name(), "a__one__two");
        assert_eq!(anywhere.cannot_run(Place::UserNamespace), None);
        let root = Case::new("b", passes).root(&[Root::LoopDevices, Root::TrustedXattrs]);
        assert_eq!(root.cannot_run(Place::Root), None);
        assert_eq!(
            root.cannot_run(Place::UserNamespace).as_deref(),
            Some("not root, and it needs real root for loop devices, trusted.* xattrs")
        );
        let missing = Case::new("c", passes).tools(&[("sh", "dash"), ("no-such-tool-x", "pkg-x")]);
        assert_eq!(
            missing.cannot_run(Place::Root).as_deref(),
            Some("no-such-tool-x is not installed: apt-get install pkg-x")
        );
    }

    #[test]
    fn a_skip_is_a_failure_when_skips_are_forbidden() {
        let before = std::env::var_os(NO_SKIP);
        std::env::set_var(NO_SKIP, "1");
        let result = std::panic::catch_unwind(|| skip("no frobnicator"));
        match before {
            Some(v) => std::env::set_var(NO_SKIP, v),
            None => std::env::remove_var(NO_SKIP),
        }
        let message = result.expect_err("a skip passed under RAMSTICK_NO_SKIP=1");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("skipped (no frobnicator), but RAMSTICK_NO_SKIP=1"),
            "{message}"
        );
    }
}
