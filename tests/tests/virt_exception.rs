//! #VE: in a TD without SEPT_VE_DISABLE (a DEBUG TD, which our firmware
//! allows as Linux does), an access to private memory that is not
//! accepted raises #VE in the guest instead of stopping the TD. The guest's
//! handler reads the VE info (TDG.VP.VEINFO.GET: EPT violation, the access,
//! the exact GPA) and, as Linux's `virt_exception_kernel`, makes an EPT
//! violation on private memory fatal; or, under `ve_accept=on` ("access
//! first", order (a)), accepts the page and returns to the access, which
//! runs again, writes included. Order (a) needs no table, keeps none true,
//! and turns a host's removal into silent zeros where Linux's policy stops
//! the TD. In both CPU profiles.

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
        // The firmware accepts 16 MiB in 4 KiB pages and reads each one
        // (a page is removed behind it among its 4096 accepts).
        let run = |attributes| {
            tests::boot(
                config_with_kernel(p, 2 * GIB, "fw.accept=16M fw.accept_page=4k")
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

#[test]
fn access_first_accepts_each_page_at_its_ve_and_leaves_the_table_untrue() {
    in_each_profile(
        "access_first_accepts_each_page_at_its_ve_and_leaves_the_table_untrue",
        |p| {
            let r = tests::boot(
                config_with_kernel(p, 4 * GIB, "fw.accept=none ve_accept=on workload=64M")
                    .td_attributes(ATTR_DEBUG),
            );
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert!(r.console.contains("ve_accept=on"), "{}", r.console);
            // Order (a): nothing parked, nothing accepted up front; every
            // page the kernel touched was accepted by its #VE handler, one
            // #VE and one 4 KiB accept each.
            let ve_accepts = r.guest["ve_accepts"];
            assert!(ve_accepts >= (64 << 20) / 4096, "{ve_accepts}");
            assert_eq!(r.exits.ve_injected, ve_accepts);
            assert_eq!(r.guest["blocks_parked"], 0);
            assert_eq!(r.guest["workload_bytes"], 64 << 20);
            assert_eq!(r.tdcalls["TDG.VP.VEINFO.GET"], ve_accepts);
            // It needs no table, and keeps none: the table the EFI stub
            // filled still says "unaccepted" for units whose pages the
            // #VEs accepted, which a kexec'd kernel would accept again.
            assert!(
                r.bitmap_mismatches.is_some_and(|m| m > 0),
                "{:?}",
                r.bitmap_mismatches
            );
        },
    );
}

#[test]
fn access_first_is_refused_where_it_cannot_work() {
    in_each_profile("access_first_is_refused_where_it_cannot_work", |p| {
        // With SEPT_VE_DISABLE a first touch would stop the TD.
        let r = tests::boot(config_with_kernel(p, GIB, "ve_accept=on"));
        assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
        let m = &r.fatal.as_ref().unwrap().message;
        assert!(
            m.contains("ve_accept=on needs #VE on pending memory"),
            "{m}"
        );
        // Its table is untrue: no kexec.
        let r = tests::boot(
            config_with_kernel(p, GIB, "ve_accept=on kexec=1").td_attributes(ATTR_DEBUG),
        );
        let m = &r.fatal.as_ref().unwrap().message;
        assert!(m.contains("kexec is refused"), "{m}");
    });
}

#[test]
fn every_kind_of_store_into_a_pending_page_runs_again_after_its_ve() {
    // KVM retires an emulated write before it exits; the VMM finds the
    // instruction again (`retired_write`), so the #VE comes at the store
    // and the store runs again after the handler accepted the page. The
    // guest checks 13 kinds of store byte for byte.
    in_each_profile(
        "every_kind_of_store_into_a_pending_page_runs_again_after_its_ve",
        |p| {
            let r = tests::boot(
                config_with_kernel(
                    p,
                    4 * GIB,
                    "fw.accept=none ve_accept=on kernel.selftest=ve-stores",
                )
                .td_attributes(ATTR_DEBUG),
            );
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert!(
                r.console.contains("13 kinds of store into pending pages"),
                "{}",
                r.console
            );
            assert_eq!(r.exits.ve_injected, r.guest["ve_accepts"]);
        },
    );
}

#[test]
fn a_host_that_removes_written_pages_stops_linux_and_silently_zeroes_access_first() {
    // The reason "access first" is not chosen, executed. A host removes
    // pages the guest has written (`--inject remove=Q,delay=D`).
    in_each_profile(
        "a_host_that_removes_written_pages_stops_linux_and_silently_zeroes_access_first",
        |p| {
            // Linux's policy (SEPT_VE_DISABLE, lazy acceptance): the next
            // access to a removed page stops the TD there.
            let linux = tests::boot(
                config_with_kernel(p, 4 * GIB, "fw.accept=none workload=1G")
                    .inject_remove_later(0.05, 4, 3),
            );
            assert_eq!(linux.outcome, Outcome::PendingAccess, "{:?}", linux.fatal);
            let f = linux.fatal.as_ref().unwrap();
            assert!(f.message.contains("removed by the host"), "{}", f.message);
            assert!(linux.host.pages_removed >= 1);
            assert_eq!(linux.host.removed_pages_reaccepted, 0);
            // Access first: each #VE accepts, removed pages included. The
            // run ends `ok`, with zeros where the workload's data was.
            let ve = tests::boot(
                config_with_kernel(p, 4 * GIB, "fw.accept=none ve_accept=on workload=64M")
                    .td_attributes(ATTR_DEBUG)
                    .inject_remove_later(0.01, 64, 1),
            );
            assert_eq!(ve.outcome, Outcome::Ok, "{:?}", ve.fatal);
            let zeros = ve.guest["workload_zero_pages"];
            assert!(zeros > 0, "{:?}", ve.guest);
            assert!(
                zeros <= ve.host.removed_pages_reaccepted
                    && ve.host.removed_pages_reaccepted <= ve.host.pages_removed,
                "{zeros} zero pages, {:?}",
                ve.host
            );
            assert_eq!(ve.guest["workload_bytes"], 64 << 20);
        },
    );
}
