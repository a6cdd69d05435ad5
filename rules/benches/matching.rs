//! `cargo bench -p ktx-rules`: nanoseconds per routing decision with 1, 100 and 10,000 rules
//! (one per developer mark), for a request that matches the last rule and one that matches none.
//! Plain `std::time` so it needs no bench framework; run it on a quiet machine.

use std::hint::black_box;
use std::time::Instant;

use http::{HeaderMap, Method};
use ktx_rules::{RouteTable, RoutesSpec};

fn table(n: usize) -> RouteTable {
    let mut yaml = String::from("default: { service: stuntman }\nrules:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - session: dev{i}\n    match: {{ headers: [{{ name: VERSION, exact: mark{i} }}] }}\n    target: {{ service: shadow{i} }}\n"
        ));
    }
    RouteTable::compile(&RoutesSpec::parse(&yaml).expect("generated YAML parses"))
        .expect("generated rules are valid")
}

fn bench(t: &RouteTable, headers: &HeaderMap) -> f64 {
    let iters = 2_000_000u32;
    let start = Instant::now();
    for _ in 0..iters {
        black_box(t.route(&Method::GET, black_box("/api/orders"), black_box(headers)));
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    println!(
        "{:>8} {:>16} {:>16}",
        "rules", "ns/match (last)", "ns/match (none)"
    );
    for n in [1, 100, 10_000] {
        let t = table(n);
        let mut last = HeaderMap::new();
        last.insert(
            "version",
            format!("mark{}", n - 1).parse().expect("ASCII value"),
        );
        last.insert("user-agent", "bench".parse().expect("ASCII value"));
        let mut none = HeaderMap::new();
        none.insert("user-agent", "bench".parse().expect("ASCII value"));
        assert!(t.route(&Method::GET, "/", &last).is_some());
        println!(
            "{n:>8} {:>16.1} {:>16.1}",
            bench(&t, &last),
            bench(&t, &none)
        );
    }
}
