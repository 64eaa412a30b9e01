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

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
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

/// A stretch of a segment that held no intact record.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrupt {
    pub file: PathBuf,
    pub offset: usize,
    pub len: usize,
}

/// What the directory held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Oldest first.
    pub pending: Vec<Found>,
    pub corrupt: Vec<Corrupt>,
    /// Above every id the directory has seen.
    pub next_id: u64,
}

struct Current {
    seq: u64,
    file: File,
    len: u64,
}

pub struct Disk {
    dir: PathBuf,
    /// Holds the lock for as long as the agent runs.
    _lock: File,
    /// Every segment file there is, by sequence.
    segments: BTreeSet<u64>,
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
        let mut segments = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(open_err)? {
            let Ok(entry) = entry else { continue };
            if let Some(seq) = segment_seq(&entry.file_name().to_string_lossy()) {
                segments.insert(seq);
            }
        }
        let mut disk = Disk {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments,
            current: None,
            segment_max,
        };
        let recovered = disk.recover()?;
        Ok((disk, recovered))
    }

    fn recover(&mut self) -> Result<Recovered, DiskError> {
        let mut out = Recovered::default();
        let mut data = Vec::new();
        // The furthest acknowledgement: (id, done).
        let mut acked = (0u64, 0u32);
        let mut max_id = 0;
        for &seq in &self.segments {
            let path = self.path(seq);
            let bytes = fs::read(&path).map_err(|e| DiskError::Open(path.clone(), e))?;
            let scan = record::scan(&bytes);
            for (offset, len) in scan.corrupt {
                out.corrupt.push(Corrupt {
                    file: path.clone(),
                    offset,
                    len,
                });
            }
            for (offset, range) in scan.frames {
                let frame_len = (range.end - offset) as u64;
                match record::head(&bytes[range]) {
                    Ok(Head::Data { id, datums, oldest }) => {
                        max_id = max_id.max(id);
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
                    Ok(Head::Ack { id, done }) => {
                        max_id = max_id.max(id);
                        acked = acked.max((id, done));
                    }
                    // Intact but unreadable: written by something else; counted as corrupt.
                    Err(_) => out.corrupt.push(Corrupt {
                        file: path.clone(),
                        offset,
                        len: frame_len as usize,
                    }),
                }
            }
        }
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
        out.next_id = max_id + 1;
        let keep = out.pending.first().map_or(u64::MAX, |f| f.segment);
        self.remove_before(keep);
        Ok(out)
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

    /// Reads `len` bytes at `offset` of segment `seq`.
    pub fn read(&self, seq: u64, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(seq))?;
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
        let seq = self.segments.last().map_or(1, |s| s + 1);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(self.path(seq))?;
        self.segments.insert(seq);
        // The new name must survive a power cut as well as its contents.
        File::open(&self.dir)?.sync_all()?;
        self.current = Some(Current { seq, file, len: 0 });
        Ok(())
    }
}

/// The sequence of a segment file's name, or None for any other file.
fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
