//! A dependency-free SVG line chart for the simulations' plots: stacked panels, one line per
//! series, an optional shaded interval (an outage, a degraded phase).

use std::fmt::Write as _;

/// One line.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) color: &'static str,
    /// (x, y) in data units, x ascending.
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) dashed: bool,
}

/// One panel.
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) x_max: f64,
    pub(crate) y_max: f64,
    pub(crate) shade: Option<(f64, f64)>,
    pub(crate) series: Vec<Series>,
}

/// Line colours, in order.
pub(crate) const COLORS: [&str; 5] = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#7f7f7f"];

const W: f64 = 760.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 40.0;

/// The panels stacked into one SVG document.
pub(crate) fn svg(panels: &[Panel]) -> String {
    #[allow(clippy::cast_precision_loss)]
    let height = H * panels.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, panel) in panels.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let dy = H * i as f64;
        let _ = writeln!(out, "<g transform=\"translate(0,{dy})\">");
        panel.draw(&mut out);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

impl Panel {
    fn x(&self, v: f64) -> f64 {
        LEFT + (W - LEFT - 20.0) * v / self.x_max.max(f64::MIN_POSITIVE)
    }

    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - (H - BOTTOM - TOP) * v.min(self.y_max) / self.y_max.max(f64::MIN_POSITIVE)
    }

    fn draw(&self, out: &mut String) {
        if let Some((from, to)) = self.shade {
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\" fill=\"#eeeeee\"/>",
                self.x(from),
                self.x(to) - self.x(from),
                H - BOTTOM - TOP
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{}</text>",
            self.title
        );
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{0}\" stroke=\"black\"/>",
            H - BOTTOM,
            W - 20.0
        );
        for tick in 0..=4 {
            let v = self.y_max * f64::from(tick) / 4.0;
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                self.y(v) + 4.0,
                round(v)
            );
        }
        for tick in 0..=6 {
            let v = self.x_max * f64::from(tick) / 6.0;
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
                self.x(v),
                H - BOTTOM + 16.0,
                round(v)
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let points: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
                .collect();
            let dash = if s.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                s.color,
                points.join(" ")
            );
            #[allow(clippy::cast_precision_loss)]
            let ly = TOP + 16.0 * i as f64 + 10.0;
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"3\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                W - 190.0,
                W - 170.0,
                s.color,
                W - 165.0,
                ly + 4.0,
                s.name
            );
        }
    }
}

fn round(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
