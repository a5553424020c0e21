//! The table `provider jobs` prints: a header, UTC times, run durations and usage.
//!
//! Columns are padded to their widest cell so the output lines up for a reader and splits
//! on whitespace for a script; an absent value is `-` so every row has every column. Long
//! identifiers are shortened (`--json` has them whole).

use super::jobs::JobRow;

const HEADER: [&str; 10] = [
    "JOB",
    "STATE",
    "STATUS",
    "CREATED (UTC)",
    "RUN",
    "WALL",
    "PEAK MEM",
    "FUEL",
    "DEFINITION",
    "REQUESTOR",
];

/// `1.234s`, `2m05s`, `3h04m`: short, and exact enough to compare runs.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{:03}s", ms / 1000, ms % 1000),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// `12.0MiB`, `512B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

fn short(s: &str, keep: usize) -> String {
    if s.chars().count() <= keep {
        s.to_string()
    } else {
        s.chars().take(keep).collect::<String>() + "…"
    }
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// The table for `rows`, header first, one line per job, newline-terminated.
pub fn jobs_table(rows: &[JobRow]) -> String {
    let mut cells: Vec<Vec<String>> = vec![HEADER.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.id.clone(),
            r.state.clone(),
            or_dash(r.status.clone().map(|s| match r.exit_code {
                Some(c) if c != 0 => format!("{s}({c})"),
                _ => s,
            })),
            pinfold_registry::web::utc(r.created_ms / 1000)
                .trim_end_matches(" UTC")
                .to_string(),
            or_dash(r.run_ms.map(duration)),
            or_dash(r.wall_us.map(|us| duration(us / 1000))),
            or_dash(r.peak_memory.map(bytes)),
            or_dash(r.fuel.map(|f| f.to_string())),
            short(&r.definition, 19),
            short(&r.requestor, 16),
        ]);
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (row, r) in cells
        .iter()
        .zip(std::iter::once(None).chain(rows.iter().map(Some)))
    {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        // A refusal's or failure's reason, indented under its row: too long for a column.
        if let Some(d) = r.and_then(|r| r.detail.as_deref()) {
            out.push_str(&format!("    {}\n", short(d, 200)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_at_a_glance() {
        assert_eq!(duration(15), "15ms");
        assert_eq!(duration(1234), "1.234s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(3_840_000), "1h04m");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(12 << 20), "12.0MiB");
    }
}
