//! The HTML report's plots, drawn by plotters into inline SVG: percentile spectra (ports
//! overlaid, on the `1/(1-p)` axis HdrHistogram users know) and per-second series.

use plotters::prelude::*;

/// One line of a plot: its name and its points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const SIZE: (u32, u32) = (640, 300);

/// A percentile spectrum: x is `log10(1/(1-p))` (0 = the median's 50 %... 5 = 99.999 %), so
/// the tail gets the room; y in milliseconds. `lines` hold [percentile, µs] points.
pub fn spectrum(title: &str, lines: &[Line]) -> anyhow::Result<String> {
    // 100 % itself would be at infinity: the last tick (99.999 %) stands for it.
    let to_x = |percentile: f64| (1.0 / (1.0 - (percentile / 100.0).min(0.99999))).log10();
    let lines: Vec<Line> = lines
        .iter()
        .map(|line| Line {
            name: line.name.clone(),
            points: line
                .points
                .iter()
                .map(|&(percentile, us)| (to_x(percentile), us / 1000.0))
                .collect(),
        })
        .collect();
    draw(title, "percentile", "ms", &lines, &|x| {
        let percentile = 100.0 * (1.0 - 10f64.powf(-x));
        format!("{}%", trim(percentile))
    })
}

/// Values per second of the run.
pub fn per_second(title: &str, unit: &str, lines: &[Line]) -> anyhow::Result<String> {
    draw(title, "second", unit, lines, &|x| format!("{x:.0}"))
}

fn draw(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    x_label: &dyn Fn(&f64) -> String,
) -> anyhow::Result<String> {
    let points = lines.iter().flat_map(|l| l.points.iter());
    let (x_max, y_max) = points.fold((1.0f64, 0.0f64), |(x, y), &(px, py)| (x.max(px), y.max(py)));
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(6)
            .x_label_formatter(x_label)
            .y_label_formatter(&|y| trim(*y))
            .draw()
            .map_err(plot_error)?;
        for (index, line) in lines.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(line.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw a plot: {error:?}")
}

/// A number without trailing zeros: 99.9, 50, 0.25.
fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
