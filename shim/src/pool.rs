//! Worker threads for the RPCs that can block (Create waits for the init's setup and hooks,
//! Start for the exec, Pause for the freeze, ...): started when work arrives and none is idle,
//! at most [`MAX_THREADS`], and gone after [`IDLE`] without work. An idle shim has none; a
//! burst cannot make it grow without bound.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use log::error;

pub const MAX_THREADS: usize = 16;
pub const IDLE: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Clone, Default)]
pub struct Pool(Arc<Inner>);

impl Pool {
    /// Runs `job` on a worker thread, in arrival order with other queued jobs.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        s.queue.push_back(Box::new(job));
        if s.idle > 0 {
            self.0.work.notify_one();
            return;
        }
        if s.threads >= MAX_THREADS {
            return; // a busy worker takes it next
        }
        s.threads += 1;
        drop(s);
        let inner = self.0.clone();
        let started = std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || work(&inner));
        if let Err(e) = started {
            // The queued job waits for a running worker; with none, nothing would run it.
            let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            s.threads -= 1;
            error!("start a worker thread: {e} ({} running)", s.threads);
        }
    }

    /// Worker threads alive now (for tests and the log).
    pub fn threads(&self) -> usize {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .threads
    }
}

/// Gives the pages of freed heap memory back to the kernel: what a Create or an exec storm
/// allocated and freed would otherwise stay resident in every idle shim. Done when the
/// last worker leaves, long after the RPCs that made the garbage have been answered.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn work(inner: &Inner) {
    let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = s.queue.pop_front() {
            drop(s);
            job();
            s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        s.idle += 1;
        let (guard, timeout) = inner
            .work
            .wait_timeout(s, IDLE)
            .unwrap_or_else(|p| p.into_inner());
        s = guard;
        s.idle -= 1;
        if timeout.timed_out() && s.queue.is_empty() {
            s.threads -= 1;
            let last = s.threads == 0;
            drop(s);
            if last {
                return_freed_memory();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_on_a_bounded_set_of_threads_that_go_away_when_idle() {
        let pool = Pool::default();
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        for i in 0..(MAX_THREADS * 2) {
            let (tx, gate) = (tx.clone(), gate.clone());
            pool.spawn(move || {
                let mut open = gate.0.lock().unwrap();
                while !*open {
                    open = gate.1.wait(open).unwrap();
                }
                tx.send(i).unwrap();
            });
        }
        assert_eq!(pool.threads(), MAX_THREADS);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut done: Vec<usize> = (0..MAX_THREADS * 2).map(|_| rx.recv().unwrap()).collect();
        done.sort();
        assert_eq!(done, (0..MAX_THREADS * 2).collect::<Vec<_>>());
        std::thread::sleep(IDLE + Duration::from_millis(500));
        assert_eq!(pool.threads(), 0);
    }
}
