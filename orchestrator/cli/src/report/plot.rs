//! The report's figures with plotters, each drawn once as SVG (inlined in the page, and a file) and
//! once as PNG: loss curves per trial coloured by group with the group's seed band (min to max over
//! its seeds at each point, and the mean), and a scatter with the Pareto front marked.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One trial's curve.
pub struct Curve {
    pub group: String,
    pub points: Vec<(f64, f64)>,
}

/// A line figure: curves, axis descriptions, scales.
pub struct Lines {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub curves: Vec<Curve>,
}

/// A scatter of one point per trial, `front` marking the Pareto-optimal ones.
pub struct Scatter {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    /// `(x, y, group, on the front)`
    pub points: Vec<(f64, f64, String, bool)>,
}

/// Trials as bars over time, one row per device slot, coloured by how they ended.
pub struct Timeline {
    pub title: String,
    pub lanes: Vec<String>,
    /// `(lane, start s, end s, ending)`, times from the sweep's first start.
    pub bars: Vec<(usize, f64, f64, String)>,
}

pub enum Figure {
    Lines(Lines),
    Scatter(Scatter),
    Timeline(Timeline),
    Parallel(super::parallel::Parallel),
}

const SIZE: (u32, u32) = (900, 520);

/// Registers the bundled font for the PNG backend (SVG text needs none).
fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Draws the figure as an SVG string and writes `<stem>.svg` and `<stem>.png` into `dir`.
pub fn render(fig: &Figure, dir: &Path, stem: &str) -> Result<String> {
    font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(fig, &root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::write(dir.join(format!("{stem}.svg")), &svg)?;
    let png = dir.join(format!("{stem}.png"));
    let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
    draw(fig, &root)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(svg)
}

fn draw<DB: DrawingBackend>(fig: &Figure, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    match fig {
        Figure::Lines(l) => lines(l, root),
        Figure::Scatter(s) => scatter(s, root),
        Figure::Timeline(t) => timeline(t, root),
        Figure::Parallel(p) => super::parallel::draw(p, root),
    }
}

/// A colour per group, in order of first appearance.
fn palette(groups: &[String]) -> impl Fn(&str) -> RGBColor + '_ {
    move |g| {
        let i = groups.iter().position(|x| x == g).unwrap_or(0);
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    }
}

fn groups_of<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// `(lo, hi)` padded by 5%, over finite values; `(0, 1)` when empty.
fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let v: Vec<f64> = values
        .filter(|x| x.is_finite() && (!log || *x > 0.0))
        .collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    if !lo.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        return (lo / 1.2, hi * 1.2);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// The group's band: at every x of its curves, min, mean and max over the curves that reach it.
pub fn band(curves: &[&Curve]) -> Vec<(f64, f64, f64, f64)> {
    let mut xs: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .filter_map(|x| {
            let ys: Vec<f64> = curves
                .iter()
                .filter_map(|c| crate::curves::interpolate(&c.points, x))
                .collect();
            (ys.len() == curves.len()).then(|| {
                let mean = ys.iter().sum::<f64>() / ys.len() as f64;
                let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                (x, lo, mean, hi)
            })
        })
        .collect()
}

fn lines<DB: DrawingBackend>(l: &Lines, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let all = || l.curves.iter().flat_map(|c| c.points.iter());
    let (x0, x1) = range(all().map(|p| p.0), l.log_x);
    let (y0, y1) = range(all().map(|p| p.1), false);
    let groups = groups_of(l.curves.iter().map(|c| &c.group));
    let color = palette(&groups);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&l.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(l.x_desc.as_str())
                .y_desc(l.y_desc.as_str())
                .x_label_formatter(&|v| crate::table::human(*v))
                .x_labels(8)
                .y_labels(8)
                .draw()
                .map_err(err)?;
            for g in &groups {
                let members: Vec<&Curve> = l.curves.iter().filter(|c| &c.group == g).collect();
                let c = color(g);
                for m in &members {
                    chart
                        .draw_series(LineSeries::new(
                            m.points.iter().cloned(),
                            c.mix(0.35).stroke_width(1),
                        ))
                        .map_err(err)?;
                }
                let b = band(&members);
                if members.len() > 1 && b.len() > 1 {
                    let mut poly: Vec<(f64, f64)> = b.iter().map(|p| (p.0, p.3)).collect();
                    poly.extend(b.iter().rev().map(|p| (p.0, p.1)));
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.18).filled())))
                        .map_err(err)?;
                }
                let label = if members.len() > 1 {
                    format!("{g} (mean of {}, band: min-max)", members.len())
                } else {
                    g.clone()
                };
                chart
                    .draw_series(LineSeries::new(
                        b.iter().map(|p| (p.0, p.2)),
                        c.stroke_width(3),
                    ))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }};
    }
    if l.log_x {
        body!(
            builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(err)?
        );
    } else {
        body!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
    }
    Ok(())
}

fn scatter<DB: DrawingBackend>(s: &Scatter, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let (x0, x1) = range(s.points.iter().map(|p| p.0), s.log_x);
    let (y0, y1) = range(s.points.iter().map(|p| p.1), false);
    let groups = groups_of(s.points.iter().map(|p| &p.2));
    let color = palette(&groups);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&s.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(s.x_desc.as_str())
                .y_desc(s.y_desc.as_str())
                .x_label_formatter(&|v| crate::table::human(*v))
                .draw()
                .map_err(err)?;
            let mut front: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.3)
                .map(|p| (p.0, p.1))
                .collect();
            front.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(front, BLACK.stroke_width(1)))
                .map_err(err)?
                .label("Pareto front")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            for g in &groups {
                let c = color(g);
                let pts: Vec<_> = s.points.iter().filter(|p| &p.2 == g).collect();
                chart
                    .draw_series(pts.iter().map(|p| {
                        let style = if p.3 { c.filled() } else { c.stroke_width(2) };
                        Circle::new((p.0, p.1), if p.3 { 6 } else { 5 }, style)
                    }))
                    .map_err(err)?
                    .label(g.clone())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }};
    }
    if s.log_x {
        body!(
            builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(err)?
        );
    } else {
        body!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
    }
    Ok(())
}

fn timeline<DB: DrawingBackend>(t: &Timeline, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let end = t.bars.iter().map(|b| b.2).fold(1.0, f64::max) * 1.02;
    let n = t.lanes.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(&t.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, -0.5..n - 0.5)
        .map_err(err)?;
    let lanes = &t.lanes;
    chart
        .configure_mesh()
        .x_desc("seconds since the sweep's first trial started")
        .y_desc("device slot")
        .y_labels(t.lanes.len().max(1))
        .y_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                lanes.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .disable_y_mesh()
        .draw()
        .map_err(err)?;
    let groups = groups_of(t.bars.iter().map(|b| &b.3));
    let color = palette(&groups);
    for g in &groups {
        let c = color(g);
        chart
            .draw_series(t.bars.iter().filter(|b| &b.3 == g).map(|b| {
                let y = b.0 as f64;
                Rectangle::new(
                    [(b.1, y - 0.35), (b.2.max(b.1 + end * 0.002), y + 0.35)],
                    c.filled(),
                )
            }))
            .map_err(err)?
            .label(g.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    // a white edge between consecutive trials of one slot
    chart
        .draw_series(t.bars.iter().map(|b| {
            let y = b.0 as f64;
            Rectangle::new([(b.1, y - 0.35), (b.2, y + 0.35)], WHITE.stroke_width(2))
        }))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
