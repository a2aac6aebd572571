//! Memory a multi-step operation holds (kexec_load: the destination block,
//! staging pages, the control page) with one release path: whatever is
//! still held when the holder is dropped goes back to the allocator, so
//! every early return releases everything, and only `commit` keeps it.

/// One piece of held memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// A parked (unaccepted) 4 MiB block taken out of the allocator: goes
    /// back parked.
    Parked(u64),
    /// Pages allocated at `addr` with `order`: freed.
    Pages { addr: u64, order: u32 },
}

/// Where held memory goes back.
pub trait Release {
    fn release(&mut self, held: Held);
}

/// At most `N` pieces of held memory, released on drop unless committed.
pub struct Holder<R: Release, const N: usize> {
    items: [Option<Held>; N],
    release: R,
}

/// More pieces than the holder has room for (the piece was released).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderFull;

impl<R: Release, const N: usize> Holder<R, N> {
    pub fn new(release: R) -> Self {
        Holder {
            items: [None; N],
            release,
        }
    }

    /// Holds `held` from now on.
    pub fn hold(&mut self, held: Held) -> Result<(), HolderFull> {
        match self.items.iter_mut().find(|i| i.is_none()) {
            Some(slot) => {
                *slot = Some(held);
                Ok(())
            }
            None => {
                self.release.release(held);
                Err(HolderFull)
            }
        }
    }

    /// Keeps everything held (the operation succeeded): nothing is
    /// released.
    pub fn commit(mut self) {
        self.items = [None; N];
    }
}

impl<R: Release, const N: usize> Drop for Holder<R, N> {
    fn drop(&mut self) {
        for held in self.items.iter_mut().filter_map(Option::take) {
            self.release.release(held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Log<'a>(&'a RefCell<Vec<Held>>);

    impl Release for Log<'_> {
        fn release(&mut self, held: Held) {
            self.0.borrow_mut().push(held);
        }
    }

    #[test]
    fn an_abandoned_operation_releases_everything_it_held() {
        // The kexec_load leak: the destination block was taken, staging
        // allocated, then a check failed ("too many segments").
        let log = RefCell::new(Vec::new());
        {
            let mut h: Holder<_, 3> = Holder::new(Log(&log));
            h.hold(Held::Parked(0x1_0000_0000)).unwrap();
            h.hold(Held::Pages {
                addr: 0x90_0000,
                order: 9,
            })
            .unwrap();
            // Early return here.
        }
        assert_eq!(
            *log.borrow(),
            [
                Held::Parked(0x1_0000_0000),
                Held::Pages {
                    addr: 0x90_0000,
                    order: 9
                }
            ]
        );
    }

    #[test]
    fn a_committed_operation_keeps_what_it_held() {
        let log = RefCell::new(Vec::new());
        let mut h: Holder<_, 2> = Holder::new(Log(&log));
        h.hold(Held::Pages { addr: 0, order: 0 }).unwrap();
        h.commit();
        assert!(log.borrow().is_empty());
        // A full holder releases what it cannot hold at once.
        let mut h: Holder<_, 1> = Holder::new(Log(&log));
        h.hold(Held::Parked(0)).unwrap();
        assert_eq!(h.hold(Held::Parked(1)), Err(HolderFull));
        assert_eq!(*log.borrow(), [Held::Parked(1)]);
        drop(h);
        assert_eq!(*log.borrow(), [Held::Parked(1), Held::Parked(0)]);
    }
}
