//! When to stop tracing: Ctrl-C (SIGINT), SIGTERM (timeout, systemd, Kubernetes) or SIGHUP
//! (a closed terminal, a supervisor), a duration, or the traced command's exit; and what a
//! signal does once tracing has stopped: it ends synscope at once.
//!
//! The handlers are installed by [`listen`] before anything is loaded into the kernel, so a
//! stop signal that comes while synscope starts is kept (the default action would end the
//! process before the report), and every view of the signals sees the same count.

use std::{
    process::ExitStatus,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
};

/// How many of each stop signal have arrived since [`listen`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub interrupt: u32,
    pub terminate: u32,
    pub hangup: u32,
}

impl Received {
    fn any(self) -> bool {
        self.interrupt + self.terminate + self.hangup > 0
    }
}

static RECEIVED: OnceLock<watch::Sender<Received>> = OnceLock::new();

/// Starts counting SIGINT, SIGTERM and SIGHUP (idempotent; call it inside the runtime, as early
/// as possible). From then on these signals no longer end the process by themselves.
pub fn listen() -> watch::Receiver<Received> {
    RECEIVED
        .get_or_init(|| {
            let (sender, _) = watch::channel(Received::default());
            // Registered here, synchronously: a signal that comes before the task first runs
            // is still counted.
            let mut interrupt = signal(SignalKind::interrupt()).ok();
            let mut terminate = signal(SignalKind::terminate()).ok();
            let mut hangup = signal(SignalKind::hangup()).ok();
            let counts = sender.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = next(&mut interrupt) => counts.send_modify(|r| r.interrupt += 1),
                        Some(()) = next(&mut terminate) => counts.send_modify(|r| r.terminate += 1),
                        Some(()) = next(&mut hangup) => counts.send_modify(|r| r.hangup += 1),
                        else => break,
                    }
                }
            });
            sender
        })
        .subscribe()
}

/// The next delivery of a signal that could be registered; never, for one that could not.
async fn next(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Completes once SIGINT, SIGTERM or SIGHUP has arrived (one that came before the call counts),
/// after which the next one ends synscope at once.
pub async fn stop() {
    let mut received = listen();
    // The sender lives in a static and is never dropped: this only returns on a signal.
    let _ = received.wait_for(|r| r.any()).await;
    exit_on_next_signal();
}

/// Sleeps for `duration`, or less if asked to stop.
pub async fn sleep_or_stop(duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stop() => {}
    }
}

/// Waits for the traced command. Ctrl-C reaches the command from the terminal, so synscope
/// only waits for it; a SIGTERM or SIGHUP sent to synscope alone is passed on to the command
/// (once each: `timeout` sends its signal to synscope and then to its whole process group),
/// and synscope still reports once the command has exited.
pub async fn wait_for_command(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let mut received = listen();
    let mut forwarded = Received::default();
    loop {
        let now = *received.borrow_and_update();
        for (count, sent, signal) in [
            (now.terminate, &mut forwarded.terminate, libc::SIGTERM),
            (now.hangup, &mut forwarded.hangup, libc::SIGHUP),
        ] {
            if count > 0
                && *sent == 0
                && let Some(pid) = child.id()
            {
                // SAFETY: kill(2) on our own child's pid, not yet reaped (id() is Some).
                unsafe { libc::kill(pid as i32, signal) };
                *sent = 1;
            }
        }
        tokio::select! {
            status = child.wait() => {
                exit_on_next_signal();
                return status;
            }
            _ = received.changed() => {}
        }
    }
}

/// When signals started ending synscope at once (CLOCK_MONOTONIC, ns; 0: not yet).
static EXIT_ARMED_AT: AtomicU64 = AtomicU64::new(0);

/// A signal this soon after tracing stopped is a copy of the one that stopped it, not a second
/// request: `timeout` signals synscope and then its process group, microseconds apart.
const SAME_REQUEST_NS: u64 = 100_000_000;

/// Tracing has stopped, and only the report is left to write: from now on SIGINT, SIGTERM or
/// SIGHUP (a second Ctrl-C) ends synscope at once, killed by that signal as if it had never
/// caught it, so that a calling shell stops too and shows 130, 143 or 129. Nothing stays in the
/// kernel: the programs and links go with the process's file descriptors.
pub fn exit_on_next_signal() {
    if EXIT_ARMED_AT
        .compare_exchange(0, monotonic_ns().max(1), Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only calls async-signal-safe
        // functions; the previous handler (tokio's) is no longer wanted.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_at_once as *const () as libc::sighandler_t;
            // Restarted: a copy of the stopping signal, ignored, must not fail a write.
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The handler of [`exit_on_next_signal`]: runs in signal context, so it only reads an atomic,
/// the clock, and resets and re-raises the signal (all async-signal-safe). The raised signal
/// is blocked until the handler returns, then ends the process.
extern "C" fn exit_at_once(signal: libc::c_int) {
    let armed = EXIT_ARMED_AT.load(Ordering::SeqCst);
    if monotonic_ns().saturating_sub(armed) < SAME_REQUEST_NS {
        return;
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// The reader of standard output went away (EPIPE): end as the other tools of a pipeline do,
/// killed by SIGPIPE without a word (Rust ignores SIGPIPE so that writes fail instead; the
/// shell shows 141). The report files were written before standard output.
pub fn die_of_broken_pipe() -> ! {
    // SAFETY: restoring a default disposition and raising a signal in our own process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // SIGPIPE blocked by whoever started synscope: the code a shell would have shown.
    std::process::exit(128 + libc::SIGPIPE)
}
