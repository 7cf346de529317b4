//! `fieldsync secret`: a new key, and a secret encrypted for an integration's config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum SecretCommand {
    /// Print a new random key (32 bytes, base64) for [dispatch] secrets_key_file.
    Keygen,
    /// Read a secret from standard input and print {"encrypted": "fsenc1:…"} for an integration's config.
    Encrypt {
        /// The key file ([dispatch] secrets_key_file).
        #[arg(long)]
        key_file: PathBuf,
    },
}

pub(super) fn secret(what: SecretCommand) -> ExitCode {
    use crate::credentials;
    match what {
        SecretCommand::Keygen => {
            println!("{}", credentials::generate_key());
            ExitCode::SUCCESS
        }
        SecretCommand::Encrypt { key_file } => {
            let key = match std::fs::read_to_string(&key_file)
                .map_err(|e| e.to_string())
                .and_then(|t| credentials::parse_key(t.trim()))
            {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: --key-file {}: {e}", key_file.display());
                    return ExitCode::from(2);
                }
            };
            let mut plain = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut plain) {
                eprintln!("error: cannot read the secret from standard input: {e}");
                return ExitCode::from(1);
            }
            let plain = plain.trim_end_matches(['\n', '\r']);
            if plain.is_empty() {
                eprintln!("error: standard input is empty: pipe the secret in (e.g. printf %s \"$KEY\" | fieldsync secret encrypt --key-file …)");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                serde_json::json!({ "encrypted": credentials::encrypt(&key, plain) })
            );
            ExitCode::SUCCESS
        }
    }
}
