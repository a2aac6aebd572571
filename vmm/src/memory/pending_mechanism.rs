//! How pending memory is kept out of the guest's reach.
//!
//! - `memslots`: pending memory has no memslot, so any access exits with
//!   its GPA. Every run the guest accepts in 4 KiB pages costs a memslot
//!   change (or a first-touch exit and one).
//! - `uffd-poison`: a 2 MiB chunk that gets a 4 KiB accept is registered
//!   with userfaultfd, its pending pages are poisoned (`UFFDIO_POISON`),
//!   and one memslot covers the whole chunk. An access to a poisoned page
//!   still stops the vCPU synchronously (pvm-native: `KVM_RUN` EINTR with a
//!   SIGBUS naming the page; ring-0: an MMIO exit), and a 4 KiB accept is
//!   one `UFFDIO_COPY` of zeros, with no memslot change and no first-touch
//!   exit. Chunks accepted whole at 2 MiB keep the THP path of
//!   `memslots`: poisoning costs 0.6 us per page and forbids huge pages.
//!
//! `PoisonedChunks` is the host side of `uffd-poison`: the descriptor,
//! which chunks are registered, and the fill and release operations. The
//! facade (`private.rs`) decides when to use them and keeps the memslots in
//! step. VMM threads never touch a poisoned page (that would be a SIGBUS).

use crate::memory::uffd::{Uffd, UffdError, FEATURE_POISON, FEATURE_SIGBUS};
use abi::PAGE_4K;
use std::sync::atomic::{AtomicU64, Ordering};

abi::named_enum! {
    /// Which mechanism keeps pending memory out of the guest's reach
    /// (`--pending`, and the report, by these names).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum PendingMechanism {
        /// Pending memory has no memslot (every host).
        #[default]
        Memslots => "memslots",
        /// Chunks accepted in 4 KiB pages hold poisoned pending pages inside
        /// one memslot (userfaultfd with `UFFDIO_POISON`, host kernel 6.6+).
        UffdPoison => "uffd-poison",
    }
}

/// Why a chunk could not be registered, filled or released.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error(transparent)]
    Uffd(#[from] UffdError),
    #[error("MADV_DONTNEED of {len:#x} bytes at host address {addr:#x} failed: {err}")]
    Dontneed {
        addr: u64,
        len: u64,
        err: std::io::Error,
    },
    #[error("cannot install the SIGBUS handler for poisoned pages: {0}")]
    Handler(std::io::Error),
    #[error("cannot map the {len:#x}-byte zero source for UFFDIO_COPY: {err}")]
    ZeroSource { len: u64, err: std::io::Error },
}

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoisonStats {
    /// Chunks registered with userfaultfd.
    pub chunks: u64,
    /// Pages poisoned (at registration and at release).
    pub pages_poisoned: u64,
    /// Pages filled by UFFDIO_COPY (accepted).
    pub pages_filled: u64,
}

/// Bytes the zero source covers: one 2 MiB accept at most.
const ZERO_SOURCE: u64 = abi::PAGE_2M;

/// The host side of `uffd-poison`.
#[derive(Debug)]
pub struct PoisonedChunks {
    uffd: Uffd,
    /// One bit per 2 MiB chunk of RAM: registered, every pending page of it
    /// poisoned. Written under the TD's state lock; read without it.
    registered: Vec<AtomicU64>,
    /// A read-only anonymous mapping: reads as zero, never populated.
    zero: u64,
    chunks: AtomicU64,
    poisoned: AtomicU64,
    filled: AtomicU64,
    /// Whether a copy replaces a poisoned page directly (learnt at the
    /// first copy: the experiment saw EEXIST, kernel 6.18 replaces it).
    copy_needs_dontneed: std::sync::atomic::AtomicBool,
}

// SAFETY: `zero` is the address of a read-only private mapping owned by
// this value and only unmapped in `Drop`; it is only ever read (by the
// kernel, as a UFFDIO_COPY source). Everything else is Send + Sync.
unsafe impl Send for PoisonedChunks {}
// SAFETY: as above; the counters and bits are atomics, and userfaultfd
// ioctls may be issued from any thread.
unsafe impl Sync for PoisonedChunks {}

impl PoisonedChunks {
    /// Opens userfaultfd with `UFFDIO_POISON` for a RAM of `chunks` 2 MiB
    /// chunks, or says why this host cannot.
    pub fn open(chunks: u64) -> Result<Self, PendingError> {
        // With FEATURE_SIGBUS as well (where offered), a fault on a page
        // that is neither poisoned nor populated (registration populates
        // a chunk's accepted pages and poisons the rest, so only a bug can
        // leave one) fails (KVM_RUN: EFAULT, the TD stops) instead of
        // waiting forever for a handler we never run.
        let offered = crate::memory::uffd::probe()?;
        let uffd = Uffd::open(FEATURE_POISON | (offered & FEATURE_SIGBUS))?;
        // SAFETY: an anonymous read-only mapping at an address of the
        // kernel's choosing cannot alias any Rust object; checked below.
        let zero = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                abi::to_usize(ZERO_SOURCE),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if zero == libc::MAP_FAILED {
            return Err(PendingError::ZeroSource {
                len: ZERO_SOURCE,
                err: std::io::Error::last_os_error(),
            });
        }
        Ok(PoisonedChunks {
            uffd,
            registered: (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            zero: zero as u64,
            chunks: AtomicU64::new(0),
            poisoned: AtomicU64::new(0),
            filled: AtomicU64::new(0),
            copy_needs_dontneed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// True when chunk `chunk` is registered (its pending pages poisoned).
    pub fn is_registered(&self, chunk: u64) -> bool {
        self.registered
            .get((chunk / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (chunk % 64)) != 0)
    }

    /// Counters.
    pub fn stats(&self) -> PoisonStats {
        PoisonStats {
            chunks: self.chunks.load(Ordering::Relaxed),
            pages_poisoned: self.poisoned.load(Ordering::Relaxed),
            pages_filled: self.filled.load(Ordering::Relaxed),
        }
    }

    /// Registers chunk `chunk` (host range `[host, host + len)`) and
    /// poisons its pending pages, given as host runs: whatever the host had
    /// behind them (a huge page's zeros) is dropped first. The caller holds
    /// the TD's state lock and then covers the chunk with a memslot.
    pub fn register(
        &self,
        chunk: u64,
        host: u64,
        len: u64,
        pending: &[(u64, u64)],
    ) -> Result<(), PendingError> {
        self.uffd.register(host, len)?;
        for &(addr, run) in pending {
            self.poison(addr, run)?;
        }
        if let Some(w) = self.registered.get((chunk / 64) as usize) {
            w.fetch_or(1 << (chunk % 64), Ordering::Release);
        }
        self.chunks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the host pages of `[addr, addr + len)` and poisons it: the
    /// pages become pending (no host memory; any access stops the vCPU).
    pub fn poison(&self, addr: u64, len: u64) -> Result<(), PendingError> {
        dontneed(addr, len)?;
        let done = self.uffd.poison(addr, len)?;
        self.poisoned.fetch_add(done / PAGE_4K, Ordering::Relaxed);
        Ok(())
    }

    /// Accepts `[addr, addr + len)` of a registered chunk (at most 2 MiB):
    /// its poisoned pages become zero-filled host pages, atomically.
    pub fn fill(&self, addr: u64, len: u64) -> Result<(), PendingError> {
        debug_assert!(len <= ZERO_SOURCE);
        if self.copy_needs_dontneed.load(Ordering::Relaxed) {
            dontneed(addr, len)?;
        }
        match self.uffd.copy(addr, self.zero, len) {
            Ok(()) => {}
            Err(UffdError::Op { ref err, .. }) if err.raw_os_error() == Some(libc::EEXIST) => {
                // This kernel keeps the poison marker until it is dropped.
                self.copy_needs_dontneed.store(true, Ordering::Relaxed);
                dontneed(addr, len)?;
                self.uffd.copy(addr, self.zero, len)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.filled.fetch_add(len / PAGE_4K, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for PoisonedChunks {
    fn drop(&mut self) {
        // SAFETY: the zero source was mapped in `open` with this length and
        // nothing refers to it once its owner is dropped.
        unsafe { libc::munmap(self.zero as *mut _, abi::to_usize(ZERO_SOURCE)) };
    }
}

/// `MADV_DONTNEED` over `[addr, addr + len)` of guest RAM.
pub fn dontneed(addr: u64, len: u64) -> Result<(), PendingError> {
    // SAFETY: callers pass a page-aligned range of the guest RAM mapping
    // (derived from `RamLayout::ram_offset`); dropping its pages only
    // changes what the guest and the VMM read there next (zeros, or a stop
    // once poisoned), never any Rust object.
    if unsafe { libc::madvise(addr as *mut _, abi::to_usize(len), libc::MADV_DONTNEED) } != 0 {
        return Err(PendingError::Dontneed {
            addr,
            len,
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
