//! `cargo xtask vm-test`: the integration tests on other kernels, under QEMU (TCG: KVM does not
//! work in these VMs), once per backend.
//!
//! Kernels come from Debian's package registry (newest 6.1 and 6.12 cloud kernels, cached in
//! target/vm). Each VM boots a busybox initramfs that holds the test binaries, synscope and
//! the test helpers (scenario, synflood) at their paths on this machine, the host tools the
//! tests call (ip, ss, nft, nginx, ab, setpriv) with their libraries, and the kernel's netfilter modules.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    commands::{check, output},
    figures::Figures,
};

/// Debian kernel packages: the newest matching each pattern, oldest kernel first.
const KERNELS: [KernelPackage; 3] = [
    // Debian 11's long-term kernel, from bullseye through a private apt configuration.
    KernelPackage {
        pattern: "linux-image-5.10.0-*-cloud-amd64-unsigned",
        bullseye: true,
    },
    KernelPackage {
        pattern: "linux-image-6.1.0-*-cloud-amd64-unsigned",
        bullseye: false,
    },
    KernelPackage {
        pattern: "linux-image-6.12.*+deb12-cloud-amd64-unsigned",
        bullseye: false,
    },
];

struct KernelPackage {
    pattern: &'static str,
    /// From Debian 11 (bullseye), which the machine's own apt sources do not list.
    bullseye: bool,
}
const BACKENDS: &str = "fentry,kprobe,tracepoint";
/// Host programs the tests run, copied into the VM with their libraries.
const HOST_TOOLS: [&str; 6] = ["ip", "ss", "nft", "nginx", "ab", "setpriv"];
/// Modules the VM has no modprobe to load on demand: sock_diag for TCP (listening sockets'
/// queues and drop counters) and nftables (the drop scenarios).
const MODULES: [&str; 3] = ["inet_diag", "tcp_diag", "nf_tables"];
/// Each cell (one kernel, one backend: the whole integration suite) must finish within this;
/// the cells print their durations so the margin stays visible.
const CELL_LIMIT: Duration = Duration::from_secs(12 * 60);
/// Booting, loading modules and powering off, beside the cells.
const VM_OVERHEAD: Duration = Duration::from_secs(3 * 60);

/// Parts of the matrix to run, for working on one cell.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Only kernels whose package name contains this.
    #[arg(long)]
    kernel: Option<String>,
    /// Backends, comma-separated.
    #[arg(long, default_value = BACKENDS)]
    backends: String,
    /// Only test binaries whose name contains this.
    #[arg(long)]
    test: Option<String>,
    /// How many VMs run at the same time (one per two cores unless told).
    #[arg(long)]
    vms_at_once: Option<usize>,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            kernel: None,
            backends: BACKENDS.to_owned(),
            test: None,
            vms_at_once: None,
        }
    }
}

/// Scenarios passed and failed over every cell that ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    /// Adds a cell's verdict: "... (N scenarios passed, M failed) ...".
    fn add(&mut self, verdict: &str) {
        let words: Vec<&str> = verdict
            .split(|c: char| c.is_whitespace() || "(),".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        let number_before = |label: &str| {
            words
                .windows(2)
                .find(|pair| pair[1] == label)
                .and_then(|pair| pair[0].parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.passed += number_before("scenarios");
        self.failed += number_before("failed");
    }
}

/// Runs the selected cells; an error means a cell failed, did not finish, or backends disagree.
pub fn run(root: &Path, selection: &Selection) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let work = root.join("target/vm");
    fs::create_dir_all(&work)?;
    for tool in ["qemu-system-x86_64", "busybox", "cpio", "gzip"] {
        which(tool).with_context(|| format!("{tool} is needed: run xtask/setup.sh"))?;
    }
    crate::cargo(
        root,
        &[
            "build",
            "--package",
            "probe-user",
            "--package",
            "synscope-tests",
        ],
    )?;
    let mut tests = test_executables(root)?;
    if let Some(filter) = &selection.test {
        tests.retain(|t| {
            t.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(filter.as_str()))
        });
    }
    // The views' tests depend on synscope's own behaviour, not on the kernel: once, natively.
    let (views, tests): (Vec<PathBuf>, Vec<PathBuf>) =
        tests.into_iter().partition(|t| is_view_test(t));
    let synscope = root.join("target/debug/synscope");
    let mut payload: Vec<PathBuf> = tests.clone();
    payload.push(synscope.clone());
    // The tests' helpers (tests/src/bin): found at their paths here.
    payload.push(root.join("target/debug/scenario"));
    payload.push(root.join("target/debug/synflood"));
    for tool in HOST_TOOLS {
        payload.push(which(tool)?);
    }

    let packages: Vec<&KernelPackage> = KERNELS
        .iter()
        .filter(|p| {
            selection
                .kernel
                .as_ref()
                .is_none_or(|k| p.pattern.contains(k.as_str()))
        })
        .collect();
    let mut vms = Vec::new();
    for package in packages {
        let kernel = fetch_kernel(&work, package)?;
        let initrd = build_initramfs(&work, &kernel, &payload, &tests)?;
        vms.push((kernel, initrd));
    }

    // This kernel's cells run natively, first and alone: their timings are the exact ones
    // (views assert on latencies that a busy machine would stretch). Its image is not at hand
    // to boot.
    let mut matrix = Matrix::default();
    let host = selection.kernel.as_deref().is_none_or(|k| k == "host");
    if host && !views.is_empty() {
        matrix.failed |= view_tests(&synscope, &views, &mut matrix.tally)?;
    }
    if host {
        matrix.failed |= host_cells(
            &work,
            &synscope,
            &tests,
            &selection.backends,
            &mut matrix.figures,
            &mut matrix.tally,
        )?;
    }

    // Each VM has two processors: VMs run side by side where each can have two cores of its
    // own. Sharing cores stretches the scenarios' timings past what they allow (three VMs on
    // two cores doubled every cell's time and failed timing assertions).
    let matrix = Mutex::new(matrix);
    let queue = Mutex::new(vms.iter());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let at_once = selection.vms_at_once.unwrap_or(cores / 2).max(1);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..at_once.min(vms.len()))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let next = queue.lock().expect("the VM queue").next();
                        let Some((kernel, initrd)) = next else {
                            return Ok(());
                        };
                        run_vm(kernel, initrd, &synscope, &selection.backends, &matrix)?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow!("a VM's thread panicked"))??;
        }
        Ok(())
    })?;
    let Matrix {
        mut failed,
        tally,
        figures,
    } = matrix.into_inner().expect("the matrix");
    failed |= !figures.compare();
    println!(
        "kernel matrix: {} scenarios passed, {} failed, in {} s",
        tally.passed,
        tally.failed,
        started.elapsed().as_secs()
    );
    if failed {
        bail!("the kernel matrix has failures");
    }
    Ok(tally)
}

/// What the cells that ran found: the native cells', then the VMs' as their threads report.
#[derive(Default)]
struct Matrix {
    failed: bool,
    tally: Tally,
    figures: Figures,
}

/// The kernel's version, to tell VMs' lines apart: "5.10" of "5.10.0-43-cloud-amd64".
fn short_release(release: &str) -> &str {
    let mut dots = release.match_indices('.').map(|(at, _)| at);
    match (dots.next(), dots.next()) {
        (Some(_), Some(second)) => &release[..second],
        _ => release,
    }
}

/// Boots one kernel's VM, which runs every selected backend's cell, and adds its verdicts and
/// figures to `matrix`; its lines are printed as they come, marked with the kernel's version.
fn run_vm(
    kernel: &Kernel,
    initrd: &Path,
    synscope: &Path,
    backends: &str,
    matrix: &Mutex<Matrix>,
) -> anyhow::Result<()> {
    let cells = backends.split(',').count() as u32;
    let limit = CELL_LIMIT * cells + VM_OVERHEAD;
    let version = short_release(&kernel.release);
    let vm_started = Instant::now();
    let mut verdicts = 0;
    let finished = boot(&kernel.vmlinuz, initrd, synscope, backends, limit, |line| {
        let mut matrix = matrix.lock().expect("the matrix");
        if let Some(recorded) = line.strip_prefix("VMFIG ") {
            // release backend name value tolerance
            let mut fields = recorded.splitn(3, ' ');
            if let (Some(release), Some(backend), Some(rest)) =
                (fields.next(), fields.next(), fields.next())
            {
                matrix.figures.add(release, backend, rest);
            }
        } else if let Some(verdict) = line.strip_prefix("VMTEST ") {
            println!("{verdict}");
            verdicts += 1;
            matrix.tally.add(verdict);
            // Debian's 5.10, 6.1 and 6.12 allow every backend: one refused there (a program
            // the verifier rejects, say) is a failure, not a gap.
            matrix.failed |= !verdict.contains(" PASS ");
        } else {
            println!("  [{version}] {line}");
        }
    })?;
    let mut matrix = matrix.lock().expect("the matrix");
    if !finished {
        println!(
            "{} did not finish within {} s: the cells above are all that ran",
            kernel.release,
            limit.as_secs()
        );
        matrix.failed = true;
    }
    if verdicts == 0 {
        println!("{}: no result from the VM", kernel.release);
        matrix.failed = true;
    }
    println!(
        "{}: VM done in {} s",
        kernel.release,
        vm_started.elapsed().as_secs()
    );
    Ok(())
}

/// Test binaries of views (the CI gate, report formats, live views, the command line): the
/// same on every kernel.
const VIEW_TESTS: [&str; 12] = [
    "deploy",
    "dist",
    "faults",
    "gate",
    "html",
    "many_listeners",
    "reports",
    "runtimes",
    "serve",
    "top",
    "trace",
    "usage",
];

fn is_view_test(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    // Cargo names a test binary NAME-HASH.
    name.is_some_and(|n| {
        VIEW_TESTS
            .iter()
            .any(|view| n.rsplit_once('-').is_some_and(|(stem, _)| stem == *view))
    })
}

/// Runs one integration test binary (`command` ends with it), one test at a time; prints its
/// failures, and its whole output when it fails, and returns the tests passed and failed (a
/// binary that printed no result counts as one failure).
fn run_test_binary(
    command: &mut Command,
    synscope: &Path,
    cell: &str,
) -> anyhow::Result<(u64, u64)> {
    let out = command
        .arg("--test-threads=1")
        .env("SYNSCOPE_BIN", synscope)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with("FAILED"))
    {
        println!("  VMFAIL {cell}: {line}");
    }
    if !out.status.success() {
        print!("{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let result = text
        .lines()
        .rfind(|l| l.starts_with("test result:"))
        .unwrap_or_default();
    let passed = crate::count_before(result, " passed");
    let failed = crate::count_before(result, " failed") + u64::from(result.is_empty());
    Ok((passed, failed))
}

/// The views' tests, once, natively, with the hooks auto picks.
fn view_tests(synscope: &Path, tests: &[PathBuf], tally: &mut Tally) -> anyhow::Result<bool> {
    let started = Instant::now();
    let (mut passed, mut failures) = (0, 0);
    for test in tests {
        let mut command = Command::new("timeout");
        command.arg(CELL_LIMIT.as_secs().to_string()).arg(test);
        let (p, f) = run_test_binary(&mut command, synscope, "views")?;
        (passed, failures) = (passed + p, failures + f);
    }
    let verdict = if failures == 0 { "PASS" } else { "FAIL" };
    println!(
        "views {verdict} ({passed} scenarios passed, {failures} failed) in {} s (natively, once)",
        started.elapsed().as_secs()
    );
    tally.passed += passed;
    tally.failed += failures;
    Ok(failures > 0)
}

/// The matrix cells of the running kernel: the same tests, natively, per backend.
fn host_cells(
    work: &Path,
    synscope: &Path,
    tests: &[PathBuf],
    backends: &str,
    figures: &mut Figures,
    tally: &mut Tally,
) -> anyhow::Result<bool> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let (mut failed, mut supported) = (false, 0);
    for backend in backends.split(',') {
        let check = Command::new(synscope)
            .arg("check")
            .env("SYNSCOPE_HOOKS", backend)
            .output()?;
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stdout);
            println!(
                "{release} {backend} UNSUPPORTED {}",
                why.lines().next().unwrap_or_default()
            );
            continue;
        }
        supported += 1;
        let (mut passed, mut failures) = (0, 0);
        let cell_started = Instant::now();
        let figure_file = work.join(format!("figures.host.{backend}"));
        let _ = fs::remove_file(&figure_file);
        for test in tests {
            let remaining = CELL_LIMIT.saturating_sub(cell_started.elapsed());
            let mut command = Command::new("timeout");
            command
                .arg(remaining.as_secs().max(1).to_string())
                .arg(test)
                .env("SYNSCOPE_HOOKS", backend)
                .env("SYNSCOPE_FIGURES", &figure_file);
            let cell = format!("{release} {backend}");
            let (p, f) = run_test_binary(&mut command, synscope, &cell)?;
            (passed, failures) = (passed + p, failures + f);
        }
        if let Ok(text) = fs::read_to_string(&figure_file) {
            figures.add(&release, backend, &text);
        }
        let verdict = if failures == 0 { "PASS" } else { "FAIL" };
        println!(
            "{release} {backend} {verdict} ({passed} scenarios passed, {failures} failed) in {} s of {} s (host)",
            cell_started.elapsed().as_secs(),
            CELL_LIMIT.as_secs()
        );
        tally.passed += passed;
        tally.failed += failures;
        failed |= failures > 0;
    }
    // This kernel may refuse some backends (this machine allows tracepoints only), never all.
    if supported == 0 {
        println!("{release}: synscope can trace with none of the backends {backends}");
        failed = true;
    }
    Ok(failed)
}

struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn fetch_kernel(work: &Path, package: &KernelPackage) -> anyhow::Result<Kernel> {
    let pattern = package.pattern;
    let apt_options = if package.bullseye {
        bullseye_apt(work)?
    } else {
        Vec::new()
    };
    let regex = format!(
        "^{}$",
        pattern
            .replace('.', "\\.")
            .replace('*', ".*")
            .replace('+', "\\+")
    );
    let search = output(Command::new("apt-cache").args(&apt_options).args([
        "search",
        "--names-only",
        &regex,
    ]))?;
    let mut names: Vec<&str> = search.lines().filter_map(|l| l.split(' ').next()).collect();
    names.sort_by_key(|name| version_key(name));
    if names.is_empty() {
        bail!("no package matches {pattern} (apt-get update?)");
    }
    // The newest already unpacked, else the newest the mirror serves: an index can name a
    // package its pool no longer has.
    let unpacked = |package: &&&str| work.join(package).join("boot").is_dir();
    let chosen = names
        .iter()
        .rev()
        .find(unpacked)
        .or_else(|| {
            names
                .iter()
                .rev()
                .find(|package| download_kernel(work, package, &apt_options, &work.join(package)))
        })
        .map(|package| (package.to_string(), work.join(package)));
    let (package, extract) =
        chosen.ok_or_else(|| anyhow!("no package matching {pattern} could be downloaded"))?;
    let vmlinuz = fs::read_dir(extract.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{package} has no vmlinuz"))?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    // The package leaves modules.dep to depmod at install time.
    if !extract
        .join("lib/modules")
        .join(&release)
        .join("modules.dep")
        .exists()
    {
        check(Command::new("depmod").arg("-b").arg(&extract).arg(&release))?;
    }
    Ok(Kernel {
        modules: extract.join("lib/modules").join(&release),
        vmlinuz,
        release,
    })
}

/// Downloads and unpacks one kernel package; false (with the reason printed) if it cannot.
fn download_kernel(work: &Path, package: &str, apt_options: &[String], extract: &Path) -> bool {
    let download = work.join("download");
    let unpacked = fs::create_dir_all(&download)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            check(
                Command::new("apt-get")
                    .args(apt_options)
                    .args(["download", package])
                    .current_dir(&download),
            )
        })
        .and_then(|()| {
            let deb = fs::read_dir(&download)?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
                })
                .ok_or_else(|| anyhow!("apt-get download left no {package}"))?;
            check(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(extract))
        });
    match unpacked {
        Ok(()) => true,
        Err(e) => {
            let why = format!("{e:#}");
            println!(
                "{package}: not available ({}), trying an older one",
                why.lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or_default()
            );
            false
        }
    }
}

/// apt options that reach Debian 11 (bullseye and bullseye-security) without touching the
/// machine's own sources: a private sources list on the machine's own Debian mirrors, and
/// private lists and cache, updated once.
fn bullseye_apt(work: &Path) -> anyhow::Result<Vec<String>> {
    let dir = work.join("apt-bullseye");
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    fs::create_dir_all(lists.join("partial"))?;
    fs::create_dir_all(cache.join("archives/partial"))?;
    let sources = dir.join("sources.list");
    let options = vec![
        "-o".to_owned(),
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "-o".to_owned(),
        "Dir::Etc::sourceparts=/nonexistent".to_owned(),
        "-o".to_owned(),
        format!("Dir::State::Lists={}", lists.display()),
        "-o".to_owned(),
        format!("Dir::Cache={}", cache.display()),
    ];
    let updated = fs::read_dir(&lists)?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("bullseye"));
    if !updated {
        let (main, security) = debian_mirrors()?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        fs::write(
            &sources,
            format!(
                "deb [signed-by={keyring}] {main} bullseye main\n\
                 deb [signed-by={keyring}] {security} bullseye-security main\n"
            ),
        )?;
        check(
            Command::new("apt-get")
                .args(&options)
                .args(["update", "-qq"]),
        )
        .context("apt-get update of the private bullseye sources")?;
    }
    Ok(options)
}

/// The machine's Debian archive and security mirrors, from its apt sources.
fn debian_mirrors() -> anyhow::Result<(String, String)> {
    let mut uris = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if let Some(list) = line.strip_prefix("URIs:") {
                uris.extend(list.split_whitespace().map(str::to_owned));
            } else if line.starts_with("deb ") {
                // deb [options] URI suite components
                let uri = line.split_whitespace().skip(1).find(|w| w.contains("://"));
                uris.extend(uri.map(str::to_owned));
            }
        }
    }
    let ending = |suffix: &str| {
        uris.iter()
            .find(|u| u.trim_end_matches('/').ends_with(suffix))
            .cloned()
    };
    match (ending("/debian"), ending("/debian-security")) {
        (Some(main), Some(security)) => Ok((main, security)),
        _ => bail!("no Debian archive and security mirrors in this machine's apt sources"),
    }
}

/// Sorts kernel package names by their numeric parts.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn test_executables(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let json = output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "test",
                "--package",
                "synscope-tests",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(root),
    )?;
    let mut tests = Vec::new();
    for line in json.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && let Some(path) = message["executable"].as_str() {
            tests.push(PathBuf::from(path));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no integration test executables");
    }
    Ok(tests)
}

fn build_initramfs(
    work: &Path,
    kernel: &Kernel,
    payload: &[PathBuf],
    tests: &[PathBuf],
) -> anyhow::Result<PathBuf> {
    let stage = work.join(format!("initramfs-{}", kernel.release));
    let _ = fs::remove_dir_all(&stage);
    for dir in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "run", "etc", "modules", "vmtests", "var/lib",
        "var/log", "root",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    // busybox for the coreutils; real tools where the tests need them, and the host's sh:
    // busybox's own shell runs its applets (its `ip` has no netns) before anything on PATH.
    let busybox = which("busybox")?;
    fs::copy(&busybox, stage.join("bin/busybox"))?;
    let host_tools: Vec<&str> = HOST_TOOLS.iter().copied().chain(["sh"]).collect();
    for applet in output(Command::new(&busybox).arg("--list"))?.lines() {
        if !host_tools.contains(&applet) {
            let _ = std::os::unix::fs::symlink("busybox", stage.join("bin").join(applet));
        }
    }
    let mut copied = BTreeSet::new();
    for file in payload {
        copy_with_libraries(&stage, file, &mut copied)?;
    }
    let shell = which("sh")?;
    copy_with_libraries(&stage, &shell, &mut copied)?;
    fs::copy(&shell, stage.join("bin/sh"))?;
    fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )?;
    fs::write(stage.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let list: Vec<String> = tests.iter().map(|t| t.display().to_string()).collect();
    fs::write(stage.join("vmtests/list"), list.join("\n"))?;
    fs::write(stage.join("init"), include_str!("../vm/init.sh"))?;
    check(Command::new("chmod").arg("755").arg(stage.join("init")))?;
    modules(&stage, kernel)?;

    let initrd = work.join(format!("initramfs-{}.cpio.gz", kernel.release));
    check(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
                initrd.display()
            ))
            .current_dir(&stage),
    )?;
    Ok(initrd)
}

/// Copies `file` to the same path under `stage`, with the shared libraries `ldd` names.
fn copy_with_libraries(
    stage: &Path,
    file: &Path,
    copied: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    let mut files = vec![file.to_path_buf()];
    if let Ok(ldd) = output(Command::new("ldd").arg(file)) {
        for line in ldd.lines() {
            let path = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
    }
    for file in files {
        if !copied.insert(file.clone()) {
            continue;
        }
        let target = stage.join(file.strip_prefix("/").unwrap_or(&file));
        fs::create_dir_all(target.parent().unwrap())?;
        fs::copy(&file, &target).with_context(|| format!("copy {}", file.display()))?;
        // Debug sections are most of a test binary; the VM needs none of them (synscope's
        // kernel object is data, not a debug section, and keeps its BTF).
        // Debian's own files are stripped already.
        check(Command::new("strip").arg("--strip-debug").arg(&target))
            .with_context(|| format!("strip {}", target.display()))?;
    }
    Ok(())
}

/// Decompressed modules and their load order, from the kernel's modules.dep.
fn modules(stage: &Path, kernel: &Kernel) -> anyhow::Result<()> {
    let deps = fs::read_to_string(kernel.modules.join("modules.dep")).context("modules.dep")?;
    let mut order: Vec<String> = Vec::new();
    for wanted in MODULES {
        let line = deps.lines().find(|l| {
            let path = l.split(':').next().unwrap_or_default();
            Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{wanted}.ko")))
        });
        let Some(line) = line else {
            continue; // built in
        };
        let (module, needs) = line.split_once(':').unwrap_or((line, ""));
        // modules.dep lists dependencies deepest last: load them in reverse, then the module.
        for path in needs.split_whitespace().rev().chain([module]) {
            let source = kernel.modules.join(path);
            let name = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let plain = name
                .trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .to_owned();
            if order.contains(&plain) {
                continue;
            }
            let target = stage.join("modules").join(&plain);
            if name.ends_with(".xz") {
                check(Command::new("sh").arg("-c").arg(format!(
                    "xz -dc '{}' > '{}'",
                    source.display(),
                    target.display()
                )))?;
            } else if name.ends_with(".zst") {
                check(Command::new("sh").arg("-c").arg(format!(
                    "zstd -dcq '{}' > '{}'",
                    source.display(),
                    target.display()
                )))?;
            } else {
                fs::copy(&source, &target)?;
            }
            order.push(plain);
        }
    }
    fs::write(stage.join("modules/order"), order.join("\n"))?;
    Ok(())
}

/// Boots one VM and hands each tagged console line (VMTEST, VMFAIL, VMLOG, VMFIG) to `line`
/// as it arrives, so progress shows while the cells run. False if the VM ran out of time.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    synscope: &Path,
    backends: &str,
    limit: Duration,
    mut line: impl FnMut(&str),
) -> anyhow::Result<bool> {
    let append = format!(
        "console=ttyS0 panic=-1 quiet BACKENDS={backends} CELL_LIMIT={} SYNSCOPE_BIN={}",
        CELL_LIMIT.as_secs(),
        synscope.display()
    );
    let mut child = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start qemu")?;
    let console = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut last_lines = std::collections::VecDeque::new();
    for raw in console.split(b'\n') {
        let raw = raw?;
        let text = String::from_utf8_lossy(&raw);
        // The console may put terminal escapes before a line's start.
        let tagged = ["VMTEST", "VMFAIL", "VMLOG", "VMFIG"]
            .iter()
            .find_map(|tag| text.find(tag).map(|at| &text[at..]));
        match tagged {
            Some(tagged) => line(tagged.trim_end()),
            None => {
                last_lines.push_back(text.trim_end().to_owned());
                if last_lines.len() > 5 {
                    last_lines.pop_front();
                }
            }
        }
    }
    let status = child.wait()?;
    // timeout(1) exits 124 when the limit ran out.
    if status.code() == Some(124) {
        return Ok(false);
    }
    if !status.success() {
        println!(
            "qemu exited with {status}; its last lines: {}",
            Vec::from(last_lines).join(" | ")
        );
    }
    Ok(true)
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = output(Command::new("sh").args(["-c", &format!("command -v {tool}")]))?;
    let path = path.trim();
    if path.is_empty() {
        bail!("{tool} not found");
    }
    Ok(fs::canonicalize(path)?)
}

#[cfg(test)]
mod tests {
    use super::{Tally, short_release};

    #[test]
    fn vms_lines_are_marked_with_the_kernels_version() {
        assert_eq!(short_release("5.10.0-43-cloud-amd64"), "5.10");
        assert_eq!(short_release("6.12.118+deb12-cloud-amd64"), "6.12");
        assert_eq!(short_release("7"), "7");
    }

    #[test]
    fn view_tests_are_told_by_name() {
        use std::path::Path;
        assert!(super::is_view_test(Path::new("/t/deps/gate-0123abcd")));
        assert!(!super::is_view_test(Path::new("/t/deps/gateway-0123abcd")));
        assert!(!super::is_view_test(Path::new("/t/deps/drops-0123abcd")));
    }

    #[test]
    fn cell_verdicts_add_up() {
        let mut tally = Tally::default();
        tally.add(
            "5.10.0-43-cloud-amd64 kprobe PASS (27 scenarios passed, 0 failed) in 8 s of 720 s",
        );
        tally
            .add("6.18.44 tracepoint FAIL (25 scenarios passed, 2 failed) in 90 s of 720 s (host)");
        tally.add("6.18.44 fentry UNSUPPORTED synscope check: ...");
        assert_eq!(
            tally,
            Tally {
                passed: 52,
                failed: 2
            }
        );
    }
}
