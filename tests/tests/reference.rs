//! The kernel against an independent numpy reference
//! (tests/reference/mlp_reference.py; its output is committed as
//! tests/data/mlp_reference.json). That script computes H·v by running
//! plain backprop on dual numbers, not by an R-operator.

use fdgr_kernel::method::{self, Buffers, Method};
use fdgr_kernel::{step, Act, Loss, Mlp, Objective, Serial, Sgd, SgdState, Shape, Targets};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert_eq!(a.len(), b.len());
    d / n.max(1e-300)
}

#[test]
fn kernel_matches_numpy_reference() {
    let text = include_str!("../data/mlp_reference.json");
    let doc: Value = serde_json::from_str(text).expect("valid JSON");
    let hp = &doc["hyper"];
    let f = |k: &str| hp[k].as_f64().expect("hyper-parameter");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for c in cases {
        let dims: Vec<usize> = c["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let act = Act::from_name(c["act"].as_str().unwrap()).unwrap();
        let loss = Loss::from_name(c["loss"].as_str().unwrap()).unwrap();
        let shape = Shape::try_new(&dims, act, loss).unwrap();
        let theta = floats(&c["theta"]);
        let x = floats(&c["x"]);
        let labels: Vec<u32> = c["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let values = floats(&c["values"]);
        let b = x.len() / dims[0];
        let targets = match loss {
            Loss::SoftmaxCe => Targets::Classes(&labels),
            Loss::Mse => Targets::Values(&values),
        };
        let mut o = Mlp::new(shape, Serial, vec![0.0; shape.workspace_len(b, true)]);
        o.set_batch(&x, targets).unwrap();
        let n = theta.len();
        let tag = format!("{dims:?} {act:?} {loss:?}");

        let mut g = vec![0.0; n];
        let l = o
            .loss_grad(&theta, &mut g, 1.0, 0.0, fdgr_kernel::Pass::Train)
            .unwrap();
        assert!(
            (l - c["loss_value"].as_f64().unwrap()).abs() < 1e-13,
            "{tag} loss"
        );
        assert!(rel(&g, &floats(&c["grad"])) < 1e-12, "{tag} grad");

        let mut hv = vec![0.0; n];
        o.hvp(&theta, &floats(&c["v"]), &mut hv).unwrap();
        assert!(
            rel(&hv, &floats(&c["hv"])) < 1e-11,
            "{tag} Hv {}",
            rel(&hv, &floats(&c["hv"]))
        );

        let (gm, eps, rho, lvl) = (f("gamma"), f("eps"), f("rho"), f("flood_level"));
        let methods = [
            Method::Sgd,
            Method::Db { gamma: gm },
            Method::Fgr { gamma: gm, eps },
            Method::Bgr { gamma: gm, eps },
            Method::Cgr { gamma: gm, eps },
            Method::Sam { rho },
            Method::Usam { rho },
            Method::Flood { level: lvl },
        ];
        for m in methods {
            let (mut d, mut p1, mut p2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            method::direction(
                &mut o,
                &m,
                &theta,
                &mut d,
                &mut Some(&mut p1[..]),
                &mut Some(&mut p2[..]),
            )
            .unwrap();
            let want = floats(&c["directions"][m.name()]);
            let e = rel(&d, &want);
            assert!(e < 1e-11, "{tag} {}: {e:e}", m.name());
        }

        // three optimizer steps: fgr + momentum + Nesterov + weight decay
        let opt = Sgd {
            momentum: f("momentum"),
            nesterov: hp["nesterov"].as_bool().unwrap(),
            weight_decay: f("weight_decay"),
        };
        let mut th = theta.clone();
        let (mut d, mut p1, mut mom) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let mut st = SgdState::default();
        for _ in 0..3 {
            let bufs = Buffers {
                theta: &mut th[..],
                dir: &mut d[..],
                state: [Some(&mut mom[..]), None],
                point: Some(&mut p1[..]),
                point2: None,
                correction: None,
            };
            step(
                &mut o,
                &Method::Fgr { gamma: gm, eps },
                &opt,
                &mut st,
                f("lr"),
                bufs,
            )
            .unwrap();
        }
        let want = floats(&c["sgd_run"]);
        assert!(rel(&th, &want) < 1e-13, "{tag} optimizer run");
    }
}
