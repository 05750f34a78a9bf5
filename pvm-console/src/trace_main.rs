//! `pvmtrace`: collect PVM trace events and draw them.
//!
//! `pvmtrace collect [-o FILE] [-t SECONDS] [-m MASK] -- PROGRAM [ARGS]` spawns PROGRAM as a
//! traced job (PvmTaskTrace, trace events sent to this task) and writes each event as a text
//! line until every traced task has exited (or the time limit). `pvmtrace collect --tracer`
//! instead registers with the pvmd as the system tracer (`pvm_reg_tracer`) and records events of
//! every task started with tracing on, until interrupted or the time limit.
//! `pvmtrace html TRACE [-o OUT.html] [--title T]` turns a trace file into a self-contained
//! HTML page with an SVG space-time diagram.

use pvm_console::{diagram, ffi, tev};
use std::io::Write;
use std::time::{Duration, Instant};

const TRC_TAG: i32 = 0x7e7e;
const PVM_TRACE_TID: i32 = 6;
const PVM_TRACE_CODE: i32 = 7;
const PVM_TRACE_BUFFER: i32 = 8;
const PVM_TRACE_OPTIONS: i32 = 9;

fn usage(code: i32) -> ! {
    println!(
        "usage: pvmtrace collect [-o FILE] [-t SECONDS] [-m MASK|default|all] -- PROGRAM [ARGS...]\n\
         \x20      pvmtrace collect --tracer [-o FILE] [-t SECONDS]\n\
         \x20      pvmtrace html TRACE [-o OUT.html] [--title TITLE]\n\
         \x20      pvmtrace dump TRACE\n\
         \n\
         collect  spawn PROGRAM with tracing on (events sent to this task) and write one event per\n\
         \x20        line to FILE (default pvm.trace) until all its tasks exit or SECONDS (default 60)\n\
         \x20        pass; --tracer registers as the pvmd's tracer (pvm_reg_tracer) instead.\n\
         html     draw the trace as an HTML/SVG space-time diagram (tasks as lines, messages as\n\
         \x20        arrows, migration and checkpoint markers) in OUT.html (default TRACE.html).\n\
         dump     print the events, one per line.\n\
         Events are those of the legacy PVM 3.4 library (pvmtev.h); the trace file is text:\n\
         `<sec>.<usec> t<tid> <event> <entry|exit|-> DID=value ...`."
    );
    std::process::exit(code)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(|s| s.as_str()) {
        Some("collect") => collect(&args[1..]),
        Some("html") => html(&args[1..]),
        Some("dump") => {
            let Some(p) = args.get(1) else { usage(2) };
            for e in read(p) {
                println!("{e}");
            }
        }
        Some("--help") | Some("-h") => usage(0),
        _ => usage(2),
    }
}

fn read(path: &str) -> Vec<tev::Event> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("pvmtrace: {path}: {e}");
        std::process::exit(1)
    });
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(tev::Event::parse)
        .collect()
}

fn html(args: &[String]) {
    let mut input = None;
    let mut outp = None;
    let mut title = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-o" => {
                i += 1;
                outp = args.get(i).cloned();
            }
            "--title" => {
                i += 1;
                title = args.get(i).cloned();
            }
            s => input = Some(s.to_string()),
        }
        i += 1;
    }
    let Some(input) = input else { usage(2) };
    let evs = read(&input);
    let outp = outp.unwrap_or_else(|| format!("{input}.html"));
    let (page, sum) = diagram::render(&evs, title.as_deref().unwrap_or(&input));
    if let Err(e) = std::fs::write(&outp, page) {
        eprintln!("pvmtrace: {outp}: {e}");
        std::process::exit(1);
    }
    println!(
        "{outp}: {} tasks, {} messages, {} markers",
        sum.tasks, sum.messages, sum.markers
    );
}

fn collect(args: &[String]) {
    let mut outp = "pvm.trace".to_string();
    let mut secs = 60u64;
    let mut mask = "default".to_string();
    let mut tracer = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-o" => {
                i += 1;
                outp = args.get(i).cloned().unwrap_or_else(|| usage(2));
            }
            "-t" => {
                i += 1;
                secs = args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage(2));
            }
            "-m" => {
                i += 1;
                mask = args.get(i).cloned().unwrap_or_else(|| usage(2));
            }
            "--tracer" => tracer = true,
            "--" => {
                i += 1;
                break;
            }
            _ => break,
        }
        i += 1;
    }
    let prog = &args[i.min(args.len())..];
    if prog.is_empty() && !tracer {
        usage(2);
    }
    let mask = match mask.as_str() {
        "all" => String::from_utf8(vec![b'O'; 35]).unwrap_or_default(),
        "default" => tev::mask_of(&tev::with_extensions(ffi::event_names()), tev::DEFAULT_EVENTS),
        _ => mask,
    };
    let me = ffi::mytid();
    if me < 0 {
        eprintln!("pvmtrace: can't enroll: {}", ffi::errtext(me));
        std::process::exit(1);
    }
    // The decoder reads until the end of each message; the library need not report that.
    ffi::setopt(3, 0);
    let mut file = std::fs::File::create(&outp).unwrap_or_else(|e| {
        eprintln!("pvmtrace: {outp}: {e}");
        std::process::exit(1)
    });
    let _ = writeln!(
        file,
        "# pvmtrace 1: <sec>.<usec> t<tid> <event> <entry|exit|-> DID=value ..."
    );
    let mut live: Vec<i32> = Vec::new();
    if tracer {
        let cc = ffi::reg_tracer(TRC_TAG, TRC_TAG + 1, &mask);
        if cc < 0 {
            eprintln!("pvmtrace: pvm_reg_tracer: {}", ffi::errtext(cc));
            ffi::exit();
            std::process::exit(1);
        }
        // Only if the library did not already publish its settings (the legacy one does).
        let published = ffi::mboxinfo("###_PVM_TRACER_###").is_ok_and(|m| m.iter().any(|c| !c.entries.is_empty()));
        if !published {
            ffi::put_tracer_info(me, TRC_TAG, TRC_TAG + 1, &mask);
        }
    } else {
        ffi::setopt(PVM_TRACE_TID, me);
        ffi::setopt(PVM_TRACE_CODE, TRC_TAG);
        ffi::setopt(PVM_TRACE_BUFFER, 0);
        // PvmTraceFull: every event with its data (the only option that yields records).
        ffi::setopt(PVM_TRACE_OPTIONS, 1);
        ffi::settmask(ffi::PVM_TASK_CHILD, &mask);
        let (cc, tids) = ffi::spawn(&prog[0], &prog[1..], ffi::PVM_TASK_TRACE, None, 1);
        if cc < 1 {
            eprintln!(
                "pvmtrace: spawn {}: {}",
                prog[0],
                ffi::errtext(if cc < 0 { cc } else { tids[0] })
            );
            ffi::exit();
            std::process::exit(1);
        }
        live.push(tids[0]);
    }
    let mut dec = tev::Decoder::new(tev::with_extensions(ffi::event_names()), ffi::did_names());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0usize;
    let mut seen_end = false;
    while Instant::now() < deadline {
        let Some(ffi::Msg { src, .. }) = ffi::trecv(-1, TRC_TAG, 200_000) else {
            // Idle: once every task we know of has ended, we are done.
            if !tracer && seen_end && live.is_empty() {
                break;
            }
            continue;
        };
        dec.set_source(src);
        for e in dec.message(&mut ffi::RecvBuf) {
            match e.name.as_str() {
                "newtask" | "spntask" if !live.contains(&e.tid) => live.push(e.tid),
                "endtask" => {
                    live.retain(|t| *t != e.tid);
                    seen_end = true;
                }
                "exit" if e.phase == "exit" || e.phase == "entry" => {
                    live.retain(|t| *t != e.tid);
                    seen_end = true;
                }
                _ => {}
            }
            let _ = writeln!(file, "{e}");
            n += 1;
        }
    }
    let _ = file.flush();
    eprintln!("pvmtrace: {n} events written to {outp}");
    ffi::exit();
}
