//! Host glue: durations as report integers (`clock`), the files a user
//! names (`files`), stop signals and the
//! vCPU kick (`signals`, `watchdog`, and the register of vCPU threads it
//! reaches, `vcpu_threads`), per-process limits (`limits`), the SIGBUS of a poisoned guest
//! page (`poison_signal`), the guest console (`console`) and
//! the size grammar of the command line (`size`). Nothing here knows
//! about TDX.

pub mod clock;
pub mod console;
pub mod files;
pub mod limits;
pub mod output;
pub mod output_path;
pub mod poison_signal;
pub mod signals;
pub mod size;
pub mod vcpu_threads;
pub mod watchdog;
