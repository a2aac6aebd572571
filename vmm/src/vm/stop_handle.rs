//! Ending a TD from another thread: a `StopHandle` posts an `interrupted`
//! stop on the TD's stop board, which stops every vCPU and kicks each out
//! of KVM_RUN. A stop asked for before the TD runs (even before it is
//! built) is kept and honoured when it starts: no guest code runs.

use crate::stop::{Fatal, Stop};
use crate::vcpu::stop_board::StopBoard;
use abi::report::Outcome;
use std::sync::{Arc, Mutex, Weak};

/// The index a handle's stop is posted under: no vCPU has it, so the
/// report's `fatal.vcpu` stays empty.
const STOPPER: u32 = u32::MAX;

/// Ends a TD from any thread: [`stop`](StopHandle::stop) makes
/// [`Td::run`](crate::Td::run) return soon after with outcome
/// [`Interrupted`](crate::Outcome::Interrupted).
///
/// Get one from [`Td::stop_handle`](crate::Td::stop_handle) before
/// running the TD, or make one with [`StopHandle::new`] and give it to
/// [`TdConfig::stop_handle`](crate::TdConfig::stop_handle) to be able to
/// stop while the TD is being built. Clones stop the same TD. A stop is
/// final: a TD built later with the same handle stops at once.
///
/// ```no_run
/// let td = vmm::Td::build(vmm::TdConfig::new("guest-fw.elf"))?;
/// let stop = td.stop_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(5));
///     stop.stop();
/// });
/// let report = td.run();
/// # Ok::<(), vmm::TdError>(())
/// ```
#[derive(Clone, Default)]
pub struct StopHandle {
    inner: Arc<Mutex<Target>>,
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

/// What a handle stops, under its lock.
#[derive(Default)]
struct Target {
    /// `stop` was called.
    requested: bool,
    /// The board of the TD it stops, once one is built.
    board: Option<Weak<StopBoard>>,
}

fn interrupted() -> Stop {
    Stop::fatal(
        Outcome::Interrupted,
        Fatal::new("stopped by the embedding program (StopHandle::stop)".into()),
    )
}

impl StopHandle {
    /// A handle that stops nothing until a TD is built with it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the TD: its vCPUs stop at once (a vCPU inside the guest is
    /// kicked out), and `run` returns a report with outcome
    /// `interrupted`. Before the TD runs, it runs no guest code; after
    /// the run ended, this does nothing. Never blocks for long and never
    /// panics.
    pub fn stop(&self) {
        let mut target = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        target.requested = true;
        if let Some(board) = target.board.as_ref().and_then(Weak::upgrade) {
            log::info!("stop asked for through a StopHandle");
            board.stop(STOPPER, interrupted());
        }
    }

    /// True once `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requested
    }

    /// Makes this handle stop the TD whose board is `board`; a stop asked
    /// for already is posted now.
    pub(crate) fn attach(&self, board: &Arc<StopBoard>) {
        let mut target = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        target.board = Some(Arc::downgrade(board));
        if target.requested {
            board.stop(STOPPER, interrupted());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_before_or_after_attaching_reaches_the_board() {
        let early = StopHandle::new();
        early.stop();
        let board = Arc::new(StopBoard::new(1));
        early.attach(&board);
        assert!(board.stopped());
        let (index, stop) = board.take().unwrap();
        assert_eq!((index, stop.outcome), (STOPPER, Outcome::Interrupted));

        let late = StopHandle::new();
        let board = Arc::new(StopBoard::new(2));
        late.clone().attach(&board);
        assert!(!board.stopped());
        late.stop();
        assert!(board.stopped() && late.is_stopped());
        drop(board);
        // The TD is gone: nothing to stop, nothing to panic about.
        late.stop();
    }
}
