//! The HTML report of a real run, opened in headless Chromium (Debian's `chromium`, installed
//! by xtask/setup.sh): the browser parses the page with its six plots drawn, and screenshots
//! it.

use std::process::Command;

use synscope_tests::{Netns, require_root, run_ok, scenario, synscope_bin};

const PORT: u16 = 7740;

#[test]
fn the_html_report_opens_in_a_browser_with_its_plots_drawn() {
    require_root();
    let netns = Netns::new("html");
    let dir = std::env::temp_dir().join(format!("synscope-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let script = scenario!(
        &netns,
        "--listen",
        &format!("127.0.0.1:{PORT}"),
        "--connections",
        "30",
        "--accept-delay-ms",
        "40"
    );
    run_ok(
        Command::new(synscope_bin())
            .args(["run", "--port", &PORT.to_string(), "-o"])
            .arg(&page)
            .args(["--", "sh", "-c", &script]),
    );
    let url = format!("file://{}", page.display());
    let chromium = |args: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("chromium (xtask/setup.sh installs it)")
    };
    // The DOM as the browser built it: the plots are there, each with a drawn line.
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    assert!(dom.contains(&format!("Port {PORT} on 127.0.0.1")), "{dom}");
    assert_eq!(
        dom.matches("<svg").count(),
        6,
        "three spectra, three per-second charts"
    );
    let drawn = dom
        .split("<polyline")
        .skip(1)
        .filter(|rest| {
            let points = rest.split("points=\"").nth(1).unwrap_or_default();
            points
                .split('"')
                .next()
                .unwrap_or_default()
                .split(' ')
                .count()
                >= 2
        })
        .count();
    assert!(drawn >= 6, "{drawn} lines drawn");

    let screenshot = dir.join("report.png");
    chromium(&[
        "--window-size=1100,2400",
        &format!("--screenshot={}", screenshot.display()),
    ]);
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    // A blank page compresses to a few kilobytes; tables and plots do not.
    assert!(png.len() > 50_000, "screenshot of {} bytes", png.len());
    let _ = std::fs::remove_dir_all(&dir);
}
