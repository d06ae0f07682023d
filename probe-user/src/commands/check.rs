//! `synscope check`: the first minute on an unknown machine. Can synscope trace here, with
//! which hooks, how are the listen queues sized, and which listening sockets are at risk?

use std::{fs, io::Write, path::Path};

use crate::{
    host::{
        inventory::{self, NetnsState},
        preflight,
        sockdiag::DiagListener,
    },
    report::Sysctls,
    trace::{TraceOptions, hooks::HookChoice, loader::Tracer},
};

/// What check found; printed by [`write`].
pub struct Findings {
    pub kernel: String,
    pub btf: Option<u64>,
    pub lockdown: Option<String>,
    pub kprobes: bool,
    /// Hooks per stage, or why tracing is impossible.
    pub tracing: Result<Vec<String>, String>,
    pub namespaces: Vec<NetnsState>,
}

/// Prints the findings; exits 0 when synscope can trace here.
pub fn run(hooks: HookChoice) -> anyhow::Result<u8> {
    preflight::require_root()?;
    let mut stdout = std::io::stdout().lock();
    check(&mut stdout, hooks)
}

fn check(out: &mut dyn Write, hooks: HookChoice) -> anyhow::Result<u8> {
    let options = TraceOptions {
        hooks,
        // Whether the phases after accept() can be traced here is part of the answer.
        phases: true,
        syn_events: false,
        ..Default::default()
    };
    let tracing = Tracer::start(&options)
        .map(|tracer| {
            tracer
                .hooks
                .iter()
                .map(|hook| {
                    let mut line = format!(
                        "{:<18} {}",
                        hook.stage.name(),
                        hook.active.as_deref().unwrap_or("unavailable")
                    );
                    for (label, why) in &hook.skipped {
                        line.push_str(&format!("\n    not {label}: {why}"));
                    }
                    if let Some((label, why)) = &hook.missed {
                        line.push_str(&format!("\n    without {label}: {why}"));
                    }
                    line
                })
                .collect()
        })
        .map_err(|e| format!("{e:#}"));
    let findings = Findings {
        kernel: preflight::kernel_release(),
        btf: fs::metadata("/sys/kernel/btf/vmlinux")
            .ok()
            .map(|m| m.len()),
        lockdown: fs::read_to_string("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| {
                // "none [integrity] confidentiality": the bracketed word is in force.
                s.split_whitespace()
                    .find(|w| w.starts_with('['))
                    .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
            }),
        kprobes: Path::new("/sys/bus/event_source/devices/kprobe").exists(),
        tracing,
        namespaces: inventory::read_all(),
    };
    write(&findings, out)?;
    Ok(if findings.tracing.is_ok() { 0 } else { 1 })
}

pub fn write(f: &Findings, out: &mut dyn Write) -> anyhow::Result<()> {
    match &f.tracing {
        Ok(_) => writeln!(out, "synscope check: synscope can trace on this machine")?,
        Err(why) => writeln!(out, "synscope check: synscope cannot trace here: {why}")?,
    }
    writeln!(out, "kernel    Linux {}", f.kernel)?;
    match f.btf {
        Some(size) => writeln!(
            out,
            "BTF       /sys/kernel/btf/vmlinux ({} KiB)",
            size / 1024
        )?,
        None => writeln!(
            out,
            "BTF       missing: synscope needs a kernel built with CONFIG_DEBUG_INFO_BTF"
        )?,
    }
    writeln!(
        out,
        "lockdown  {}",
        f.lockdown.as_deref().unwrap_or("unknown")
    )?;
    writeln!(
        out,
        "kprobes   {}",
        if f.kprobes {
            "available"
        } else {
            "unavailable (no kprobe PMU): tracepoints only"
        }
    )?;
    if let Ok(hooks) = &f.tracing {
        writeln!(out, "hooks")?;
        for hook in hooks {
            writeln!(out, "  {hook}")?;
        }
    }
    for ns in &f.namespaces {
        if ns.listeners.is_empty() {
            continue;
        }
        writeln!(out)?;
        writeln!(out, "netns {}", ns.inode)?;
        writeln!(out, "  {}", sysctl_line(&ns.sysctls))?;
        writeln!(
            out,
            "  {:<24}{:>8}{:>7}{:>8}  risk",
            "listening on", "backlog", "queue", "drops"
        )?;
        let mut listeners = ns.listeners.clone();
        listeners.sort_by_key(|l| (l.port, l.addr));
        for l in &listeners {
            writeln!(
                out,
                "  {:<24}{:>8}{:>7}{:>8}  {}",
                endpoint(l),
                l.backlog,
                l.accept_queue,
                l.drops,
                risk(l, &ns.sysctls)
            )?;
        }
    }
    Ok(())
}

fn endpoint(l: &DiagListener) -> String {
    match l.addr {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", l.port),
        v4 => format!("{v4}:{}", l.port),
    }
}

fn sysctl_line(s: &Sysctls) -> String {
    let show = |v: Option<u32>| v.map_or("?".to_owned(), |v| v.to_string());
    format!(
        "net.core.somaxconn {}, net.ipv4.tcp_max_syn_backlog {}\n  \
         net.ipv4.tcp_syncookies {}, net.ipv4.tcp_abort_on_overflow {}",
        show(s.somaxconn),
        show(s.tcp_max_syn_backlog),
        show(s.tcp_syncookies),
        show(s.tcp_abort_on_overflow)
    )
}

/// Why a listening socket is at risk of dropping connections, or "-".
pub fn risk(l: &DiagListener, sysctls: &Sysctls) -> String {
    let mut risks = Vec::new();
    // The queue holds backlog + 1 children before it refuses more.
    if l.accept_queue > l.backlog {
        risks.push("queue FULL".to_owned());
    } else if l.backlog > 0 && l.accept_queue * 10 >= l.backlog * 8 {
        risks.push("queue >80%".to_owned());
    }
    if l.drops > 0 {
        risks.push(format!("dropped {}", l.drops));
    }
    if sysctls.somaxconn == Some(l.backlog) && l.backlog < 4096 {
        risks.push("clamped by somaxconn".to_owned());
    }
    if risks.is_empty() {
        "-".to_owned()
    } else {
        risks.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(queue: u32, backlog: u32, drops: u32) -> DiagListener {
        DiagListener {
            addr: "0.0.0.0".parse().unwrap(),
            port: 8080,
            accept_queue: queue,
            backlog,
            drops,
            inode: 1,
        }
    }

    #[test]
    fn flags_full_and_dropping_sockets() {
        let sysctls = Sysctls {
            somaxconn: Some(4096),
            ..Default::default()
        };
        assert_eq!(risk(&listener(0, 128, 0), &sysctls), "-");
        assert_eq!(risk(&listener(129, 128, 0), &sysctls), "queue FULL");
        assert_eq!(
            risk(&listener(110, 128, 3), &sysctls),
            "queue >80%, dropped 3"
        );
        let clamped = Sysctls {
            somaxconn: Some(128),
            ..Default::default()
        };
        assert_eq!(risk(&listener(0, 128, 0), &clamped), "clamped by somaxconn");
    }

    #[test]
    fn says_why_it_cannot_trace() {
        let findings = Findings {
            kernel: "6.1.0".into(),
            btf: None,
            lockdown: None,
            kprobes: false,
            tracing: Err("this kernel has no BTF".into()),
            namespaces: vec![NetnsState {
                inode: 5,
                listeners: vec![listener(129, 128, 7)],
                counters: Default::default(),
                sysctls: Sysctls::default(),
            }],
        };
        let mut out = Vec::new();
        write(&findings, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("synscope check: synscope cannot trace here: this kernel has no BTF")
        );
        assert!(text.contains("BTF       missing"));
        assert!(text.contains("0.0.0.0:8080"));
        assert!(text.contains("queue FULL, dropped 7"));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line}");
        }
    }
}
