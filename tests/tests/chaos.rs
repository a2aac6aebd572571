//! Hostile guests under KVM, in every CPU profile: the chaos self-test in
//! the firmware and in the kernel (random TDCALLs, VMCALLs and port I/O,
//! MapGPA conversions to shared and back, pages the host removes and the
//! guest accepts again; each answer checked by the guest against the
//! accept model), with the VMM checking its private-memory invariants,
//! shared alias included, after every operation.

use abi::GIB;
use tests::{boot, config, config_with_kernel, in_each_profile, name};
use vmm::Report;

const OPS: u64 = 100_000;

fn chaos_ok(r: &Report, ctx: &str) {
    assert_eq!(
        r.outcome,
        vmm::Outcome::Ok,
        "{ctx}: {:?}\n{}",
        r.fatal,
        r.console
    );
    assert_eq!(r.exit_code, Some(0), "{ctx}: {}", r.console);
    assert_eq!(r.guest["chaos_ops"], OPS, "{ctx}");
    assert_eq!(r.guest["chaos_disagreements"], 0, "{ctx}: {}", r.console);
    // Every unassigned port access the guest made reached the VMM, and
    // nothing else did.
    assert_eq!(
        r.exits.unassigned_io, r.guest["chaos_unassigned_io"],
        "{ctx}"
    );
    assert!(r.guest["chaos_unassigned_io"] > OPS / 10, "{ctx}");
    // The invariants were checked after every accept (debug build).
    let checks = r
        .invariant_checks
        .expect("invariant checks are on in tests");
    assert!(checks > r.accept.calls / 2, "{ctx}: {checks} checks");
    assert!(r.accept.invalid > OPS / 10, "{ctx}");
    assert!(
        r.accept.already_accepted > 0 && r.accept.size_mismatch > 0,
        "{ctx}"
    );
}

#[test]
fn firmware_chaos_three_seeds() {
    in_each_profile("firmware_chaos_three_seeds", |p| {
        for seed in [1, 2, 3] {
            let r = boot(config(
                p,
                4 * GIB,
                &format!("fw.accept=none fw.selftest=chaos seed={seed} count={OPS}"),
            ));
            chaos_ok(&r, &format!("{} seed {seed}", name(p)));
        }
    });
}

#[test]
fn kernel_chaos_keeps_the_bitmap_consistent() {
    in_each_profile("kernel_chaos_keeps_the_bitmap_consistent", |p| {
        let seed = 11;
        let r = boot(config_with_kernel(
            p,
            6 * GIB,
            &format!(
                "fw.accept=none accept_memory=lazy kernel.selftest=chaos seed={seed} count={OPS} workload=16M"
            ),
        ));
        let ctx = format!("{} kernel seed {seed}", name(p));
        chaos_ok(&r, &ctx);
        assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}: {:?}", r.bitmap_error);
        assert!(r.timing_us.contains_key("workload_done"), "{ctx}");
        conversions_and_removals_agree(&r, &ctx);
    });
}

#[test]
fn chaos_is_reproducible_from_its_seed() {
    in_each_profile("chaos_is_reproducible_from_its_seed", |p| {
        let run = |seed: u64| {
            let r = boot(config(
                p,
                4 * GIB,
                &format!("fw.accept=none fw.selftest=chaos seed={seed} count=5000"),
            ));
            assert_eq!(r.outcome, vmm::Outcome::Ok, "{:?}", r.fatal);
            (r.accept, r.exits.unassigned_io, r.pages.accepted_bytes)
        };
        let (a, b) = (run(5), run(5));
        assert_eq!(
            (
                a.0.calls,
                a.0.ok_4k,
                a.0.ok_2m,
                a.0.invalid,
                a.0.already_accepted,
                a.1,
                a.2
            ),
            (
                b.0.calls,
                b.0.ok_4k,
                b.0.ok_2m,
                b.0.invalid,
                b.0.already_accepted,
                b.1,
                b.2
            )
        );
        let c = run(6);
        assert_ne!((a.0.calls, a.0.ok_4k, a.1), (c.0.calls, c.0.ok_4k, c.1));
    });
}

#[test]
fn chaos_holds_under_busy_injection() {
    in_each_profile("chaos_holds_under_busy_injection", |p| {
        let mut c = config(
            p,
            4 * GIB,
            "fw.accept=none fw.accept_retry=1000 fw.selftest=chaos seed=4 count=20000",
        );
        c = c.inject_busy(0.1, 4);
        let r = boot(c);
        let ctx = name(p);
        assert_eq!(
            r.outcome,
            vmm::Outcome::Ok,
            "{ctx}: {:?}\n{}",
            r.fatal,
            r.console
        );
        assert_eq!(r.guest["chaos_disagreements"], 0, "{ctx}: {}", r.console);
        assert!(r.accept.busy_injected > 0, "{ctx}");
        assert!(r.console.contains("busy retries"), "{ctx}");
    });
}

#[test]
fn firmware_then_kernel_chaos_with_a_half_accepted_top_block() {
    in_each_profile(
        "firmware_then_kernel_chaos_with_a_half_accepted_top_block",
        |p| {
            // RAM ends 2 MiB past a 4 MiB boundary, so the firmware's chaos
            // window leaves the kernel a parked block that is half accepted;
            // the kernel's window must skip it.
            let r = boot(config_with_kernel(
            p,
            6 * GIB + (2 << 20),
            "fw.accept=none fw.selftest=chaos accept_memory=lazy kernel.selftest=chaos seed=9 count=5000",
        ));
            let ctx = name(p);
            assert_eq!(
                r.outcome,
                vmm::Outcome::Ok,
                "{ctx}: {:?}\n{}",
                r.fatal,
                r.console
            );
            assert_eq!(r.exit_code, Some(0), "{ctx}: {}", r.console);
            assert_eq!(r.guest["chaos_disagreements"], 0, "{ctx}: {}", r.console);
            assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}: {:?}", r.bitmap_error);
        },
    );
}

#[test]
fn chaos_counters_survive_kexec() {
    in_each_profile("chaos_counters_survive_kexec", |p| {
        // Each of the three generations runs its own chaos workload: every
        // generation's counters are kept and the totals add up.
        let count = 5000;
        let r = boot(config_with_kernel(
            p,
            6 * GIB,
            &format!(
                "fw.accept=none accept_memory=lazy kernel.selftest=chaos seed=21 count={count} kexec=2"
            ),
        ));
        let ctx = format!("{}: {:?}\n{}", name(p), r.fatal, r.console);
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}");
        assert_eq!(r.kexecs, 2, "{ctx}");
        assert_eq!(r.guest["chaos_ops"], 3 * count, "{ctx}");
        assert_eq!(r.guest["chaos_disagreements"], 0, "{ctx}");
        let kernels: Vec<_> = r
            .guest_per_generation
            .iter()
            .filter(|g| g.generation.is_some())
            .collect();
        assert_eq!(kernels.len(), 3, "{ctx}");
        for (i, g) in kernels.iter().enumerate() {
            assert_eq!(g.generation, Some(i as u64));
            assert_eq!(g.counters["chaos_ops"], count, "{ctx}");
        }
    });
}

#[test]
fn chaos_on_four_vcpus_is_explained_by_the_entry_lock() {
    in_each_profile("chaos_on_four_vcpus_is_explained_by_the_entry_lock", |p| {
        // Four CPUs fire into one 32 MiB window (16 Secure-EPT entries):
        // accepts of one entry race, and every answer, BUSY included, must
        // be one an order of the racing pair explains.
        let mut c = config_with_kernel(
            p,
            6 * GIB,
            &format!(
                "fw.accept=none accept_memory=lazy kernel.selftest=chaos seed=21 count={OPS} workload=16M"
            ),
        );
        c = c.cpus(4);
        let r = boot(c);
        let ctx = format!("{} 4 vCPUs", name(p));
        chaos_ok(&r, &ctx);
        assert_eq!(r.vcpus, 4, "{ctx}");
        assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}: {:?}", r.bitmap_error);
        // Accepts really raced, and every BUSY the host gave reached the
        // model (which explained it: no disagreements above).
        assert!(r.guest["chaos_raced"] > 0, "{ctx}: {}", r.console);
        assert_eq!(r.guest["chaos_busy"], r.accept.busy, "{ctx}");
        assert!(
            r.accept.busy > 0,
            "{ctx}: no accept ever found its entry held"
        );
        assert_eq!(
            r.per_vcpu.iter().map(|v| v.busy).sum::<u64>(),
            r.accept.busy,
            "{ctx}"
        );
        // Every CPU took part.
        assert!(
            r.per_vcpu.iter().all(|v| v.accepts > 0),
            "{ctx}: {:?}",
            r.per_vcpu
        );
        conversions_and_removals_agree(&r, &ctx);
    });
}

/// The chaos run converted window ranges to shared and back, had the host
/// remove pages and accepted them again, and the guest's model and the VMM
/// agree on all of it (no disagreement above; counts equal here).
fn conversions_and_removals_agree(r: &Report, ctx: &str) {
    let g = &r.guest;
    assert!(g["chaos_conversions"] > 0, "{ctx}: {}", r.console);
    assert!(g["chaos_removals"] > 0, "{ctx}: {}", r.console);
    assert!(r.host.converted_to_shared_bytes > 2 << 20, "{ctx}");
    // The host removed exactly what the guest asked, and the window's end
    // (every page accepted) took every removed page back.
    assert_eq!(r.host.pages_removed, g["chaos_removals"], "{ctx}");
    assert_eq!(g["chaos_reaccepted"], g["chaos_removals"], "{ctx}");
    assert_eq!(
        r.host.removed_pages_reaccepted, g["chaos_reaccepted"],
        "{ctx}"
    );
    // Only the kernel's bounce pool is shared at the end.
    assert_eq!(
        r.pages.shared_bytes,
        2 << 20,
        "{ctx}: {:?}",
        r.pages.shared_ranges
    );
}
