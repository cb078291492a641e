//! CSV: one sample per line, features then the class label (a
//! non-negative integer) in the last column. An optional header line (a
//! first line with non-numeric fields) is skipped. Shape: features × 1 × 1.

use super::{printable, Raw};
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
    let mut raw = Raw {
        pixel_max,
        ..Raw::default()
    };
    let mut cols = 0usize;
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols == 0 {
            let numeric = fields.iter().all(|f| f.parse::<f64>().is_ok());
            if !numeric && ln == 0 {
                continue; // header
            }
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
        assert_eq!(r.dims, (2, 1, 1));
        assert_eq!(r.x, vec![1.0, 2.0, 3.5, -4.0]);
        assert_eq!(r.y, vec![0, 1]);
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
            e.contains("no data rows") || e.contains("not a number"),
            "{e}"
        );
    }
}
