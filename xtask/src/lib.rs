//! Building the guests: each is its own cargo workspace targeting
//! `x86_64-unknown-none`, built with explicit rustflags (an inherited
//! `RUSTFLAGS` would silently replace them) into `target/guests`.
//! Used by the `xtask` binary and by the integration tests.

pub mod bench;

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

/// Builds one guest (release) and returns the path of its ELF.
pub fn build_guest(guest: Guest) -> Result<PathBuf, String> {
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
