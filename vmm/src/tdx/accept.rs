//! The accept path: `TDG.MEM.PAGE.ACCEPT` (leaf 6) from a vCPU of a running
//! TD, with the TDX module's statuses, and what accepting does to the host
//! (zero and back the page, map it into the guest, keep memslots merged).
//!
//! The operand comes decoded (`tdcall::Tdcall::Accept`); an invalid one
//! (reserved bits 11:3, a level other than 4 KiB or 2 MiB, misaligned, the
//! shared bit or beyond GPAW, not wholly RAM) answers
//! `TDX_OPERAND_INVALID | RCX`. A valid one runs as the TDX module runs it
//! with several vCPUs (`tdg_mem_page_accept`):
//!
//! ```text
//! try-lock the 2 MiB Secure-EPT entry ── held ──> finish: TDX_OPERAND_BUSY | RCX
//!   │ state lock: begin (injected BUSY? the page-state table decides;
//!   │             a page to accept is prepared: room reserved, chunk poisoned)
//!   │   └─ not to be accepted ──> finish in the same acquisition:
//!   │                             TDX_PAGE_ALREADY_ACCEPTED | level, TDX_PAGE_SIZE_MISMATCH | 2M
//!   │ no state lock: fill (zero and back the page; other entries fill in parallel)
//!   └ state lock: finish (commit the state, map, statistics, TDCALL counter,
//!                 trace, invariants), then the entry lock is released
//! ```
//!
//! So an accept takes the state lock twice when it succeeds and once
//! otherwise, and its status is written back to RAX once, by the doorbell.

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::{AcceptOutcome, PageStateTable};
use crate::memory::pending_mechanism::PoisonedChunks;
use crate::memory::private::{MemoryError, PrivateMemory};
use crate::shared::{Shared, TdShared};
use crate::stop::Stop;
use crate::tdx::event::{AcceptPage, Event, Handled};
use abi::tdcall::{leaf, AcceptLevel, Operand, Status};
use std::sync::Arc;
use std::time::Instant;

pub use crate::tdx::counters::AcceptStats;
pub use crate::tdx::event::{AcceptRequest, AcceptResult};

/// The accept state machine alone (no host side effects): applies a
/// decoded request to `pages` and returns the result.
pub fn transition(pages: &mut PageStateTable, req: &AcceptRequest) -> AcceptResult {
    match req.page {
        Ok(page) => result_of(&page, pages.accept(page.first_page(), page.level)),
        Err(why) => AcceptResult::Invalid(why),
    }
}

/// The result an outcome of the page-state table gives `page`.
fn result_of(page: &AcceptPage, outcome: AcceptOutcome) -> AcceptResult {
    let gpa = page.gpa;
    match outcome {
        AcceptOutcome::Accepted => AcceptResult::Accepted {
            gpa,
            level: page.level,
        },
        AcceptOutcome::AlreadyAccepted(level) => AcceptResult::AlreadyAccepted { gpa, level },
        AcceptOutcome::SizeMismatch => AcceptResult::SizeMismatch { gpa },
    }
}

/// Where an accept stands when it takes the state lock to finish.
enum Step {
    /// The entry was busy (held by another vCPU, or an injected BUSY).
    Busy { injected: bool },
    /// Decided without accepting anything (invalid, already accepted,
    /// size mismatch).
    Answered(AcceptResult),
    /// The page is filled (zeroed and backed in `zero_ns`); commit it.
    Filled { page: AcceptPage, zero_ns: u64 },
}

/// What `begin` found under the state lock.
enum Begun {
    /// Finish now, in the same acquisition.
    Finish(Step),
    /// Fill the page outside the state lock (through its poisoned chunk,
    /// if it has one).
    Fill(Option<Arc<PoisonedChunks>>),
}

/// `TDG.MEM.PAGE.ACCEPT` of `req` from vCPU `vcpu` (at `rip`) of a running
/// TD: the whole path of the module docs. Returns the status and the
/// accept's event, or a stop when the host failed (the TD cannot go on).
pub fn accept_on_vcpu<B: SlotBackend>(
    td: &TdShared<B>,
    req: &AcceptRequest,
    vcpu: u32,
    rip: u64,
) -> Handled {
    let started = Instant::now();
    let at = Context {
        req,
        vcpu,
        rip,
        started,
    };
    let page = match req.page {
        Ok(page) => page,
        Err(why) => {
            return finish(
                &mut td.lock(),
                &at,
                Step::Answered(AcceptResult::Invalid(why)),
            )
        }
    };
    let Some(_entry) = td.sept.try_lock(page.entry()) else {
        return finish(&mut td.lock(), &at, Step::Busy { injected: false });
    };
    let poison = {
        let mut s = td.lock();
        match begin(&mut s, &page) {
            Ok(Begun::Finish(step)) => return finish(&mut s, &at, step),
            Ok(Begun::Fill(poison)) => poison,
            Err(e) => return host_failed(&at, e),
        }
    };
    // The entry lock keeps every other accept away from this page, and
    // pending memory is out of the guest's reach (no memslot, or
    // poisoned): nobody else touches these bytes.
    let zero_start = Instant::now();
    if let Err(e) = fill(&td.ram, td.backing, poison.as_deref(), &page) {
        return host_failed(&at, e);
    }
    let zero_ns = elapsed_ns(zero_start);
    finish(&mut td.lock(), &at, Step::Filled { page, zero_ns })
    // `_entry` is released here, after the state is committed.
}

/// The accept being handled, for `finish` and its diagnostics.
struct Context<'a> {
    req: &'a AcceptRequest,
    vcpu: u32,
    rip: u64,
    started: Instant,
}

/// Under the state lock, with the entry lock held: an injected BUSY, or
/// the page-state table's decision; a page to be accepted is prepared
/// (room for its 4 KiB states, its chunk poisoned with `uffd-poison`).
fn begin<B: SlotBackend>(s: &mut Shared<B>, page: &AcceptPage) -> Result<Begun, MemoryError> {
    if s.tdx.inject.as_mut().is_some_and(|i| i.busy()) {
        return Ok(Begun::Finish(Step::Busy { injected: true }));
    }
    match s.memory.pages().decide(page.first_page(), page.level) {
        AcceptOutcome::Accepted => {}
        refused => return Ok(Begun::Finish(Step::Answered(result_of(page, refused)))),
    }
    let poison = s.memory.prepare_accept(page.offset, page.level)?;
    Ok(Begun::Fill(poison))
}

/// Zeroes and backs `page` (outside the state lock).
fn fill(
    ram: &GuestRam,
    backing: Backing,
    poison: Option<&PoisonedChunks>,
    page: &AcceptPage,
) -> Result<(), MemoryError> {
    crate::memory::accept_host::fill_accepted(ram, backing, poison, page.offset, page.level)
}

/// Records a filled page accepted and maps it. The entry lock was held
/// since `begin` decided, so the table must still agree.
fn commit<B: SlotBackend>(
    mem: &mut PrivateMemory<B>,
    page: &AcceptPage,
) -> Result<AcceptResult, String> {
    // A page the guest made shared and now accepts without a MapGPA back:
    // the host converts it to private first, as QEMU does on KVM's memory
    // fault for a private access to a shared GPA, so no GPA is both
    // accepted and shared (done here, under the state lock, so a MapGPA
    // racing with the accept cannot leave it shared).
    mem.convert_to_private(page.gpa, page.level.size())
        .map_err(|e| format!("converting GPA {:#x} back to private failed: {e}", page.gpa))?;
    match mem.pages_mut().accept(page.first_page(), page.level) {
        AcceptOutcome::Accepted => {}
        other => {
            return Err(format!(
                "the state of GPA {:#x} changed while its Secure-EPT entry was locked ({other:?})",
                page.gpa
            ))
        }
    }
    mem.map_accepted(page.gpa, page.offset, page.level)
        .map_err(|e| format!("mapping accepted GPA {:#x} failed: {e}", page.gpa))?;
    mem.forget_removed(page.gpa, page.level.size());
    Ok(AcceptResult::Accepted {
        gpa: page.gpa,
        level: page.level,
    })
}

/// Counts an answered accept in the statistics.
fn count(stats: &mut AcceptStats, result: AcceptResult) {
    match result {
        AcceptResult::Invalid(_) => stats.invalid += 1,
        AcceptResult::AlreadyAccepted { .. } => stats.already_accepted += 1,
        AcceptResult::SizeMismatch { .. } => stats.size_mismatch += 1,
        AcceptResult::Accepted { level, .. } => {
            match level {
                AcceptLevel::L4K => stats.ok_4k += 1,
                AcceptLevel::L2M => stats.ok_2m += 1,
            }
            stats.bytes_accepted += level.size();
        }
    }
}

/// The host could not back or map the page: the TD stops.
fn host_failed(at: &Context<'_>, e: impl std::fmt::Display) -> Handled {
    Handled::stop(Stop::error(
        format!("host failed to accept operand {:#x}: {e}", at.req.rcx),
        Some(at.rip),
    ))
}

fn elapsed_ns(since: Instant) -> u64 {
    crate::host::clock::ns_since(since)
}

/// Accepts `req` with nothing else running (tests' setup): the same
/// decision, fill and commit as a vCPU's accept, without locks, trace or
/// statistics.
#[cfg(test)]
pub(crate) fn accept_alone<B: SlotBackend>(
    mem: &mut PrivateMemory<B>,
    req: &AcceptRequest,
) -> Result<AcceptResult, String> {
    let page = match req.page {
        Ok(page) => page,
        Err(why) => return Ok(AcceptResult::Invalid(why)),
    };
    match mem.pages().decide(page.first_page(), page.level) {
        AcceptOutcome::Accepted => {}
        refused => return Ok(result_of(&page, refused)),
    }
    let poison = mem
        .prepare_accept(page.offset, page.level)
        .map_err(|e| e.to_string())?;
    fill(mem.ram(), mem.backing(), poison.as_deref(), &page).map_err(|e| e.to_string())?;
    commit(mem, &page)
}

/// The one state-lock acquisition that ends an accept: commit a filled
/// page, the statistics and the handling time, the TDCALL counter, the
/// trace, and the invariant checks; the entry lock is still held.
fn finish<B: SlotBackend>(s: &mut Shared<B>, at: &Context<'_>, step: Step) -> Handled {
    let req = at.req;
    s.tdx.counters.leaf(leaf::MEM_PAGE_ACCEPT);
    let stats = &mut s.tdx.stats;
    stats.calls += 1;
    let (status, result, zero_ns) = match step {
        Step::Busy { injected } => {
            if injected {
                stats.busy_injected += 1;
            } else {
                stats.busy += 1;
            }
            log::trace!(
                "accept {:#x}: TDX_OPERAND_BUSY ({})",
                req.rcx,
                if injected {
                    "injected"
                } else {
                    "entry held by another vCPU"
                }
            );
            (Status::OperandBusy(Operand::Rcx), None, 0)
        }
        Step::Answered(result) => (result.status(), Some(result), 0),
        Step::Filled { page, zero_ns } => match commit(&mut s.memory, &page) {
            Ok(result) => (Status::Success, Some(result), zero_ns),
            Err(e) => return host_failed(at, e),
        },
    };
    let stats = &mut s.tdx.stats;
    if let Some(r) = result {
        count(stats, r);
    }
    stats.zero_ns += zero_ns;
    let ns = elapsed_ns(at.started).saturating_sub(zero_ns).max(1);
    stats.handle_ns += ns;
    s.tdx.hist.record(ns);
    match result {
        Some(AcceptResult::Invalid(why)) => log::debug!("accept {:#x}: invalid ({why:?})", req.rcx),
        Some(r) => log::trace!("accept {:#x}: {r:?}", req.rcx),
        None => {}
    }
    s.log.accept(req, status.raw(), result, at.vcpu);
    let checked = match result {
        Some(AcceptResult::Accepted { gpa, level }) => s.check_invariants(gpa, level.size(), true),
        Some(AcceptResult::AlreadyAccepted { gpa, .. } | AcceptResult::SizeMismatch { gpa }) => {
            s.check_invariants(gpa, abi::PAGE_4K, false)
        }
        _ => Ok(()),
    };
    // A host that removes pages (`--inject remove=Q[,delay=D]`) takes one
    // page of a successful accept back, at once or D accepts later: with
    // SEPT_VE_DISABLE the guest's next access to it stops the TD.
    if let (Ok(()), Some(AcceptResult::Accepted { gpa, level })) = (&checked, result) {
        let removals = s
            .tdx
            .inject
            .as_mut()
            .map(|i| i.removals_after_accept(gpa, level.size()))
            .unwrap_or_default();
        for page in removals {
            if let Err(e) = s.memory.remove_by_host(page) {
                return host_failed(at, e);
            }
        }
    }
    let event = Event::Accept {
        req: *req,
        status,
        result,
    };
    match checked {
        Ok(()) => Handled {
            status,
            event: Some(event),
            stop: None,
        },
        Err(e) => Handled::stop(Stop::error(
            format!(
                "after accept {:#x}: private-memory invariant broken: {e}",
                req.rcx
            ),
            Some(at.rip),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::module::TdxModule;
    use abi::tdcall::accept::encode;
    use abi::tdcall::SeptLevel;
    use abi::tdcall::{status, PageLevel};
    use abi::GIB;
    use abi::PAGE_4K;
    use models::accept::{Expect, Model};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The VMM's private memory (accepts, MapGPA to shared and back,
        /// a host's removals) against the reference model that knows
        /// shared, removed and re-accepted pages: the same statuses, the
        /// same accepted, shared and removed pages, re-accepts counted
        /// alike, and the invariants (never accepted and shared at once;
        /// every shared page in its alias's memslot) after every step.
        #[test]
        fn accepts_conversions_and_removals_follow_the_reference_model(
            ops in proptest::collection::vec((0u8..12, 0u64..2048, 1u64..600), 1..200),
        ) {
            use crate::memory::guest_ram::Backing;
            use crate::memory::memslots::NoKvm;
            let layout = crate::memory::layout::checked(6 * GIB, 48).unwrap();
            let mut mem = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
            let base = 4 * GIB;
            let window = 8 << 20;
            let mut model = Model::new(layout, base, window).unwrap();
            for (kind, page, len) in ops {
                let gpa = base + page * PAGE_4K;
                let len = (len * PAGE_4K).min(base + window - gpa);
                match kind {
                    0..=4 => {
                        let rcx = if kind < 3 {
                            encode(gpa, PageLevel::L4K)
                        } else {
                            encode(gpa & !(abi::PAGE_2M - 1), PageLevel::L2M)
                        };
                        let want = model.accept(rcx);
                        let got = accept_alone(&mut mem, &AcceptRequest::decode(&layout, rcx)).unwrap();
                        prop_assert_eq!(Expect::Status(got.status().raw()), want, "accept {:#x}", rcx);
                    }
                    5..=7 => {
                        // MapGPA to shared: a sub-range, or whole 2 MiB units.
                        let (g, l) = if kind == 7 {
                            (gpa & !(abi::PAGE_2M - 1), abi::PAGE_2M)
                        } else {
                            (gpa, len)
                        };
                        mem.convert_to_shared(g, l).unwrap();
                        model.to_shared(g, l);
                    }
                    8 | 9 => {
                        mem.convert_to_private(gpa, len).unwrap();
                        model.to_private(gpa, len);
                    }
                    _ => {
                        mem.remove_by_host(gpa).unwrap();
                        model.remove(gpa);
                    }
                }
                crate::memory::invariants::check_range(&mem, base, window).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            for p in 0..window / PAGE_4K {
                let g = base + p * PAGE_4K;
                prop_assert_eq!(mem.classify(g) == crate::memory::private::GpaKind::Accepted, model.is_accepted(g), "accepted {:#x}", g);
                prop_assert_eq!(mem.shared().contains(g, PAGE_4K), model.is_shared(g), "shared {:#x}", g);
                prop_assert_eq!(mem.removed_by_host(g), model.is_removed(g), "removed {:#x}", g);
            }
            prop_assert_eq!(mem.removed_pages_reaccepted(), model.reaccepted_pages());
        }
    }

    proptest! {
        /// The VMM's accept state machine (decode, page-state table, status)
        /// gives exactly the statuses of the reference model, for requests
        /// inside a 16 MiB window at 4 GiB and malformed ones anywhere.
        #[test]
        fn accepts_follow_the_reference_model(
            ops in proptest::collection::vec((0u8..10, 0u64..4096, any::<u64>()), 1..400),
            leaves_4k in any::<bool>(),
        ) {
            let layout = crate::memory::layout::checked(6 * GIB, 48).unwrap();
            let mut pages = PageStateTable::new(layout.mem_bytes() / PAGE_4K);
            let sept = if leaves_4k { SeptLevel::L4K } else { SeptLevel::L2M };
            pages.set_sept_level(sept);
            let base = 4 * GIB;
            let mut model = Model::with_sept_level(layout, base, 16 << 20, sept).unwrap();
            for (kind, page, word) in ops {
                let gpa = base + page * PAGE_4K;
                let rcx = match kind {
                    0..=4 => encode(gpa, PageLevel::L4K),
                    5..=7 => encode(gpa & !(abi::PAGE_2M - 1), PageLevel::L2M),
                    8 => encode(gpa, PageLevel::L2M) | (word & 0xfff),
                    _ => word,
                };
                let want = match model.accept(rcx) {
                    Expect::Status(s) => s,
                    Expect::Unknown => continue,
                };
                let got = transition(&mut pages, &AcceptRequest::decode(&layout, rcx));
                prop_assert_eq!(got.status().raw(), want, "rcx {:#x}", rcx);
            }
            // Same accepted pages in the window.
            let first = layout.ram_offset(base, 1).unwrap() / PAGE_4K;
            for p in 0..4096 {
                let accepted = pages.state(first + p) == crate::memory::page_state::PageState::Accepted;
                prop_assert_eq!(accepted, model.is_accepted(base + p * PAGE_4K));
            }
        }
    }

    fn shared_td(vcpus: u32) -> crate::shared::TdShared<crate::memory::memslots::NoKvm> {
        use crate::memory::guest_ram::Backing;
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let memory = PrivateMemory::with_backend(
            crate::memory::memslots::NoKvm,
            layout,
            Backing::Populate,
            4096,
        )
        .unwrap();
        let state = crate::shared::Shared {
            memory,
            tdx: TdxModule::new(48, vcpus, None),
            console: crate::host::console::Console::new(false),
            log: crate::report::run_log::RunLog::new(Instant::now(), None),
            invariant_checks: None,
            lock_acquisitions: 0,
        };
        let board = std::sync::Arc::new(crate::vcpu::stop_board::StopBoard::new(vcpus));
        crate::shared::TdShared::new(state, board).unwrap()
    }

    fn status_of(h: &Handled) -> u64 {
        match h.event {
            Some(Event::Accept { status, .. }) => {
                assert_eq!(status, h.status, "the event's status is the answer");
                status.raw()
            }
            _ => panic!("not an accept answer: {h:?}"),
        }
    }

    #[test]
    fn a_held_entry_answers_busy_and_changes_nothing() {
        let td = shared_td(2);
        let gpa = 4 * GIB + 6 * abi::PAGE_2M;
        let offset = td.layout.ram_offset(gpa, 1).unwrap();
        let held = td.sept.try_lock(offset / abi::PAGE_2M).unwrap();
        for rcx in [
            encode(gpa, PageLevel::L2M),
            encode(gpa + 5 * PAGE_4K, PageLevel::L4K),
        ] {
            let req = AcceptRequest::decode(&td.layout, rcx);
            let h = accept_on_vcpu(&td, &req, 0, 0);
            assert_eq!(status_of(&h), status::OPERAND_BUSY | status::OPERAND_RCX);
        }
        // Another entry is not held.
        let other = AcceptRequest::decode(&td.layout, encode(gpa + abi::PAGE_2M, PageLevel::L2M));
        assert_eq!(
            status_of(&accept_on_vcpu(&td, &other, 0, 0)),
            status::SUCCESS
        );
        {
            let s = td.lock();
            assert_eq!(
                s.memory.pages().state(offset / PAGE_4K),
                crate::memory::page_state::PageState::Pending
            );
            assert_eq!((s.tdx.stats.busy, s.tdx.stats.ok_2m), (2, 1));
        }
        drop(held);
        let req = AcceptRequest::decode(&td.layout, encode(gpa, PageLevel::L2M));
        assert_eq!(status_of(&accept_on_vcpu(&td, &req, 0, 0)), status::SUCCESS);
        assert_eq!(
            status_of(&accept_on_vcpu(&td, &req, 0, 0)),
            status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64
        );
        assert!(
            !td.sept.is_locked(offset / abi::PAGE_2M),
            "the entry lock leaked"
        );
    }

    #[test]
    fn vcpus_racing_on_shared_entries_accept_each_page_exactly_once() {
        use crate::memory::page_state::PageState;
        use std::sync::atomic::{AtomicU64, Ordering};
        const ENTRIES: u64 = 48;
        let td = shared_td(4);
        let base = 4 * GIB;
        let busy_seen = AtomicU64::new(0);
        let successes = AtomicU64::new(0);
        let accepted_bytes = AtomicU64::new(0);
        std::thread::scope(|s| {
            for v in 0..4u64 {
                let (td, busy_seen, successes, accepted_bytes) =
                    (&td, &busy_seen, &successes, &accepted_bytes);
                s.spawn(move || {
                    let mut rng = v * 0x9e37_79b9 + 1;
                    for round in 0..6 * ENTRIES {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let entry = (round + v) % ENTRIES;
                        let gpa = base + entry * abi::PAGE_2M;
                        let (rcx, level) = if rng % 3 == 0 {
                            let page = gpa + (rng >> 8) % 512 * PAGE_4K;
                            (encode(page, PageLevel::L4K), PageLevel::L4K)
                        } else {
                            (encode(gpa, PageLevel::L2M), PageLevel::L2M)
                        };
                        let req = AcceptRequest::decode(&td.layout, rcx);
                        let st = status_of(&accept_on_vcpu(td, &req, 0, 0));
                        match st {
                            status::SUCCESS => {
                                successes.fetch_add(1, Ordering::Relaxed);
                                accepted_bytes.fetch_add(level.size(), Ordering::Relaxed);
                            }
                            s if s == status::OPERAND_BUSY | status::OPERAND_RCX => {
                                busy_seen.fetch_add(1, Ordering::Relaxed);
                            }
                            s if s == status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64
                                || s == status::PAGE_ALREADY_ACCEPTED | PageLevel::L4K as u64
                                || s == status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64 => {}
                            other => panic!("vCPU {v}: status {other:#x} for rcx {rcx:#x}"),
                        }
                    }
                });
            }
        });
        let s = td.lock();
        let stats = s.tdx.stats;
        assert_eq!(stats.busy, busy_seen.load(Ordering::Relaxed));
        assert_eq!(stats.ok_2m + stats.ok_4k, successes.load(Ordering::Relaxed));
        assert_eq!(stats.bytes_accepted, accepted_bytes.load(Ordering::Relaxed));
        assert_eq!(stats.calls, 4 * 6 * ENTRIES);
        // Every page accepted once: the table's count is the bytes the
        // successes claimed, and every accepted page reads zero.
        assert_eq!(
            s.memory.pages().accepted_pages() * PAGE_4K,
            stats.bytes_accepted
        );
        crate::memory::invariants::check_all(&s.memory).unwrap();
        let first = td.layout.ram_offset(base, 1).unwrap() / PAGE_4K;
        for p in first..first + ENTRIES * 512 {
            if s.memory.pages().state(p) == PageState::Accepted {
                let mut b = [1u8; 8];
                assert!(s.memory.read_accepted(base + (p - first) * PAGE_4K, &mut b));
                assert_eq!(b, [0; 8]);
            }
        }
        for e in 0..td.layout.mem_bytes() / abi::PAGE_2M {
            assert!(!td.sept.is_locked(e), "entry {e} still locked");
        }
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = crate::tdx::counters::HandleHistogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for ns in 1..=100u64 {
            h.record(ns * 1000);
        }
        assert_eq!(h.quantile(0.5), 50_100);
        assert_eq!(h.quantile(0.99), 99_100);
        h.record(10_000_000);
        assert_eq!(h.quantile(1.0), 200_100);
    }
}
