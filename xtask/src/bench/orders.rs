//! The acceptance orders side by side (`cargo xtask bench --orders`):
//! Linux's eager and lazy acceptance ("accept first", order (b)) against
//! "access first" (order (a), `ve_accept=on` in a DEBUG TD: every page
//! accepted by its #VE), each booting the kernel with `fw.accept=none` and
//! running a workload, at 4 and 64 GiB. Per point: time to `kernel_ready`,
//! the workload's time, accepts, exits, #VEs and peak RSS, medians of
//! interleaved repeats after a warm-up. Then each order once under a host
//! that removes written pages (`--inject remove=Q,delay=D`): what the run
//! ends with. Writes `orders.json` and `orders.md`.

use super::stats::Stat;
use super::{create_dir, host_ram, progress_bar, run_vmm, write, write_json};
use crate::bench::runner::run_vmm_any;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use vmm::Report;

const GIB: u64 = 1 << 30;
/// The workload every point runs after `kernel_ready`.
const WORKLOAD: &str = "workload=256M";

/// One acceptance order.
struct Order {
    name: &'static str,
    cmdline: &'static str,
    /// `--td-attributes`: access first needs #VE (DEBUG, no SEPT_VE_DISABLE).
    attributes: &'static str,
}

const ORDERS: [Order; 3] = [
    Order {
        name: "eager",
        cmdline: "fw.accept=none accept_memory=eager",
        attributes: "0x10000000",
    },
    Order {
        name: "lazy",
        cmdline: "fw.accept=none accept_memory=lazy",
        attributes: "0x10000000",
    },
    Order {
        name: "access-first",
        cmdline: "fw.accept=none ve_accept=on",
        attributes: "0x1",
    },
];

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderPoint {
    pub order: String,
    pub mem_gib: u64,
    pub backing: String,
    pub runs: usize,
    pub kernel_ready_ms: Stat,
    /// `kernel_ready` to `workload_done`.
    pub workload_ms: Stat,
    pub accepts: Stat,
    pub bytes_accepted: Stat,
    pub exits: Stat,
    pub ve_injected: Stat,
    pub rss_peak_mib: Stat,
}

/// One order under a host that removes written pages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemovalRun {
    pub order: String,
    pub inject: String,
    pub outcome: String,
    pub fatal: Option<String>,
    pub pages_removed: u64,
    pub removed_pages_reaccepted: u64,
    pub workload_zero_pages: u64,
}

/// `orders.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrdersResults {
    pub host_cores: usize,
    pub profile: String,
    pub pending_mechanism: String,
    pub repeats: usize,
    pub workload: String,
    pub points: Vec<OrderPoint>,
    pub removals: Vec<RemovalRun>,
}

fn ms(r: &Report, mark: &str) -> Option<f64> {
    r.timing_us.get(mark).map(|us| *us as f64 / 1e3)
}

/// Runs the orders in `profile`, `repeats` interleaved times, and writes
/// `orders.json` and `orders.md` into `out`.
pub fn orders(
    out: &Path,
    profile: &str,
    repeats: usize,
    sizes_gib: &[u64],
) -> Result<OrdersResults> {
    create_dir(out)?;
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    let report = out.join("orders-report.json");
    let host = host_ram();
    let backing_for = |order: &Order, gib: u64| {
        // Eager touches all RAM: beyond half the host's, pages come at
        // first touch (the accepts are measured, not the zeroing).
        if order.name == "eager" && gib * GIB > host / 2 {
            "on-touch"
        } else {
            "populate"
        }
    };
    let run = |order: &Order, gib: u64, extra: &str, inject: Option<&str>, what: &str| {
        let mem = format!("{gib}G");
        let cmdline = format!("{} {extra}", order.cmdline);
        let mut args = vec![
            "--mem",
            &mem,
            "--cpu-profile",
            profile,
            "--backing",
            backing_for(order, gib),
            "--td-attributes",
            order.attributes,
            "--cmdline",
            &cmdline,
        ];
        if let Some(spec) = inject {
            args.extend(["--inject", spec]);
            return run_vmm_any(&vmm, &images, true, args, &report, what);
        }
        run_vmm(&vmm, &images, true, args, &report, what)
    };
    run(&ORDERS[0], 4, WORKLOAD, None, "warm-up")?;
    let cases: Vec<(&Order, u64)> = sizes_gib
        .iter()
        .flat_map(|&g| ORDERS.iter().map(move |o| (o, g)))
        .collect();
    let mut reports: Vec<Vec<Report>> = cases.iter().map(|_| Vec::new()).collect();
    let bar = progress_bar(cases.len() * repeats, "orders");
    for _ in 0..repeats {
        for (i, (order, gib)) in cases.iter().enumerate() {
            bar.set_message(format!("{} {gib}G", order.name));
            let what = format!("{} at {gib} GiB", order.name);
            reports[i].push(run(order, *gib, WORKLOAD, None, &what)?);
            bar.inc(1);
        }
    }
    bar.finish_with_message("done");
    let stat = |runs: &[Report], f: &dyn Fn(&Report) -> Option<f64>| {
        Stat::of(runs.iter().filter_map(f).collect())
    };
    let mut points = Vec::new();
    for ((order, gib), runs) in cases.iter().zip(&reports) {
        points.push(OrderPoint {
            order: order.name.into(),
            mem_gib: *gib,
            backing: backing_for(order, *gib).into(),
            runs: runs.len(),
            kernel_ready_ms: stat(runs, &|r| ms(r, "kernel_ready"))?,
            workload_ms: stat(runs, &|r| {
                Some(ms(r, "workload_done")? - ms(r, "kernel_ready")?)
            })?,
            accepts: stat(runs, &|r| Some(r.accept.calls as f64))?,
            bytes_accepted: stat(runs, &|r| Some(r.accept.bytes_accepted as f64))?,
            exits: stat(runs, &|r| Some(r.exits.total as f64))?,
            ve_injected: stat(runs, &|r| Some(r.exits.ve_injected as f64))?,
            rss_peak_mib: stat(runs, &|r| {
                Some(r.host.rss_peak_bytes as f64 / GIB as f64 * 1024.0)
            })?,
        });
    }
    // A host that removes pages the guest wrote: Linux's lazy policy (it
    // accepts 2 MiB at a time, so fewer, likelier removals) and access
    // first (4 KiB at a time).
    let mut removals = Vec::new();
    for (order, extra, spec) in [
        (&ORDERS[1], "workload=1G", "remove=0.05,delay=4,seed=3"),
        (&ORDERS[2], "workload=64M", "remove=0.01,delay=64,seed=1"),
    ] {
        let what = format!("{} under --inject {spec}", order.name);
        let r = run(order, 4, extra, Some(spec), &what)?;
        removals.push(RemovalRun {
            order: order.name.into(),
            inject: spec.into(),
            outcome: r.outcome.as_str().into(),
            fatal: r.fatal.as_ref().map(|f| f.message.clone()),
            pages_removed: r.host.pages_removed,
            removed_pages_reaccepted: r.host.removed_pages_reaccepted,
            workload_zero_pages: r.guest.get("workload_zero_pages").copied().unwrap_or(0),
        });
    }
    let _ = std::fs::remove_file(&report);
    let first = reports.first().and_then(|r| r.first());
    let results = OrdersResults {
        host_cores: super::host_cores(),
        profile: first.map_or_else(|| profile.to_string(), |r| r.cpu_profile_name().to_string()),
        pending_mechanism: first.map_or_else(String::new, |r| {
            r.host.pending_mechanism.as_str().to_string()
        }),
        repeats,
        workload: WORKLOAD.into(),
        points,
        removals,
    };
    write_json(&out.join("orders.json"), &results)?;
    write(&out.join("orders.md"), &markdown(&results))?;
    Ok(results)
}

/// `orders.md`: the table and the removal runs.
pub fn markdown(r: &OrdersResults) -> String {
    let mut s = format!(
        "Profile {}, `--pending {}`, {} host cores, medians of {} interleaved repeats after a warm-up (min-max), \
         kernel booted with `fw.accept=none` and `{}`.\n\n\
         | RAM | order | kernel_ready | workload | accepts | bytes accepted | exits | #VE | peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r.profile, r.pending_mechanism, r.host_cores, r.repeats, r.workload
    );
    for p in &r.points {
        let range = |st: &Stat| format!("{:.1} ms ({:.1}-{:.1})", st.median, st.min, st.max);
        s.push_str(&format!(
            "| {} GiB | {}{} | {} | {} | {:.0} | {:.0} MiB | {:.0} | {:.0} | {:.0} MiB |\n",
            p.mem_gib,
            p.order,
            if p.backing == "on-touch" { " *" } else { "" },
            range(&p.kernel_ready_ms),
            range(&p.workload_ms),
            p.accepts.median,
            p.bytes_accepted.median / (1 << 20) as f64,
            p.exits.median,
            p.ve_injected.median,
            p.rss_peak_mib.median,
        ));
    }
    if r.points.iter().any(|p| p.backing == "on-touch") {
        s.push_str(
            "\n\\* `--backing on-touch`: eager beyond half the host's RAM gets host pages at first touch.\n",
        );
    }
    s.push_str(
        "\nUnder a host that removes pages after the guest wrote them (`--inject remove=Q,delay=D`, 4 GiB):\n\n\
         | order | inject | outcome | pages removed | accepted again | workload pages read as zeros |\n\
         |---|---|---|---|---|---|\n",
    );
    for x in &r.removals {
        s.push_str(&format!(
            "| {} | `{}` | `{}`{} | {} | {} | {} |\n",
            x.order,
            x.inject,
            x.outcome,
            x.fatal.as_ref().map_or(String::new(), |f| format!(": {f}")),
            x.pages_removed,
            x.removed_pages_reaccepted,
            x.workload_zero_pages
        ));
    }
    s
}
