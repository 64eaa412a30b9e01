use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::metric::{Dimensions, Unit, Value};

/// A fresh directory under the system's temp dir, removed at the end.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cwp-buffer-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
    fn segments(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        out.sort();
        out
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn at(i: u64) -> Metric {
    Metric {
        name: "PluginHealthy".into(),
        dimensions: Dimensions::from([("Region".into(), "us-east-1".into())]),
        value: Value::Gauge(i as f64),
        unit: Unit::None,
        timestamp: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i),
    }
}

fn run(range: std::ops::Range<u64>) -> Vec<Metric> {
    range.map(at).collect()
}

fn values(ms: &[Metric]) -> Vec<f64> {
    ms.iter().map(|m| m.value.number()).collect()
}

fn open(dir: &TempDir) -> Buffer {
    Buffer::open(dir.path(), 1 << 20, 1000).unwrap()
}

#[test]
fn peek_leaves_datums_until_they_are_acked_in_order() {
    let mut b = Buffer::memory(100);
    b.push(&run(0..3), true);
    b.push(&run(3..5), true);
    assert_eq!(values(&b.peek(10)), [0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(values(&b.peek(2)), [0.0, 1.0]);
    b.ack(2);
    assert_eq!(b.len(), 3);
    assert_eq!(values(&b.peek(10)), [2.0, 3.0, 4.0]);
    b.ack(2);
    assert_eq!(values(&b.peek(10)), [4.0]);
    b.ack(1);
    assert!(b.is_empty());
    assert_eq!(b.gauges().bytes, 0);
}

#[test]
fn the_memory_bound_drops_the_oldest_datums_and_counts_them() {
    let mut b = Buffer::memory(3);
    b.push(&run(0..2), true);
    assert_eq!(b.trim(), 0);
    b.push(&run(2..5), true);
    assert_eq!(b.trim(), 2);
    assert_eq!(values(&b.peek(10)), [2.0, 3.0, 4.0]);
    assert_eq!(b.gauges().dropped_total, 2);
    let mut none = Buffer::memory(0);
    none.push(&run(0..2), true);
    assert_eq!(none.trim(), 2);
    assert!(none.is_empty());
}

#[test]
fn gauges_report_depth_bytes_and_the_oldest_timestamp() {
    let mut b = Buffer::memory(100);
    assert_eq!(b.gauges(), Gauges::default());
    b.push(&run(5..7), true);
    b.push(&run(1..2), true);
    let g = b.gauges();
    assert_eq!((g.datums, g.oldest), (3, Some(at(1).timestamp)));
    assert!(g.bytes > 0);
    assert_eq!(g.disk_ok, None);
}

#[test]
fn what_was_pushed_to_disk_is_there_after_a_crash_with_its_timestamps() {
    let dir = TempDir::new("crash");
    let mut b = open(&dir);
    b.push(&run(0..3), true);
    b.push(&run(3..4), false);
    assert_eq!(b.gauges().disk_ok, Some(true));
    // No flush, no goodbye: as after kill -9, only what is on disk is left.
    drop(b);
    let mut b = open(&dir);
    assert_eq!(b.len(), 4);
    let got = b.peek(10);
    assert_eq!(got, run(0..4));
}

#[test]
fn acknowledged_datums_do_not_come_back_even_part_of_a_record() {
    let dir = TempDir::new("ack");
    let mut b = open(&dir);
    b.push(&run(0..3), true);
    b.push(&run(3..6), true);
    b.ack(4);
    drop(b);
    let mut b = open(&dir);
    assert_eq!(values(&b.peek(10)), [4.0, 5.0]);
    b.ack(2);
    drop(b);
    let mut b = open(&dir);
    assert!(b.is_empty());
    assert!(b.peek(10).is_empty());
}

#[test]
fn delivered_segments_are_deleted_and_unknown_files_left_alone() {
    let dir = TempDir::new("gc");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join("README"), "mine").unwrap();
    // Small segments, so the records spread over several.
    let mut b = Buffer::open(dir.path(), 64 << 10, 1000).unwrap();
    for i in 0..200 {
        b.push(&run(i * 10..i * 10 + 10), true);
    }
    assert!(dir.segments().len() > 3, "{:?}", dir.segments());
    let n = b.len();
    b.ack(n);
    // Only the segment being written to is left.
    assert_eq!(dir.segments().len(), 1);
    assert_eq!(
        fs::read_to_string(dir.path().join("README")).unwrap(),
        "mine"
    );
    drop(b);
    assert!(open(&dir).is_empty());
}

#[test]
fn a_second_agent_on_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let first = open(&dir);
    match Buffer::open(dir.path(), 1 << 20, 1000) {
        Err(DiskError::Locked(p)) => assert_eq!(p, dir.path()),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("two agents hold one directory"),
    }
    drop(first);
    open(&dir);
}

#[test]
fn torn_tails_flipped_bytes_empty_and_garbage_files_cost_only_themselves() {
    let dir = TempDir::new("corrupt");
    let mut b = Buffer::open(dir.path(), 64 << 10, 1000).unwrap();
    for i in 0..3 {
        b.push(&run(i * 10..i * 10 + 10), true);
    }
    drop(b);
    let seg = dir.segments().pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let one = bytes.len() / 3;
    // A bit flipped in the second record, and a torn fourth record at the end.
    bytes[one + 40] ^= 0x10;
    let head = bytes[..20].to_vec();
    bytes.extend_from_slice(&head);
    fs::write(&seg, &bytes).unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 900)), b"").unwrap();
    fs::write(
        dir.path().join(format!("{:020}.seg", 901)),
        b"garbage garbage garbage".repeat(30),
    )
    .unwrap();
    let mut b = open(&dir);
    assert_eq!(
        values(&b.peek(100)),
        run(0..10)
            .iter()
            .chain(&run(20..30))
            .map(|m| m.value.number())
            .collect::<Vec<_>>()
    );
    assert_eq!(b.gauges().corrupt_total, 3);
    // The rest is delivered; the broken files go with it.
    let n = b.len();
    b.ack(n);
    b.push(&run(40..41), true);
    drop(b);
    let mut b = open(&dir);
    assert_eq!(values(&b.peek(10)), [40.0]);
    assert_eq!(b.gauges().corrupt_total, 0);
}

#[test]
fn a_record_damaged_after_it_was_written_is_dropped_when_read() {
    let dir = TempDir::new("damaged");
    let mut b = open(&dir);
    b.push(&run(0..2), true);
    b.push(&run(2..4), true);
    let seg = dir.segments().pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[20] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(values(&b.peek(10)), [2.0, 3.0]);
    assert_eq!((b.len(), b.gauges().corrupt_total), (2, 1));
}

#[test]
fn the_byte_bound_drops_whole_oldest_records() {
    let dir = TempDir::new("bytes");
    let mut b = Buffer::open(dir.path(), 64 << 10, 1_000_000).unwrap();
    // About 50 bytes a datum: 4000 datums are about 200 KB.
    for i in 0..40 {
        b.push(&run(i * 100..i * 100 + 100), true);
    }
    let dropped = b.trim();
    assert!(dropped > 0 && dropped.is_multiple_of(100), "{dropped}");
    assert!(b.gauges().bytes <= 64 << 10);
    let first = b.peek(1)[0].value.number();
    assert_eq!(first, dropped as f64, "the oldest went first");
    drop(b);
    let b = open(&dir);
    assert_eq!(b.len(), 4000 - dropped);
}

#[test]
fn an_unwritable_directory_keeps_cycles_in_memory_until_it_can_write_again() {
    let dir = TempDir::new("degrade");
    let mut b = open(&dir);
    // The directory disappears (as a volume unmounted under the agent would).
    fs::remove_dir_all(dir.path()).unwrap();
    b.push(&run(0..2), true);
    b.push(&run(2..3), true);
    assert_eq!(b.gauges().disk_ok, Some(false));
    assert_eq!(values(&b.peek(10)), [0.0, 1.0, 2.0]);
    b.ack(1);
    fs::create_dir_all(dir.path()).unwrap();
    b.push(&run(3..4), true);
    assert_eq!(b.gauges().disk_ok, Some(true));
    drop(b);
    // What was held in memory was written out, oldest first, when the directory came back.
    let mut b = open(&dir);
    assert_eq!(values(&b.peek(10)), [1.0, 2.0, 3.0]);
}

#[test]
fn a_cycle_larger_than_a_record_is_split_and_kept_in_order() {
    let dir = TempDir::new("large");
    let mut b = Buffer::open(dir.path(), 64 << 20, 100_000).unwrap();
    b.push(&run(0..25_000), true);
    drop(b);
    let mut b = Buffer::open(dir.path(), 64 << 20, 100_000).unwrap();
    let got = b.peek(100_000);
    assert_eq!(got.len(), 25_000);
    assert!(got.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
}
