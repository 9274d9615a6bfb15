use super::*;
use std::sync::Mutex;

/// A recording fake loader: logs start and end of every insert, sleeps a
/// little so that threads overlap, fails the jobs in `fail`.
struct Fake {
    log: Mutex<Vec<(usize, bool)>>,
    fail: Vec<usize>,
}

impl Fake {
    fn new(fail: &[usize]) -> Fake {
        Fake {
            log: Mutex::new(Vec::new()),
            fail: fail.to_vec(),
        }
    }

    fn insert(&self, i: usize) -> Result<(), String> {
        self.log.lock().unwrap().push((i, false));
        std::thread::sleep(Duration::from_millis(5 + (i as u64 * 7) % 11));
        self.log.lock().unwrap().push((i, true));
        if self.fail.contains(&i) {
            Err(format!("job {i} failed"))
        } else {
            Ok(())
        }
    }

    /// Position in the log of job `i` starting (`false`) or ending (`true`).
    fn at(&self, i: usize, end: bool) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().position(|&e| e == (i, end)).unwrap()
    }
}

fn jobs(needs: &[&[usize]]) -> Vec<Job> {
    needs.iter().map(|n| Job { needs: n.to_vec() }).collect()
}

/// ext4-like: 0 crc32c, 1 jbd2 (0), 2 mbcache, 3 ext4 (0 1 2); and an
/// independent chain: 4 scsi_mod, 5 libata (4), 6 ahci (4 5); 7 loop.
const GRAPH: &[&[usize]] = &[&[], &[0], &[], &[0, 1, 2], &[], &[4], &[4, 5], &[]];

#[test]
fn every_job_runs_once_after_all_it_needs() {
    for workers in [1, 2, 4] {
        let fake = Fake::new(&[]);
        let out = run(&jobs(GRAPH), workers, &|i| fake.insert(i), &|| {
            "died".to_string()
        });
        assert_eq!(out.len(), GRAPH.len());
        assert!(out.iter().all(|o| o.0.is_ok()));
        assert_eq!(fake.log.lock().unwrap().len(), 2 * GRAPH.len(), "each once");
        for (i, needs) in GRAPH.iter().enumerate() {
            for &n in *needs {
                assert!(
                    fake.at(n, true) < fake.at(i, false),
                    "{workers} workers: {i} started before {n} ended"
                );
            }
        }
    }
}

#[test]
fn independent_jobs_overlap_with_several_workers() {
    let fake = Fake::new(&[]);
    run(&jobs(GRAPH), 2, &|i| fake.insert(i), &|| "died".to_string());
    let log = fake.log.lock().unwrap();
    let overlapped = log.windows(2).any(|w| !w[0].1 && !w[1].1);
    assert!(overlapped, "no two jobs ran at once: {log:?}");
}

#[test]
fn one_worker_keeps_the_given_order() {
    let fake = Fake::new(&[]);
    run(&jobs(GRAPH), 1, &|i| fake.insert(i), &|| "died".to_string());
    let starts: Vec<usize> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| !e.1)
        .map(|e| e.0)
        .collect();
    assert_eq!(starts, (0..GRAPH.len()).collect::<Vec<_>>());
}

#[test]
fn a_failure_is_carried_and_its_dependents_still_run() {
    let fake = Fake::new(&[0, 5]);
    let out = run(&jobs(GRAPH), 2, &|i| fake.insert(i), &|| "died".to_string());
    let errors: Vec<(usize, &str)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.0.as_ref().err().map(|e| (i, e.as_str())))
        .collect();
    assert_eq!(errors, [(0, "job 0 failed"), (5, "job 5 failed")]);
    // As kmod would: jbd2 and ext4 are still tried after crc32c failed.
    assert!(fake.at(0, true) < fake.at(3, false));
}

#[test]
fn needs_on_later_jobs_cannot_deadlock() {
    // softdep a pre: b and b pre: a: the order given decides.
    let fake = Fake::new(&[]);
    let out = run(&jobs(&[&[1], &[0]]), 2, &|i| fake.insert(i), &|| {
        "died".to_string()
    });
    assert!(out.iter().all(|o| o.0.is_ok()));
    assert!(fake.at(0, true) < fake.at(1, false));
}

#[test]
fn a_panicking_insert_is_an_error_not_a_hang() {
    let out = run(
        &jobs(&[&[], &[0]]),
        2,
        &|i| if i == 0 { panic!("boom") } else { Ok(()) },
        &|| "died".to_string(),
    );
    assert_eq!(out[0].0, Err("died".to_string()));
    assert_eq!(out[1].0, Ok(()));
}

#[test]
fn no_jobs_is_no_work() {
    let out = run(&[], 3, &|_| Ok::<(), String>(()), &|| "died".to_string());
    assert!(out.is_empty());
}
