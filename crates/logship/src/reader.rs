//! Bytes to lines for one file. Lines end at `\n` (a `\r` before it is kept; raw output ships
//! lines as they were). A line longer than `--max-line-bytes` is **split**: it is shipped as
//! consecutive pieces of at most that many bytes, each its own event, so nothing is lost and
//! no line is ever held whole in memory beyond the bound. Invalid UTF-8 is replaced (U+FFFD)
//! and counted. A last line without its newline waits until it is completed, or until the
//! caller flushes it at drain or exit.

use std::borrow::Cow;

/// What this reader has seen, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadCounts {
    pub lines: u64,
    pub split: u64,
    pub invalid_utf8: u64,
}

#[derive(Debug)]
pub struct LineReader {
    pending: Vec<u8>,
    max_line: usize,
    pub counts: ReadCounts,
}

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            pending: Vec::new(),
            max_line: max_line.max(1),
            counts: ReadCounts::default(),
        }
    }

    /// Bytes held for an incomplete line.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets an incomplete line (the file was truncated under it).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Feeds `chunk`, which starts at `chunk_start` in the file. `out` gets each complete line
    /// (without the newline) and the file offset just past it.
    pub fn feed(&mut self, chunk: &[u8], chunk_start: u64, out: &mut dyn FnMut(&[u8], u64)) {
        let mut rest = chunk;
        let mut rest_start = chunk_start;
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let end = rest_start + nl as u64 + 1;
                    if self.pending.is_empty() && nl <= self.max_line {
                        // The hot path: a whole line inside the chunk, shipped without a copy.
                        self.emit(&rest[..nl], end, out);
                    } else {
                        self.take_pending(&rest[..nl], rest_start, out);
                        let line = std::mem::take(&mut self.pending);
                        self.emit(&line, end, out);
                        self.pending = line;
                        self.pending.clear();
                    }
                    rest = &rest[nl + 1..];
                    rest_start = end;
                }
                None => {
                    self.take_pending(rest, rest_start, out);
                    break;
                }
            }
        }
    }

    /// Appends `part` to the pending line, shipping full-size pieces when it grows past the bound.
    fn take_pending(&mut self, part: &[u8], part_start: u64, out: &mut dyn FnMut(&[u8], u64)) {
        let mut part = part;
        let mut start = part_start;
        while self.pending.len() + part.len() > self.max_line {
            let room = self.max_line - self.pending.len();
            self.pending.extend_from_slice(&part[..room]);
            // A character is never cut in two (which would ship two U+FFFD): its first bytes
            // begin the next piece. A piece keeps at least one byte, so the loop moves on.
            let carried = incomplete_tail_len(&self.pending).min(self.pending.len() - 1);
            let piece_len = self.pending.len() - carried;
            let end = start + room as u64 - carried as u64;
            self.counts.split += 1;
            let mut piece = std::mem::take(&mut self.pending);
            self.emit(&piece[..piece_len], end, out);
            piece.drain(..piece_len);
            self.pending = piece;
            part = &part[room..];
            start += room as u64;
        }
        self.pending.extend_from_slice(part);
    }

    /// Ships an incomplete last line (drain, exit), ending at `end`.
    pub fn flush(&mut self, end: u64, out: &mut dyn FnMut(&[u8], u64)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line, end, out);
        }
    }

    fn emit(&mut self, line: &[u8], end: u64, out: &mut dyn FnMut(&[u8], u64)) {
        self.counts.lines += 1;
        match String::from_utf8_lossy(line) {
            Cow::Borrowed(_) => out(line, end),
            Cow::Owned(fixed) => {
                self.counts.invalid_utf8 += 1;
                out(fixed.as_bytes(), end)
            }
        }
    }
}

/// How many bytes at the end of `buf` are the start of a UTF-8 character whose other bytes are
/// not there yet (0 to 3). Only looks at the last three bytes.
pub fn incomplete_tail_len(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: its lead byte is further back
        }
        let needs = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, chunks: &[&[u8]]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut offset = 0;
        for c in chunks {
            reader.feed(c, offset, &mut |l, e| {
                out.push((String::from_utf8_lossy(l).into_owned(), e))
            });
            offset += c.len() as u64;
        }
        out
    }

    #[test]
    fn lines_across_chunks_keep_their_offsets() {
        let mut r = LineReader::new(1024);
        let out = lines(
            &mut r,
            &[
                b"one
tw", b"o
thr", b"ee",
            ],
        );
        assert_eq!(out, vec![("one".into(), 4), ("two".into(), 8)]);
        assert_eq!(r.pending_len(), 5);
        let mut flushed = Vec::new();
        r.flush(13, &mut |l, e| flushed.push((l.to_vec(), e)));
        assert_eq!(flushed, vec![(b"three".to_vec(), 13)]);
    }

    #[test]
    fn long_lines_are_split_into_bounded_pieces() {
        let mut r = LineReader::new(4);
        let out = lines(
            &mut r,
            &[b"abcdefghij
xy
"],
        );
        assert_eq!(
            out,
            vec![
                ("abcd".into(), 4),
                ("efgh".into(), 8),
                ("ij".into(), 11),
                ("xy".into(), 14)
            ]
        );
        assert_eq!(r.counts.split, 2);
        let mut r = LineReader::new(4);
        let out = lines(
            &mut r,
            &[
                b"abc", b"def", b"gh
",
            ],
        );
        assert_eq!(out, vec![("abcd".into(), 4), ("efgh".into(), 9)]);
    }

    #[test]
    fn a_split_never_cuts_a_character_in_two() {
        // "aé€😀" is 1 + 2 + 3 + 4 bytes; with 4-byte pieces each character moves whole to the
        // next piece, whatever chunks the bytes come in.
        let text = "aé€😀b\n".as_bytes();
        for chunk in [text.len(), 1, 3] {
            let mut r = LineReader::new(4);
            let chunks: Vec<&[u8]> = text.chunks(chunk).collect();
            let out = lines(&mut r, &chunks);
            assert_eq!(
                out,
                vec![
                    ("aé".into(), 3),
                    ("€".into(), 6),
                    ("😀".into(), 10),
                    ("b".into(), 12)
                ],
                "chunks of {chunk}"
            );
            assert_eq!(r.counts.invalid_utf8, 0);
        }
        assert_eq!(incomplete_tail_len("a€".as_bytes()), 0);
        assert_eq!(incomplete_tail_len(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_tail_len(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_tail_len(b"\x80\x80\x80"), 0);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let mut r = LineReader::new(64);
        let out = lines(&mut r, &[b"ok \xff\xfe end\n"]);
        assert_eq!(out, vec![("ok \u{fffd}\u{fffd} end".into(), 10)]);
        assert_eq!(r.counts.invalid_utf8, 1);
    }
}
