//! Project tasks as a library: the benchmarks (`bench`) and the host
//! limits (`limits`) of `cargo xtask`; building the guests and the VMM is
//! the `guest-build` crate, re-exported here with errors as text for the
//! command's messages.

pub mod bench;
pub mod limits;

pub use guest_build::{
    workspace_root, BuildError, Guest, GuestImages, FIRMWARE, GUEST_TARGET, KERNEL,
};
use std::path::PathBuf;

/// `guest_build::build_guests`, its error as the command's message.
pub fn build_guests() -> Result<GuestImages, String> {
    guest_build::build_guests().map_err(|e| e.to_string())
}

/// `guest_build::build_vmm`, its error as the command's message.
pub fn build_vmm() -> Result<PathBuf, String> {
    guest_build::build_vmm().map_err(|e| e.to_string())
}

/// `guest_build::build_guest`, its error as the command's message.
pub fn build_guest(guest: Guest) -> Result<PathBuf, String> {
    guest_build::build_guest(guest).map_err(|e| e.to_string())
}

/// `guest_build::ensure_guest_target`, its error as the command's message.
pub fn ensure_guest_target() -> Result<(), String> {
    guest_build::ensure_guest_target().map_err(|e| e.to_string())
}
