//! The buffer's directory (BUFFER_DIR): segment files of framed records, appended to and
//! deleted whole, and the lock that keeps a second agent out.
//!
//! Records go to the newest segment, `<sequence>.seg` with a 20-digit sequence; a new one is
//! begun at each start, after a failed write, and when the current one reaches its size. A
//! segment is deleted once nothing in it waits. Reading one back at start ([`Disk::open`])
//! finds every intact record ([`record::scan`]): a torn tail or a corrupt stretch is skipped
//! and reported, never fatal. Files with other names are not touched. The lock is an
//! advisory `flock` on the directory itself, so it needs no file and works read-only too;
//! the kernel drops it when the process dies, kill -9 included.
//!
//! The directory is outside input: whatever is named like a segment is checked before it
//! is read. Only regular files are opened, never through a symbolic link, and never in a
//! way that can block (a FIFO would wait for a writer forever); at most [`SEGMENT_MAX`]
//! bytes of one are read, the size the agent writes; a sequence past [`SEQ_MAX`] is not one
//! the agent made, and would leave no room for the ones it makes next. Anything else named
//! like a segment is skipped, reported and counted as corrupt, and left alone: never fatal,
//! and never a reason to stop writing.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::record::{self, Head};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "BUFFER_DIR {0} is in use by another running agent (it holds the directory's lock). Fix: give each agent its own BUFFER_DIR"
    )]
    Locked(PathBuf),
    #[error(
        "BUFFER_DIR {0} cannot be used: {1}. Fix: mount a writable volume there, or unset BUFFER_DIR"
    )]
    Open(PathBuf, io::Error),
}

/// A data record found at start that has not all left the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub id: u64,
    pub datums: u32,
    pub done: u32,
    pub oldest: SystemTime,
    pub segment: u64,
    pub offset: u64,
    pub frame_len: u64,
}

/// The largest segment file the agent writes: it begins a new one before a record would
/// take one past this (a record is far smaller, `RECORD_MAX_BYTES`). A file named like a
/// segment is read up to this size; the rest is corrupt, so a 3 GB file, sparse or not,
/// costs 8 MiB to read.
pub const SEGMENT_MAX: u64 = 8 << 20;
/// The highest segment sequence read: the agent numbers segments from 1 up, one at a time,
/// and at a segment a second would reach this in 31 billion years. A name past it was not
/// written by the agent; taken as the newest, it left no room above it for the next
/// segment (`18446744073709551615.seg` wrapped the count and turned the disk buffer off).
pub const SEQ_MAX: u64 = 1_000_000_000_000_000_000;
/// Segment files read at a start, oldest first: twice what the largest BUFFER_MAX_BYTES
/// (1 TiB in 8 MiB segments) fills. Past it the newest are left unread for a later start,
/// and the names kept in memory while the directory is listed stay bounded.
pub const SEGMENT_FILES_MAX: usize = 1 << 18;

/// A stretch of the directory that held no intact record: part of a segment, or a whole
/// file named like one.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrupt {
    pub file: PathBuf,
    pub offset: usize,
    pub len: usize,
    pub why: Why,
}

/// Why a stretch or a file was skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// A record whose frame is torn, fails its checksum, or holds something unreadable.
    Record,
    /// The part of a file past SEGMENT_MAX.
    PastSegmentMax,
    /// A sequence past SEQ_MAX.
    Sequence,
    /// A symbolic link, a FIFO, a device, a socket or a directory.
    NotRegular(&'static str),
    /// It could not be opened or read.
    Unreadable(String),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Record => write!(f, "a corrupt or torn record"),
            Why::PastSegmentMax => write!(
                f,
                "past {} MiB, the largest segment the agent writes; not read",
                SEGMENT_MAX >> 20
            ),
            Why::Sequence => write!(
                f,
                "its sequence is past {SEQ_MAX}, the highest the agent reads: not one it wrote, and it would leave no room for new segments"
            ),
            Why::NotRegular(kind) => write!(f, "{kind}, not a regular file; not opened"),
            Why::Unreadable(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

/// What the directory held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Oldest first.
    pub pending: Vec<Found>,
    pub corrupt: Vec<Corrupt>,
    /// Above every id the directory has seen.
    pub next_id: u64,
    /// Segment files past SEGMENT_FILES_MAX, left unread.
    pub unread: usize,
    /// The directory's ids or segment names were past [`RENUMBER_ABOVE`]: how many records
    /// were copied into segments numbered from the bottom, or why they could not be.
    pub renumbered: Option<Result<usize, String>>,
}

/// Half of [`record::ID_MAX`] and of [`SEQ_MAX`]: the agent numbers its records and
/// segments from 1, one a record or a segment, so it reaches neither in 15 million years.
/// A directory holding more was written to by something else (a record or a file named
/// 10^18, the highest read): numbering on from there, the agent's next records or segments
/// would be past what it reads at its next start, and refused. So what waits is copied
/// into new segments numbered from the bottom, and the old ones deleted.
pub const RENUMBER_ABOVE: u64 = SEQ_MAX / 2;

struct Current {
    seq: u64,
    file: File,
    len: u64,
}

pub struct Disk {
    dir: PathBuf,
    /// Holds the lock for as long as the agent runs.
    _lock: File,
    /// Every segment file the agent reads, writes and deletes, by sequence. Files skipped at
    /// start are not among them: they are left alone.
    segments: BTreeSet<u64>,
    /// The sequence of the next segment begun: above every segment name seen, skipped or
    /// left unread ones included, so a new segment never meets an old name.
    next_seq: u64,
    current: Option<Current>,
    segment_max: u64,
}

impl Disk {
    /// Locks `dir` (made if missing) and reads back what its segments hold.
    pub fn open(dir: &Path, segment_max: u64) -> Result<(Disk, Recovered), DiskError> {
        let open_err = |e| DiskError::Open(dir.to_path_buf(), e);
        fs::create_dir_all(dir).map_err(open_err)?;
        let lock = File::open(dir).map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DiskError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let mut out = Recovered::default();
        let mut segments = BTreeSet::new();
        let mut highest = 0;
        for entry in fs::read_dir(dir).map_err(open_err)? {
            let Ok(entry) = entry else { continue };
            let Some(seq) = entry.file_name().to_str().and_then(segment_seq) else {
                continue;
            };
            if seq > SEQ_MAX {
                out.corrupt.push(Corrupt {
                    file: entry.path(),
                    offset: 0,
                    len: 0,
                    why: Why::Sequence,
                });
                continue;
            }
            highest = highest.max(seq);
            segments.insert(seq);
            // The oldest are read first and delivered first; the newest wait for a later
            // start, when these are gone.
            if segments.len() > SEGMENT_FILES_MAX {
                segments.pop_last();
                out.unread += 1;
            }
        }
        let mut disk = Disk {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments,
            next_seq: highest + 1,
            current: None,
            segment_max,
        };
        disk.recover(&mut out);
        Ok((disk, out))
    }

    fn recover(&mut self, out: &mut Recovered) {
        let mut data = Vec::new();
        // Every acknowledgement: (id, done).
        let mut acks = Vec::new();
        let mut max_id = 0;
        let mut skipped = Vec::new();
        for &seq in &self.segments {
            let path = self.path(seq);
            let bytes = match read_segment(&path) {
                Ok((bytes, size)) => {
                    if size > SEGMENT_MAX {
                        out.corrupt.push(Corrupt {
                            file: path.clone(),
                            offset: SEGMENT_MAX as usize,
                            len: usize::try_from(size - SEGMENT_MAX).unwrap_or(usize::MAX),
                            why: Why::PastSegmentMax,
                        });
                    }
                    bytes
                }
                Err((why, size)) => {
                    skipped.push(seq);
                    out.corrupt.push(Corrupt {
                        file: path,
                        offset: 0,
                        len: usize::try_from(size).unwrap_or(usize::MAX),
                        why,
                    });
                    continue;
                }
            };
            let scan = record::scan(&bytes);
            for (offset, len) in scan.corrupt {
                out.corrupt.push(Corrupt {
                    file: path.clone(),
                    offset,
                    len,
                    why: Why::Record,
                });
            }
            for (offset, range) in scan.frames {
                let frame_len = (range.end - offset) as u64;
                match record::head(&bytes[range]) {
                    Ok(Head::Data { id, datums, oldest }) => {
                        max_id = max_id.max(id);
                        // An empty record has nothing to send (the agent writes none).
                        if datums > 0 {
                            data.push(Found {
                                id,
                                datums,
                                done: 0,
                                oldest,
                                segment: seq,
                                offset: offset as u64,
                                frame_len,
                            });
                        }
                    }
                    Ok(Head::Ack { id, done }) => acks.push((id, done)),
                    // Intact but unreadable: written by something else; counted as corrupt.
                    Err(_) => out.corrupt.push(Corrupt {
                        file: path.clone(),
                        offset,
                        len: frame_len as usize,
                        why: Why::Record,
                    }),
                }
            }
        }
        // The highest name the agent may number on from, if it has to renumber.
        let low_seq = self
            .segments
            .range(..=RENUMBER_ABOVE)
            .next_back()
            .copied()
            .unwrap_or(0);
        // Not the agent's to read, write or delete.
        for seq in skipped {
            self.segments.remove(&seq);
        }
        // The agent acknowledges records it wrote, or all of them with the id of the next
        // one: an ack past that (one planted with a huge id) would take every record down
        // with it, and is ignored.
        let acked = acks
            .into_iter()
            .filter(|(id, _)| *id <= max_id.saturating_add(1))
            .max()
            .unwrap_or((0, 0));
        max_id = max_id.max(acked.0);
        data.sort_by_key(|f| f.id);
        for mut f in data {
            if f.id < acked.0 || (f.id == acked.0 && acked.1 >= f.datums) {
                continue;
            }
            if f.id == acked.0 {
                f.done = acked.1;
            }
            out.pending.push(f);
        }
        out.next_id = max_id.saturating_add(1);
        if max_id > RENUMBER_ABOVE || self.next_seq > RENUMBER_ABOVE {
            out.renumbered = Some(match self.renumber(&mut out.pending, low_seq) {
                Ok(()) => {
                    out.next_id = out.pending.len() as u64 + 1;
                    Ok(out.pending.len())
                }
                Err(e) => Err(e.to_string()),
            });
        }
        let keep = out.pending.first().map_or(u64::MAX, |f| f.segment);
        self.remove_before(keep);
    }

    /// Copies `pending` in order into new segments numbered from `low_seq + 1`, as records
    /// numbered from 1 (the first one's delivered part acknowledged), then deletes every
    /// older segment. A crash part way leaves both copies: some datums are sent twice,
    /// none lost. On an error the copies made so far are deleted and `pending` is as it was.
    fn renumber(&mut self, pending: &mut [Found], low_seq: u64) -> io::Result<()> {
        let old = self.segments.clone();
        let high_seq = self.next_seq;
        self.current = None;
        self.next_seq = low_seq + 1;
        let copied = self.copy_renumbered(pending);
        // What is not to be kept: the old segments once copied, else the copies made so far.
        let (drop, result) = match copied {
            Ok(copied) => {
                for (i, (f, (segment, offset))) in pending.iter_mut().zip(copied).enumerate() {
                    (f.id, f.segment, f.offset) = (i as u64 + 1, segment, offset);
                }
                (old, Ok(()))
            }
            Err(e) => {
                self.current = None;
                self.next_seq = high_seq;
                (self.segments.difference(&old).copied().collect(), Err(e))
            }
        };
        for s in drop {
            if fs::remove_file(self.path(s)).is_ok() {
                self.segments.remove(&s);
            }
        }
        result
    }

    /// The copies of `pending` with their new ids: where each went.
    fn copy_renumbered(&mut self, pending: &[Found]) -> io::Result<Vec<(u64, u64)>> {
        let mut at = Vec::with_capacity(pending.len());
        for (i, f) in pending.iter().enumerate() {
            let frame = self.read(f.segment, f.offset, f.frame_len)?;
            let mut payload = frame[record::HEADER..].to_vec();
            // A data payload: kind, then the id (record.rs).
            payload[1..9].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            at.push(self.append(&record::frame(&payload))?);
        }
        if let Some(first) = pending.first().filter(|f| f.done > 0) {
            self.append(&record::frame(&record::ack(1, first.done)))?;
        }
        self.sync()?;
        Ok(at)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of segment `seq`.
    pub fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    /// Appends one frame to the current segment (begun if needed): where it went. On an
    /// error the segment is cut back to where it was, as far as it can be, and the next
    /// append begins a new one.
    pub fn append(&mut self, frame: &[u8]) -> io::Result<(u64, u64)> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.len > 0 && c.len + frame.len() as u64 > self.segment_max)
        {
            self.roll()?;
        }
        if self.current.is_none() {
            self.begin()?;
        }
        let c = self.current.as_mut().expect("begun");
        match c.file.write_all(frame) {
            Ok(()) => {
                let at = (c.seq, c.len);
                c.len += frame.len() as u64;
                Ok(at)
            }
            Err(e) => {
                let _ = c.file.set_len(c.len);
                let (seq, empty) = (c.seq, c.len == 0);
                self.current = None;
                // An empty segment left behind by a full disk would be one more file each
                // cycle the disk stays full.
                if empty && fs::remove_file(self.path(seq)).is_ok() {
                    self.segments.remove(&seq);
                }
                Err(e)
            }
        }
    }

    /// Cuts the current segment back to `len` bytes: a run of appends that cannot all be
    /// made durable is taken back whole.
    pub fn truncate(&mut self, seq: u64, len: u64) {
        if let Some(c) = self.current.as_mut().filter(|c| c.seq == seq) {
            if c.file.set_len(len).is_ok() {
                c.len = len;
            } else {
                self.current = None;
            }
        }
    }

    /// Where the next append would go, if the current segment takes it.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.current.as_ref().map(|c| (c.seq, c.len))
    }

    /// Makes what was appended to the current segment durable.
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.current {
            Some(c) => c.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Reads `len` bytes at `offset` of segment `seq`, checked as at start: the file may
    /// have been replaced since.
    pub fn read(&self, seq: u64, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let (file, size) = open_segment(&self.path(seq))
            .map_err(|(why, _)| io::Error::new(io::ErrorKind::InvalidData, why.to_string()))?;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > size.min(SEGMENT_MAX))
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the segment holds {size} bytes, the record ends past them"),
            ));
        }
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Deletes every segment before `seq` but the current one: nothing in them waits.
    pub fn remove_before(&mut self, seq: u64) {
        let current = self.current.as_ref().map(|c| c.seq);
        let old: Vec<u64> = self
            .segments
            .range(..seq)
            .copied()
            .filter(|s| Some(*s) != current)
            .collect();
        for s in old {
            match fs::remove_file(self.path(s)) {
                Ok(()) => {
                    self.segments.remove(&s);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.segments.remove(&s);
                }
                // A read-only directory: tried again after the next acknowledgement.
                Err(_) => break,
            }
        }
    }

    fn roll(&mut self) -> io::Result<()> {
        // What was written without a sync (acks, self metrics) becomes durable with the
        // segment, since later syncs only cover the new one.
        self.sync()?;
        self.current = None;
        Ok(())
    }

    fn begin(&mut self) -> io::Result<()> {
        // A name taken since the start (by something else) is passed over, a few times.
        let mut tries = 0;
        let (seq, file) = loop {
            let seq = self.next_seq;
            self.next_seq = seq.checked_add(1).ok_or_else(|| {
                io::Error::other("no segment sequence is left above the highest in the directory")
            })?;
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(self.path(seq))
            {
                Ok(file) => break (seq, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        self.segments.insert(seq);
        // The new name must survive a power cut as well as its contents.
        File::open(&self.dir)?.sync_all()?;
        self.current = Some(Current { seq, file, len: 0 });
        Ok(())
    }
}

/// Opens a segment file for reading, if it is a regular file and not a symbolic link, without
/// blocking (a FIFO would wait for a writer): the file and its size. Else why not, and the
/// size if known.
fn open_segment(path: &Path) -> Result<(File, u64), (Why, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => (Why::NotRegular("a symbolic link"), 0),
            // O_NONBLOCK on a FIFO's open for writing; for reading it opens at once.
            Some(libc::ENXIO) => (Why::NotRegular("a FIFO or socket"), 0),
            _ => (Why::Unreadable(e.to_string()), 0),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| (Why::Unreadable(e.to_string()), 0))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err((Why::NotRegular(what), 0));
    }
    Ok((file, meta.len()))
}

/// A segment's first SEGMENT_MAX bytes, and its whole size.
fn read_segment(path: &Path) -> Result<(Vec<u8>, u64), (Why, u64)> {
    let (file, size) = open_segment(path)?;
    let mut bytes = Vec::with_capacity(size.min(SEGMENT_MAX) as usize);
    file.take(SEGMENT_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| (Why::Unreadable(e.to_string()), size))?;
    Ok((bytes, size))
}

/// The sequence of a segment file's name, or None for any other file.
fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Twenty digits past u64 read as its largest, past SEQ_MAX like any sequence too high.
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twenty_digit_seg_names_are_segments() {
        assert_eq!(segment_seq("00000000000000000042.seg"), Some(42));
        for other in [
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.seg.bak",
            "lock",
            "notes.txt",
            "+0000000000000000042.seg",
        ] {
            assert_eq!(segment_seq(other), None, "{other}");
        }
    }
}
