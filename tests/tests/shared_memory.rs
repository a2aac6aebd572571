//! Shared memory in our kernel, as Linux makes it in a TD: a bounce pool
//! converted to shared at boot with MapGPA, the console going through it,
//! converted back (accepted again) at run time, and converted back before
//! a kexec (`tdx_kexec_finish`), so the next kernel finds a bitmap that is
//! still true; without that step (`kexec_unshare=off`) the next kernel's
//! first private access to the pool stops the TD at its exact GPA. In both
//! CPU profiles.

use tests::{config_with_kernel, in_each_profile};
use vmm::report::Access;
use vmm::{Outcome, Report};

const GIB: u64 = 1 << 30;
const CHUNK: u64 = 2 << 20;

/// The pool GPA generation `generation` reported.
fn pool_of(r: &Report, generation: u64) -> u64 {
    r.guest_per_generation
        .iter()
        .find(|g| g.generation == Some(generation))
        .and_then(|g| g.counters.get("bounce_pool").copied())
        .unwrap_or_else(|| panic!("no bounce_pool from generation {generation}"))
}

#[test]
fn the_kernel_shares_its_bounce_pool_and_its_console_goes_through_it() {
    in_each_profile(
        "the_kernel_shares_its_bounce_pool_and_its_console_goes_through_it",
        |p| {
            let r = tests::boot(config_with_kernel(p, 4 * GIB, "workload=64M"));
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            let pool = pool_of(&r, 0);
            assert_eq!(pool % CHUNK, 0);
            // The VMM holds exactly the pool shared, and nothing private
            // of it is accepted: no GPA is both.
            assert_eq!(r.pages.shared_ranges, vec![[pool, pool + CHUNK]]);
            assert_eq!(r.pages.shared_bytes, CHUNK);
            assert_eq!(r.host.converted_to_shared_bytes, CHUNK);
            assert!(r
                .pages
                .accepted_ranges
                .iter()
                .all(|[s, e]| *e <= pool || *s >= pool + CHUNK));
            assert_eq!(r.guest["shared_pages"], CHUNK / 4096);
            // Every console line after the pool went through it.
            let after = r
                .console
                .split("the console goes through it\n")
                .nth(1)
                .unwrap();
            assert!(after.contains("kernel: allocator ready"), "{}", r.console);
            assert!(
                r.host.console_shared_bytes >= after.len() as u64,
                "{} shared console bytes for {} bytes of console",
                r.host.console_shared_bytes,
                after.len()
            );
            // The bitmap's clear bit over the pool is Linux's state.
            assert_eq!(r.bitmap_mismatches, Some(0));
            // bounce_pool=0: nothing shared, the console stays private.
            let r = tests::boot(config_with_kernel(p, GIB, "bounce_pool=0"));
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert_eq!(r.pages.shared_bytes, 0);
            assert_eq!(r.host.console_shared_bytes, 0);
        },
    );
}

#[test]
fn converting_back_accepts_the_pages_again_and_they_read_zero() {
    in_each_profile(
        "converting_back_accepts_the_pages_again_and_they_read_zero",
        |p| {
            let r = tests::boot(config_with_kernel(
                p,
                GIB,
                "kernel.selftest=shared-roundtrip",
            ));
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert!(
                r.console.contains(
                    "private (accepted again, zeros) and shared again; nr_shared 512 -> 0 -> 512"
                ),
                "{}",
                r.console
            );
            assert_eq!(r.host.converted_to_private_bytes, CHUNK);
            assert_eq!(r.host.converted_to_shared_bytes, 2 * CHUNK);
            assert_eq!(r.pages.shared_bytes, CHUNK);
            // The 2 MiB accept of the way back.
            assert!(r.accept.ok_2m >= 1);
        },
    );
}

#[test]
fn kexec_converts_shared_memory_back_and_the_next_kernel_finds_a_true_bitmap() {
    in_each_profile(
        "kexec_converts_shared_memory_back_and_the_next_kernel_finds_a_true_bitmap",
        |p| {
            let r = tests::boot(config_with_kernel(p, 4 * GIB, "workload=64M kexec=1"));
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert_eq!(r.kexecs, 1);
            // Nothing was shared at the jump: tdx_kexec_finish found the
            // pool (512 pages, Linux's nr_shared) and converted it back.
            assert_eq!(r.kexec[0].shared_bytes_at_jump, 0);
            assert_eq!(r.guest["kexec_unshared_pages"], CHUNK / 4096);
            assert!(r
                .console
                .contains("kexec: 512 shared pages converted back to private and accepted"));
            assert!(!r.console.contains("accounting is off"));
            // The next kernel made its own pool; the bitmap it reused is true.
            let next = pool_of(&r, 1);
            assert_eq!(r.pages.shared_ranges, vec![[next, next + CHUNK]]);
            assert_eq!(r.bitmap_mismatches, Some(0));
            assert_eq!(r.host.converted_to_private_bytes, CHUNK);
        },
    );
}

#[test]
fn without_the_kexec_step_the_next_kernel_stops_at_the_shared_page() {
    in_each_profile(
        "without_the_kexec_step_the_next_kernel_stops_at_the_shared_page",
        |p| {
            let r = tests::boot(config_with_kernel(
                p,
                GIB,
                "workload=64M kexec=1 kexec_unshare=off",
            ));
            assert_eq!(r.outcome, Outcome::PendingAccess, "{:?}", r.fatal);
            let pool = pool_of(&r, 0);
            assert_eq!(r.kexec[0].shared_bytes_at_jump, CHUNK);
            let f = r.fatal.as_ref().unwrap();
            // The next kernel clears its pool's first page while private,
            // as memblock_alloc does: the old pool, still shared.
            assert_eq!(f.gpa, Some(pool), "{}", f.message);
            assert_eq!(f.access, Some(Access::Write));
            assert_eq!(f.generation, Some(1));
            assert!(
                f.message
                    .contains("converted to shared (MapGPA) and not back"),
                "{}",
                f.message
            );
            assert!(r
                .console
                .contains("kexec_unshare=off: 512 pages stay shared"));
        },
    );
}

#[test]
fn the_pool_comes_in_2_mib_chunks_up_to_32_mib_and_larger_is_refused() {
    in_each_profile(
        "the_pool_comes_in_2_mib_chunks_up_to_32_mib_and_larger_is_refused",
        |p| {
            // 5 MiB: three chunks, each its own MapGPA.
            let r = tests::boot(config_with_kernel(p, 2 * GIB, "bounce_pool=5M"));
            assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.fatal);
            assert_eq!(r.pages.shared_bytes, 3 * CHUNK);
            assert_eq!(r.guest["shared_pages"], 3 * CHUNK / 4096);
            // Over 32 MiB: refused by name, before anything is shared.
            let r = tests::boot(config_with_kernel(p, 2 * GIB, "bounce_pool=64M"));
            assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
            let m = &r.fatal.as_ref().unwrap().message;
            assert!(
                m.contains("bounce_pool=0x4000000: at most 0x2000000"),
                "{m}"
            );
            assert_eq!(r.pages.shared_bytes, 0);
        },
    );
}
