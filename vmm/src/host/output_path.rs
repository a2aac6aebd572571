//! Where an output on a regular file goes, checked from its path alone
//! before anything is created: a path that names a directory (`out/r.json/`)
//! is refused; the target is resolved through symbolic links (the file's,
//! or its directory's when the file does not exist yet); and a target the
//! final rename could not replace is refused: no write permission, a
//! sticky directory, or inode flags (`chattr +a`, `chattr +i` on the
//! directory or the file) that forbid the rename whatever the permissions.

use crate::host::files::FileError;
use std::path::{Path, PathBuf};

/// True when `path` as typed names a directory whatever is there: it
/// ends in `/`, `/.` or `/..`, or is `.` or `..`.
pub fn names_a_directory(path: &Path) -> bool {
    let b = path.as_os_str().as_encoded_bytes();
    b.ends_with(b"/") || b.ends_with(b"/.") || b.ends_with(b"/..") || b == b"." || b == b".."
}

/// A regular-file output's place: the file (through its links) and the
/// directory the temporary file and the rename happen in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub target: PathBuf,
    pub dir: PathBuf,
    pub name: String,
}

/// Resolves `path` (not a directory) to the file it names: the existing
/// file's canonical path, or the canonical directory joined with the name.
pub fn resolve(path: &Path) -> Option<Place> {
    let target = std::fs::canonicalize(path).ok().or_else(|| {
        let name = path.file_name()?;
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(parent).ok()?.join(name))
    });
    // An unresolvable parent (it does not exist) keeps the path as typed:
    // creating the temporary file there then names the problem.
    let target = target.unwrap_or_else(|| path.to_owned());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name()?.to_string_lossy().into_owned();
    Some(Place { target, dir, name })
}

/// The inode attributes of `path` (through links) that forbid a rename
/// into it or over it, in words (statx needs no permission on the file).
fn rename_forbidding_attribute(path: &Path) -> Option<&'static str> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a zeroed statx is valid storage for statx to fill.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out-parameter.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, 0, &mut st) };
    if rc != 0 {
        return None;
    }
    let has = |attr: u64| st.stx_attributes_mask & attr != 0 && st.stx_attributes & attr != 0;
    if has(libc::STATX_ATTR_IMMUTABLE as u64) {
        Some("immutable (chattr +i)")
    } else if has(libc::STATX_ATTR_APPEND as u64) {
        Some("append-only (chattr +a)")
    } else {
        None
    }
}

/// Why the rename of a temporary file in `place.dir` onto `place.target`
/// would fail whatever the permissions, if it would.
pub fn rename_blocked(place: &Place) -> Option<(String, &'static str)> {
    if let Some(why) = rename_forbidding_attribute(&place.dir) {
        return Some((format!("its directory {}", place.dir.display()), why));
    }
    if std::fs::symlink_metadata(&place.target).is_ok_and(|m| m.is_file()) {
        if let Some(why) = rename_forbidding_attribute(&place.target) {
            return Some((format!("the file {}", place.target.display()), why));
        }
    }
    None
}

/// Refuses a regular-file output the rename could not replace, or that
/// the user cannot write: caught before the guest runs.
pub fn check_replaceable(place: &Place) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
    if let Ok(meta) = std::fs::metadata(&place.target) {
        let t = c(&place.target).ok_or_else(denied)?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::access(t.as_ptr(), libc::W_OK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // In a sticky directory only the owner of a file (or of the
        // directory) may replace it.
        let d = std::fs::metadata(&place.dir)?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if d.mode() & libc::S_ISVTX != 0 && me != 0 && meta.uid() != me && d.uid() != me {
            return Err(denied());
        }
    }
    Ok(())
}

/// Every check of a path that is about to take a regular-file output (or
/// is not there yet), from the path alone: nothing is created. Returns
/// where the output goes.
pub fn check(role: &'static str, path: &Path) -> Result<Place, FileError> {
    let meta = std::fs::metadata(path).ok();
    if names_a_directory(path) || meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(if meta.as_ref().is_some_and(|m| m.is_dir()) {
            FileError::NotRegular {
                role,
                path: path.to_owned(),
                what: "a directory",
            }
        } else {
            FileError::DirectoryPath {
                role,
                path: path.to_owned(),
            }
        });
    }
    let place = resolve(path).ok_or_else(|| FileError::DirectoryPath {
        role,
        path: path.to_owned(),
    })?;
    check_replaceable(&place).map_err(|source| FileError::Unwritable {
        role,
        path: path.to_owned(),
        source,
    })?;
    if let Some((what, why)) = rename_blocked(&place) {
        return Err(FileError::NoRename {
            role,
            path: path.to_owned(),
            what,
            why,
        });
    }
    Ok(place)
}

/// `check` for a path that will take a regular-file output (a new file,
/// an existing one, or a path naming a directory); other outputs (pipes,
/// devices, descriptors) are checked when they are opened.
pub fn precheck(role: &'static str, path: &Path) -> Result<(), FileError> {
    let regular = std::fs::metadata(path).map_or(true, |m| m.is_file() || m.is_dir());
    if names_a_directory(path) || regular {
        check(role, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_name_directories() {
        for p in ["out/", "out/r.json/", "r.json/.", "a/..", ".", "..", "/"] {
            assert!(names_a_directory(Path::new(p)), "{p}");
        }
        for p in ["r.json", "out/r.json", "out/.r", "..r", "a/.b/c"] {
            assert!(!names_a_directory(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn a_new_file_in_a_linked_directory_resolves_through_the_link() {
        let base = std::env::temp_dir().join(format!("output-path-{}", std::process::id()));
        let real = base.join("real");
        std::fs::create_dir_all(&real).unwrap();
        let link = base.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let place = resolve(&link.join("r.json")).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(place.dir, real);
        assert_eq!(place.target, real.join("r.json"));
        assert_eq!(place.name, "r.json");
        // Nothing forbids a rename in a plain directory.
        assert_eq!(rename_blocked(&place), None);
        assert!(check("report", &link.join("r.json")).is_ok());
        assert!(matches!(
            check("report", &link.join("r.json/")),
            Err(FileError::DirectoryPath { .. })
        ));
        assert!(matches!(
            check("report", &link),
            Err(FileError::NotRegular { .. })
        ));
        let _ = std::fs::remove_dir_all(&base);
    }
}
