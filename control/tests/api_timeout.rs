//! An API server that accepts connections and never answers: every call gives up within
//! `--api-timeout` instead of kube's default of about five minutes.

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use ktx::cli::Cli;
use ktx::cluster::api::Kube;

#[tokio::test]
async fn a_silent_api_server_fails_a_call_within_the_api_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection, never writing a byte.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let kubeconfig =
        std::env::temp_dir().join(format!("ktx-api-timeout-{}.yaml", std::process::id()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{addr}\" }}\n\
             users:\n- name: u\n  user: {{ token: t }}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u, namespace: shop }}\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let cli = Cli::try_parse_from([
        "ktx",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--api-timeout",
        "1s",
        "status",
    ])
    .unwrap();
    let kube = Kube::connect(&cli.global).await.unwrap();
    std::fs::remove_file(&kubeconfig).unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), kube.get::<Service>("orders"))
        .await
        .expect("the call still hangs after 20 s");
    assert!(r.is_err(), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    holder.abort();
}
