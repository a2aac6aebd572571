//! The accepts of the chaos workload: inside the window of pending RAM
//! (claimed per 2 MiB entry, checked against the model exactly or, when a
//! rogue CPU raced the holder, against every order the entry lock allows),
//! fresh pages read zero, and malformed operands answer invalid.

use super::*;

impl Run<'_> {
    pub(super) fn window_gpa(&mut self) -> u64 {
        let (lo, hi) = self.range;
        lo + self.rng.below((hi - lo) / PAGE_4K) * PAGE_4K
    }

    /// One accept whose status the model predicts (alone on its entry),
    /// or explains together with the one that raced it.
    pub(super) fn accept(&mut self, rcx: u64) {
        let (lo, hi) = self.range;
        let claim = match decode(&self.layout, rcx) {
            // Invalid operands touch no entry: their status is exact.
            Err(_) => None,
            Ok((gpa, _)) if gpa >= lo && gpa < hi => {
                let c = ((gpa - lo) / PAGE_2M) as usize;
                match self.claim(c) {
                    Some(claim) => Some(claim),
                    // Two CPUs are on this entry already: do something else.
                    None => return,
                }
            }
            // Never issued: the generators stay off RAM outside the window.
            Ok(_) => return,
        };
        let got = if self.retry_busy {
            accept_through_busy(rcx, &mut self.out.busy_retries)
        } else {
            accept_raw(rcx)
        };
        match got {
            status::SUCCESS => self.check_fresh(rcx),
            INVALID => self.out.accepts_invalid += 1,
            models::accept::BUSY => self.out.busy_seen += 1,
            _ => {}
        }
        match claim {
            Some(Claim::Rogue(c)) => {
                self.with(|s| s.entries[c].rogue = Rogue::Done { rcx, got });
            }
            Some(Claim::Holder(c)) => self.settle(c, rcx, got),
            None => {
                let want = self.with(|s| s.model.expect(rcx));
                if want != Expect::Status(got) {
                    self.disagree(format_args!(
                        "accept {rcx:#x}: status {got:#x} ({}), model {want:x?}",
                        status::name(got)
                    ));
                }
            }
        }
    }

    /// Claims entry `c`: its holder if free, else the rogue racing the
    /// holder if there is none yet.
    pub(super) fn claim(&self, c: usize) -> Option<Claim> {
        self.with(|s| {
            let e = &mut s.entries[c];
            if !e.held {
                e.held = true;
                Some(Claim::Holder(c))
            } else if e.rogue == Rogue::Idle && !e.exclusive {
                e.rogue = Rogue::Running;
                Some(Claim::Rogue(c))
            } else {
                None
            }
        })
    }

    /// The holder of entry `c` got `got` for `rcx`: waits for a rogue that
    /// raced it, checks the status (or the pair) against the model, which
    /// takes the change only when the host's answers are explained, and
    /// releases the entry.
    pub(super) fn settle(&mut self, c: usize, rcx: u64, got: u64) {
        // Waiting for the rogue and checking happen in one critical
        // section, which also closes the entry to rogues: none can join
        // once the holder has seen the entry without one. The entry is
        // released after the content checks below, so no other CPU can
        // convert or remove the pages being read.
        let (rival, explained, want) = loop {
            let r = self.with(|s| {
                let rival = match s.entries[c].rogue {
                    Rogue::Running => return None,
                    Rogue::Idle => None,
                    Rogue::Done { rcx, got } => Some((rcx, got)),
                };
                let (ok, want) = match rival {
                    None => {
                        let want = s.model.expect(rcx);
                        let ok = want == Expect::Status(got);
                        if ok {
                            s.model.accept(rcx);
                        }
                        (ok, Some(want))
                    }
                    Some(r) => (s.model.accept_concurrent((rcx, got), r), None),
                };
                s.entries[c] = Entry {
                    held: true,
                    rogue: Rogue::Idle,
                    exclusive: true,
                };
                Some((rival, ok, want))
            });
            match r {
                Some(r) => break r,
                None => core::hint::spin_loop(),
            }
        };
        if rival.is_some() {
            self.out.raced += 1;
        }
        self.check_settled(rcx, got, rival, explained, want);
        self.release_exclusive(c);
    }

    /// What `settle` found: a disagreement if the model could not explain
    /// the answers, else the contents of pages already accepted.
    fn check_settled(
        &mut self,
        rcx: u64,
        got: u64,
        rival: Option<(u64, u64)>,
        explained: bool,
        want: Option<Expect>,
    ) {
        if !explained {
            match (rival, want) {
                (Some((r_rcx, r_got)), _) => self.disagree(format_args!(
                    "racing accepts {rcx:#x} -> {got:#x} ({}) and {r_rcx:#x} -> {r_got:#x} ({}): no order explains them",
                    status::name(got),
                    status::name(r_got)
                )),
                (None, want) => self.disagree(format_args!(
                    "accept {rcx:#x}: status {got:#x} ({}), model {want:x?}",
                    status::name(got)
                )),
            }
            return;
        }
        // Pages already accepted keep what their accepter wrote (it wrote
        // before its status reached the model).
        for (rcx, got) in [Some((rcx, got)), rival].into_iter().flatten() {
            let gpa = rcx & !(PAGE_4K - 1);
            if status::code(got) == status::PAGE_ALREADY_ACCEPTED && read(gpa) != pattern(gpa) {
                self.disagree(format_args!(
                    "accept {rcx:#x}: already accepted, but the page changed ({:#x})",
                    read(gpa)
                ));
            }
        }
    }

    /// A successful accept: its pages read zero; each gets its pattern.
    pub(super) fn check_fresh(&mut self, rcx: u64) {
        self.out.accepts_ok += 1;
        let gpa = rcx & !(PAGE_4K - 1);
        let level = rcx & accept::LEVEL_MASK;
        let pages = if level == PageLevel::L2M as u64 {
            512
        } else {
            1
        };
        for i in 0..pages {
            let page = gpa + i * PAGE_4K;
            // Zeroed: check both ends of a 4 KiB page, and a sample of
            // a 2 MiB one (first, last and one random page in full).
            let full = pages == 1 || i == 0 || i == pages - 1;
            let zero = if full {
                read(page) == 0 && read(page + PAGE_4K - 8) == 0
            } else {
                read(page) == 0
            };
            if !zero {
                self.disagree(format_args!(
                    "accept {rcx:#x}: page {page:#x} not zero after accept"
                ));
            }
            write(page, pattern(page));
        }
    }

    pub(super) fn accept_in_window(&mut self) {
        let gpa = self.window_gpa();
        let rcx = if self.rng.percent(30) {
            // 2 MiB, misaligned one time in ten.
            let base = if self.rng.percent(10) {
                gpa | PAGE_4K
            } else {
                gpa & !(PAGE_2M - 1)
            };
            accept::encode(base, PageLevel::L2M)
        } else {
            accept::encode(gpa, PageLevel::L4K)
        };
        self.accept(rcx);
    }

    pub(super) fn accept_invalid(&mut self) {
        let layout = self.layout;
        let gpa = self.window_gpa();
        let rcx = match self.rng.below(8) {
            0 => gpa | (1 + self.rng.below(511)) << 3,
            1 => gpa | [2, 3, 4, 5, 6, 7][abi::to_usize(self.rng.below(6))],
            2 => {
                MMIO_HOLE_START
                    + self.rng.below((MMIO_HOLE_END - MMIO_HOLE_START) / PAGE_4K) * PAGE_4K
            }
            3 => {
                let top = layout.ram_top().next_multiple_of(PAGE_4K);
                top + self.rng.below((layout.shared_bit() - top) / PAGE_4K) * PAGE_4K
            }
            4 => gpa | layout.shared_bit(),
            5 => gpa | 1 << (u64::from(layout.gpaw) + self.rng.below(64 - u64::from(layout.gpaw))),
            6 => accept::encode(gpa & !(PAGE_2M - 1), PageLevel::L1G),
            _ => self.rng.next_u64(),
        };
        // A random word could name RAM outside the window: never accept that.
        if let Ok((g, _)) = decode(&layout, rcx) {
            let (lo, hi) = self.range;
            if g < lo || g >= hi {
                return;
            }
        }
        self.accept(rcx);
    }
}
