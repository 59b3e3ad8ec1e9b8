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

/// A named line and its colour.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

/// A white 900x500 plot of `lines` with its caption and axes, and a legend
/// in the upper left when there are several lines.
fn plot(
    path: &Path,
    caption: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    (x_desc, y_desc): (&str, &str),
    lines: Vec<Line>,
    width: u32,
) -> Result<(), String> {
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let legend = lines.len() > 1;
    for (name, color, pts) in lines {
        c.draw_series(LineSeries::new(pts, color.stroke_width(width)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if legend {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Bindings per agent over the day: mean, p99 and max across the agents,
/// each simulated minute.
fn bindings(st: &Stats, path: &Path) -> Result<(), String> {
    let (mut mean, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in st.samples.iter().enumerate() {
        let h = (i + 1) as f64 / 60.0;
        let v: Vec<f64> = s.iter().map(|&x| x as f64).collect();
        mean.push((h, v.iter().sum::<f64>() / v.len().max(1) as f64));
        p99.push((h, percentile(&v, 99.0)));
        max.push((h, v.iter().cloned().fold(0.0, f64::max)));
    }
    let ymax = max.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let hours = st.day_ms as f64 / 3_600_000.0;
    let caption = format!(
        "Bindings per agent over the day ({} agents, {} nodes)",
        st.agents.len(),
        st.nodes
    );
    plot(
        path,
        &caption,
        (0.0..hours, 0.0..ymax),
        ("hour of the day", "bindings held"),
        vec![("max", RED, max), ("p99", BLUE, p99), ("mean", BLACK, mean)],
        1,
    )
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
    plot(
        path,
        "Share of a node's bytes relayed through a tunnel (CDF over nodes)",
        (0.0..1.0, 0.0..1.0),
        ("fraction of the node's bytes relayed", "fraction of nodes"),
        vec![("nodes", BLUE, pts)],
        2,
    )
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
    let caption = format!(
        "Tunnelled traffic: SIMS relays vs MIPv4 home agents (ratio {:.1})",
        st.mip_ha_ratio()
    );
    plot(
        path,
        &caption,
        (0.0..hours as f64, 0.0..ymax),
        ("hour of the day", "GB per hour, all agents"),
        vec![
            ("MIPv4 home agents", RED, mip),
            ("SIMS tunnels", BLUE, sims),
        ],
        2,
    )
}
