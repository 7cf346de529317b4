//! Chunks: the unit sled stores. A chunk is the records staged by one write-out (typically one
//! network read's worth), as JSON lines, keyed by the id of its first record. One sled entry per
//! chunk instead of one per row keeps sled's per-entry costs off the hot path.

use super::record::EventId;

/// Chunks are written out once they reach this size, even mid-transaction (memory stays flat).
///
/// Measured (tests/it/memory.rs, 200,000-row transaction with events): sled keeps large values in
/// memory beyond its cache accounting: 256 KiB chunks peaked at 332 MiB RSS, 32 KiB at 185 MiB,
/// 8 KiB at 87 MiB. Per-row entries cost throughput instead; 8 KiB keeps both in bounds.
pub const CHUNK_BYTES: usize = 8 * 1024;

/// Newline-terminated `lines` cut into pieces of at most `max` bytes, each of whole lines (a line
/// longer than `max` is a piece of its own).
pub fn pieces(lines: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = lines;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = None;
        for end in rest
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
        {
            if end > max {
                cut = cut.or(Some(end));
                break;
            }
            cut = Some(end);
        }
        let (piece, tail) = rest.split_at(cut.unwrap_or(rest.len()));
        rest = tail;
        Some(piece)
    })
}

/// The records (JSON lines without their newline) of a chunk.
pub fn lines(chunk: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// The id of a record line: read from the prefix `{"id":"XXXXXXXXXXXXXXXX:XXXXXXXX"` that capture
/// writes, without parsing the rest; any other key order falls back to a JSON parse.
pub fn line_id(line: &[u8]) -> Option<EventId> {
    const PREFIX: &[u8] = b"{\"id\":\"";
    let fast = line
        .strip_prefix(PREFIX)
        .and_then(|rest| std::str::from_utf8(rest.get(..25)?).ok()?.parse().ok());
    fast.or_else(|| {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: EventId,
        }
        serde_json::from_slice::<IdOnly>(line).ok().map(|r| r.id)
    })
}

/// Whether a record line lists deliveries, without decoding it: the capture writes `deliveries`
/// as the record's last key (see `capture::RecordRef`), so such a line ends with `"]}`, which no
/// other record's line does (its last key is an object, a string-valued row or null).
pub fn has_deliveries(line: &[u8]) -> bool {
    const KEY: &[u8] = b",\"deliveries\":[\"";
    line.ends_with(b"\"]}") && line.windows(KEY.len()).rev().any(|w| w == KEY)
}

/// Keeps the lines of `chunk` that `keep` accepts; `None` when none is left.
pub fn retain(chunk: &[u8], mut keep: impl FnMut(EventId) -> bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(chunk.len());
    for line in lines(chunk) {
        if line_id(line).is_some_and(&mut keep) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn line(lsn: u64, index: u32) -> String {
        format!(
            "{{\"id\":\"{}\",\"x\":1}}\n",
            EventId {
                commit_lsn: Lsn(lsn),
                index
            }
        )
    }

    #[test]
    fn pieces_are_whole_lines_and_at_most_the_size_but_for_a_longer_line() {
        let cut = |s: &'static str, max| {
            pieces(s.as_bytes(), max)
                .map(|p| std::str::from_utf8(p).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(cut("", 8), Vec::<&str>::new());
        assert_eq!(cut("ab\ncd\nef\n", 6), ["ab\ncd\n", "ef\n"]);
        assert_eq!(cut("ab\ncd\nef\n", 9), ["ab\ncd\nef\n"]);
        assert_eq!(cut("ab\nlong line\ncd\n", 5), ["ab\n", "long line\n", "cd\n"]);
        assert_eq!(cut("ab\ncd", 4), ["ab\n", "cd"]);
    }

    #[test]
    fn line_ids_are_read_from_the_prefix_and_chunks_can_be_trimmed() {
        let chunk = format!("{}{}{}", line(10, 0), line(10, 1), line(20, 0));
        let ids: Vec<_> = lines(chunk.as_bytes()).map(|l| line_id(l).unwrap()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            ids[2],
            EventId {
                commit_lsn: Lsn(20),
                index: 0
            }
        );
        let kept = retain(chunk.as_bytes(), |id| id.commit_lsn <= Lsn(10)).unwrap();
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            format!("{}{}", line(10, 0), line(10, 1))
        );
        assert!(retain(chunk.as_bytes(), |_| false).is_none());
        assert!(line_id(b"{\"op\":\"insert\"}").is_none());
    }

    #[test]
    fn only_lines_whose_last_key_lists_deliveries_are_picked() {
        let with =
            br#"{"id":"x","new":{"v":"[\"a\"]"},"event":{"data":{"errors":[]}},"deliveries":["i1","i2"]}"#;
        assert!(has_deliveries(with));
        for without in [
            &br#"{"id":"x","new":{"v":"[\"a\"]"},"event":{"data":{"errors":[]}}}"#[..],
            br#"{"id":"x","new":{"v":"ends with \"]"}}"#,
            br#"{"id":"x","new":null}"#,
            br#"{"id":"x","deliveries":[]}"#,
        ] {
            assert!(!has_deliveries(without), "{}", String::from_utf8_lossy(without));
        }
    }
}
