//! What ktx tells the person at the terminal while it works, on stderr: a line per finished
//! step, and while it waits, a spinner saying what for (on a terminal) or one plain line per
//! new reason (in CI logs and pipes). Results (the curl line, JSON) go to stdout elsewhere.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct State {
    /// What is being waited for, and since when.
    waiting: Option<(String, Instant)>,
    frame: usize,
}

/// A handle to the progress display; clones share it.
#[derive(Debug, Clone)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    state: Arc<Mutex<State>>,
    /// Set by [`Progress::recording`]: lines are kept here instead of printed.
    log: Option<Arc<tokio::sync::watch::Sender<Vec<String>>>>,
}

const FRAMES: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Progress {
    /// A display on stderr; animated when stderr is a terminal. Must run inside a tokio
    /// runtime (the spinner is a task).
    pub fn stderr() -> Progress {
        let p = Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
            state: Arc::new(Mutex::new(State {
                waiting: None,
                frame: 0,
            })),
            log: None,
        };
        if p.tty {
            let weak = Arc::downgrade(&p.state);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(120));
                while let Some(state) = weak.upgrade() {
                    tick.tick().await;
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.frame = (s.frame + 1) % FRAMES.len();
                    if let Some((msg, since)) = &s.waiting {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(
                            err,
                            "\r\x1b[2K{} {msg} ({}s)",
                            FRAMES[s.frame],
                            since.elapsed().as_secs()
                        );
                        let _ = err.flush();
                    }
                }
            });
        }
        p
    }

    /// A display that shows nothing (tests, `-o json` consumers that want quiet stderr).
    pub fn silent() -> Progress {
        Progress {
            tty: false,
            quiet: true,
            state: Arc::new(Mutex::new(State {
                waiting: None,
                frame: 0,
            })),
            log: None,
        }
    }

    /// A display that keeps its finished lines (`✓ …`, `! …`) instead of printing them, for
    /// tests to wait on ([`Progress::until`]) and read ([`Progress::lines`]).
    pub fn recording() -> Progress {
        Progress {
            log: Some(Arc::new(tokio::sync::watch::channel(Vec::new()).0)),
            ..Progress::silent()
        }
    }

    /// The lines kept so far (empty unless [`Progress::recording`]).
    pub fn lines(&self) -> Vec<String> {
        self.log
            .as_ref()
            .map(|l| l.borrow().clone())
            .unwrap_or_default()
    }

    /// Resolves once a kept line satisfies `pred` (never, unless [`Progress::recording`]).
    pub async fn until(&self, pred: impl Fn(&str) -> bool) {
        let Some(log) = &self.log else {
            return std::future::pending().await;
        };
        let mut rx = log.subscribe();
        let _ = rx.wait_for(|lines| lines.iter().any(|l| pred(l))).await;
    }

    fn line(&self, mark: &str, msg: &str) {
        if let Some(log) = &self.log {
            log.send_modify(|l| l.push(format!("{mark} {msg}")));
            return;
        }
        if self.quiet {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.waiting = None;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{mark} {msg}");
    }

    /// A step that is done.
    pub fn done(&self, msg: impl AsRef<str>) {
        self.line("✓", msg.as_ref());
    }

    /// Something a person may want to act on, without stopping.
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.line("!", msg.as_ref());
    }

    /// Something that is being done or waited for. Repeating the same text changes nothing;
    /// a new text replaces the spinner's (or prints a new line when not on a terminal).
    pub fn waiting(&self, msg: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let msg = msg.as_ref();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.waiting.as_ref().is_some_and(|(m, _)| m == msg) {
            return;
        }
        let since = Instant::now();
        if !self.tty {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "… {msg}");
        }
        s.waiting = Some((msg.to_string(), since));
    }
}
