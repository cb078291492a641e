//! Amortized GR in `fdgr sweep --amortize` (each row records the fraction
//! of its steps that took a fresh ascent) and `fdgr bench --amortize` (one
//! row per amortization, timed by kind of step).

use std::process::Command;

#[test]
fn amortized_rows_record_their_fresh_ascents() {
    let out = std::env::temp_dir().join(format!("fdgr-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_fdgr"))
        .args([
            "sweep",
            "--data",
            "digits",
            "--model",
            "64-8-10",
            "--act",
            "tanh",
            "--batch",
            "64",
            "--epochs",
            "3",
            "--threads",
            "1",
            "--methods",
            "sgd,fgr",
            "--gammas",
            "0.05",
            "--epss",
            "0.1",
            "--seeds",
            "1",
            "--amortize",
            "1,4,p0.5",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("fdgr runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let jsonl = std::fs::read_to_string(out.join("sweep.jsonl")).expect("sweep.jsonl");
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    let frac = |method: &str, ascent: &str| -> f64 {
        let r = rows
            .iter()
            .find(|r| r["method"] == method && r["ascent"] == ascent)
            .unwrap_or_else(|| panic!("no row {method} {ascent}"));
        r["fresh_frac"].as_f64().expect("fresh_frac")
    };
    // 1437 training samples, batch 64: 23 steps an epoch, 69 in all.
    assert_eq!(frac("fgr", "1"), 1.0);
    assert_eq!(frac("fgr", "every 4"), 18.0 / 69.0);
    let p = frac("fgr", "p 0.5");
    assert!((0.3..0.7).contains(&p), "p 0.5 gave {p}");
    let table = std::fs::read_to_string(out.join("table.md")).expect("table.md");
    assert!(table.contains("| fresh ascents |"), "{table}");
    assert!(table.contains("| every 4 | 26% |"), "{table}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bench_times_each_amortization_by_kind_of_step() {
    let o = Command::new(env!("CARGO_BIN_EXE_fdgr"))
        .args([
            "bench",
            "--model",
            "64-8-10",
            "--act",
            "tanh",
            "--batch",
            "4",
            "--threads",
            "1",
            "--methods",
            "sgd,fgr,flood",
            "--amortize",
            "1,4",
            "--repeats",
            "8",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .expect("fdgr runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    let labels: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_string(),
                r["ascent"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = [
        ("sgd", "-"),
        ("fgr", "1"),
        ("fgr", "every 4"),
        ("flood", "-"),
    ];
    assert_eq!(
        labels,
        want.map(|(m, a)| (m.to_string(), a.to_string())).to_vec()
    );
    // Steps 0 and 4 of 8 are fresh; the others reuse the ascent.
    assert_eq!(rows[2]["fresh_frac"].as_f64(), Some(0.25));
    assert_eq!(rows[1]["fresh_frac"].as_f64(), Some(1.0));
    for r in &rows {
        assert_eq!(r["repeats"].as_u64(), Some(8));
        assert!(r["median_ms"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    }
    assert!(rows[2]["reuse_median_ms"].as_f64().is_some_and(|t| t > 0.0));
}
