use std::fs;
use std::os::unix::fs::FileTypeExt;
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

/// A datum of 30 dimensions, each a 200-character name and a 1,000-character value, as a
/// scrape of wide labels makes them: about 36 KB in a record.
fn wide(i: u64) -> Metric {
    let pairs: Vec<(String, String)> = (0..30)
        .map(|d| {
            (
                format!("{d:02}{}", "n".repeat(198)),
                format!("{i}-{}", "v".repeat(1000)),
            )
        })
        .collect();
    Metric {
        name: "wide_gauge".into(),
        dimensions: Dimensions::from_sorted(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        value: Value::Gauge(i as f64),
        unit: Unit::None,
        timestamp: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i),
    }
}

/// Every record frame in the directory's segments: (offset, frame length).
fn frames(dir: &TempDir) -> Vec<usize> {
    dir.segments()
        .iter()
        .flat_map(|p| {
            let bytes = fs::read(p).unwrap();
            record::scan(&bytes)
                .frames
                .into_iter()
                .map(|(at, r)| r.end - at)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_cycle_of_wide_datums_is_cut_by_bytes_and_every_datum_is_read_back() {
    // Issue 21, item 3: 2,406 datums of ~36 KB made a 2,000-datum record of 73 MB, past
    // what the reader takes; it was written, then dropped when read back, uncounted.
    let cycle: Vec<Metric> = (0..2406).map(wide).collect();
    let dir = TempDir::new("wide");
    let mut b = Buffer::open(dir.path(), 1 << 30, 100_000).unwrap();
    b.push(&cycle, true);
    assert!(
        frames(&dir)
            .iter()
            .all(|&len| len <= record::HEADER + RECORD_MAX_BYTES)
    );
    drop(b);
    for mut b in [
        Buffer::open(dir.path(), 1 << 30, 100_000).unwrap(),
        // Without BUFFER_DIR: the same records, in memory.
        {
            let mut m = Buffer::memory(100_000);
            m.push(&cycle, true);
            m
        },
    ] {
        let mut got = Vec::new();
        loop {
            let chunk = b.peek(RECORD_MAX_DATUMS);
            if chunk.is_empty() {
                break;
            }
            b.ack(chunk.len());
            got.extend(chunk);
        }
        assert_eq!(got.len(), 2406);
        assert!(got == cycle, "every datum back, in order");
        assert_eq!(
            (b.gauges().corrupt_total, b.take_lost()),
            (0, Lost::default())
        );
    }
}

#[test]
fn a_datum_larger_than_any_record_is_refused_counted_and_costs_only_itself() {
    let mut huge = at(1);
    huge.name = "n".repeat(RECORD_MAX_BYTES);
    let cycle = [at(0), huge, at(2)];
    let dir = TempDir::new("huge");
    let mut disk = open(&dir);
    let mut memory = Buffer::memory(100);
    for b in [&mut disk, &mut memory] {
        b.push(&cycle, true);
        assert_eq!(
            b.take_lost(),
            Lost {
                invalid: 1,
                corrupt: 0
            }
        );
        assert_eq!(b.take_lost(), Lost::default(), "counted once");
        assert_eq!(values(&b.peek(10)), [0.0, 2.0]);
    }
    drop(disk);
    assert_eq!(values(&open(&dir).peek(10)), [0.0, 2.0]);
}

#[test]
fn the_largest_datum_cloudwatch_takes_fits_in_a_record() {
    use crate::sinks::cloudwatch::rules;
    let mut m = wide(0);
    m.name = "é".repeat(255);
    m.dimensions = Dimensions::from_sorted(
        (0..30)
            .map(|d| (format!("{d:02}{}", "n".repeat(253)), "v".repeat(1024)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    m.value = Value::distribution(vec![1.0; 150], vec![1.0; 150]);
    m.timestamp = std::time::SystemTime::now();
    assert_eq!(rules::check(&m, m.timestamp), Ok(()));
    let len = record::datum_len(&m);
    assert!(record::DATA_HEAD + len < 64 << 10, "{len}");
    assert!(record::DATA_HEAD + len <= RECORD_MAX_BYTES);
}

#[test]
fn a_record_damaged_on_disk_counts_its_datums_as_dropped() {
    let dir = TempDir::new("lost");
    let mut b = open(&dir);
    b.push(&run(0..3), true);
    b.push(&run(3..4), true);
    let seg = dir.segments().pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[20] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(values(&b.peek(10)), [3.0]);
    assert_eq!(
        b.take_lost(),
        Lost {
            invalid: 0,
            corrupt: 3
        }
    );
}

/// Opens the buffer on another thread: a start that blocks (on a FIFO) fails the test
/// instead of hanging it.
fn open_within(dir: &Path, max_bytes: u64) -> Buffer {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Buffer::open(&path, max_bytes, 1000));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the buffer opened without blocking")
        .unwrap()
}

fn seg_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// Three records, as the agent wrote them, copied out of a scratch buffer.
fn three_records() -> Vec<u8> {
    let scratch = TempDir::new("scratch");
    let mut b = open(&scratch);
    b.push(&run(100..101), true);
    b.push(&run(101..102), true);
    b.push(&run(102..103), true);
    drop(b);
    fs::read(scratch.segments().pop().unwrap()).unwrap()
}

#[test]
fn a_fifo_named_like_a_segment_is_skipped_without_blocking_the_start() {
    let dir = TempDir::new("fifo");
    let mut b = open(&dir);
    b.push(&run(0..2), true);
    drop(b);
    let fifo = dir.path().join(seg_name(50));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo reads it and keeps nothing.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut b = open_within(dir.path(), 1 << 20);
    assert_eq!(values(&b.peek(10)), [0.0, 1.0]);
    assert_eq!(b.gauges().corrupt_total, 1);
    // It is left alone, and new segments are numbered past it.
    b.ack(2);
    b.push(&run(2..3), true);
    assert_eq!(b.gauges().disk_ok, Some(true));
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(dir.segments().iter().any(|p| *p > fifo));
}

#[test]
fn a_symlink_named_like_a_segment_is_not_followed() {
    let dir = TempDir::new("symlink");
    let outside = TempDir::new("outside");
    fs::create_dir_all(outside.path()).unwrap();
    // Records that would be taken as the buffer's own if the link were followed.
    let target = outside.path().join("records");
    fs::write(&target, three_records()).unwrap();
    fs::create_dir_all(dir.path()).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(seg_name(7))).unwrap();
    // And one to a directory. (A link to /dev/zero is in tests/e2e/test_hostile_buffer.py,
    // under an address-space limit: followed, it takes all memory, here that of the tests.)
    std::os::unix::fs::symlink(outside.path(), dir.path().join(seg_name(8))).unwrap();
    let mut b = open_within(dir.path(), 1 << 20);
    assert!(b.is_empty());
    assert_eq!(b.gauges().corrupt_total, 2);
    b.push(&run(0..1), true);
    assert_eq!(b.gauges().disk_ok, Some(true));
    assert!(
        fs::symlink_metadata(dir.path().join(seg_name(8)))
            .unwrap()
            .is_symlink()
    );
}

#[test]
fn a_segment_larger_than_the_agent_writes_is_read_only_up_to_that_size() {
    let dir = TempDir::new("sparse");
    fs::create_dir_all(dir.path()).unwrap();
    let records = three_records();
    let path = dir.path().join(seg_name(3));
    let file = fs::File::create(&path).unwrap();
    // A sparse file of 64 MiB: records at its start, and records past 8 MiB.
    use std::os::unix::fs::FileExt;
    file.write_all_at(&records[..records.len() / 3], 0).unwrap();
    file.write_all_at(&records, 32 << 20).unwrap();
    file.set_len(64 << 20).unwrap();
    drop(file);
    let mut b = open_within(dir.path(), 1 << 20);
    // The record in the first 8 MiB is read; the rest of the file is not.
    assert_eq!(values(&b.peek(10)), [100.0]);
    let g = b.gauges();
    // The zeros after the first record, and all past 8 MiB.
    assert_eq!(g.corrupt_total, 2);
    // A peek reads what start found, and no further than it read.
    b.ack(1);
    assert!(b.is_empty());
}

#[test]
fn a_sequence_too_high_is_skipped_and_the_buffer_keeps_writing_across_rolls() {
    let dir = TempDir::new("wrap");
    fs::create_dir_all(dir.path()).unwrap();
    let hostile = dir.path().join(format!("{}.seg", u64::MAX));
    fs::write(&hostile, three_records()).unwrap();
    // Twenty digits past u64 too.
    let past = dir.path().join("99999999999999999999.seg");
    fs::write(&past, b"x").unwrap();
    // Small segments: the pushes below roll several.
    let mut b = Buffer::open(dir.path(), 64 << 10, 100_000).unwrap();
    assert!(b.is_empty(), "the hostile file's records are not read");
    assert_eq!(b.gauges().corrupt_total, 2);
    for i in 0..100 {
        b.push(&run(i * 10..i * 10 + 10), true);
        assert_eq!(b.gauges().disk_ok, Some(true), "push {i}");
    }
    let ours = dir.segments().len() - 2;
    assert!(ours > 3, "{ours} segments");
    drop(b);
    let mut b = Buffer::open(dir.path(), 64 << 10, 100_000).unwrap();
    assert_eq!(b.len(), 1000);
    assert_eq!(b.peek(1)[0].value.number(), 0.0);
    assert!(hostile.exists() && past.exists(), "left alone");
}

#[test]
fn a_directory_named_like_a_segment_is_skipped_and_never_stops_deleting() {
    let dir = TempDir::new("subdir");
    fs::create_dir_all(dir.path().join(seg_name(1))).unwrap();
    let mut b = Buffer::open(dir.path(), 64 << 10, 100_000).unwrap();
    assert_eq!(b.gauges().corrupt_total, 1);
    for i in 0..100 {
        b.push(&run(i * 10..i * 10 + 10), true);
    }
    let n = b.len();
    b.ack(n);
    // The directory, and the segment being written to.
    assert_eq!(dir.segments().len(), 2, "{:?}", dir.segments());
    assert!(dir.path().join(seg_name(1)).is_dir());
}

#[test]
fn a_record_head_claiming_more_datums_than_its_bytes_hold_is_corrupt() {
    let dir = TempDir::new("liar");
    fs::create_dir_all(dir.path()).unwrap();
    let mut payload = record::data(1, &run(0..1));
    payload[9..13].copy_from_slice(&1_000_000u32.to_le_bytes());
    fs::write(dir.path().join(seg_name(1)), record::frame(&payload)).unwrap();
    let b = open(&dir);
    assert_eq!((b.len(), b.gauges().corrupt_total), (0, 1));
}

#[test]
fn a_planted_record_numbered_at_the_top_costs_nothing_of_what_the_agent_writes() {
    // Outside attack, round 2: a valid record with id 10^18 (the highest read) made the
    // agent number its own from 10^18 + 1, every one refused at the next start.
    for top in [record::ID_MAX, disk::RENUMBER_ABOVE + 1] {
        let dir = TempDir::new("top-id");
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(
            dir.path().join(seg_name(1)),
            record::frame(&record::data(top, &run(1000..1001))),
        )
        .unwrap();
        let mut b = open(&dir);
        assert_eq!(values(&b.peek(10)), [1000.0], "the planted datum is read");
        b.push(&run(0..3), true);
        drop(b);
        for _ in 0..2 {
            let mut b = open(&dir);
            assert_eq!(values(&b.peek(10)), [1000.0, 0.0, 1.0, 2.0]);
            assert_eq!(b.gauges().corrupt_total, 0);
        }
        let mut b = open(&dir);
        b.ack(4);
        drop(b);
        assert!(open(&dir).is_empty());
    }
}

#[test]
fn a_planted_ack_numbered_at_the_top_acknowledges_nothing() {
    let dir = TempDir::new("top-ack");
    let mut b = open(&dir);
    b.push(&run(0..3), true);
    drop(b);
    fs::write(
        dir.path().join(seg_name(1000)),
        record::frame(&record::ack(record::ID_MAX, 5)),
    )
    .unwrap();
    let mut b = open(&dir);
    assert_eq!(values(&b.peek(10)), [0.0, 1.0, 2.0]);
    b.push(&run(3..4), true);
    drop(b);
    assert_eq!(values(&open(&dir).peek(10)), [0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn a_segment_named_at_the_top_leaves_room_for_the_agents_own() {
    // An empty file named 10^18: the agent's next segment was 10^18 + 1, skipped as too
    // high at the next start, and what it held lost.
    let dir = TempDir::new("top-seq");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join(seg_name(disk::SEQ_MAX)), b"").unwrap();
    let mut b = open(&dir);
    b.push(&run(0..3), true);
    b.ack(1);
    drop(b);
    for _ in 0..2 {
        let mut b = open(&dir);
        assert_eq!(values(&b.peek(10)), [1.0, 2.0]);
        assert_eq!(b.gauges().corrupt_total, 0);
        b.push(&[], true);
    }
    assert!(
        dir.segments()
            .iter()
            .all(|p| p.file_name().unwrap().to_str().unwrap() < "00000000000000001000"),
        "{:?}",
        dir.segments()
    );
}
