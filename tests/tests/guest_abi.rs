//! The ABI version a guest reads (`docs/guest-abi.md`): both of our
//! guests ask the host for it first (`emu::ABI_VERSION`) and log its
//! answer; the VMM's unit tests check the call's registers.

use abi::vmcall::abi_version;
use abi::GIB;
use tests::{boot, config_with_kernel, in_each_profile, name};

#[test]
fn both_guests_check_and_log_the_abi_version() {
    in_each_profile("both_guests_check_and_log_the_abi_version", |p| {
        let r = boot(config_with_kernel(p, GIB, ""));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{}: {:?}", name(p), r.fatal);
        let v = format!(
            "host ABI {0}.{1}, guest built for {0}.{1}",
            abi_version::MAJOR,
            abi_version::MINOR
        );
        for who in ["fw", "kernel"] {
            let line = format!("{who}: {v}");
            assert!(
                r.console.lines().any(|l| l == line),
                "{}: no line {line:?} in:\n{}",
                name(p),
                r.console
            );
        }
        assert_eq!(r.tdcalls.get("vmcall.emu.7"), Some(&2), "{:?}", r.tdcalls);
    });
}
