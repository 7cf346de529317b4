//! Raw byte scans of a directory: what anyone who can read the files sees, for tests of
//! encryption at rest and erasure.

use std::path::Path;

/// Every byte of every file under `root`.
pub fn raw_bytes(root: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.extend(std::fs::read(&path).expect("a readable file"));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}
