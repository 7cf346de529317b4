//! Deterministic event ids: the same wedding, kind and key always name the same event, so a
//! replayed insert meets 409 `duplicate` instead of making a second event.

/// The deterministic event id: base32hex (RFC 4648 §7, lowercase) of SHA-256 over the parts,
/// first 160 bits, 32 characters.
pub fn event_id(wedding_id: &str, kind: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut input = Vec::new();
    for part in [wedding_id, kind, key] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let bytes = &digest.as_ref()[..20];
    let mut out = String::with_capacity(32);
    for chunk in bytes.chunks(5) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(ALPHABET[((v >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::google::KIND_TIMELINE;

    #[test]
    fn google_event_ids_are_deterministic_base32hex() {
        let a = event_id("w1", KIND_TIMELINE, "ceremony");
        assert_eq!(a, event_id("w1", KIND_TIMELINE, "ceremony"));
        assert_ne!(a, event_id("w1", KIND_TIMELINE, "ceremony-2"));
        assert_ne!(a, event_id("w2", KIND_TIMELINE, "ceremony"));
        assert_eq!(a.len(), 32);
        // Google's rule for event ids: base32hex characters (a-v, 0-9), 5 to 1024 of them
        let base32hex = |b: u8| matches!(b, b'a'..=b'v' | b'0'..=b'9');
        assert!((5..=1024).contains(&a.len()) && a.bytes().all(base32hex), "{a}");
    }
}
