//! The private-memory invariants, checked after every accept and every
//! first-touch mapping when enabled (`--check-invariants`; always on in
//! debug builds, so in the integration tests), and over all memory at the
//! end of a run:
//! - every memslot exposes only accepted pages (or, with `uffd-poison`,
//!   pending pages of a chunk whose pending pages are all poisoned), at
//!   the host address of its own RAM offset, and no two slots overlap;
//! - the per-GiB accepted counts add up to the table's total and to the
//!   counts of the chunks they hold;
//! - a page accepted just now reads zero on the host.

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
}

/// Checks the slots overlapping `[gpa, gpa + len)` (only their part inside
/// it), the counts of the 1 GiB block(s) it touches and the table total.
pub fn check_range(
    mem: &PrivateMemory<impl SlotBackend>,
    gpa: u64,
    len: u64,
) -> Result<(), InvariantError> {
    let end = gpa.saturating_add(len);
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
        let n = (len - at).min(buf.len() as u64) as usize;
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
