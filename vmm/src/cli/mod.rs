//! The `vmm` command line: parsing and validation with clear messages
//! (here), the run from checked outputs to exit status (`run.rs`), and the
//! exit-status contract (0 = clean guest exit 0, 1 = the guest failed or
//! the VMM could not go on, 2 = bad input or setup failure before any guest
//! code ran, 3 = the guest ran but the report or trace could not be written
//! completely, 128 + N = stopped by signal N: 129 SIGHUP, 130 SIGINT, 143
//! SIGTERM, 152 SIGXCPU... `host::signals` decides each signal).

use crate::boot::cpu::ProfileChoice;
use crate::host::size::parse_size;
use crate::memory::guest_ram::Backing;
use crate::memory::memslots::Mapping;
use crate::memory::pending_mechanism::PendingMechanism;
use crate::vm::TdConfig;
use abi::named::Named;
use abi::tdcall::SeptLevel;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};

mod run;
use std::path::PathBuf;
use std::time::Duration;

/// Exit status for a clean run.
pub const EXIT_OK: i32 = 0;
/// Exit status when the guest failed or exited non-zero.
pub const EXIT_GUEST_FAILED: i32 = 1;
/// Exit status for bad input or a setup failure.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "KVM mini hypervisor emulating Intel TDX memory acceptance"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Boot a TD: firmware, optional kernel payload, and report.
    Run(RunArgs),
}

/// The value parser of a flag whose values are a named enum's names
/// (`abi::named_enum!`): `--help` and the errors list them, in declaration
/// order, and each parses to its variant.
fn named<T: Named + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::NAMES).try_map(|name| T::from_name(&name).ok_or("no such name"))
}

/// The value parser of a flag that takes a named enum's names or `none`,
/// which parses to `None` (listed first).
fn named_or<T: Named + Send + Sync>(
    none: &'static str,
) -> impl TypedValueParser<Value = Option<T>> {
    let names = std::iter::once(none).chain(T::NAMES.iter().copied());
    PossibleValuesParser::new(names).map(|name| T::from_name(&name))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Firmware: an ELF (TDVF role) linked inside the firmware window, or a TDVF image (its TDX metadata says where its sections go; standard profile only).
    #[arg(long)]
    pub firmware: PathBuf,
    /// Kernel ELF handed to the firmware as the payload.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest RAM (e.g. 512M, 4G, 1T); a multiple of 4 KiB, at least 64M.
    #[arg(long, default_value = "2G", value_parser = parse_mem, allow_hyphen_values = true)]
    pub mem: u64,
    /// vCPUs of the TD (1 to 64, and at most KVM's limit). Each runs on a
    /// host thread of its own; every vCPU enters the firmware.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::vm::MAX_VCPUS as i64))]
    pub cpus: u32,
    /// Command line for the firmware and the kernel (payload GUID HOB).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// How guest code runs: auto picks pvm-native on a kvm_pvm host.
    #[arg(long, value_parser = named::<ProfileChoice>(), default_value_t = ProfileChoice::Auto)]
    pub cpu_profile: ProfileChoice,
    /// When accepted memory gets host pages: at accept, or on first touch.
    #[arg(long, value_parser = named::<Backing>(), default_value_t = Backing::Populate)]
    pub backing: Backing,
    /// When accepted memory gets its KVM memslot: at accept, or at the
    /// guest's first touch (which then exits once and is completed by the VMM).
    #[arg(long, value_parser = named::<Mapping>(), default_value_t = Mapping::OnTouch)]
    pub map: Mapping,
    /// The host's mapping granularity for private memory (the Secure EPT's
    /// leaf size). With 4k, a 2 MiB accept of a pending range answers
    /// TDX_PAGE_SIZE_MISMATCH, as the TDX module does over 4 KiB leaves
    /// (KVM's TDX support today), and guests fall back to 4 KiB accepts.
    #[arg(long, value_parser = named::<SeptLevel>(), default_value_t = SeptLevel::L2M)]
    pub sept_level: SeptLevel,
    /// How pending memory is kept out of the guest's reach: no memslot
    /// over it (every host), or, for chunks accepted in 4 KiB pages,
    /// userfaultfd-poisoned pages inside one memslot (4 KiB accepts without
    /// memslot changes; host kernel 6.6 or later). auto picks uffd-poison
    /// where the host offers it; the report says which ran.
    // A full path, so that clap takes the type as it is: `auto` is `None`.
    #[arg(long, value_parser = named_or::<PendingMechanism>(crate::named::AUTO), default_value = crate::named::AUTO)]
    pub pending: std::option::Option<PendingMechanism>,
    /// Write the JSON run report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write a trace of every accept and pending access here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Largest trace file (e.g. 64M); records past it are counted, not written.
    #[arg(long, default_value = "64M", value_parser = parse_mem, allow_hyphen_values = true)]
    pub trace_cap: u64,
    /// Fault injection: `busy=P` makes each valid accept answer
    /// TDX_OPERAND_BUSY with probability P (no state changes); `remove=Q`
    /// makes the host take back one 4 KiB page of a successful accept with
    /// probability Q (TDH.MEM.PAGE.REMOVE); `seed=S` seeds both.
    #[arg(long)]
    pub inject: Option<crate::tdx::inject::InjectSpec>,
    /// TD ATTRIBUTES TDG.VP.INFO and the TD report give the guest (hex
    /// with 0x, or decimal): 0x10000000 (SEPT_VE_DISABLE, as Linux
    /// requires) by default; td-shim's tests expect 0.
    #[arg(long, value_parser = parse_attributes, default_value = "0x10000000")]
    pub td_attributes: u64,
    /// Check the private-memory invariants after every accept and mapping
    /// (always on in debug builds).
    #[arg(long)]
    pub check_invariants: bool,
    /// Stop the guest after this many seconds (outcome `timeout`; more
    /// than 0, at most 30 days).
    #[arg(long, value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Do not echo the guest console to stdout.
    #[arg(long)]
    pub quiet: bool,
    /// VMM log level (stderr).
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,
}

/// The longest `--timeout`: 30 days.
pub(crate) const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;

/// A value that is the next flag (`--mem --report r.json`): the value is
/// missing, whatever it would parse as.
fn not_a_flag(s: &str) -> Result<(), String> {
    match s.strip_prefix('-') {
        Some(rest) if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') => Err(format!(
            "the value is missing (found the flag `{s}` instead)"
        )),
        _ => Ok(()),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    not_a_flag(s)?;
    let bad = || {
        format!(
            "`{s}` is not a number of seconds greater than 0 and at most {MAX_TIMEOUT_S} (30 days)"
        )
    };
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S as f64 => {
            // 1e-300 is more than 0 but rounds to no time at all.
            Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn parse_mem(s: &str) -> Result<u64, String> {
    not_a_flag(s)?;
    let v = parse_size(s).map_err(|e| e.to_string())?;
    if v == 0 {
        return Err("memory size must not be zero".into());
    }
    Ok(v)
}

impl RunArgs {
    /// The TD configuration these arguments describe.
    pub(crate) fn to_config(&self) -> Result<TdConfig, String> {
        let timeout = self.timeout;
        Ok(TdConfig {
            firmware: self.firmware.clone(),
            kernel: self.kernel.clone(),
            mem_bytes: self.mem,
            cpus: self.cpus,
            cmdline: self.cmdline.clone(),
            profile: self.cpu_profile,
            backing: self.backing,
            gpaw: abi::tdcall::vp_info::GPAW_48,
            echo_console: !self.quiet,
            timeout,
            trace: self.trace.clone(),
            trace_cap_bytes: self.trace_cap,
            map_on_touch: self.map == Mapping::OnTouch,
            sept_level: self.sept_level,
            pending: self.pending,
            check_invariants: self.check_invariants || cfg!(debug_assertions),
            inject: self.inject,
            td_attributes: self.td_attributes,
            command_line: Vec::new(),
            // The command owns its process: stop signals end the run with
            // its report (the handlers are in place from process start).
            stop_on_signals: true,
            stop: crate::vm::StopHandle::new(),
        })
    }
}

/// Parses a full `vmm run ...` argument list into the TD configuration, or
/// the message a user would see (for tests and fuzzing; not a stable
/// API).
#[doc(hidden)]
pub fn parse_run_args(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<TdConfig, String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    let Command::Run(run) = cli.command;
    run.to_config()
}

pub use run::{main_with, EXIT_OUTPUT_FAILED};

/// `--td-attributes`: a 64-bit value, hex with `0x` or decimal.
fn parse_attributes(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a 64-bit number (hex with 0x, or decimal): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(args: &[&str]) -> Result<TdConfig, String> {
        let mut all = vec!["vmm", "run", "--firmware", "fw.elf"];
        all.extend_from_slice(args);
        parse_run_args(all)
    }

    #[test]
    fn td_attributes_read_as_hex_or_decimal() {
        assert_eq!(parse_attributes("0x10000000"), Ok(1 << 28));
        assert_eq!(parse_attributes("0"), Ok(0));
        assert_eq!(parse_attributes("0XfF"), Ok(255));
        assert!(parse_attributes("0x").is_err());
        assert!(parse_attributes("-1").is_err());
        assert!(parse_attributes("0x1_0000_0000_0000_0000").is_err());
    }

    #[test]
    fn flags_reach_the_configuration() {
        let c = parse(&[
            "--mem",
            "8G",
            "--timeout",
            "2.5",
            "--inject",
            "busy=0.5,seed=9",
            "--check-invariants",
            "--map",
            "on-accept",
            "--backing",
            "on-touch",
            "--trace-cap",
            "1M",
            "--sept-level",
            "4k",
        ])
        .unwrap();
        assert_eq!(c.sept_level, abi::tdcall::SeptLevel::L4K);
        assert_eq!(parse(&[]).unwrap().sept_level, abi::tdcall::SeptLevel::L2M);
        assert_eq!(c.mem_bytes, 8 << 30);
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            c.inject,
            Some(crate::tdx::inject::InjectSpec {
                busy: 0.5,
                remove: 0.0,
                delay: 0,
                seed: 9
            })
        );
        assert!(c.check_invariants && !c.map_on_touch);
        assert_eq!(c.backing, Backing::OnTouch);
        assert_eq!(c.trace_cap_bytes, 1 << 20);
        for bad in [
            &["--mem", "0"][..],
            &["--timeout", "nan"],
            &["--timeout", "0"],
            &["--timeout", "1e300"],
            &["--timeout", "1e-300"],
            &["--timeout", "--quiet"],
            &["--mem", "--quiet"],
            &["--timeout", "-1"],
            &["--timeout", "2592001"],
            &["--mem", "-1G"],
            &["--trace-cap", "-4K"],
            &["--inject", "busy=1.5"],
            &["--trace-cap", "-1"],
            &["--cpu-profile", "vmx"],
            &["--sept-level", "1g"],
            &["--sept-level", "4K "],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever a user types for the value flags, parsing ends in a
        /// configuration or an error message, never a panic.
        #[test]
        fn any_values_parse_or_fail_cleanly(
            mem in "\\PC{0,12}",
            timeout in "\\PC{0,10}",
            inject in "\\PC{0,20}",
            cap in "\\PC{0,8}",
        ) {
            for args in [
                ["--mem", mem.as_str()],
                ["--timeout", timeout.as_str()],
                ["--inject", inject.as_str()],
                ["--trace-cap", cap.as_str()],
            ] {
                if let Ok(c) = parse(&args) {
                    prop_assert!(c.mem_bytes > 0);
                }
            }
        }

        #[test]
        fn sizes_with_units_are_exact(n in 1u64..(1 << 20), unit in 0usize..4) {
            let text = format!("{n}{}", ["K", "M", "G", "T"][unit]);
            let c = parse(&["--mem", &text]).unwrap();
            prop_assert_eq!(c.mem_bytes, n << (10 * (unit + 1)));
        }
    }
}
