//! Fuzzing invariants for the health surface (see [`super`]): the bytes as what a client
//! sends the health listener, read by its own [`HeadReader`] in reads of the size the first
//! byte picks, and answered by its own [`answer`], as one connection is (a socket would only
//! add time per input).
//!
//! Whatever the bytes: no panic; the head never held past [`MAX_REQUEST_HEAD`]; the answer
//! is one of the documented statuses, says `connection: close` and its body's true length,
//! echoes nothing of the request, and is the same however the reads split the bytes.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::health::{HeadReader, MAX_REQUEST_HEAD, Refusal, TickCache, answer};
use crate::schedule::Schedule;
use crate::stats::{SharedStats, Stats};

/// The listener's statuses (README, *Health and self-observation*).
const STATUSES: [&str; 9] = [
    "200 OK",
    "503 Service Unavailable",
    "404 Not Found",
    "400 Bad Request",
    "405 Method Not Allowed",
    "408 Request Timeout",
    "431 Request Header Fields Too Large",
    "505 HTTP Version Not Supported",
    // Never sent: a guard that the list above is read whole.
    "",
];

/// A fresh agent's state: its /metrics is the largest answer, a few KiB.
const MAX_ANSWER: usize = 16 << 10;

fn agent() -> &'static (SharedStats, TickCache, SystemTime) {
    static AGENT: OnceLock<(SharedStats, TickCache, SystemTime)> = OnceLock::new();
    AGENT.get_or_init(|| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let schedule = Schedule::parse("0 * * * * *").expect("a valid schedule");
        (Stats::shared(now), TickCache::new(schedule), now)
    })
}

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&split, sent)) = data.split_first() else {
        return;
    };
    let read = usize::from(split % 64) + 1;
    let answered = exchange(sent, read);
    // Reads of any size make the same answer: the blank line may straddle two reads.
    assert_eq!(
        answered,
        exchange(sent, sent.len().max(1)),
        "reads of {read}"
    );
    check(&answered, sent);
}

/// What the listener writes back when the client sends `sent` in reads of `read` bytes
/// and then waits: the answer to the head, or 408 when the head never ends.
fn exchange(sent: &[u8], read: usize) -> Vec<u8> {
    let (stats, ticks, now) = agent();
    let mut reader = HeadReader::default();
    let mut head = Err(Refusal::Timeout);
    for chunk in sent.chunks(read) {
        // The listener never reads past the head's room.
        let chunk = &chunk[..chunk.len().min(reader.room())];
        if let Some(done) = reader.push(chunk) {
            head = done;
            break;
        }
    }
    if let Ok(head) = &head {
        assert!(head.len() <= MAX_REQUEST_HEAD);
        assert!(sent.starts_with(head), "the head is what was sent");
        assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
    }
    answer(head.as_deref().map_err(|&r| r), stats, ticks, *now).0
}

fn check(answered: &[u8], sent: &[u8]) {
    assert!(answered.len() <= MAX_ANSWER, "{} bytes", answered.len());
    let text = std::str::from_utf8(answered).expect("answers are UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .expect("a status line");
    assert!(STATUSES[..8].contains(&status), "{status:?}");
    assert!(head.contains("\r\nconnection: close\r\n") || head.ends_with("connection: close"));
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a content-length");
    if body.is_empty() && length > 0 {
        // HEAD: the length of the body it would have had.
        assert!(sent.starts_with(b"HEAD "), "{head}");
    } else {
        assert_eq!(length, body.len());
    }
    // Nothing of the request comes back (no reflected text for a browser to run): a
    // request target long enough to be unmistakable never appears in the body. (Not the
    // head: a target may be `cache-control:`, as the fuzzer found.)
    let line = sent.split(|&b| b == b'\n').next().unwrap_or_default();
    if let Some(target) = line.split(|&b| b == b' ').nth(1).filter(|t| t.len() >= 12) {
        assert!(
            !body.as_bytes().windows(target.len()).any(|w| w == target),
            "the request target is echoed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_hostile_requests_keep_the_invariants() {
        for sent in [
            &b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"HEAD /metrics HTTP/1.0\n\n",
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /<script>alert(1)</script> HTTP/1.1\r\n\r\n",
            b"\r\n\r\n\r\n",
            &[0xff; 9000],
        ] {
            for split in [0u8, 1, 7, 63] {
                let mut data = vec![split];
                data.extend_from_slice(sent);
                run(&data);
            }
        }
    }
}
