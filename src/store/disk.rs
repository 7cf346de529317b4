//! The store's size on disk and its bound (`[queue] max_disk`).
//!
//! A background thread sums the sizes of every file under the store's directory (sled keeps `db`,
//! `conf`, `snap.*` and `blobs/` there) once a second and caches the figure, so metrics, `/readyz`
//! and the capture loop read it for free. When the size reaches the bound, [`DiskWatch::full`]
//! turns true and capture stops reading WAL; it turns false again once the size is below
//! [`RESUME_PERCENT`] of the bound (hysteresis: the store does not flap at the bound).
//!
//! The bound is checked once a second, so the store may pass it by what capture writes in a second.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

/// How often the directory is measured.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);
/// Capture resumes once the store is below this share of the bound.
pub const RESUME_PERCENT: u64 = 95;

struct Shared {
    path: PathBuf,
    max_bytes: u64,
    bytes: AtomicU64,
    full: watch::Sender<bool>,
}

/// The cached size of the store's directory and whether it is at its bound. Cheap to clone; the
/// measuring thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct DiskWatch {
    shared: Arc<Shared>,
}

impl DiskWatch {
    /// Measures `path` now, then once every [`MEASURE_EVERY`] on a background thread.
    pub fn start(path: &Path, max_bytes: u64) -> DiskWatch {
        let (full, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            max_bytes,
            bytes: AtomicU64::new(0),
            full,
        });
        shared.measure();
        if let Some(free) = free_bytes(path) {
            let room = shared.bytes.load(Ordering::Relaxed).saturating_add(free);
            if !bound_fits(max_bytes, room) {
                tracing::warn!(
                    path = %path.display(),
                    max_disk = max_bytes,
                    room_bytes = room,
                    "[queue] max_disk ({}) is more than the queue can ever take on its filesystem ({} now: its own size plus the free space): the filesystem fills before the bound holds, and then capture stops on write errors; set [queue] max_disk below that",
                    show(max_bytes),
                    show(room)
                );
            }
        }
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("queue-disk".into())
            .spawn(move || measure_while_watched(weak))
            .expect("spawn queue disk thread");
        DiskWatch { shared }
    }

    /// The store's size on disk at the last measurement, in bytes.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.shared.max_bytes
    }

    /// True while the store is at its bound (until it is back under [`RESUME_PERCENT`] of it).
    pub fn is_full(&self) -> bool {
        *self.shared.full.borrow()
    }

    /// Watch the bound: true while capture must not read WAL.
    pub fn full(&self) -> watch::Receiver<bool> {
        self.shared.full.subscribe()
    }

    /// Why capture is paused, for `/readyz`; `None` while under the bound.
    pub fn reason(&self) -> Option<String> {
        self.is_full().then(|| {
            format!(
                "the queue reached its disk bound: {} on disk at {}, [queue] max_disk = {}; capture is paused (PostgreSQL keeps the WAL, nothing is confirmed early) until the queue is below {} % of the bound; raise [queue] max_disk and restart",
                show(self.bytes()),
                self.shared.path.display(),
                show(self.shared.max_bytes),
                RESUME_PERCENT,
            )
        })
    }
}

/// Whether a bound of `max_bytes` can be reached before the filesystem is full, `room` being the
/// store's size plus the filesystem's free space.
fn bound_fits(max_bytes: u64, room: u64) -> bool {
    max_bytes <= room
}

/// Bytes an unprivileged writer may still write on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct it is given and reads the NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

fn measure_while_watched(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(MEASURE_EVERY);
        match shared.upgrade() {
            Some(s) => s.measure(),
            None => return,
        }
    }
}

impl Shared {
    fn measure(&self) {
        // a file removed while it is listed is simply not counted; an unreadable directory keeps
        // the last figure
        let Ok(bytes) = dir_bytes(&self.path) else {
            return;
        };
        self.bytes.store(bytes, Ordering::Relaxed);
        let was = *self.full.borrow();
        let now = if was {
            bytes.saturating_mul(100) >= self.max_bytes.saturating_mul(RESUME_PERCENT)
        } else {
            bytes >= self.max_bytes
        };
        if now != was {
            self.full.send_replace(now);
            if now {
                tracing::warn!(
                    path = %self.path.display(),
                    disk_bytes = bytes,
                    max_disk = self.max_bytes,
                    "the queue reached [queue] max_disk: capture stops reading WAL until it is back under {RESUME_PERCENT} % of the bound (raise [queue] max_disk and restart to go on now)"
                );
            } else {
                tracing::info!(
                    path = %self.path.display(),
                    disk_bytes = bytes,
                    max_disk = self.max_bytes,
                    "the queue is back under [queue] max_disk: capture reads WAL again"
                );
            }
        }
    }
}

/// The sum of the sizes of every file under `path`, recursively, but for a snapshot sled is
/// writing (`snap.*.generating`, renamed over the previous one when complete): counting both
/// for a moment would make the size jump past the bound and back.
pub fn dir_bytes(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != path => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if !entry.file_name().to_string_lossy().ends_with(".generating") {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// A size for people: `"10.0 GiB"`, `"512 B"`.
pub fn show(bytes: u64) -> String {
    const NAMES: &[&str] = &["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < NAMES.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", NAMES[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_every_file_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), vec![0u8; 3000]).unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/x")).unwrap();
        std::fs::write(dir.path().join("blobs/x/1"), vec![0u8; 500]).unwrap();
        std::fs::write(dir.path().join("snap.00AB.generating"), vec![0u8; 700]).unwrap();
        assert_eq!(dir_bytes(dir.path()).unwrap(), 3500);
        assert!(dir_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_bound_past_the_filesystems_room_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).expect("statvfs works on a temporary directory");
        assert!(free > 0);
        assert!(bound_fits(free, free) && !bound_fits(free + 1, free));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_bound_is_reached_at_max_and_left_below_95_percent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        std::fs::write(&file, vec![0u8; 900]).unwrap();
        let watch = DiskWatch::start(dir.path(), 1000);
        assert!(!watch.is_full() && watch.reason().is_none());
        std::fs::write(&file, vec![0u8; 1000]).unwrap();
        watch.shared.measure();
        assert!(watch.is_full());
        let reason = watch.reason().unwrap();
        assert!(reason.contains("max_disk = 1000 B"), "{reason}");
        std::fs::write(&file, vec![0u8; 960]).unwrap();
        watch.shared.measure();
        assert!(watch.is_full(), "hysteresis: still full at 96 %");
        std::fs::write(&file, vec![0u8; 940]).unwrap();
        watch.shared.measure();
        assert!(!watch.is_full());
        assert_eq!(watch.bytes(), 940);
    }

    #[test]
    fn sizes_show_in_binary_units() {
        assert_eq!(show(512), "512 B");
        assert_eq!(show(10 << 30), "10.0 GiB");
        assert_eq!(show(3 << 19), "1.5 MiB");
    }
}
