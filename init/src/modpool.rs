//! Loading modules from several threads: each starts once every module it
//! needs has been tried (booster does the same). finit_module(2) may run
//! concurrently; a module's own init waits on its hardware (AHCI probes its
//! links for most of a second under emulation), so an independent one,
//! ext4 say, loads meanwhile.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Threads inserting at once: one per CPU at most, and a few suffice.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// One module to insert: the indices of earlier jobs it needs.
pub struct Job {
    pub needs: Vec<usize>,
}

/// A job's outcome: what `insert` returned and how long it took.
pub type Outcome<E> = (Result<(), E>, Duration);

struct State<E> {
    /// Jobs not yet started whose needs are all done, lowest index first.
    ready: Vec<usize>,
    /// Needs not yet done, per job.
    waiting: Vec<usize>,
    outcomes: Vec<Option<Outcome<E>>>,
    running: usize,
}

/// Run `insert(i)` for every job `i` on up to `workers` threads, each after
/// the jobs it needs have finished (whatever their outcome: a dependency
/// that fails is reported where it fails, as a sequential loader would).
/// Needs on later jobs are ignored, so any order is free of cycles.
/// Returns the outcomes in job order; a job whose thread died is an error
/// made by `died`.
pub fn run<E: Send>(
    jobs: &[Job],
    workers: usize,
    insert: &(dyn Fn(usize) -> Result<(), E> + Sync),
    died: &(dyn Fn() -> E + Sync),
) -> Vec<Outcome<E>> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    let mut waiting = vec![0; jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        let mut needs: Vec<usize> = job.needs.iter().copied().filter(|&n| n < i).collect();
        needs.sort_unstable();
        needs.dedup();
        waiting[i] = needs.len();
        for n in needs {
            dependents[n].push(i);
        }
    }
    let ready = (0..jobs.len()).rev().filter(|&i| waiting[i] == 0).collect();
    let state = Mutex::new(State {
        ready,
        waiting,
        outcomes: (0..jobs.len()).map(|_| None).collect(),
        running: 0,
    });
    let wake = Condvar::new();
    let worker = || loop {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        let i = loop {
            if let Some(i) = st.ready.pop() {
                break i;
            }
            if st.running == 0 {
                return;
            }
            st = wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        };
        st.running += 1;
        drop(st);
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| insert(i)))
            .unwrap_or_else(|_| Err(died()));
        let took = start.elapsed();
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        st.running -= 1;
        st.outcomes[i] = Some((result, took));
        for &d in &dependents[i] {
            st.waiting[d] -= 1;
            if st.waiting[d] == 0 {
                st.ready.push(d);
            }
        }
        // Lowest index first: the sequential order where the graph allows.
        st.ready.sort_unstable_by(|a, b| b.cmp(a));
        drop(st);
        wake.notify_all();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..workers.max(1)).map(|_| s.spawn(worker)).collect();
        worker();
        for h in handles {
            // A worker cannot die outside `insert` (caught above); joining
            // here keeps scope() from re-raising anything.
            let _ = h.join();
        }
    });
    let st = state.into_inner().unwrap_or_else(PoisonError::into_inner);
    st.outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| (Err(died()), Duration::ZERO)))
        .collect()
}

#[cfg(test)]
mod tests;
