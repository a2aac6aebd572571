//! Firmware-to-kernel boots under KVM, in every CPU profile: the kernel's
//! unaccepted-memory table, lazy and eager acceptance, the workload, and
//! the VMM's cross-check of the bitmap against its page states.

use abi::layout::FOUR_GIB;
use abi::{GIB, MIB};
use tests::{boot, config_with_kernel, in_each_profile, name};
use vmm::Report;

fn ok(r: &Report, ctx: &str) {
    assert_eq!(
        r.outcome,
        vmm::Outcome::Ok,
        "{ctx}: {:?}\n{}",
        r.fatal,
        r.console
    );
    assert_eq!(r.exit_code, Some(0), "{ctx}");
    assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}: {:?}", r.bitmap_error);
    for mark in ["fw_done", "kernel_entry", "kernel_ready", "workload_done"] {
        assert!(r.timing_us.contains_key(mark), "{ctx}: no {mark}");
    }
    assert!(r.timing_us["kernel_entry"] <= r.timing_us["kernel_ready"]);
}

#[test]
fn lazy_and_eager_boots_at_several_sizes() {
    in_each_profile("lazy_and_eager_boots_at_several_sizes", |p| {
        // 2 GiB (no RAM above 4 GiB), 6 GiB (3 GiB above), and 2 GiB + 2 MiB
        // (not a multiple of 4 MiB), all with fw.accept=none so the kernel
        // sees unaccepted memory everywhere.
        for mem in [2 * GIB, 6 * GIB, 2 * GIB + 2 * MIB] {
            let eager = boot(config_with_kernel(
                p,
                mem,
                "fw.accept=none accept_memory=eager",
            ));
            let ctx = format!("{} {mem:#x} eager", name(p));
            ok(&eager, &ctx);
            // All RAM accepted but the bounce pool, which the kernel shared.
            assert_eq!(eager.pages.shared_bytes, 2 * MIB, "{ctx}");
            assert_eq!(
                eager.pages.pending_bytes, eager.pages.shared_bytes,
                "{ctx}: eager accepts all RAM"
            );
            assert_eq!(eager.guest["lazy_accept"], 0);
            assert_eq!(eager.guest["blocks_parked"], 0);
            let t = eager.unaccepted_table.expect("table");
            // Linux's bounds: from the lowest unaccepted GPA (where initial
            // memory ends: it starts at 0 and ends on a 2 MiB boundary) to
            // the top of RAM rounded up to 2 MiB.
            let base = eager.pages.initial_bytes;
            assert_eq!(base % (2 << 20), 0, "{ctx}");
            assert_eq!(
                (t.version, t.unit_size, t.phys_base),
                (1, 2 << 20, base),
                "{ctx}"
            );
            let top = if mem > 3 * GIB {
                FOUR_GIB + mem - 3 * GIB
            } else {
                mem
            };
            assert_eq!(t.size, (top - base).div_ceil(2 << 20).div_ceil(8), "{ctx}");
            assert_eq!(t.bits_set, 0, "{ctx}");

            let lazy = boot(config_with_kernel(p, mem, "fw.accept=none"));
            let ctx = format!("{} {mem:#x} lazy", name(p));
            ok(&lazy, &ctx);
            assert_eq!(lazy.guest["lazy_accept"], 1);
            assert!(lazy.guest["blocks_parked"] > 0, "{ctx}");
            assert!(
                lazy.accept.bytes_accepted < eager.accept.bytes_accepted / 4,
                "{ctx}: lazy accepted {} vs eager {}",
                lazy.accept.bytes_accepted,
                eager.accept.bytes_accepted
            );
            let t = lazy.unaccepted_table.expect("table");
            assert!(t.bits_set > 0, "{ctx}");
            // Units still marked are exactly the pending memory in units.
            assert!(t.bits_set * (2 << 20) <= lazy.pages.pending_bytes, "{ctx}");
        }
    });
}

#[test]
fn lazy_acceptance_grows_with_the_workload() {
    in_each_profile("lazy_acceptance_grows_with_the_workload", |p| {
        let idle = boot(config_with_kernel(p, 4 * GIB, "fw.accept=none"));
        let busy = boot(config_with_kernel(
            p,
            4 * GIB,
            "fw.accept=none workload=256M",
        ));
        let ctx = name(p);
        ok(&idle, ctx);
        ok(&busy, ctx);
        assert_eq!(busy.guest["workload_bytes"], 256 * MIB);
        assert!(
            busy.guest["blocks_accepted_lazily"] >= 64,
            "{ctx}: {:?}",
            busy.guest
        );
        assert!(
            busy.accept.bytes_accepted >= idle.accept.bytes_accepted + 256 * MIB,
            "{ctx}: {} vs {}",
            busy.accept.bytes_accepted,
            idle.accept.bytes_accepted
        );
        // Still far from everything.
        assert!(busy.pages.pending_bytes > 3 * GIB, "{ctx}");
    });
}

#[test]
fn tdvf_style_firmware_then_lazy_kernel() {
    in_each_profile("tdvf_style_firmware_then_lazy_kernel", |p| {
        let r = boot(config_with_kernel(p, 6 * GIB, "workload=64M"));
        let ctx = name(p);
        ok(&r, ctx);
        // The firmware accepted everything below 4 GiB; the table starts at
        // 4 GiB and the 3 GiB above it stay pending.
        let t = r.unaccepted_table.expect("table");
        assert_eq!(t.phys_base, FOUR_GIB, "{ctx}");
        assert_eq!(t.bits_set, 3 * GIB / (2 << 20), "{ctx}");
        // And the bounce pool, shared (private side pending).
        assert_eq!(
            r.pages.pending_bytes,
            3 * GIB + r.pages.shared_bytes,
            "{ctx}"
        );
        assert!(r.accept.bytes_accepted < 3 * GIB + 256 * MIB);
    });
}

#[test]
fn a_lazy_terabyte_guest_reaches_kernel_ready() {
    in_each_profile("a_lazy_terabyte_guest_reaches_kernel_ready", |p| {
        let r = boot(config_with_kernel(
            p,
            1 << 40,
            "fw.accept=none workload=16M",
        ));
        let ctx = name(p);
        ok(&r, ctx);
        assert!(
            r.host.guest_resident_bytes < 512 * MIB,
            "{ctx}: {:?}",
            r.host
        );
        assert!(r.accept.bytes_accepted < 256 * MIB, "{ctx}");
        // RAM tops out at 1 TiB + 1 GiB (the hole moves 1 GiB up).
        assert_eq!(
            r.unaccepted_table.map(|t| t.size),
            Some(((1u64 << 40) + GIB) / (2 << 20) / 8)
        );
    });
}

#[test]
fn accepting_accepted_memory_is_a_kernel_panic() {
    in_each_profile("accepting_accepted_memory_is_a_kernel_panic", |p| {
        let r = boot(config_with_kernel(
            p,
            2 * GIB,
            "fw.accept=none kernel.selftest=reaccept",
        ));
        let f = r.fatal.as_ref().expect("a fatal diagnostic");
        assert_eq!(r.outcome, vmm::Outcome::GuestPanic, "{}: {f:?}", name(p));
        assert!(
            f.message.contains("TDX: Failed to accept memory"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("TDX_PAGE_ALREADY_ACCEPTED"),
            "{}",
            f.message
        );
        assert!(r.accept.already_accepted >= 1);
    });
}
