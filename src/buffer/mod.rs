//! What has been collected and not yet delivered, in memory or, with BUFFER_DIR, on disk.
//!
//! Every cycle passes through here: [`Buffer::push`] stores its metrics as records (in
//! [`record`]'s format), written ahead to the directory ([`disk`]) and synced before the
//! sink sees them; the sink reads the oldest with [`Buffer::peek`] and calls
//! [`Buffer::ack`] for each run CloudWatch has taken (or that was dropped as invalid), so a
//! record leaves only once it is delivered. A crash between a delivery and its ack sends that
//! run again: at-least-once. Without a directory the same records are kept in memory.
//!
//! Bounds, applied by [`Buffer::trim`] after each publish so a cycle is always offered
//! whole: QUEUE_MAX_DATUMS datums held in memory, BUFFER_MAX_BYTES of records on disk; past
//! either, the oldest go first and are counted. When the directory cannot be written (a full
//! disk, a read-only mount) the records stay in memory, under the memory bound, and are
//! written out, oldest first, as soon as a write succeeds again.

pub mod config;
pub mod disk;
pub mod record;

use std::collections::VecDeque;
use std::path::Path;
use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::metric::Metric;
use crate::untrusted;
use disk::{Disk, DiskError, Recovered, Why};

/// Metrics per record: a cycle larger than this is stored as several. Two requests' worth,
/// the publisher's chunk: a record is decoded whole, so this bounds what a publish holds
/// decoded while CloudWatch is down (10,000 took 210 bytes per queued datum, against 100).
pub(crate) const RECORD_MAX_DATUMS: usize = 2_000;
/// Payload bytes per record: a cycle is cut where either bound is reached. Datums of
/// 30 dimensions of 1 KB each made a 2,000-datum record of 70 MB, past what the reader
/// takes, so it was written and then lost. 1 MiB holds 2,000 typical datums (80 bytes)
/// five times over and any datum CloudWatch accepts (under 64 KiB), and keeps what one
/// record costs decoded small.
pub const RECORD_MAX_BYTES: usize = 1 << 20;
const _: () = assert!(RECORD_MAX_BYTES <= record::MAX_PAYLOAD);
const _: () = assert!((record::HEADER + RECORD_MAX_BYTES) as u64 <= disk::SEGMENT_MAX);
/// Segment files are begun anew at SEGMENT_MAX, or an eighth of BUFFER_MAX_BYTES if smaller.
const SEGMENT_MIN: u64 = 4 << 10;
/// Corrupt stretches and skipped files logged one by one at start; the rest are counted,
/// and said in one line.
const CORRUPT_LOGGED: usize = 20;

/// Datums that left the buffer without being delivered, by reason, since the publisher last
/// took them ([`Buffer::take_lost`]): the bounds' drops are [`Buffer::trim`]'s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Datums larger than a record can hold, refused before they were written: CloudWatch
    /// would refuse them too (its largest datum takes under 64 KiB).
    pub invalid: usize,
    /// Datums of a record that could not be read back (damaged on disk after it was
    /// written, or its file replaced).
    pub corrupt: usize,
}

/// How the buffer stands, for `/metrics` and the self metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Gauges {
    /// Datums waiting.
    pub datums: usize,
    /// Bytes of records waiting, on disk and in memory.
    pub bytes: u64,
    /// The timestamp of the oldest datum waiting.
    pub oldest: Option<SystemTime>,
    /// Datums dropped by the bounds since start.
    pub dropped_total: u64,
    /// Corrupt records (stretches of a segment) skipped since start.
    pub corrupt_total: u64,
    /// With BUFFER_DIR: whether the last write to it succeeded.
    pub disk_ok: Option<bool>,
}

#[derive(Debug)]
enum Place {
    /// The record's payload.
    Memory(Vec<u8>),
    Disk {
        segment: u64,
        offset: u64,
    },
}

#[derive(Debug)]
struct Entry {
    id: u64,
    datums: u32,
    /// The first `done` datums have left the buffer.
    done: u32,
    oldest: SystemTime,
    /// Frame bytes: header and payload.
    len: u64,
    place: Place,
}

impl Entry {
    fn waiting(&self) -> usize {
        (self.datums - self.done) as usize
    }
}

pub struct Buffer {
    entries: VecDeque<Entry>,
    next_id: u64,
    disk: Option<Disk>,
    /// The last write to the directory failed; the next push tries again.
    disk_failing: bool,
    max_memory_datums: usize,
    max_disk_bytes: u64,
    datums: usize,
    memory_datums: usize,
    disk_bytes: u64,
    memory_bytes: u64,
    dropped_total: u64,
    corrupt_total: u64,
    lost: Lost,
}

impl Buffer {
    /// A buffer in memory only, holding at most `max_datums` after a publish.
    pub fn memory(max_datums: usize) -> Self {
        Buffer {
            entries: VecDeque::new(),
            next_id: 1,
            disk: None,
            disk_failing: false,
            max_memory_datums: max_datums,
            max_disk_bytes: 0,
            datums: 0,
            memory_datums: 0,
            disk_bytes: 0,
            memory_bytes: 0,
            dropped_total: 0,
            corrupt_total: 0,
            lost: Lost::default(),
        }
    }

    /// A buffer written ahead to `dir`, holding what an earlier run left there. Fails only
    /// when the directory cannot be made or opened, or another agent holds it.
    pub fn open(dir: &Path, max_bytes: u64, max_memory_datums: usize) -> Result<Self, DiskError> {
        let segment_max = (max_bytes / 8).clamp(SEGMENT_MIN, disk::SEGMENT_MAX);
        let (disk, recovered) = Disk::open(dir, segment_max)?;
        let mut buffer = Buffer::memory(max_memory_datums);
        buffer.max_disk_bytes = max_bytes;
        buffer.adopt(&disk, recovered);
        buffer.disk = Some(disk);
        Ok(buffer)
    }

    fn adopt(&mut self, disk: &Disk, recovered: Recovered) {
        for c in recovered.corrupt.iter().take(CORRUPT_LOGGED) {
            let file = untrusted::escape(&c.file.display().to_string());
            match &c.why {
                Why::Record => {
                    warn!(%file, offset = c.offset, bytes = c.len, "buffer: skipped a corrupt or torn record")
                }
                why => {
                    warn!(%file, offset = c.offset, bytes = c.len, why = %why, "buffer: skipped a file named like a segment, or its part past a segment's size")
                }
            }
        }
        if let Some(more) = recovered
            .corrupt
            .len()
            .checked_sub(CORRUPT_LOGGED)
            .filter(|n| *n > 0)
        {
            warn!(
                more,
                "buffer: more corrupt stretches and skipped files than are logged one by one; all are counted in buffer_corrupt_records_total"
            );
        }
        if recovered.unread > 0 {
            warn!(
                dir = %untrusted::escape(&disk.dir().display().to_string()),
                unread = recovered.unread,
                read = disk::SEGMENT_FILES_MAX,
                "buffer: more segment files than are read at a start; the newest are left for a later start"
            );
        }
        match &recovered.renumbered {
            Some(Ok(records)) => warn!(
                dir = %untrusted::escape(&disk.dir().display().to_string()),
                records,
                "buffer: the directory held record ids or segment names the agent never reaches (something else wrote them); what waits was copied into segments numbered from 1"
            ),
            Some(Err(e)) => error!(
                dir = %untrusted::escape(&disk.dir().display().to_string()),
                error = %e,
                "buffer: the directory holds record ids or segment names the agent never reaches, and what waits could not be copied under new ones; records written from now on may be refused at the next start. Fix: move the directory's files away"
            ),
            None => {}
        }
        self.corrupt_total += recovered.corrupt.len() as u64;
        self.next_id = recovered.next_id;
        for f in recovered.pending {
            self.datums += (f.datums - f.done) as usize;
            self.disk_bytes += f.frame_len;
            self.entries.push_back(Entry {
                id: f.id,
                datums: f.datums,
                done: f.done,
                oldest: f.oldest,
                len: f.frame_len,
                place: Place::Disk {
                    segment: f.segment,
                    offset: f.offset,
                },
            });
        }
        info!(
            dir = %disk.dir().display(),
            datums = self.datums,
            records = self.entries.len(),
            bytes = self.disk_bytes,
            oldest = %self.oldest().map(|t| humantime::format_rfc3339(t).to_string()).unwrap_or_else(|| "none".into()),
            corrupt = recovered.corrupt.len(),
            "buffer directory opened; what it holds goes out first"
        );
    }

    /// Datums waiting.
    pub fn len(&self) -> usize {
        self.datums
    }

    pub fn is_empty(&self) -> bool {
        self.datums == 0
    }

    /// Whether everything stored so far is on disk and synced (no record waits in memory):
    /// true only with BUFFER_DIR, after a synced push that the directory took.
    pub fn durable(&self) -> bool {
        self.disk.is_some() && self.memory_datums == 0
    }

    pub fn oldest(&self) -> Option<SystemTime> {
        self.entries.iter().map(|e| e.oldest).min()
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            datums: self.datums,
            bytes: self.disk_bytes + self.memory_bytes,
            oldest: self.oldest(),
            dropped_total: self.dropped_total,
            corrupt_total: self.corrupt_total,
            disk_ok: self.disk.as_ref().map(|_| !self.disk_failing),
        }
    }

    /// Stores `metrics` behind what waits. With `sync`, they are on disk and synced when
    /// this returns, unless the directory failed (then they wait in memory); without it
    /// they are written, and become durable with the next synced push.
    ///
    /// They are cut into records of at most RECORD_MAX_DATUMS datums and RECORD_MAX_BYTES
    /// bytes, so every record written can be read back. A datum too large for any record is
    /// refused here, logged and counted ([`Buffer::take_lost`]).
    pub fn push(&mut self, metrics: &[Metric], sync: bool) {
        let mut record = record::Data::new();
        let mut refused: Option<(usize, &Metric, usize)> = None;
        for m in metrics {
            let len = record::datum_len(m);
            if record::DATA_HEAD + len > RECORD_MAX_BYTES {
                let (n, _, _) = refused.get_or_insert((0, m, len));
                *n += 1;
                continue;
            }
            if record.datums() == RECORD_MAX_DATUMS || record.len() + len > RECORD_MAX_BYTES {
                self.hold(std::mem::take(&mut record));
            }
            record.push(m);
        }
        if !record.is_empty() {
            self.hold(record);
        }
        if let Some((n, first, bytes)) = refused {
            self.lost.invalid += n;
            warn!(
                datums = n,
                name = %untrusted::remote(&first.name),
                bytes,
                max_bytes = RECORD_MAX_BYTES,
                "datums larger than a buffer record can hold were dropped (CloudWatch refuses any datum of that size); the first is named"
            );
        }
        self.write_out(sync);
    }

    /// Keeps a record in memory, behind what waits; `write_out` moves it to disk.
    fn hold(&mut self, record: record::Data) {
        let id = self.next_id;
        self.next_id += 1;
        let (payload, datums, oldest) = record.finish(id);
        let len = (record::HEADER + payload.len()) as u64;
        self.datums += datums as usize;
        self.memory_datums += datums as usize;
        self.memory_bytes += len;
        self.entries.push_back(Entry {
            id,
            datums,
            done: 0,
            oldest,
            len,
            place: Place::Memory(payload),
        });
    }

    /// What left the buffer undelivered since the last call, outside the bounds: the
    /// publisher adds it to its report, so every such drop is in the cycle's line and in
    /// `/metrics`.
    pub fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }

    /// Writes every record held in memory to the directory, oldest first; they move to disk
    /// only once all are written (and synced, with `sync`). A failure keeps them in memory.
    fn write_out(&mut self, sync: bool) {
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        let held: Vec<usize> = (0..self.entries.len())
            .filter(|&i| matches!(self.entries[i].place, Place::Memory(_)))
            .collect();
        if held.is_empty() {
            return;
        }
        let start = disk.position();
        let mut placed = Vec::with_capacity(held.len());
        let mut result = Ok(());
        for &i in &held {
            let Place::Memory(payload) = &self.entries[i].place else {
                unreachable!("held")
            };
            match disk.append(&record::frame(payload)) {
                Ok(at) => placed.push(at),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Part of the oldest record may have left while it was held: say so on disk too.
        let front = &self.entries[0];
        if result.is_ok() && held[0] == 0 && front.done > 0 {
            result = disk
                .append(&record::frame(&record::ack(front.id, front.done)))
                .map(drop);
        }
        if result.is_ok() && sync {
            result = disk.sync();
        }
        match result {
            Ok(()) => {
                for (&i, (segment, offset)) in held.iter().zip(placed) {
                    let e = &mut self.entries[i];
                    e.place = Place::Disk { segment, offset };
                    self.memory_datums -= e.waiting();
                    self.memory_bytes -= e.len;
                    self.disk_bytes += e.len;
                }
                if self.disk_failing {
                    self.disk_failing = false;
                    info!(dir = %disk.dir().display(), records = held.len(), "buffer directory writable again; the records held in memory are written to it");
                }
            }
            Err(e) => {
                // Records written before the failure are taken back, so none is on disk twice.
                if let (Some((seq, len)), Some(_)) = (start, placed.first()) {
                    disk.truncate(seq, len);
                }
                if !self.disk_failing {
                    self.disk_failing = true;
                    error!(dir = %disk.dir().display(), error = %untrusted::escape(&e.to_string()), "buffer directory cannot be written; cycles are kept in memory (QUEUE_MAX_DATUMS) until it can");
                }
            }
        }
    }

    /// Up to `max` of the oldest datums waiting, oldest first, left in the buffer until
    /// acknowledged. A record that cannot be read back is dropped, counted and logged.
    pub fn peek(&mut self, max: usize) -> Vec<Metric> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.entries.len() && out.len() < max {
            match self.load(i) {
                Ok(mut metrics) => {
                    let e = &self.entries[i];
                    let take = (max - out.len()).min(e.waiting());
                    let start = e.done as usize;
                    out.extend(metrics.drain(start..start + take));
                    i += 1;
                }
                Err(why) => {
                    let e = self.entries.remove(i).expect("in range");
                    self.corrupt_total += 1;
                    self.lost.corrupt += e.waiting();
                    self.forget(&e);
                    warn!(record = e.id, datums = e.waiting(), error = %untrusted::escape(&why), "buffer: a record could not be read back; its datums are dropped and counted");
                }
            }
        }
        out
    }

    fn load(&self, i: usize) -> Result<Vec<Metric>, String> {
        let e = &self.entries[i];
        match &e.place {
            Place::Memory(payload) => record::metrics(payload).map_err(|e| e.to_string()),
            Place::Disk { segment, offset } => {
                let disk = self.disk.as_ref().expect("a disk entry has a disk");
                let file = disk.path(*segment);
                let place = |why: String| format!("{} at offset {offset}: {why}", file.display());
                let bytes = disk
                    .read(*segment, *offset, e.len)
                    .map_err(|why| place(why.to_string()))?;
                let scan = record::scan(&bytes);
                match scan.frames.first() {
                    Some((0, range)) if range.end == bytes.len() => {
                        record::metrics(&bytes[range.clone()]).map_err(|why| place(why.to_string()))
                    }
                    _ => Err(place("checksum mismatch".into())),
                }
            }
        }
    }

    /// Takes the counts of a removed entry's waiting datums off the totals.
    fn forget(&mut self, e: &Entry) {
        self.datums -= e.waiting();
        match e.place {
            Place::Memory(_) => {
                self.memory_datums -= e.waiting();
                self.memory_bytes -= e.len;
            }
            Place::Disk { .. } => self.disk_bytes -= e.len,
        }
    }

    /// The oldest `n` datums waiting have left the buffer (delivered, or dropped for good).
    pub fn ack(&mut self, mut n: usize) {
        let mut last = None;
        while n > 0 {
            let Some(front) = self.entries.front_mut() else {
                break;
            };
            let take = n.min(front.waiting());
            front.done += take as u32;
            n -= take;
            self.datums -= take;
            if matches!(front.place, Place::Memory(_)) {
                self.memory_datums -= take;
            }
            last = Some((front.id, front.done));
            if front.waiting() == 0 {
                let e = self.entries.pop_front().expect("front");
                match e.place {
                    Place::Memory(_) => self.memory_bytes -= e.len,
                    Place::Disk { .. } => self.disk_bytes -= e.len,
                }
            }
        }
        if let Some((id, done)) = last {
            self.record_ack(id, done);
        }
    }

    /// Writes down how far the buffer has been emptied, and deletes the segments that no
    /// longer hold anything waiting. Not synced: losing it to a power cut only sends again.
    fn record_ack(&mut self, id: u64, done: u32) {
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        let first_on_disk = self.entries.iter().find_map(|e| match e.place {
            Place::Disk { segment, .. } => Some(segment),
            Place::Memory(_) => None,
        });
        if !self.disk_failing {
            let _ = disk.append(&record::frame(&record::ack(id, done)));
        }
        disk.remove_before(first_on_disk.unwrap_or(u64::MAX));
    }

    /// Drops the oldest datums past the bounds; returns how many.
    pub fn trim(&mut self) -> usize {
        let mut dropped = 0;
        // Memory: the oldest records held in memory, datum by datum. They were never written
        // to disk (write_out notes a partly sent one when it is), so nothing there to ack.
        while self.memory_datums > self.max_memory_datums {
            let over = self.memory_datums - self.max_memory_datums;
            let i = self
                .entries
                .iter()
                .position(|e| matches!(e.place, Place::Memory(_)))
                .expect("memory datums are in memory entries");
            let e = &mut self.entries[i];
            let n = over.min(e.waiting());
            e.done += n as u32;
            self.datums -= n;
            self.memory_datums -= n;
            dropped += n;
            if e.waiting() == 0 {
                let e = self.entries.remove(i).expect("in range");
                self.memory_bytes -= e.len;
            }
        }
        // Disk: whole records, oldest first.
        while self.disk_bytes > self.max_disk_bytes && self.disk.is_some() {
            let Some(front) = self.entries.front() else {
                break;
            };
            let n = front.waiting();
            self.ack(n);
            dropped += n;
        }
        self.dropped_total += dropped as u64;
        dropped
    }

    /// Whether what waits is kept in BUFFER_DIR.
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }
}

#[cfg(test)]
pub(crate) mod tests;
