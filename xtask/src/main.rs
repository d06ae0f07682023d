//! Project tasks: `cargo xtask test`, `cargo xtask demo`, `cargo xtask dist`.
//!
//! Run `xtask/setup.sh` first on a new machine: it installs the toolchain, bpf-linker and the
//! packages the tests use.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

mod bench;
mod commands;
mod dist;
mod figures;
mod soak;
mod vm;

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
    /// A static (musl), stripped synscope in target/dist, to copy to any x86-64 Linux.
    Dist,
    /// Measure what tracing costs (as root): untraced, synscope and a bpftrace reference,
    /// alternating, on loopback loops and nginx under wrk; see BENCHMARKS.md.
    Bench(bench::Options),
    /// A long run at full speed (as root): a million connections, some never accepted,
    /// listeners opening and closing; synscope's figures against the load and the kernel's
    /// counters, no event lost, its memory flat.
    Soak(soak::Options),
    /// The integration tests per backend: natively on this kernel, and on Debian's 5.10, 6.1
    /// and 6.12 kernels under QEMU.
    VmTest(vm::Selection),
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
            let started = Instant::now();
            step("format", || cargo(&root, &["fmt", "--all", "--check"]))?;
            // The default members are the host crates; the eBPF crate is linted for its target.
            step("lint", || {
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
                )
            })?;
            // Unit tests only: the integration tests run once per backend in the matrix, on
            // this kernel natively and on the others under QEMU.
            let (unit_passed, unit_failed) = step("unit tests", || {
                cargo_test(&root, &["test", "--lib", "--bins"])
            })?;
            let matrix = step("kernel matrix", || {
                vm::run(&root, &vm::Selection::default())
            });
            let tally = matrix.as_ref().copied().unwrap_or_default();
            println!("xtask test: {} s in all", started.elapsed().as_secs());
            let (passed, failed) = (unit_passed + tally.passed, unit_failed + tally.failed);
            println!("tests: {passed} passed, {failed} failed");
            if unit_failed > 0 {
                bail!("{unit_failed} unit tests failed");
            }
            matrix?;
        }
        Task::Bench(options) => bench::run(&root, &options)?,
        Task::Soak(options) => soak::run(&root, &options)?,
        Task::Dist => dist::run(&root)?,
        Task::VmTest(selection) => {
            vm::run(&root, &selection)?;
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

/// Runs one part of a task and prints how long it took.
fn step<T>(name: &str, part: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    println!("xtask: {name}...");
    let result = part();
    let verdict = if result.is_ok() { "done" } else { "FAILED" };
    println!(
        "xtask: {name} {verdict} in {} s",
        started.elapsed().as_secs()
    );
    result
}

pub fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
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

/// Runs cargo test, passing its output through, and adds up its `test result:` lines.
fn cargo_test(root: &Path, args: &[&str]) -> anyhow::Result<(u64, u64)> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .env("SYNSCOPE_BIN", root.join("target/debug/synscope"))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            passed += count_before(result, " passed");
            failed += count_before(result, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

/// In "ok. 3 passed; 0 failed; ...", the number before `label`.
pub fn count_before(result: &str, label: &str) -> u64 {
    let words: Vec<&str> = result
        .split(|c: char| c == ';' || c.is_whitespace())
        .collect();
    words
        .windows(2)
        .find(|pair| pair[1] == label.trim())
        .and_then(|pair| pair[0].parse().ok())
        .unwrap_or(0)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_come_from_test_result_lines() {
        let line =
            "ok. 27 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(super::count_before(line, " passed"), 27);
        assert_eq!(super::count_before(line, " failed"), 2);
    }
}
