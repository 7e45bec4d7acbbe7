//! etcdctl's output conventions.

/// Bytes in etcdctl's human form (go-humanize `Bytes`: SI units, e.g. "20 kB", "2.1 MB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let value = n as f64 / 1000f64.powi(exp as i32);
    let rounded = (value * 10.0 + 0.5).floor() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[exp])
    } else {
        format!("{rounded:.0} {}", UNITS[exp])
    }
}

/// An ASCII table like etcdctl's (tablewriter): centred headers, right-aligned cells.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.len();
        out.push_str(&format!(
            "| {}{}{} ",
            " ".repeat(pad / 2),
            h,
            " ".repeat(pad - pad / 2)
        ));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!("| {cell:>w$} "));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(544), "544 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(2_101_248), "2.1 MB");
        assert_eq!(human_bytes(25_653_280), "26 MB");
    }

    #[test]
    fn tables_look_like_etcdctls() {
        let t = table(
            &["HASH", "REVISION"],
            &[vec!["fe01cf57".into(), "10".into()]],
        );
        assert_eq!(
            t,
            "+----------+----------+\n|   HASH   | REVISION |\n+----------+----------+\n| fe01cf57 |       10 |\n+----------+----------+\n"
        );
    }
}
