//! `ktx mesh|exchange … -- CMD ARGS…`: the developer's process, run once the session is up with
//! the workload's environment on top of the developer's own, stdin/stdout/stderr inherited.
//! The session ends when it exits. A stop request reaches it first: ktx sends it SIGTERM, waits
//! up to `--command-grace` (a second stop request or the grace running out kills it), and only
//! then tears the session down.
//!
//! CMD stays in ktx's process group, so a terminal's Ctrl-C reaches it directly as well, and an
//! interactive CMD keeps the terminal.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::WorkloadEnvArgs;
use crate::error::{Error, Result};
use crate::lifecycle::shutdown::Shutdown;

/// What to run once the session is up.
#[derive(Debug, Clone)]
pub struct LocalCommand {
    /// CMD and its arguments (not empty).
    pub argv: Vec<String>,
    /// The workload's variables, set on top of ktx's own environment.
    pub env: Vec<(String, String)>,
    /// How long CMD may take to exit after SIGTERM.
    pub grace: Duration,
}

/// A started CMD.
#[derive(Debug)]
pub struct Running {
    child: Child,
    name: String,
    grace: Duration,
}

impl LocalCommand {
    /// The `-- CMD` of `args` with the workload's environment `env`, if a command was given.
    pub fn of(args: &WorkloadEnvArgs, env: Option<Vec<(String, String)>>) -> Option<Self> {
        (!args.command.is_empty()).then(|| LocalCommand {
            argv: args.command.clone(),
            env: env.unwrap_or_default(),
            grace: args.command_grace,
        })
    }

    /// Starts CMD.
    pub fn spawn(&self) -> Result<Running> {
        let name = self.argv.first().cloned().unwrap_or_default();
        let child = Command::new(&name)
            .args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Should ktx itself be killed, CMD does not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::CommandStart {
                command: name.clone(),
                source,
            })?;
        Ok(Running {
            child,
            name,
            grace: self.grace,
        })
    }
}

impl Running {
    /// CMD's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until CMD exits.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Asks CMD to exit (SIGTERM), kills it after the grace or at the next stop request past
    /// `seen` requests, and returns how it ended.
    pub async fn stop(&mut self, shutdown: &Shutdown, seen: u32) -> std::io::Result<ExitStatus> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                tracing::debug!(error = %e, "SIGTERM to the command");
            }
        }
        tokio::select! {
            r = self.child.wait() => return r,
            _ = tokio::time::sleep(self.grace) => {}
            _ = shutdown.reached(seen + 1) => {}
        }
        self.child.start_kill()?;
        self.child.wait().await
    }

    /// How CMD ended, as ktx's own result: `Ok` for status 0.
    pub fn outcome(&self, status: std::io::Result<ExitStatus>) -> Result<()> {
        let code = match status {
            Ok(s) => exit_code(s),
            Err(source) => {
                return Err(Error::CommandStart {
                    command: self.name.clone(),
                    source,
                })
            }
        };
        match code {
            0 => Ok(()),
            code => Err(Error::CommandExited {
                command: self.name.clone(),
                code,
            }),
        }
    }
}

/// A status as a shell reports it: the exit code, or 128 + the signal that ended the process.
fn exit_code(s: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, grace: Duration) -> LocalCommand {
        LocalCommand {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("KTX_TEST_VAR".into(), "from the workload".into())],
            grace,
        }
    }

    #[tokio::test]
    async fn the_exit_status_and_the_environment_come_through() {
        let mut r = sh(
            r#"[ "$KTX_TEST_VAR" = "from the workload" ] && exit 3"#,
            Duration::ZERO,
        )
        .spawn()
        .unwrap();
        let status = r.exited().await;
        match r.outcome(status) {
            Err(Error::CommandExited { command, code: 3 }) => assert_eq!(command, "sh"),
            other => panic!("expected status 3, got {other:?}"),
        }
        let mut ok = sh("exit 0", Duration::ZERO).spawn().unwrap();
        let status = ok.exited().await;
        assert!(ok.outcome(status).is_ok());
    }

    #[tokio::test]
    async fn a_stop_request_sends_sigterm_and_waits_for_the_command() {
        // The command exits 7 on SIGTERM, after the trap ran: a kill would give 137.
        let (shutdown, _t) = Shutdown::manual();
        let (_dir, armed) = marker("term");
        let mut r = sh(
            &format!("trap 'exit 7' TERM; touch {armed}; while :; do sleep 0.05; done"),
            Duration::from_secs(20),
        )
        .spawn()
        .unwrap();
        until_exists(&armed).await;
        let status = r.stop(&shutdown, 0).await;
        assert!(matches!(
            r.outcome(status),
            Err(Error::CommandExited { code: 7, .. })
        ));
    }

    #[tokio::test]
    async fn a_command_that_ignores_sigterm_is_killed_after_the_grace() {
        let (shutdown, _t) = Shutdown::manual();
        let (_dir, armed) = marker("ignore");
        let mut r = sh(
            &format!("trap '' TERM; touch {armed}; while :; do sleep 0.05; done"),
            Duration::from_millis(300),
        )
        .spawn()
        .unwrap();
        until_exists(&armed).await;
        let status = r.stop(&shutdown, 0).await;
        assert!(matches!(
            r.outcome(status),
            Err(Error::CommandExited { code: 137, .. })
        ));
    }

    /// A path the command creates once its trap is set (in a directory removed on drop).
    fn marker(name: &str) -> (TempDir, String) {
        let dir = TempDir::new(name);
        let path = dir.0.join("armed").display().to_string();
        (dir, path)
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "ktx-command-{name}-{}-{}",
                std::process::id(),
                crate::random::id(8)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Waits (at most 10 s) until the command has created `path`.
    async fn until_exists(path: &str) {
        for _ in 0..1000 {
            if std::path::Path::new(path).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} was not created within 10 s");
    }

    #[tokio::test]
    async fn a_missing_command_is_named() {
        let e = LocalCommand {
            argv: vec!["/nonexistent/ktx-cmd".into()],
            env: vec![],
            grace: Duration::ZERO,
        }
        .spawn()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot start /nonexistent/ktx-cmd: "),
            "{e}"
        );
    }
}
