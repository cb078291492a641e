//! MNIST IDX files (raw or gzip): images `0x00000803` (u8, n × rows × cols)
//! and labels `0x00000801` (u8, n). Fashion-MNIST uses the same format.
//! The images' shape is the file's own: 1 × rows × cols.

use super::{check_items, read_maybe_gz, Raw};
use anyhow::{bail, Result};
use std::path::Path;

fn header(b: &[u8], name: &str, want_dims: u8) -> Result<(Vec<usize>, usize)> {
    if b.len() < 4 {
        bail!(
            "{name}: truncated ({} bytes): expected an IDX header",
            b.len()
        );
    }
    if b[0] != 0 || b[1] != 0 {
        bail!(
            "{name}: wrong magic {:02x}{:02x}{:02x}{:02x} (expected 000008{:02x}: IDX u8 with {want_dims} dimensions)",
            b[0],
            b[1],
            b[2],
            b[3],
            want_dims
        );
    }
    if b[2] != 0x08 {
        bail!(
            "{name}: IDX element type 0x{:02x} not supported (expected 0x08, unsigned bytes)",
            b[2]
        );
    }
    if b[3] != want_dims {
        bail!(
            "{name}: IDX file has {} dimensions (expected {want_dims})",
            b[3]
        );
    }
    let hdr = 4 + 4 * want_dims as usize;
    if b.len() < hdr {
        bail!(
            "{name}: truncated header ({} bytes, expected {hdr})",
            b.len()
        );
    }
    let dims: Vec<usize> = (0..want_dims as usize)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|c| c.checked_add(hdr));
    let Some(count) = count.map(|c| c - hdr) else {
        bail!(
            "{name}: dimensions {dims:?} describe more data than can exist ({} data bytes present)",
            b.len() - hdr
        );
    };
    if b.len() != hdr + count {
        bail!(
            "{name}: {} data bytes, expected {count} for dimensions {dims:?}{}",
            b.len() - hdr,
            if b.len() < hdr + count {
                " (truncated)"
            } else {
                ""
            }
        );
    }
    Ok((dims, hdr))
}

/// Loads an image file and its label file.
pub(crate) fn load_pair(images: &Path, labels: &Path) -> Result<Raw> {
    let (iname, lname) = (images.display().to_string(), labels.display().to_string());
    let ib = read_maybe_gz(images)?;
    let lb = read_maybe_gz(labels)?;
    let (idims, ih) = header(&ib, &iname, 3)?;
    let (ldims, lh) = header(&lb, &lname, 1)?;
    if idims[0] != ldims[0] {
        bail!(
            "{lname}: {} labels but {iname} has {} images",
            ldims[0],
            idims[0]
        );
    }
    if idims[0] == 0 || idims[1] * idims[2] == 0 {
        bail!("{iname}: empty image set (dimensions {idims:?})");
    }
    // the f32 copy of the pixels and the u32 copy of the labels
    check_items(
        &format!("{iname}: {} images as f32", idims[0]),
        (ib.len() - ih).saturating_add(lb.len() - lh),
        4,
    )?;
    Ok(Raw {
        x: ib[ih..].iter().map(|&v| v as f32).collect(),
        y: lb[lh..].iter().map(|&v| v as u32).collect(),
        dims: (1, idims[1], idims[2]),
        pixel_max: Some(255.0),
        classes: None,
        notes: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        img.extend_from_slice(&[0; 8]);
        assert_eq!(header(&img, "i", 3).unwrap().0, vec![2, 2, 2]);
        assert!(header(&img[..20], "i", 3)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let mut bad = img.clone();
        bad[3] = 1;
        assert!(header(&bad, "i", 3)
            .unwrap_err()
            .to_string()
            .contains("dimensions"));
        bad = img.clone();
        bad[0] = 0x1f;
        assert!(header(&bad, "i", 3)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        // dimensions whose product overflows are an error, not a wrap-around
        bad = img.clone();
        bad[4..16].copy_from_slice(&[0xff; 12]);
        let e = header(&bad, "i", 3).unwrap_err().to_string();
        assert!(e.starts_with("i: dimensions"), "{e}");
    }
}
