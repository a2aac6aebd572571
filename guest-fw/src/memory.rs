//! The firmware's view of memory: the EFI memory map built from the HOB list
//! and the firmware's own accepts, and page allocation from it. When no
//! accepted memory is left below 4 GiB, an allocation accepts what it takes
//! (td-shim's lazy mode: the firmware accepts only what it needs).

use crate::accept::{accept_range, Stats};
use abi::efi::{memory_type, MemoryDescriptor, EFI_PAGE_SIZE};
use abi::hob::{resource_type, HobList};
use abi::layout::FOUR_GIB;
use abi::PAGE_2M;
use guest_rt::fatal::code;
use guest_rt::global::Global;
use models::memmap::{MapError, MemoryMap};

/// Most descriptors the firmware's map holds.
pub const MAX_DESCRIPTORS: usize = 256;

/// The map, its change counter (EFI's map key), and accept statistics.
pub struct Memory {
    storage: [MemoryDescriptor; MAX_DESCRIPTORS],
    len: usize,
    pub key: u64,
    pub stats: Stats,
}

pub static MEMORY: Global<Memory> = Global::new(Memory {
    storage: [MemoryDescriptor::ZERO; MAX_DESCRIPTORS],
    len: 0,
    key: 1,
    stats: Stats {
        calls: 0,
        ok_2m: 0,
        ok_4k: 0,
        already: 0,
        mismatch: 0,
        bytes: 0,
    },
});

impl Memory {
    /// Edits the map through `f`, keeping the length and key up to date.
    fn edit<R>(&mut self, f: impl FnOnce(&mut MemoryMap<'_>) -> R) -> R {
        let mut map = MemoryMap::new(&mut self.storage);
        // Re-adopt the entries already stored.
        map.adopt(self.len);
        let r = f(&mut map);
        self.len = map.entries().len();
        self.key += 1;
        r
    }

    /// Looks something up in the map without changing it (or its key).
    fn lookup<R>(&mut self, f: impl FnOnce(&MemoryMap<'_>) -> R) -> R {
        let mut map = MemoryMap::new(&mut self.storage);
        map.adopt(self.len);
        f(&map)
    }

    /// The current descriptors.
    pub fn entries(&self) -> &[MemoryDescriptor] {
        &self.storage[..self.len]
    }

    /// Sets the type of `[start, end)`.
    pub fn set(&mut self, start: u64, end: u64, ty: u32) {
        if let Err(e) = self.edit(|m| m.set(start, end, ty)) {
            guest_rt::fatal!(
                code::PANIC,
                "memory map edit {start:#x}..{end:#x} failed: {e:?}"
            );
        }
    }

    /// Allocates `pages` pages of `ty` below 4 GiB, top-down, accepting
    /// memory first if no accepted memory is free. Memory is accepted in
    /// whole 2 MiB pages where the unaccepted range allows: one TDCALL
    /// instead of 512, and what is left over stays free for later.
    pub fn allocate(&mut self, ty: u32, pages: u64) -> Result<u64, MapError> {
        let found = self.lookup(|m| m.find_top_down(memory_type::CONVENTIONAL, pages, FOUR_GIB));
        let start = match found {
            Some(s) => s,
            None => {
                let size = pages * EFI_PAGE_SIZE;
                let (lo, hi) = self
                    .lookup(|m| {
                        m.entries().iter().rev().find_map(|d| {
                            if d.memory_type != memory_type::UNACCEPTED {
                                return None;
                            }
                            let top = d.end().min(FOUR_GIB);
                            let top_2m = top & !(PAGE_2M - 1);
                            let big = size.next_multiple_of(PAGE_2M);
                            if top_2m >= d.physical_start + big {
                                Some((top_2m - big, top_2m))
                            } else if top >= d.physical_start + size {
                                Some((top - size, top))
                            } else {
                                None
                            }
                        })
                    })
                    .ok_or(MapError::Full)?;
                accept_range(lo, hi, &mut self.stats);
                self.edit(|m| m.set(lo, hi, memory_type::CONVENTIONAL))?;
                hi - size
            }
        };
        self.edit(|m| m.set(start, start + pages * EFI_PAGE_SIZE, ty))?;
        Ok(start)
    }
}

/// Builds the map: RAM from the HOB (unaccepted resources as type 15,
/// initial memory split into what it holds), then the ranges the firmware
/// accepted (`accepted`) as conventional memory.
pub fn build(hobs: &HobList<'_>, pieces: &[(u64, u64, u32)], accepted: &[(u64, u64)]) {
    MEMORY.with(|mem| {
        for r in hobs.memory_resources() {
            let ty = if r.resource_type == resource_type::MEMORY_UNACCEPTED {
                memory_type::UNACCEPTED
            } else {
                memory_type::RESERVED
            };
            mem.set(r.physical_start, r.physical_start + r.resource_length, ty);
        }
        for &(start, end, ty) in pieces {
            if end > start {
                mem.set(start, end, ty);
            }
        }
        for &(start, end) in accepted {
            if end > start {
                mem.set(start, end, memory_type::CONVENTIONAL);
            }
        }
    });
}
