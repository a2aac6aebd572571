//! The private-memory invariants, checked after every accept and every
//! first-touch mapping when enabled (`--check-invariants`; always on in
//! debug builds, so in the integration tests), and over all memory at the
//! end of a run:
//! - every memslot exposes only accepted pages (or, with `uffd-poison`,
//!   pending pages of a chunk whose pending pages are all poisoned), at
//!   the host address of its own RAM offset, and no two slots overlap;
//! - the per-GiB accepted counts add up to the table's total and to the
//!   counts of the chunks they hold;
//! - a page accepted just now reads zero on the host;
//! - a shared range (MapGPA) has no accepted private page, is in memslots
//!   at `gpa | shared bit` over its shared mirror, and every memslot above
//!   the shared bit exposes only shared ranges.

use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::{PageState, PAGES_PER_CHUNK, PAGES_PER_GIB};
use crate::memory::private::PrivateMemory;
use abi::PAGE_4K;
use thiserror::Error;

/// A broken invariant: a VMM bug, reported with the exact place.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvariantError {
    #[error("memslot at gpa {slot_gpa:#x} exposes pending page {gpa:#x}")]
    SlotOverPending { slot_gpa: u64, gpa: u64 },
    #[error("memslot at gpa {gpa:#x} (+{size:#x}) is not RAM")]
    SlotNotRam { gpa: u64, size: u64 },
    #[error("memslot at gpa {gpa:#x} maps host {host:#x}, its RAM is at host {want:#x}")]
    SlotHost { gpa: u64, host: u64, want: u64 },
    #[error("memslots at gpa {a:#x} and {b:#x} overlap")]
    SlotOverlap { a: u64, b: u64 },
    #[error("1 GiB block {gib}: {counted} accepted pages counted, its chunks hold {actual}")]
    GibCount { gib: u64, counted: u64, actual: u64 },
    #[error("{counted} accepted pages counted in total, the 1 GiB blocks hold {actual}")]
    TotalCount { counted: u64, actual: u64 },
    #[error("page {gpa:#x} was just accepted but reads {value:#x} on the host")]
    NotZero { gpa: u64, value: u64 },
    #[error("memslot at gpa {gpa:#x} (+{size:#x}) is above the shared bit but not shared memory")]
    SlotNotShared { gpa: u64, size: u64 },
    #[error("page {gpa:#x} is both shared and accepted private")]
    SharedAccepted { gpa: u64 },
    #[error("shared page {gpa:#x} has no memslot at its shared alias")]
    SharedUnmapped { gpa: u64 },
}

/// Checks the slots overlapping `[gpa, gpa + len)` (only their part inside
/// it), the counts of the 1 GiB block(s) it touches and the table total.
pub fn check_range(
    mem: &PrivateMemory<impl SlotBackend>,
    gpa: u64,
    len: u64,
) -> Result<(), InvariantError> {
    let end = gpa.saturating_add(len);
    let shared_bit = mem.layout().shared_bit();
    let mut prev_end = 0;
    let mut prev_gpa = 0;
    for (slot_gpa, slot) in mem.slots().slots() {
        let slot_end = slot_gpa + slot.size;
        if slot_gpa < prev_end {
            return Err(InvariantError::SlotOverlap {
                a: prev_gpa,
                b: slot_gpa,
            });
        }
        (prev_gpa, prev_end) = (slot_gpa, slot_end);
        if slot_gpa >= shared_bit {
            check_shared_slot(mem, slot_gpa, slot.size, slot.host)?;
            continue;
        }
        if slot_end <= gpa || slot_gpa >= end {
            continue;
        }
        check_slot(
            mem,
            slot_gpa,
            slot.size,
            slot.host,
            gpa.max(slot_gpa),
            end.min(slot_end),
        )?;
    }
    check_shared(mem, gpa & !shared_bit, end)?;
    let layout = mem.layout();
    for g in [gpa, end.saturating_sub(1)] {
        if let Some(offset) = layout.ram_offset(g, 1) {
            check_gib(mem, offset / PAGE_4K / PAGES_PER_GIB)?;
        }
    }
    check_total(mem)
}

/// Checks everything: all slots in full and every 1 GiB block.
pub fn check_all(mem: &PrivateMemory<impl SlotBackend>) -> Result<(), InvariantError> {
    check_range(mem, 0, u64::MAX)?;
    let gibs = mem.pages().pages().div_ceil(PAGES_PER_GIB);
    for gib in 0..gibs {
        check_gib(mem, gib)?;
    }
    Ok(())
}

/// Checks that `[gpa, gpa + len)`, accepted just now, reads zero.
pub fn check_zeroed(
    mem: &PrivateMemory<impl SlotBackend>,
    gpa: u64,
    len: u64,
) -> Result<(), InvariantError> {
    let Some(offset) = mem.layout().ram_offset(gpa, len) else {
        return Ok(());
    };
    let mut buf = [0u8; 4096];
    let mut at = 0;
    while at < len {
        let n = abi::to_usize((len - at).min(buf.len() as u64));
        mem.ram().read(offset + at, &mut buf[..n]);
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            let word = (i & !7).min(n.saturating_sub(8));
            let value = u64::from_le_bytes(buf[word..word + 8].try_into().unwrap_or_default());
            return Err(InvariantError::NotZero {
                gpa: gpa + at + word as u64,
                value,
            });
        }
        at += n as u64;
    }
    Ok(())
}

fn check_slot(
    mem: &PrivateMemory<impl SlotBackend>,
    slot_gpa: u64,
    size: u64,
    host: u64,
    from: u64,
    to: u64,
) -> Result<(), InvariantError> {
    let layout = mem.layout();
    let Some(offset) = layout.ram_offset(slot_gpa, size) else {
        return Err(InvariantError::SlotNotRam {
            gpa: slot_gpa,
            size,
        });
    };
    let want = mem.ram().host_addr(offset);
    if host != want {
        return Err(InvariantError::SlotHost {
            gpa: slot_gpa,
            host,
            want,
        });
    }
    let first = (offset + (from - slot_gpa)) / PAGE_4K;
    let last = (offset + (to - slot_gpa)).div_ceil(PAGE_4K);
    let pages = mem.pages();
    let mut page = first;
    while page < last {
        // A whole chunk of 512 accepted pages is checked in one step.
        let chunk = page / PAGES_PER_CHUNK;
        // So is a chunk whose pending pages are poisoned (`uffd-poison`):
        // a slot may cover them, an access still stops.
        if page.is_multiple_of(PAGES_PER_CHUNK)
            && (pages.chunk_full(chunk) || mem.chunk_poisoned(chunk))
        {
            page += PAGES_PER_CHUNK;
            continue;
        }
        if mem.chunk_poisoned(chunk) {
            page += 1;
            continue;
        }
        if pages.state(page) != PageState::Accepted {
            return Err(InvariantError::SlotOverPending {
                slot_gpa,
                gpa: slot_gpa + (page * PAGE_4K - offset),
            });
        }
        page += 1;
    }
    Ok(())
}

/// A memslot above the shared bit: shared memory only, at its mirror's
/// host address.
fn check_shared_slot(
    mem: &PrivateMemory<impl SlotBackend>,
    slot_gpa: u64,
    size: u64,
    host: u64,
) -> Result<(), InvariantError> {
    let gpa = slot_gpa & !mem.layout().shared_bit();
    let offset = mem.layout().ram_offset(gpa, size);
    let (Some(offset), true) = (offset, mem.shared().contains(gpa, size)) else {
        return Err(InvariantError::SlotNotShared {
            gpa: slot_gpa,
            size,
        });
    };
    let want = mem.shared().host_addr(offset).unwrap_or(0);
    if host != want {
        return Err(InvariantError::SlotHost {
            gpa: slot_gpa,
            host,
            want,
        });
    }
    Ok(())
}

/// The shared ranges that meet `[gpa, end)` (private GPAs): no page both
/// shared and accepted, every page in a memslot at its shared alias.
fn check_shared(
    mem: &PrivateMemory<impl SlotBackend>,
    gpa: u64,
    end: u64,
) -> Result<(), InvariantError> {
    let shared_bit = mem.layout().shared_bit();
    for (s, e) in mem.shared().ranges() {
        let (from, to) = (s.max(gpa), e.min(end));
        if from >= to {
            continue;
        }
        let Some(offset) = mem.layout().ram_offset(from, to - from) else {
            return Err(InvariantError::SlotNotRam {
                gpa: from,
                size: to - from,
            });
        };
        let first = offset / PAGE_4K;
        for (i, page) in (first..first + (to - from) / PAGE_4K).enumerate() {
            let at = from + i as u64 * PAGE_4K;
            if mem.pages().state(page) == PageState::Accepted {
                return Err(InvariantError::SharedAccepted { gpa: at });
            }
            if !mem.slots().covers(at | shared_bit) {
                return Err(InvariantError::SharedUnmapped { gpa: at });
            }
        }
    }
    Ok(())
}

fn check_gib(mem: &PrivateMemory<impl SlotBackend>, gib: u64) -> Result<(), InvariantError> {
    let pages = mem.pages();
    let first = gib * PAGES_PER_GIB / PAGES_PER_CHUNK;
    let chunks = pages.gib_pages(gib).div_ceil(PAGES_PER_CHUNK);
    let actual: u64 = (first..first + chunks)
        .map(|c| pages.chunk_accepted(c))
        .sum();
    let counted = pages.gib_accepted(gib);
    if counted != actual {
        return Err(InvariantError::GibCount {
            gib,
            counted,
            actual,
        });
    }
    Ok(())
}

fn check_total(mem: &PrivateMemory<impl SlotBackend>) -> Result<(), InvariantError> {
    let pages = mem.pages();
    let gibs = pages.pages().div_ceil(PAGES_PER_GIB);
    let actual: u64 = (0..gibs).map(|g| pages.gib_accepted(g)).sum();
    if actual != pages.accepted_pages() {
        return Err(InvariantError::TotalCount {
            counted: pages.accepted_pages(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::guest_ram::Backing;
    use crate::memory::memslots::NoKvm;
    use crate::memory::pending_mechanism::PoisonedChunks;
    use crate::tdx::accept::{accept_alone, AcceptRequest, AcceptResult};
    use abi::tdcall::{accept::encode, PageLevel};
    use proptest::prelude::*;

    const MEM: u64 = 64 << 20;

    /// 64 MiB of RAM, slots installed at accept, with `uffd-poison` when
    /// asked (`None` when this host has no UFFDIO_POISON).
    fn memory(poison: bool) -> Option<PrivateMemory<NoKvm>> {
        memory_backed(poison, Backing::Populate)
    }

    fn memory_backed(poison: bool, backing: Backing) -> Option<PrivateMemory<NoKvm>> {
        let layout = crate::memory::layout::checked(MEM, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, backing, 4096).unwrap();
        if poison {
            match PoisonedChunks::open(MEM / abi::PAGE_2M) {
                Ok(p) => m.use_poison(p),
                Err(e) => {
                    eprintln!("SKIPPED uffd-poison case: {e}");
                    return None;
                }
            }
        }
        Some(m)
    }

    fn do_accept(m: &mut PrivateMemory<NoKvm>, gpa: u64, level: PageLevel) -> AcceptResult {
        let req = AcceptRequest::decode(m.layout(), encode(gpa, level));
        accept_alone(m, &req).unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Accept4K(u64),
        Accept2M(u64),
        Release(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let pages = MEM / PAGE_4K;
        prop_oneof![
            3 => (0..pages).prop_map(Op::Accept4K),
            1 => (0..MEM / abi::PAGE_2M).prop_map(Op::Accept2M),
            2 => (0..pages, 1u64..700).prop_map(move |(p, n)| Op::Release(p, n.min(pages - p))),
        ]
    }

    /// Accepts and releases in any order, with either mechanism: the
    /// invariants hold after every step (no slot exposes a pending page
    /// unless its chunk is poisoned), released pages leave every slot or
    /// are poisoned, and a page accepted again reads zero whatever was
    /// written there before its release.
    fn accept_release_run(poison: bool, backing: Backing, ops: &[Op]) -> Result<(), TestCaseError> {
        let Some(mut m) = memory_backed(poison, backing) else {
            return Ok(());
        };
        for op in ops {
            match *op {
                Op::Accept4K(p) | Op::Accept2M(p) => {
                    let (gpa, level) = match op {
                        Op::Accept4K(_) => (p * PAGE_4K, PageLevel::L4K),
                        _ => (p * abi::PAGE_2M, PageLevel::L2M),
                    };
                    if let AcceptResult::Accepted { .. } = do_accept(&mut m, gpa, level) {
                        prop_assert_eq!(check_zeroed(&m, gpa, level.size()), Ok(()));
                        // Leave a mark a later release must wipe.
                        prop_assert!(m.write_accepted(gpa + level.size() - 8, &[0xa5; 8]));
                    }
                }
                Op::Release(p, n) => {
                    let before = m.pages().accepted_pages();
                    let released = m.release(p * PAGE_4K, n * PAGE_4K).unwrap();
                    prop_assert_eq!(m.pages().accepted_pages(), before - released);
                    for q in p..p + n {
                        prop_assert_eq!(m.pages().state(q), PageState::Pending);
                        let covered = m.slots().covers(q * PAGE_4K);
                        prop_assert!(!covered || m.chunk_poisoned(q / PAGES_PER_CHUNK));
                    }
                }
            }
            prop_assert_eq!(check_all(&m), Ok(()));
            // Every accepted page of a poisoned chunk has a host page (an
            // empty one would be a missing-page fault: SIGBUS here).
            for chunk in 0..MEM / abi::PAGE_2M {
                if !m.chunk_poisoned(chunk) {
                    continue;
                }
                for p in chunk * PAGES_PER_CHUNK..(chunk + 1) * PAGES_PER_CHUNK {
                    if m.pages().state(p) == PageState::Accepted {
                        let mut word = [0u8; 8];
                        m.ram().read(p * PAGE_4K, &mut word);
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn accept_and_release_keep_the_invariants_with_memslots(ops in proptest::collection::vec(op(), 1..40)) {
            accept_release_run(false, Backing::Populate, &ops)?;
        }

        #[test]
        fn accept_and_release_keep_the_invariants_with_uffd_poison(ops in proptest::collection::vec(op(), 1..40)) {
            accept_release_run(true, Backing::Populate, &ops)?;
        }

        /// With host pages only at first touch, accepted pages of a chunk
        /// may be empty when a 4 KiB accept registers it: registration
        /// populates them (an empty page there would be a fault nobody
        /// handles, and the zero checks here would die of it).
        #[test]
        fn accept_and_release_keep_the_invariants_with_uffd_poison_on_touch(ops in proptest::collection::vec(op(), 1..40)) {
            accept_release_run(true, Backing::OnTouch, &ops)?;
        }
    }

    /// `--backing on-touch`: a chunk accepted at 2 MiB has no host pages;
    /// a release and a 4 KiB accept there register it, and registration
    /// must populate its accepted pages (an empty one would be a
    /// missing-page fault nobody handles: reading it here would die).
    #[test]
    fn registering_a_chunk_populates_its_accepted_pages() {
        let Some(mut m) = memory_backed(true, Backing::OnTouch) else {
            return;
        };
        let chunk = 4 * abi::PAGE_2M;
        assert!(matches!(
            do_accept(&mut m, chunk, PageLevel::L2M),
            AcceptResult::Accepted { .. }
        ));
        assert_eq!(m.release(chunk + PAGE_4K, PAGE_4K).unwrap(), 1);
        assert!(matches!(
            do_accept(&mut m, chunk + PAGE_4K, PageLevel::L4K),
            AcceptResult::Accepted { .. }
        ));
        assert!(m.chunk_poisoned(4));
        assert_eq!(check_zeroed(&m, chunk, abi::PAGE_2M), Ok(()));
        assert_eq!(check_all(&m), Ok(()));
    }

    #[test]
    fn release_frees_host_memory_and_the_next_access_stops() {
        for poison in [false, true] {
            let Some(mut m) = memory(poison) else {
                continue;
            };
            let chunk = 4 * abi::PAGE_2M;
            assert!(matches!(
                do_accept(&mut m, chunk, PageLevel::L2M),
                AcceptResult::Accepted { .. }
            ));
            assert!(m.write_accepted(chunk + 0x3000, &[7; 8]));
            let rss = m.ram().resident_bytes().unwrap();
            assert_eq!(m.release(chunk + 0x3000, 2 * PAGE_4K).unwrap(), 2);
            assert!(m.ram().resident_bytes().unwrap() < rss, "poison {poison}");
            // The guest's next access stops: no slot there, or a poisoned
            // page inside the chunk's slot.
            assert_eq!(
                m.classify(chunk + 0x3008),
                crate::memory::private::GpaKind::Pending
            );
            // A chunk that is not poisoned (accepted at 2 MiB) loses the
            // slot there, with either mechanism.
            assert!(!m.slots().covers(chunk + 0x3000));
            assert!(!m.chunk_poisoned(4));
            if poison {
                // In a poisoned chunk (a 4 KiB accept made it one) the
                // released page is poisoned again inside the chunk's slot.
                let other = 6 * abi::PAGE_2M;
                for page in [other, other + PAGE_4K] {
                    assert!(matches!(
                        do_accept(&mut m, page, PageLevel::L4K),
                        AcceptResult::Accepted { .. }
                    ));
                }
                assert!(m.write_accepted(other + PAGE_4K, &[9; 8]));
                assert_eq!(m.release(other + PAGE_4K, PAGE_4K).unwrap(), 1);
                assert!(m.chunk_poisoned(6) && m.slots().covers(other + PAGE_4K));
                assert_eq!(
                    m.classify(other + PAGE_4K),
                    crate::memory::private::GpaKind::Pending
                );
                assert!(matches!(
                    do_accept(&mut m, other + PAGE_4K, PageLevel::L4K),
                    AcceptResult::Accepted { .. }
                ));
                assert_eq!(check_zeroed(&m, other + PAGE_4K, PAGE_4K), Ok(()));
            }
            // The pages around it stay accepted and keep their bytes.
            assert_eq!(m.pages().state(chunk / PAGE_4K + 2), PageState::Accepted);
            // Released pages are 4 KiB entries now: the 2 MiB accept sees
            // the split, a 4 KiB accept takes the page back, zeroed.
            assert_eq!(
                do_accept(&mut m, chunk, PageLevel::L2M),
                AcceptResult::SizeMismatch { gpa: chunk }
            );
            assert!(matches!(
                do_accept(&mut m, chunk + 0x3000, PageLevel::L4K),
                AcceptResult::Accepted { .. }
            ));
            assert_eq!(check_zeroed(&m, chunk + 0x3000, PAGE_4K), Ok(()));
            // A whole chunk released is a pending 2 MiB entry again.
            assert_eq!(m.release(chunk, abi::PAGE_2M).unwrap(), 511);
            assert!(matches!(
                do_accept(&mut m, chunk, PageLevel::L2M),
                AcceptResult::Accepted { .. }
            ));
            assert_eq!(check_zeroed(&m, chunk, abi::PAGE_2M), Ok(()));
            assert_eq!(check_all(&m), Ok(()));
            // Not RAM, or not page aligned: refused.
            assert!(m.release(MEM, PAGE_4K).is_err());
            assert!(m.release(chunk + 1, PAGE_4K).is_err());
        }
    }
}
