//! The README's first command: `fieldsync demo` shows the scripted edits captured, delivered to
//! every CRM sandbox, and cleans up.

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
    assert!(stdout.contains("12 changes captured"), "{stdout}");
    // and delivered to every CRM sandbox, as each keeps it
    for crm in [
        "Tave job \"Amara & Tom\": eventDate \"2027-06-19\", guestCount 145, events [Ceremony 13:00:00, Dinner 18:30:00]",
        "Google Calendar: \"Ceremony · Amara & Tom\" at 2027-06-19T13:00:00 Europe/London (Kew Gardens",
        "\"Amara & Tom\": guests_total \"145\", wedding_date \"2027-06-19\"",
        "Light Blue inbox: ",
        "HoneyBook (Zapier catch hook): ",
        "Tave is back: guestCount 155 arrived once it answered",
        "dead letter, nothing sent to the CRMs: the guest_count_matrix value failed validation: adults (non_negative_integer)",
    ] {
        assert!(stdout.contains(crm), "{crm:?} missing from:\n{stdout}");
    }
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
