//! Running `vmm run`: stop signals from the first instruction, outputs
//! checked before any guest runs, a refused run leaving no stale report,
//! the report written atomically, and the exit-status contract.

use super::{Cli, Command, LogLevel, RunArgs, EXIT_GUEST_FAILED, EXIT_OK, EXIT_USAGE};
use crate::vm::Td;
use clap::Parser;
use std::path::PathBuf;

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
    // From the first instruction on, the stop signals are recorded instead
    // of killing the process: a run stops at its next check, writes its
    // report and exits 128 + N (see `host::signals` for every signal).
    let handlers = crate::host::signals::install();
    crate::host::limits::one_thread_arena();
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    // The work runs on a thread whose stack size is ours to choose: the
    // main thread's is whatever `ulimit -s` says (32 KiB would overflow).
    let for_worker = args.clone();
    let worker = std::thread::Builder::new()
        .name("vmm".into())
        .stack_size(crate::host::limits::MAIN_STACK_BYTES)
        .spawn(move || main_on_this_thread(for_worker, handlers));
    match worker.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => {
            say!("vmm: internal error: the VMM's main thread panicked");
            EXIT_GUEST_FAILED
        }
        // No thread to be had (ulimit -u, ulimit -v): this one will do,
        // with the stack `ulimit -s` gave it.
        Err(e) => {
            log::debug!("no thread for the VMM's work ({e}): running on the main thread");
            main_on_this_thread(args, handlers)
        }
    }
}

fn main_on_this_thread(
    args: Vec<std::ffi::OsString>,
    handlers: Result<(), vmm_sys_util::errno::Error>,
) -> i32 {
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
        say!("vmm: cannot install every stop-signal handler ({e}): such a signal kills the VMM without a report");
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
    use crate::host::files::{check_distinct, Named};
    use crate::host::output::Output;
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
    // /dev/full, a directory that cannot be written all refuse the run).
    let report_out = match &args.report {
        None => None,
        Some(path) => match Output::prepare("report", path, b"\n") {
            Ok(out) => Some(out),
            Err(e) => {
                say!("vmm: {e}");
                return EXIT_USAGE;
            }
        },
    };
    // The trace is opened when the TD is built; its path is checked now,
    // with the report's, before KVM or guest RAM is touched.
    if let Some(trace) = &args.trace {
        if let Err(e) = crate::host::output_path::precheck("trace", trace) {
            return refuse(args, &e.to_string());
        }
    }
    // A report on stdout would be interleaved with the console echo.
    if report_out.as_ref().is_some_and(Output::is_stdout) && config.echo_console {
        log::info!("the report goes to stdout: guest console echo turned off");
        config.echo_console = false;
    }
    let td = match Td::build(config) {
        Ok(td) => td,
        Err(e) => return refuse(args, &e.to_string()),
    };
    // The TD is built and will run: a previous report at the path goes
    // now, so a run killed before it ends leaves no stale one. (A refused
    // run removes only a file that reads as one of our reports.)
    if let Some(out) = &report_out {
        out.remove_previous();
    }
    let report = td.run();
    if let Some(f) = &report.fatal {
        // The message may be the guest's own words: kept on this line.
        let message = crate::host::console::one_line(&f.message);
        say!("vmm: TD stopped: {}: {message}", f.kind);
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
        let path = args.report.as_deref().unwrap_or(std::path::Path::new(""));
        // The commit's error names the report itself; the others get the
        // path once here.
        let written = match serde_json::to_vec_pretty(&report) {
            Err(e) => Err(format!("cannot write report {}: {e}", path.display())),
            Ok(mut json) => {
                json.push(b'\n');
                match out.write_all_or_stop(&json) {
                    Err(e) => Err(format!("cannot write report {}: {e}", path.display())),
                    Ok(()) => out.commit().map_err(|e| e.to_string()),
                }
            }
        };
        if let Err(e) = written {
            say!("vmm: {e}");
            output_failed = true;
        }
    }
    // A stop signal during the run, or while the outputs were written.
    if let Some(sig) = report.signal_number.or_else(crate::host::signals::pending) {
        128 + sig
    } else if output_failed {
        EXIT_OUTPUT_FAILED
    } else if report.success() {
        EXIT_OK
    } else {
        EXIT_GUEST_FAILED
    }
}
