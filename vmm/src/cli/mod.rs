//! The `vmm` command line: parsing, validation with clear messages, and the
//! exit-status contract (0 = clean guest exit 0, 1 = the guest failed,
//! 2 = bad input or setup failure before any guest code ran, 3 = the guest
//! ran but the report or trace could not be written completely, 128 + N =
//! stopped by signal N: 129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143 SIGTERM).

use crate::boot::cpu::ProfileChoice;
use crate::host::size::parse_size;
use crate::memory::guest_ram::Backing;
use crate::vm::{Td, TdConfig};
use clap::{Parser, Subcommand, ValueEnum};
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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a TD: firmware, optional kernel payload, and report.
    Run(RunArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProfileArg {
    Auto,
    Standard,
    PvmNative,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackingArg {
    Populate,
    OnTouch,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MapArg {
    OnAccept,
    OnTouch,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Firmware ELF (TDVF role), linked inside the firmware window.
    #[arg(long)]
    pub firmware: PathBuf,
    /// Kernel ELF handed to the firmware as the payload.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest RAM (e.g. 512M, 4G, 1T); a multiple of 4 KiB, at least 64M.
    #[arg(long, default_value = "2G", value_parser = parse_mem)]
    pub mem: u64,
    /// Command line for the firmware and the kernel (payload GUID HOB).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// How guest code runs: auto picks pvm-native on a kvm_pvm host.
    #[arg(long, value_enum, default_value = "auto")]
    pub cpu_profile: ProfileArg,
    /// When accepted memory gets host pages: at accept, or on first touch.
    #[arg(long, value_enum, default_value = "populate")]
    pub backing: BackingArg,
    /// When accepted memory gets its KVM memslot: at accept, or at the
    /// guest's first touch (which then exits once and is completed by the VMM).
    #[arg(long, value_enum, default_value = "on-touch")]
    pub map: MapArg,
    /// Write the JSON run report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write a trace of every accept and pending access here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Largest trace file (e.g. 64M); records past it are counted, not written.
    #[arg(long, default_value = "64M", value_parser = parse_mem)]
    pub trace_cap: u64,
    /// Fault injection: `busy=P[,seed=S]` makes each valid accept answer
    /// TDX_OPERAND_BUSY with probability P (no state changes).
    #[arg(long)]
    pub inject: Option<crate::tdx::inject::InjectSpec>,
    /// Check the private-memory invariants after every accept and mapping
    /// (always on in debug builds).
    #[arg(long)]
    pub check_invariants: bool,
    /// Stop the guest after this many seconds (outcome `timeout`).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Do not echo the guest console to stdout.
    #[arg(long)]
    pub quiet: bool,
    /// VMM log level (stderr).
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    let v = parse_size(s).map_err(|e| e.to_string())?;
    if v == 0 {
        return Err("memory size must not be zero".into());
    }
    Ok(v)
}

impl RunArgs {
    /// The TD configuration these arguments describe.
    pub fn to_config(&self) -> Result<TdConfig, String> {
        let timeout = match self.timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
            Some(t) => return Err(format!("--timeout {t} is not a positive number of seconds")),
        };
        Ok(TdConfig {
            firmware: self.firmware.clone(),
            kernel: self.kernel.clone(),
            mem_bytes: self.mem,
            cmdline: self.cmdline.clone(),
            profile: match self.cpu_profile {
                ProfileArg::Auto => ProfileChoice::Auto,
                ProfileArg::Standard => ProfileChoice::Standard,
                ProfileArg::PvmNative => ProfileChoice::PvmNative,
            },
            backing: match self.backing {
                BackingArg::Populate => Backing::Populate,
                BackingArg::OnTouch => Backing::OnTouch,
            },
            gpaw: abi::tdcall::vp_info::GPAW_48,
            echo_console: !self.quiet,
            timeout,
            trace: self.trace.clone(),
            trace_cap_bytes: self.trace_cap,
            map_on_touch: matches!(self.map, MapArg::OnTouch),
            check_invariants: self.check_invariants || cfg!(debug_assertions),
            inject: self.inject,
            command_line: Vec::new(),
        })
    }
}

/// Parses a full `vmm run ...` argument list into the TD configuration, or
/// the message a user would see (for tests and fuzzing).
pub fn parse_run_args(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<TdConfig, String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    let Command::Run(run) = cli.command;
    run.to_config()
}

fn init_logging(level: LogLevel) {
    let filter = match level {
        LogLevel::Off => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    // env_logger ignores write errors: a closed stderr cannot panic it.
    let _ = env_logger::Builder::new().filter_level(filter).try_init();
}

/// Writes one line to stderr. Never panics: a closed or full stderr
/// (`2>&-`, `2>/dev/full`, `| head -1`) loses the line, not the run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Exit status when the guest ran but an output (the report, or the
/// trace) could not be written completely.
pub const EXIT_OUTPUT_FAILED: i32 = 3;

/// Runs the command line `args`; returns the process exit status.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    // From the first instruction on, SIGINT, SIGTERM, SIGHUP and SIGQUIT
    // are recorded instead of killing the process: a run stops at its
    // next check, writes its report and exits 128 + N.
    let handlers = crate::host::signals::install();
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            // clap's own print ignores nothing: render and write it safely.
            let text = e.render().to_string();
            if code == EXIT_OK {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(text.as_bytes());
            } else {
                say!("{}", text.trim_end());
                refused_without_parse(&args);
            }
            return code;
        }
    };
    if let Err(e) = handlers {
        log::warn!("cannot install the stop-signal handlers ({e}): a signal kills the VMM without a report");
    }
    match cli.command {
        Command::Run(run_args) => run(&args, &run_args),
    }
}

/// A command line that did not parse may still name a report from an
/// earlier run: remove it (if it is one) so no stale success remains.
fn refused_without_parse(args: &[std::ffi::OsString]) {
    let value = |flag: &str| -> Option<PathBuf> {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let a = a.to_string_lossy();
            if a == flag {
                return it.next().map(PathBuf::from);
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(PathBuf::from(v));
            }
        }
        None
    };
    if let Some(report) = value("--report") {
        let inputs: Vec<PathBuf> = ["--firmware", "--kernel", "--trace"]
            .into_iter()
            .filter_map(value)
            .collect();
        let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
        crate::host::files::remove_stale_report(&report, &inputs);
    }
}

/// Refuses the run (exit 2): says why in one line and removes a previous
/// run's report at the report path (unless that path is an input).
fn refuse(args: &RunArgs, message: &str) -> i32 {
    say!("vmm: {message}");
    if let Some(report) = &args.report {
        let inputs: Vec<&std::path::Path> = [Some(&args.firmware), args.kernel.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect();
        crate::host::files::remove_stale_report(report, &inputs);
    }
    EXIT_USAGE
}

fn run(raw: &[std::ffi::OsString], args: &RunArgs) -> i32 {
    use crate::host::files::{check_distinct, Named, Output};
    init_logging(args.log_level);
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(e) => return refuse(args, &e),
    };
    config.command_line = raw
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Outputs must not be an input or each other, checked before any of
    // them is opened.
    let inputs: Vec<Named<'_>> = [
        Some(Named {
            role: "firmware",
            path: &args.firmware,
        }),
        args.kernel.as_deref().map(|path| Named {
            role: "kernel",
            path,
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    let outputs: Vec<Named<'_>> = [("report", &args.report), ("trace", &args.trace)]
        .into_iter()
        .filter_map(|(role, p)| p.as_deref().map(|path| Named { role, path }))
        .collect();
    if let Err(e) = check_distinct(&inputs, &outputs) {
        use crate::host::files::FileError;
        if matches!(e, FileError::SameFile { role: "report", .. }) {
            // The report path is an input: leave that file alone.
            say!("vmm: {e}");
            return EXIT_USAGE;
        }
        return refuse(args, &e.to_string());
    }
    // The report's destination is checked now (a FIFO without a reader,
    // /dev/full, a directory that cannot be written all refuse the run);
    // a previous report there is removed, so a run killed before it ends
    // leaves no stale one.
    let report_out = match &args.report {
        None => None,
        Some(path) => match Output::prepare("report", path, b"\n") {
            Ok(out) => {
                out.remove_previous();
                Some(out)
            }
            Err(e) => {
                say!("vmm: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let td = match Td::build(config) {
        Ok(td) => td,
        Err(e) => return refuse(args, &e.to_string()),
    };
    let report = td.run();
    if let Some(f) = &report.fatal {
        say!("vmm: TD stopped: {}: {}", f.kind, f.message);
    }
    say!(
        "vmm: outcome {} exit_code {} accepted {} bytes in {} calls, {} us",
        report.outcome,
        report.exit_code.map_or("none".into(), |c| c.to_string()),
        report.accept.bytes_accepted,
        report.accept.calls,
        report.timing_us.get("total").copied().unwrap_or(0)
    );
    let mut output_failed = false;
    if let Some(err) = report.trace.as_ref().and_then(|t| t.error.as_ref()) {
        say!("vmm: trace incomplete: {err}");
        output_failed = true;
    }
    if let Some(mut out) = report_out {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|mut json| {
                json.push(b'\n');
                use std::io::Write as _;
                out.write_all(&json).map_err(|e| e.to_string())?;
                out.commit().map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            let path = args.report.as_deref().unwrap_or(std::path::Path::new(""));
            say!("vmm: cannot write report {}: {e}", path.display());
            output_failed = true;
        }
    }
    if let Some(sig) = report.signal_number {
        128 + sig
    } else if output_failed {
        EXIT_OUTPUT_FAILED
    } else if report.success() {
        EXIT_OK
    } else {
        EXIT_GUEST_FAILED
    }
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
        ])
        .unwrap();
        assert_eq!(c.mem_bytes, 8 << 30);
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            c.inject,
            Some(crate::tdx::inject::InjectSpec { busy: 0.5, seed: 9 })
        );
        assert!(c.check_invariants && !c.map_on_touch);
        assert_eq!(c.backing, Backing::OnTouch);
        assert_eq!(c.trace_cap_bytes, 1 << 20);
        for bad in [
            &["--mem", "0"][..],
            &["--timeout", "nan"],
            &["--timeout", "0"],
            &["--inject", "busy=1.5"],
            &["--trace-cap", "-1"],
            &["--cpu-profile", "vmx"],
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
