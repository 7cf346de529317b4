//! The README's first command: `fieldsync demo` shows the scripted edits captured and cleans up.

use std::process::Command;

use crate::support::daemon::binary;

#[test]
fn the_demo_captures_the_scripted_edits_and_leaves_nothing_behind() {
    let out = Command::new(binary())
        .args(["demo", "--exit-after-script"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("7 changes captured"), "{stdout}");
    assert!(
        stdout.contains("guest_count_matrix = {\"adults\": 120"),
        "{stdout}"
    );
    assert!(
        stdout.contains("value: {\"adults\": 120, \"infants\": 3, \"children\": 14} -> {\"adults\": 128"),
        "{stdout}"
    );
    assert!(!stdout.contains("typo"), "a rolled-back edit was shown: {stdout}");
    let queue_dir = stdout
        .lines()
        .find_map(|l| l.split("queue in ").nth(1))
        .map(std::path::PathBuf::from)
        .expect("the demo names its queue directory");
    assert!(!queue_dir.exists(), "the demo removed {}", queue_dir.display());
}
