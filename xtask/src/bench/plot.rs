//! An SVG plot of wake time against memory size.

use std::fmt::Write as _;

use super::stats::Summary;
use super::wake;

const WIDTH: f64 = 680.0;
const HEIGHT: f64 = 400.0;
/// Space for the axes' labels.
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 170.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 50.0;

/// One line of the plot: a method's median wake time per memory size.
struct Series {
    label: &'static str,
    color: &'static str,
    /// Memory size in MiB and median milliseconds.
    points: Vec<(f64, f64)>,
}

/// Draws the median wake-to-first-byte time of each method against the
/// memory size, on a logarithmic size axis.
pub fn wake_svg(results: &wake::Results) -> String {
    let median = |samples: Vec<f64>| Summary::of(&samples).map(|summary| summary.median);
    let series_of = |label, color, first_byte: &dyn Fn(&wake::SizeResults) -> Vec<f64>| Series {
        label,
        color,
        points: results
            .sizes
            .iter()
            .filter_map(|size| Some((size.size_mib as f64, median(first_byte(size))?)))
            .collect(),
    };
    let series = [
        series_of("lightwhale", "#1f77b4", &|size| size.lightwhale.iter().map(|run| run.first_byte_ms).collect()),
        series_of("docker start --checkpoint", "#ff7f0e", &|size| size.docker.iter().map(|run| run.first_byte_ms).collect()),
        series_of("cold start", "#2ca02c", &|size| size.cold.iter().map(|run| run.first_byte_ms).collect()),
    ];
    render(&series)
}

fn render(series: &[Series]) -> String {
    let points = || series.iter().flat_map(|series| series.points.iter());
    let min_size = points().map(|point| point.0).fold(f64::INFINITY, f64::min).max(1.0);
    let max_size = points().map(|point| point.0).fold(1.0, f64::max).max(min_size * 2.0);
    let max_ms = nice_ceiling(points().map(|point| point.1).fold(1.0, f64::max));

    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |size: f64| MARGIN_LEFT + (size.log2() - min_size.log2()) / (max_size.log2() - min_size.log2()) * plot_width;
    let y = |ms: f64| MARGIN_TOP + plot_height - ms / max_ms * plot_height;

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Wake to first byte (median)</text>"#, MARGIN_LEFT + plot_width / 2.0);

    // Vertical axis with five gridlines.
    for step in 0..=5 {
        let ms = max_ms * f64::from(step) / 5.0;
        let at = y(ms);
        let _ = writeln!(svg, r##"<line x1="{MARGIN_LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#ddd"/>"##, MARGIN_LEFT + plot_width);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{ms:.0}</text>"#, MARGIN_LEFT - 6.0, at + 4.0);
    }
    let _ = writeln!(svg, r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">milliseconds</text>"#, MARGIN_TOP + plot_height / 2.0);

    // Horizontal axis: one tick per measured size.
    let mut sizes: Vec<f64> = points().map(|point| point.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let bottom = MARGIN_TOP + plot_height;
    let _ = writeln!(svg, r##"<line x1="{MARGIN_LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="#000"/>"##, MARGIN_LEFT + plot_width);
    let _ = writeln!(svg, r##"<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{bottom:.1}" stroke="#000"/>"##);
    for size in &sizes {
        let at = x(*size);
        let _ = writeln!(svg, r##"<line x1="{at:.1}" y1="{bottom:.1}" x2="{at:.1}" y2="{:.1}" stroke="#000"/>"##, bottom + 5.0);
        let _ = writeln!(svg, r#"<text x="{at:.1}" y="{:.1}" text-anchor="middle">{size:.0}</text>"#, bottom + 18.0);
    }
    let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">resident memory (MiB, log scale)</text>"#, MARGIN_LEFT + plot_width / 2.0, HEIGHT - 10.0);

    for (index, series) in series.iter().enumerate() {
        let path: Vec<String> = series.points.iter().map(|(size, ms)| format!("{:.1},{:.1}", x(*size), y(*ms))).collect();
        let _ = writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#, path.join(" "), series.color);
        for (size, ms) in &series.points {
            let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#, x(*size), y(*ms), series.color);
        }
        let legend_y = MARGIN_TOP + 10.0 + index as f64 * 18.0;
        let legend_x = MARGIN_LEFT + plot_width + 12.0;
        let _ = writeln!(svg, r#"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{}" stroke-width="2"/>"#, legend_x + 20.0, series.color);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, legend_x + 26.0, legend_y + 4.0, series.label);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Rounds up to 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|factor| factor * power).find(|nice| *nice >= value).unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(3800.0), 5000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }

    #[test]
    fn renders_every_series() {
        let series = [
            Series { label: "a", color: "#000", points: vec![(1.0, 300.0), (256.0, 4000.0)] },
            Series { label: "b", color: "#111", points: vec![(1.0, 200.0)] },
        ];
        let svg = render(&series);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
    }
}
