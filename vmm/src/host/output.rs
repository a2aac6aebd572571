//! Writing an output the user named (report, trace), checked before any
//! guest runs. Regular files are written to a temporary file beside them
//! and renamed into place, so a reader never sees a half-written or empty
//! report; other outputs (pipes, terminals, `/dev/stdout`) are written in
//! place through the descriptor opened at the check, which never blocks
//! (a FIFO without a reader is refused) and probes that writes work.

use crate::host::files::{io, FileError};
use crate::host::output_path::{self, Place};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The descriptor a name stands for, when it is one of this process's
/// (`/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`): such an
/// output is written through a duplicate of that descriptor, sharing its
/// offset and flags (so `>> log` appends), never by reopening the name.
fn descriptor_of(path: &Path) -> Option<i32> {
    let p = path.to_str()?;
    match p {
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"]
        .iter()
        .find_map(|prefix| p.strip_prefix(prefix))
        .and_then(|n| n.parse().ok())
}

/// True when `a` and `b` are the same open file (device and inode).
fn same_file(a: &File, b: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat on descriptors we hold (b may be closed: then it
    // fails); the stat buffers are valid out-parameters.
    unsafe {
        let (mut x, mut y): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
        libc::fstat(a.as_raw_fd(), &mut x) == 0
            && libc::fstat(b, &mut y) == 0
            && x.st_dev == y.st_dev
            && x.st_ino == y.st_ino
    }
}

/// An output checked before the guest runs.
pub struct Output {
    role: &'static str,
    path: PathBuf,
    /// None once committed.
    sink: Option<Sink>,
}

enum Sink {
    /// A regular file: written to `tmp`, renamed onto `target`.
    Atomic {
        target: PathBuf,
        tmp: PathBuf,
        file: File,
    },
    /// Anything else: written through the descriptor opened at the check.
    InPlace(File),
}

impl Output {
    /// Checks that `path` can take this output, without blocking and
    /// without touching an existing regular file. `probe` is written at
    /// once to a non-regular output (a pipe, a device) so that one that
    /// refuses writes fails now; it must be a harmless prefix of the
    /// output (whitespace before a JSON document, a trace header).
    pub fn prepare(role: &'static str, path: &Path, probe: &[u8]) -> Result<Self, FileError> {
        let unwritable = |source| FileError::Unwritable {
            role,
            path: path.to_owned(),
            source,
        };
        if let Some(fd) = descriptor_of(path) {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor number; a closed one
            // fails with EBADF.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                return Err(unwritable(std::io::Error::last_os_error()));
            }
            use std::os::fd::FromRawFd;
            // SAFETY: `dup` is a fresh descriptor this File now owns.
            let file = unsafe { File::from_raw_fd(dup) };
            let mut out = Output {
                role,
                path: path.to_owned(),
                sink: Some(Sink::InPlace(file)),
            };
            if !probe.is_empty() {
                out.write_all(probe).map_err(unwritable)?;
            }
            return Ok(out);
        }
        let meta = std::fs::metadata(path).ok();
        if output_path::names_a_directory(path) || meta.as_ref().is_none_or(|m| m.is_file()) {
            // Nothing is created where it could not be renamed into
            // place, or removed again.
            let Place { target, dir, name } = output_path::check(role, path)?;
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            // A temporary file of ours left by a killed run with this pid.
            let _ = std::fs::remove_file(&tmp);
            // The new file keeps the old one's permissions.
            use std::os::unix::fs::PermissionsExt;
            let mode = meta
                .as_ref()
                .map_or(0o644, |m| m.permissions().mode() & 0o7777);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| {
                    // Say which file could not be created: not the
                    // output itself (it may exist, as /proc/version does).
                    unwritable(std::io::Error::new(
                        e.kind(),
                        format!("cannot create {} to write it into: {e}", tmp.display()),
                    ))
                })?;
            return Ok(Output {
                role,
                path: path.to_owned(),
                sink: Some(Sink::Atomic { target, tmp, file }),
            });
        }
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(FileError::NotRegular {
                role,
                path: path.to_owned(),
                what: "a directory",
            });
        }
        // O_NONBLOCK: a FIFO with no reader fails with ENXIO instead of
        // blocking this process (and every signal) in open().
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::ENXIO) {
                    FileError::NoReader {
                        role,
                        path: path.to_owned(),
                    }
                } else {
                    FileError::Unwritable {
                        role,
                        path: path.to_owned(),
                        source,
                    }
                }
            })?;
        set_blocking(&file).map_err(io(role, path))?;
        let mut out = Output {
            role,
            path: path.to_owned(),
            sink: Some(Sink::InPlace(file)),
        };
        if !probe.is_empty() {
            out.write_all(probe)
                .map_err(|source| FileError::Unwritable {
                    role,
                    path: path.to_owned(),
                    source,
                })?;
        }
        Ok(out)
    }

    /// True for a regular file written atomically (a probe was not
    /// written to it).
    pub fn is_atomic(&self) -> bool {
        matches!(self.sink, Some(Sink::Atomic { .. }))
    }

    /// True when this output is the process's stdout (the same open
    /// file), where the guest console is echoed too.
    pub fn is_stdout(&self) -> bool {
        match &self.sink {
            Some(Sink::InPlace(f)) => same_file(f, 1),
            _ => false,
        }
    }

    /// Cuts a regular-file output to `len` bytes (after a failed write,
    /// so the file holds only whole records).
    pub fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        match &mut self.sink {
            Some(Sink::Atomic { file, .. }) => file.set_len(len),
            _ => Ok(()),
        }
    }

    /// Writes all of `buf`, retrying interrupted writes unless a stop
    /// signal arrived (a reader that stalls must not hold the VMM
    /// forever): then it fails with `Interrupted`.
    pub fn write_all_or_stop(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if let Some(sig) = crate::host::signals::pending() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            format!("stopped by {}", crate::host::signals::name(sig)),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The path the user named.
    #[allow(dead_code)] // part of the output's interface, unused for now
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this output is (for messages).
    #[allow(dead_code)] // part of the output's interface, unused for now
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Commits the output: flushes it and, for a regular file, renames the
    /// temporary file onto the target.
    pub fn commit(mut self) -> Result<(), FileError> {
        let (role, path) = (self.role, self.path.clone());
        let unwritable = |source| FileError::Unwritable {
            role,
            path: path.clone(),
            source,
        };
        self.flush().map_err(unwritable)?;
        match self.sink.take() {
            Some(Sink::Atomic { target, tmp, file }) => {
                drop(file);
                std::fs::rename(&tmp, &target).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    unwritable(e)
                })
            }
            Some(Sink::InPlace(_)) | None => Ok(()),
        }
    }

    /// Removes what a regular-file output has in place (a previous run's
    /// file), so that a run killed before it commits leaves no stale file.
    pub fn remove_previous(&self) {
        if let Some(Sink::Atomic { target, .. }) = &self.sink {
            let _ = std::fs::remove_file(target);
        }
    }
}

/// How long a pipe's reader may take no data before the output fails.
const STALL_MS: i32 = 10_000;
/// Writes to pipes go in pieces this large: one that poll says fits never
/// blocks (Linux reports a pipe writable when a whole page is free).
const PIPE_PIECE: usize = 4096;

/// Waits until `file` takes data: retries signals unless one is a stop
/// signal, and gives up after `STALL_MS` without progress, so a stalled
/// reader can never hold the VMM.
fn wait_writable(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor this File owns.
        match unsafe { libc::poll(&mut pfd, 1, STALL_MS) } {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the reader took no data for {} s", STALL_MS / 1000),
                ))
            }
            n if n > 0 => return Ok(()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                if let Some(sig) = crate::host::signals::pending() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        format!("stopped by {}", crate::host::signals::name(sig)),
                    ));
                }
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Some(Sink::Atomic { file, .. }) => file.write(buf),
            Some(Sink::InPlace(file)) => {
                wait_writable(file)?;
                file.write(&buf[..buf.len().min(PIPE_PIECE)])
            }
            None => Err(std::io::Error::other("output already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Some(Sink::Atomic { file, .. } | Sink::InPlace(file)) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Output {
    /// An output never committed leaves nothing behind.
    fn drop(&mut self) {
        if let Some(Sink::Atomic { tmp, .. }) = &self.sink {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn set_blocking(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor this File owns; no memory is
    // passed to the kernel.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("host-output-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_output_without_reader_is_refused() {
        let f = dir().join("out.fifo");
        mkfifo(&f);
        let e = Output::prepare("report", &f, b"\n").err().unwrap();
        assert!(matches!(e, FileError::NoReader { .. }), "{e}");
    }

    #[test]
    fn dev_full_is_refused_at_the_check() {
        let e = Output::prepare("report", Path::new("/dev/full"), b"\n")
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("cannot write report /dev/full"),
            "{e}"
        );
    }

    #[test]
    fn regular_outputs_appear_only_when_committed() {
        let p = dir().join("report.json");
        std::fs::write(&p, "old").unwrap();
        let mut o = Output::prepare("report", &p, b"\n").unwrap();
        o.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let o = Output::prepare("report", &p, b"\n").unwrap();
        drop(o);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(dir())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp"))
                .count(),
            0
        );
    }
}
