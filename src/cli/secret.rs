//! `fieldsync secret`: a new key, and a secret encrypted for an integration's config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum SecretCommand {
    /// Print a new random key (32 bytes, base64) for [dispatch] secrets_key_file,
    /// [queue] encryption_key_file or [http] stream_signing_key_file.
    Keygen,
    /// Print the id of a [queue] encryption key, as the store's errors and `fieldsync status` name it.
    KeyId {
        /// The key file.
        key_file: PathBuf,
    },
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
        SecretCommand::KeyId { key_file } => match read_key(&key_file) {
            Ok(key) => {
                println!("{}", crate::store::cipher::KeyId::of(&key));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", key_file.display());
                ExitCode::from(2)
            }
        },
        SecretCommand::Encrypt { key_file } => {
            let key = match read_key(&key_file) {
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

fn read_key(path: &std::path::Path) -> Result<[u8; 32], String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| crate::credentials::parse_key(t.trim()))
}
