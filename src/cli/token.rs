//! `fieldsync token`: a stream token for one organisation's (or wedding's) live stream.

use std::process::ExitCode;
use std::time::Duration;

use super::{load, ConfigArg};
use crate::token::{Grant, Signer};

/// The longest a stream token may be good for: it is a bearer grant handed to browsers, and it
/// cannot be revoked but by changing the key.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The organisation whose live stream the token opens.
    #[arg(long)]
    organization: String,
    /// Limit the token to this wedding's events.
    #[arg(long)]
    wedding: Option<String>,
    /// How long the token is good for, e.g. 15m, 1h, 7d (at most 30 days).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("{e}: use a duration such as 15m, 1h or 7d"))?;
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err("must be from 1s to 30 days (30d)".to_owned());
    }
    Ok(ttl)
}

/// Prints the token on standard output, and what it opens until when on standard error.
pub fn token(args: TokenArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(key) = &config.http.stream_signing_key else {
        eprintln!(
            "error: [http] stream_signing_key_file is not set: make a key with `fieldsync secret keygen > stream.key`, \
             set stream_signing_key_file = \"stream.key\" under [http], and restart the daemon"
        );
        return ExitCode::from(2);
    };
    let exp = chrono::Utc::now().timestamp() + args.ttl.as_secs() as i64;
    let grant = Grant {
        organization: args.organization,
        wedding: args.wedding,
        exp,
    };
    println!("{}", Signer::new(key.expose()).sign(&grant));
    let expires =
        chrono::DateTime::from_timestamp(exp, 0).map_or_else(|| exp.to_string(), |t| t.to_rfc3339());
    match &grant.wedding {
        Some(w) => eprintln!(
            "opens wedding {w} of organization {} until {expires}",
            grant.organization
        ),
        None => eprintln!(
            "opens organization {}'s live stream until {expires}",
            grant.organization
        ),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_durations_within_thirty_days() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30d"), Ok(MAX_TTL));
        assert!(parse_ttl("31d").unwrap_err().contains("30 days"));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").unwrap_err().contains("such as 15m"));
    }
}
