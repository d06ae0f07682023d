//! Project tasks: `cargo xtask test`, `cargo xtask demo`.
//!
//! Run `xtask/setup.sh` first on a new machine: it installs the toolchain, bpf-linker and the
//! packages the tests use.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Format and lint checks, unit tests, then the privileged integration tests (as root).
    Test,
    /// Build synscope and run `synscope demo`.
    Demo,
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    let root = workspace_root();
    match task {
        Task::Test => {
            cargo(&root, &["fmt", "--all", "--check"])?;
            // The default members are the host crates; the eBPF crate is linted for its target.
            cargo(&root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
            cargo_bootstrap(
                &root,
                &[
                    "clippy",
                    "--package",
                    "probe-ebpf",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            cargo(&root, &["build", "--package", "probe-user"])?;
            // One test at a time: the privileged tests time real latencies on a small machine.
            cargo(&root, &["test", "--", "--test-threads=1"])?;
        }
        Task::Demo => {
            cargo(&root, &["build", "--release", "--package", "probe-user"])?;
            let status = Command::new(root.join("target/release/synscope"))
                .arg("demo")
                .status()
                .context("cannot start synscope")?;
            if !status.success() {
                bail!("synscope demo failed ({status})");
            }
        }
    }
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_cargo(root, args, false)
}

/// For -Z build-std on the stable toolchain, as probe-user's build.rs does.
fn cargo_bootstrap(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_cargo(root, args, true)
}

fn run_cargo(root: &Path, args: &[&str], bootstrap: bool) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if bootstrap {
        command.env("RUSTC_BOOTSTRAP", "1");
    }
    let status = command
        .args(args)
        .current_dir(root)
        .env("SYNSCOPE_BIN", root.join("target/debug/synscope"))
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
