//! Project tasks as a library: the benchmarks (`bench`) and the host
//! limits (`limits`) of `cargo xtask`, and their one error type (`error`);
//! building the guests and the VMM is the `guest-build` crate, re-exported
//! here with its errors as `XtaskError::Build`.

pub mod bench;
pub mod error;
pub mod limits;

pub use error::{Result, RunError, XtaskError};
pub use guest_build::{
    workspace_root, BuildError, Guest, GuestImages, FIRMWARE, GUEST_TARGET, KERNEL,
};
use std::path::PathBuf;

/// `guest_build::build_guests`, its error as an `XtaskError`.
pub fn build_guests() -> Result<GuestImages> {
    Ok(guest_build::build_guests()?)
}

/// `guest_build::build_vmm`, its error as an `XtaskError`.
pub fn build_vmm() -> Result<PathBuf> {
    Ok(guest_build::build_vmm()?)
}

/// `guest_build::build_guest`, its error as an `XtaskError`.
pub fn build_guest(guest: Guest) -> Result<PathBuf> {
    Ok(guest_build::build_guest(guest)?)
}

/// `guest_build::ensure_guest_target`, its error as an `XtaskError`.
pub fn ensure_guest_target() -> Result<()> {
    Ok(guest_build::ensure_guest_target()?)
}
