//! The README's first command (`scripts/demo.sh`, which runs `fieldsync-dev demo`) shows the
//! scripted edits captured, delivered to every CRM sandbox (each delivery as it happens, with its
//! latency), and cleans up.

use std::collections::HashSet;
use std::process::Command;

#[test]
fn the_demo_captures_the_scripted_edits_and_leaves_nothing_behind() {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync-dev"))
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
        "fieldsync=> SELECT integration_type, state, delivered, retries, dead_letters FROM integrations",
    ] {
        assert!(stdout.contains(crm), "{crm:?} missing from:\n{stdout}");
    }
    // a field change is shown from its event (stored once: the record keeps no row image)
    assert!(
        stdout.contains("guest_count_matrix = {\"adults\":120,\"children\":14,\"infants\":3}"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "guest_count_matrix: {\"adults\":120,\"children\":14,\"infants\":3} -> {\"adults\":128,\"children\":12,\"infants\":3}"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("typo"), "a rolled-back edit was shown: {stdout}");
    // the admin port's answer: every integration active, each with its one dead letter (the
    // invalid value) except Google Calendar, which takes only the timeline
    for kind in INTEGRATIONS {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(kind) && l.contains("active"))
            .unwrap_or_else(|| panic!("no admin port row for {kind} in:\n{stdout}"));
        let dead: u32 = row.split_whitespace().last().unwrap().parse().unwrap();
        assert_eq!(dead, u32::from(kind != "google_calendar"), "{row}");
    }
    the_live_view_shows_each_delivery_with_its_latency(&stdout);
    let queue_dir = stdout
        .lines()
        .find_map(|l| l.split("queue in ").nth(1))
        .map(std::path::PathBuf::from)
        .expect("the demo names its queue directory");
    assert!(!queue_dir.exists(), "the demo removed {}", queue_dir.display());
}

const INTEGRATIONS: [&str; 5] = ["tave", "google_calendar", "stripe", "lightblue", "honeybook"];

/// Each delivery is shown once, under its change's number, with commit->CRM and request times;
/// Tave's outage shows as retries, the invalid value as dead letters, and the summary after the
/// script counts what was shown for every system.
fn the_live_view_shows_each_delivery_with_its_latency(stdout: &str) {
    // `  #8   -> lightblue       delivered    commit->CRM 2.3 ms (request 1.5 ms)`
    let attempts: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 3 && w[0].starts_with('#') && w[1] == "->")
        .collect();
    let unnumbered = stdout
        .lines()
        .find(|l| l.contains("   -> ") && !l.trim_start().starts_with('#'));
    assert_eq!(
        unnumbered, None,
        "an attempt shown before its change in:\n{stdout}"
    );
    let delivered: Vec<&Vec<&str>> = attempts.iter().filter(|w| w[3] == "delivered").collect();
    let mut once = HashSet::new();
    for w in &delivered {
        assert!(
            w.len() == 10
                && w[4] == "commit->CRM"
                && w[5].parse::<f64>().is_ok()
                && w[6] == "ms"
                && w[7] == "(request"
                && w[8].parse::<f64>().is_ok(),
            "a delivered line without its latencies: {w:?} in\n{stdout}"
        );
        assert!(once.insert((w[0], w[2])), "{w:?} shown twice in\n{stdout}");
    }
    let count = |name: &str| delivered.iter().filter(|w| w[2] == name).count();
    for name in INTEGRATIONS {
        assert!(count(name) > 0, "no delivery to {name} shown in\n{stdout}");
    }
    let retry_503 = |w: &&Vec<&str>| w[2] == "tave" && w[3] == "retry" && w.get(6) == Some(&"503");
    assert!(attempts.iter().filter(retry_503).count() >= 2, "{stdout}");
    let dead = |w: &&Vec<&str>| w[3] == "dead" && w.join(" ").contains("adults (non_negative_integer)");
    assert!(attempts.iter().filter(dead).count() >= 4, "{stdout}");

    // every delivery to Light Blue and HoneyBook before the CRMs are shown is one thing they hold
    let before_crms = stdout
        .split("delivered; what each CRM holds now:")
        .next()
        .unwrap();
    let shown_before = |name: &str| {
        before_crms
            .lines()
            .filter(|l| l.contains(&format!("-> {name} ")) && l.contains(" delivered "))
            .count()
    };
    for (name, holds) in [
        ("lightblue", "Light Blue inbox: {} submissions"),
        ("honeybook", "HoneyBook (Zapier catch hook): {} records"),
    ] {
        let holds = holds.replace("{}", &shown_before(name).to_string());
        assert!(stdout.contains(&holds), "{holds:?} missing from:\n{stdout}");
    }

    // `   tave              5 delivered   median     9 ms   max  1370 ms   (retries: 2, ...)`
    let summary: Vec<Vec<&str>> = stdout
        .split("commit->CRM latency per system")
        .nth(1)
        .expect("a latency summary after the script")
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        summary.iter().map(|w| w[0]).collect::<Vec<_>>(),
        INTEGRATIONS,
        "{stdout}"
    );
    for w in &summary {
        assert_eq!(
            w[1].parse::<usize>().ok(),
            Some(count(w[0])),
            "{w:?} in\n{stdout}"
        );
        assert!(
            w[2] == "delivered"
                && w[3] == "median"
                && w[4].parse::<u64>().is_ok()
                && w[5] == "ms"
                && w[6] == "max"
                && w[7].parse::<u64>().is_ok(),
            "{w:?} in\n{stdout}"
        );
    }
}
