//! Guest RAM: one anonymous `MAP_NORESERVE` mapping (THP-advised) that backs
//! every RAM region, exposed to loaders through vm-memory. Nothing is
//! allocated for pending memory; accepted memory is populated on accept or on
//! first touch.

use crate::memory::layout::RamLayout;
use std::io;
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Why guest RAM could not be set up or used.
#[derive(Debug, Error)]
pub enum GuestRamError {
    #[error("cannot reserve {size} bytes of host address space for guest RAM: {source}")]
    Mmap { size: u64, source: io::Error },
    #[error("cannot describe guest RAM to vm-memory: {0}")]
    Regions(String),
    #[error("cannot populate guest RAM at offset {offset:#x} (+{len:#x}): {source}")]
    Populate {
        offset: u64,
        len: u64,
        source: io::Error,
    },
}

/// Host huge-page size the mapping is aligned to.
const HUGE: u64 = 2 << 20;

abi::named_enum! {
    /// How accepted memory gets its host pages (`--backing`, and the
    /// report, by these names). The default is `TdConfig::new`'s.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Backing {
        /// Zero-fill and populate at accept time (TDX AUG at accept).
        #[default]
        Populate => "populate",
        /// Leave it to the guest's first touch.
        OnTouch => "on-touch",
    }
}

/// The host mapping behind all guest RAM.
#[derive(Debug)]
pub struct GuestRam {
    base: *mut u8,
    size: u64,
    layout: RamLayout,
    memory: GuestMemoryMmap,
    populate_supported: std::sync::atomic::AtomicBool,
}

// SAFETY: `base` points to a private anonymous mapping owned by this value;
// it is only unmapped in `Drop`. Guest memory is shared with KVM by design,
// and every host-side access goes through vm-memory's volatile accessors or
// `madvise`, which are safe to issue from any thread.
unsafe impl Send for GuestRam {}
// SAFETY: every method takes `&self` and touches guest memory only through
// volatile accesses or `madvise`; concurrent callers (the vCPU threads)
// work on disjoint ranges, each guarded by its Secure-EPT entry lock
// (`sept_locks.rs`) or by the TD's state lock.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Reserves host address space for the layout's RAM.
    pub fn new(layout: RamLayout, backing: Backing) -> Result<Self, GuestRamError> {
        let size = layout.mem_bytes();
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // Reserve 2 MiB more than needed and keep a 2 MiB-aligned window, so
        // that guest 2 MiB pages line up with host huge pages (THP) and KVM
        // can map them as huge pages too.
        let reserve = size + HUGE;
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // cannot alias any Rust object; the result is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                abi::to_usize(reserve),
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(GuestRamError::Mmap {
                size,
                source: io::Error::last_os_error(),
            });
        }
        let raw = raw as u64;
        let aligned = raw.next_multiple_of(HUGE);
        // SAFETY: both trimmed pieces lie inside the reservation made above
        // and nothing refers to them.
        unsafe {
            if aligned > raw {
                libc::munmap(raw as *mut _, abi::to_usize(aligned - raw));
            }
            let tail = aligned + size;
            let end = raw + reserve;
            if end > tail {
                libc::munmap(tail as *mut _, abi::to_usize(end - tail));
            }
        }
        let base = aligned as *mut u8;
        // Populated memory wants huge pages; on-touch memory must not get
        // them, or each 4 KiB a guest touches would cost 2 MiB of host RAM.
        let advice = match backing {
            Backing::Populate => libc::MADV_HUGEPAGE,
            Backing::OnTouch => libc::MADV_NOHUGEPAGE,
        };
        // SAFETY: `[base, base + size)` is the mapping created above. The
        // advice only changes how the kernel backs it; failure is harmless
        // (the default THP policy applies), so it is logged and ignored.
        if unsafe { libc::madvise(base as *mut _, abi::to_usize(size), advice) } != 0 {
            log::debug!("madvise({advice}) refused: {}", io::Error::last_os_error());
        }
        let memory = match describe(base, &layout, flags) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: unmapping the mapping created above; the failed
                // description holds no reference to it.
                unsafe { libc::munmap(base as *mut _, abi::to_usize(size)) };
                return Err(e);
            }
        };
        Ok(GuestRam {
            base,
            size,
            layout,
            memory,
            populate_supported: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The layout.
    pub fn layout(&self) -> &RamLayout {
        &self.layout
    }

    /// vm-memory's view, for loaders and structured writes.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Host address of RAM offset `offset`.
    pub fn host_addr(&self, offset: u64) -> u64 {
        debug_assert!(offset <= self.size);
        self.base as u64 + offset
    }

    /// Guarantees `[offset, offset + len)` reads as zero and, with
    /// `Backing::Populate`, has host pages behind it.
    ///
    /// Pending memory is never written (it has no memslot, and the VMM only
    /// writes initial memory), so its host pages are either absent or were
    /// zero-filled by the host kernel: populating them is zeroing them.
    pub fn zero_and_back(
        &self,
        offset: u64,
        len: u64,
        backing: Backing,
    ) -> Result<(), GuestRamError> {
        if backing == Backing::OnTouch {
            return Ok(());
        }
        debug_assert!(offset + len <= self.size);
        if self
            .populate_supported
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // SAFETY: the range lies inside the guest RAM mapping (checked by
            // the caller through `RamLayout::ram_offset`); MADV_POPULATE_WRITE
            // only faults pages in, it does not change their contents.
            let rc = unsafe {
                libc::madvise(
                    self.base.add(abi::to_usize(offset)) as *mut _,
                    abi::to_usize(len),
                    libc::MADV_POPULATE_WRITE,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(GuestRamError::Populate {
                    offset,
                    len,
                    source: err,
                });
            }
            log::info!("MADV_POPULATE_WRITE unsupported; touching pages instead");
            self.populate_supported
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        for page in (offset..offset + len).step_by(abi::to_usize(abi::PAGE_4K)) {
            // SAFETY: in bounds as above. A volatile read-then-write of the
            // same value faults the page in without changing its contents.
            unsafe {
                let p = self.base.add(abi::to_usize(page));
                std::ptr::write_volatile(p, std::ptr::read_volatile(p));
            }
        }
        Ok(())
    }

    /// The RAM offset of host address `host`, if it lies in guest RAM.
    pub fn offset_of_host(&self, host: u64) -> Option<u64> {
        host.checked_sub(self.base as u64)
            .filter(|o| *o < self.size)
    }

    /// Bytes of guest RAM resident in host memory (from /proc/self/smaps:
    /// the sum over every mapping inside guest RAM, which userfaultfd
    /// registration splits into several).
    pub fn resident_bytes(&self) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        resident_in(&smaps, self.base as u64, self.base as u64 + self.size)
    }

    /// Writes `bytes` at RAM offset `offset` (no page-state check).
    pub fn write(&self, offset: u64, bytes: &[u8]) {
        assert!(
            offset + bytes.len() as u64 <= self.size,
            "write beyond guest RAM"
        );
        // SAFETY: bounds checked above; the VMM writes while the vCPU is
        // stopped in an exit.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.add(abi::to_usize(offset)),
                bytes.len(),
            )
        }
    }

    /// Reads `buf.len()` bytes at RAM offset `offset` (no page-state check).
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        assert!(
            offset + buf.len() as u64 <= self.size,
            "read beyond guest RAM"
        );
        // SAFETY: bounds checked above; the guest may write concurrently only
        // while it runs, and the VMM reads while the vCPU is stopped in an exit.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(abi::to_usize(offset)),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    }
}

/// The Rss of the mappings of `smaps` that start inside `[lo, hi)`, or
/// `None` when none does.
fn resident_in(smaps: &str, lo: u64, hi: u64) -> Option<u64> {
    let mut total = None;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping's header: "start-end perms offset dev inode [path]".
        let header = line
            .split_once('-')
            .filter(|(a, _)| !a.contains(' ') && !a.ends_with(':'))
            .and_then(|(a, _)| u64::from_str_radix(a, 16).ok());
        if let Some(start) = header {
            inside = (lo..hi).contains(&start);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(kb) = line
            .strip_prefix("Rss:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            *total.get_or_insert(0) += kb * 1024;
        }
    }
    total
}

/// vm-memory's view of the RAM regions inside the mapping at `base`.
fn describe(
    base: *mut u8,
    layout: &RamLayout,
    flags: i32,
) -> Result<GuestMemoryMmap, GuestRamError> {
    let mut regions = Vec::new();
    for r in layout.regions() {
        // SAFETY: `base` is the live mapping of `layout.mem_bytes()` bytes
        // made by `GuestRam::new`, and each region is a sub-range of it
        // (`RamLayout` keeps offsets + sizes within `mem_bytes`). The
        // vm-memory region does not own it and is dropped with the
        // `GuestRam`, whose `Drop` unmaps the memory afterwards.
        let mapping = unsafe {
            MmapRegion::build_raw(
                base.add(abi::to_usize(r.offset)),
                abi::to_usize(r.size),
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
            )
        }
        .map_err(|e| GuestRamError::Regions(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.gpa))
            .ok_or_else(|| GuestRamError::Regions(format!("region at {:#x} overflows", r.gpa)))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| GuestRamError::Regions(e.to_string()))
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this base and size,
        // and vm-memory's regions (built with `build_raw`) do not unmap it.
        unsafe { libc::munmap(self.base as *mut _, abi::to_usize(self.size)) };
    }
}

#[cfg(test)]
mod tests {
    use super::resident_in;

    #[test]
    fn resident_bytes_sum_every_mapping_inside_guest_ram() {
        let smaps = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                 512 kB
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f0000400000-7f0000600000 rw-p 00000000 00:00 0 /some-file
Rss:                   8 kB
";
        let lo = 0x7f00_0000_0000;
        assert_eq!(resident_in(smaps, lo, lo + 0x40_0000), Some(1536 * 1024));
        assert_eq!(
            resident_in(smaps, lo + 0x20_0000, lo + 0x60_0000),
            Some(1032 * 1024)
        );
        assert_eq!(resident_in(smaps, 0x1000, 0x2000), None);
    }
}
