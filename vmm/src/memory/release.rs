//! Memory going back from accepted to pending: a page range released (the
//! groundwork of MapGPA and of a host removing pages) and a poisoned
//! pending page taken out of its slot so the guest's access replays with
//! its exact GPA.

use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::PAGES_PER_CHUNK;
use crate::memory::private::{MemoryError, PrivateMemory};
use abi::PAGE_4K;

impl<B: SlotBackend> PrivateMemory<B> {
    /// Takes the 4 KiB page at `gpa` out of the memslot that covers it
    /// (a poisoned pending page a vCPU hit: its access then runs again
    /// without a slot and exits with its exact GPA). Returns false when no
    /// slot covered it.
    pub fn take_out_of_slot(&mut self, gpa: u64) -> Result<bool, MemoryError> {
        Ok(self.slots.unmap(gpa & !(PAGE_4K - 1), PAGE_4K)?)
    }

    /// Returns the accepted pages of `[gpa, gpa + len)` (4 KiB aligned RAM)
    /// to pending: their host memory is freed and the guest's next access
    /// stops the TD, as for memory never accepted. In a poisoned chunk
    /// (`uffd-poison`) the pages are poisoned again; elsewhere they leave
    /// their slots. Returns the pages released. Used by MapGPA;
    /// the caller keeps vCPUs out of the range.
    pub fn release(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .filter(|_| gpa.is_multiple_of(PAGE_4K) && len.is_multiple_of(PAGE_4K))
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let (first, end) = (offset / PAGE_4K, (offset + len) / PAGE_4K);
        let mut released = 0;
        let mut page = first;
        while page < end {
            let chunk = page / PAGES_PER_CHUNK;
            let chunk_end = (chunk * PAGES_PER_CHUNK + self.pages.chunk_pages(chunk)).min(end);
            let whole = page == chunk * PAGES_PER_CHUNK
                && chunk_end == chunk * PAGES_PER_CHUNK + PAGES_PER_CHUNK;
            let mut runs: Vec<(u64, u64)> = Vec::new();
            if whole {
                released += self.pages.release_chunk(chunk);
                runs.push((page, chunk_end));
            } else {
                for p in page..chunk_end {
                    if self.pages.release(p) {
                        released += 1;
                        match runs.last_mut() {
                            Some(r) if r.1 == p => r.1 = p + 1,
                            _ => runs.push((p, p + 1)),
                        }
                    }
                }
            }
            match self.poison.clone() {
                Some(p) if p.is_registered(chunk) => {
                    for (s, e) in runs {
                        p.poison(self.ram.host_addr(s * PAGE_4K), (e - s) * PAGE_4K)?;
                    }
                }
                // A chunk that is not poisoned keeps the memslots way (and
                // its huge pages, when released whole): out of its slots
                // first, so no guest write lands between, then freed.
                _ => {
                    for (s, e) in runs {
                        let at = self.layout().gpa_of_offset(s * PAGE_4K);
                        self.slots.unmap(at, (e - s) * PAGE_4K)?;
                        let host = self.ram.host_addr(s * PAGE_4K);
                        crate::memory::pending_mechanism::dontneed(host, (e - s) * PAGE_4K)?;
                    }
                }
            }
            page = chunk_end;
        }
        Ok(released)
    }
}
