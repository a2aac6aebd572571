//! The ABI version check both guests make first: the host's version
//! (`emu::ABI_VERSION`) against the one this guest was built for
//! (`abi::vmcall::abi_version`). A different major version, or a host that
//! does not answer, is a fatal error; otherwise the versions are logged.

use crate::fatal::code;
use crate::{fatal, println, tdcall};
use abi::vmcall::abi_version::{compatible, major, minor, MAJOR, MINOR};
use abi::vmcall::emu;

/// Checks the host's ABI version for the guest named `who` (the console
/// prefix) and returns it; does not return when the host's major version
/// is not this guest's.
pub fn check(who: &str) -> u64 {
    let Some(host) = tdcall::abi_version() else {
        fatal!(
            code::ABI_VERSION,
            "{who}: the host refused the ABI version call (vendor function {}): it predates ABI {MAJOR}.{MINOR}, which this guest needs",
            emu::ABI_VERSION
        );
    };
    if !compatible(host) {
        fatal!(
            code::ABI_VERSION,
            "{who}: the host implements ABI {}.{} (R11 {host:#x}) but this guest was built for ABI {MAJOR}.{MINOR}: the major versions differ",
            major(host),
            minor(host)
        );
    }
    println!(
        "{who}: host ABI {}.{}, guest built for {MAJOR}.{MINOR}",
        major(host),
        minor(host)
    );
    host
}
