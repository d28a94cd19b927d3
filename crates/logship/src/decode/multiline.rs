//! Multiline events (stack traces): a line matching `--multiline-start` begins a new event and
//! every other line joins the current one with a newline. An event is flushed when the next one
//! starts, when nothing has followed it for `--multiline-timeout`, or at drain. It is bounded by
//! `--max-event-bytes`: lines beyond the bound are cut from the event (counted), but the event's
//! end offset still moves past them, so they are not read again.

use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde_json::{Map, Value};

type Next<'a> = dyn FnMut(&[u8], u64, Option<Box<Map<String, Value>>>) + 'a;

#[derive(Debug)]
pub struct Assembler {
    start: Regex,
    timeout: Duration,
    max: usize,
    pending: Option<Pending>,
    pub truncated: u64,
}

#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    end: u64,
    fields: Option<Box<Map<String, Value>>>,
    last_line_at: Instant,
    cut: bool,
}

impl Assembler {
    pub fn new(start: Regex, timeout: Duration, max: usize) -> Assembler {
        Assembler {
            start,
            timeout,
            max,
            pending: None,
            truncated: 0,
        }
    }

    pub fn push(
        &mut self,
        line: &[u8],
        end: u64,
        fields: Option<Box<Map<String, Value>>>,
        now: Instant,
        next: &mut Next<'_>,
    ) {
        let starts = self.start.is_match(line);
        match &mut self.pending {
            Some(p) if !starts => {
                if p.buf.len() + 1 + line.len() <= self.max {
                    p.buf.push(b'\n');
                    p.buf.extend_from_slice(line);
                } else if !p.cut {
                    p.cut = true;
                    self.truncated += 1;
                }
                p.end = end;
                p.last_line_at = now;
            }
            _ => {
                self.flush(next);
                let mut buf = line.to_vec();
                let cut = buf.len() > self.max;
                if cut {
                    // At a character boundary (the line is valid UTF-8 by now).
                    let keep = self.max - crate::reader::incomplete_tail_len(&buf[..self.max]);
                    buf.truncate(keep);
                    self.truncated += 1;
                }
                self.pending = Some(Pending {
                    buf,
                    end,
                    fields,
                    last_line_at: now,
                    cut,
                });
            }
        }
    }

    pub fn pending_since(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.last_line_at)
    }

    pub fn flush_stale(&mut self, now: Instant, next: &mut Next<'_>) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| now.duration_since(p.last_line_at) >= self.timeout)
        {
            self.flush(next);
        }
    }

    pub fn flush(&mut self, next: &mut Next<'_>) {
        if let Some(p) = self.pending.take() {
            next(&p.buf, p.end, p.fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_the_event_they_follow() {
        let mut a = Assembler::new(
            Regex::new(r"^\d{4}-").expect("regex"),
            Duration::from_secs(1),
            1024,
        );
        let mut out: Vec<(String, u64)> = Vec::new();
        let now = Instant::now();
        let mut next = |m: &[u8], e: u64, _f: Option<Box<Map<String, Value>>>| {
            out.push((String::from_utf8_lossy(m).into(), e))
        };
        a.push(b"2024-01-01 ERROR boom", 10, None, now, &mut next);
        a.push(
            b"\tat com.example.A.run(A.java:1)",
            20,
            None,
            now,
            &mut next,
        );
        a.push(
            b"\tat com.example.B.run(B.java:2)",
            30,
            None,
            now,
            &mut next,
        );
        a.push(b"2024-01-01 INFO next", 40, None, now, &mut next);
        a.flush_stale(now, &mut next);
        a.flush_stale(now + Duration::from_secs(2), &mut next);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.lines().count(), 3);
        assert_eq!(out[0].1, 30);
        assert_eq!(out[1], ("2024-01-01 INFO next".into(), 40));
    }

    #[test]
    fn events_are_bounded() {
        let mut a = Assembler::new(Regex::new("^S").expect("regex"), Duration::from_secs(1), 8);
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut next =
            |m: &[u8], e: u64, _f: Option<Box<Map<String, Value>>>| out.push((m.to_vec(), e));
        let now = Instant::now();
        a.push(b"S1", 3, None, now, &mut next);
        a.push(b"continuation", 16, None, now, &mut next);
        a.flush(&mut next);
        assert_eq!(out, vec![(b"S1".to_vec(), 16)]);
        assert_eq!(a.truncated, 1);
        // A first line cut to the bound is cut before the character that straddles it.
        out.clear();
        let mut next =
            |m: &[u8], e: u64, _f: Option<Box<Map<String, Value>>>| out.push((m.to_vec(), e));
        a.push("Sxxxé€".as_bytes(), 10, None, now, &mut next);
        a.push("Sxxxxxxxxx".as_bytes(), 21, None, now, &mut next);
        a.flush(&mut next);
        let texts: Vec<String> = out
            .iter()
            .map(|(m, _)| String::from_utf8(m.clone()).expect("UTF-8"))
            .collect();
        assert_eq!(texts, vec!["Sxxxé", "Sxxxxxxx"]);
    }
}
