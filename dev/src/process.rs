//! A daemon the benchmarks start as a child process. It is stopped when dropped, also when a
//! benchmark panics, so a failed run leaves no daemon behind holding its binary and its port.

use std::process::{Child, ExitStatus};

pub struct Spawned(Child);

impl Spawned {
    pub fn new(child: Child) -> Spawned {
        Spawned(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for it to exit.
    pub fn terminate(mut self) -> std::io::Result<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
