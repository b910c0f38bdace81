//! The benches' Markdown tables and the way their numbers are written.

/// `12345.6` as `12,346`.
pub fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    // The first group holds 1 to 3 digits, every later one exactly 3.
    let first = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let mut out = digits[..first].to_owned();
    for group in digits.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.extend(group.iter().map(|&b| char::from(b)));
    }
    out
}

/// KiB as `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A backend's cell: why the backend was skipped, else the measure, or `-` where it was not taken.
pub fn cell(skipped: Option<&str>, measure: impl FnOnce() -> Option<String>) -> String {
    match skipped {
        Some(why) => format!("skipped: {why}"),
        None => measure().unwrap_or_else(|| "-".into()),
    }
}

/// A Markdown table: the head, its separator, then each row, one line each.
pub fn markdown(head: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(head);
    out.push('|');
    for _ in head {
        out.push_str("---|");
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(400_000.0), "400,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn a_table_in_markdown() {
        let head = ["measure", "SQLite"].map(String::from);
        let rows = [["rate".to_owned(), cell(None, || Some("1 req/s".into()))]];
        let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
        assert_eq!(
            markdown(&head, &rows),
            "| measure | SQLite |\n|---|---|\n| rate | 1 req/s |\n"
        );
        assert_eq!(cell(Some("unset"), || None), "skipped: unset");
        assert_eq!(cell(None, || None), "-");
    }
}
