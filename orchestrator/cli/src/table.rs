//! The one table style of the CLI (`plan`, `run`, `results`, `status`): borderless columns two spaces
//! apart, sized to the terminal (long cells wrap inside their column instead of the whole table
//! wrapping), numbers rounded for reading. Data frames are printed through [`print_frame`].

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use polars::prelude::*;

/// Tables longer than this are streamed line by line in plain aligned columns (no wrapping), so
/// that a million-trial plan prints at once and in constant extra memory.
const STREAM_ROWS: usize = 2000;

/// Prints `rows` under `headers`; numeric cells are right-aligned.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    if rows.len() > STREAM_ROWS {
        return stream(headers, rows);
    }
    println!("{}", render(headers, rows));
}

fn stream(headers: &[&str], rows: &[Vec<String>]) {
    use std::io::Write;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, &w)| {
                if looks_numeric(c) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
}

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if let Some((w, _)) = terminal_width() {
        t.set_width(w);
    }
    t.set_header(headers.iter().map(Cell::new));
    for r in rows {
        t.add_row(r.iter().map(|c| {
            let cell = Cell::new(c);
            if looks_numeric(c) {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    // comfy-table pads every cell with one space on each side: two spaces between columns.
    t.lines()
        .map(|l| l.trim_end().to_string())
        .map(|l| l.strip_prefix(' ').map(str::to_string).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn terminal_width() -> Option<(u16, u16)> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return None;
    }
    window_size()
}

fn window_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct for a terminal descriptor.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0)
            .then_some((ws.ws_col, ws.ws_row))
    }
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && s.trim_end_matches(['s', '%', 'k', 'M', 'G'])
            .parse::<f64>()
            .is_ok()
}

/// A float for reading: 4 decimals below 100, fewer above, thousands as `12.3k`-style only for
/// throughput-like columns (see [`human`]).
pub fn float(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 1e5 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// `1.23M`, `45.6k`: counts such as params and tokens per second.
pub fn human(n: f64) -> String {
    if n >= 1e12 {
        format!("{n:.2e}")
    } else if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// One cell of a data frame, rounded.
fn cell(v: AnyValue<'_>, column: &str) -> String {
    let counted = matches!(
        column,
        "params"
            | "tok_s"
            | "flops_per_token"
            | "train_flops"
            | "optimal_params"
            | "optimal_tokens"
    );
    match v {
        AnyValue::Null => "-".into(),
        AnyValue::Float64(f) if counted => human(f),
        AnyValue::Float32(f) if counted => human(f as f64),
        AnyValue::Float64(f) => float(f),
        AnyValue::Float32(f) => float(f as f64),
        AnyValue::UInt64(n) if counted => human(n as f64),
        AnyValue::Int64(n) if counted => human(n as f64),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Rows of a data frame as text cells.
pub fn frame_rows(df: &DataFrame) -> (Vec<String>, Vec<Vec<String>>) {
    let headers: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows = (0..df.height())
        .map(|i| {
            df.columns()
                .iter()
                .map(|c| cell(c.get(i).unwrap_or(AnyValue::Null), c.name()))
                .collect()
        })
        .collect();
    (headers, rows)
}

/// The frame without the columns that hold nothing (e.g. `cost_usd` when no price is set).
pub fn without_empty(df: &DataFrame) -> DataFrame {
    if df.height() == 0 {
        return df.clone();
    }
    let keep: Vec<PlSmallStr> = df
        .columns()
        .iter()
        .filter(|c| c.null_count() < df.height())
        .map(|c| c.name().clone())
        .collect();
    df.select(keep).unwrap_or_else(|_| df.clone())
}

pub fn print_frame(df: &DataFrame) {
    let (headers, rows) = frame_rows(df);
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    print(&h, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_rounded_and_columns_aligned() {
        let df = df!("trial" => ["abc", "defghi"], "best_val_loss" => [Some(1.234_567_89), None],
            "tok_s" => [123_456.7, 9.0])
        .unwrap();
        let (h, rows) = frame_rows(&df);
        assert_eq!(h, ["trial", "best_val_loss", "tok_s"]);
        assert_eq!(rows[0], ["abc", "1.2346", "123.5k"]);
        assert_eq!(rows[1], ["defghi", "-", "9"]);
        let text = render(&["a", "b"], &[vec!["x".into(), "1.5".into()]]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with('a'), "{text:?}");
    }
}
