//! Where a report goes: a file opened before tracing starts (so a bad path fails at once, not
//! after the run), or standard output.

use std::{
    fs::File,
    io::{self, Write},
    path::Path,
};

use anyhow::Context as _;

use super::{Format, Report};

/// Where the report goes: a file opened before tracing starts, or standard output.
pub enum ReportSink {
    Stdout,
    File(File),
}

impl ReportSink {
    pub fn open(output: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match output {
            Some(path) => Self::File(
                File::create(path)
                    .with_context(|| format!("cannot write the report to {}", path.display()))?,
            ),
            None => Self::Stdout,
        })
    }

    pub fn write(&mut self, report: &Report, format: Format) -> anyhow::Result<()> {
        match self {
            Self::File(file) => {
                report.write(format, file)?;
                file.flush()?;
            }
            Self::Stdout => {
                let mut stdout = io::stdout().lock();
                report.write(format, &mut stdout)?;
                stdout.flush()?;
            }
        }
        Ok(())
    }
}
