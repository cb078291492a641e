//! CSV: one sample per line, features then the class label (a
//! non-negative integer) in the last column. A UTF-8 byte order mark at
//! the start is ignored. The first line is a header, skipped (and said so
//! in the notes), when every one of its fields is non-numeric; a first
//! line with both numeric and non-numeric fields is an error, never
//! dropped silently. Shape: features × 1 × 1.

use super::{check_items, printable, Raw};
use anyhow::{bail, Result};

/// Parses CSV text; `pixel_max` marks image data (built-in sets).
pub(crate) fn parse(bytes: &[u8], name: &str, pixel_max: Option<f32>) -> Result<Raw> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => bail!(
            "{name}: not UTF-8 text (byte {}): expected CSV",
            e.valid_up_to()
        ),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // at most one value per comma (features) and one label per line: the
    // memory the f32 copy needs, checked before it is made
    let commas = text.bytes().filter(|&b| b == b',').count();
    let lines = text.lines().count();
    check_items(
        &format!("{name}: {commas} values and {lines} labels"),
        commas.saturating_add(lines),
        4,
    )?;
    let mut raw = Raw {
        pixel_max,
        ..Raw::default()
    };
    raw.x.reserve(commas);
    raw.y.reserve(lines);
    let mut cols = 0usize;
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if ln == 0 {
            let numeric: Vec<bool> = fields.iter().map(|f| f.parse::<f64>().is_ok()).collect();
            match (
                numeric.iter().position(|&n| n),
                numeric.iter().position(|&n| !n),
            ) {
                (None, _) => {
                    raw.notes.push(format!(
                        "header row skipped: {name}:1 ({})",
                        printable(line, 80)
                    ));
                    continue;
                }
                (Some(k), Some(c)) => bail!(
                    "{name}:1 column {}: '{}' is not a number, but column {} is ('{}'): a header row must have no numeric fields, a data row only numbers",
                    c + 1,
                    printable(fields[c], 40),
                    k + 1,
                    printable(fields[k], 40)
                ),
                (Some(_), None) => {}
            }
        }
        if cols == 0 {
            if fields.len() < 2 {
                bail!(
                    "{name}:{}: expected at least 2 columns (features, then label), found {}",
                    ln + 1,
                    fields.len()
                );
            }
            cols = fields.len();
        }
        if fields.len() != cols {
            bail!(
                "{name}:{}: expected {cols} columns like the first row, found {}",
                ln + 1,
                fields.len()
            );
        }
        for (c, f) in fields[..cols - 1].iter().enumerate() {
            let v: f32 = match f.parse() {
                Ok(v) => v,
                Err(_) => bail!(
                    "{name}:{} column {}: '{}' is not a number",
                    ln + 1,
                    c + 1,
                    printable(f, 40)
                ),
            };
            if !v.is_finite() {
                bail!(
                    "{name}:{} column {}: {f} (NaN or infinite values are not allowed)",
                    ln + 1,
                    c + 1
                );
            }
            raw.x.push(v);
        }
        let lab = fields[cols - 1];
        let y: u32 = match lab.parse::<u32>() {
            Ok(y) if y < 65536 => y,
            _ => bail!(
                "{name}:{} column {cols}: label '{}' is not a class index (expected an integer 0..65535)",
                ln + 1,
                printable(lab, 40)
            ),
        };
        raw.y.push(y);
    }
    if raw.y.is_empty() {
        bail!("{name}: no data rows");
    }
    raw.dims = (cols - 1, 1, 1);
    if let Some(m) = pixel_max {
        if let Some(v) = raw.x.iter().find(|v| **v < 0.0 || **v > m) {
            bail!("{name}: pixel value {v} outside 0..{m}");
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_values() {
        let r = parse(b"a,b,label\n1,2,0\n3.5,-4,1\n\n", "t.csv", None).unwrap();
        assert_eq!(r.notes, vec!["header row skipped: t.csv:1 (a,b,label)"]);
        assert_eq!(r.dims, (2, 1, 1));
        assert_eq!(r.x, vec![1.0, 2.0, 3.5, -4.0]);
        assert_eq!(r.y, vec![0, 1]);
    }

    #[test]
    fn byte_order_mark_keeps_every_row() {
        // a BOM before numeric data: no row is taken for a header
        let r = parse(b"\xef\xbb\xbf1,2,0\n3,4,1\n", "t.csv", None).unwrap();
        assert_eq!(r.x, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r.y, vec![0, 1]);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // a BOM before a header: the header is skipped, and said so
        let r = parse(b"\xef\xbb\xbfa,b,label\n1,2,0\n", "t.csv", None).unwrap();
        assert_eq!((r.x.len(), r.y.len()), (2, 1));
        assert_eq!(r.notes, vec!["header row skipped: t.csv:1 (a,b,label)"]);
    }

    #[test]
    fn a_first_row_partly_numeric_is_an_error_not_a_header() {
        for (text, col, field) in [
            (&b"1,x,0\n3,4,1\n"[..], "column 2", "'x'"),
            (b"x1,2,label\n3,4,1\n", "column 1", "'x1'"),
            (b"1,2,zero\n3,4,1\n", "column 3", "'zero'"),
            (b"1,,0\n3,4,1\n", "column 2", "''"),
        ] {
            let e = parse(text, "t.csv", None).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("t.csv:1 {col}: {field} is not a number")),
                "{e}"
            );
        }
        // a header anywhere but the first line is a bad row
        let e = parse(b"1,2,0\na,b,c\n", "t.csv", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:2 column 1"), "{e}");
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse(b"1,2,0\n1,nan,1\n", "t.csv", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:2 column 2"), "{e}");
        let e = parse(b"1,2,0\n1,2\n", "t.csv", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:2") && e.contains("3 columns"), "{e}");
        let e = parse(b"1,2,-1\n", "t.csv", None).unwrap_err().to_string();
        assert!(e.contains("label '-1'"), "{e}");
        let e = parse(b"1,x,0\n", "t.csv", None).unwrap_err().to_string();
        assert!(
            e.contains("t.csv:1 column 2") && e.contains("not a number"),
            "{e}"
        );
        let e = parse(b"a,b,label\n", "t.csv", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no data rows"), "{e}");
    }
}
