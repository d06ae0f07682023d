//! Where reports go: files opened before tracing starts (so a bad path fails at once, not
//! after the run), each in its own format, and standard output.
//!
//! A file the report could not be completely written to (a full disk, an I/O error) is
//! removed, and the error says so: a truncated report must not look like a finished one. The
//! same goes for files opened for a run that ended before its report.

use std::{
    fmt,
    fs::File,
    io::{self, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{Format, Report};

/// Every destination of one run's report.
pub struct ReportSink {
    files: Vec<(Format, Output)>,
    /// The HdrHistogram interval log, written from the session's timeline.
    hdr_log: Option<Output>,
    /// The format written to standard output, if any.
    stdout: Option<Format>,
}

/// One file opened for a report.
struct Output {
    path: PathBuf,
    file: File,
    /// Written in full and synced to its disk.
    complete: bool,
}

/// Standard output's reader went away before the report was written (EPIPE).
#[derive(Debug)]
struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed before the report was written")
    }
}

impl std::error::Error for StdoutClosed {}

impl Output {
    fn create(path: &Path, what: &str) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot write {what} to {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            complete: false,
        })
    }

    /// Renders the whole of it first (a rendering error then writes nothing, and the file
    /// gets one write instead of thousands), and syncs a regular file, so that an error a
    /// filesystem reports late (NFS, write-back) is seen here rather than after synscope said
    /// the report was written.
    fn write(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
        what: &str,
    ) -> anyhow::Result<()> {
        let result = (|| {
            let mut rendered = Vec::new();
            write(&mut rendered)?;
            (&self.file).write_all(&rendered)?;
            if self.file.metadata()?.is_file() {
                self.file.sync_all()?;
            }
            anyhow::Ok(())
        })();
        match result {
            Ok(()) => {
                self.complete = true;
                Ok(())
            }
            Err(e) => {
                let fate = self.discard();
                Err(e.context(format!(
                    "cannot write {what} to {}{fate}",
                    self.path.display()
                )))
            }
        }
    }

    /// Removes the file if it is still the regular file synscope created at this path (never
    /// a device, a pipe, or the target of a symbolic link); says what became of it.
    fn discard(&mut self) -> String {
        let ours = match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(opened), Ok(at_path)) => {
                opened.is_file()
                    && at_path.is_file()
                    && (opened.dev(), opened.ino()) == (at_path.dev(), at_path.ino())
            }
            _ => false,
        };
        if !ours {
            return match self.file.metadata() {
                Ok(m) if m.is_file() => " (it is incomplete)".to_owned(),
                _ => String::new(),
            };
        }
        // Never looked at again, whatever the outcome.
        self.complete = true;
        match std::fs::remove_file(&self.path) {
            Ok(()) => " (the incomplete file was removed)".to_owned(),
            Err(e) => format!(" (it is incomplete, and removing it failed: {e})"),
        }
    }
}

impl Drop for Output {
    /// A run that ended before its report (an error while tracing, a traced command that could
    /// not start) leaves no empty report behind.
    fn drop(&mut self) {
        if !self.complete {
            let _ = self.discard();
        }
    }
}

impl ReportSink {
    /// `outputs`: files and the format of each. Without files the report goes to standard
    /// output in `stdout_format`; with files, the text report still goes to standard output.
    pub fn open(
        outputs: &[(Format, PathBuf)],
        hdr_log: Option<PathBuf>,
        stdout_format: Format,
    ) -> anyhow::Result<Self> {
        let hdr_log = hdr_log
            .map(|path| Output::create(&path, "the HdrHistogram log"))
            .transpose()?;
        let mut files = Vec::new();
        for (format, path) in outputs {
            files.push((*format, Output::create(path, "the report")?));
        }
        let stdout = if files.iter().all(|(format, ..)| *format == Format::Junit) {
            Some(stdout_format)
        } else {
            Some(Format::Text)
        };
        Ok(Self {
            files,
            hdr_log,
            stdout,
        })
    }

    /// Writes the report only to the files: standard output carries something else (`top`'s
    /// NDJSON snapshots).
    pub fn without_stdout(mut self) -> Self {
        self.stdout = None;
        self
    }

    /// Whether a timeline must be kept for an HdrHistogram log.
    pub fn wants_hdr_log(&self) -> bool {
        self.hdr_log.is_some()
    }

    /// Writes the HdrHistogram log with `write`, if one was asked for.
    pub fn write_hdr_log(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match &mut self.hdr_log {
            Some(output) => output.write(write, "the HdrHistogram log"),
            None => Ok(()),
        }
    }

    /// Writes the report to every destination, each one even if another failed (a full disk
    /// under one file does not keep the report from the others). The error names every
    /// destination that failed, on one line; standard output closed by its reader alone is
    /// [`ReportSink::is_stdout_closed`].
    pub fn write(&mut self, report: &Report) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for (format, output) in &mut self.files {
            if let Err(e) = output.write(|out| report.write(*format, out), "the report") {
                failures.push(e);
            }
        }
        let stdout = match self.stdout {
            Some(format) => write_stdout(report, format),
            None => Ok(()),
        };
        match (failures.len(), stdout) {
            (0, stdout) => stdout,
            (1, Ok(())) => Err(failures.remove(0)),
            (_, stdout) => {
                let mut lines: Vec<String> = failures.iter().map(|e| format!("{e:#}")).collect();
                lines.extend(stdout.err().map(|e| format!("{e:#}")));
                anyhow::bail!("{}", lines.join("; "))
            }
        }
    }

    /// Whether `error` only says that standard output's reader went away.
    pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| cause.is::<StdoutClosed>())
    }
}

fn write_stdout(report: &Report, format: Format) -> anyhow::Result<()> {
    let mut rendered = Vec::new();
    report.write(format, &mut rendered)?;
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&rendered).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write the report to standard output")),
    }
}

/// The format a file's extension asks for; `None` for an extension synscope does not know.
pub fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "json" => Some(Format::Json),
        "md" | "markdown" => Some(Format::Markdown),
        "prom" => Some(Format::Prometheus),
        "txt" => Some(Format::Text),
        "xml" => Some(Format::Junit),
        "html" | "htm" => Some(Format::Html),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synscope-sink-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_failed_write_removes_the_file_and_says_so() {
        let dir = tempdir("fail");
        let path = dir.join("r.json");
        let mut output = Output::create(&path, "the report").unwrap();
        let error = output
            .write(
                |out| {
                    out.write_all(b"{\"half\":")?;
                    Err(io::Error::from_raw_os_error(libc::ENOSPC).into())
                },
                "the report",
            )
            .unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("r.json"), "{message}");
        assert!(message.contains("removed"), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_device_is_never_removed() {
        let mut output = Output::create(Path::new("/dev/full"), "the report").unwrap();
        let error = output
            .write(|out| Ok(out.write_all(&[b'x'; 100_000])?), "the report")
            .unwrap_err();
        assert!(format!("{error:#}").contains("No space left"), "{error:#}");
        assert!(Path::new("/dev/full").exists());
    }

    #[test]
    fn an_unwritten_file_goes_with_the_sink() {
        let dir = tempdir("unwritten");
        let (kept, unwritten) = (dir.join("kept.json"), dir.join("unwritten.json"));
        let mut output = Output::create(&kept, "the report").unwrap();
        output
            .write(|out| Ok(out.write_all(b"{}")?), "the report")
            .unwrap();
        drop(output);
        drop(Output::create(&unwritten, "the report").unwrap());
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "{}");
        assert!(!unwritten.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
