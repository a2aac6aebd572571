//! The files a user names on the command line. Inputs (firmware, kernel)
//! are opened without blocking and must be regular files. Outputs (report,
//! trace) are checked before any guest runs: a FIFO with no reader, a
//! device that refuses writes (`/dev/full`) or a directory that cannot be
//! written is refused then, and no output may be the same file (device and
//! inode) as an input or as another output. Writing an output is
//! `output.rs`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a user-named file cannot be used.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{role} {path}: {source}")]
    Io {
        role: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{role} {path}: is {what}, not a regular file")]
    NotRegular {
        role: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{role} {path}: is a FIFO with no reader (start the reader first)")]
    NoReader { role: &'static str, path: PathBuf },
    #[error("cannot write {role} {path}: {source}")]
    Unwritable {
        role: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{role} {path}: ends in '/' (or '/.'), so it names a directory; name a file")]
    DirectoryPath { role: &'static str, path: PathBuf },
    #[error(
        "{role} {path}: cannot be written in place and renamed there: {what} is {why}; \
         name a path elsewhere"
    )]
    NoRename {
        role: &'static str,
        path: PathBuf,
        what: String,
        why: &'static str,
    },
    #[error(
        "{role} {path} is the same file as the {other_role} {other}; refusing to overwrite it"
    )]
    SameFile {
        role: &'static str,
        path: PathBuf,
        other_role: &'static str,
        other: PathBuf,
    },
}

pub(crate) fn io<'a>(
    role: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        role,
        path: path.to_owned(),
        source,
    }
}

/// What kind of file a path names, in words.
fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens an input for reading without ever blocking (a FIFO would block
/// `open` until a writer appears) and insists on a regular file. Returns
/// the file and its size.
pub fn open_input(role: &'static str, path: &Path) -> Result<(File, u64), FileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io(role, path))?;
    let meta = file.metadata().map_err(io(role, path))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            role,
            path: path.to_owned(),
            what: kind_name(meta.file_type()),
        });
    }
    Ok((file, meta.len()))
}

/// The identity of a file: device and inode where it exists, else the
/// directory's identity and the name it would get.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    Inode(u64, u64),
    New(u64, u64, std::ffi::OsString),
}

fn identity(path: &Path) -> Option<Identity> {
    if let Ok(m) = std::fs::metadata(path) {
        // /dev/null may be named by several outputs.
        if m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3) {
            return None;
        }
        return Some(Identity::Inode(m.dev(), m.ino()));
    }
    let name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let m = std::fs::metadata(dir).ok()?;
    Some(Identity::New(m.dev(), m.ino(), name))
}

/// A named file taking part in the same-file check.
pub struct Named<'a> {
    pub role: &'static str,
    pub path: &'a Path,
}

/// Refuses any output that is the same file as an input or as an earlier
/// output (compared by device and inode, or by directory and name for
/// files that do not exist yet).
pub fn check_distinct(inputs: &[Named<'_>], outputs: &[Named<'_>]) -> Result<(), FileError> {
    let ids: Vec<_> = inputs
        .iter()
        .chain(outputs)
        .map(|n| identity(n.path))
        .collect();
    for (i, out) in outputs.iter().enumerate() {
        let me = inputs.len() + i;
        let Some(id) = &ids[me] else { continue };
        for (j, other) in inputs.iter().chain(outputs).enumerate().take(me) {
            if ids[j].as_ref() == Some(id) {
                return Err(FileError::SameFile {
                    role: out.role,
                    path: out.path.to_owned(),
                    other_role: other.role,
                    other: other.path.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// How every report of this VMM starts (`serde_json`'s pretty form of
/// `Report`, whose first fields are `version` and `outcome`).
const REPORT_START: &[u8] = b"{\n  \"version\": ";

/// True when the file at `path` reads as a report of this VMM: it starts
/// as one (`REPORT_START`, then `outcome` within its first line or two)
/// and ends as one (`}` and a newline). Reads at most a few hundred bytes,
/// whatever the file's size: a refused run must not allocate by a file.
fn reads_as_report(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 64];
    let mut tail = [0u8; 2];
    let n = f.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    let ends = f.seek(SeekFrom::End(-2)).is_ok() && f.read_exact(&mut tail).is_ok();
    head.starts_with(REPORT_START)
        && head.windows(11).any(|w| w == b"\"outcome\": ")
        && ends
        && tail == *b"}\n"
}

/// Removes a previous run's report at `path` after a refused run, so a
/// script never reads a stale success: only a regular file that reads as
/// a report of this VMM (`reads_as_report`), and never one of `inputs`
/// (compared by device and inode).
pub fn remove_stale_report(path: &Path, inputs: &[&Path]) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let me = identity(path);
    if inputs.iter().any(|p| identity(p) == me) {
        return false;
    }
    reads_as_report(path) && std::fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("host-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_input_is_refused_without_blocking() {
        let f = dir().join("in.fifo");
        mkfifo(&f);
        let e = open_input("firmware", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("firmware {}: is a FIFO, not a regular file", f.display())
        );
    }

    #[test]
    fn only_stale_reports_are_removed() {
        let d = dir();
        let old = d.join("old.json");
        // A report as the VMM writes it.
        let inputs = crate::vm::TdConfig::new("fw").inputs();
        let report = crate::report::Report::refused("x".into(), inputs);
        let mut text = serde_json::to_vec_pretty(&report).unwrap();
        text.push(b'\n');
        std::fs::write(&old, &text).unwrap();
        let other = d.join("notes.json");
        std::fs::write(&other, r#"{"mine": true}"#).unwrap();
        // Our keys, but not our report: a user's file stays.
        let compact = d.join("compact.json");
        std::fs::write(&compact, r#"{"version": 1, "outcome": "ok"}"#).unwrap();
        let cut = d.join("cut.json");
        std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
        assert!(!remove_stale_report(&old, &[&old]));
        for keep in [&other, &compact, &cut] {
            assert!(!remove_stale_report(keep, &[]), "{}", keep.display());
        }
        assert!(remove_stale_report(&old, &[]));
        assert!(!old.exists() && other.exists() && compact.exists() && cut.exists());
    }

    #[test]
    fn same_files_are_found_by_inode_and_by_name() {
        let d = dir();
        let fw = d.join("fw");
        std::fs::write(&fw, "x").unwrap();
        let link = d.join("fw-link");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&fw, &link).unwrap();
        let fresh = d.join("fresh.json");
        let n = |role, path| Named { role, path };
        assert!(check_distinct(&[n("firmware", &fw)], &[n("report", &link)]).is_err());
        assert!(check_distinct(
            &[n("firmware", &fw)],
            &[n("report", &fresh), n("trace", &fresh)]
        )
        .is_err());
        assert!(check_distinct(&[n("firmware", &fw)], &[n("report", &fresh)]).is_ok());
        let null = Path::new("/dev/null");
        assert!(check_distinct(&[], &[n("report", null), n("trace", null)]).is_ok());
    }
}
