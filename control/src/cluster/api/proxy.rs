//! Reading a pod's admin port (the router's `/metrics`) through the API server's pod proxy:
//! no port-forward, no exposure, only `get pods/proxy` permission. Also a tiny reader of the
//! Prometheus text format, enough for the few `ktx_router_*` series ktx looks at.

use crate::cluster::api::Kube;
use crate::error::{ApiContext, Result};

/// GET `path` on `pod`'s `port`, through the API server.
pub async fn get(kube: &Kube, pod: &str, port: u16, path: &str) -> Result<String> {
    let url = format!(
        "/api/v1/namespaces/{}/pods/{pod}:{port}/proxy{path}",
        kube.namespace
    );
    let req = http::Request::get(url)
        .body(Vec::new())
        .expect("a GET with a path built from names and numbers is a valid request");
    kube.client
        .request_text(req)
        .await
        .ctx("get", "pods/proxy", &kube.namespace, pod)
}

/// The sum of the samples of metric `name` whose labels include all of `labels`.
/// `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let has = |k: &str, want: &str| {
            label_text
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .any(|(lk, lv)| lk.trim() == k && lv.trim().trim_matches('"') == want)
        };
        if labels.iter().all(|(k, want)| has(k, want)) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP ktx_router_requests Requests answered.
# TYPE ktx_router_requests counter
ktx_router_requests_total{rule="foobar",status="200"} 7
ktx_router_requests_total{rule="foobar",status="503"} 1
ktx_router_requests_total{rule="default",status="200"} 40
# TYPE ktx_router_table_rules gauge
ktx_router_table_rules 2
ktx_router_table_rules_extra 9
ktx_router_table_updates_total{result="applied"} 3
"#;

    #[test]
    fn sums_matching_series() {
        assert_eq!(
            metric(TEXT, "ktx_router_requests_total", &[("rule", "foobar")]),
            Some(8.0)
        );
        assert_eq!(
            metric(
                TEXT,
                "ktx_router_requests_total",
                &[("rule", "default"), ("status", "200")]
            ),
            Some(40.0)
        );
        assert_eq!(metric(TEXT, "ktx_router_table_rules", &[]), Some(2.0));
        assert_eq!(
            metric(
                TEXT,
                "ktx_router_table_updates_total",
                &[("result", "rejected")]
            ),
            None
        );
        assert_eq!(metric(TEXT, "nope", &[]), None);
    }
}
