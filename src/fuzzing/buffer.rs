//! Fuzzing invariants for the buffer (see [`super`]): the record reader on any bytes, and a
//! start on a directory whose segment files hold them.
//!
//! The reader: frames and corrupt stretches tile the input in order; no frame is larger
//! than the reader takes; a record that decodes has as many datums as its head says, no
//! more than its bytes can hold, and encodes back to the same datums. The start: it never
//! fails on what the segments hold, and every datum it finds waiting either comes out of
//! the buffer or is counted as lost, in chunks no larger than a record. The write path:
//! whatever was decoded, pushed again, is read back from disk after a restart, but a datum
//! too large for any record, which is refused and counted.

use std::fs;
use std::path::PathBuf;

use crate::buffer::record::{self, DATA_HEAD, HEADER, Head, MAX_PAYLOAD, MIN_DATUM};
use crate::buffer::{Buffer, Lost, RECORD_MAX_BYTES, RECORD_MAX_DATUMS};
use crate::metric::Metric;

/// Separates segment files in the input: `a SEG| b` is two segments.
const SPLIT: &[u8] = b"SEG|";
/// Segment files made from one input.
const MAX_FILES: usize = 4;
/// Datums decoded from the input that are pushed again (the write path's check).
const MAX_PUSHED: usize = 500;

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let decoded = reader(data);
    recovery(data, &decoded);
}

/// The record reader on `data` as one segment's bytes: every datum it decodes.
fn reader(data: &[u8]) -> Vec<Metric> {
    let scan = record::scan(data);
    let mut pieces: Vec<(usize, usize)> = scan
        .frames
        .iter()
        .map(|(at, r)| (*at, r.end))
        .chain(scan.corrupt.iter().map(|&(at, n)| (at, at + n)))
        .collect();
    pieces.sort_unstable();
    let mut end = 0;
    for (start, stop) in pieces {
        assert_eq!(start, end, "frames and corrupt stretches tile the input");
        assert!(stop > start, "no empty piece");
        end = stop;
    }
    assert_eq!(end, data.len(), "the whole input is accounted for");
    let mut decoded = Vec::new();
    for (at, range) in &scan.frames {
        assert_eq!(range.start, at + HEADER);
        assert!(range.len() <= MAX_PAYLOAD);
        let payload = &data[range.clone()];
        let head = record::head(payload);
        let Ok(metrics) = record::metrics(payload) else {
            continue;
        };
        let Ok(Head::Data { id, datums, .. }) = head else {
            panic!("a payload that decodes has a data head: {head:?}");
        };
        assert_eq!(datums as usize, metrics.len());
        // What it decodes to is bounded by its bytes.
        assert!(metrics.len() * MIN_DATUM <= payload.len() - DATA_HEAD);
        let text: usize = metrics
            .iter()
            .map(|m| {
                m.name.len()
                    + m.dimensions
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
        assert!(text <= payload.len());
        // Round trip: encoded again, the same datums; encoded twice, the same bytes.
        let again = record::data(id, &metrics);
        let lens: usize = metrics.iter().map(record::datum_len).sum();
        assert_eq!(
            again.len(),
            DATA_HEAD + lens,
            "datum_len is what encoding takes"
        );
        let back = record::metrics(&again).expect("a record the agent encodes decodes");
        assert!(
            record::same_bits(&metrics, &back),
            "decoded, encoded and decoded again: the same"
        );
        assert_eq!(record::data(id, &back), again);
        decoded.extend(metrics);
    }
    decoded
}

/// A start on a directory holding `data` as segment files, then a drain, a push of
/// `decoded` and a restart.
fn recovery(data: &[u8], decoded: &[Metric]) {
    let dir = scratch();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch directory");
    let mut rest = data;
    for seq in 1..=MAX_FILES {
        let (part, more) = match find(rest, SPLIT) {
            Some(at) if seq < MAX_FILES => (&rest[..at], Some(&rest[at + SPLIT.len()..])),
            _ => (rest, None),
        };
        fs::write(dir.join(format!("{seq:020}.seg")), part).expect("a segment file");
        match more {
            Some(more) => rest = more,
            None => break,
        }
    }
    let mut buffer = Buffer::open(&dir, 1 << 20, 100_000).expect("any segments open");
    let waiting = buffer.len();
    assert!(
        waiting * MIN_DATUM <= data.len(),
        "{waiting} datums in {} bytes",
        data.len()
    );
    let mut out = 0;
    loop {
        let chunk = buffer.peek(RECORD_MAX_DATUMS);
        assert!(chunk.len() <= RECORD_MAX_DATUMS);
        if chunk.is_empty() {
            break;
        }
        out += chunk.len();
        buffer.ack(chunk.len());
    }
    let lost = buffer.take_lost();
    assert_eq!(
        (out + lost.corrupt, lost.invalid),
        (waiting, 0),
        "every datum found is sent or counted"
    );
    assert!(buffer.is_empty());

    // The write path: what was decoded goes in and comes back after a restart.
    let pushed = &decoded[..decoded.len().min(MAX_PUSHED)];
    let fits = |m: &&Metric| DATA_HEAD + record::datum_len(m) <= RECORD_MAX_BYTES;
    let kept: Vec<Metric> = pushed.iter().filter(fits).cloned().collect();
    buffer.push(pushed, false);
    assert_eq!(
        buffer.take_lost(),
        Lost {
            invalid: pushed.len() - kept.len(),
            corrupt: 0
        }
    );
    drop(buffer);
    let mut buffer = Buffer::open(&dir, 1 << 20, 100_000).expect("the directory opens again");
    let mut back = Vec::new();
    loop {
        let chunk = buffer.peek(RECORD_MAX_DATUMS);
        if chunk.is_empty() {
            break;
        }
        buffer.ack(chunk.len());
        back.extend(chunk);
    }
    assert!(
        record::same_bits(&kept, &back),
        "every datum written is read back"
    );
    drop(buffer);
    let _ = fs::remove_dir_all(&dir);
}

/// A directory of this process and thread, on tmpfs when there is one: a start syncs the
/// directory when it begins a segment, which costs nothing there.
fn scratch() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "cwp-fuzz-buffer-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
