//! A host that takes accepted pages back (`--inject remove=Q`,
//! TDH.MEM.PAGE.REMOVE): with SEPT_VE_DISABLE (the default attributes, as
//! Linux requires) the guest's next access to a removed page stops the TD
//! with its exact GPA, named as removed by the host: denial of service,
//! never silent corruption.

use abi::vmcall::{ghci, EXPOSE_R10_R15, GHCI_STANDARD};
use tests::process::{tiny_firmware, Code};
use vmm::report::Access;
use vmm::{Outcome, Td, TdConfig};

/// The page the hand-made firmware accepts and writes (pending at start).
const PAGE: u64 = 0x400_0000;

/// A firmware that accepts `PAGE` (4 KiB), writes to it, and then ends
/// with ReportFatalError code 0x77.
fn accept_then_write_firmware() -> std::path::PathBuf {
    let (rax, rcx, rbx, r10, r11, r12) = (0, 1, 3, 10, 11, 12);
    let mut c = Code::default();
    c.mov32(rcx, u32::try_from(PAGE).unwrap()) // the operand: GPA, 4 KiB
        .mov32(rax, u32::from(abi::tdcall::leaf::MEM_PAGE_ACCEPT))
        .tdcall()
        .mov64(rbx, PAGE)
        .raw(&[0x89, 0x03]) // mov [rbx], eax
        .mov32(rcx, u32::try_from(EXPOSE_R10_R15).unwrap())
        .mov32(r10, u32::try_from(GHCI_STANDARD).unwrap())
        .mov32(r11, u32::try_from(ghci::REPORT_FATAL_ERROR).unwrap())
        .mov32(r12, 0x77)
        .zero_rax()
        .tdcall()
        .spin();
    let (image, _) = tiny_firmware(abi::layout::FIRMWARE_BASE, &c.0, &[]);
    let path = tests::scratch("accept-then-write.elf");
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn the_next_access_to_a_removed_page_stops_the_td_with_its_gpa() {
    let test = "the_next_access_to_a_removed_page_stops_the_td_with_its_gpa";
    let firmware = accept_then_write_firmware();
    tests::in_each_profile(test, |p| {
        let run = |remove: f64| {
            let config = TdConfig::new(&firmware)
                .mem_bytes(1 << 30)
                .cpu_profile(p)
                .echo_console(false)
                .pending(tests::pending_from_env())
                .inject_remove(remove, 1)
                .timeout(std::time::Duration::from_secs(60));
            Td::build(config).expect("building the TD").run()
        };
        // The host keeps the page: the write lands, the firmware ends.
        let r = run(0.0);
        assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
        assert!(r
            .fatal
            .as_ref()
            .unwrap()
            .message
            .starts_with("guest fatal error 0x77 "));
        assert_eq!(r.host.pages_removed, 0);
        // The host removes it right after the accept succeeded: the write
        // stops the TD there, with the exact GPA and the cause.
        let r = run(1.0);
        assert_eq!(r.outcome, Outcome::PendingAccess, "{:?}", r.fatal);
        let fatal = r.fatal.as_ref().unwrap();
        assert_eq!(fatal.gpa, Some(PAGE), "{}", fatal.message);
        assert_eq!(fatal.access, Some(Access::Write));
        assert!(
            fatal.message.contains("removed by the host"),
            "{}",
            fatal.message
        );
        assert_eq!(r.host.pages_removed, 1);
        assert_eq!(r.accept.ok_4k, 1, "the accept itself succeeded");
        assert!(r
            .pages
            .accepted_ranges
            .iter()
            .all(|[s, e]| PAGE < *s || PAGE >= *e));
    });
    let _ = std::fs::remove_file(firmware);
}

#[test]
fn our_guests_stop_at_a_removed_page_never_run_on_with_it() {
    let test = "our_guests_stop_at_a_removed_page_never_run_on_with_it";
    tests::in_each_profile(test, |p| {
        // The firmware accepts 16 MiB in 4 KiB pages and reads each one it
        // accepted (its first and last word): with 4096 accepts, a page is
        // removed behind it (the odds of none are 0.99^4096, about 1e-18),
        // and it is found at once, by its exact GPA.
        let config =
            tests::config_with_kernel(p, 2 << 30, "fw.accept=16M fw.accept_page=4k workload=64M")
                .inject_remove(0.01, 3);
        let r = tests::boot(config);
        assert_eq!(r.outcome, Outcome::PendingAccess, "{:?}", r.fatal);
        let fatal = r.fatal.as_ref().unwrap();
        assert!(
            fatal.message.contains("removed by the host"),
            "{}",
            fatal.message
        );
        let gpa = fatal.gpa.expect("the GPA");
        assert!(r.host.pages_removed >= 1);
        assert!(r
            .pages
            .accepted_ranges
            .iter()
            .all(|[s, e]| gpa < *s || gpa >= *e));
    });
}

#[test]
fn a_write_to_a_removed_page_is_reported_at_the_write() {
    // KVM retires an emulated write before it exits; the VMM finds the
    // instruction from the code bytes, so the stop's RIP is the write's
    // (`mov [rbx], eax`), as on TDX.
    let test = "a_write_to_a_removed_page_is_reported_at_the_write";
    let firmware = accept_then_write_firmware();
    tests::in_each_profile(test, |p| {
        let config = TdConfig::new(&firmware)
            .mem_bytes(1 << 30)
            .cpu_profile(p)
            .echo_console(false)
            .inject_remove(1.0, 1)
            .timeout(std::time::Duration::from_secs(60));
        let r = Td::build(config).expect("building the TD").run();
        let f = r.fatal.as_ref().unwrap();
        // The code: mov ecx (5), mov eax (5), tdcall (4), movabs rbx (10),
        // then the write.
        let write_at = abi::layout::FIRMWARE_BASE + 64 + 56 + 5 + 5 + 4 + 10;
        assert_eq!(f.rip, Some(write_at), "{}", f.message);
        assert!(
            f.message.ends_with(&format!("(RIP {write_at:#x})")),
            "{}",
            f.message
        );
    });
    let _ = std::fs::remove_file(firmware);
}
