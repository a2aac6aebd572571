//! Building the guests: each is its own cargo workspace targeting
//! `x86_64-unknown-none`, built with explicit rustflags (an inherited
//! `RUSTFLAGS` would silently replace them) into `target/guests`; and the
//! VMM binary. Used by `cargo xtask` and by the integration tests (which
//! so need none of xtask's benchmark and plotting stack).

use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

/// Why a build could not be done.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("cannot run {what}: {why}")]
    Spawn { what: &'static str, why: String },
    #[error("rustc --print target-libdir --target {GUEST_TARGET} failed: {0}")]
    NoTargetLibdir(String),
    #[error(
        "the {GUEST_TARGET} target (for the guests) is not installed in this toolchain ({}) and rustup is not available: install it, e.g. `{manual}`",
        libdir.display()
    )]
    NoTarget { libdir: PathBuf, manual: String },
    #[error("`{manual}` failed ({status}); run it by hand, then try again")]
    TargetAdd { manual: String, status: String },
    #[error("building {what} failed ({status})")]
    Failed { what: &'static str, status: String },
    #[error("{what} built but {} is missing", path.display())]
    Missing { what: &'static str, path: PathBuf },
}

/// The bare-metal target every guest is built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// A guest crate and how it is linked.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    /// Crate directory (and binary name).
    pub name: &'static str,
    /// rustc flags, joined with 0x1f into `CARGO_ENCODED_RUSTFLAGS`.
    pub rustflags: &'static [&'static str],
}

/// The firmware: fixed link address (its linker script), static code.
pub const FIRMWARE: Guest = Guest {
    name: "guest-fw",
    rustflags: &["-Crelocation-model=static", "-Ccode-model=small"],
};

/// The kernel: the target's default static-PIE, so it can be loaded anywhere.
pub const KERNEL: Guest = Guest {
    name: "guest-kernel",
    rustflags: &[],
};

/// Paths of freshly built guest images.
#[derive(Clone, Debug)]
pub struct GuestImages {
    pub firmware: PathBuf,
    pub kernel: PathBuf,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guest-build lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for var in [
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Makes sure the active toolchain (the one `rust-toolchain.toml` picks in
/// the workspace) has the guests' bare-metal target. rustup installs the
/// targets of `rust-toolchain.toml` only when it installs the toolchain, so
/// a machine whose stable toolchain came without it needs this. With rustup
/// the target is added (one line says so); without it, the error names the
/// command to run.
pub fn ensure_guest_target() -> Result<(), BuildError> {
    static CHECKED: std::sync::OnceLock<Result<(), BuildError>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_and_add_target).clone()
}

fn target_libdir(root: &Path) -> Result<PathBuf, BuildError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .current_dir(root)
        .env_remove("RUSTC_WRAPPER")
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .map_err(|e| BuildError::Spawn {
            what: "rustc --print target-libdir",
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::NoTargetLibdir(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// True when the target's standard library (libcore) is installed there.
fn has_core(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

fn check_and_add_target() -> Result<(), BuildError> {
    let root = workspace_root();
    let libdir = target_libdir(&root)?;
    if has_core(&libdir) {
        return Ok(());
    }
    let manual = format!("rustup target add {GUEST_TARGET}");
    let rustup = std::env::var_os("RUSTUP_HOME").is_some()
        || Command::new("rustup")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !rustup {
        return Err(BuildError::NoTarget { libdir, manual });
    }
    eprintln!("guest-build: the {GUEST_TARGET} target is missing; running `{manual}` for this workspace's toolchain");
    let status = Command::new("rustup")
        .current_dir(&root)
        .args(["target", "add", GUEST_TARGET])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| BuildError::Spawn {
            what: "rustup target add",
            why: e.to_string(),
        })?;
    if !status.success() || !has_core(&target_libdir(&root)?) {
        return Err(BuildError::TargetAdd {
            manual,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// Builds one guest (release) and returns the path of its ELF.
pub fn build_guest(guest: Guest) -> Result<PathBuf, BuildError> {
    ensure_guest_target()?;
    let root = workspace_root();
    let target_dir = root.join("target").join("guests");
    let status = cargo()
        .current_dir(root.join(guest.name))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            GUEST_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", guest.rustflags.join("\u{1f}"))
        .status()
        .map_err(|e| BuildError::Spawn {
            what: "cargo build (a guest)",
            why: e.to_string(),
        })?;
    if !status.success() {
        return Err(BuildError::Failed {
            what: guest.name,
            status: status.to_string(),
        });
    }
    let path = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(guest.name);
    if !path.is_file() {
        return Err(BuildError::Missing {
            what: guest.name,
            path,
        });
    }
    Ok(path)
}

/// Builds both guests.
pub fn build_guests() -> Result<GuestImages, BuildError> {
    Ok(GuestImages {
        firmware: build_guest(FIRMWARE)?,
        kernel: build_guest(KERNEL)?,
    })
}

/// Builds the VMM (release) in the main target directory; returns its path.
pub fn build_vmm() -> Result<PathBuf, BuildError> {
    let root = workspace_root();
    let status = cargo()
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "--package",
            "vmm",
            "--bin",
            "vmm",
        ])
        .status()
        .map_err(|e| BuildError::Spawn {
            what: "cargo build (the VMM)",
            why: e.to_string(),
        })?;
    if !status.success() {
        return Err(BuildError::Failed {
            what: "the VMM",
            status: status.to_string(),
        });
    }
    Ok(root.join("target").join("release").join("vmm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_libcore_counts_as_missing() {
        let dir = std::env::temp_dir().join(format!("xtask-libdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!has_core(&dir), "empty directory");
        assert!(!has_core(&dir.join("absent")), "missing directory");
        std::fs::write(dir.join("libcompiler_builtins-0123.rlib"), b"").unwrap();
        assert!(!has_core(&dir));
        std::fs::write(dir.join("libcore-4567.rlib"), b"").unwrap();
        assert!(has_core(&dir));
    }

    #[test]
    fn the_active_toolchain_reports_a_target_libdir() {
        let dir = target_libdir(&workspace_root()).unwrap();
        assert!(
            dir.ends_with(format!("{GUEST_TARGET}/lib")),
            "{}",
            dir.display()
        );
    }
}
