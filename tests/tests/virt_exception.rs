//! #VE: in a TD without SEPT_VE_DISABLE (a DEBUG TD, which our firmware
//! allows as Linux does), an access to private memory that is not
//! accepted raises #VE in the guest instead of stopping the TD. The guest's
//! handler reads the VE info (TDG.VP.VEINFO.GET: EPT violation, the access,
//! the exact GPA) and, as Linux's `virt_exception_kernel`, makes an EPT
//! violation on private memory fatal. In both CPU profiles.

use abi::tdcall::vp_info::{ATTR_DEBUG, ATTR_SEPT_VE_DISABLE};
use abi::vmcall::fatal_code;
use tests::{config, config_with_kernel, in_each_profile};
use vmm::{Outcome, Report};

const GIB: u64 = 1 << 30;

/// The fatal message's GPA after "of GPA ".
fn ve_gpa(r: &Report) -> u64 {
    let m = &r.fatal.as_ref().expect("a fatal error").message;
    let at = m.find("of GPA 0x").unwrap_or_else(|| panic!("{m}")) + "of GPA 0x".len();
    let hex: String = m[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

#[test]
fn a_pending_access_raises_ve_with_the_gpa_the_stop_would_name() {
    in_each_profile(
        "a_pending_access_raises_ve_with_the_gpa_the_stop_would_name",
        |p| {
            let cmdline = "fw.accept=none fw.selftest=touch-pending";
            // With SEPT_VE_DISABLE (the default): the TD stops at the access.
            let stop = tests::boot(config(p, 5 * GIB, cmdline));
            assert_eq!(stop.outcome, Outcome::PendingAccess, "{:?}", stop.fatal);
            let f = stop.fatal.as_ref().unwrap();
            // Without it, in a DEBUG TD: the same access raises #VE, and the
            // guest's handler names the same GPA from its VE info.
            let ve = tests::boot(config(p, 5 * GIB, cmdline).td_attributes(ATTR_DEBUG));
            assert_eq!(ve.outcome, Outcome::GuestPanic, "{:?}", ve.fatal);
            let v = ve.fatal.as_ref().unwrap();
            assert!(
                v.message.starts_with(&format!(
                    "guest fatal error {:#x} ",
                    fatal_code::VIRT_EXCEPTION
                )),
                "{}",
                v.message
            );
            assert!(
                v.message
                    .contains("EPT violation on private memory: read of GPA"),
                "{}",
                v.message
            );
            assert_eq!(Some(ve_gpa(&ve)), f.gpa);
            // A read: the faulting instruction did not retire, and the #VE
            // came at its RIP (a write's would come at the next one).
            assert!(
                v.message
                    .ends_with(&format!("at RIP {:#x}", f.rip.unwrap())),
                "{}",
                v.message
            );
            assert_eq!(ve.exits.ve_injected, 1);
            assert_eq!(stop.exits.ve_injected, 0);
            assert_eq!(ve.tdcalls.get("TDG.VP.VEINFO.GET"), Some(&1));
            assert!(ve.console.contains("SEPT_VE_DISABLE clear in a DEBUG TD"));
        },
    );
}

#[test]
fn a_page_removed_by_the_host_raises_ve_in_a_debug_td() {
    in_each_profile("a_page_removed_by_the_host_raises_ve_in_a_debug_td", |p| {
        let run = |attributes| {
            tests::boot(
                config_with_kernel(p, 2 * GIB, "")
                    .td_attributes(attributes)
                    .inject_remove(0.01, 3),
            )
        };
        let stop = run(ATTR_SEPT_VE_DISABLE);
        assert_eq!(stop.outcome, Outcome::PendingAccess, "{:?}", stop.fatal);
        let ve = run(ATTR_DEBUG);
        assert_eq!(ve.outcome, Outcome::GuestPanic, "{:?}", ve.fatal);
        assert_eq!(Some(ve_gpa(&ve)), stop.fatal.as_ref().unwrap().gpa);
        assert_eq!(ve.host.pages_removed, stop.host.pages_removed);
        assert_eq!(ve.exits.ve_injected, 1);
    });
}

#[test]
fn a_td_without_sept_ve_disable_or_debug_is_refused_as_linux_refuses_it() {
    in_each_profile(
        "a_td_without_sept_ve_disable_or_debug_is_refused_as_linux_refuses_it",
        |p| {
            let r = tests::boot(config(p, GIB, "").td_attributes(0));
            assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
            let m = &r.fatal.as_ref().unwrap().message;
            assert!(m.contains("SEPT_VE_DISABLE attribute must be set"), "{m}");
            assert_eq!(r.accept.calls, 0);
        },
    );
}
