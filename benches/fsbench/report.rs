//! Samples, medians and the Markdown table.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::mounts::{Peer, Usage};

#[derive(Clone, Debug)]
struct Metric {
    workload: String,
    name: String,
    unit: String,
    higher_better: bool,
}

#[derive(Default)]
pub struct Results {
    metrics: Vec<Metric>,
    samples: BTreeMap<(usize, Peer), Vec<f64>>,
    usage: BTreeMap<(String, Peer), Vec<Usage>>,
    pub failures: Vec<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Three significant digits, no exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Results {
    pub fn record(&mut self, wl: &str, name: &str, unit: &str, higher_better: bool, peer: Peer, v: f64) {
        let idx = match self
            .metrics
            .iter()
            .position(|m| m.workload == wl && m.name == name)
        {
            Some(i) => i,
            None => {
                self.metrics.push(Metric {
                    workload: wl.into(),
                    name: name.into(),
                    unit: unit.into(),
                    higher_better,
                });
                self.metrics.len() - 1
            }
        };
        self.samples.entry((idx, peer)).or_default().push(v);
    }

    pub fn record_usage(&mut self, wl: &str, peer: Peer, u: Usage) {
        self.usage.entry((wl.to_string(), peer)).or_default().push(u);
    }

    fn cell(&self, idx: usize, peer: Peer) -> (String, Option<f64>) {
        match self.samples.get(&(idx, peer)) {
            Some(v) if !v.is_empty() => {
                let m = median(v);
                let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let text = if v.len() > 1 {
                    format!("{} ({}-{})", num(m), num(min), num(max))
                } else {
                    num(m)
                };
                (text, Some(m))
            }
            _ => ("-".into(), None),
        }
    }

    pub fn markdown(&self, header: &[String], peers: &[Peer]) -> String {
        let mut out = String::from("# rossfs benchmark\n\n");
        for h in header {
            let _ = writeln!(out, "- {h}");
        }
        let others: Vec<Peer> = peers.iter().copied().filter(|p| *p != Peer::Rossfs).collect();
        let has_rossfs = peers.contains(&Peer::Rossfs);
        out.push_str(
            "\nWrites are timed until the data is durable in the bucket (polled through the S3 API \
             with the mount kept); rows marked \"not durable\" stop at close()/exit for comparison. \
             Ratios are rossfs / peer of the medians: above 1 is better for rossfs where higher is \
             better (↑), below 1 is better where lower is better (↓).\n\n",
        );
        out.push_str("| workload | metric | unit |");
        for p in peers {
            let _ = write!(out, " {} |", p.name());
        }
        if has_rossfs {
            for p in &others {
                let _ = write!(out, " rossfs/{} |", p.name());
            }
        }
        out.push_str("\n|---|---|---|");
        let cols = peers.len() + if has_rossfs { others.len() } else { 0 };
        out.push_str(&"---|".repeat(cols));
        out.push('\n');
        for (idx, m) in self.metrics.iter().enumerate() {
            let arrow = if m.higher_better { "↑" } else { "↓" };
            let _ = write!(out, "| {} | {} | {} {arrow} |", m.workload, m.name, m.unit);
            let mut medians = BTreeMap::new();
            for p in peers {
                let (text, med) = self.cell(idx, *p);
                let _ = write!(out, " {text} |");
                medians.insert(*p, med);
            }
            if has_rossfs {
                for p in &others {
                    let r = match (medians[&Peer::Rossfs], medians[p]) {
                        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                        _ => "-".into(),
                    };
                    let _ = write!(out, " {r} |");
                }
            }
            out.push('\n');
        }
        let mounted: Vec<Peer> = peers.iter().copied().filter(|p| *p != Peer::Raw).collect();
        if !mounted.is_empty() {
            out.push_str(
                "\nDaemon cost per repetition (median): CPU seconds (user+system, /proc/PID/stat) \
                 spent during the timed part, and peak RSS (VmHWM, /proc/PID/status) in MiB.\n\n\
                 | workload |",
            );
            for p in &mounted {
                let _ = write!(out, " {} CPU s | {} peak RSS MiB |", p.name(), p.name());
            }
            out.push_str("\n|---|");
            out.push_str(&"---|".repeat(mounted.len() * 2));
            out.push('\n');
            let mut wls: Vec<&String> = self.usage.keys().map(|(w, _)| w).collect();
            wls.dedup();
            for wl in wls {
                let _ = write!(out, "| {wl} |");
                for p in &mounted {
                    match self.usage.get(&(wl.clone(), *p)) {
                        Some(v) if !v.is_empty() => {
                            let cpu: Vec<f64> = v.iter().map(|u| u.cpu).collect();
                            let rss: Vec<f64> = v.iter().map(|u| u.hwm_kib as f64 / 1024.0).collect();
                            let _ = write!(out, " {} | {} |", num(median(&cpu)), num(median(&rss)));
                        }
                        _ => out.push_str(" - | - |"),
                    }
                }
                out.push('\n');
            }
        }
        if !self.failures.is_empty() {
            out.push_str("\n## Failures\n\n");
            for f in &self.failures {
                let _ = writeln!(out, "- {}", f.replace('\n', " "));
            }
        }
        out
    }
}

pub fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| format!("{:.1} GiB RAM", kib / 1024.0 / 1024.0))
        .unwrap_or_default()
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
