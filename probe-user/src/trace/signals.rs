//! When to stop tracing: Ctrl-C (SIGINT) or SIGTERM (timeout, systemd, Kubernetes), a
//! duration, or the traced command's exit.

use std::{process::ExitStatus, time::Duration};

use tokio::signal::unix::{SignalKind, signal};

/// Completes on the first SIGINT or SIGTERM.
pub async fn stop() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        // Without a SIGTERM handler, Ctrl-C alone still stops tracing.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Sleeps for `duration`, or less if asked to stop.
pub async fn sleep_or_stop(duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stop() => {}
    }
}

/// Waits for the traced command. Ctrl-C reaches the command from the terminal, so synscope
/// only waits for it; a SIGTERM sent to synscope alone is passed on to the command, and
/// synscope still reports once it has exited.
pub async fn wait_for_command(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut forwarded = false;
    loop {
        tokio::select! {
            status = child.wait() => return status,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv(), if !forwarded => {
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                forwarded = true;
            }
        }
    }
}
