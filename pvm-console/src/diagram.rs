//! A space-time diagram of a traced run as one self-contained HTML page with inline SVG.
//!
//! Tasks are horizontal lines (time runs left to right), messages are arrows from the send to
//! the matching receive (matched in order per sender, receiver and tag, as PVM delivers them),
//! and migration/checkpoint events are marked with a labelled symbol on the task's line.
//!
//! pvm_migrate, pvm_checkpoint and pvm_restart on pvm-rs's library emit entry and exit records
//! (event ids 120..=122, docs/tracing.md) naming the target task (`TT`) and the result (`CC`,
//! with the new host `HPT` or the epoch `WID`): each call becomes a band on the target task's
//! line from the call's start to its end, labelled with the outcome, and a diamond on the
//! caller's line when the caller is another task.

use crate::tev::Event;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;

#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub tasks: usize,
    pub messages: usize,
    pub markers: usize,
}

struct Lane {
    first: i64,
    last: i64,
    label: String,
}

fn is_send(n: &str) -> bool {
    matches!(n, "send" | "psend" | "mcast")
}
fn is_recv(n: &str) -> bool {
    matches!(n, "recv" | "nrecv" | "trecv" | "precv")
}
fn is_marker(n: &str) -> bool {
    n.contains("migrat") || n.contains("checkpoint") || n.contains("restart") || n == "ckpt"
}

/// A migration, checkpoint or restart call matched from its entry and exit records.
struct Op {
    caller: i32,
    target: i32,
    start: i64,
    end: i64,
    label: String,
}

fn is_op(n: &str) -> bool {
    matches!(n, "migrate" | "checkpoint" | "restart")
}

fn tid_of(v: i64) -> i32 {
    v as i32
}

/// What a finished call did, in words.
fn op_label(name: &str, target: i32, exit: Option<&Event>) -> String {
    let Some(x) = exit else {
        return format!("{name} t{target:x} (no end recorded)");
    };
    let cc = x.int("CC").unwrap_or(-1);
    // PVM error codes are small negative numbers; a host tid (0x8xxxxxxx) is negative as an
    // int too, and is pvm_migrate's success.
    if (-1000..0).contains(&cc) {
        return format!("{name} t{target:x} failed ({cc})");
    }
    match name {
        "migrate" => format!("migrate t{target:x} to host t{:x}", x.int("HPT").unwrap_or(cc) as u32),
        _ => format!("{name} t{target:x} epoch {}", x.int("WID").unwrap_or(cc)),
    }
}

/// Pairs the entry and exit records of the pvm-rs calls (each task makes one at a time).
fn ops(events: &[Event]) -> Vec<Op> {
    let mut open: HashMap<(i32, String), &Event> = HashMap::new();
    let mut v = Vec::new();
    for e in events.iter().filter(|e| is_op(&e.name)) {
        let key = (e.tid, e.name.clone());
        match e.phase {
            "entry" => {
                if let Some(prev) = open.insert(key, e) {
                    let target = prev.int("TT").map_or(prev.tid, tid_of);
                    v.push(Op {
                        caller: prev.tid,
                        target,
                        start: prev.time_us(),
                        end: prev.time_us(),
                        label: op_label(&prev.name, target, None),
                    });
                }
            }
            "exit" => {
                let entry = open.remove(&key);
                let target = e
                    .int("TT")
                    .or_else(|| entry.and_then(|b| b.int("TT")))
                    .map_or(e.tid, tid_of);
                v.push(Op {
                    caller: e.tid,
                    target,
                    start: entry.map_or(e.time_us(), |b| b.time_us()),
                    end: e.time_us(),
                    label: op_label(&e.name, target, Some(e)),
                });
            }
            _ => {}
        }
        if v.len() >= 1 << 16 {
            break;
        }
    }
    let mut rest: Vec<&Event> = open.into_values().collect();
    rest.sort_by_key(|e| e.time_us());
    for b in rest {
        let target = b.int("TT").map_or(b.tid, tid_of);
        v.push(Op {
            caller: b.tid,
            target,
            start: b.time_us(),
            end: b.time_us(),
            label: op_label(&b.name, target, None),
        });
    }
    v
}

/// Renders the events; returns the page and what it shows.
pub fn render(events: &[Event], title: &str) -> (String, Summary) {
    let mut lanes: BTreeMap<i32, Lane> = BTreeMap::new();
    for e in events {
        let t = e.time_us();
        let l = lanes.entry(e.tid).or_insert(Lane {
            first: t,
            last: t,
            label: format!("t{:x}", e.tid),
        });
        l.first = l.first.min(t);
        l.last = l.last.max(t);
        if matches!(e.name.as_str(), "newtask" | "spntask") {
            // A task started from a shell has no program name in the pvmd's event ("-").
            if let Some(n) = e.get("TN").or(e.get("AN")).filter(|n| !n.is_empty() && *n != "-") {
                l.label = format!("t{:x} {}", e.tid, n.rsplit('/').next().unwrap_or(n));
            }
        }
    }
    let calls = ops(events);
    // A target that is not traced itself still gets a line for its marks.
    for o in &calls {
        for (tid, t) in [(o.target, o.start), (o.target, o.end), (o.caller, o.start)] {
            let l = lanes.entry(tid).or_insert(Lane {
                first: t,
                last: t,
                label: format!("t{tid:x}"),
            });
            l.first = l.first.min(t);
            l.last = l.last.max(t);
        }
    }
    let t0 = lanes.values().map(|l| l.first).min().unwrap_or(0);
    let t1 = lanes.values().map(|l| l.last).max().unwrap_or(0).max(t0 + 1);
    let (left, width, row) = (170.0, 900.0, 40.0);
    let x = |t: i64| left + (t - t0) as f64 * width / (t1 - t0) as f64;
    let idx: HashMap<i32, usize> = lanes.keys().enumerate().map(|(i, t)| (*t, i)).collect();
    let y = |tid: i32| 40.0 + idx.get(&tid).copied().unwrap_or(0) as f64 * row;
    let height = 80.0 + lanes.len() as f64 * row;

    // Sends waiting for their receive, per (src, dst, tag).
    let mut pending: HashMap<(i32, i32, i64), VecDeque<i64>> = HashMap::new();
    let mut arrows = Vec::new();
    let mut marks = Vec::new();
    for e in events {
        // The legacy library records a send's destination and tag at its entry and a
        // receive's source and tag at its exit; whichever record carries them is used.
        if is_send(&e.name) && e.get("DST").is_some() {
            let tag = e.int("MC").unwrap_or(-1);
            let dsts: Vec<i32> = e
                .get("DST")
                .map(|d| {
                    d.split(',')
                        .filter_map(|v| v.parse::<i64>().ok())
                        .map(|v| v as i32)
                        .collect()
                })
                .unwrap_or_default();
            for d in dsts {
                let q = pending.entry((e.tid, d, tag)).or_default();
                if q.len() < 1 << 16 {
                    q.push_back(e.time_us());
                }
            }
        } else if is_recv(&e.name) && e.get("SRC").is_some() {
            let (Some(src), tag) = (e.int("SRC"), e.int("MC").unwrap_or(-1)) else {
                continue;
            };
            if let Some(ts) = pending.get_mut(&(src as i32, e.tid, tag)).and_then(|q| q.pop_front()) {
                arrows.push((src as i32, ts, e.tid, e.time_us(), tag, e.int("MNB").unwrap_or(-1)));
            }
        } else if is_marker(&e.name) && !(is_op(&e.name) && e.phase != "-") {
            marks.push((e.tid, e.time_us(), e.name.clone()));
        }
    }

    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;background:#fff;color:#222;margin:16px}}\
         .lane{{stroke:#456;stroke-width:3}}.msg{{stroke:#c33;stroke-width:1.5;fill:none}}\
         .mark{{fill:#f90;stroke:#940}}.op{{fill-opacity:0.7}}text{{font-size:12px}}</style></head><body>\n\
         <h1 style=\"font-size:18px\">{t}</h1>\n<p>{n} tasks, {m} messages, {k} migration/checkpoint markers; \
         time span {span:.3} s</p>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <defs><marker id=\"arr\" markerWidth=\"8\" markerHeight=\"8\" refX=\"8\" refY=\"4\" orient=\"auto\">\
         <path d=\"M0,0 L8,4 L0,8 z\" fill=\"#c33\"/></marker></defs>\n",
        t = html(title),
        n = lanes.len(),
        m = arrows.len(),
        k = marks.len() + calls.len(),
        span = (t1 - t0) as f64 / 1e6,
        w = left + width + 40.0,
        h = height
    );
    for (tid, l) in &lanes {
        let yy = y(*tid);
        let _ = writeln!(
            s,
            "<text x=\"8\" y=\"{:.1}\">{}</text><line class=\"lane\" x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"><title>{}</title></line>",
            yy + 4.0,
            html(&l.label),
            x(l.first),
            x(l.last).max(x(l.first) + 2.0),
            html(&l.label)
        );
    }
    for (src, ts, dst, tr, tag, bytes) in &arrows {
        let _ = writeln!(
            s,
            "<line class=\"msg\" marker-end=\"url(#arr)\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"><title>t{src:x} -&gt; t{dst:x} tag {tag} {bytes} bytes</title></line>",
            x(*ts),
            y(*src),
            x(*tr),
            y(*dst)
        );
    }
    for (tid, t, name) in &marks {
        let (cx, cy) = (x(*t), y(*tid));
        let _ = writeln!(
            s,
            "<path class=\"mark\" d=\"M{:.1},{:.1} l7,7 l-7,7 l-7,-7 z\"><title>{}</title></path><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            cx,
            cy - 7.0,
            html(name),
            cx + 9.0,
            cy - 8.0,
            html(name)
        );
    }
    for o in &calls {
        let (x0, x1, yy) = (x(o.start), x(o.end), y(o.target));
        let _ = writeln!(
            s,
            "<rect class=\"mark op\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" rx=\"3\"><title>{t}</title></rect><text x=\"{x0:.1}\" y=\"{:.1}\">{t}</text>",
            yy - 7.0,
            (x1 - x0).max(6.0),
            yy - 10.0,
            t = html(&o.label)
        );
        if o.caller != o.target {
            let cy = y(o.caller);
            let _ = writeln!(
                s,
                "<path class=\"mark\" d=\"M{x0:.1},{:.1} l5,5 l-5,5 l-5,-5 z\"><title>{}</title></path>",
                cy - 5.0,
                html(&o.label)
            );
        }
    }
    // Time axis: five intervals, labelled in milliseconds or seconds by the span.
    let span = (t1 - t0) as f64 / 1e6;
    let axis_y = height - 24.0;
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\" stroke=\"#999\"/>",
        left + width
    );
    for k in 0..=5 {
        let tx = left + width * k as f64 / 5.0;
        let v = span * k as f64 / 5.0;
        let label = if span < 1.0 {
            format!("{:.1} ms", v * 1e3)
        } else {
            format!("{v:.2} s")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            axis_y - 4.0,
            axis_y + 4.0,
            axis_y + 16.0
        );
    }
    s.push_str("</svg>\n</body></html>\n");
    (
        s,
        Summary {
            tasks: lanes.len(),
            messages: arrows.len(),
            markers: marks.len() + calls.len(),
        },
    )
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_match_sends_to_receives() {
        let lines = [
            "10.000000 t40001 newtask - TN=/bin/master",
            "10.100000 t40001 send entry DST=262146 MC=5 MNB=4",
            "10.100001 t40001 send exit CC=0",
            "10.100100 t40001 send exit DST=262146 MC=5 MB=8",
            "10.200000 t40002 recv exit SRC=262145 MC=5 MB=4",
            "10.300000 t40002 recv exit SRC=262145 MC=5 MB=8",
            "10.400000 t40002 migrate - DST=262144",
            "10.500000 t40002 recv exit SRC=262147 MC=5 MB=8",
        ];
        let ev: Vec<Event> = lines.iter().map(|l| Event::parse(l).unwrap()).collect();
        let (page, sum) = render(&ev, "run <1>");
        assert_eq!(
            sum,
            Summary {
                tasks: 2,
                messages: 2,
                markers: 1
            }
        );
        assert!(page.contains("t40001 master"));
        assert!(page.contains("run &lt;1&gt;"));
        assert_eq!(page.matches("class=\"msg\"").count(), 2);
        let (empty, s0) = render(&[], "x");
        assert!(empty.contains("0 tasks"));
        assert_eq!(s0, Summary::default());
        assert!(empty.contains("</svg>"));
    }

    #[test]
    fn migrate_and_checkpoint_calls_become_bands_on_the_target() {
        let lines = [
            "10.000000 t40001 send entry DST=262146 MC=5 MNB=4",
            "10.100000 t40002 recv exit SRC=262145 MC=5 MB=4",
            "10.200000 t40001 checkpoint entry TT=262146 TF=0",
            "10.400000 t40001 checkpoint exit TT=262146 CC=3 WID=3",
            "10.500000 t40001 migrate entry TT=262146 HN=h2",
            "10.900000 t40001 migrate exit TT=262146 CC=-2147221504 HPT=-2147221504",
            "11.000000 t40001 migrate entry TT=262146 HN=h2",
            "11.300000 t40001 migrate exit TT=262146 CC=-24 HPT=0",
            "11.400000 t40001 restart entry TT=262147 WID=-1",
        ];
        let ev: Vec<Event> = lines.iter().map(|l| Event::parse(l).unwrap()).collect();
        let (page, sum) = render(&ev, "ops");
        assert_eq!(sum.markers, 4, "{page}");
        assert_eq!(sum.tasks, 3, "the restart target gets its own line");
        assert!(page.contains("checkpoint t40002 epoch 3"), "{page}");
        assert!(page.contains("migrate t40002 to host t80040000"), "{page}");
        assert!(page.contains("migrate t40002 failed (-24)"), "{page}");
        assert!(page.contains("restart t40003 (no end recorded)"), "{page}");
        assert_eq!(page.matches("class=\"mark op\"").count(), 4);
        // A diamond on the caller's line for each of the three calls on another task's.
        assert_eq!(page.matches("<path class=\"mark\"").count(), 4);
    }
}
