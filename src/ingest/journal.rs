//! The ingest journal: an append-only log of everything a connector handed
//! over, written before the source gets its acknowledgement and replayed at
//! start until the lake holds it.
//!
//! **Format.** A journal stream is a directory of segment files named by the
//! stream offset of their first byte (`00000000000000000000.wal`). A record
//! is `len: u32 LE | crc32: u32 LE | payload`; its position (LSN) is the
//! stream offset just past it, so positions grow across segments, a
//! position names exactly one record, and 0 means "nothing". The CRC covers
//! the payload.
//!
//! **Durability.** [`Journal::append`] buffers; [`Journal::sync`] writes the
//! buffer and `fdatasync`s it: one sync covers every record appended since
//! (group commit). A new segment's directory entry is synced too. Nothing is
//! acknowledged to a source before the sync that covers it returned.
//!
//! **Recovery.** Opening a stream reads every segment: a torn record at the
//! end of the last segment (a crash in the middle of a write) is cut off; a
//! bad record elsewhere (a corrupted disk block) ends that segment's
//! records and is reported as lost, never silently skipped.
//!
//! **Trimming.** Whole segments whose records all lie at or below the trim
//! position are deleted; the trim position itself is stored in `trim`
//! (written atomically) so that a restart replays only what is above it.
//!
//! Why not a crate: the log crates we looked at (`okaywal`, `commitlog`,
//! `simple_wal`) either decide on their own when to checkpoint or lack
//! group commit; here trimming is driven by Delta commits and the payloads
//! are ours, which takes about 300 lines.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of a record header.
pub const HEADER: u64 = 8;
/// Largest record accepted (a message is bounded far below this).
const MAX_RECORD: u32 = 512 << 20;

/// Errors of the journal (I/O with the file it concerns).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: record of {len} bytes is too large")]
    TooLarge { path: String, len: usize },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone)]
struct Segment {
    base: u64,
    path: PathBuf,
}

/// What opening a stream found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last record cut off.
    pub torn_bytes: u64,
    /// Records unreadable (bad checksum or length) inside the stream.
    pub corrupt_records: u64,
}

/// One journal stream (one directory).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    file: File,
    /// Position the next record gets.
    next: u64,
    /// Position up to which the file holds the records (the rest is in `buf`).
    written: u64,
    buf: Vec<u8>,
    /// Everything at or below this position is in the lake.
    trimmed: u64,
    new_segment: bool,
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.wal")
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Journal {
    /// Open (or create) the stream in `dir`, recovering from a crash.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Journal, Recovery), JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments: Vec<Segment> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let base = name.strip_suffix(".wal")?.parse::<u64>().ok()?;
                Some(Segment {
                    base,
                    path: e.path(),
                })
            })
            .collect();
        segments.sort_by_key(|s| s.base);
        let trimmed = read_trim(dir)?;
        let mut rec = Recovery::default();
        // Find the end of the valid records of the last segment.
        let next = match segments.last() {
            None => trimmed,
            Some(last) => {
                let len = std::fs::metadata(&last.path).map_err(io(&last.path))?.len();
                let mut end = 0u64;
                let mut reader = SegmentReader::open(&last.path)?;
                while let Some(r) = reader.next_record()? {
                    match r {
                        Ok((off, _)) => end = off + HEADER + reader.last_len,
                        Err(()) => break,
                    }
                }
                if end < len {
                    rec.torn_bytes = len - end;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&last.path)
                        .map_err(io(&last.path))?;
                    f.set_len(end).map_err(io(&last.path))?;
                    f.sync_all().map_err(io(&last.path))?;
                }
                last.base + end
            }
        };
        let next = next.max(trimmed);
        let (file, new_segment) = match segments.last() {
            Some(last) if next - last.base < segment_bytes => (
                OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(io(&last.path))?,
                false,
            ),
            _ => {
                let path = dir.join(segment_name(next));
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                segments.push(Segment { base: next, path });
                (f, true)
            }
        };
        let mut j = Journal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(4096),
            segments,
            file,
            next,
            written: next,
            buf: Vec::with_capacity(1 << 20),
            trimmed,
            new_segment,
        };
        // Count corrupt records inside older segments (reported, not hidden).
        for s in &j.segments[..j.segments.len().saturating_sub(1)] {
            let mut r = SegmentReader::open(&s.path)?;
            while let Some(x) = r.next_record()? {
                if x.is_err() {
                    rec.corrupt_records += 1;
                    break;
                }
            }
        }
        if j.new_segment {
            sync_dir(&j.dir)?;
            j.new_segment = false;
        }
        Ok((j, rec))
    }

    /// Append a record (buffered until [`Journal::sync`]); returns its
    /// position (the stream offset just past it).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if payload.len() > MAX_RECORD as usize {
            return Err(JournalError::TooLarge {
                path: self.dir.display().to_string(),
                len: payload.len(),
            });
        }
        let base = self.segments.last().map_or(0, |s| s.base);
        if self.next > base && self.next - base >= self.segment_bytes {
            self.roll()?;
        }
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.next += HEADER + payload.len() as u64;
        Ok(self.next)
    }

    /// Write what is buffered and make it durable.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = self.active_path();
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf).map_err(io(&path))?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        self.file.sync_data().map_err(io(&path))?;
        if self.new_segment {
            sync_dir(&self.dir)?;
            self.new_segment = false;
        }
        Ok(())
    }

    /// Drop buffered records that were never synced (after a failed sync:
    /// the sources were not acknowledged and deliver them again).
    pub fn discard_unsynced(&mut self) -> Result<(), JournalError> {
        self.buf.clear();
        let path = self.active_path();
        let base = self.segments.last().map_or(0, |s| s.base);
        // A failed write may have left part of the buffer in the file.
        self.file.set_len(self.written - base).map_err(io(&path))?;
        self.next = self.written;
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.dir.clone())
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let path = self.dir.join(segment_name(self.next));
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        self.segments.push(Segment {
            base: self.next,
            path,
        });
        self.new_segment = true;
        Ok(())
    }

    /// Everything at or below `upto` is in the lake: remember it and delete
    /// the segments that hold nothing above it. Returns the segments deleted.
    pub fn trim(&mut self, upto: u64) -> Result<usize, JournalError> {
        let old = self.trim_detached(upto)?;
        for p in &old {
            std::fs::remove_file(p).map_err(io(p))?;
        }
        Ok(old.len())
    }

    /// [`Journal::trim`] without the deleting: the segments that hold
    /// nothing above `upto` leave the journal and their files are returned
    /// for the caller to delete where it does not hold up appends
    /// (unlinking 30 s of a million readings a second, a dozen segments of
    /// 64 MiB, took the ingest shard's task part of a half-second stall). A
    /// file not deleted (a crash first) is deleted by the first trim after
    /// reopening.
    pub fn trim_detached(&mut self, upto: u64) -> Result<Vec<PathBuf>, JournalError> {
        let upto = upto.min(self.written);
        if upto <= self.trimmed {
            return Ok(Vec::new());
        }
        write_trim(&self.dir, upto)?;
        self.trimmed = upto;
        let mut old = Vec::new();
        // A segment ends where the next begins; the active one is kept.
        while self.segments.len() > 1 && self.segments[1].base <= upto {
            old.push(self.segments.remove(0).path);
        }
        Ok(old)
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Position of the last record appended (0: none).
    pub fn next_lsn(&self) -> u64 {
        self.next
    }

    /// Everything at or below this position is in the lake.
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// Bytes of records above the trim position.
    pub fn pending_bytes(&self) -> u64 {
        self.next.saturating_sub(self.trimmed)
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.written - self.segments.first().map_or(self.written, |s| s.base)
    }

    /// Every durable record above `after`, in order: `(position, payload)`.
    /// A corrupt record ends its segment (counted in [`Recovery`] at open).
    pub fn replay(&self, after: u64) -> Replay {
        Replay {
            segments: self.segments.clone(),
            idx: 0,
            reader: None,
            after,
            end: self.written,
        }
    }
}

/// Iterator over the records of a stream.
pub struct Replay {
    segments: Vec<Segment>,
    idx: usize,
    reader: Option<(u64, SegmentReader)>,
    after: u64,
    end: u64,
}

impl Iterator for Replay {
    type Item = Result<(u64, Vec<u8>), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.reader.is_none() {
                let s = self.segments.get(self.idx)?.clone();
                self.idx += 1;
                // Every record of a segment ends at or before the next one's base.
                if self
                    .segments
                    .get(self.idx)
                    .is_some_and(|n| n.base <= self.after)
                {
                    continue;
                }
                match SegmentReader::open(&s.path) {
                    Ok(r) => self.reader = Some((s.base, r)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (base, r) = self.reader.as_mut()?;
            match r.next_record() {
                Err(e) => return Some(Err(e)),
                Ok(None) | Ok(Some(Err(()))) => {
                    self.reader = None;
                    continue;
                }
                Ok(Some(Ok((off, payload)))) => {
                    let lsn = *base + off + HEADER + payload.len() as u64;
                    if lsn > self.end {
                        return None;
                    }
                    if lsn <= self.after {
                        continue;
                    }
                    return Some(Ok((lsn, payload)));
                }
            }
        }
    }
}

/// Reads records of one segment file sequentially.
struct SegmentReader {
    path: PathBuf,
    file: std::io::BufReader<File>,
    off: u64,
    last_len: u64,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<SegmentReader, JournalError> {
        let f = File::open(path).map_err(io(path))?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            file: std::io::BufReader::with_capacity(1 << 20, f),
            off: 0,
            last_len: 0,
        })
    }

    /// The next record as (offset in segment, payload); `Some(Err(()))` for
    /// a torn or corrupt record (the segment's records end there).
    #[allow(clippy::type_complexity)]
    fn next_record(&mut self) -> Result<Option<Result<(u64, Vec<u8>), ()>>, JournalError> {
        let mut h = [0u8; HEADER as usize];
        match read_full(&mut self.file, &mut h).map_err(io(&self.path))? {
            0 => return Ok(None),
            n if n < h.len() => return Ok(Some(Err(()))),
            _ => {}
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_RECORD {
            return Ok(Some(Err(())));
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut self.file, &mut payload).map_err(io(&self.path))? < payload.len() {
            return Ok(Some(Err(())));
        }
        if crc32fast::hash(&payload) != crc {
            return Ok(Some(Err(())));
        }
        let off = self.off;
        self.off += HEADER + len as u64;
        self.last_len = len as u64;
        Ok(Some(Ok((off, payload))))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_trim(dir: &Path) -> Result<u64, JournalError> {
    let p = dir.join("trim");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&p)(e)),
    }
}

/// Write a small file atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    sync_dir(dir)
}

fn write_trim(dir: &Path, upto: u64) -> Result<(), JournalError> {
    write_atomic(dir, "trim", upto.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(j: &Journal, after: u64) -> Vec<(u64, Vec<u8>)> {
        j.replay(after).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn append_sync_replay_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, rec) = Journal::open(d.path(), 4096).unwrap();
        assert_eq!(rec, Recovery::default());
        let mut lsns = Vec::new();
        for i in 0..200u32 {
            lsns.push(
                j.append(format!("record {i}").repeat(30).as_bytes())
                    .unwrap(),
            );
            if i % 7 == 0 {
                j.sync().unwrap();
            }
        }
        j.sync().unwrap();
        assert!(j.segments.len() > 3, "rolled into segments");
        let all = records(&j, 0);
        assert_eq!(all.len(), 200);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), lsns);
        assert_eq!(all[5].1, "record 5".repeat(30).as_bytes());
        // Reopen: the same records, appends continue after them.
        drop(j);
        let (mut j, rec) = Journal::open(d.path(), 4096).unwrap();
        assert_eq!(rec, Recovery::default());
        assert_eq!(records(&j, 0).len(), 200);
        let next = j.append(b"after").unwrap();
        j.sync().unwrap();
        assert!(next > *lsns.last().unwrap());
        // Replay after a position gives only what is above it.
        let tail = records(&j, lsns[150]);
        assert_eq!(tail.len(), 50);
        assert_eq!(tail[0].0, lsns[151]);
        assert_eq!(tail[49], (next, b"after".to_vec()));
    }

    #[test]
    fn unsynced_records_are_not_replayed_and_torn_tails_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(d.path(), 1 << 20).unwrap();
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        j.sync().unwrap();
        j.append(b"never synced").unwrap();
        drop(j);
        // A torn write: half a header and some garbage at the end.
        let seg = d.path().join(segment_name(0));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut j, rec) = Journal::open(d.path(), 1 << 20).unwrap();
        assert_eq!(rec.torn_bytes, 6);
        let r = records(&j, 0);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1, b"two");
        // New records go where the torn one was.
        let lsn = j.append(b"three").unwrap();
        j.sync().unwrap();
        assert_eq!(lsn, 3 * HEADER + 11);
        assert_eq!(records(&j, 0).len(), 3);
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(d.path(), 1 << 20).unwrap();
        for i in 0..10u8 {
            j.append(&[i; 32]).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        let seg = d.path().join(segment_name(0));
        let mut bytes = std::fs::read(&seg).unwrap();
        let pos = 5 * (HEADER as usize + 32) + HEADER as usize + 3;
        bytes[pos] ^= 0x40;
        std::fs::write(&seg, bytes).unwrap();
        let (j, rec) = Journal::open(d.path(), 1 << 20).unwrap();
        // The last segment ends at the bad record: the rest is cut as torn.
        assert_eq!(records(&j, 0).len(), 5);
        assert!(rec.torn_bytes > 0);
    }

    /// A journal of 4 KiB segments holding 300 synced records of 64 bytes,
    /// and their positions.
    fn three_hundred_records(dir: &Path) -> (Journal, Vec<u64>) {
        let (mut j, _) = Journal::open(dir, 4096).unwrap();
        let lsns = (0..300u32)
            .map(|i| j.append(&i.to_le_bytes().repeat(16)).unwrap())
            .collect();
        j.sync().unwrap();
        (j, lsns)
    }

    #[test]
    fn segments_trimmed_but_not_deleted_are_skipped_then_deleted_after_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, lsns) = three_hundred_records(d.path());
        let old = j.trim_detached(lsns[200]).unwrap();
        assert!(!old.is_empty() && old.iter().all(|p| p.exists()));
        // A crash before the files are deleted: reopened, the journal
        // replays only what is above the trim point.
        drop(j);
        let (mut j, _) = Journal::open(d.path(), 4096).unwrap();
        assert_eq!(records(&j, j.trimmed()).len(), 99);
        // The next trim deletes them.
        let again = j.trim(lsns[250]).unwrap();
        assert!(again > old.len(), "{again} segments deleted");
        assert!(old.iter().all(|p| !p.exists()));
        assert_eq!(records(&j, j.trimmed()).len(), 49);
    }

    #[test]
    fn trim_deletes_whole_segments_and_survives_restart() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, lsns) = three_hundred_records(d.path());
        let segs = j.segments.len();
        let deleted = j.trim(lsns[200]).unwrap();
        assert!(deleted > 0 && j.segments.len() == segs - deleted);
        // Records above the trim point are still all there.
        assert_eq!(records(&j, j.trimmed()).len(), 99);
        drop(j);
        let (j, _) = Journal::open(d.path(), 4096).unwrap();
        assert_eq!(j.trimmed(), lsns[200]);
        assert_eq!(records(&j, j.trimmed()).len(), 99);
        // Trimming everything keeps the active segment and an empty journal.
        let (mut j, _) = Journal::open(d.path(), 4096).unwrap();
        let end = j.next_lsn();
        j.trim(end).unwrap();
        assert_eq!(j.pending_bytes(), 0);
        assert!(records(&j, j.trimmed()).is_empty());
        drop(j);
        let (j, _) = Journal::open(d.path(), 4096).unwrap();
        assert_eq!(j.next_lsn(), end);
    }

    #[test]
    fn discarding_a_failed_batch_keeps_positions_consistent() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(d.path(), 1 << 20).unwrap();
        let a = j.append(b"kept").unwrap();
        j.sync().unwrap();
        j.append(b"lost").unwrap();
        j.discard_unsynced().unwrap();
        let b = j.append(b"next").unwrap();
        j.sync().unwrap();
        assert_eq!(b, a + HEADER + 4);
        assert_eq!(a, HEADER + 4);
        let r = records(&j, 0);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1, b"next");
    }
}
