//! Building the guests: each is its own cargo workspace targeting
//! `x86_64-unknown-none`, built with explicit rustflags (an inherited
//! `RUSTFLAGS` would silently replace them) into `target/guests`.
//! Used by the `xtask` binary and by the integration tests.

pub mod bench;
pub mod limits;

use std::path::{Path, PathBuf};
use std::process::Command;

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
        .expect("xtask lives one level below the workspace root")
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
pub fn ensure_guest_target() -> Result<(), String> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_and_add_target).clone()
}

fn target_libdir(root: &Path) -> Result<PathBuf, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .current_dir(root)
        .env_remove("RUSTC_WRAPPER")
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .map_err(|e| format!("cannot run rustc to find the {GUEST_TARGET} target: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rustc --print target-libdir --target {GUEST_TARGET} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
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

fn check_and_add_target() -> Result<(), String> {
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
        return Err(format!(
            "the {GUEST_TARGET} target (for the guests) is not installed in this toolchain ({}) and rustup is not available: install it, e.g. `{manual}`",
            libdir.display()
        ));
    }
    eprintln!("xtask: the {GUEST_TARGET} target is missing; running `{manual}` for this workspace's toolchain");
    let status = Command::new("rustup")
        .current_dir(&root)
        .args(["target", "add", GUEST_TARGET])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `{manual}`: {e}"))?;
    if !status.success() || !has_core(&target_libdir(&root)?) {
        return Err(format!(
            "`{manual}` failed ({status}); run it by hand, then try again"
        ));
    }
    Ok(())
}

/// Builds one guest (release) and returns the path of its ELF.
pub fn build_guest(guest: Guest) -> Result<PathBuf, String> {
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
        .map_err(|e| format!("cannot run cargo to build {}: {e}", guest.name))?;
    if !status.success() {
        return Err(format!("building {} failed ({status})", guest.name));
    }
    let path = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(guest.name);
    if !path.is_file() {
        return Err(format!(
            "{} built but {} is missing",
            guest.name,
            path.display()
        ));
    }
    Ok(path)
}

/// Builds both guests.
pub fn build_guests() -> Result<GuestImages, String> {
    Ok(GuestImages {
        firmware: build_guest(FIRMWARE)?,
        kernel: build_guest(KERNEL)?,
    })
}

/// Builds the VMM (release) in the main target directory; returns its path.
pub fn build_vmm() -> Result<PathBuf, String> {
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
        .map_err(|e| format!("cannot run cargo to build the VMM: {e}"))?;
    if !status.success() {
        return Err(format!("building the VMM failed ({status})"));
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
