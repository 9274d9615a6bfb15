//! Boot work on a thread of its own while the boot goes on (the filesystem
//! modules and the kit copy run while init waits for the stick), joined
//! where its result is needed. Without a thread (none can be made) the work
//! runs at once, in the caller: the boot is slower, never different.

use anyhow::{anyhow, Result};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Work started by [`spawn`]; [`Background::wait`] gives its result.
pub enum Background<T> {
    Running(JoinHandle<Result<T>>),
    Done(Result<T>),
}

/// The work, shared by the thread that runs it and the caller that runs it
/// when no thread could be made.
type Slot<F> = Arc<Mutex<Option<F>>>;

/// Run `work` on a thread named `name`.
pub fn spawn<T, F>(name: &str, work: F) -> Background<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let slot: Slot<F> = Arc::new(Mutex::new(Some(work)));
    let theirs = Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(&theirs));
    match spawned {
        Ok(handle) => Background::Running(handle),
        Err(e) => {
            log::debug!("no thread for {name} ({e}): doing it now");
            Background::Done(run(&slot))
        }
    }
}

fn run<T, F: FnOnce() -> Result<T>>(slot: &Slot<F>) -> Result<T> {
    let work = slot.lock().ok().and_then(|mut w| w.take());
    match work {
        Some(work) => work(),
        None => Err(anyhow!("the background work was taken already")),
    }
}

impl<T> Background<T> {
    /// Wait for the work to end and take its result.
    pub fn wait(self) -> Result<T> {
        match self {
            Background::Running(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the background thread panicked"))),
            Background::Done(result) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn the_work_runs_beside_the_caller_and_wait_gives_its_result() {
        let (tx, rx) = mpsc::channel::<u32>();
        // The work waits for the caller: it runs on another thread.
        let job = spawn("test", move || Ok(rx.recv()? * 2));
        tx.send(21).unwrap();
        assert_eq!(job.wait().unwrap(), 42);
        let failed: Background<()> = spawn("test", || Err(anyhow!("no such module")));
        assert_eq!(failed.wait().unwrap_err().to_string(), "no such module");
    }

    #[test]
    fn work_run_in_the_caller_gives_the_same_result() {
        let slot: Slot<_> = Arc::new(Mutex::new(Some(|| Ok(7))));
        assert_eq!(Background::Done(run(&slot)).wait().unwrap(), 7);
        assert!(run(&slot).is_err(), "the work runs once");
    }
}
