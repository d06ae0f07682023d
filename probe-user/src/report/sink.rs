//! Where reports go: files opened before tracing starts (so a bad path fails at once, not
//! after the run), each in its own format, and standard output.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{Format, Report};

/// Every destination of one run's report.
pub struct ReportSink {
    files: Vec<(Format, PathBuf, File)>,
    /// The HdrHistogram interval log, written from the session's timeline.
    hdr_log: Option<(PathBuf, File)>,
    /// The format written to standard output, if any.
    stdout: Option<Format>,
}

impl ReportSink {
    /// `outputs`: files and the format of each. Without files the report goes to standard
    /// output in `stdout_format`; with files, the text report still goes to standard output.
    pub fn open(
        outputs: &[(Format, PathBuf)],
        hdr_log: Option<PathBuf>,
        stdout_format: Format,
    ) -> anyhow::Result<Self> {
        let hdr_log = match hdr_log {
            Some(path) => Some((
                File::create(&path).with_context(|| {
                    format!("cannot write the HdrHistogram log to {}", path.display())
                })?,
                path,
            )),
            None => None,
        }
        .map(|(file, path)| (path, file));
        let mut files = Vec::new();
        for (format, path) in outputs {
            let file = File::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            files.push((*format, path.clone(), file));
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

    /// Whether a timeline must be kept for an HdrHistogram log.
    /// Writes the report only to the files: standard output carries something else (`top`'s
    /// NDJSON snapshots).
    pub fn without_stdout(mut self) -> Self {
        self.stdout = None;
        self
    }

    pub fn wants_hdr_log(&self) -> bool {
        self.hdr_log.is_some()
    }

    /// Writes the HdrHistogram log with `write`, if one was asked for.
    pub fn write_hdr_log(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some((path, file)) = &mut self.hdr_log {
            write(file)
                .and_then(|()| Ok(file.flush()?))
                .with_context(|| {
                    format!("cannot write the HdrHistogram log to {}", path.display())
                })?;
        }
        Ok(())
    }

    pub fn write(&mut self, report: &Report) -> anyhow::Result<()> {
        for (format, path, file) in &mut self.files {
            report
                .write(*format, file)
                .and_then(|()| Ok(file.flush()?))
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
        }
        if let Some(format) = self.stdout {
            let mut stdout = io::stdout().lock();
            report.write(format, &mut stdout)?;
            stdout.flush()?;
        }
        Ok(())
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
