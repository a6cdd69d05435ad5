//! Real gRPC, WebSocket, HTTP and raw TCP clients in pods: `ktx-testbackend client` run from
//! the test backend's image (FROM scratch, so the binary is the whole command line), which
//! prints which backend answered each call and exits non-zero when it was not the expected
//! one. Several client pods run at once: each takes seconds to start.

// Included by test binaries that use different parts.
#![allow(dead_code)]

use std::time::Duration;

use ktx_e2e::{secs, testbackend_image, Namespace};

/// How long a client keeps trying a call that fails or reaches the wrong backend.
const RETRY_FOR: &str = "60s";

/// One client pod: `calls` to `addr`, with `header` if given, all answered by `expect`.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub pod: &'a str,
    pub addr: &'a str,
    pub calls: &'a [&'a str],
    pub header: Option<&'a str>,
    pub expect: &'a str,
}

impl Ask<'_> {
    fn command(&self) -> Vec<String> {
        let mut command = vec!["/ktx-testbackend".to_owned(), "client".to_owned()];
        command.extend(self.calls.iter().map(|c| (*c).to_owned()));
        command.extend(
            [
                "--addr",
                self.addr,
                "--expect",
                self.expect,
                "--retry-for",
                RETRY_FOR,
            ]
            .map(str::to_owned),
        );
        if let Some(header) = self.header {
            command.extend(["--header".to_owned(), header.to_owned()]);
        }
        command
    }
}

/// Runs every ask in its own pod, all at once; panics with the pod's output unless each call of
/// each pod was answered by its expected backend. Returns each pod's output.
pub fn ask_from_pods(ns: &Namespace, asks: &[Ask<'_>]) -> Vec<String> {
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = asks
            .iter()
            .map(|ask| scope.spawn(move || run(ns, ask, secs(150))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<_>>()
    });
    for (ask, (phase, logs)) in asks.iter().zip(&runs) {
        assert_eq!(
            phase, "Succeeded",
            "client pod {} ({:?} to {} with header {:?}) did not get every answer from {:?}:\n{logs}",
            ask.pod, ask.calls, ask.addr, ask.header, ask.expect
        );
        for call in ask.calls {
            let line = format!("{call}: answered by {} (", ask.expect);
            assert!(
                logs.lines().any(|l| l.starts_with(&line)),
                "client pod {} succeeded but does not say {line:?}:\n{logs}",
                ask.pod
            );
        }
        eprintln!("{}:\n{}", ask.pod, logs.trim_end());
    }
    runs.into_iter().map(|(_, logs)| logs).collect()
}

fn run(ns: &Namespace, ask: &Ask<'_>, timeout: Duration) -> (String, String) {
    let command = ask.command();
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = ns.run_pod(ask.pod, &testbackend_image(), &command, timeout);
    (run.phase, run.logs)
}
