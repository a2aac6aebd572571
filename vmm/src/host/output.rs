//! Writing an output the user named (report, trace), checked before any
//! guest runs. Regular files are written to a temporary file beside them
//! and renamed into place, so a reader never sees a half-written or empty
//! report; other outputs (pipes, terminals, `/dev/stdout`) are written in
//! place through the descriptor opened at the check, which never blocks
//! (a FIFO without a reader is refused) and probes that writes work.

use crate::host::files::{io, FileError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// True for names that are really one of this process's descriptors
/// (`/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`): renaming onto them
/// would replace a symlink, so they are written in place.
fn names_a_descriptor(path: &Path) -> bool {
    let p = path.to_string_lossy();
    [
        "/dev/stdout",
        "/dev/stderr",
        "/dev/fd/",
        "/proc/self/fd/",
        "/proc/thread-self/fd/",
    ]
    .iter()
    .any(|prefix| p.starts_with(prefix))
        || std::fs::canonicalize(path).is_ok_and(|c| c.starts_with("/proc"))
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
        let meta = std::fs::metadata(path).ok();
        let regular = meta.as_ref().is_none_or(|m| m.is_file());
        if regular && !names_a_descriptor(path) {
            let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            let name = target
                .file_name()
                .ok_or_else(|| FileError::NotRegular {
                    role,
                    path: path.to_owned(),
                    what: "a directory",
                })?
                .to_string_lossy()
                .into_owned();
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(|source| FileError::Unwritable {
                    role,
                    path: path.to_owned(),
                    source,
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

    /// The path the user named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this output is (for messages).
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

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Some(Sink::Atomic { file, .. } | Sink::InPlace(file)) => file.write(buf),
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
