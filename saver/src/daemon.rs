//! `saver daemon`: started at boot by the init system. SIGTERM/SIGINT (the
//! system stops): save, then exit with the save's result. SIGUSR1: save now
//! and keep running. Every `ramstick.checkpoint` minutes (15 by default) it
//! saves a checkpoint when something changed — the session's layer is
//! replaced, so a power cut loses at most that many minutes — unless that
//! would write more than the hourly budget. When the system is idle it
//! merges layers the compaction policy asks for. Every `watch` seconds (10
//! by default) it looks at how full the RAM upper is ([`crate::watch`]):
//! at 80% and 90% it warns on the console, in the log (syslog through
//! `logger` when there is no journal) and to logged-in users (`wall`);
//! at 95% it also checkpoints when checkpoints are on.
//!
//! At its start it runs a trial boot's health check and commit in the
//! background, or says that a trial did not commit ([`crate::slot::trial`]).
//!
//! With `--log FILE` (init systems without a journal: OpenRC, sysvinit,
//! busybox init) its messages go to FILE during the session, and those of
//! the shutdown save to the console, where the person shutting down sees
//! them (FILE is in RAM and gone after the shutdown anyway).

use crate::maintain::{self, Budget};
use crate::onoff;
use crate::pressure::{self, Sources};
use crate::save::{lock, save, SaveOptions, Trigger};
use crate::session::{session_exclude, Paths, Session};
use crate::space::{self, human};
use crate::stick::say;
use crate::watch::{self, Action, Saving, Watch};
use anyhow::{Context, Result};
use ramstick_common::cmdline::{self, BootType};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Minutes between checkpoints; `None`: only at shutdown and on demand.
    pub checkpoint: Option<u32>,
    /// Bytes checkpoints may write in an hour.
    pub budget: u64,
    /// Seconds between looks at the upper's usage; `None`: not watched.
    pub watch: Option<u32>,
}

/// The settings' defaults (the checkpoint interval's is the command line table's).
pub fn defaults() -> Settings {
    Settings {
        checkpoint: cmdline::Config::default().checkpoint_minutes,
        budget: 1 << 30,
        watch: Some(10),
    }
}

/// Where the settings file lives.
pub const CONF: &str = "/etc/ramstick/saver.conf";

/// The settings: the defaults, then `saver.conf` (`checkpoint = 15|off`,
/// `checkpoint-budget = 512M`, `watch = 10|off` in seconds), then
/// `ramstick.checkpoint` when the command line gives it.
pub fn settings(conf: &str, cmdline_text: &str) -> Result<Settings> {
    let mut s = defaults();
    for (n, line) in conf.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("{CONF} line {}: `{line}`", n + 1);
        let (key, value) = line.split_once('=').with_context(bad)?;
        match (key.trim(), value.trim()) {
            ("checkpoint", "off") => s.checkpoint = None,
            ("checkpoint", v) => {
                let (cfg, problems) = cmdline::parse(&format!("ramstick.checkpoint={v}"));
                anyhow::ensure!(problems.is_empty(), "{}: {}", bad(), problems[0].message);
                s.checkpoint = cfg.checkpoint_minutes;
            }
            ("checkpoint-budget", v) => {
                let size = cmdline::parse_size(v)
                    .filter(|z| !matches!(z, cmdline::Size::Percent(_)))
                    .with_context(|| format!("{}: a size in bytes like 512M", bad()))?;
                s.budget = size.to_bytes(0);
            }
            ("watch", "off") => s.watch = None,
            ("watch", v) => {
                let secs = v.parse().ok().filter(|n| (1..=3600).contains(n));
                s.watch = Some(
                    secs.with_context(|| format!("{}: `off` or seconds from 1 to 3600", bad()))?,
                );
            }
            _ => anyhow::bail!(
                "{}: unknown setting (checkpoint, checkpoint-budget, watch)",
                bad()
            ),
        }
    }
    if cmdline::split_args(cmdline_text)
        .iter()
        .any(|(name, _)| *name == "ramstick.checkpoint")
    {
        s.checkpoint = cmdline::parse(cmdline_text).0.checkpoint_minutes;
    }
    Ok(s)
}

/// Bytes checkpoints wrote, each with its time (Unix seconds): kept in the
/// saver's run-time directory, so that a restarted daemon keeps to the
/// budget and `saver status` shows what is left of it.
pub struct Spent {
    file: PathBuf,
    writes: Vec<(u64, u64)>,
}

impl Spent {
    /// The record of `paths` (empty when missing or unreadable: the budget
    /// only paces checkpoints, it guards no data).
    pub fn load(paths: &Paths) -> Spent {
        let file = paths.state.join("checkpoints");
        let writes = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (at, bytes) = l.split_once(' ')?;
                Some((at.parse().ok()?, bytes.parse().ok()?))
            })
            .collect();
        Spent { file, writes }
    }

    /// Bytes written in the hour before `now`.
    pub fn in_last_hour(&self, now: u64) -> u64 {
        self.writes
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) < 3600)
            .map(|(_, b)| b)
            .sum()
    }

    /// Records `bytes` written at `now`, forgetting what is older than an hour.
    fn add(&mut self, now: u64, bytes: u64) {
        self.writes.retain(|(at, _)| now.saturating_sub(*at) < 3600);
        self.writes.push((now, bytes));
        let text: String = self
            .writes
            .iter()
            .map(|(at, b)| format!("{at} {b}\n"))
            .collect();
        if let Err(e) = std::fs::write(&self.file, text) {
            say(&format!("cannot write {}: {e}", self.file.display()));
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends stdout and stderr to `path` (appending; created 0600).
fn output_to(path: &Path, create: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(create)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::unistd::dup2_stdout(&file)
        .and_then(|()| nix::unistd::dup2_stderr(&file))
        .with_context(|| format!("cannot send the output to {}", path.display()))
}

/// Where the shutdown save's messages go with `--log`.
const CONSOLE: &str = "/dev/console";

pub fn daemon(paths: &Paths, log: Option<&Path>) -> Result<()> {
    if let Some(log) = log {
        output_to(log, true)?;
    }
    // SIGHUP is caught and ignored: an init script's terminal going away
    // must not end the daemon (and with it the shutdown save).
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])
        .context("cannot install signal handlers")?;
    let conf = std::fs::read_to_string(CONF).unwrap_or_default();
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let s = settings(&conf, &line).unwrap_or_else(|e| {
        say(&format!("{e:#}; using the defaults"));
        defaults()
    });
    let info = Session::load(paths)?.info;
    let clean = info.asked == BootType::Clean;
    match (clean, s.checkpoint) {
        (true, _) => say("clean boot: this session is not saved"),
        (false, Some(m)) => say(&format!(
            "checkpoints every {m} min when something changed (at most {} an hour); \
             SIGTERM: save and exit; SIGUSR1: save now",
            human(s.budget)
        )),
        (false, None) => say("checkpoints off: saving at shutdown and on demand (SIGUSR1)"),
    }
    // A trial boot's health check and commit, or a failed trial said.
    crate::slot::trial::start(paths);
    let mut spent = Spent::load(paths);
    let mut was_off = None;
    let mut last = Instant::now();
    let mut idle_checked = Instant::now();
    let mut watch = Watch::default();
    let mut watched = Instant::now();
    loop {
        for signal in signals.pending() {
            if signal == SIGHUP {
                continue;
            }
            if signal != SIGUSR1 {
                if log.is_some() {
                    if let Err(e) = output_to(Path::new(CONSOLE), false) {
                        say(&format!(
                            "{e:#}: the shutdown save's messages stay in the log"
                        ));
                    }
                }
                say("the system is stopping: saving the session");
                return save(paths, SaveOptions::new(Trigger::Shutdown)).map(drop);
            }
            if let Err(e) = save(paths, SaveOptions::new(Trigger::Demand)) {
                say(&format!("error: {e:#}"));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        if let Some(every) = s.watch {
            if watched.elapsed() >= Duration::from_secs(u64::from(every)) {
                watched = Instant::now();
                let saving = saving(paths, clean, &s);
                look_at_upper(
                    paths,
                    &info.upper,
                    &mut watch,
                    &saving,
                    log.is_some(),
                    &mut spent,
                );
            }
        }
        if clean {
            continue;
        }
        // Checkpoints and compaction write to the stick: not while saving
        // is off (said once each time it is turned off or on).
        let off = onoff::why_off(paths);
        if off != was_off {
            match &off {
                Some(why) => say(&format!(
                    "saving is off ({why}): no checkpoint, no compaction"
                )),
                None => say("saving is on again: checkpoints resume"),
            }
            was_off = off.clone();
        }
        if off.is_some() {
            continue;
        }
        if let Some(minutes) = s.checkpoint {
            if last.elapsed() >= Duration::from_secs(u64::from(minutes) * 60) {
                last = Instant::now();
                checkpoint(paths, s.budget, &mut spent);
            }
        }
        if idle_checked.elapsed() >= Duration::from_secs(60) {
            idle_checked = Instant::now();
            if is_idle(Path::new("/proc/loadavg")) {
                compact_when_idle(paths);
            }
        }
    }
}

/// A checkpoint, unless it would overspend the hourly budget.
fn checkpoint(paths: &Paths, budget: u64, spent: &mut Spent) {
    let upper = session_exclude(&paths.exclude)
        .and_then(|ex| space::estimate(&paths.upperdir, &ex))
        .map_or(0, |e| e.data);
    let used = spent.in_last_hour(now_secs());
    if used + upper > budget {
        say(&format!(
            "checkpoint skipped: it would write up to {} and checkpoints wrote {} in the last \
             hour (budget {} an hour, checkpoint-budget in {CONF}); the session is saved at \
             shutdown",
            human(upper),
            human(used),
            human(budget)
        ));
        return;
    }
    save_checkpoint(paths, spent);
}

/// A checkpoint, its bytes added to the budget's record. (The upper's
/// watch calls it directly: a session about to run out of RAM is saved
/// whatever checkpoints wrote this hour.)
fn save_checkpoint(paths: &Paths, spent: &mut Spent) {
    match save(paths, SaveOptions::new(Trigger::Checkpoint)) {
        Ok(crate::save::Outcome::Saved { bytes, .. }) => spent.add(now_secs(), bytes),
        Ok(_) => {}
        Err(e) => say(&format!("checkpoint failed: {e:#}")),
    }
}

/// One look at the upper of kind `upper` (boot.json's): warns when it
/// crossed a threshold, and checkpoints when the watch says so.
fn look_at_upper(
    paths: &Paths,
    upper: &str,
    watch: &mut Watch,
    saving: &Saving,
    syslog: bool,
    spent: &mut Spent,
) {
    let sample = Sources::system(paths).sample(upper);
    for action in watch.decide(&sample, saving) {
        match action {
            Action::Warn {
                threshold,
                pressure,
            } => {
                let largest = pressure::largest_dirs(&paths.upperdir);
                warn(
                    &watch::message(threshold, &pressure, saving, &largest),
                    syslog,
                );
            }
            Action::Checkpoint => save_checkpoint(paths, spent),
        }
    }
}

/// Whether and how the session is saved, for the upper's watch.
fn saving(paths: &Paths, clean: bool, s: &Settings) -> Saving {
    if clean {
        return Saving::Off("clean boot, ramstick.boot=clean".into());
    }
    match (onoff::why_off(paths), s.checkpoint) {
        (Some(why), _) => Saving::Off(why.to_string()),
        (None, Some(_)) => Saving::Checkpoints,
        (None, None) => Saving::AtShutdown,
    }
}

/// Says the upper's warning `lines` everywhere someone may read it: the
/// console, the daemon's log (the journal under systemd), syslog when
/// there is no journal (`syslog`: the daemon logs to a file) and the
/// terminals of logged-in users. A channel that fails is said in the log.
fn warn(lines: &[String], syslog: bool) {
    for line in lines {
        say(line);
    }
    let text: String = lines.iter().map(|l| format!("ramstick: {l}\n")).collect();
    let console = std::fs::OpenOptions::new()
        .append(true)
        .open(CONSOLE)
        .and_then(|mut c| std::io::Write::write_all(&mut c, text.as_bytes()));
    if let Err(e) = console {
        say(&format!("cannot warn on {CONSOLE}: {e}"));
    }
    if syslog {
        let said = std::process::Command::new("logger")
            .args(["-t", "ramstick-saver", "-p", "user.warning", "--"])
            .arg(lines.join(" "))
            .status();
        if let Err(e) = said {
            if e.kind() != std::io::ErrorKind::NotFound {
                say(&format!("cannot run logger: {e}"));
            }
        }
    }
    match std::process::Command::new("wall")
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut wall) => {
            if let Some(mut stdin) = wall.stdin.take() {
                // A broken pipe only means wall is gone: its status says more.
                let _ = std::io::Write::write_all(&mut stdin, text.as_bytes());
            }
            if let Err(e) = wall.wait() {
                say(&format!("cannot run wall: {e}"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => say(&format!("cannot run wall: {e}")),
    }
}

/// True when the 1-minute load average is low.
fn is_idle(loadavg: &Path) -> bool {
    std::fs::read_to_string(loadavg)
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .is_some_and(|load| load < 0.3)
}

fn compact_when_idle(paths: &Paths) {
    let result = lock(&paths.state).and_then(|_lock| {
        let mut session = Session::load(paths)?;
        maintain::compact_if_due(paths, &mut session, Budget::Idle)
    });
    if let Err(e) = result {
        say(&format!(
            "idle compaction failed: {e:#} (the saved state is unchanged)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_defaults_then_the_file_then_the_command_line() {
        assert_eq!(settings("", "").unwrap(), defaults());
        assert_eq!(defaults().checkpoint, Some(15));
        let s = settings("# mine\ncheckpoint = 5\ncheckpoint-budget = 64M\n", "quiet").unwrap();
        assert_eq!(
            s,
            Settings {
                checkpoint: Some(5),
                budget: 64 << 20,
                watch: Some(10),
            }
        );
        let s = settings("checkpoint = 5\n", "ramstick.checkpoint=off").unwrap();
        assert_eq!(s.checkpoint, None);
        let s = settings("checkpoint = off\n", "ramstick.checkpoint=30").unwrap();
        assert_eq!(s.checkpoint, Some(30));
        assert_eq!(settings("watch = 2\n", "").unwrap().watch, Some(2));
        assert_eq!(settings("watch = off\n", "").unwrap().watch, None);
        for bad in [
            "checkpoint = 0",
            "checkpoint-budget = 5%",
            "speed = 3",
            "checkpoint",
            "watch = 0",
            "watch = soon",
        ] {
            let err = format!("{:#}", settings(bad, "").unwrap_err());
            assert!(err.contains("saver.conf line 1"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_budget_forgets_what_is_older_than_an_hour_and_outlives_the_daemon() {
        let dir = ramstick_testkit::TempDir::new("saver-budget");
        let paths = Paths {
            state: dir.path().to_path_buf(),
            ..Paths::system()
        };
        let mut spent = Spent::load(&paths);
        assert_eq!(spent.in_last_hour(10_000), 0);
        spent.add(5_000, 100);
        spent.add(9_000, 10);
        spent.add(9_500, 5);
        assert_eq!(spent.in_last_hour(9_600), 15);
        // A restarted daemon (or `saver status`) reads the same.
        let again = Spent::load(&paths);
        assert_eq!(again.in_last_hour(9_600), 15);
        assert_eq!(again.in_last_hour(12_700), 5);
        std::fs::write(dir.join("checkpoints"), "garbage\n7 x\n").unwrap();
        assert_eq!(Spent::load(&paths).in_last_hour(8), 0);
    }

    #[test]
    fn idleness_is_the_load_average() {
        let dir = ramstick_testkit::TempDir::new("saver-load");
        let f = dir.join("loadavg");
        std::fs::write(&f, "0.05 0.10 0.20 1/100 42\n").unwrap();
        assert!(is_idle(&f));
        std::fs::write(&f, "1.50 0.10 0.20 1/100 42\n").unwrap();
        assert!(!is_idle(&f));
        assert!(!is_idle(&dir.join("missing")));
    }
}
