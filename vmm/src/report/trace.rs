//! The accept trace (`vmm run --trace PATH`): one fixed-size record per
//! accept and per pending access, with host time, GPA, level, status and
//! who asked (firmware, kernel generation N, or kexec from generation N).
//! Bounded: past the cap, records are counted but not written, and the
//! report says so.
//!
//! File layout (little-endian): an 16-byte header (`b"TDXTRACE"`, version
//! u32, record size u32), then 32-byte records:
//! `t_ns u64 | gpa u64 | status u64 | kind u8 | level u8 | who u8 | generation u8 | vcpu u16 | reserved u16`.
//! Version 2 added the vCPU index (version 1 had 4 reserved bytes there).

use crate::host::files::FileError;
use crate::host::output::Output;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"TDXTRACE";
pub const VERSION: u32 = 2;
/// Bytes of one record.
pub const RECORD_BYTES: usize = 32;
/// `RECORD_BYTES` as the header stores it.
#[allow(clippy::cast_possible_truncation)] // a small constant
const RECORD_BYTES_U32: u32 = RECORD_BYTES as u32;
/// Bytes before the first record: magic, version, record size.
pub const HEADER_BYTES: usize = 16;
/// Default cap on the file size.
pub const DEFAULT_CAP_BYTES: u64 = 64 << 20;

/// Why the trace could not be written or read.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The trace file could not be created.
    #[error(transparent)]
    Create(#[from] FileError),
    /// Writing to the trace file failed.
    #[error("cannot write trace file {path}: {source}")]
    Write {
        /// The trace file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a trace (the message says what is wrong).
    #[error("trace file is not a version-{VERSION} trace ({0})")]
    Format(&'static str),
    /// Reading the trace failed.
    #[error("cannot read trace: {0}")]
    Read(#[from] std::io::Error),
}

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum Kind {
    /// An accept (`TDG.MEM.PAGE.ACCEPT`), whatever its status.
    Accept = 1,
    /// A guest access to pending memory (the run stopped there).
    PendingAccess = 2,
}

/// Who was running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum Who {
    /// The firmware (or the boot before it).
    Firmware = 0,
    /// A kernel.
    Kernel = 1,
    /// A kernel loading or relocating the next one (kexec).
    Kexec = 2,
}

/// One record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Nanoseconds since the VMM started.
    pub t_ns: u64,
    /// The guest physical address.
    pub gpa: u64,
    /// The TDCALL status answered (0 = success).
    pub status: u64,
    /// What happened.
    pub kind: Kind,
    /// Page level of an accept (0 = 4K, 1 = 2M, 2 = 1G), 0 for accesses.
    pub level: u8,
    /// Who did it.
    pub who: Who,
    /// The kernel generation (0 = first) when a kernel did it.
    pub generation: u8,
    /// The vCPU that asked (or touched).
    pub vcpu: u16,
}

impl Record {
    fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..8].copy_from_slice(&self.t_ns.to_le_bytes());
        b[8..16].copy_from_slice(&self.gpa.to_le_bytes());
        b[16..24].copy_from_slice(&self.status.to_le_bytes());
        b[24] = self.kind as u8;
        b[25] = self.level;
        b[26] = self.who as u8;
        b[27] = self.generation;
        b[28..30].copy_from_slice(&self.vcpu.to_le_bytes());
        b
    }

    fn decode(b: &[u8; RECORD_BYTES]) -> Result<Self, TraceError> {
        let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        Ok(Record {
            t_ns: u(0),
            gpa: u(8),
            status: u(16),
            kind: match b[24] {
                1 => Kind::Accept,
                2 => Kind::PendingAccess,
                _ => return Err(TraceError::Format("unknown record kind")),
            },
            level: b[25],
            who: match b[26] {
                0 => Who::Firmware,
                1 => Who::Kernel,
                2 => Who::Kexec,
                _ => return Err(TraceError::Format("unknown record source")),
            },
            generation: b[27],
            vcpu: u16::from_le_bytes([b[28], b[29]]),
        })
    }
}

/// Trace totals for the report.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TraceSummary {
    /// The trace file.
    pub path: String,
    /// Records actually in the file.
    pub records: u64,
    /// Records not written: past the cap, or after a write failed.
    pub dropped: u64,
    /// The largest file asked for.
    pub cap_bytes: u64,
    /// Why writing stopped, if it failed (the run then fails too).
    pub error: Option<String>,
}

/// Records buffered before a write to the file.
const BUFFER_RECORDS: usize = 2048;

/// An open trace. Records are buffered here and written in batches; the
/// count of records written is the count that reached the file, so a
/// failed write is reported exactly.
pub struct Trace {
    out: Output,
    /// The trace file.
    path: PathBuf,
    buf: Vec<u8>,
    /// Records that reached the file.
    written: u64,
    /// Records accepted into the buffer or written.
    queued: u64,
    dropped: u64,
    cap_records: u64,
    error: Option<String>,
}

fn header() -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&RECORD_BYTES_U32.to_le_bytes());
    header
}

impl Trace {
    /// Checks the path (see `host_files`) and writes the header at once,
    /// so an output that refuses writes is refused before the guest runs.
    pub fn create(path: &Path, cap_bytes: u64) -> Result<Self, TraceError> {
        let mut out = Output::prepare("trace", path, &header())?;
        out.remove_previous();
        let write_err = |source| TraceError::Write {
            path: path.to_owned(),
            source,
        };
        if out.is_atomic() {
            out.write_all(&header()).map_err(write_err)?;
        }
        Ok(Trace {
            out,
            path: path.to_owned(),
            buf: Vec::with_capacity(BUFFER_RECORDS * RECORD_BYTES),
            written: 0,
            queued: 0,
            dropped: 0,
            cap_records: cap_bytes.saturating_sub(HEADER_BYTES as u64) / RECORD_BYTES as u64,
            error: None,
        })
    }

    /// Appends a record (or counts it as dropped past the cap or after a
    /// write failure).
    pub fn record(&mut self, r: Record) {
        if self.queued >= self.cap_records || self.error.is_some() {
            if self.dropped == 0 && self.error.is_none() {
                log::warn!(
                    "trace {}: cap of {} records reached; further records are counted, not written",
                    self.path.display(),
                    self.cap_records
                );
            }
            self.dropped += 1;
            return;
        }
        self.buf.extend_from_slice(&r.encode());
        self.queued += 1;
        if self.buf.len() >= BUFFER_RECORDS * RECORD_BYTES {
            self.drain();
        }
    }

    /// Writes the buffer; on failure, records what reached the file and
    /// stops tracing.
    fn drain(&mut self) {
        let mut done = 0;
        while done < self.buf.len() {
            match self.out.write(&self.buf[done..]) {
                Ok(0) => {
                    self.fail(done, std::io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    // A stalled reader must not hold a stopping VMM.
                    if let Some(sig) = crate::host::signals::pending() {
                        let why = format!("stopped by {}", crate::host::signals::name(sig));
                        self.fail(done, std::io::Error::other(why));
                        return;
                    }
                }
                Err(e) => {
                    self.fail(done, e);
                    return;
                }
            }
        }
        self.written += (self.buf.len() / RECORD_BYTES) as u64;
        self.buf.clear();
    }

    fn fail(&mut self, bytes_done: usize, e: std::io::Error) {
        let whole = (bytes_done / RECORD_BYTES) as u64;
        let lost = (self.buf.len() / RECORD_BYTES) as u64 - whole;
        self.written += whole;
        // A regular file keeps whole records only, so it stays readable.
        let _ = self
            .out
            .truncate(HEADER_BYTES as u64 + self.written * RECORD_BYTES as u64);
        self.dropped += lost;
        self.buf.clear();
        let msg = format!(
            "cannot write trace {}: {e} (after {} records)",
            self.path.display(),
            self.written
        );
        log::debug!("{msg}; tracing stops");
        self.error = Some(msg);
    }

    /// Writes what is buffered, commits the file and summarises.
    pub fn finish(mut self) -> TraceSummary {
        self.drain();
        let cap_bytes = HEADER_BYTES as u64 + self.cap_records * RECORD_BYTES as u64;
        let Trace {
            out,
            path,
            written,
            dropped,
            mut error,
            ..
        } = self;
        if let Err(e) = out.commit() {
            if error.is_none() {
                error = Some(e.to_string());
            }
        }
        TraceSummary {
            path: path.display().to_string(),
            records: written,
            dropped,
            cap_bytes,
            error,
        }
    }
}

/// Reads a whole trace.
pub fn read(mut input: impl Read) -> Result<Vec<Record>, TraceError> {
    let mut header = [0u8; HEADER_BYTES];
    input.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(TraceError::Format("bad magic"));
    }
    if u32::from_le_bytes(header[8..12].try_into().unwrap_or_default()) != VERSION
        || u32::from_le_bytes(header[12..16].try_into().unwrap_or_default()) != RECORD_BYTES_U32
    {
        return Err(TraceError::Format("version or record size"));
    }
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    if bytes.len() % RECORD_BYTES != 0 {
        return Err(TraceError::Format("truncated record"));
    }
    bytes
        .chunks_exact(RECORD_BYTES)
        .map(|c| Record::decode(c.try_into().map_err(|_| TraceError::Format("record"))?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(i: u64) -> Record {
        Record {
            t_ns: i * 1000,
            gpa: i << 21,
            status: if i.is_multiple_of(3) {
                abi::tdcall::status::PAGE_ALREADY_ACCEPTED
            } else {
                0
            },
            kind: if i.is_multiple_of(5) {
                Kind::PendingAccess
            } else {
                Kind::Accept
            },
            level: (i % 2) as u8,
            who: [Who::Firmware, Who::Kernel, Who::Kexec][(i % 3) as usize],
            generation: (i % 4) as u8,
            vcpu: (i % 7) as u16,
        }
    }

    #[test]
    fn round_trips_and_caps() {
        let dir = std::env::temp_dir().join(format!("trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.bin");
        let mut t = Trace::create(&path, 16 + 10 * 32).unwrap();
        for i in 0..25 {
            t.record(rec(i));
        }
        let s = t.finish();
        assert_eq!((s.records, s.dropped, s.error), (10, 15, None));
        let back = read(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(back, (0..10).map(rec).collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 + 10 * 32);
    }

    #[test]
    fn a_full_device_is_refused_at_create() {
        let e = Trace::create(Path::new("/dev/full"), 1 << 20)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("cannot write trace /dev/full"),
            "{e}"
        );
    }

    #[test]
    fn a_write_failure_mid_run_is_counted_exactly() {
        // /dev/full accepts nothing; a writable-at-start sink that then
        // fails is modelled by a file in a tiny filesystem elsewhere: here
        // the failure path is driven directly.
        let dir = std::env::temp_dir().join(format!("trace-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = Trace::create(&dir.join("t.bin"), 1 << 30).unwrap();
        for i in 0..(BUFFER_RECORDS as u64 + 10) {
            t.record(rec(i));
        }
        t.buf.extend_from_slice(&[0u8; RECORD_BYTES * 3]);
        t.fail(RECORD_BYTES + 5, std::io::Error::other("disk full"));
        t.record(rec(1));
        let s = t.finish();
        assert_eq!(s.records, BUFFER_RECORDS as u64 + 1);
        assert_eq!(s.dropped, 13);
        assert!(s.error.unwrap().contains("disk full"));
    }

    #[test]
    fn rejects_foreign_files() {
        assert!(matches!(
            read(&b"NOTATRACE-------"[..]),
            Err(TraceError::Format(_))
        ));
        let header = |version: u32| {
            let mut h = MAGIC.to_vec();
            h.extend_from_slice(&version.to_le_bytes());
            h.extend_from_slice(&RECORD_BYTES_U32.to_le_bytes());
            h
        };
        let mut h = header(VERSION);
        h.extend_from_slice(&[0u8; RECORD_BYTES - 1]);
        assert!(matches!(
            read(&h[..]),
            Err(TraceError::Format("truncated record"))
        ));
        // A trace of the one-vCPU format (version 1) is refused, not misread.
        assert!(matches!(
            read(&header(1)[..]),
            Err(TraceError::Format("version or record size"))
        ));
    }

    proptest! {
        #[test]
        fn any_record_round_trips(t in any::<u64>(), gpa in any::<u64>(), st in any::<u64>(), k in 1u8..3, l in 0u8..3, w in 0u8..3, g in any::<u8>(), v in any::<u16>()) {
            let mut b = [0u8; RECORD_BYTES];
            b[0..8].copy_from_slice(&t.to_le_bytes());
            b[8..16].copy_from_slice(&gpa.to_le_bytes());
            b[16..24].copy_from_slice(&st.to_le_bytes());
            b[24] = k; b[25] = l; b[26] = w; b[27] = g;
            b[28..30].copy_from_slice(&v.to_le_bytes());
            let r = Record::decode(&b).unwrap();
            prop_assert_eq!(r.encode(), b);
        }
    }
}
