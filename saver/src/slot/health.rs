//! The trial's health check: the real init reached its default target, the
//! saver daemon runs (this code runs in it or beside it), and the user's
//! hook `/etc/ramstick/health-check`, when executable, exits 0.
//!
//! Per init system (found as `common::initsys` finds it for the root):
//! systemd — `systemctl is-system-running --wait` prints `running` or
//! `degraded`; OpenRC — the runlevel is `default` (`rc-status --runlevel`,
//! else `/run/openrc/softlevel`) and `rc` finished starting it (no
//! `/run/openrc/rc.starting`, nothing in `/run/openrc/starting/`); sysvinit and busybox init start the
//! saver daemon last (its inittab line follows the rc scripts), so the
//! daemon running is the signal. The decisions are pure functions; the
//! looks at the system are behind [`Probes`].

use ramstick_common::initsys::InitSystem;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The user's own check.
pub const HOOK: &str = "/etc/ramstick/health-check";
/// Between two looks at a starting system.
const POLL: Duration = Duration::from_secs(5);

/// One look at the init system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// It reached its default target (what was seen).
    Reached(String),
    /// Still starting (what was seen).
    Waiting(String),
    /// It will not get there (why).
    Failed(String),
}

/// What `systemctl is-system-running` printed.
pub fn systemd_state(output: &str) -> Target {
    let state = output.trim();
    let seen = format!("systemd is {state}");
    match state {
        "running" | "degraded" => Target::Reached(seen),
        "initializing" | "starting" => Target::Waiting(seen),
        "" => Target::Failed("systemctl is-system-running printed nothing".into()),
        _ => Target::Failed(format!("{seen}, not running or degraded")),
    }
}

/// OpenRC's runlevel, whether `rc` is still changing runlevels (it keeps
/// `/run/openrc/rc.starting` while it starts one's services) and how many
/// services are still starting (`/run/openrc/starting/`).
pub fn openrc_state(runlevel: &str, rc_starting: bool, starting: usize) -> Target {
    let level = runlevel.trim();
    match (level, rc_starting, starting) {
        ("default", false, 0) => Target::Reached("OpenRC started the default runlevel".into()),
        ("default", _, n) => Target::Waiting(format!(
            "OpenRC is starting the default runlevel ({n} services starting now)"
        )),
        ("shutdown" | "reboot" | "off", _, _) => {
            Target::Failed(format!("OpenRC is in the {level} runlevel"))
        }
        _ => Target::Waiting(format!(
            "OpenRC is in the {level:?} runlevel, not default yet"
        )),
    }
}

/// The user's hook's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookRun {
    /// Exited 0 (its output).
    Passed(String),
    /// Exited otherwise (its status and output).
    Failed(String),
    /// Did not end before the deadline.
    TimedOut,
}

/// What the check looks at.
pub trait Probes {
    /// One look at whether `init` reached its default target; may block
    /// until `until`.
    fn target(&mut self, init: InitSystem, until: Instant) -> Target;
    /// Runs the user's hook, or `None` when it is not there (or not
    /// executable).
    fn hook(&mut self, until: Instant) -> Option<HookRun>;
    /// Whether `saver daemon` runs.
    fn daemon_runs(&mut self) -> bool;
    fn now(&self) -> Instant;
    fn sleep(&mut self, d: Duration);
}

/// The check's result: what passed, or why it failed.
pub type Verdict = Result<Vec<String>, String>;

/// Runs the check until it passes, fails, or `until` comes. `init` is the
/// running root's init system (`Err`: not recognised, said in the result).
pub fn check(init: Result<InitSystem, String>, probes: &mut dyn Probes, until: Instant) -> Verdict {
    let mut passed = Vec::new();
    match init {
        Ok(system) => loop {
            match probes.target(system, until) {
                Target::Reached(seen) => {
                    passed.push(seen);
                    break;
                }
                Target::Failed(why) => return Err(why),
                Target::Waiting(seen) => {
                    if probes.now() >= until {
                        return Err(format!(
                            "the system did not finish starting in time ({seen})"
                        ));
                    }
                    probes.sleep(POLL);
                }
            }
        },
        Err(why) => passed.push(format!(
            "the init system is not recognised ({why}): the saver daemon runs"
        )),
    }
    if !probes.daemon_runs() {
        return Err("the saver daemon does not run (nothing would save the session)".into());
    }
    passed.push("the saver daemon runs".into());
    match probes.hook(until) {
        None => {}
        Some(HookRun::Passed(out)) => passed.push(with_output(&format!("{HOOK} passed"), &out)),
        Some(HookRun::Failed(why)) => return Err(format!("{HOOK} {why}")),
        Some(HookRun::TimedOut) => return Err(format!("{HOOK} did not end in time")),
    }
    Ok(passed)
}

fn with_output(what: &str, output: &str) -> String {
    let out = output.trim();
    if out.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {out}")
    }
}

/// How long the check may take on a trial whose watchdog fires `timeout`
/// seconds after boot, `uptime` seconds into it: until a margin before the
/// watchdog, so a commit can still be written (none when it is too late).
pub fn time_left(timeout: u32, uptime: u64) -> Option<Duration> {
    let margin = u64::from(timeout / 4).min(60);
    u64::from(timeout)
        .checked_sub(uptime + margin)
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

/// The running system.
pub struct SystemProbes {
    /// The check runs inside the saver daemon (which therefore runs).
    pub in_daemon: bool,
}

impl Probes for SystemProbes {
    fn target(&mut self, init: InitSystem, until: Instant) -> Target {
        match init {
            InitSystem::Systemd => {
                let mut cmd = Command::new("systemctl");
                cmd.args(["is-system-running", "--wait"]);
                match run_bounded(&mut cmd, until) {
                    Ok(Some((_, out))) => systemd_state(&out),
                    Ok(None) => Target::Waiting("systemd is still starting".into()),
                    Err(e) => Target::Failed(format!("cannot run systemctl: {e}")),
                }
            }
            InitSystem::OpenRc => {
                let mut cmd = Command::new("rc-status");
                cmd.arg("--runlevel");
                let level = match run_bounded(&mut cmd, until) {
                    Ok(Some((status, out))) if status.success() => out,
                    _ => std::fs::read_to_string("/run/openrc/softlevel").unwrap_or_default(),
                };
                let starting =
                    std::fs::read_dir("/run/openrc/starting").map_or(0, |d| d.flatten().count());
                let rc_starting = Path::new("/run/openrc/rc.starting").exists();
                openrc_state(&level, rc_starting, starting)
            }
            InitSystem::SysVinit | InitSystem::Busybox => Target::Reached(format!(
                "{init} ran its rc scripts (it starts the saver daemon last)"
            )),
        }
    }

    fn hook(&mut self, until: Instant) -> Option<HookRun> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(HOOK).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return None;
        }
        Some(match run_bounded(&mut Command::new(HOOK), until) {
            Ok(Some((status, out))) if status.success() => HookRun::Passed(out),
            Ok(Some((status, out))) => HookRun::Failed(with_output(&format!("{status}"), &out)),
            Ok(None) => HookRun::TimedOut,
            Err(e) => HookRun::Failed(format!("cannot run: {e}")),
        })
    }

    fn daemon_runs(&mut self) -> bool {
        self.in_daemon
            || std::fs::read_dir("/proc").is_ok_and(|procs| {
                procs.flatten().any(|p| {
                    std::fs::read(p.path().join("cmdline")).is_ok_and(|c| is_saver_daemon(&c))
                })
            })
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Whether a process's `/proc/PID/cmdline` (NUL-separated) is `saver
/// daemon …`.
pub fn is_saver_daemon(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    let program = args.next().unwrap_or_default();
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name == b"saver" && args.next() == Some(b"daemon".as_slice())
}

/// Runs `cmd` (no input; stdout and stderr read together) until it ends or
/// `until` comes, then kills it: `None` when it was killed.
pub fn run_bounded(
    cmd: &mut Command,
    until: Instant,
) -> std::io::Result<Option<(ExitStatus, String)>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Readers in threads, so a chatty program never blocks on a full pipe;
    // their output is waited for a moment only, as something the program
    // left running may hold its pipes open.
    let (tx, rx) = std::sync::mpsc::channel();
    let pipes = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    let mut readers = 0;
    for mut pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        readers += 1;
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error only shortens the output shown.
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= until {
            // Killed: it may already have ended, which is no error.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output: String = (0..readers)
        .map_while(|_| rx.recv_timeout(Duration::from_secs(2)).ok())
        .collect();
    Ok(status.map(|s| (s, output)))
}

/// Whether `path` is an executable file (for the status's mention of the hook).
pub fn hook_present(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes that answer from scripts and move a fake clock.
    struct Fake {
        looks: Vec<Target>,
        hook: Option<HookRun>,
        now: Instant,
        slept: Duration,
        daemon: bool,
    }

    impl Probes for Fake {
        fn target(&mut self, _: InitSystem, _: Instant) -> Target {
            if self.looks.len() > 1 {
                self.looks.remove(0)
            } else {
                self.looks[0].clone()
            }
        }
        fn hook(&mut self, _: Instant) -> Option<HookRun> {
            self.hook.clone()
        }
        fn daemon_runs(&mut self) -> bool {
            self.daemon
        }
        fn now(&self) -> Instant {
            self.now + self.slept
        }
        fn sleep(&mut self, d: Duration) {
            self.slept += d;
        }
    }

    fn fake(looks: Vec<Target>, hook: Option<HookRun>) -> Fake {
        Fake {
            looks,
            hook,
            now: Instant::now(),
            slept: Duration::ZERO,
            daemon: true,
        }
    }

    #[test]
    fn systemd_and_openrc_states() {
        assert!(matches!(systemd_state("running\n"), Target::Reached(_)));
        assert!(matches!(systemd_state("degraded\n"), Target::Reached(_)));
        assert!(matches!(systemd_state("starting\n"), Target::Waiting(_)));
        assert_eq!(
            systemd_state("maintenance\n"),
            Target::Failed("systemd is maintenance, not running or degraded".into())
        );
        assert!(matches!(systemd_state(""), Target::Failed(_)));
        assert!(matches!(
            openrc_state("default\n", false, 0),
            Target::Reached(_)
        ));
        assert!(matches!(
            openrc_state("default\n", false, 2),
            Target::Waiting(_)
        ));
        // Between two services of the runlevel, none is starting: rc is.
        assert!(matches!(
            openrc_state("default\n", true, 0),
            Target::Waiting(_)
        ));
        assert!(matches!(
            openrc_state("boot\n", false, 0),
            Target::Waiting(_)
        ));
        assert!(matches!(
            openrc_state("reboot", false, 0),
            Target::Failed(_)
        ));
    }

    #[test]
    fn the_check_waits_for_the_target_then_runs_the_hook() {
        let until = Instant::now() + Duration::from_secs(60);
        let mut f = fake(
            vec![
                Target::Waiting("starting".into()),
                Target::Reached("systemd is running".into()),
            ],
            Some(HookRun::Passed("disk ok\n".into())),
        );
        let f_until = f.now + Duration::from_secs(60);
        let passed = check(Ok(InitSystem::Systemd), &mut f, f_until).unwrap();
        assert_eq!(
            passed,
            [
                "systemd is running",
                "the saver daemon runs",
                "/etc/ramstick/health-check passed: disk ok"
            ]
        );
        assert_eq!(f.slept, POLL);
        // No hook: the target and the daemon are enough.
        let mut f = fake(vec![Target::Reached("x".into())], None);
        assert_eq!(
            check(Ok(InitSystem::Busybox), &mut f, until).unwrap().len(),
            2
        );
        // An unrecognised init: the daemon running is all there is.
        let mut f = fake(vec![Target::Failed("never asked".into())], None);
        let passed = check(Err("init is /bin/foo".into()), &mut f, until).unwrap();
        assert!(passed[0].contains("init is /bin/foo"), "{passed:?}");
    }

    #[test]
    fn the_check_fails_on_a_failed_target_a_hook_or_the_deadline() {
        let mut f = fake(vec![Target::Failed("systemd is maintenance".into())], None);
        let until = f.now + Duration::from_secs(60);
        assert_eq!(
            check(Ok(InitSystem::Systemd), &mut f, until),
            Err("systemd is maintenance".into())
        );
        let mut f = fake(
            vec![Target::Reached("ok".into())],
            Some(HookRun::Failed("exit status: 3: no network".into())),
        );
        let until = f.now + Duration::from_secs(60);
        assert_eq!(
            check(Ok(InitSystem::OpenRc), &mut f, until),
            Err("/etc/ramstick/health-check exit status: 3: no network".into())
        );
        let mut f = fake(vec![Target::Reached("ok".into())], Some(HookRun::TimedOut));
        let until = f.now + Duration::from_secs(60);
        assert!(check(Ok(InitSystem::OpenRc), &mut f, until)
            .unwrap_err()
            .contains("did not end in time"));
        let mut f = fake(vec![Target::Reached("ok".into())], None);
        f.daemon = false;
        let until = f.now + Duration::from_secs(60);
        assert!(check(Ok(InitSystem::SysVinit), &mut f, until)
            .unwrap_err()
            .contains("the saver daemon does not run"));
        let mut f = fake(vec![Target::Waiting("3 services starting".into())], None);
        let until = f.now + Duration::from_secs(60);
        let err = check(Ok(InitSystem::OpenRc), &mut f, until).unwrap_err();
        assert!(
            err.contains("did not finish starting in time (3 services starting)"),
            "{err}"
        );
        assert_eq!(f.slept, Duration::from_secs(60));
    }

    #[test]
    fn the_daemon_is_found_by_its_command_line() {
        assert!(is_saver_daemon(
            b"/run/ramstick/bin/saver\0daemon\0--log\0/x\0"
        ));
        assert!(is_saver_daemon(b"saver\0daemon\0"));
        assert!(!is_saver_daemon(b"/run/ramstick/bin/saver\0slot\0commit\0"));
        assert!(!is_saver_daemon(b"/usr/bin/notsaver\0daemon\0"));
        assert!(!is_saver_daemon(b""));
    }

    #[test]
    fn the_check_ends_before_the_watchdog() {
        assert_eq!(time_left(600, 30), Some(Duration::from_secs(510)));
        assert_eq!(time_left(120, 30), Some(Duration::from_secs(60)));
        assert_eq!(time_left(600, 540), None);
        assert_eq!(time_left(600, 10_000), None);
    }

    #[test]
    fn bounded_commands_end_or_are_killed() {
        let until = Instant::now() + Duration::from_secs(20);
        let (status, out) = run_bounded(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            until,
        )
        .unwrap()
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(out.contains("hi") && out.contains("err"), "{out}");
        let t = Instant::now();
        let soon = Instant::now() + Duration::from_millis(300);
        assert_eq!(
            run_bounded(Command::new("sleep").arg("30"), soon).unwrap(),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
