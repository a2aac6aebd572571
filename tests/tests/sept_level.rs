//! `--sept-level 4k`: the host maps private memory in 4 KiB leaves, so a
//! 2 MiB accept of pending memory answers TDX_PAGE_SIZE_MISMATCH and the
//! guests fall back as their models do (the firmware as edk2's
//! `TdAcceptPages`: 512 x 4 KiB; the kernel as Linux's `try_accept_one`:
//! 2 MiB, then 4 KiB), in every CPU profile.

use abi::{GIB, PAGE_2M};
use tests::{boot, config, config_with_kernel, in_each_profile, name};
use vmm::Report;

const MIB: u64 = 1 << 20;

fn with_4k(mut c: vmm::TdConfig) -> vmm::TdConfig {
    c.sept_level = abi::tdcall::SeptLevel::L4K;
    c
}

fn ok(r: &Report, ctx: &str) {
    assert_eq!(r.outcome, "ok", "{ctx}: {:?}\n{}", r.fatal, r.console);
    assert_eq!(r.exit_code, Some(0), "{ctx}: {}", r.console);
}

#[test]
fn firmware_falls_back_to_512_small_pages_per_mismatch() {
    in_each_profile("firmware_falls_back_to_512_small_pages_per_mismatch", |p| {
        let ctx = name(p).to_string();
        let large = boot(config(p, 256 * MIB, "fw.accept=all"));
        let small = boot(with_4k(config(p, 256 * MIB, "fw.accept=all")));
        ok(&large, &ctx);
        ok(&small, &ctx);
        assert_eq!(
            (large.sept_level.as_str(), small.sept_level.as_str()),
            ("2m", "4k")
        );
        // Every 2 MiB page the firmware accepted with 2 MiB leaves is one
        // mismatch with 4 KiB leaves, and 512 small accepts instead.
        assert!(large.accept.ok_2m > 50, "{ctx}");
        assert_eq!(small.accept.ok_2m, 0, "{ctx}");
        assert_eq!(small.accept.size_mismatch, large.accept.ok_2m, "{ctx}");
        assert_eq!(
            small.accept.ok_4k,
            large.accept.ok_4k + 512 * large.accept.ok_2m,
            "{ctx}"
        );
        // The same memory ends up accepted.
        assert_eq!(
            small.pages.accepted_bytes, large.pages.accepted_bytes,
            "{ctx}"
        );
        assert_eq!(
            small.accept.bytes_accepted, large.accept.bytes_accepted,
            "{ctx}"
        );
    });
}

#[test]
fn the_kernel_falls_back_like_try_accept_one_lazy_and_eager() {
    in_each_profile(
        "the_kernel_falls_back_like_try_accept_one_lazy_and_eager",
        |p| {
            for (mem, cmdline) in [
                (GIB, "fw.accept=none accept_memory=lazy workload=32M"),
                (256 * MIB, "fw.accept=none accept_memory=eager"),
            ] {
                let ctx = format!("{} {cmdline}", name(p));
                let large = boot(config_with_kernel(p, mem, cmdline));
                let small = boot(with_4k(config_with_kernel(p, mem, cmdline)));
                ok(&large, &ctx);
                ok(&small, &ctx);
                assert!(large.accept.ok_2m > 0, "{ctx}");
                assert_eq!(small.accept.ok_2m, 0, "{ctx}");
                // One 2 MiB attempt per 2 MiB step, each a mismatch, then
                // 4 KiB pages: the same bytes, a bitmap that agrees.
                assert_eq!(small.accept.size_mismatch, large.accept.ok_2m, "{ctx}");
                assert_eq!(
                    small.accept.bytes_accepted, large.accept.bytes_accepted,
                    "{ctx}"
                );
                assert_eq!(
                    small.accept.ok_4k * abi::PAGE_4K,
                    small.accept.bytes_accepted,
                    "{ctx}"
                );
                assert_eq!(
                    small.bitmap_mismatches,
                    Some(0),
                    "{ctx}: {:?}",
                    small.bitmap_error
                );
                assert!(small.accept.size_mismatch * PAGE_2M <= small.accept.bytes_accepted);
            }
        },
    );
}

#[test]
fn chaos_with_4k_leaves_agrees_with_the_model() {
    in_each_profile("chaos_with_4k_leaves_agrees_with_the_model", |p| {
        // The self-tests ask the host for its leaf size and predict every
        // 2 MiB accept of pending memory as a size mismatch. A short run
        // also leaves whole chunks pending, which the end of the run
        // accepts over 4 KiB leaves too.
        let ctx = name(p).to_string();
        let mut last = None;
        for count in [20000, 200] {
            let r = boot(with_4k(config_with_kernel(
                p,
                4 * GIB,
                &format!(
                    "fw.accept=none fw.selftest=chaos accept_memory=lazy kernel.selftest=chaos seed=5 count={count}"
                ),
            )));
            ok(&r, &ctx);
            assert_eq!(r.guest["chaos_disagreements"], 0, "{ctx}: {}", r.console);
            last = Some(r);
        }
        let r = last.expect("two runs");
        // The firmware's run and the kernel's.
        assert_eq!(r.guest["chaos_ops"], 400, "{ctx}");
        assert_eq!(r.accept.ok_2m, 0, "{ctx}");
        assert!(r.accept.size_mismatch > 0, "{ctx}");
        assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}: {:?}", r.bitmap_error);
    });
}
