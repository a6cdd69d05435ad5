//! The start-up pieces `ktx-router` and `ktx-shadow` share: the log format flag and the
//! subscriber it selects, the tokio runtime sized by `--threads`, waiting for SIGTERM or Ctrl-C,
//! duration flags (`500ms`, `2s`, `1m`), and re-running the binary once with an allocator
//! setting; and the admin port of router, shadow and janitor ([`admin`]). It owns no component
//! logic and no metrics of its own.

pub mod admin;

use std::ffi::OsStr;
use std::time::Duration;

/// Log format: `text` for people, `json` in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why logging or the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--log-level {filter:?} is not a valid filter (try `info`): {reason}")]
    LogFilter { filter: String, reason: String },
    #[error("start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Installs the global subscriber: `filter` in tracing's EnvFilter syntax.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), StartError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| StartError::LogFilter {
            filter: filter.to_string(),
            reason: e.to_string(),
        })?;
    match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(env_filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(env_filter).init(),
    }
    Ok(())
}

/// `threads == 1`: one current-thread runtime (what the benchmarks pin to a core); `0`: one
/// worker per CPU; otherwise that many workers.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, StartError> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder.enable_all().build().map_err(StartError::Runtime)
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C. `who` names the binary in the
/// warning when SIGTERM cannot be watched.
pub async fn wait_for_signal(who: &str) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the {who}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Allocators read their settings from the environment when the process starts, before `main`.
/// Unless the operator already set `key`, re-run this binary once with `key=value`: same PID,
/// same arguments. If exec fails the binary carries on with the defaults (and says so).
pub fn reexec_with_env(binary: &str, key: &str, value: &str) {
    reexec_with_envs(binary, &[(key, value)]);
}

/// [`reexec_with_env`] for several settings at once: re-runs the binary once with every
/// `key=value` whose key the operator did not set, if there is any.
pub fn reexec_with_envs(binary: &str, settings: &[(&str, &str)]) {
    let missing: Vec<_> = settings
        .iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    if let Ok(exe) = std::env::current_exe() {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg0(arg0).args(args);
        for (key, value) in &missing {
            cmd.env(key, OsStr::new(value));
        }
        let err = cmd.exec();
        // exec only returns on failure.
        eprintln!("{binary}: could not re-exec with {missing:?} ({err}); continuing");
    }
}

/// The longest duration a flag takes: 365 days. Longer is not a timeout anyone means, and a
/// deadline that far (`18446744073709551615s`) is past what a clock can add: whoever armed a
/// timer with it (hyper's header read timeout, for one) would panic.
pub const LONGEST_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// [`parse_duration`], and at least `MS` milliseconds: for a flag where 0 (or a few
/// milliseconds) would make a timer spin or a check never run, e.g.
/// `value_parser = parse_duration_at_least::<1>`.
pub fn parse_duration_at_least<const MS: u64>(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(MS) {
        return Err(format!(
            "{s:?} is shorter than {MS}ms, the least this flag takes"
        ));
    }
    Ok(d)
}

/// Worker threads a binary may ask for with `--threads` (0: one per CPU).
pub const MAX_THREADS: u64 = 1024;

/// The value parser of `--threads`: 0 (one per CPU) to [`MAX_THREADS`]. Far more threads
/// than that make tokio's runtime builder overflow or the OS refuse to spawn them.
pub fn threads_parser() -> clap::builder::RangedU64ValueParser<usize> {
    usize_in(0..=MAX_THREADS)
}

/// The value parser of a count flag that takes `range` (clap's error names the range).
pub fn usize_in(
    range: std::ops::RangeInclusive<u64>,
) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(range)
}

/// `250ms`, `2s`, `1m`; at most [`LONGEST_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration like 500ms, 2s or 1m");
    let too_long = || {
        format!(
            "{s:?} is longer than 365 days (525600m), the longest duration ktx takes; \
             give a shorter one"
        )
    };
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .ok_or_else(err)?;
    if num.is_empty() {
        return Err(err());
    }
    // All digits: a number too large for u64 is too long, not malformed.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => return Err(err()),
    };
    d.filter(|d| *d <= LONGEST_DURATION).ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2h").is_err());
    }

    /// A duration past what a clock can add (`18446744073709551615s`) or whose minutes overflow
    /// (`999999999999999999m`) once crashed whoever armed a timer with it; anything past a year
    /// is refused with the longest allowed, and a year is taken.
    #[test]
    fn durations_past_a_year_are_refused_and_a_year_is_taken() {
        for s in [
            "18446744073709551615s",
            "999999999999999999m",
            "525601m",
            "99999999999999999999999s",
        ] {
            let e = parse_duration(s).expect_err(s);
            assert!(
                e.contains("longer than 365 days") && e.contains("525600m"),
                "{s}: {e}"
            );
        }
        assert_eq!(parse_duration("525600m").unwrap(), LONGEST_DURATION);
        assert_eq!(parse_duration("31536000000ms").unwrap(), LONGEST_DURATION);
    }

    #[test]
    fn a_floor_refuses_what_is_below_it() {
        let e = parse_duration_at_least::<100>("0s").unwrap_err();
        assert!(e.contains("shorter than 100ms"), "{e}");
        assert!(parse_duration_at_least::<100>("99ms").is_err());
        assert_eq!(
            parse_duration_at_least::<100>("100ms").unwrap(),
            Duration::from_millis(100)
        );
        assert!(parse_duration_at_least::<1>("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}
