//! Golden outputs: every format of the fixed sample report ([`super::sample::report`]), byte
//! for byte, in `src/report/golden/sample.{txt,json,prom,md,xml}`, and `serve`'s `/metrics`
//! page of a fixed state in `serve.prom`. The files document each format: a
//! change to a format shows in their diff. To accept a change, rewrite them with
//! `SYNSCOPE_UPDATE_GOLDEN=1 cargo test -p probe-user golden` and review that diff.

use std::path::PathBuf;

use super::{Format, sample};

const UPDATE: &str = "SYNSCOPE_UPDATE_GOLDEN";

fn check(format: Format, file: &str) {
    let mut actual = Vec::new();
    sample::report().write(format, &mut actual).unwrap();
    compare(
        file,
        &actual,
        &format!("the {format:?} output of the sample report"),
    );
}

/// Compares `actual` (`what` it is) with the golden file `file`, or rewrites the file when
/// asked to.
pub(crate) fn compare(file: &str, actual: &[u8], what: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/golden")
        .join(file);
    if std::env::var_os(UPDATE).is_some_and(|v| v == "1") {
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("{UPDATE}=1: rewrote {}", path.display());
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); {UPDATE}=1 cargo test -p probe-user golden writes it",
            path.display()
        )
    });
    if actual == expected {
        return;
    }
    let (expected, actual) = (
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual),
    );
    // The first line that differs, its line ending included.
    let mut expected_lines = expected.split_inclusive('\n');
    let mut actual_lines = actual.split_inclusive('\n');
    let (line, want, got) = (1..)
        .map(|n| (n, expected_lines.next(), actual_lines.next()))
        .find(|(_, want, got)| want != got)
        .expect("the outputs differ somewhere");
    panic!(
        "{what} differs from {} at line {line}:\n  \
         expected: {}\n  actual:   {}\n\
         The whole output:\n{actual}\n\
         If the change is intended: {UPDATE}=1 cargo test -p probe-user golden, then review \
         the diff of the file.",
        path.display(),
        want.map_or("(end of file)".to_owned(), |l| format!("{l:?}")),
        got.map_or("(end of output)".to_owned(), |l| format!("{l:?}")),
    );
}

#[test]
fn text() {
    check(Format::Text, "sample.txt");
}

#[test]
fn json() {
    check(Format::Json, "sample.json");
}

#[test]
fn prometheus() {
    check(Format::Prometheus, "sample.prom");
}

#[test]
fn markdown() {
    check(Format::Markdown, "sample.md");
}

#[test]
fn junit() {
    check(Format::Junit, "sample.xml");
}
