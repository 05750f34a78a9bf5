//! `pvm-sched`: run the scheduler, or talk to the running one.
//!
//! ```text
//! pvm-sched [run] [--policy FILE] [--state DIR] [--log FILE]
//! pvm-sched hosts                       owner state, load and guests of every host
//! pvm-sched owner HOST busy|idle|auto   the explicit owner switch
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use pvm_sched::policy::Policy;
use pvm_sched::rm::{self, Options};
use pvm_sched::SchedError;

const USAGE: &str = "usage: pvm-sched [run] [--policy FILE] [--state DIR] [--log FILE]\n       \
pvm-sched hosts\n       pvm-sched owner HOST busy|idle|auto";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("hosts") if args.len() == 1 => rm::ask("hosts").map(|a| print!("{a}")),
        Some("owner") if args.len() == 3 => rm::ask(&args.join(" ")).map(|a| println!("{a}")),
        Some("hosts") | Some("owner") => Err(SchedError::Usage(USAGE.into())),
        // The measurement agent the scheduler starts on each host (policy `agents on`).
        Some("agent") if args.len() == 2 => match args[1].parse::<u64>() {
            Ok(ms) => pvm_sched::agent::run(std::time::Duration::from_millis(ms)),
            Err(_) => Err(SchedError::Usage(format!("bad period {:?}", args[1]))),
        },
        // Helpers the running scheduler starts for one move or checkpoint each.
        Some(op @ ("move" | "hold" | "ckpt")) if args.len() >= 2 => match parse_tid(&args[1]) {
            Some(tid) => rm::one_op(op, tid, args.get(2).map(String::as_str)).map(|m| println!("{m}")),
            None => Err(SchedError::Usage(format!("bad tid {:?}", args[1]))),
        },
        _ => options(&args).and_then(rm::run),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvm-sched: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A tid as PVM prints them: `t40002`, `0x40002` or decimal.
fn parse_tid(s: &str) -> Option<i32> {
    match s.strip_prefix('t').or_else(|| s.strip_prefix("0x")) {
        Some(h) => u32::from_str_radix(h, 16).ok().map(|v| v as i32),
        None => s.parse().ok(),
    }
    .filter(|&t| t > 0)
}

fn options(args: &[String]) -> Result<Options, SchedError> {
    let mut o = Options {
        policy: Policy::default(),
        state_dir: std::env::var_os("PVM_SCHED_STATE").map(PathBuf::from),
        log: None,
    };
    let mut it = args.iter().skip_while(|a| a.as_str() == "run");
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| SchedError::Usage(format!("{a} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--policy" => o.policy = Policy::load(std::path::Path::new(&val()?))?,
            "--state" => o.state_dir = Some(PathBuf::from(val()?)),
            "--log" => o.log = Some(PathBuf::from(val()?)),
            _ => return Err(SchedError::Usage(format!("unknown argument {a:?}\n{USAGE}"))),
        }
    }
    Ok(o)
}
