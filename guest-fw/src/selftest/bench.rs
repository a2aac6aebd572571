//! `fw.bench_accept=N`: the guest side of the 4 KiB accept benchmark.

use super::faults::pending_above_4g;
use abi::hob::HobList;
use abi::tdcall::{leaf, status};
use abi::PAGE_4K;
use guest_rt::println;

/// `fw.bench_accept=N`: the cost of a 4 KiB accept as an OS pays it on
/// demand, against a plain doorbell round trip, with the same guest code
/// around both (in the ring-0 profile every guest instruction is
/// emulated, so the loops must match). First N no-op TDCALLs
/// (`TDG.VP.INFO`), each followed by a write to an accepted page
/// (`BenchStart`/`BenchEnd`), then N pending 4 KiB pages above 4 GiB
/// accepted one by one, each written once right after its accept
/// (`AcceptBenchStart`/`AcceptBenchEnd`); the host times both between
/// the marks. Then the TD shuts down (the memory map would not know these
/// pages).
pub fn bench_accept(hobs: &HobList<'_>, n: u64) -> ! {
    let Some((start, _)) = pending_above_4g(hobs).filter(|(_, len)| n * PAGE_4K <= *len) else {
        guest_rt::fatal!(
            guest_rt::fatal::code::BAD_CMDLINE,
            "fw.bench_accept={n}: needs {n} pending pages above 4 GiB (give the guest more RAM)"
        );
    };
    super::map_for_selftest(start, start + n * PAGE_4K);
    static SCRATCH: guest_rt::global::Global<[u64; 512]> = guest_rt::global::Global::new([0; 512]);
    let scratch = SCRATCH.with(|s| s.as_mut_ptr() as u64);
    guest_rt::tdcall::mark(abi::report::Mark::BenchStart, n);
    for i in 0..n {
        bench_step(leaf::VP_INFO as u64, 0, scratch + (i % 512) * 8, i);
    }
    guest_rt::tdcall::mark(abi::report::Mark::BenchEnd, n);
    guest_rt::tdcall::mark(abi::report::Mark::AcceptBenchStart, n);
    for i in 0..n {
        let gpa = start + i * PAGE_4K;
        bench_step(leaf::MEM_PAGE_ACCEPT as u64, gpa, gpa + 8, i);
    }
    guest_rt::tdcall::mark(abi::report::Mark::AcceptBenchEnd, n);
    println!("fw: 4 KiB accept benchmark: {n} no-op TDCALLs, then {n} pages accepted and written");
    guest_rt::tdcall::shutdown(0)
}

/// One step of `bench_accept`: TDCALL `rax` with `rcx`, which must
/// succeed, then a write of `value` at `at`.
#[inline(never)]
fn bench_step(rax: u64, rcx: u64, at: u64, value: u64) {
    let st = guest_rt::tdcall::tdcall(guest_rt::tdcall::Regs {
        rax,
        rcx,
        ..Default::default()
    })
    .rax;
    if st != status::SUCCESS {
        guest_rt::fatal!(
            guest_rt::fatal::code::ACCEPT_FAILED,
            "fw.bench_accept: TDCALL {rax:#x} with RCX {rcx:#x} failed: {st:#x}"
        );
    }
    // SAFETY: `at` is in the scratch array or in the page just accepted,
    // identity-mapped.
    unsafe { core::ptr::write_volatile(at as *mut u64, value) };
}
