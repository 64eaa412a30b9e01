//! The buffer's record format: how a run of metrics, or an acknowledgement, is laid out in
//! bytes, in memory and in segment files alike. Pure: bytes in, records out.
//!
//! A frame is `magic (4) | payload length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload`. The magic lets [`scan`] find the next frame after a torn or corrupt one, so one
//! bad record never costs the records behind it. Payloads:
//!
//! - data: `1 | id (u64) | datums (u32) | oldest timestamp (secs u64, nanos u32) | datums`;
//! - ack: `2 | id (u64) | done (u32)`: every record before `id` and the first `done` datums
//!   of record `id` have left the buffer.
//!
//! Numbers are little-endian; lengths and counts inside a datum are LEB128. The layout is
//! written by hand rather than with a serde format so that it is fixed: a buffer written by
//! one release is read by the next, and the decoder, fed whatever a disk hands back, checks
//! every length against what is left before it allocates.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metric::{Dimensions, Metric, Unit, Value};

pub const MAGIC: [u8; 4] = *b"CWB1";
pub const HEADER: usize = 12;
/// The largest payload read back: a frame claiming more is corrupt. A segment holds at most
/// 8 MiB (`disk::SEGMENT_MAX`), frame included, so no larger record could be read from one.
/// The buffer writes far smaller ones (`RECORD_MAX_BYTES`); this bound is the reader's, and
/// reads what an earlier release wrote (it cut records by datums only).
pub const MAX_PAYLOAD: usize = (8 << 20) - HEADER;
/// A data payload's head: kind, id, datums, oldest timestamp.
pub const DATA_HEAD: usize = 1 + 8 + 4 + 12;
/// The fewest bytes one datum takes: empty name and dimensions, unit, timestamp, and an
/// empty distribution's tag and two counts. A data record claiming more datums than its
/// bytes could hold is corrupt, so a lying head cannot inflate what the buffer reports.
pub const MIN_DATUM: usize = 1 + 1 + 1 + 12 + 1 + 1 + 1;
/// The highest record id read: the agent numbers records from 1, one a record, and would
/// take 31 million years at a thousand a second to reach it. A record with a higher id was
/// not written by the agent; numbering on from it would run past u64.
pub const ID_MAX: u64 = 1_000_000_000_000_000_000;

const DATA: u8 = 1;
const ACK: u8 = 2;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown {0} tag {1}")]
    Tag(&'static str, u8),
    #[error("text is not UTF-8")]
    Utf8,
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
    #[error("count {0} does not match {1} datums")]
    Count(u32, usize),
    #[error("{0} datums cannot fit in {1} bytes")]
    Crowded(u32, usize),
    #[error("record id {0} is past {ID_MAX}")]
    Id(u64),
}

/// What a record's payload says, short of decoding its datums.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    Data {
        id: u64,
        datums: u32,
        oldest: SystemTime,
    },
    Ack {
        id: u64,
        done: u32,
    },
}

/// One frame around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a data record holding `metrics`.
pub fn data(id: u64, metrics: &[Metric]) -> Vec<u8> {
    let mut record = Data::new();
    for m in metrics {
        record.push(m);
    }
    record.finish(id).0
}

/// A data record's payload, built a datum at a time: the buffer cuts a cycle into records
/// where one is full, by datums or by bytes ([`datum_len`] says what the next one adds),
/// without encoding anything twice.
#[derive(Debug)]
pub struct Data {
    payload: Vec<u8>,
    datums: u32,
    oldest: Option<SystemTime>,
}

impl Default for Data {
    fn default() -> Self {
        Data::new()
    }
}

impl Data {
    pub fn new() -> Self {
        // The head is written by `finish`, once the count and the oldest are known.
        Data {
            payload: vec![0; DATA_HEAD],
            datums: 0,
            oldest: None,
        }
    }

    /// Payload bytes so far, head included.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    pub fn datums(&self) -> usize {
        self.datums as usize
    }

    pub fn is_empty(&self) -> bool {
        self.datums == 0
    }

    /// Appends one datum: [`datum_len`] bytes.
    pub fn push(&mut self, m: &Metric) {
        put_metric(&mut self.payload, m);
        self.datums += 1;
        self.oldest = Some(self.oldest.map_or(m.timestamp, |t| t.min(m.timestamp)));
    }

    /// The payload as record `id`, its datums and its oldest timestamp (the epoch if empty).
    pub fn finish(mut self, id: u64) -> (Vec<u8>, u32, SystemTime) {
        let oldest = self.oldest.unwrap_or(UNIX_EPOCH);
        let mut head = Vec::with_capacity(DATA_HEAD);
        head.push(DATA);
        head.extend_from_slice(&id.to_le_bytes());
        head.extend_from_slice(&self.datums.to_le_bytes());
        put_time(&mut head, oldest);
        self.payload[..DATA_HEAD].copy_from_slice(&head);
        (self.payload, self.datums, oldest)
    }
}

/// The bytes `m` takes in a data record, counted without encoding it.
pub fn datum_len(m: &Metric) -> usize {
    let str_len = |s: &str| varint_len(s.len() as u64) + s.len();
    let dims: usize = m
        .dimensions
        .iter()
        .map(|(k, v)| str_len(k) + str_len(v))
        .sum();
    let value = match &m.value {
        Value::Gauge(_) | Value::Counter(_) => 8,
        Value::Distribution(d) => {
            let f64s = |xs: &[f64]| varint_len(xs.len() as u64) + 8 * xs.len();
            f64s(&d.values) + f64s(&d.counts)
        }
    };
    str_len(&m.name) + varint_len(m.dimensions.len() as u64) + dims + 1 + 12 + 1 + value
}

fn varint_len(n: u64) -> usize {
    // Seven bits a byte; zero still takes one.
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The payload of an ack record.
pub fn ack(id: u64, done: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(ACK);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&done.to_le_bytes());
    out
}

/// Reads a payload's head.
pub fn head(payload: &[u8]) -> Result<Head, DecodeError> {
    let mut r = Reader(payload);
    let id = |r: &mut Reader| match r.u64()? {
        id if id > ID_MAX => Err(DecodeError::Id(id)),
        id => Ok(id),
    };
    match r.u8()? {
        DATA => {
            let (id, datums, oldest) = (id(&mut r)?, r.u32()?, r.time()?);
            let room = payload.len() - DATA_HEAD;
            if datums as usize > room / MIN_DATUM {
                return Err(DecodeError::Crowded(datums, room));
            }
            Ok(Head::Data { id, datums, oldest })
        }
        ACK => {
            let head = Head::Ack {
                id: id(&mut r)?,
                done: r.u32()?,
            };
            r.finish()?;
            Ok(head)
        }
        kind => Err(DecodeError::Kind(kind)),
    }
}

/// Decodes a data record's datums.
pub fn metrics(payload: &[u8]) -> Result<Vec<Metric>, DecodeError> {
    // The head read as `head` reads it, so the two never disagree on a record.
    let count = match head(payload)? {
        Head::Data { datums, .. } => datums,
        Head::Ack { .. } => return Err(DecodeError::Kind(ACK)),
    };
    let mut r = Reader(&payload[DATA_HEAD..]);
    // Each datum takes at least 8 bytes, so a lying count cannot make us allocate much.
    let mut out = Vec::with_capacity((count as usize).min(r.0.len() / 8));
    while !r.0.is_empty() {
        out.push(r.metric()?);
    }
    if out.len() != count as usize {
        return Err(DecodeError::Count(count, out.len()));
    }
    Ok(out)
}

/// What [`scan`] found in a run of frames.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    /// Each intact frame: its offset and its payload's range in the input.
    pub frames: Vec<(usize, std::ops::Range<usize>)>,
    /// Each stretch of bytes that is not an intact frame: offset and length.
    pub corrupt: Vec<(usize, usize)>,
}

/// Finds every intact frame in `bytes`. A stretch that is not one (a torn tail, flipped
/// bits, garbage) is skipped up to the next magic that starts an intact frame.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut at = 0;
    let mut bad_since: Option<usize> = None;
    while at < bytes.len() {
        match intact(&bytes[at..]) {
            Some(len) => {
                if let Some(start) = bad_since.take() {
                    out.corrupt.push((start, at - start));
                }
                out.frames.push((at, at + HEADER..at + HEADER + len));
                at += HEADER + len;
            }
            None => {
                bad_since.get_or_insert(at);
                at += 1;
                at += find_magic(&bytes[at..]).unwrap_or(bytes.len() - at);
            }
        }
    }
    if let Some(start) = bad_since {
        out.corrupt.push((start, bytes.len() - start));
    }
    out
}

/// The payload length of the frame at the start of `bytes`, if one is whole and intact.
fn intact(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (len <= MAX_PAYLOAD && crc32fast::hash(payload) == crc).then_some(len)
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    // Before 1970 cannot come from a source; it is stored as the epoch.
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(&d.as_secs().to_le_bytes());
    out.extend_from_slice(&d.subsec_nanos().to_le_bytes());
}

fn put_f64s(out: &mut Vec<u8>, xs: &[f64]) {
    put_varint(out, xs.len() as u64);
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_metric(out: &mut Vec<u8>, m: &Metric) {
    put_str(out, &m.name);
    put_varint(out, m.dimensions.len() as u64);
    for (k, v) in &m.dimensions {
        put_str(out, k);
        put_str(out, v);
    }
    out.push(match m.unit {
        Unit::None => 0,
        Unit::Count => 1,
        Unit::Milliseconds => 2,
        Unit::Seconds => 3,
        Unit::Bytes => 4,
    });
    put_time(out, m.timestamp);
    match &m.value {
        Value::Gauge(v) => {
            out.push(0);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Counter(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Distribution(d) => {
            out.push(2);
            put_f64s(out, &d.values);
            put_f64s(out, &d.counts);
        }
    }
}

/// The unread rest of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::Truncated)
    }

    /// A length or count, checked against what is left (each item takes `item` bytes or more).
    fn count(&mut self, item: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(item) <= self.0.len() => Ok(n),
            _ => Err(DecodeError::Truncated),
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.count(1)?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Tag("nanoseconds", 0));
        }
        UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos))
            .ok_or(DecodeError::Tag("timestamp", 0))
    }

    fn f64s(&mut self) -> Result<Vec<f64>, DecodeError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.f64()).collect()
    }

    fn metric(&mut self) -> Result<Metric, DecodeError> {
        let name = self.string()?;
        let n = self.count(2)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((self.string()?, self.string()?));
        }
        // Written sorted and unique; a record from elsewhere may be neither. Sorted once
        // (stable: for a name given twice the last wins, as inserting one by one would), not
        // inserted one by one, which repacks them all at each pair: a record of 100,000
        // dimensions took minutes.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let unique = pairs
            .iter()
            .enumerate()
            .filter(|&(i, (k, _))| pairs.get(i + 1).is_none_or(|next| next.0 != *k))
            .map(|(_, (k, v))| (k.as_str(), v.as_str()));
        let dimensions = Dimensions::from_sorted(unique);
        let unit = match self.u8()? {
            0 => Unit::None,
            1 => Unit::Count,
            2 => Unit::Milliseconds,
            3 => Unit::Seconds,
            4 => Unit::Bytes,
            t => return Err(DecodeError::Tag("unit", t)),
        };
        let timestamp = self.time()?;
        let value = match self.u8()? {
            0 => Value::Gauge(self.f64()?),
            1 => Value::Counter(self.f64()?),
            2 => Value::distribution(self.f64s()?, self.f64s()?),
            t => return Err(DecodeError::Tag("value", t)),
        };
        Ok(Metric {
            name,
            dimensions,
            unit,
            timestamp,
            value,
        })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Equality that holds for NaN too: a record keeps every bit of a value. For the tests and
/// the fuzz target's round trips.
pub(crate) fn same_bits(a: &[Metric], b: &[Metric]) -> bool {
    let bits = |v: &Value| match v {
        Value::Gauge(x) => vec![0, x.to_bits()],
        Value::Counter(x) => vec![1, x.to_bits()],
        Value::Distribution(d) => std::iter::once(2)
            .chain(d.values.iter().map(|x| x.to_bits()))
            .chain([u64::MAX])
            .chain(d.counts.iter().map(|x| x.to_bits()))
            .collect(),
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.name, &x.dimensions, x.unit, x.timestamp)
                == (&y.name, &y.dimensions, y.unit, y.timestamp)
                && bits(&x.value) == bits(&y.value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metric(i: u32) -> Metric {
        Metric {
            name: "PluginHealthy".into(),
            dimensions: Dimensions::from([("Region".into(), format!("us-east-{i}"))]),
            unit: Unit::None,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + u64::from(i)),
            value: Value::Gauge(f64::from(i)),
        }
    }

    fn arb_metric() -> impl Strategy<Value = Metric> {
        let unit = prop_oneof![
            Just(Unit::None),
            Just(Unit::Count),
            Just(Unit::Milliseconds),
            Just(Unit::Seconds),
            Just(Unit::Bytes),
        ];
        let value = prop_oneof![
            any::<f64>().prop_map(Value::Gauge),
            any::<f64>().prop_map(Value::Counter),
            (
                // Past 127 values, their count takes two bytes.
                prop::collection::vec(any::<f64>(), 0..150),
                prop::collection::vec(any::<f64>(), 0..150)
            )
                .prop_map(|(values, counts)| Value::distribution(values, counts)),
        ];
        (
            // Lengths of 128 bytes or more take a two-byte varint.
            ".{0,200}",
            prop::collection::btree_map(".{0,10}", ".{0,300}", 0..4),
            unit,
            0u64..u64::from(u32::MAX) * 4,
            0u32..1_000_000_000,
            value,
        )
            .prop_map(|(name, dimensions, unit, secs, nanos, value)| Metric {
                name,
                dimensions: dimensions.into_iter().collect(),
                unit,
                timestamp: UNIX_EPOCH + Duration::new(secs, nanos),
                value,
            })
    }

    #[test]
    fn a_data_record_round_trips_with_its_head() {
        let ms: Vec<Metric> = (0..3).map(metric).collect();
        let payload = data(7, &ms);
        assert_eq!(
            head(&payload),
            Ok(Head::Data {
                id: 7,
                datums: 3,
                oldest: ms[0].timestamp
            })
        );
        assert_eq!(metrics(&payload), Ok(ms));
        assert_eq!(head(&ack(7, 2)), Ok(Head::Ack { id: 7, done: 2 }));
    }

    #[test]
    fn a_typical_datum_takes_about_fifty_bytes() {
        let ms: Vec<Metric> = (0..100).map(metric).collect();
        let per = (frame(&data(1, &ms)).len()) / 100;
        assert!((40..=60).contains(&per), "{per} bytes per datum");
    }

    #[test]
    fn scan_skips_a_torn_tail_and_flipped_bytes_and_keeps_the_rest() {
        let frames: Vec<Vec<u8>> = (0..4)
            .map(|i| frame(&data(i, &[metric(i as u32)])))
            .collect();
        let mut bytes: Vec<u8> = frames.concat();
        let second = frames[0].len();
        bytes[second + HEADER + 3] ^= 0x40; // a bit in record 1's payload
        let torn = &frames[0][..10];
        bytes.extend_from_slice(torn);
        let scan = scan(&bytes);
        let ids: Vec<u64> = scan
            .frames
            .iter()
            .map(|(_, r)| match head(&bytes[r.clone()]) {
                Ok(Head::Data { id, .. }) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [0, 2, 3]);
        assert_eq!(
            scan.corrupt,
            [(second, frames[1].len()), (bytes.len() - 10, 10)]
        );
    }

    #[test]
    fn a_zero_length_or_garbage_input_has_no_frames() {
        assert_eq!(scan(&[]), Scan::default());
        let garbage = b"not a buffer segment at all".repeat(10);
        let s = scan(&garbage);
        assert!(s.frames.is_empty());
        assert_eq!(s.corrupt, [(0, garbage.len())]);
    }

    #[test]
    fn a_lying_count_or_length_is_an_error_not_an_allocation() {
        let mut payload = data(1, &[metric(1)]);
        payload[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        let room = payload.len() - DATA_HEAD;
        assert_eq!(metrics(&payload), Err(DecodeError::Crowded(u32::MAX, room)));
        // A count its bytes could hold, but not the datums there.
        payload[9..13].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(metrics(&payload), Err(DecodeError::Count(2, 1)));
        // The name's length claims far more than is left.
        let mut payload = data(1, &[metric(1)]);
        payload[25] = 0xff;
        payload.insert(26, 0x7f);
        assert!(metrics(&payload).is_err());
    }

    #[test]
    fn the_smallest_datum_and_the_largest_frame_are_the_bounds_the_reader_checks() {
        // Empty name, no dimensions, an empty distribution: 18 bytes, the fewest a datum takes.
        let smallest = Metric {
            name: String::new(),
            dimensions: Dimensions::new(),
            unit: Unit::None,
            timestamp: UNIX_EPOCH,
            value: Value::distribution(vec![], vec![]),
        };
        assert_eq!(
            data(1, std::slice::from_ref(&smallest)).len() - DATA_HEAD,
            18
        );
        assert_eq!(MIN_DATUM, 18);
        let mut record = Data::new();
        assert_eq!((record.datums(), record.is_empty()), (0, true));
        for _ in 0..3 {
            record.push(&smallest);
        }
        assert_eq!((record.datums(), record.is_empty()), (3, false));
        let (payload, datums, _) = record.finish(1);
        assert_eq!((payload.len(), datums), (DATA_HEAD + 54, 3));
        // 54 bytes hold three such datums, never four: a head claiming four is crowded.
        let mut lying = payload.clone();
        lying[9..13].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(head(&lying), Err(DecodeError::Crowded(4, 54)));
        // A segment holds 8 MiB: a payload of 8 MiB less the frame's 12-byte header is read,
        // one byte more is corrupt.
        assert_eq!(MAX_PAYLOAD, 8 * 1024 * 1024 - 12);
        let largest = scan(&frame(&vec![0; MAX_PAYLOAD]));
        assert_eq!((largest.frames.len(), largest.corrupt.len()), (1, 0));
        let over = scan(&frame(&vec![0; MAX_PAYLOAD + 1]));
        assert_eq!(
            (over.frames.len(), over.corrupt),
            (0, vec![(0, HEADER + MAX_PAYLOAD + 1)])
        );
    }

    #[test]
    fn left_over_bytes_and_a_lying_dimension_count_are_errors_before_any_allocation() {
        let mut payload = ack(7, 2);
        payload.push(0);
        assert_eq!(head(&payload), Err(DecodeError::Trailing(1)));
        // In a data record the byte left over is read as the start of a datum.
        let mut payload = data(1, &[metric(1)]);
        payload.push(0);
        assert_eq!(metrics(&payload), Err(DecodeError::Truncated));
        // The dimension count (after the 25-byte head and the 14-byte name) claims 2^40
        // pairs in a record of 60 bytes: refused, never a vector of 2^40 pairs.
        let mut payload = data(1, &[metric(1)]);
        assert_eq!(payload[DATA_HEAD + 14], 1);
        payload.splice(
            DATA_HEAD + 14..DATA_HEAD + 15,
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
        );
        assert_eq!(metrics(&payload), Err(DecodeError::Truncated));
        // A frame is whole down to an empty payload (its head is then what is wrong).
        assert_eq!(scan(&frame(&[])).frames, vec![(0, HEADER..HEADER)]);
        assert_eq!(head(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn same_bits_tells_apart_any_field_or_length_and_holds_for_nan() {
        let (a, b) = (metric(1), metric(2));
        let pair = [a.clone(), b.clone()];
        assert!(same_bits(&pair, &pair.clone()));
        assert!(!same_bits(&pair[..1], &pair));
        assert!(!same_bits(&pair[..1], &pair[1..]));
        let other_value = Metric {
            value: Value::Gauge(7.5),
            ..a.clone()
        };
        assert!(!same_bits(&pair[..1], &[other_value]));
        let nan = [Metric {
            value: Value::Gauge(f64::NAN),
            ..a
        }];
        assert!(same_bits(&nan, &nan.clone()));
    }

    /// One datum of `n` dimensions, framed as a record.
    fn many_dimensions(n: usize) -> Vec<u8> {
        let mut payload = data(1, &[metric(1)]);
        // The metric's single dimension replaced by n of them (names in reverse order, to
        // be sorted): its count is the byte after the name.
        let count_at = DATA_HEAD + 1 + "PluginHealthy".len();
        let rest = payload.split_off(count_at);
        let mut r = Reader(&rest);
        r.count(2).unwrap();
        r.string().unwrap();
        r.string().unwrap();
        let tail = r.0.to_vec();
        put_varint(&mut payload, n as u64);
        for i in (0..n).rev() {
            put_str(&mut payload, &format!("d{i}"));
            put_str(&mut payload, "v");
        }
        payload.extend_from_slice(&tail);
        payload
    }

    #[test]
    fn a_datum_of_many_dimensions_decodes_in_linear_time() {
        // Issue 21, part B: dimensions were inserted one by one, each repacking all before
        // it: 100,000 of them in one record (1 MB, within what a segment holds) took minutes.
        let (small, large) = (many_dimensions(25_000), many_dimensions(100_000));
        let ms = metrics(&large).unwrap();
        assert_eq!(ms[0].dimensions.len(), 100_000);
        assert_eq!(ms[0].dimensions.get("d0"), Some("v"));
        crate::complexity::assert_linear("n dimensions", small.as_slice(), large.as_slice(), |p| {
            drop(metrics(p).unwrap())
        });
    }

    #[test]
    fn scanning_is_linear_in_the_input() {
        // Garbage full of magics that start no frame: the worst case for resynchronising.
        let junk = |n: usize| {
            let mut b = Vec::with_capacity(n);
            while b.len() < n {
                b.extend_from_slice(&MAGIC);
                b.extend_from_slice(&[0xff; 9]);
            }
            b
        };
        let (small, large) = (junk(1 << 20), junk(4 << 20));
        assert!(scan(&large).frames.is_empty());
        crate::complexity::assert_linear(
            "magics that start no frame",
            small.as_slice(),
            large.as_slice(),
            |b| drop(scan(b)),
        );
    }

    #[test]
    fn varints_are_leb128_to_the_byte() {
        // LEB128's own examples, and each length's edges.
        let cases: [(u64, &[u8]); 8] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (624_485, &[0xe5, 0x8e, 0x26]),
        ];
        for (n, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(varint_len(n), bytes.len(), "{n}");
            assert_eq!(Reader(bytes).varint(), Ok(n));
        }
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(
            max,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            (varint_len(u64::MAX), Reader(&max).varint()),
            (10, Ok(u64::MAX))
        );
    }

    #[test]
    fn a_dimension_named_twice_keeps_the_last_value() {
        let mut payload = data(1, &[metric(1)]);
        payload.truncate(DATA_HEAD + 1 + "PluginHealthy".len());
        put_varint(&mut payload, 2);
        for v in ["first", "last"] {
            put_str(&mut payload, "Region");
            put_str(&mut payload, v);
        }
        payload.push(0);
        put_time(&mut payload, UNIX_EPOCH);
        payload.push(0);
        payload.extend_from_slice(&1f64.to_le_bytes());
        let ms = metrics(&payload).unwrap();
        assert_eq!(
            ms[0].dimensions.iter().collect::<Vec<_>>(),
            [("Region", "last")]
        );
    }

    #[test]
    fn a_record_id_past_the_highest_the_agent_numbers_is_corrupt() {
        assert_eq!(head(&ack(ID_MAX + 1, 1)), Err(DecodeError::Id(ID_MAX + 1)));
        assert_eq!(
            head(&data(u64::MAX, &[metric(1)])),
            Err(DecodeError::Id(u64::MAX))
        );
        assert!(head(&data(ID_MAX, &[metric(1)])).is_ok());
    }

    proptest! {
        #[test]
        fn datum_len_is_what_encoding_takes(m in arb_metric()) {
            prop_assert_eq!(data(1, std::slice::from_ref(&m)).len(), DATA_HEAD + datum_len(&m));
        }

        #[test]
        fn any_metrics_round_trip(ms in prop::collection::vec(arb_metric(), 0..20), id in 0..=ID_MAX) {
            let framed = frame(&data(id, &ms));
            let s = scan(&framed);
            prop_assert_eq!(s.frames.len(), 1);
            let payload = &framed[s.frames[0].1.clone()];
            prop_assert!(same_bits(&metrics(payload).unwrap(), &ms));
            let datums = ms.len() as u32;
            let is_head = matches!(head(payload), Ok(Head::Data { id: i, datums: d, .. }) if i == id && d == datums);
            prop_assert!(is_head);
        }

        #[test]
        fn no_input_makes_the_reader_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let s = scan(&bytes);
            for (_, r) in &s.frames {
                let _ = head(&bytes[r.clone()]);
                let _ = metrics(&bytes[r.clone()]);
            }
            let _ = head(&bytes);
            let _ = metrics(&bytes);
            // Frames and corrupt stretches tile the input exactly.
            let covered: usize = s.frames.iter().map(|(_, r)| r.len() + HEADER).sum::<usize>()
                + s.corrupt.iter().map(|(_, n)| n).sum::<usize>();
            prop_assert_eq!(covered, bytes.len());
        }

        #[test]
        fn garbage_between_frames_costs_only_itself(
            ids in prop::collection::vec(0..=ID_MAX, 1..6),
            junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 6),
        ) {
            let mut bytes = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                // Junk holding no magic, so it cannot fake a frame start.
                let j: Vec<u8> = junk[i].iter().map(|b| b & 0x3f).collect();
                bytes.extend_from_slice(&j);
                bytes.extend_from_slice(&frame(&ack(*id, 1)));
            }
            let s = scan(&bytes);
            let got: Vec<u64> = s.frames.iter().map(|(_, r)| match head(&bytes[r.clone()]) {
                Ok(Head::Ack { id, .. }) => id,
                other => panic!("{other:?}"),
            }).collect();
            prop_assert_eq!(got, ids);
        }

        #[test]
        fn a_cut_anywhere_keeps_every_whole_frame_before_it(n in 1usize..6, cut_at in any::<prop::sample::Index>()) {
            let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(&data(i as u64, &[metric(i as u32)]))).collect();
            let bytes = frames.concat();
            let cut = cut_at.index(bytes.len() + 1);
            let whole = frames.iter().scan(0, |end, f| { *end += f.len(); Some(*end) }).filter(|end| *end <= cut).count();
            prop_assert_eq!(scan(&bytes[..cut]).frames.len(), whole);
        }
    }
}
