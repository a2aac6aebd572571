//! The accept path: `TDG.MEM.PAGE.ACCEPT` (leaf 6) with the TDX module's
//! status semantics, and what accepting does to the host (zero and back the
//! range, map it into the guest, keep memslots merged).
//!
//! Checks, in order, each failing with `TDX_OPERAND_INVALID | RCX`:
//! reserved bits 11:3, level (only 4 KiB and 2 MiB; 1 GiB is rejected as TDX
//! module 1.5 does), alignment to the level, the shared bit and any bit at
//! or above GPAW, and the whole page lying in RAM. Then the page-state table
//! decides: success (zeroed, backed, mapped), `TDX_PAGE_ALREADY_ACCEPTED |
//! level` (nothing touched, nothing zeroed), or `TDX_PAGE_SIZE_MISMATCH | 1`.

use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::{AcceptOutcome, PageStateTable};
use crate::memory::private::{MemoryError, PrivateMemory};
use crate::stop::Stop;
use crate::tdx::event::{Event, Handled};
use crate::tdx::module::TdxModule;
use abi::tdcall::{status, PageLevel};
use abi::PAGE_4K;
use std::time::Instant;

pub use crate::tdx::counters::{AcceptStats, HandleHistogram};
pub use crate::tdx::event::{AcceptRequest, AcceptResult};

/// The accept state machine alone (no host side effects): applies a
/// decoded request to `pages` and returns the result.
pub fn transition(pages: &mut PageStateTable, req: &AcceptRequest) -> AcceptResult {
    let (gpa, level, offset) = match req.page {
        Ok(v) => v,
        Err(why) => return AcceptResult::Invalid(why),
    };
    match pages.accept(offset / PAGE_4K, level) {
        AcceptOutcome::AlreadyAccepted(reached) => AcceptResult::AlreadyAccepted {
            gpa,
            level: reached,
        },
        AcceptOutcome::SizeMismatch => AcceptResult::SizeMismatch { gpa },
        AcceptOutcome::Accepted => AcceptResult::Accepted { gpa, level },
    }
}

/// Handles `TDG.MEM.PAGE.ACCEPT`: the state machine, then what accepting
/// does to the host (`PrivateMemory::commit_accept`), with the statistics.
/// `Err` is a VMM-side failure (the host could not back or map memory):
/// the TD must stop. (One vCPU, or a caller holding everything; the
/// vCPUs of a running TD use `accept_on_vcpu`.)
pub fn accept<B: SlotBackend>(
    mem: &mut PrivateMemory<B>,
    req: &AcceptRequest,
    stats: &mut AcceptStats,
    hist: &mut HandleHistogram,
) -> Result<AcceptResult, MemoryError> {
    let started = Instant::now();
    commit(mem, req, stats, hist, started, None)
}

/// The state machine and its host side effects for `req`, with the
/// statistics; `zeroed` is the time already spent zeroing and backing
/// the page outside the lock, if it was.
fn commit<B: SlotBackend>(
    mem: &mut PrivateMemory<B>,
    req: &AcceptRequest,
    stats: &mut AcceptStats,
    hist: &mut HandleHistogram,
    started: Instant,
    zeroed: Option<u64>,
) -> Result<AcceptResult, MemoryError> {
    stats.calls += 1;
    let result = transition(mem.pages_mut(), req);
    let mut zero_ns = 0;
    match result {
        AcceptResult::Invalid(_) => stats.invalid += 1,
        AcceptResult::AlreadyAccepted { .. } => stats.already_accepted += 1,
        AcceptResult::SizeMismatch { .. } => stats.size_mismatch += 1,
        AcceptResult::Accepted { gpa, level } => {
            let offset = req.page.map_or(0, |p| p.2);
            zero_ns = match zeroed {
                Some(ns) => {
                    mem.map_accepted(gpa, offset, level)?;
                    ns
                }
                None => mem.commit_accept(gpa, offset, level)?,
            };
            stats.zero_ns += zero_ns;
            match level {
                PageLevel::L4K => stats.ok_4k += 1,
                _ => stats.ok_2m += 1,
            }
            stats.bytes_accepted += level.size();
        }
    }
    let ns = (started.elapsed().as_nanos() as u64).saturating_sub(zero_ns);
    stats.handle_ns += ns;
    hist.record(ns);
    Ok(result)
}

/// `TDG.MEM.PAGE.ACCEPT` from one vCPU of a running TD, as the TDX module
/// runs it with several vCPUs (`tdg_mem_page_accept`): take the guest-side
/// lock of the 2 MiB Secure-EPT entry, or answer `TDX_OPERAND_BUSY | RCX`
/// with nothing changed; look at the entry (under the TD's state lock);
/// zero and back a page that will be accepted with only the entry lock
/// held, so accepts of different entries zero in parallel; then commit
/// the state and the mapping under the state lock, and release the entry.
pub fn accept_on_vcpu<B: SlotBackend>(
    td: &crate::shared::TdShared<B>,
    req: &AcceptRequest,
    rip: u64,
) -> Handled {
    let started = Instant::now();
    let done = |s: &mut crate::shared::Shared<B>, zeroed| {
        let tdx = &mut s.tdx;
        match commit(
            &mut s.memory,
            req,
            &mut tdx.stats,
            &mut tdx.hist,
            started,
            zeroed,
        ) {
            Ok(result) => answered(req, result),
            Err(e) => host_failed(req, rip, e),
        }
    };
    let Ok((_, level, offset)) = req.page else {
        return done(&mut td.lock(), None);
    };
    let Some(_entry) = td.sept.try_lock(offset / abi::PAGE_2M) else {
        let mut s = td.lock();
        let tdx = &mut s.tdx;
        tdx.stats.calls += 1;
        tdx.stats.busy += 1;
        tdx.hist
            .record((started.elapsed().as_nanos() as u64).max(1));
        log::trace!(
            "accept {:#x}: TDX_OPERAND_BUSY (entry held by another vCPU)",
            req.rcx
        );
        return busy(req);
    };
    let poison = {
        let mut s = td.lock();
        if let Some(h) = injected_busy(&mut s.tdx, req) {
            return h;
        }
        if s.memory.pages().peek_accept(offset / PAGE_4K, level) != AcceptOutcome::Accepted {
            return done(&mut s, None);
        }
        // With `uffd-poison`, a 4 KiB accept poisons its chunk first (once).
        match s.memory.prepare_accept(offset, level) {
            Ok(p) => p,
            Err(e) => return host_failed(req, rip, e),
        }
    };
    // The entry lock keeps every other accept away from this page, and
    // pending memory is out of the guest's reach (no memslot, or
    // poisoned): nobody else touches these bytes.
    let zero_start = Instant::now();
    let filled = match poison {
        Some(p) => p
            .fill(td.ram.host_addr(offset), level.size())
            .map_err(MemoryError::Pending),
        None => td
            .ram
            .zero_and_back(offset, level.size(), td.backing)
            .map_err(MemoryError::Ram),
    };
    if let Err(e) = filled {
        return host_failed(req, rip, e);
    }
    let zero_ns = zero_start.elapsed().as_nanos() as u64;
    let mut s = td.lock();
    done(&mut s, Some(zero_ns))
}

/// The `TDX_OPERAND_BUSY | RCX` answer, nothing changed.
fn busy(req: &AcceptRequest) -> Handled {
    Handled::event(Event::Accept {
        req: *req,
        status: status::OPERAND_BUSY | status::OPERAND_RCX,
        result: None,
    })
}

/// An injected busy answer (`--inject busy=P`), if one is due; only a
/// valid request can meet a busy Secure-EPT entry.
pub(crate) fn injected_busy(tdx: &mut TdxModule, req: &AcceptRequest) -> Option<Handled> {
    if req.page.is_err() || !tdx.inject.as_mut().is_some_and(|i| i.busy()) {
        return None;
    }
    tdx.stats.calls += 1;
    tdx.stats.busy_injected += 1;
    log::trace!("accept {:#x}: TDX_OPERAND_BUSY injected", req.rcx);
    Some(busy(req))
}

/// The event of an answered accept.
pub(crate) fn answered(req: &AcceptRequest, result: AcceptResult) -> Handled {
    if let AcceptResult::Invalid(why) = result {
        log::debug!("accept {:#x}: invalid ({why:?})", req.rcx);
    } else {
        log::trace!("accept {:#x}: {result:?}", req.rcx);
    }
    Handled::event(Event::Accept {
        req: *req,
        status: result.status(),
        result: Some(result),
    })
}

/// The host could not back or map the page: the TD stops.
pub(crate) fn host_failed(req: &AcceptRequest, rip: u64, e: MemoryError) -> Handled {
    Handled::stop(Stop::error(
        format!("host failed to accept operand {:#x}: {e}", req.rcx),
        Some(rip),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::layout::RamLayout;
    use crate::tdx::module::TdxModule;
    use abi::accept_model::{Expect, Model, SeptLevel};
    use abi::tdcall::accept::encode;
    use abi::GIB;
    use proptest::prelude::*;

    proptest! {
        /// The VMM's accept state machine (decode, page-state table, status)
        /// gives exactly the statuses of the reference model, for requests
        /// inside a 16 MiB window at 4 GiB and malformed ones anywhere.
        #[test]
        fn accepts_follow_the_reference_model(
            ops in proptest::collection::vec((0u8..10, 0u64..4096, any::<u64>()), 1..400),
            leaves_4k in any::<bool>(),
        ) {
            let layout = RamLayout::new(6 * GIB, 48).unwrap();
            let mut pages = PageStateTable::new(layout.mem_bytes() / PAGE_4K);
            let sept = if leaves_4k { SeptLevel::L4K } else { SeptLevel::L2M };
            pages.set_sept_level(sept);
            let base = 4 * GIB;
            let mut model = Model::with_sept_level(layout.model(), base, 16 << 20, sept).unwrap();
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
                prop_assert_eq!(got.status(), want, "rcx {:#x}", rcx);
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
        let layout = RamLayout::new(5 * GIB, 48).unwrap();
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
        };
        let board = std::sync::Arc::new(crate::vcpu::stop_board::StopBoard::new(vcpus));
        crate::shared::TdShared::new(state, board).unwrap()
    }

    fn status_of(h: &Handled) -> u64 {
        match h.event {
            Some(Event::Accept { status, .. }) => status,
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
            let h = accept_on_vcpu(&td, &req, 0);
            assert_eq!(status_of(&h), status::OPERAND_BUSY | status::OPERAND_RCX);
        }
        // Another entry is not held.
        let other = AcceptRequest::decode(&td.layout, encode(gpa + abi::PAGE_2M, PageLevel::L2M));
        assert_eq!(status_of(&accept_on_vcpu(&td, &other, 0)), status::SUCCESS);
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
        assert_eq!(status_of(&accept_on_vcpu(&td, &req, 0)), status::SUCCESS);
        assert_eq!(
            status_of(&accept_on_vcpu(&td, &req, 0)),
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
                        let st = status_of(&accept_on_vcpu(td, &req, 0));
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
        let mut h = HandleHistogram::default();
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
