//! Boots the firmware under KVM, in every CPU profile, and checks what the
//! VMM reports: bytes accepted, page states, accept statuses from the
//! guest's self-test, and the exact GPA of a pending access.

use abi::layout::{FOUR_GIB, MMIO_HOLE_START};
use abi::{GIB, MIB};
use tests::{boot, config, in_each_profile, name};
use vmm::report::Fatal;
use vmm::Outcome;
use vmm::ProfileChoice;
use vmm::Report;

/// Boots `cmdline` and checks the TD stopped with `outcome`: no exit code,
/// a diagnostic of that kind. Returns the report and its diagnostic.
fn stops_with(p: ProfileChoice, mem: u64, cmdline: &str, outcome: Outcome) -> (Report, Fatal) {
    let r = boot(config(p, mem, cmdline));
    let f = r.fatal.clone().unwrap_or_else(|| {
        panic!(
            "{} `{cmdline}`: no diagnostic, outcome {}",
            name(p),
            r.outcome
        )
    });
    assert_eq!(r.outcome, outcome, "{} `{cmdline}`: {f:?}", name(p));
    assert_eq!(f.kind, outcome);
    assert_eq!(r.exit_code, None);
    (r, f)
}

fn console_line<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no console line starting with {prefix:?} in:\n{console}"))
}

#[test]
fn firmware_accepts_all_pending_ram_below_4g() {
    in_each_profile("firmware_accepts_all_pending_ram_below_4g", |p| {
        let r = boot(config(p, 4 * GIB, ""));
        let ctx = format!("profile {}: {:?}", name(p), r.fatal);
        assert_eq!(r.outcome, Outcome::Ok, "{ctx}");
        assert_eq!(r.exit_code, Some(0), "{ctx}");
        assert_eq!(r.cpu_profile_name(), name(p));
        // Everything below 4 GiB except initial memory was pending.
        assert_eq!(
            r.accept.bytes_accepted,
            MMIO_HOLE_START - r.pages.initial_bytes,
            "{ctx}"
        );
        assert_eq!(r.pages.accepted_bytes, MMIO_HOLE_START, "{ctx}");
        assert_eq!(
            r.pages.pending_bytes, GIB,
            "RAM above 4 GiB stays pending ({ctx})"
        );
        assert_eq!(
            r.accept.invalid + r.accept.size_mismatch + r.accept.already_accepted,
            0
        );
        assert_eq!(
            r.accept.bytes_accepted,
            r.accept.ok_2m * 2 * MIB + r.accept.ok_4k * 4096,
            "bytes match the per-level counts"
        );
        // Low RAM is fully accepted: one slot per GiB once merged.
        assert_eq!(r.host.memslots, 3, "{ctx}");
        assert!(r.host.memslots_peak <= 1024, "{ctx}");
        // Every MMIO exit was a first touch of accepted memory, which the
        // VMM mapped and completed; none reached pending memory.
        assert_eq!(r.exits.mmio, r.exits.first_touch_maps, "{ctx}");
        let fw_line = console_line(&r.console, "fw: accept policy All:");
        assert!(
            fw_line.contains(&format!("{} bytes accepted", r.accept.bytes_accepted)),
            "{fw_line}"
        );
        for mark in ["fw_start", "fw_accept_done", "fw_done", "total"] {
            assert!(r.timing_us.contains_key(mark), "missing timing {mark}");
        }
    });
}

#[test]
fn guest_self_test_sees_every_accept_status() {
    in_each_profile("guest_self_test_sees_every_accept_status", |p| {
        let r = boot(config(p, 4 * GIB, "fw.selftest=1"));
        let ctx = format!("profile {}: {:?}\n{}", name(p), r.fatal, r.console);
        assert_eq!(r.outcome, Outcome::Ok, "{ctx}");
        assert_eq!(r.exit_code, Some(0), "self-test failures: {ctx}");
        for check in [
            "accept_4k",
            "accept_4k_zeroed",
            "double_accept_4k",
            "double_accept_not_zeroed",
            "accept_2m_over_split_4k",
            "accept_2m",
            "accept_2m_zeroed",
            "double_accept_2m",
            "accept_4k_inside_2m",
            "double_accept_2m_not_zeroed",
            "accept_1g",
            "accept_level_3",
            "accept_misaligned_2m",
            "accept_reserved_bits",
            "accept_beyond_ram",
            "accept_in_mmio_hole",
            "accept_shared_bit",
            "unknown_leaf",
            "leaf_version",
            "veinfo_get",
            "vmcall_unknown_subfunction_rax",
            "vmcall_unknown_subfunction_r10",
            "vp_info",
            "vp_info_aps_parked",
        ] {
            let line = console_line(&r.console, &format!("selftest {check}:"));
            assert!(line.ends_with("ok"), "{line}");
        }
        // Self-test: 1 size mismatch, 3 already-accepted, 7 invalid. The
        // bulk accept then meets the split chunk (1 mismatch, 1 already at
        // its first page) and the 2 MiB chunk (1 already).
        assert_eq!(r.accept.size_mismatch, 2, "{ctx}");
        assert_eq!(r.accept.already_accepted, 5, "{ctx}");
        assert_eq!(r.accept.invalid, 7, "{ctx}");
        // Nothing was accepted twice, nothing was lost.
        assert_eq!(
            r.accept.bytes_accepted,
            MMIO_HOLE_START - r.pages.initial_bytes,
            "{ctx}"
        );
        assert_eq!(
            r.tdcalls.get("leaf>=63").copied(),
            Some(1),
            "unknown leaf 99 was counted"
        );
    });
}

#[test]
fn the_self_test_derives_its_expectations_from_the_vcpus_and_the_sept_level() {
    use vmm::SeptLevel;
    in_each_profile(
        "the_self_test_derives_its_expectations_from_the_vcpus_and_the_sept_level",
        |p| {
            for cpus in [1, 2, 4] {
                for sept in [SeptLevel::L2M, SeptLevel::L4K] {
                    // Nothing accepted beyond the self-test's two chunks, so
                    // the counts below are the self-test's alone (and a 4 KiB
                    // run takes no 800,000 accepts).
                    let mut c = config(p, GIB, "fw.selftest=1 fw.accept=none");
                    c = c.cpus(cpus);
                    c = c.sept_level(sept);
                    let r = boot(c);
                    let ctx = format!(
                        "profile {} --cpus {cpus} --sept-level {}: {:?}\n{}",
                        name(p),
                        sept.as_str(),
                        r.fatal,
                        r.console
                    );
                    assert_eq!(r.outcome, Outcome::Ok, "{ctx}");
                    assert_eq!(r.exit_code, Some(0), "self-test failures: {ctx}");
                    assert_eq!(r.vcpus, cpus, "{ctx}");
                    assert_eq!(
                        console_line(&r.console, "selftest: ").trim_end(),
                        format!(
                            "selftest: {cpus} vCPU(s), Secure-EPT leaf {}, chunks at 0x400000 and 0x600000",
                            sept.as_str()
                        ),
                        "{ctx}"
                    );
                    assert!(r.console.contains("\nselftest: 0 failure(s)\n"), "{ctx}");
                    assert!(!r.console.contains("FAIL"), "{ctx}");
                    for check in ["vp_info", "vp_info_aps_parked", "accept_2m_zeroed"] {
                        let line = console_line(&r.console, &format!("selftest {check}:"));
                        assert!(line.ends_with("ok"), "{line}");
                    }
                    // With 4 KiB leaves the 2 MiB accept is a size mismatch
                    // and the chunk is taken as 512 small pages.
                    let want_2m = match sept {
                        SeptLevel::L2M => 0,
                        SeptLevel::L4K => {
                            abi::tdcall::status::PAGE_SIZE_MISMATCH
                                | abi::tdcall::PageLevel::L2M as u64
                        }
                    };
                    let line = console_line(&r.console, "selftest accept_2m:");
                    assert!(line.contains(&format!("want {want_2m:#018x} ok")), "{line}");
                    assert_eq!(
                        r.console.contains("selftest accept_2m_as_512_4k: ok"),
                        sept == SeptLevel::L4K,
                        "{ctx}"
                    );
                    // Every accept, counted by the VMM: the self-test's, then
                    // the firmware finishing the two chunks (edk2's fallback
                    // on the split one, and on both with 4 KiB leaves).
                    let a = &r.accept;
                    let got = (
                        a.ok_4k,
                        a.ok_2m,
                        a.size_mismatch,
                        a.already_accepted,
                        a.invalid,
                    );
                    let want = match sept {
                        SeptLevel::L2M => (512, 1, 2, 5, 7),
                        SeptLevel::L4K => (1024, 0, 5, 515, 7),
                    };
                    assert_eq!(got, want, "{ctx}");
                    assert_eq!(a.bytes_accepted, 2 * 2 * MIB, "{ctx}");
                }
            }
        },
    );
}

#[test]
fn touching_pending_memory_stops_the_td_with_the_exact_gpa() {
    in_each_profile(
        "touching_pending_memory_stops_the_td_with_the_exact_gpa",
        |p| {
            let (r, f) = stops_with(
                p,
                5 * GIB,
                "fw.accept=none fw.selftest=touch-pending",
                Outcome::PendingAccess,
            );
            let ctx = format!("profile {}: {f:?}", name(p));
            assert_eq!(f.gpa, Some(FOUR_GIB), "{ctx}");
            assert_eq!(f.access, Some(vmm::report::Access::Read), "{ctx}");
            let rip = f.rip.expect("RIP of the access");
            assert!(
                (abi::layout::FIRMWARE_BASE
                    ..abi::layout::FIRMWARE_BASE + abi::layout::FIRMWARE_MAX_SIZE)
                    .contains(&rip),
                "{ctx}"
            );
            assert!(f.message.contains("0x100000000"), "{}", f.message);
            assert_eq!(r.exits.mmio, 1, "{ctx}");
            assert_eq!(
                r.accept.bytes_accepted, 0,
                "fw.accept=none accepts nothing ({ctx})"
            );
        },
    );
}

#[test]
fn accept_policy_none_and_size() {
    in_each_profile("accept_policy_none_and_size", |p| {
        let r = boot(config(p, GIB, "fw.accept=none"));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        assert_eq!(r.accept.calls, 0);
        assert_eq!(r.pages.pending_bytes, GIB - r.pages.initial_bytes);
        assert_eq!(r.host.memslots, 1, "only initial memory is mapped");

        let r = boot(config(p, GIB, "fw.accept=64M"));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        assert_eq!(r.accept.bytes_accepted, 64 * MIB);
        assert_eq!(r.pages.accepted_bytes, 64 * MIB + r.pages.initial_bytes);
    });
}

#[test]
fn a_lazy_terabyte_guest_costs_almost_nothing() {
    in_each_profile("a_lazy_terabyte_guest_costs_almost_nothing", |p| {
        let r = boot(config(p, 1 << 40, "fw.accept=none"));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        assert_eq!(r.pages.pending_bytes, (1 << 40) - r.pages.initial_bytes);
        assert!(r.host.guest_resident_bytes < 64 * MIB, "{:?}", r.host);
        assert!(r.host.page_state_bytes < 4 * MIB, "{:?}", r.host);
    });
}

#[test]
fn memory_size_not_a_multiple_of_2m_boots() {
    // 1 GiB + 12 KiB: the last 2 MiB chunk is partial, so it is accepted as
    // 4 KiB pages.
    in_each_profile("memory_size_not_a_multiple_of_2m_boots", |p| {
        let mem = GIB + 3 * 4096;
        let r = boot(config(p, mem, ""));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        assert_eq!(r.pages.pending_bytes, 0);
        assert_eq!(r.accept.bytes_accepted, mem - r.pages.initial_bytes);
    });
}

#[test]
fn touching_the_mmio_hole_is_a_bad_gpa() {
    in_each_profile("touching_the_mmio_hole_is_a_bad_gpa", |p| {
        let (_, f) = stops_with(
            p,
            GIB,
            "fw.accept=none fw.selftest=touch-hole",
            Outcome::BadGpa,
        );
        assert_eq!(f.gpa, Some(MMIO_HOLE_START));
        assert_eq!(f.access, Some(vmm::report::Access::Read));
        assert!(f.message.contains("MMIO hole"), "{}", f.message);
    });
}

#[test]
fn guest_panic_is_reported_with_its_message() {
    in_each_profile("guest_panic_is_reported_with_its_message", |p| {
        let (_, f) = stops_with(
            p,
            GIB,
            "fw.accept=none fw.selftest=panic",
            Outcome::GuestPanic,
        );
        assert!(
            f.message.contains("self-test panic requested"),
            "{}",
            f.message
        );
        let (_, f) = stops_with(p, GIB, "fw.selftest=bogus", Outcome::GuestPanic);
        assert!(
            f.message.contains("unknown fw.selftest=bogus"),
            "{}",
            f.message
        );
    });
}

#[test]
fn exceptions_reach_the_firmware_handler_in_every_profile() {
    in_each_profile(
        "exceptions_reach_the_firmware_handler_in_every_profile",
        |p| {
            let (_, f) = stops_with(
                p,
                GIB,
                "fw.accept=none fw.selftest=ud2",
                Outcome::GuestPanic,
            );
            assert!(f.message.contains("exception 6 "), "{}", f.message);
            // fatal.rip is the faulting instruction (the ud2), which the
            // handler also names in its message, not where it reported.
            let named = f
                .message
                .split("at RIP ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .expect("RIP in the message");
            assert_eq!(f.rip, Some(named), "{}", f.message);
            let fw = std::fs::read(&tests::guests().firmware).unwrap();
            let entry_file_offset = |rip: u64| {
                // The firmware is linked at FIRMWARE_BASE; find the bytes
                // of the instruction through its PT_LOAD headers.
                let phoff = abi::to_usize(u64::from_le_bytes(fw[0x20..0x28].try_into().unwrap()));
                let n = u16::from_le_bytes(fw[0x38..0x3a].try_into().unwrap()) as usize;
                (0..n).find_map(|i| {
                    let h = phoff + i * 56;
                    let word =
                        |o: usize| u64::from_le_bytes(fw[h + o..h + o + 8].try_into().unwrap());
                    let (off, paddr, filesz) = (word(8), word(24), word(32));
                    (u32::from_le_bytes(fw[h..h + 4].try_into().unwrap()) == 1
                        && (paddr..paddr + filesz).contains(&rip))
                    .then(|| abi::to_usize(off + rip - paddr))
                })
            };
            let at = entry_file_offset(named).expect("RIP inside the firmware image");
            assert_eq!(&fw[at..at + 2], &[0x0f, 0x0b], "fatal.rip points at ud2");
        },
    );
}

#[test]
fn triple_fault_is_reported_with_rip() {
    in_each_profile("triple_fault_is_reported_with_rip", |p| {
        let (_, f) = stops_with(
            p,
            GIB,
            "fw.accept=none fw.selftest=triple-fault",
            Outcome::TripleFault,
        );
        let rip = f.rip.expect("RIP");
        assert!(rip >= abi::layout::FIRMWARE_BASE, "{rip:#x}");
    });
}

#[test]
fn doorbell_benchmark_reports_a_round_trip_time() {
    in_each_profile("doorbell_benchmark_reports_a_round_trip_time", |p| {
        let r = boot(config(p, GIB, "fw.accept=none fw.bench=100"));
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
        let b = r.bench.expect("bench result");
        assert_eq!(b.round_trips, 100);
        assert!(b.doorbell_rtt_ns > 0);
        assert_eq!(
            r.tdcalls["TDG.VP.INFO"], 101,
            "one at boot plus the benchmark's"
        );
    });
}
