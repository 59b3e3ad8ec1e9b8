//! The PNG plots of docs/SCALE.md (plotters, bitmap backend; text drawn
//! with a TrueType font read at run time, DejaVu Sans by default).

use std::path::Path;

use plotters::prelude::*;

use crate::stats::{percentile, Stats};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn font() -> Result<(), String> {
    let path = std::env::var("SIMS_SCALE_FONT").ok();
    let candidates = path.iter().map(String::as_str).chain(FONT_PATHS);
    for p in candidates {
        if let Ok(bytes) = std::fs::read(p) {
            // Once per run: plotters keeps &'static font data.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{p}: not a font"));
        }
    }
    Err(format!(
        "no TrueType font (tried {}; set SIMS_SCALE_FONT, or install fonts-dejavu-core)",
        FONT_PATHS.join(", ")
    ))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes the three plots into `dir`; returns their paths.
pub fn all(st: &Stats, dir: &Path) -> Result<Vec<String>, String> {
    font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = [
        (
            "scale-bindings.png",
            bindings as fn(&Stats, &Path) -> Result<(), String>,
        ),
        ("scale-relayed-cdf.png", relayed_cdf),
        ("scale-ha-load.png", ha_load),
    ];
    let mut out = Vec::new();
    for (name, f) in files {
        let p = dir.join(name);
        f(st, &p)?;
        out.push(p.display().to_string());
    }
    Ok(out)
}

/// (hour, mean, p99, max) of one simulated minute.
type Minute = (f64, f64, f64, f64);
/// A line of the plot: its name, colour and value of a minute.
type Series = (&'static str, RGBColor, fn(&Minute) -> f64);

/// Bindings per agent over the day: mean, p99 and max across the agents,
/// each simulated minute.
fn bindings(st: &Stats, path: &Path) -> Result<(), String> {
    let per_min: Vec<Minute> = (st.samples.iter().enumerate())
        .map(|(i, s)| {
            let v: Vec<f64> = s.iter().map(|&x| x as f64).collect();
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let max = v.iter().cloned().fold(0.0, f64::max);
            ((i + 1) as f64 / 60.0, mean, percentile(&v, 99.0), max)
        })
        .collect();
    let ymax = per_min.iter().map(|p| p.3).fold(1.0, f64::max) * 1.1;
    let hours = st.day_ms as f64 / 3_600_000.0;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "Bindings per agent over the day ({} agents, {} nodes)",
                st.agents.len(),
                st.nodes
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..hours, 0.0..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("hour of the day")
        .y_desc("bindings held")
        .draw()
        .map_err(err)?;
    let series: [Series; 3] = [
        ("max", RED, |p| p.3),
        ("p99", BLUE, |p| p.2),
        ("mean", BLACK, |p| p.1),
    ];
    for (name, color, f) in series {
        c.draw_series(LineSeries::new(per_min.iter().map(|p| (p.0, f(p))), color))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The CDF of the fraction of each node's bytes that went through a
/// tunnel.
fn relayed_cdf(st: &Stats, path: &Path) -> Result<(), String> {
    let mut v = st.node_relayed_fraction.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len().max(1) as f64;
    let pts: Vec<(f64, f64)> = (v.iter().enumerate())
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect();
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Share of a node's bytes relayed through a tunnel (CDF over nodes)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("fraction of the node's bytes relayed")
        .y_desc("fraction of nodes")
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Bytes per hour through SIMS tunnels and through MIPv4 home agents on
/// the same workload.
fn ha_load(st: &Stats, path: &Path) -> Result<(), String> {
    let hours = (st.day_ms / 3_600_000) as usize;
    let gb = |v: &[f64]| -> Vec<(f64, f64)> {
        (v.iter().take(hours).enumerate())
            .map(|(h, b)| (h as f64 + 0.5, b / 1e9))
            .collect()
    };
    let (sims, mip) = (gb(&st.hourly_relayed), gb(&st.hourly_mip));
    let ymax = mip.iter().chain(&sims).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "Tunnelled traffic: SIMS relays vs MIPv4 home agents (ratio {:.1})",
                st.mip_ha_ratio()
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..hours as f64, 0.0..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("hour of the day")
        .y_desc("GB per hour, all agents")
        .draw()
        .map_err(err)?;
    for (name, color, pts) in [
        ("MIPv4 home agents", RED, mip),
        ("SIMS tunnels", BLUE, sims),
    ] {
        c.draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
