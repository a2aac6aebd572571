//! `fw.selftest=1`: drives every accept status from the guest side and
//! checks what came back against the accept model for this TD's
//! configuration (RAM, GPAW, the host's Secure-EPT leaf size, its vCPUs),
//! plus the other leaves' fixed answers.
//! The self-tests that stop the TD on purpose are `faults`; the accept
//! benchmark's guest side is `bench`.

use abi::hob::{resource_type, HobList};
use abi::layout::RamLayout;
use abi::layout::FOUR_GIB;
use abi::tdcall::accept::encode;
use abi::tdcall::{leaf, status, vp_info as info, PageLevel};
use abi::{PAGE_1G, PAGE_2M, PAGE_4K};
use core::sync::atomic::{AtomicUsize, Ordering};
use guest_rt::global::Global;
use guest_rt::println;
use guest_rt::tdcall::{accept_page, accept_raw, finish_accept, raw_leaf, vp_info};
use models::accept::{Expect, Model};

mod bench;
mod faults;

pub use bench::bench_accept;
pub use faults::{hang, invalid_opcode, touch_hole, touch_pending, touch_poisoned, triple_fault};

const PATTERN: u64 = 0xa5a5_5a5a_dead_beef;

/// Two 2 MiB-aligned chunks of unaccepted RAM below 4 GiB.
fn two_pending_chunks(hobs: &HobList<'_>) -> Option<u64> {
    hobs.memory_resources()
        .filter(|r| r.resource_type == resource_type::MEMORY_UNACCEPTED)
        .find_map(|r| {
            let first = r.physical_start.div_ceil(PAGE_2M) * PAGE_2M;
            let end = (r.physical_start + r.resource_length).min(FOUR_GIB);
            (first + 2 * PAGE_2M <= end).then_some(first)
        })
}

/// The GPAW the host passed at entry as the layout's width. `fw_main`
/// checked it against TDG.VP.INFO's 6-bit field; a wider value is still
/// refused here rather than truncated.
fn gpaw_u32(gpaw: u64) -> u32 {
    match u32::try_from(gpaw) {
        Ok(w) => w,
        Err(_) => guest_rt::fatal!(guest_rt::fatal::code::BAD_HOB, "GPAW {gpaw} out of range"),
    }
}

fn read(gpa: u64) -> u64 {
    // SAFETY: only called on accepted pages, identity-mapped.
    unsafe { core::ptr::read_volatile(gpa as *const u64) }
}

fn write(gpa: u64, v: u64) {
    // SAFETY: only called on accepted pages, identity-mapped, that hold
    // nothing else (they were pending until this self-test).
    unsafe { core::ptr::write_volatile(gpa as *mut u64, v) }
}

struct Checker {
    failures: u32,
    /// The two chunks under test, as the TDX module should see them.
    model: Model,
}

impl Checker {
    fn status(&mut self, name: &str, got: u64, want: u64) {
        let ok = got == want;
        println!(
            "selftest {name}: status {got:#018x} ({}) want {want:#018x} {}",
            status::name(got),
            if ok { "ok" } else { "FAIL" }
        );
        self.failures += u32::from(!ok);
    }

    fn check(&mut self, name: &str, ok: bool) {
        println!("selftest {name}: {}", if ok { "ok" } else { "FAIL" });
        self.failures += u32::from(!ok);
    }

    /// Issues the accept `rcx` and checks its status against the model's
    /// prediction (which the model then applies). Returns the status.
    fn accept(&mut self, name: &str, rcx: u64) -> u64 {
        let got = finish_accept(rcx, accept_raw(rcx));
        match self.model.accept(rcx) {
            Expect::Status(want) => self.status(name, got, want),
            Expect::Unknown => {
                println!(
                    "selftest {name}: status {got:#018x}, which the model cannot predict: FAIL"
                );
                self.failures += 1;
            }
        }
        got
    }

    /// Reads `gpa` if the model says its page is accepted; a page it says
    /// is pending is never touched (that would stop the TD).
    fn read(&mut self, name: &str, gpa: u64) -> Option<u64> {
        if self.model.is_accepted(gpa) {
            Some(read(gpa))
        } else {
            println!("selftest {name}: {gpa:#x} is not accepted: not touched, FAIL");
            self.failures += 1;
            None
        }
    }

    /// Writes `gpa` under the same rule as `read`.
    fn write(&mut self, name: &str, gpa: u64, v: u64) {
        if self.model.is_accepted(gpa) {
            write(gpa, v);
        } else {
            println!("selftest {name}: {gpa:#x} is not accepted: not written, FAIL");
            self.failures += 1;
        }
    }
}

/// Runs the accept self-test; returns the number of failed checks and the
/// two 2 MiB chunks it accepted pages in. Every accept status is the one
/// `models::accept` predicts for this TD: its RAM (from the HOB), its
/// GPAW and the host's Secure-EPT leaf size (asked of the host, as the
/// chaos self-test does); with 4 KiB leaves the 2 MiB accept answers
/// SIZE_MISMATCH and the chunk is accepted as 512 4 KiB pages, as edk2
/// falls back. The vCPU checks use the count TDG.VP.INFO reports, and
/// that as many APs came up.
pub fn run(hobs: &HobList<'_>, gpaw: u64, ram_top: u64) -> (u32, Option<(u64, u64)>) {
    let Some(a) = two_pending_chunks(hobs) else {
        println!("selftest: no two pending 2 MiB chunks below 4 GiB; skipped");
        return (1, None);
    };
    let b = a + PAGE_2M;
    let mem: u64 = hobs.memory_resources().map(|r| r.resource_length).sum();
    let layout = RamLayout::for_mem(mem, gpaw_u32(gpaw));
    let sept = guest_rt::tdcall::sept_level();
    let Some(model) = Model::with_sept_level(layout, a, 2 * PAGE_2M, sept) else {
        println!(
            "selftest: chunks {a:#x}..{:#x} are not RAM of a {mem}-byte TD: FAIL",
            b + PAGE_2M
        );
        return (1, None);
    };
    let vcpus = crate::mp::vcpus();
    println!(
        "selftest: {vcpus} vCPU(s), Secure-EPT leaf {}, chunks at {a:#x} and {b:#x}",
        sept.as_str()
    );
    let mut c = Checker { failures: 0, model };
    c.check("layout_ram_top", layout.ram_top() == ram_top);

    c.accept("accept_4k", encode(a, PageLevel::L4K));
    let zero = c.read("accept_4k_zeroed", a) == Some(0)
        && c.read("accept_4k_zeroed", a + PAGE_4K - 8) == Some(0);
    c.check("accept_4k_zeroed", zero);
    c.write("accept_4k_write", a, PATTERN);
    c.accept("double_accept_4k", encode(a, PageLevel::L4K));
    let kept = c.read("double_accept_not_zeroed", a) == Some(PATTERN);
    c.check("double_accept_not_zeroed", kept);
    c.accept("accept_2m_over_split_4k", encode(a, PageLevel::L2M));
    let st = c.accept("accept_2m", encode(b, PageLevel::L2M));
    if status::code(st) == status::PAGE_SIZE_MISMATCH {
        // The host maps 4 KiB leaves: edk2's TdAcceptPages falls back to
        // 512 4 KiB accepts, each of which must succeed.
        let mut wrong = 0;
        for page in (b..b + PAGE_2M).step_by(abi::to_usize(PAGE_4K)) {
            let rcx = encode(page, PageLevel::L4K);
            let got = finish_accept(rcx, accept_raw(rcx));
            let want = c.model.accept(rcx);
            if want != Expect::Status(got) {
                wrong += 1;
                if wrong == 1 {
                    println!(
                        "selftest accept_2m_as_4k: {page:#x}: status {got:#018x} ({}), model {want:?}",
                        status::name(got)
                    );
                }
            }
        }
        c.check("accept_2m_as_512_4k", wrong == 0);
    }
    let zero = c.read("accept_2m_zeroed", b) == Some(0)
        && c.read("accept_2m_zeroed", b + PAGE_2M - 8) == Some(0);
    c.check("accept_2m_zeroed", zero);
    c.write("accept_2m_write", b + PAGE_4K, PATTERN);
    c.accept("double_accept_2m", encode(b, PageLevel::L2M));
    c.accept("accept_4k_inside_2m", encode(b + PAGE_4K, PageLevel::L4K));
    let kept = c.read("double_accept_2m_not_zeroed", b + PAGE_4K) == Some(PATTERN);
    c.check("double_accept_2m_not_zeroed", kept);
    // Bad operands answer the same in every configuration: checked
    // against the model and against the TDX module's literal answer, so a
    // mistake the model shares with the VMM is still caught.
    let invalid = status::OPERAND_INVALID | status::OPERAND_RCX;
    for (name, rcx) in [
        ("accept_1g", encode(PAGE_1G, PageLevel::L1G)),
        ("accept_level_3", PAGE_1G | 3),
        ("accept_misaligned_2m", encode(b + PAGE_4K, PageLevel::L2M)),
        ("accept_reserved_bits", (b + 2 * PAGE_4K) | 0x8),
        ("accept_beyond_ram", encode(ram_top, PageLevel::L4K)),
        (
            "accept_in_mmio_hole",
            encode(abi::layout::MMIO_HOLE_START, PageLevel::L4K),
        ),
        (
            "accept_shared_bit",
            encode(a | 1 << (gpaw - 1), PageLevel::L4K),
        ),
    ] {
        let got = c.accept(name, rcx);
        c.status(name, got, invalid);
    }
    c.status(
        "unknown_leaf",
        raw_leaf(99),
        status::OPERAND_INVALID | status::OPERAND_RAX,
    );
    c.status(
        "leaf_version",
        raw_leaf(leaf::VP_INFO as u64 | 1 << 16),
        status::OPERAND_INVALID | status::OPERAND_RAX,
    );
    c.status(
        "veinfo_get",
        raw_leaf(leaf::VP_VEINFO_GET as u64),
        status::NO_VALID_VE_INFO,
    );
    let unknown = guest_rt::tdcall::vmcall(abi::vmcall::GHCI_STANDARD, 0x7777, 0, 0, 0, 0);
    c.status(
        "vmcall_unknown_subfunction_rax",
        unknown.rax,
        status::SUCCESS,
    );
    c.status(
        "vmcall_unknown_subfunction_r10",
        unknown.r10,
        abi::vmcall::vmcall_status::OPERAND_INVALID,
    );
    let vi = vp_info();
    // NUM_VCPUS in R8 bits 31:0, MAX_VCPUS in 63:32, this vCPU's index in
    // R9: the boot vCPU is 0, and every other vCPU came up and parked.
    let (num, max) = (vi.r8 & 0xffff_ffff, vi.r8 >> 32);
    c.check(
        "vp_info",
        vi.rax == 0
            && vi.rcx & info::GPAW_MASK == gpaw
            && vi.rdx & info::ATTR_SEPT_VE_DISABLE != 0
            && num == u64::from(vcpus)
            && (1..=max).contains(&num)
            && vi.r9 == 0,
    );
    // Every AP came, each with its own index: exactly 1..num, once each
    // (a count alone would pass two vCPUs entered with one index).
    let (indices, duplicate) = crate::mp::ap_indices();
    let want = if num >= 64 {
        u64::MAX
    } else {
        (1u64 << num) - 1
    } & !1;
    c.check(
        "vp_info_aps_parked",
        num >= 1 && crate::mp::aps_arrived() == num - 1 && indices == want && !duplicate,
    );
    println!("selftest: {} failure(s)", c.failures);
    (c.failures, Some((a, a + 2 * PAGE_2M)))
}

/// `fw.selftest=chaos seed=S count=N`: the chaos workload of
/// `guest_chaos` in a window at the top of the highest unaccepted RAM,
/// which is then accepted in full. Returns the failure count (1 when any
/// answer disagreed with the model) and the window, now accepted.
pub fn chaos(hobs: &HobList<'_>, gpaw: u64, seed: u64, count: u64) -> (u32, (u64, u64)) {
    use abi::report::Counter;
    use guest_rt::fatal::code;
    use guest_rt::tdcall::counter;
    use models::accept::MAX_WINDOW;
    let mem: u64 = hobs.memory_resources().map(|r| r.resource_length).sum();
    let layout = RamLayout::for_mem(mem, gpaw_u32(gpaw));
    let window = hobs
        .memory_resources()
        .filter(|r| r.resource_type == resource_type::MEMORY_UNACCEPTED)
        .filter_map(|r| {
            let end = (r.physical_start + r.resource_length) & !(PAGE_2M - 1);
            let start = r
                .physical_start
                .next_multiple_of(PAGE_2M)
                .max(end.saturating_sub(MAX_WINDOW));
            (start < end).then_some((start, end))
        })
        .max_by_key(|w| w.1);
    let Some((lo, hi)) = window else {
        guest_rt::fatal!(
            code::BAD_HOB,
            "fw.selftest=chaos: no unaccepted 2 MiB chunk"
        );
    };
    map_for_selftest(lo, hi);
    let Some(model) = Model::with_sept_level(layout, lo, hi - lo, guest_rt::tdcall::sept_level())
    else {
        guest_rt::fatal!(
            code::BAD_HOB,
            "fw.selftest=chaos: window {lo:#x}..{hi:#x} is not RAM of a {mem}-byte TD"
        );
    };
    // The boot vCPU alone (the APs stay parked).
    static CHAOS: guest_chaos::Chaos = guest_chaos::Chaos::new();
    CHAOS.start(model, 1);
    let out = CHAOS.run(0, seed, count);
    let Some(mut model) = CHAOS.end() else {
        guest_rt::fatal!(code::PANIC, "fw.selftest=chaos: the run lost its model");
    };
    guest_chaos::summary(&out, &model);
    if !guest_chaos::finish(&mut model) {
        guest_rt::fatal!(
            code::ACCEPT_FAILED,
            "fw.selftest=chaos: could not accept the rest of the window"
        );
    }
    counter(Counter::ChaosOps, out.ops);
    counter(Counter::ChaosDisagreements, out.disagreements);
    counter(Counter::ChaosUnassignedIo, out.unassigned_io);
    (u32::from(out.disagreements > 0), (lo, hi))
}

/// `fw.selftest=accept-twice`: accepts every pending page of RAM, then
/// asks for all of RAM again at every level: each 4 KiB page must answer
/// TDX_PAGE_ALREADY_ACCEPTED, each 2 MiB page ALREADY_ACCEPTED or (over
/// 4 KiB state) SIZE_MISMATCH, each 1 GiB page OPERAND_INVALID. Nothing may
/// change. Returns the number of wrong answers.
pub fn accept_twice(hobs: &HobList<'_>) -> u32 {
    let mut stats = crate::accept::Stats::default();
    for r in hobs
        .memory_resources()
        .filter(|r| r.resource_type == resource_type::MEMORY_UNACCEPTED)
    {
        crate::accept::accept_range(
            r.physical_start,
            r.physical_start + r.resource_length,
            &mut stats,
        );
    }
    println!(
        "selftest accept-twice: accepted {} bytes; asking again",
        stats.bytes
    );
    let invalid = status::OPERAND_INVALID | status::OPERAND_RCX;
    let (mut calls, mut wrong) = (0u64, 0u32);
    let mut check = |what: &str, gpa: u64, got: u64, ok: bool| {
        calls += 1;
        if !ok {
            wrong += 1;
            if wrong <= 10 {
                println!(
                    "selftest accept-twice: {what} {gpa:#x}: {got:#x} ({}) FAIL",
                    status::name(got)
                );
            }
        }
    };
    for r in hobs.memory_resources() {
        let (start, end) = (r.physical_start, r.physical_start + r.resource_length);
        for gpa in (start..end).step_by(abi::to_usize(PAGE_4K)) {
            let st = accept_page(gpa, PageLevel::L4K);
            check(
                "4K",
                gpa,
                st,
                status::code(st) == status::PAGE_ALREADY_ACCEPTED,
            );
        }
        for gpa in
            (start.next_multiple_of(PAGE_2M)..end & !(PAGE_2M - 1)).step_by(abi::to_usize(PAGE_2M))
        {
            let st = accept_page(gpa, PageLevel::L2M);
            let code = status::code(st);
            check(
                "2M",
                gpa,
                st,
                code == status::PAGE_ALREADY_ACCEPTED || code == status::PAGE_SIZE_MISMATCH,
            );
        }
        for gpa in
            (start.next_multiple_of(PAGE_1G)..end & !(PAGE_1G - 1)).step_by(abi::to_usize(PAGE_1G))
        {
            let st = accept_page(gpa, PageLevel::L1G);
            check("1G", gpa, st, st == invalid);
        }
    }
    println!("selftest accept-twice: {calls} repeated accepts, {wrong} wrong answer(s)");
    wrong
}

/// Page directories for the self-tests that touch RAM above 4 GiB, which
/// the host does not map (`guest_rt::paging`): enough for 8 GiB.
#[repr(C, align(4096))]
struct Directories([[u8; 4096]; 8]);
static DIRECTORIES: Global<Directories> = Global::new(Directories([[0; 4096]; 8]));
static DIRECTORIES_USED: AtomicUsize = AtomicUsize::new(0);

/// Maps `[start, end)` for a self-test, with page directories from
/// `DIRECTORIES`.
pub(crate) fn map_for_selftest(start: u64, end: u64) {
    let mut page = || {
        let i = DIRECTORIES_USED.fetch_add(1, Ordering::Relaxed);
        (i < 8).then(|| DIRECTORIES.with(|d| d.0[i].as_mut_ptr() as u64))
    };
    if let Err(e) = guest_rt::paging::map(start, end, &mut page) {
        guest_rt::fatal!(
            guest_rt::fatal::code::PANIC,
            "self-test: cannot map {start:#x}..{end:#x}: {e:?}"
        );
    }
}
