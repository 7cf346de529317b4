//! `fieldsync-dev` is where the development commands live: its help lists `sandbox` and `demo`.

use std::process::Command;

/// The subcommand names of a clap `--help` page (the first word of each line under `Commands:`).
fn subcommands(help: &str) -> Vec<&str> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_dev_binary_lists_sandbox_and_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync-dev"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{help}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands = subcommands(&help);
    for command in ["sandbox", "demo"] {
        assert!(commands.contains(&command), "{command} missing from:\n{help}");
    }
}
