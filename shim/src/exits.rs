//! Exit tracking. The launcher reaps every container process and reports `(pid, status)` on
//! its exit channel; this thread hands each exit to the watcher registered for that pid.
//! Registration happens while the launcher is locked (see `Zygote::launch`), so an exit
//! that arrives before its watcher waits in `unclaimed` and can only belong to that pid.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use runtime::launch::{Exit, ExitChannel};

type Watcher = Box<dyn FnOnce(Exit) + Send>;

#[derive(Default)]
struct Table {
    watchers: HashMap<i32, Watcher>,
    unclaimed: HashMap<i32, Exit>,
}

#[derive(Clone, Default)]
pub struct ExitMonitor {
    table: Arc<Mutex<Table>>,
}

impl ExitMonitor {
    pub fn start(channel: ExitChannel) -> ExitMonitor {
        let monitor = ExitMonitor::default();
        let m = monitor.clone();
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                while let Some(exit) = channel.recv() {
                    let watcher = {
                        let mut t = m.table.lock().unwrap_or_else(|p| p.into_inner());
                        match t.watchers.remove(&exit.pid) {
                            Some(w) => Some(w),
                            None => {
                                t.unclaimed.insert(exit.pid, exit);
                                None
                            }
                        }
                    };
                    if let Some(w) = watcher {
                        w(exit);
                    }
                }
                log::warn!("launcher exit channel closed");
            })
            .expect("spawn exits thread");
        monitor
    }

    /// Calls `watcher` once `pid` exits (at once if it already has).
    pub fn watch(&self, pid: i32, watcher: impl FnOnce(Exit) + Send + 'static) {
        let early = {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            match t.unclaimed.remove(&pid) {
                Some(exit) => Some(exit),
                None => {
                    t.watchers.insert(pid, Box::new(watcher));
                    return;
                }
            }
        };
        if let Some(exit) = early {
            watcher(exit);
        }
    }
}
