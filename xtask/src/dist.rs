//! `cargo xtask dist`: a static, stripped `synscope` for copying to a machine under
//! investigation, which may have no Rust, no compiler and an unknown C library.
//!
//! The binary is built for `x86_64-unknown-linux-musl`, whose Rust target links musl's libc and
//! start files from the toolchain's own copy (self-contained) and statically by default, so
//! neither musl-tools nor a C compiler for musl is needed: the host's `cc` only drives the
//! link. No dependency builds C code. The eBPF programs are still built by probe-user's
//! build script, which runs on the host whatever the target.

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::commands::output;

const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the binary and leaves it, with its sha256, in target/dist.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    require_target(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `cargo rustc` passes the strip flag to the final binary only: given to every crate
    // (RUSTFLAGS), it would change nothing else but every dependency's fingerprint.
    let status = Command::new(cargo)
        .args(["rustc", "--release", "--package", "probe-user"])
        .args(["--bin", "synscope", "--target", TARGET])
        .args(["--", "-C", "strip=symbols"])
        .current_dir(root)
        // A binary without the kernel programs refuses to trace: never ship one.
        .env_remove("SYNSCOPE_SKIP_EBPF")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building synscope for {TARGET} failed ({status})");
    }
    let built = root.join("target").join(TARGET).join("release/synscope");
    let dist = root.join("target/dist");
    fs::create_dir_all(&dist)?;
    let binary = dist.join("synscope");
    // Through a rename: a copy of the old binary running from target/dist stays intact, and
    // an interrupted copy never leaves a half-written one under the final name.
    let partial = dist.join("synscope.partial");
    fs::copy(&built, &partial)
        .with_context(|| format!("copying {} to {}", built.display(), partial.display()))?;
    fs::rename(&partial, &binary)?;
    // sha256sum's own format, so that `sha256sum -c synscope.sha256` checks a copy.
    let line = output(Command::new("sha256sum").arg("synscope").current_dir(&dist))?;
    fs::write(dist.join("synscope.sha256"), &line)?;
    let digest = line.split_whitespace().next().unwrap_or_default();
    let size = fs::metadata(&binary)?.len();
    println!("{}", binary.display());
    println!(
        "  size    {size} bytes ({:.1} MiB)",
        size as f64 / (1024.0 * 1024.0)
    );
    println!("  sha256  {digest}");
    println!(
        "  built in {} s (static, stripped, {TARGET})",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Fails with the remedy when the toolchain lacks the musl target: rustc's own error, a
/// missing `std`, does not name it.
fn require_target(root: &Path) -> anyhow::Result<()> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = output(
        Command::new(rustc)
            .args(["--print", "target-libdir", "--target", TARGET])
            .current_dir(root),
    )?;
    if !Path::new(libdir.trim()).is_dir() {
        bail!(
            "the Rust toolchain has no {TARGET} target: run xtask/setup.sh \
             (or rustup target add --toolchain 1.98.0 {TARGET})"
        );
    }
    Ok(())
}
